"""CherryPy tools run on every request: session resolution, CSRF checks and
security headers, plus the cookie helpers they and the pages share.

Switched on for the whole app in config (``tools.socialos_session.on``);
objects such as the session engine reach them as tool arguments.
"""

from functools import cached_property
from urllib.parse import quote, urlencode

import cherrypy

from .errors import Unauthorized, UpstreamError, UpstreamUnavailable
from .sessions import StoreUnavailable

__all__ = ["SignedIn", "set_cookie", "expire_cookie", "login_url", "DB_DOWN"]

DB_DOWN = "The session database is not answering right now. Please try again in a few seconds."
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SignedIn:
    """What a handler gets for a signed-in request: the user, and their API client."""

    def __init__(self, record, credentials, token, socialos):
        self.record = record
        self.username = record.username
        self.name = record.name or record.username
        self.admin = record.admin
        self.token = token
        self._credentials = credentials
        self._socialos = socialos

    @cached_property
    def api(self):
        """The user's own authenticated Social OS client, built on first use."""
        return self._socialos.user(self.username, self._credentials.password)

    @property
    def credentials(self):
        return self._credentials

    def __repr__(self):
        return f"SignedIn({self.username!r})"


# -- cookies ---------------------------------------------------------------
def set_cookie(name, value, secure, max_age=None):
    """A cookie that scripts can't read and other sites can't send on POSTs."""
    cookie = cherrypy.serving.response.cookie
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if secure:
        morsel["secure"] = True
    if max_age is not None:
        morsel["max-age"] = int(max_age)


def expire_cookie(name, secure):
    set_cookie(name, "", secure, max_age=0)
    cherrypy.serving.response.cookie[name]["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"


def login_url(next_path=None, reason=None):
    query = {}
    if next_path and next_path != "/":
        query["next"] = next_path
    if reason:
        query["reason"] = reason
    return "/login" + ("?" + urlencode(query) if query else "")


def _here():
    request = cherrypy.serving.request
    path = quote(request.path_info, safe="/-_.~")
    if request.method == "GET" and request.query_string:
        path += "?" + request.query_string
    return path


# -- the session tool --------------------------------------------------------
def _guard(handler, engine, cookie_name, secure):
    """Turn upstream and database trouble raised by a page into a clear answer."""

    def guarded(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Unauthorized as exc:
            signed_in = cherrypy.serving.request.signed_in
            if signed_in is None or exc.service != "Social OS API":
                raise cherrypy.HTTPError(502, f"{exc.service} refused our credentials.") from None
            # The user's upstream key is gone (expired or revoked): so is their session.
            try:
                engine.end(signed_in.token)
            except StoreUnavailable:
                pass
            expire_cookie(cookie_name, secure)
            raise cherrypy.HTTPRedirect(login_url(_here(), "expired"), 303) from None
        except UpstreamUnavailable as exc:
            raise cherrypy.HTTPError(504, f"The {exc.service} is not answering right now. "
                                          "Please try again in a moment.") from None
        except UpstreamError as exc:
            raise cherrypy.HTTPError(502, f"The {exc.service} answered with an error "
                                          f"({exc.status or 'no status'}): {exc.message}") from None
        except StoreUnavailable:
            raise cherrypy.HTTPError(503, DB_DOWN) from None

    return guarded


def resolve_session(engine, socialos, cookie_name, secure, required=True):
    """Before the handler: cookie → session → credentials → ``request.signed_in``.

    Signed-out requests to pages that need a session are sent to sign in,
    with the page they wanted as ``next``.
    """
    request = cherrypy.serving.request
    request.signed_in = None
    morsel = request.cookie.get(cookie_name)
    if morsel is not None and morsel.value:
        try:
            found = engine.resume(morsel.value)
        except StoreUnavailable:
            if required:
                raise cherrypy.HTTPError(503, DB_DOWN) from None
            found = None  # public pages (the sign-in form) still render without the database
            morsel = None
        if found:
            record, credentials = found
            request.signed_in = SignedIn(record, credentials, morsel.value, socialos)
        elif morsel is not None:
            expire_cookie(cookie_name, secure)  # stale or forged: drop it
    if request.signed_in is None and required:
        raise cherrypy.HTTPRedirect(login_url(_here()), 303)
    if request.handler is not None:
        request.handler = _guard(request.handler, engine, cookie_name, secure)


# -- CSRF --------------------------------------------------------------------
def check_csrf(keyring, precookie_name):
    """Before the handler: every state-changing request carries a valid token.

    Signed in, the token is bound to the session's token; signed out (the
    sign-in form), to a random pre-session cookie. Either way a page of
    another site can't know it.
    """
    request = cherrypy.serving.request
    signed_in = getattr(request, "signed_in", None)
    if signed_in is not None:
        binding = "session:" + signed_in.token
    else:
        morsel = request.cookie.get(precookie_name)
        binding = "login:" + morsel.value if morsel is not None and morsel.value else ""
    request.csrf_token = keyring.current.csrf_token(binding) if binding else ""
    if request.method not in STATE_CHANGING:
        return
    given = request.params.pop("csrf_token", None) or request.headers.get("X-CSRF-Token")
    if isinstance(given, list):
        given = given[0]
    if not binding or not any(key.check_csrf(binding, given) for key in keyring.keys):
        raise cherrypy.HTTPError(403, "This form has expired or did not come from this site. "
                                      "Reload the page and try again.")


# -- headers -----------------------------------------------------------------
def secure_headers(csp, no_store=True):
    """Before finalize: CSP, no sniffing, no framing, and no caching of dynamic pages."""
    headers = cherrypy.serving.response.headers
    headers["Content-Security-Policy"] = csp
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if no_store:
        # The back button after sign-out must not show a signed-in page from cache.
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"


cherrypy.tools.socialos_session = cherrypy.Tool("before_handler", resolve_session, priority=40)
cherrypy.tools.csrf = cherrypy.Tool("before_handler", check_csrf, priority=60)
cherrypy.tools.secure_headers = cherrypy.Tool("before_finalize", secure_headers, priority=60)
