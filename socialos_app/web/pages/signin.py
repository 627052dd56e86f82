"""Signing in and out: ``/`` (where to go), ``/login`` (the form) and ``/logout``.

Handlers get the signed-in user from ``cherrypy.request.signed_in`` (set by
the session tool) and call ``accounts`` for anything that signs people in
or out. After signing in, the user goes back to the page they asked for
(``next=``): any page of the tree for signed-in people that answers GET,
read from the tree itself when the app is mounted (``return_pages``).
"""

from collections.abc import Collection
from urllib.parse import urlsplit

import cherrypy

from socialos_app.accounts import signin as accounts
from socialos_app.upstream.errors import UpstreamError, UpstreamUnavailable, explain
from socialos_app.web.pages.base import notice_text, text, with_notice
from socialos_app.web.render import plural, render
from socialos_app.web.services import Services
from socialos_app.web.toolbox import allow, config, expose
from socialos_app.web.tools import expire_cookie, set_cookie

__all__ = ["SignInPages", "safe_next"]

MAX_NEXT = 2000


def safe_next(value: object, pages: Collection[str], default: str = "/dashboard") -> str:
    """``value`` when it is one of ``pages`` (with any query); else ``default``.

    Only a path of this site: no scheme, host, ``//`` or backslash tricks.
    """
    if not isinstance(value, str) or not value.startswith("/") or len(value) > MAX_NEXT:
        return default
    if value.startswith(("//", "/\\")) or "\\" in value or any(ord(c) < 0x20 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path not in pages:
        return default
    return value


class SignInPages:
    """``/``, ``/login`` and ``/logout``: the top of the tree, the other areas mix in beside them."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        # Pages a sign-in may return to; ``web.app.mount`` fills it from the mounted tree.
        self.return_pages: frozenset[str] = frozenset()

    def _insecure_cookies(self) -> bool:
        """Secure cookies over plain http: the browser drops them, so sign-in can't work."""
        base: str = cherrypy.serving.request.base or ""
        return self.settings.cookie_secure and base.startswith("http://")

    def _login_form(self, next_path: str = "", error: str = "", username: str = "", status: int = 200,
                    notice: str = "") -> str:
        cherrypy.serving.response.status = status
        return render("login.html", title="Sign in", next_path=next_path, error=error,
                      username=username, notice=notice, insecure=self._insecure_cookies())

    @expose
    def index(self) -> None:
        target = "/dashboard" if cherrypy.serving.request.signed_in else "/login"
        raise cherrypy.HTTPRedirect(target, 303)

    @expose
    @allow("GET", "POST")
    @config({
        "tools.socialos_session.required": False,
        # The CSRF tool issues the form's pre-session cookie, and a stale token
        # re-shows the form (403) with the username kept instead of an error page.
        "tools.csrf.issue_presession_cookie": True,
        "tools.csrf.soft": True,
    })
    def login(self, username: object = "", password: object = "", next: object = "",  # noqa: A002 - the form field is named next
              reason: object = "", notice: object = "", **_ignored: object) -> str:
        request = cherrypy.serving.request
        next_path = safe_next(next, self.return_pages, "")
        if request.method == "GET":
            if request.signed_in is not None:
                raise cherrypy.HTTPRedirect(next_path or "/dashboard", 303)
            return self._login_form(next_path, notice=notice_text(notice or reason))
        name = text(username, accounts.MAX_USERNAME)
        if getattr(request, "csrf_failed", False):
            # The tool has already issued a fresh token; keep what the user typed.
            if self._insecure_cookies():
                return self._login_form(next_path, username=name, status=403)
            return self._login_form(next_path, "This form had expired, so you were not signed in. "
                                    "Please enter your password again.", name, 403)
        if not name or not isinstance(password, str) or not password:
            return self._login_form(next_path, "Enter a username and a password.", name)
        svc = self.services
        old = request.cookie.get(svc.cookie_name)
        try:
            token, _record = accounts.sign_in(
                svc, name, password, user_agent=request.headers.get("User-Agent", ""),
                address=request.remote.ip or "", old_token=old.value if old is not None else None)
        except accounts.WrongCredentials:
            return self._login_form(next_path, "Wrong username or password.", name)
        except accounts.Throttled as exc:
            cherrypy.serving.response.headers["Retry-After"] = str(exc.wait)
            return self._login_form(next_path, "Too many failed attempts. Try again in "
                                    f"{plural(exc.wait, 'second')}.", name, 429)
        except UpstreamUnavailable as exc:
            return self._login_form(next_path, f"{explain(exc)} You were not signed in; "
                                    "please try again in a moment.", name, 504)
        except UpstreamError as exc:
            return self._login_form(next_path, f"{explain(exc)} You were not signed in; "
                                    "please try again in a moment.", name, 502)
        set_cookie(svc.cookie_name, token, self.settings.cookie_secure, self.settings.session_max_age)
        raise cherrypy.HTTPRedirect(next_path or "/dashboard", 303)

    @expose
    @allow("POST")
    def logout(self, **_ignored: object) -> None:
        svc = self.services
        accounts.sign_out(svc, cherrypy.serving.request.signed_in)
        expire_cookie(svc.cookie_name, self.settings.cookie_secure)
        raise cherrypy.HTTPRedirect(with_notice("/login", "signed-out"), 303)
