"""``/confirm``: "Confirm it's you", the password again before a sensitive action.

The ``fresh_session`` tool (``web.security``) sends a session that is not
fresh here with the action as ``next`` (a GET address of this site). The
password is checked as at sign-in, through the same throttle; on success the
session moves to a new token (a new cookie; the old one names nothing) and is
fresh again, and the browser goes on to ``next``, a page that says what it
will do and asks with a button of its own: the original POST is never replayed.
A wrong password says so and changes nothing.
"""

from collections.abc import Callable, Collection
from urllib.parse import parse_qs, urlsplit

import cherrypy

from socialos_app.accounts import signin as accounts
from socialos_app.upstream.errors import UpstreamError, UpstreamUnavailable, explain
from socialos_app.web.pages.base import with_notice
from socialos_app.web.pages.signin import safe_next
from socialos_app.web.render import plural, render
from socialos_app.web.services import Services
from socialos_app.web.toolbox import allow, expose
from socialos_app.web.tools import SignedIn, expire_cookie, set_cookie

__all__ = ["ConfirmPage", "what_next"]


def what_next(next_path: str) -> str:
    """The action waiting behind ``next_path``, in words."""
    parts = urlsplit(next_path)
    query = parse_qs(parts.query)
    if parts.path == "/devices":
        return "sign out your other devices" if query.get("everywhere") else "sign out one of your devices"
    if parts.path == "/admin/sessions":
        name = (query.get("username") or [""])[0][:128]
        return f"end every session of {name}" if name else "end a user's sessions"
    if parts.path.startswith("/admin"):
        return "open the admin pages"
    return "continue"


class ConfirmPage:
    """``GET /confirm`` (the form) and ``POST /confirm`` (the check)."""

    def __init__(self, services: Services, return_pages: Callable[[], Collection[str]]) -> None:
        self.services = services
        self.return_pages = return_pages  # the tree's GET pages for signed-in people, known once mounted

    def _form(self, user: SignedIn, next_path: str, error: str = "", status: int = 200) -> str:
        cherrypy.serving.response.status = status
        return render("confirm.html", title="Confirm it's you", next_path=next_path, error=error,
                      action=what_next(next_path), username=user.username)

    @expose
    @allow("GET", "POST")
    def index(self, password: object = None, next: object = "", **_ignored: object) -> str:  # noqa: A002 - the form field is named next
        request = cherrypy.serving.request
        user: SignedIn = request.signed_in
        next_path = safe_next(next, self.return_pages(), "/dashboard")
        if request.method == "GET":
            return self._form(user, next_path)
        if not isinstance(password, str) or not password:
            return self._form(user, next_path, "Enter your password.", 400)
        svc = self.services
        try:
            token, _record = accounts.confirm(svc, user, password, user_agent=request.headers.get("User-Agent", ""),
                                              address=request.remote.ip or "")
        except accounts.WrongCredentials:
            return self._form(user, next_path, "Wrong password. Nothing was changed; try again.")
        except accounts.Throttled as exc:
            cherrypy.serving.response.headers["Retry-After"] = str(exc.wait)
            return self._form(user, next_path, "Too many wrong passwords. Try again in "
                              f"{plural(exc.wait, 'second')}.", 429)
        except accounts.SessionGone:
            expire_cookie(svc.cookie_name, svc.settings.cookie_secure)
            raise cherrypy.HTTPRedirect(with_notice("/login", "ended"), 303) from None
        except UpstreamUnavailable as exc:
            return self._form(user, next_path, f"{explain(exc)} Nothing was changed; please try again "
                              "in a moment.", 504)
        except UpstreamError as exc:
            return self._form(user, next_path, f"{explain(exc)} Nothing was changed; please try again "
                              "in a moment.", 502)
        set_cookie(svc.cookie_name, token, svc.settings.cookie_secure, svc.settings.session_max_age)
        raise cherrypy.HTTPRedirect(next_path, 303)
