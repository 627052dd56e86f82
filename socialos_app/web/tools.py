"""The functions of the app's CherryPy tools: session resolution, error
translation, CSRF checks, the admin guard and security headers, plus the
cookie helpers they share.

``web.toolbox`` registers them (where each runs, and in which order);
``web.app`` switches them on for the whole app and hands them their
objects (the session engine, the keyring) as tool arguments; pages switch
them off or tune them in their ``_cp_config``.
"""

import re
import secrets
from collections.abc import Callable
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import quote, urlencode

import cherrypy

from socialos_app.crypto import Keyring, looks_like_token
from socialos_app.ops.logs import security_event
from socialos_app.sessions import Credentials, SessionEngine, SessionRecord
from socialos_app.storage import StoreUnavailable
from socialos_app.upstream.errors import Unauthorized, UpstreamError, UpstreamUnavailable, explain
from socialos_app.upstream.socialos import SERVICE as SOCIALOS_API
from socialos_app.upstream.socialos import Client, SocialOS
from socialos_app.web.request import ResponseHeaders

__all__ = ["DB_DOWN", "SignedIn", "admin_only", "check_csrf", "expire_cookie", "head_as_get", "known_paths",
           "login_url", "relative_location", "resolve_session", "secure_headers", "security_headers", "set_cookie",
           "translate_errors"]

DB_DOWN = "The session database is not answering right now. Please try again in a few seconds."
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PRESESSION_COOKIE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
# Characters a Location may keep as they are; everything else is percent-encoded.
_URL_SAFE = "/?#[]@!$&'()*+,;=%:~-._"


class SignedIn:
    """What a handler gets for a signed-in request: the user, and their API client.

    The sealed upstream key is opened only when a page asks for it
    (``api`` or ``credentials``), and lives no longer than the request.
    """

    def __init__(self, record: SessionRecord, token: str, engine: SessionEngine, socialos: SocialOS) -> None:
        self.record = record
        self.username = record.username
        self.name = record.name or record.username
        self.admin = record.admin
        self.token = token
        self._engine = engine
        self._socialos = socialos

    @cached_property
    def credentials(self) -> Credentials | None:
        """The session's upstream API key (``Credentials``), or None if it won't open."""
        return self._engine.credentials(self.token, self.record)

    @cached_property
    def api(self) -> Client:
        """The user's own authenticated Social OS client, built on first use."""
        credentials = self.credentials
        if credentials is None:
            raise Unauthorized("the session's API key could not be opened", service=SOCIALOS_API)
        return self._socialos.user(self.username, credentials.password)

    def __repr__(self) -> str:
        return f"SignedIn({self.username!r})"


# -- cookies ---------------------------------------------------------------
def set_cookie(name: str, value: str, secure: bool, max_age: float | None = None) -> None:
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


def expire_cookie(name: str, secure: bool) -> None:
    """Tell the browser to drop a cookie now."""
    set_cookie(name, "", secure, max_age=0)
    cherrypy.serving.response.cookie[name]["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"


def login_url(next_path: str | None = None, reason: str | None = None) -> str:
    """``/login`` with where to go next and why, both optional."""
    query: dict[str, str] = {}
    if next_path and next_path != "/":
        query["next"] = next_path
    if reason:
        query["reason"] = reason
    return "/login" + ("?" + urlencode(query) if query else "")


def _here() -> str:
    request = cherrypy.serving.request
    path: str = quote(request.path_info, safe="/-_.~")
    if request.method in ("GET", "HEAD") and request.query_string:
        path += "?" + request.query_string
    return path


def _found(request: Any) -> bool:
    """True when this path names one of the app's pages exactly.

    CherryPy's dispatcher also hands ``/dashboard/extra`` to ``dashboard``
    (with ``extra`` as an argument) and ``/login/`` to ``login``; those are
    other addresses, and other addresses are 404s for everyone.
    """
    handler = request.handler
    if handler is None or isinstance(handler, cherrypy.NotFound):
        return False
    if request.path_info != "/" and request.path_info.endswith("/"):
        return False
    return not getattr(handler, "args", ())


def known_paths() -> None:
    """Before the handler (first): unknown addresses are a 404, signed in or not."""
    request = cherrypy.serving.request
    if request.handler is not None and not _found(request):
        raise cherrypy.NotFound()


# -- the session tool --------------------------------------------------------
def resolve_session(engine: SessionEngine, socialos: SocialOS, cookie_name: str, secure: bool,
                    required: bool = True, why_ended: Callable[[str], str] | None = None) -> None:
    """Before the handler: cookie → session → ``request.signed_in``.

    Signed-out requests to pages that need a session are sent to sign in,
    with the page they wanted as ``next``; unknown paths stay 404s.
    ``why_ended(token)`` names how a cookie's session was ended, when the
    security history knows ("limit", "admin", ...): the sign-in page says so.
    """
    request = cherrypy.serving.request
    request.signed_in = None
    morsel = request.cookie.get(cookie_name)
    token = morsel.value if morsel is not None else ""
    if token:
        try:
            record = engine.resume(token)
        except StoreUnavailable:
            # A state-changing request (e.g. /pusher/auth) can't be served without it either.
            if (required or request.method in STATE_CHANGING) and _found(request):
                raise cherrypy.HTTPError(503, DB_DOWN) from None
            record, token = None, ""  # public pages (the sign-in form) still render without the database
        if record is not None:
            request.signed_in = SignedIn(record, token, engine, socialos)
        elif token:
            expire_cookie(cookie_name, secure)  # stale or forged: drop it
    if request.signed_in is None and required and _found(request):
        # A cookie that no longer names a session: say so on the sign-in page (and why, when known).
        reason = None
        if token:
            try:
                why = why_ended(token) if why_ended is not None and looks_like_token(token) else ""
            except StoreUnavailable:
                why = ""
            reason = f"ended-{why}" if why else "ended"
        raise cherrypy.HTTPRedirect(login_url(_here(), reason), 303)


# -- upstream and database trouble → a clear answer -------------------------
def translate_errors(engine: SessionEngine, cookie_name: str, secure: bool) -> None:
    """Before the handler: wrap it so upstream and database errors become pages.

    An upstream 401 from the Social OS API means the user's key is gone
    (expired or revoked upstream): so is their session.
    """
    request = cherrypy.serving.request
    if not _found(request):
        return
    handler = request.handler

    def translated(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except Unauthorized as exc:
            signed_in = request.signed_in
            # The key compared is the Social OS client's own constant: a 401 from any other
            # upstream (the admin API, Pusher) is this server's trouble, not the user's session's.
            if signed_in is None or exc.service != SOCIALOS_API:
                raise cherrypy.HTTPError(502, explain(exc)) from None
            try:
                engine.end(signed_in.token)
            except StoreUnavailable:
                pass
            expire_cookie(cookie_name, secure)
            raise cherrypy.HTTPRedirect(login_url(_here(), "expired"), 303) from None
        except UpstreamUnavailable as exc:
            raise cherrypy.HTTPError(504, f"{explain(exc)} Please try again in a moment.") from None
        except UpstreamError as exc:
            raise cherrypy.HTTPError(502, f"{explain(exc)} Please try again in a moment.") from None
        except StoreUnavailable:
            raise cherrypy.HTTPError(503, DB_DOWN) from None

    request.handler = translated


# -- administrators only ------------------------------------------------------
def admin_only() -> None:
    """Before the handler: a 403 page for anyone but a signed-in administrator.

    On a page class (``_cp_config``), it guards every handler under it,
    including ones added later.
    """
    signed_in = getattr(cherrypy.serving.request, "signed_in", None)
    if signed_in is None or not signed_in.admin:
        raise cherrypy.HTTPError(403, "This page is for administrators.")


# -- CSRF --------------------------------------------------------------------
def check_csrf(keyring: Keyring, presession_cookie_name: str, secure: bool, issue_presession_cookie: bool = False,
               soft: bool = False) -> None:
    """Before the handler: every state-changing request carries a valid token.

    The only writer of CSRF tokens. Signed in, the token is bound to the
    session's token; signed out (the sign-in form), to a random pre-session
    cookie this tool issues where ``issue_presession_cookie`` is on. Either
    way a page of another site can't know it. With ``soft`` (the sign-in form) a failure
    sets ``request.csrf_failed`` for the page to answer with a fresh form
    instead of raising.
    """
    request = cherrypy.serving.request
    request.csrf_failed = False
    signed_in = getattr(request, "signed_in", None)
    if signed_in is not None:
        binding = "session:" + signed_in.token
    else:
        morsel = request.cookie.get(presession_cookie_name)
        value = morsel.value if morsel is not None else ""
        binding = "login:" + value if PRESESSION_COOKIE.fullmatch(value or "") else ""
    request.csrf_token = keyring.csrf_token(binding) if binding else ""

    failed = False
    if request.method in STATE_CHANGING:
        given = request.params.pop("csrf_token", None) or request.headers.get("X-CSRF-Token")
        if isinstance(given, list):
            given = given[0]
        failed = not binding or not keyring.check_csrf(binding, given)
        if failed:
            security_event("csrf_refused", path=request.path_info,
                           signed_in="yes" if signed_in is not None else "no")
    if signed_in is None and issue_presession_cookie and (failed or not binding):
        value = secrets.token_urlsafe(32)  # a new pre-session cookie: a fresh form, a fresh token
        set_cookie(presession_cookie_name, value, secure)
        request.csrf_token = keyring.csrf_token("login:" + value)
    if failed:
        if not soft:
            raise cherrypy.HTTPError(403, "This form has expired or did not come from this site. "
                                          "Reload the page and try again.")
        request.csrf_failed = True


# -- headers -----------------------------------------------------------------
def secure_headers(csp: str, no_store: bool = True) -> None:
    """Before finalize: CSP, no sniffing, no framing, no caching of dynamic
    pages, and redirects that never name a host taken from the request."""
    request, response = cherrypy.serving.request, cherrypy.serving.response
    headers = response.headers
    # Names already in the header map's Title-Case: stored as they are, no transform per name.
    dict.update(headers, security_headers(csp, no_store))
    location = headers.get("Location")
    if location:
        headers["Location"] = relative_location(location, request.base)


@lru_cache(maxsize=8)  # one set per CSP and caching mode: a handful per app
def security_headers(csp: str, no_store: bool = True) -> tuple[tuple[str, str], ...]:
    """The security headers of an answer, made once per ``csp`` and ``no_store``; their bytes too
    (``ResponseHeaders.constant``), so no answer encodes them again."""
    pairs = [("Content-Security-Policy", csp), ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
             ("Referrer-Policy", "same-origin"), ("Cross-Origin-Opener-Policy", "same-origin")]
    if no_store:
        # The back button after sign-out must not show a signed-in page from cache.
        pairs += [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
    ResponseHeaders.constant(*(value for _name, value in pairs))
    return tuple(pairs)


def relative_location(location: str, base: str) -> str:
    """A Location on this site as a path: CherryPy makes it absolute from the
    Host header, which a client chooses. Non-ASCII is percent-encoded."""
    if base and location.startswith(base + "/"):
        location = location[len(base):]
    return quote(location, safe=_URL_SAFE)


def head_as_get() -> None:
    """Before the handler: a HEAD request runs the GET page (CherryPy drops the body).

    Handlers then only ever tell GET from POST, and uptime monitors that
    send HEAD see what browsers see.
    """
    request = cherrypy.serving.request
    if request.method == "HEAD":
        request.method = "GET"
        request.hooks.attach("on_end_resource", _back_to_head, priority=0)


def _back_to_head() -> None:
    cherrypy.serving.request.method = "HEAD"

