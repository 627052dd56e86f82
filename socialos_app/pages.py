"""Page handlers: sign-in and sign-out, dashboards, health.

Handlers get the signed-in user from ``cherrypy.request.signed_in`` (set by
the session tool) and call the Social OS API through that user's client.
"""

import re
import secrets
from urllib.parse import urlsplit

import cherrypy

from .errors import Unauthorized, UpstreamError, UpstreamUnavailable
from .render import render
from .sessions import Credentials, StoreUnavailable
from .sessions.engine import utcnow
from .tools import expire_cookie, set_cookie

__all__ = ["Root", "safe_next"]

MAX_USERNAME = 128
MAX_PASSWORD = 1024
MAX_QUERY = 200
_USERNAME_RE = re.compile(r"^[\w.@+-]{1,128}$")


def safe_next(value, default="/dashboard"):
    """Only a path on this site: no scheme, host, ``//`` or backslash tricks."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return default
    if value.startswith(("//", "/\\")) or "\\" in value or any(ord(c) < 0x20 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path.startswith("/login"):
        return default
    return value


def _as_dict(answer):
    """An upstream answer that should be an object; anything else counts as empty."""
    return answer if isinstance(answer, dict) else {}


def _client_address():
    return cherrypy.serving.request.remote.ip or ""


class Root:
    """The app's pages. ``services`` holds settings, the session engine and clients."""

    def __init__(self, services):
        self.services = services
        self.settings = services.settings

    # -- helpers -------------------------------------------------------------
    def _require_post(self):
        if cherrypy.serving.request.method != "POST":
            cherrypy.serving.response.headers["Allow"] = "POST"
            raise cherrypy.HTTPError(405, "Use the form on the page for this.")

    def _precookie(self):
        """The pre-session cookie the sign-in form's CSRF token is bound to."""
        request = cherrypy.serving.request
        name = self.services.precookie_name
        morsel = request.cookie.get(name)
        if morsel is not None and re.fullmatch(r"[A-Za-z0-9_-]{43}", morsel.value or ""):
            return morsel.value
        value = secrets.token_urlsafe(32)
        set_cookie(name, value, self.settings.cookie_secure)
        request.csrf_token = self.services.keyring.current.csrf_token("login:" + value)
        return value

    def _login_form(self, next_path="", error="", username="", status=200, reason=""):
        self._precookie()
        cherrypy.serving.response.status = status
        notice = "Your session has ended. Please sign in again." if reason == "expired" else ""
        return render("login.html", title="Sign in", next_path=next_path, error=error,
                      username=username, notice=notice)

    # -- routes --------------------------------------------------------------
    @cherrypy.expose
    def index(self):
        target = "/dashboard" if cherrypy.serving.request.signed_in else "/login"
        raise cherrypy.HTTPRedirect(target, 303)

    @cherrypy.expose
    def login(self, username="", password="", next="", reason="", **_ignored):
        request = cherrypy.serving.request
        if request.method == "GET":
            if request.signed_in is not None:
                raise cherrypy.HTTPRedirect(safe_next(next), 303)
            return self._login_form(next_path=safe_next(next, ""), reason=reason)
        self._require_post()
        next_path = safe_next(next, "")
        if not isinstance(username, str) or not isinstance(password, str):
            return self._login_form(next_path, "Enter a username and a password.", status=400)
        username = username.strip()
        if not username or not password:
            return self._login_form(next_path, "Enter a username and a password.", username[:MAX_USERNAME])
        if not _USERNAME_RE.match(username) or len(password) > MAX_PASSWORD:
            return self._login_form(next_path, "Wrong username or password.", username[:MAX_USERNAME])

        svc = self.services
        throttle, address = svc.throttle, _client_address()
        wait = throttle.blocked(username, address)
        if wait:
            cherrypy.serving.response.headers["Retry-After"] = str(wait)
            unit = "second" if wait == 1 else "seconds"
            return self._login_form(next_path, f"Too many failed attempts. Try again in {wait} {unit}.",
                                    username, 429)
        try:
            key = svc.socialos.create_key(username, password, ttl=self.settings.session_ttl)
        except Unauthorized:
            throttle.failed(username, address)
            return self._login_form(next_path, "Wrong username or password.", username)
        except UpstreamUnavailable:
            return self._login_form(next_path, "The Social OS API is not answering right now. "
                                    "Please try again in a moment.", username, 504)
        except UpstreamError:
            return self._login_form(next_path, "The Social OS API could not sign you in just now. "
                                    "Please try again in a moment.", username, 502)
        throttle.succeeded(username, address)

        credentials = Credentials(token=key["token"], password=key["password"])
        client = svc.socialos.user(username, credentials.password)
        try:
            profile = _as_dict(client.get("user", username))
        except UpstreamError:
            profile = {}
        name = str(profile.get("name") or username)[:200]
        admin = profile.get("admin") is True or username == self.settings.admin_user

        # A fresh token every time: a cookie planted before sign-in never survives it.
        old = request.cookie.get(svc.cookie_name)
        if old is not None and old.value:
            svc.engine.end(old.value)
        token, _record = svc.engine.start(
            username, name, admin, credentials,
            user_agent=request.headers.get("User-Agent", ""), address=address)
        set_cookie(svc.cookie_name, token, self.settings.cookie_secure, self.settings.session_max_age)
        raise cherrypy.HTTPRedirect(next_path or "/dashboard", 303)

    @cherrypy.expose
    def logout(self, **_ignored):
        self._require_post()
        signed_in = cherrypy.serving.request.signed_in
        svc = self.services
        creds = signed_in.credentials
        try:
            svc.socialos.revoke_key(signed_in.username, creds.token, creds.password)
        except UpstreamError as exc:
            # The session still ends here; the key expires upstream by its own TTL.
            cherrypy.log.error(f"sign-out: key not revoked upstream ({exc.status})", "APP")
        svc.engine.end(signed_in.token)
        expire_cookie(svc.cookie_name, self.settings.cookie_secure)
        raise cherrypy.HTTPRedirect("/login", 303)

    @cherrypy.expose
    def dashboard(self, q=None, **_ignored):
        user = cherrypy.serving.request.signed_in
        profile = _as_dict(user.api.get("user", user.username))
        query = q.strip()[:MAX_QUERY] if isinstance(q, str) else ""
        results = None
        if query:
            results = _as_dict(user.api.search("user", params={"q": query})).get("results")
            results = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
        devices = self.services.engine.store.list_user(user.username)
        return render("dashboard.html", title="Dashboard", profile=profile, query=query,
                      results=results, devices=devices, current=user.record.id)

    @cherrypy.expose
    def devices(self, handle="", everywhere="", **_ignored):
        """Sign out one of my other devices, or all of them."""
        self._require_post()
        user = cherrypy.serving.request.signed_in
        store = self.services.engine.store
        if everywhere:
            store.destroy_where(user.username, keep_id=user.record.id)
        elif isinstance(handle, str) and re.fullmatch(r"[0-9a-f]{12}", handle):
            store.destroy_where(user.username, handle=handle, keep_id=user.record.id)
        raise cherrypy.HTTPRedirect("/dashboard", 303)

    @cherrypy.expose
    def admin(self, **_ignored):
        user = cherrypy.serving.request.signed_in
        if not user.admin:
            raise cherrypy.HTTPError(403, "This page is for administrators.")
        problem = ""
        users = []
        try:
            users = _as_dict(self.services.socialos.admin().get("user")).get("users")
            users = [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []
        except Unauthorized:
            problem = "The Social OS admin API refused the admin credentials in SOCIALOS_ADMIN_USER."
        except UpstreamError as exc:
            problem = f"The Social OS admin API could not be reached: {exc.message}"
        stats = self.services.engine.store.stats(utcnow(), self.settings.session_ttl)
        peak = max(stats["by_hour"].values()) or 1
        return render("admin.html", title="Admin", users=users, stats=stats, peak=peak, problem=problem)

    @cherrypy.expose
    def healthz(self, **_ignored):
        cherrypy.serving.response.headers["Content-Type"] = "application/json"
        try:
            self.services.engine.store.ping()
        except StoreUnavailable:
            cherrypy.serving.response.status = 503
            cherrypy.serving.response.headers["Retry-After"] = "5"
            return b'{"status": "unavailable", "database": "unreachable"}'
        return b'{"status": "ok", "database": "ok"}'
