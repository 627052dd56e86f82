"""The presence page, Pusher channel authorization and Pusher webhooks.

``/presence`` lists a presence channel's members by signed REST calls, so
it works fully server-rendered; with PUSHER_JS_URL set, a small script of
ours subscribes through ``/pusher/auth`` and keeps the list live.
"""

import json

import cherrypy

from .errors import UpstreamError, UpstreamUnavailable
from .pusher import WebhookError, valid_presence_channel, valid_private_channel, valid_socket_id
from .render import render

__all__ = ["PresencePages", "PusherEndpoints"]

MAX_PROFILE_LOOKUPS = 10  # names we don't know yet, fetched per page view at most


def _json(status, payload):
    cherrypy.serving.response.status = status
    cherrypy.serving.response.headers["Content-Type"] = "application/json"
    return json.dumps(payload).encode()


class PresencePages:
    """``GET /presence?channel=presence-NAME``."""

    def __init__(self, services):
        self.services = services

    def _names(self, user, ids):
        directory = self.services.presence
        names = directory.names(ids)
        for user_id in [i for i in ids if i not in names][:MAX_PROFILE_LOOKUPS]:
            try:
                profile = user.api.get("user", user_id)
            except (UpstreamError, ValueError):
                continue  # not a Social OS user (or no usable id), or the API is busy: show the id
            name = profile.get("name") if isinstance(profile, dict) else None
            if isinstance(name, str) and name:
                names[user_id] = name
                directory.remember(user_id, name)
        return names

    @cherrypy.expose
    def index(self, channel=None, **_ignored):
        settings = self.services.settings
        channel = settings.pusher_channel if channel is None else channel
        if not isinstance(channel, str) or not valid_presence_channel(channel):
            raise cherrypy.HTTPError(400, "A presence channel name starts with 'presence-' and uses "
                                          "only letters, digits and _ - = @ , . ; (at most 164).")
        user = cherrypy.serving.request.signed_in
        pusher = self.services.pusher
        members, problem, status = [], "", 200
        if pusher is None:
            problem = "Pusher is not configured on this server (PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET)."
        else:
            try:
                ids = sorted(set(pusher.channel_users(channel)))
                names = self._names(user, ids)
                members = [{"id": i, "name": names.get(i, "")} for i in ids]
            except UpstreamUnavailable:
                problem, status = "Pusher did not answer in time, so the member list can't be shown. " \
                                  "Reload in a moment.", 504
            except UpstreamError as exc:
                problem, status = f"Pusher refused the member list request ({exc.status or 'no status'}): " \
                                  f"{exc.message}", 502
        cherrypy.serving.response.status = status
        live = bool(pusher and settings.pusher_js_url and settings.pusher_ws_host)
        return render("presence.html", title="Presence", channel=channel, members=members,
                      problem=problem, live=live, pusher_key=settings.pusher_key,
                      pusher_js_url=settings.pusher_js_url, pusher_ws_host=settings.pusher_ws_host,
                      pusher_cluster=settings.pusher_cluster)


class PusherEndpoints:
    """``POST /pusher/auth`` (pusher-js) and ``POST /pusher/webhook`` (Pusher)."""

    def __init__(self, services):
        self.services = services

    @cherrypy.expose
    def auth(self, socket_id=None, channel_name=None, **_ignored):
        """Authorize the signed-in user into a private- or presence- channel."""
        if cherrypy.serving.request.method != "POST":
            cherrypy.serving.response.headers["Allow"] = "POST"
            return _json(405, {"error": "POST only"})
        user = cherrypy.serving.request.signed_in
        if user is None:
            return _json(403, {"error": "sign in first"})
        pusher = self.services.pusher
        if pusher is None:
            return _json(503, {"error": "Pusher is not configured"})
        if not isinstance(socket_id, str) or not valid_socket_id(socket_id):
            return _json(400, {"error": "bad socket_id"})
        if not isinstance(channel_name, str):
            return _json(400, {"error": "bad channel_name"})
        try:
            if valid_presence_channel(channel_name):
                self.services.presence.remember(user.username, user.name)
                body = pusher.authorize(socket_id, channel_name, user_id=user.username,
                                        user_info={"name": user.name})
            elif valid_private_channel(channel_name):
                body = pusher.authorize(socket_id, channel_name)
            else:
                return _json(400, {"error": "only private- and presence- channels need authorization"})
        except ValueError as exc:  # e.g. private-encrypted-: we hold no encryption master key
            return _json(400, {"error": str(exc)})
        return _json(200, body)

    @cherrypy.expose
    def webhook(self, **_ignored):
        """Pusher's webhooks: authentic (key + HMAC of the raw body) or 401."""
        request = cherrypy.serving.request
        if request.method != "POST":
            cherrypy.serving.response.headers["Allow"] = "POST"
            return _json(405, {"error": "POST only"})
        pusher = self.services.pusher
        if pusher is None:
            return _json(503, {"error": "Pusher is not configured"})
        body = request.body.read()
        try:
            payload = pusher.verify_webhook(request.headers.get("X-Pusher-Key"),
                                            request.headers.get("X-Pusher-Signature"), body)
        except WebhookError as exc:
            return _json(exc.status, {"error": exc.message})
        handled = self.services.presence.apply(payload["events"])
        return _json(200, {"ok": True, "handled": handled})
