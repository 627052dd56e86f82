"""Assembly: build the services once, mount the pages with their tools.

``mount(settings)`` is all ``app.py`` needs; tests and benchmarks start
``app.py`` itself, so production and test take the same path.
"""

import logging
from dataclasses import dataclass

import cherrypy
from cherrypy import _cpreqbody
from cherrypy.process.plugins import SimplePlugin

from socialos_app import resources
from socialos_app.accounts import signin as accounts
from socialos_app.accounts.throttle import LoginThrottle
from socialos_app.crypto import Keyring
from socialos_app.db.connection import connect, database
from socialos_app.ops import metrics
from socialos_app.ops.health import Health
from socialos_app.presence.members import MemberDirectory
from socialos_app.sessions import SessionEngine
from socialos_app.sessions.backends.mongo import MongoSessionStore
from socialos_app.storage import StoreUnavailable
from socialos_app.upstream import transport as http
from socialos_app.upstream.pusher import Pusher
from socialos_app.upstream.socialos import SocialOS
from socialos_app.web import tools  # noqa: F401 - logs, tools register CherryPy tools
from socialos_app.web.errorpages import error_page, unexpected_error
from socialos_app.web.pages.account import Root
from socialos_app.web.pages.presence import PresencePages, PusherEndpoints, live_config
from socialos_app.web.request import Request, Response

__all__ = ["Services", "build_services", "mount"]

ROOT = resources.root()  # the checkout, or the installed package (the wheel carries static/)


@dataclass
class Services:
    """Everything the pages use, made once per process."""

    settings: object
    keyring: Keyring
    engine: SessionEngine
    socialos: SocialOS
    pusher: object = None      # None when Pusher is not configured
    throttle: object = None    # LoginThrottle
    members: object = None     # MemberDirectory: who is known in presence channels

    @property
    def cookie_name(self):
        return self.settings.cookie_name

    @property
    def presession_cookie_name(self):
        """The sign-in form's pre-session cookie, which its CSRF token is bound to."""
        return "__Host-csrf" if self.settings.cookie_secure else "csrf"


def build_services(settings):
    """Connect (lazily) to the database and upstreams; no I/O happens here."""
    connect(settings.database_uri, settings.db_timeout_ms, settings.thread_pool + 4)
    keyring = Keyring(settings.secure_key, settings.secure_key_previous)
    engine = SessionEngine(MongoSessionStore(database()["sessions"]), keyring, settings.session_ttl,
                           settings.session_max_age,
                           cache_size=settings.session_cache_size)
    # One pooled session, shared by both clients; every call counted in the metrics.
    transport = http.Transport.from_settings(settings, observe=metrics.upstream_call)
    services = Services(settings=settings, keyring=keyring, engine=engine,
                        socialos=SocialOS.from_settings(settings, transport))
    services.pusher = Pusher.from_settings(settings, transport) if settings.pusher_configured else None
    services.members = MemberDirectory(database()["presence_members"], database()["webhook_deliveries"])
    services.throttle = LoginThrottle(database()["login_failures"], settings.login_max_failures)
    return services


def _form_or_4xx(processor):
    """A CherryPy body processor whose failures are a 4xx page, not a 500 with a traceback.

    CherryPy's parsers raise plain ValueErrors on a malformed body and
    LookupError on an unknown charset; a body that stalls or stops short
    raises from the socket.
    """
    def process(entity):
        try:
            processor(entity)
        except (ValueError, TypeError, IndexError, UnicodeError, EOFError, LookupError):
            raise cherrypy.HTTPError(400, "The form in this request could not be read.") from None
        except OSError:
            raise cherrypy.HTTPError(408, "The form in this request arrived too slowly "
                                          "or not at all.") from None
        reader = entity.fp
        if getattr(reader, "length", None) is not None and reader.bytes_read < reader.length:
            # The client stopped before its own Content-Length: half a form is no form.
            raise cherrypy.HTTPError(400, "The form in this request arrived incomplete.")
    return process


BODY_PROCESSORS = {
    "application/x-www-form-urlencoded": _form_or_4xx(_cpreqbody.process_urlencoded),
    "multipart/form-data": _form_or_4xx(_cpreqbody.process_multipart_form_data),
    "multipart": _form_or_4xx(_cpreqbody.process_multipart),
}


def _csp(settings):
    script, connect_src = ["'self'"], ["'self'"]
    live, _ = live_config(settings)  # exactly pusher-js's origin (if not ours) and its websocket
    if live:
        script += [live.script_origin] if live.script_origin else []
        connect_src.append(live.ws_origin)
    return ("default-src 'self'; script-src " + " ".join(script) + "; connect-src " + " ".join(connect_src)
            + "; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'")


def app_config(services):
    """Per-path config in code: objects (engine, keyring) can't live in a conf file."""
    s = services.settings
    session = {"tools.socialos_session.on": True,
               "tools.socialos_session.engine": services.engine,
               "tools.socialos_session.socialos": services.socialos,
               "tools.socialos_session.cookie_name": s.cookie_name,
               "tools.socialos_session.secure": s.cookie_secure}
    return {
        "/": {
            **session,
            "tools.known_paths.on": True,
            "tools.head_as_get.on": True,
            "tools.csrf.on": True,
            "tools.csrf.keyring": services.keyring,
            "tools.csrf.presession_cookie_name": services.presession_cookie_name,
            "tools.csrf.secure": s.cookie_secure,
            "tools.upstream_errors.on": True,
            "tools.upstream_errors.engine": services.engine,
            "tools.upstream_errors.cookie_name": s.cookie_name,
            "tools.upstream_errors.secure": s.cookie_secure,
            # No redirects made up by CherryPy (they'd be built from the Host header).
            "tools.trailing_slash.on": False,
            "tools.secure_headers.on": True,
            "tools.secure_headers.csp": _csp(s),
            "tools.request_timer.on": True,
            "tools.request_log.on": True,
            "tools.request_metrics.on": True,
            # Behind a load balancer: scheme, host and client address from X-Forwarded-*.
            "tools.proxy.on": s.trusted_proxy,
            "tools.proxy.local": "X-Forwarded-Host",
            "tools.proxy.remote": "X-Forwarded-For",
            "error_page.default": error_page,
            "request.error_response": unexpected_error,
            "request.show_tracebacks": False,
            "request.show_mismatched_params": False,
            "request.body.processors": BODY_PROCESSORS,
        },
        "/static": {"tools.staticdir.on": True, "tools.staticdir.dir": str(ROOT / "static"),
                    **PUBLIC_FILE},
        "/favicon.ico": {"tools.staticfile.on": True,
                         "tools.staticfile.filename": str(ROOT / "static" / "favicon.ico"),
                         **PUBLIC_FILE},
        "/robots.txt": {"tools.staticfile.on": True,
                        "tools.staticfile.filename": str(ROOT / "static" / "robots.txt"),
                        **PUBLIC_FILE},
    }


# Files anyone may fetch: no session, no CSRF, cacheable.
PUBLIC_FILE = {"tools.known_paths.on": False, "tools.socialos_session.on": False, "tools.csrf.on": False,
               "tools.upstream_errors.on": False, "tools.secure_headers.no_store": False}


class ServicesPlugin(SimplePlugin):
    """Engine plugin: make the session indexes at start, close the HTTP pool at stop."""

    def __init__(self, bus, services):
        super().__init__(bus)
        self.services = services

    def start(self):
        try:
            self.services.engine.setup()
            self.services.throttle.setup()
        except StoreUnavailable as exc:
            # Start anyway: pages answer 503 until the database is back (indexes are idempotent).
            self.bus.log(f"session database not reachable at start ({exc}); will answer 503 until it is",
                         level=logging.WARNING)
        self.services.engine.start_background()  # touch writer; the cache, trusted once its change stream runs
    start.priority = 60

    def stop(self):
        self.services.engine.stop_background()
        self.services.socialos.transport.close()
        accounts.stop()


def mount(settings, conf_file=None):
    """Build the services and mount the app at ``/``; returns the services."""
    services = build_services(settings)
    root = Root(services)
    root.presence = PresencePages(services)
    root.pusher = PusherEndpoints(services)
    if metrics.available:  # GET /metrics only with the `metrics` extra; else a 404
        root.metrics = metrics.MetricsPage()
        metrics.set_live_sessions(lambda: services.engine.stats())
    health = Health(services.engine.ping)
    root.livez, root.readyz, root.healthz = health.livez, health.readyz, health.readyz
    app = cherrypy.tree.mount(root, "/", config=str(conf_file) if conf_file else None)
    app.request_class, app.response_class = Request, Response
    app.merge(app_config(services))
    if conf_file:
        app.merge(str(conf_file))  # per-path switches (required, csrf off...) from conf/app.conf
    ServicesPlugin(cherrypy.engine, services).subscribe()
    health.plugin(cherrypy.engine).subscribe()
    return services
