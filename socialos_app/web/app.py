"""Assembly: build the services once, register the tools, mount the page tree.

``mount(settings)`` is all ``app.py`` needs; tests and benchmarks start
``app.py`` itself, so production and test take the same path.

The tools are switched on for the whole app here (``app_config``: they
need objects, the session engine and the keyring, that no conf file can
hold); each page's own switches (public, admin only, raw body...) are in
its ``_cp_config``, beside its handler.
"""

import logging
from collections.abc import Callable
from typing import Any

import cherrypy
from cherrypy import _cpreqbody
from cherrypy.process.plugins import SimplePlugin

from socialos_app import resources
from socialos_app.accounts import signin as accounts
from socialos_app.accounts.activity import Activity
from socialos_app.accounts.throttle import LoginThrottle
from socialos_app.crypto import Keyring
from socialos_app.db.connection import connect
from socialos_app.ops import logs, metrics
from socialos_app.ops.health import Health
from socialos_app.presence.connections import LiveConnections
from socialos_app.presence.members import MemberDirectory
from socialos_app.sessions import SessionEngine
from socialos_app.sessions.backends import get_store
from socialos_app.settings import Settings
from socialos_app.storage import StoreUnavailable
from socialos_app.upstream.pusher import Pusher
from socialos_app.upstream.socialos import SocialOS
from socialos_app.upstream.transport import Transport
from socialos_app.web import toolbox
from socialos_app.web.errorpages import error_page, unexpected_error
from socialos_app.web.pages.activity import ActivityPage
from socialos_app.web.pages.admin import AdminPages
from socialos_app.web.pages.confirm import ConfirmPage
from socialos_app.web.pages.dashboard import DashboardPages
from socialos_app.web.pages.presence import PresencePages, PusherEndpoints, live_config
from socialos_app.web.pages.probes import MetricsPage, Probe
from socialos_app.web.pages.signin import SignInPages
from socialos_app.web.request import HTTPServer, Response, request_class
from socialos_app.web.services import Services

__all__ = ["Root", "Services", "app_config", "build_services", "mount"]

ROOT = resources.root()  # the checkout, or the installed package (the wheel carries static/)


def build_services(settings: Settings) -> Services:
    """Connect (lazily) to the database and upstreams; no I/O happens here."""
    connect(settings.database_uri, settings.db_timeout_ms, settings.thread_pool + 4)
    keyring = Keyring(settings.secure_key, settings.secure_key_previous)
    engine = SessionEngine(get_store(settings), keyring, settings.session_ttl, settings.session_max_age,
                           cache_size=settings.session_cache_size)
    # One pooled session, shared by both clients; every call counted in the metrics.
    transport = Transport.from_settings(settings, observe=metrics.upstream_call)
    pusher = Pusher.from_settings(settings, transport) if settings.pusher_configured else None
    # The throttle, the presence directory and the security history use MongoDB whatever SESSION_STORE says.
    services = Services(settings=settings, keyring=keyring, engine=engine,
                        socialos=SocialOS.from_settings(settings, transport),
                        throttle=LoginThrottle(max_failures=settings.login_max_failures), members=MemberDirectory(),
                        activity=Activity(days=settings.activity_days), pusher=pusher,
                        live=LiveConnections(pusher, metrics.live_call) if pusher is not None else None)
    engine.on_tampered = lambda record: accounts.record_tampered(services, record)
    return services


def _form_or_4xx(processor: Callable[[Any], None]) -> Callable[[Any], None]:
    """A CherryPy body processor whose failures are a 4xx page, not a 500 with a traceback.

    CherryPy's parsers raise plain ValueErrors on a malformed body and
    LookupError on an unknown charset; a body that stalls or stops short
    raises from the socket.
    """
    def process(entity: Any) -> None:
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


def _csp(settings: Settings) -> str:
    script, connect_src = ["'self'"], ["'self'"]
    live, _ = live_config(settings)  # exactly pusher-js's origin (if not ours) and its websocket
    if live:
        script += [live.script_origin] if live.script_origin else []
        connect_src.append(live.ws_origin)
    return ("default-src 'self'; script-src " + " ".join(script) + "; connect-src " + " ".join(connect_src)
            + "; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'")


def app_config(services: Services) -> dict[str, dict[str, Any]]:
    """The tools on for the whole app, with their objects; the static files' paths."""
    s = services.settings
    session = {"tools.socialos_session.on": True,
               "tools.socialos_session.required": True,  # pages for everyone say so in their _cp_config
               "tools.socialos_session.engine": services.engine,
               "tools.socialos_session.socialos": services.socialos,
               "tools.socialos_session.cookie_name": s.cookie_name,
               "tools.socialos_session.secure": s.cookie_secure,
               "tools.socialos_session.why_ended":
                   lambda token: services.activity.why_ended(services.keyring.record_ids(token))}
    # Off but for the handlers that ask for it (web.security): these are its objects.
    fresh = {"tools.fresh_session.engine": services.engine, "tools.fresh_session.seconds": s.session_fresh,
             "tools.security_notice.on": True, "tools.security_notice.engine": services.engine}
    return {
        "/": {
            **session,
            **fresh,
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
            "tools.request_log.on": True,
            "tools.request_metrics.on": True,
            # Behind a load balancer: scheme and host from X-Forwarded-*; the client's address is
            # the request class's (the entries trusted proxies added, not CherryPy's leftmost).
            "tools.proxy.on": bool(s.trusted_proxy),
            "tools.proxy.local": "X-Forwarded-Host",
            "tools.proxy.remote": "",
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

    def __init__(self, bus: Any, services: Services) -> None:
        super().__init__(bus)
        self.services = services

    def start(self) -> None:
        try:
            self.services.engine.setup()
            self.services.throttle.setup()
            self.services.members.setup()
            self.services.activity.setup()
        except StoreUnavailable as exc:
            # Start anyway: pages answer 503 until the database is back (indexes are idempotent).
            self.bus.log(f"session database not reachable at start ({exc}); will answer 503 until it is",
                         level=logging.WARNING)
        self.services.engine.start_background()  # touch writer; the cache, trusted once its change stream runs
    start.priority = 60  # type: ignore[attr-defined]  # CherryPy reads a listener's priority here

    def stop(self) -> None:
        self.services.engine.stop_background()
        if self.services.live is not None:
            self.services.live.stop()
        self.services.socialos.transport.close()
        accounts.stop()


class Root(SignInPages, DashboardPages):
    """The tree CherryPy dispatches into: each area's pages under their path."""

    def __init__(self, services: Services, health: Health) -> None:
        super().__init__(services)
        self.admin = AdminPages(services)
        self.presence = PresencePages(services)
        self.pusher = PusherEndpoints(services)
        self.confirm = ConfirmPage(services, lambda: self.return_pages)
        self.activity = ActivityPage(services)
        self.livez = Probe(health.livez)
        self.readyz = Probe(health.readyz)
        self.healthz = Probe(health.readyz)
        if metrics.available:  # GET /metrics only with the `metrics` extra; else a 404
            self.metrics = MetricsPage()


def mount(settings: Settings) -> Services:
    """Register the tools, build the services and mount the app at ``/``; returns the services."""
    toolbox.register()
    services = build_services(settings)
    health = Health(services.engine.ping)
    root = Root(services, health)
    # Read at scrape time (and the transport on each call, for the breaker log lines).
    metrics.watch(engine=services.engine, transport=services.socialos.transport, health=health)
    if metrics.available:
        metrics.set_live_sessions(lambda: services.engine.stats())
    app = cherrypy.tree.mount(root, "/", config=app_config(services))
    app.request_class, app.response_class = request_class(settings.trusted_proxy), Response
    logs.replace_access_line(app)  # the request log line is the app's own (tools.request_log)
    # cheroot's own short answers (413, 400 on a malformed request) with the security headers too.
    cherrypy.config.update({"server.instance": f"{HTTPServer.__module__}.{HTTPServer.__qualname__}"})
    # Any page for signed-in people that answers GET, read from the tree as mounted: no list to keep.
    root.return_pages = frozenset(route.path for route in toolbox.routes(root, app.config) if route.signed_in_page)
    ServicesPlugin(cherrypy.engine, services).subscribe()
    health.plugin(cherrypy.engine).subscribe()
    return services
