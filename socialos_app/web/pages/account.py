"""Page handlers: sign-in and sign-out, dashboard and devices, admin.

Handlers get the signed-in user from ``cherrypy.request.signed_in`` (set by
the session tool), call ``accounts`` for anything that signs people in or
out, and map what comes back onto a page. After an action they redirect
with a *notice code* (``?notice=signed-out``): the page looks the code up
in ``NOTICES``, so a message is always one of ours, never text from the URL.
"""

import re
from urllib.parse import urlencode, urlsplit

import cherrypy

from socialos_app.accounts import signin as accounts
from socialos_app.accounts.useragent import describe
from socialos_app.upstream.errors import Unauthorized, UpstreamError, UpstreamUnavailable, explain
from socialos_app.web.render import plural, render
from socialos_app.web.tools import expire_cookie, set_cookie

__all__ = ["NOTICES", "AdminPages", "Root", "notice_text", "safe_next"]

MAX_QUERY = 200
ADMIN_PAGE_SIZE = 20
STATS_LATE_SECONDS = 10  # older counts say when they were made
_HANDLE_RE = re.compile(r"[0-9a-f]{12}")

# Pages a sign-in may return to: each answers GET. A POST-only address
# (/logout, /pusher/auth) would greet the user with a 405 after signing in.
GET_PAGES = frozenset({"/", "/dashboard", "/presence", "/admin", "/devices", "/admin/sessions"})

# The one-time messages, by code. ``{n}`` is the count passed as ``n``.
NOTICES = {
    "signed-out": "You have signed out.",
    "expired": "Your session has ended. Please sign in again.",
    # The session tool can't tell these two apart: the record is gone either way.
    "ended": "This browser was signed out: its session was ended from another device, or it expired. "
             "Please sign in again.",
    "device-ended": ("That device was already signed out.", "That device has been signed out."),
    "others-ended": ("There were no other devices to sign out.",
                     "Signed out {n}. This is now your only signed-in device."),
    "user-ended": ("That user had no active sessions.", "Ended {n} of that user."),
}
# What ``{n}`` counts, per code.
_COUNTED = {"others-ended": "other device", "user-ended": "session"}


def notice_text(code, n=None):
    """The message for a notice code, or "" for anything we didn't write ourselves."""
    entry = NOTICES.get(code) if isinstance(code, str) else None
    if entry is None:
        return ""
    if isinstance(entry, str):
        return entry
    try:
        count = int(n) if n is not None else 1
    except (TypeError, ValueError):
        count = 1
    count = max(0, min(count, 10_000))
    text = entry[0] if count == 0 else entry[1]
    return text.replace("{n}", plural(count, _COUNTED.get(code, "item")))


def with_notice(path, code, n=None, **query):
    """``path`` with a notice code (and its count) in the query string."""
    return _url(path, **query, notice=code, n=None if n is None else str(int(n)))


def _url(path, **query):
    """``path`` with the non-empty ``query`` values, URL-encoded."""
    params = {k: v for k, v in query.items() if v}
    return f"{path}?{urlencode(params)}" if params else path


def safe_next(value, default="/dashboard"):
    """Only a page of this site that answers GET: no scheme, host, ``//`` or backslash tricks."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return default
    if value.startswith(("//", "/\\")) or "\\" in value or any(ord(c) < 0x20 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path not in GET_PAGES:
        return default
    return value


def _as_dict(answer):
    """An upstream answer that should be an object; anything else counts as empty."""
    return answer if isinstance(answer, dict) else {}


def _page_number(value):
    try:
        return max(1, min(int(value), 10_000))
    except (TypeError, ValueError):
        return 1


def _text(value, limit=MAX_QUERY):
    return value.strip()[:limit] if isinstance(value, str) else ""


def _device_row(record, current_id):
    """What the devices table shows of a session record."""
    return {"handle": record.handle, "label": describe(record.user_agent),
            "user_agent": record.user_agent, "address": record.address or "unknown address",
            "created": record.created, "accessed": record.accessed,
            "current": record.id == current_id}


class Root:
    """The app's pages. ``services`` holds settings, the session engine and clients."""

    def __init__(self, services):
        self.services = services
        self.settings = services.settings
        self.admin = AdminPages(services)

    # -- helpers -------------------------------------------------------------
    def _insecure_cookies(self):
        """Secure cookies over plain http: the browser drops them, so sign-in can't work."""
        base = cherrypy.serving.request.base or ""
        return self.settings.cookie_secure and base.startswith("http://")

    def _login_form(self, next_path="", error="", username="", status=200, notice=""):
        cherrypy.serving.response.status = status
        return render("login.html", title="Sign in", next_path=next_path, error=error,
                      username=username, notice=notice, insecure=self._insecure_cookies())

    def _devices(self, user):
        rows = [_device_row(r, user.record.id) for r in self.services.engine.devices(user.username)]
        rows.sort(key=lambda d: not d["current"])  # this device first, then newest
        return rows

    # -- routes --------------------------------------------------------------
    @cherrypy.expose
    def index(self):
        target = "/dashboard" if cherrypy.serving.request.signed_in else "/login"
        raise cherrypy.HTTPRedirect(target, 303)

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["GET", "POST"])
    def login(self, username="", password="", next="", reason="", notice="", **_ignored):  # noqa: A002 - the form field is named next
        request = cherrypy.serving.request
        next_path = safe_next(next, "")
        if request.method == "GET":
            if request.signed_in is not None:
                raise cherrypy.HTTPRedirect(next_path or "/dashboard", 303)
            return self._login_form(next_path, notice=notice_text(notice or reason))
        username = _text(username, accounts.MAX_USERNAME)
        if getattr(request, "csrf_failed", False):
            # The tool has already issued a fresh token; keep what the user typed.
            if self._insecure_cookies():
                return self._login_form(next_path, username=username, status=403)
            return self._login_form(next_path, "This form had expired, so you were not signed in. "
                                    "Please enter your password again.", username, 403)
        if not username or not isinstance(password, str) or not password:
            return self._login_form(next_path, "Enter a username and a password.", username)
        svc = self.services
        old = request.cookie.get(svc.cookie_name)
        try:
            token, _record = accounts.sign_in(
                svc, username, password, user_agent=request.headers.get("User-Agent", ""),
                address=request.remote.ip or "", old_token=old.value if old is not None else None)
        except accounts.WrongCredentials:
            return self._login_form(next_path, "Wrong username or password.", username)
        except accounts.Throttled as exc:
            cherrypy.serving.response.headers["Retry-After"] = str(exc.wait)
            return self._login_form(next_path, "Too many failed attempts. Try again in "
                                    f"{plural(exc.wait, 'second')}.", username, 429)
        except UpstreamUnavailable as exc:
            return self._login_form(next_path, f"{explain(exc)} You were not signed in; "
                                    "please try again in a moment.", username, 504)
        except UpstreamError as exc:
            return self._login_form(next_path, f"{explain(exc)} You were not signed in; "
                                    "please try again in a moment.", username, 502)
        set_cookie(svc.cookie_name, token, self.settings.cookie_secure, self.settings.session_max_age)
        raise cherrypy.HTTPRedirect(next_path or "/dashboard", 303)

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["POST"])
    def logout(self, **_ignored):
        svc = self.services
        accounts.sign_out(svc, cherrypy.serving.request.signed_in)
        expire_cookie(svc.cookie_name, self.settings.cookie_secure)
        raise cherrypy.HTTPRedirect(with_notice("/login", "signed-out"), 303)

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["GET"])
    def dashboard(self, q=None, notice="", n=None, **_ignored):
        user = cherrypy.serving.request.signed_in
        profile = _as_dict(user.api.get("user", user.username))
        query = _text(q)
        results = None
        if query:
            results = _as_dict(user.api.search("user", params={"q": query})).get("results")
            results = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
        devices = self._devices(user)
        return render("dashboard.html", title="Dashboard", profile=profile, query=query,
                      results=results, devices=devices, notice=notice_text(notice, n))

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["GET", "POST"])
    def devices(self, handle="", everywhere="", **_ignored):
        """Sign out one of my other devices, or all of them.

        GET asks (a page with a POST form, so it works without scripts);
        POST, with the form's CSRF token, does it.
        """
        request = cherrypy.serving.request
        user = request.signed_in
        handle = handle if isinstance(handle, str) and _HANDLE_RE.fullmatch(handle) else ""
        everywhere = bool(everywhere) and not handle
        if request.method == "POST":
            if everywhere:
                ended = accounts.end_devices(self.services, user)
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "others-ended", ended), 303)
            if handle:
                ended = accounts.end_devices(self.services, user, handle=handle)
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "device-ended", ended), 303)
            raise cherrypy.HTTPRedirect("/dashboard#devices", 303)
        others = [d for d in self._devices(user) if not d["current"]]
        if handle:
            targets = [d for d in others if d["handle"] == handle]
            if not targets:
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "device-ended", 0), 303)
        elif everywhere:
            targets = others
            if not targets:
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "others-ended", 0), 303)
        else:
            raise cherrypy.HTTPRedirect("/dashboard#devices", 303)
        return render("confirm_devices.html", title="Sign out devices", targets=targets,
                      handle=handle, everywhere=everywhere)


def _admin_only():
    """The signed-in administrator; a 403 page for anyone else."""
    user = cherrypy.serving.request.signed_in
    if not user.admin:
        raise cherrypy.HTTPError(403, "This page is for administrators.")
    return user


class AdminPages:
    """``/admin`` and ``/admin/sessions``: administrators only."""

    def __init__(self, services):
        self.services = services

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["GET"])
    def index(self, q="", page="1", per="", notice="", n=None, **_ignored):
        """Users (searched, a page at a time) and session statistics."""
        _admin_only()
        problem, users = "", []
        try:
            users = _as_dict(self.services.socialos.admin().get("user")).get("users")
            users = [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []
        except UpstreamError as exc:
            problem = f"The list of users can't be shown: {explain(exc)}"
            if isinstance(exc, Unauthorized):
                problem += " Check SOCIALOS_ADMIN_USER and SOCIALOS_ADMIN_PASSWORD."
        query = _text(q)
        if query:
            needle = query.casefold()
            users = [u for u in users if any(needle in str(u.get(k) or "").casefold()
                                             for k in ("username", "name", "email"))]
        size = min(max(_page_number(per or ADMIN_PAGE_SIZE), 5), 100)
        pages = max(1, -(-len(users) // size))
        number = min(_page_number(page), pages)
        shown = users[(number - 1) * size:number * size]
        keep = {"q": query, "per": size if per else ""}
        prev_url = _url("/admin", **keep, page=number - 1) if number > 1 else ""
        next_url = _url("/admin", **keep, page=number + 1) if number < pages else ""
        stats = self.services.engine.stats()
        by_hour = {h: int(stats.get("by_hour", {}).get(h, 0)) for h in range(24)}
        counted_late = (stats.get("age") or 0) > STATS_LATE_SECONDS
        peak = max(by_hour.values()) or 1
        return render("admin.html", title="Admin", users=shown, total=len(users), query=query,
                      page=number, pages=pages, page_size=size, per=per and size,
                      prev_url=prev_url, next_url=next_url, stats=stats,
                      by_hour=by_hour, peak=peak, counted_late=counted_late,
                      problem=problem, notice=notice_text(notice, n),
                      admin_user=self.services.settings.admin_user)

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["GET", "POST"])
    def sessions(self, username="", **_ignored):
        """Confirm (GET), then end (POST, with the form's CSRF token) every session of one user."""
        admin = _admin_only()
        request = cherrypy.serving.request
        username = _text(username, accounts.MAX_USERNAME)
        if not accounts.USERNAME.fullmatch(username):
            raise cherrypy.HTTPRedirect("/admin", 303)
        if request.method == "POST":
            ended = accounts.end_user(self.services, username, by=admin.username)
            raise cherrypy.HTTPRedirect(with_notice("/admin", "user-ended", ended, q=username), 303)
        sessions = [_device_row(r, admin.record.id) for r in self.services.engine.devices(username)]
        return render("confirm_user.html", title="End sessions", username=username, sessions=sessions)
