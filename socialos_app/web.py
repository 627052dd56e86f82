"""Assembly: build the services once, mount the pages with their tools.

``mount(settings)`` is all ``app.py`` needs; tests and benchmarks start
``app.py`` itself, so production and test take the same path.
"""

import html
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cherrypy
from cherrypy import _cpreqbody
from cherrypy.process.plugins import SimplePlugin

from . import http, logs, tools  # noqa: F401 - tools registers the CherryPy tools
from .client import SocialOS
from .crypto import Keyring
from .directory import MemberDirectory
from .presence import PresencePages, PusherEndpoints
from .pusher import Pusher
from .pages import Root
from .render import render
from .sessions import SessionEngine, StoreUnavailable
from .sessions.mongo import MongoSessionStore, connect
from .throttle import LoginThrottle

__all__ = ["Services", "build_services", "mount"]

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("socialos")

HEADINGS = {400: "That request didn't make sense", 403: "Not allowed", 404: "Page not found",
            405: "Not allowed here", 413: "That was too big", 429: "Slow down",
            500: "Something went wrong", 502: "An upstream service failed",
            503: "Temporarily unavailable", 504: "An upstream service is slow"}


@dataclass
class Services:
    """Everything the pages use, made once per process."""

    settings: object
    keyring: Keyring
    engine: SessionEngine
    socialos: SocialOS
    pusher: object = None      # None when Pusher is not configured
    throttle: object = None
    presence: object = None

    @property
    def cookie_name(self):
        return self.settings.cookie_name

    @property
    def precookie_name(self):
        return "__Host-csrf" if self.settings.cookie_secure else "csrf"


def build_services(settings):
    """Connect (lazily) to the database and upstreams; no I/O happens here."""
    connect(settings.database_uri, settings.db_timeout_ms, settings.thread_pool + 4)
    keyring = Keyring(settings.secure_key, settings.secure_key_previous)
    engine = SessionEngine(MongoSessionStore(), keyring, settings.session_ttl, settings.session_max_age)
    services = Services(settings=settings, keyring=keyring, engine=engine,
                        socialos=SocialOS.from_settings(settings))
    services.pusher = Pusher.from_settings(settings) if settings.pusher_configured else None
    services.presence = MemberDirectory()
    services.throttle = LoginThrottle(settings.login_max_failures)
    return services


# -- error pages ---------------------------------------------------------
def error_page(status, message, traceback, version):  # noqa: A002 - CherryPy's signature
    """Every error as a page of ours: a sentence, a way back, never a traceback."""
    code = int(str(status).split()[0])
    request = cherrypy.serving.request
    cherrypy.serving.response.headers["Content-Type"] = "text/html;charset=utf-8"
    # CherryPy has already HTML-escaped the message; Jinja escapes it again on output.
    message = html.unescape(message or "")
    if code == 503:
        cherrypy.serving.response.headers["Retry-After"] = "5"
    if code == 404:
        message = "There is nothing at this address."
    elif code >= 500 and "Traceback" in (message or ""):
        message = "The server hit a problem. It has been logged; please try again."
    signed_in = getattr(request, "signed_in", None)
    back, label = ("/dashboard", "Back to your dashboard") if signed_in else ("/login", "Go to sign in")
    try:
        return render("error.html", title=HEADINGS.get(code, "Error"), heading=HEADINGS.get(code, "Error"),
                      message=message, back=back, back_label=label,
                      user=signed_in, csrf_token=getattr(request, "csrf_token", ""))
    except Exception:  # noqa: BLE001 - the error page itself must never fail
        return f"{code} {HEADINGS.get(code, 'Error')}"


def unexpected_error():
    """``request.error_response``: log the traceback, show the 500 page."""
    log.error("unhandled error on %s %s\n%s", cherrypy.serving.request.method,
              cherrypy.serving.request.path_info, traceback.format_exc())
    cherrypy.HTTPError(500, "The server hit a problem. It has been logged; please try again.").set_response()


def _form_or_400(processor):
    """A CherryPy body processor whose parse errors are a 400, not a 500 with a traceback.

    CherryPy's multipart parser raises plain ValueErrors on a malformed body.
    """
    def process(entity):
        try:
            processor(entity)
        except (ValueError, TypeError, IndexError, UnicodeError, EOFError):
            raise cherrypy.HTTPError(400, "The form in this request could not be read.") from None
    return process


BODY_PROCESSORS = {
    "application/x-www-form-urlencoded": _cpreqbody.process_urlencoded,
    "multipart/form-data": _form_or_400(_cpreqbody.process_multipart_form_data),
    "multipart": _form_or_400(_cpreqbody.process_multipart),
}


def _csp(settings):
    script, connect_src = ["'self'"], ["'self'"]
    if settings.pusher_js_url:
        parts = urlsplit(settings.pusher_js_url)
        script.append(f"{parts.scheme}://{parts.netloc}")
    if settings.pusher_ws_host:
        connect_src += [f"wss://{settings.pusher_ws_host}", f"https://{settings.pusher_ws_host}"]
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
            "tools.csrf.on": True,
            "tools.csrf.keyring": services.keyring,
            "tools.csrf.precookie_name": services.precookie_name,
            "tools.secure_headers.on": True,
            "tools.secure_headers.csp": _csp(s),
            "tools.request_timer.on": True,
            "tools.request_log.on": True,
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
                    "tools.socialos_session.on": False, "tools.csrf.on": False,
                    "tools.secure_headers.no_store": False},
    }


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
    start.priority = 60

    def stop(self):
        http.reset()


def mount(settings, conf_file=None):
    """Build the services and mount the app at ``/``; returns the services."""
    services = build_services(settings)
    root = Root(services)
    root.presence = PresencePages(services)
    root.pusher = PusherEndpoints(services)
    app = cherrypy.tree.mount(root, "/", config=str(conf_file) if conf_file else None)
    app.merge(app_config(services))
    if conf_file:
        app.merge(str(conf_file))  # per-path switches (required, csrf off...) from conf/app.conf
    ServicesPlugin(cherrypy.engine, services).subscribe()
    return services
