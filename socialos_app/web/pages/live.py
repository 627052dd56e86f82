"""The live model's endpoints under ``/pusher/``: user authentication and the session check.

``POST /pusher/user-auth`` (pusher-js ``userAuthentication``): signs the
connection in as the session's user (``pusher:signin``), so that ending the
session can terminate its connections. CSRF-checked like ``/pusher/auth``;
only for a live session (403 JSON otherwise, never a redirect).

``GET /pusher/session``: ``{"live": true, "check_in": s}`` or
``{"live": false}``. The page asks it when Pusher closed its connection and
every ``check_in`` seconds (at most ``CHECK_EVERY``, sooner when the session
expires sooner), so a page whose session expired leaves presence within that
bound though nobody ended anything. It reads the session without touching
it: an open page must not keep its session from idling out.

Both are mixed into ``presence.PusherEndpoints`` (``LiveEndpoints``).
"""

import cherrypy

from socialos_app.presence.connections import session_left
from socialos_app.storage import StoreUnavailable
from socialos_app.upstream.pusher import valid_user_id
from socialos_app.web.pages.base import json_answer, pusher_caller
from socialos_app.web.services import Services
from socialos_app.web.toolbox import config, expose

__all__ = ["CHECK_EVERY", "LiveEndpoints", "check_every"]

CHECK_EVERY = 30.0  # seconds between a page's session checks, at most


def check_every(idle_seconds: float) -> float:
    """How often a page checks its session: a quarter of the idle timeout, between 5 s and ``CHECK_EVERY``."""
    return max(5.0, min(CHECK_EVERY, idle_seconds / 4))


class LiveEndpoints:
    """``/pusher/user-auth`` and ``/pusher/session`` (a mixin of ``PusherEndpoints``)."""

    services: Services

    @expose
    @config({"tools.socialos_session.required": False})  # a signed-out call gets 403 JSON, not a redirect
    def user_auth(self, socket_id: object = None, **_ignored: object) -> bytes:
        """Pusher user authentication for the session's user on this socket."""
        checked = pusher_caller(self.services, socket_id)
        if isinstance(checked, bytes):
            return checked
        user, pusher = checked
        if not valid_user_id(user.username):
            # Outside Pusher's id alphabet: this user can't sign in to Pusher (presence still works).
            return json_answer(400, {"error": "this username can't be a Pusher user id"})
        return json_answer(200, pusher.authenticate_user(str(socket_id), user.username, {"name": user.name}))

    @expose
    @config({"tools.socialos_session.on": False})  # read below without touching the session
    def session(self, **_ignored: object) -> bytes:
        """Is this browser's session still live, and when to ask again."""
        request = cherrypy.serving.request
        if request.method not in ("GET", "HEAD"):
            cherrypy.serving.response.headers["Allow"] = "GET"
            return json_answer(405, {"error": "GET only"})
        morsel = request.cookie.get(self.services.cookie_name)
        try:
            left = session_left(self.services.engine, morsel.value if morsel is not None else None)
        except StoreUnavailable:
            # Not known to be over: the page asks again later.
            return json_answer(503, {"error": "the database is not answering; try again shortly"})
        if left is None:
            return json_answer(200, {"live": False})
        _username, seconds = left
        every = check_every(self.services.engine.idle.total_seconds())
        # Just after it would expire if unused meanwhile, and never later than the bound.
        return json_answer(200, {"live": True, "check_in": round(min(every, seconds + 1.0), 1)})
