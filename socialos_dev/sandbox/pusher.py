"""A stand-in for Pusher's HTTP API, strict enough that a wrongly signed
request fails here exactly as it would against the real service.

Pusher's API, under ``/apps/{app_id}/``:

    GET  channels                 ?filter_by_prefix=&info=user_count   {"channels": {name: {...}}}
    GET  channels/{name}          ?info=user_count,subscription_count  {"occupied": bool, ...}
    GET  channels/{name}/users    presence channels only               {"users": [{"id": ...}]}
    POST events                   {"name", "channels" | "channel", "data", "socket_id"?}  {}
    POST batch_events             {"batch": [{"channel", "name", "data", "socket_id"?}]}  {}
    POST users/{user_id}/terminate_connections   {}: closes that user's signed-in sockets (4009)  {}

Every request is checked as Pusher checks it (wrong app id: 404; anything
wrong with the signature: 401 ``{"error": reason}`` naming what is wrong):
``auth_key`` is the app's key, ``auth_version`` is 1.0, ``auth_timestamp``
is within 600 s of now, ``body_md5`` is the MD5 of the exact body bytes,
and ``auth_signature`` is HMAC-SHA256(secret) over ``METHOD\\nPATH\\nQUERY``
where QUERY is every other parameter sorted by lower-cased key, unescaped.

The signature check is written out here again rather than imported from
``socialos_app.upstream.pusher``: a sandbox that shared the client's signer would
accept the client's bugs.

On the same port, ``GET /app/{key}`` with ``Upgrade: websocket`` speaks
Pusher's Channels protocol (``channels_ws``), so pusher-js connects to the
sandbox unchanged. One membership serves all: websocket subscribers, the
sandbox routes' members and the HTTP API's channel users are the same
``PusherState``, and events posted through the HTTP API reach subscribers.
Given a webhook URL, changes are posted there as Pusher's signed webhooks
(``webhooks``): channel_occupied, member_added, member_removed, channel_vacated.

Sandbox-only routes (tests and embedded mode; the app itself never calls them):

    POST   /_sandbox/apps/{app_id}/channels/{channel}/members   {"user_id", "user_info"}: a member
                                                                pinned without a socket (a browser stand-in)
    DELETE /_sandbox/apps/{app_id}/channels/{channel}/members/{user_id}   unpin (they stay while a
                                                                socket of theirs is subscribed)
    GET    /_sandbox/apps/{app_id}/channels/{channel}/members   {"members": [{"id", "user_info"}]}
    GET    /_sandbox/apps/{app_id}/events                       {"events": [...]}: the last 100 received
    DELETE /_sandbox/apps/{app_id}/events                       forget them
    GET    /_sandbox/apps/{app_id}/users/{user_id}/connections  {"socket_ids": [...]}: the sockets signed in
                                                                as that user (``pusher:signin``)
    GET    /_sandbox/apps/{app_id}/webhooks                     {"url", "deliveries": [{"time_ms", "events",
                                                                "status", "error", "attempts"}]}
"""

import collections
import hashlib
import hmac
import json
import re
import threading
import time
from urllib.parse import parse_qsl, unquote

from socialos_dev.sandbox import channels_ws
from socialos_dev.sandbox.base import JSONHandler, SandboxServer
from socialos_dev.sandbox.webhooks import WebhookSender

__all__ = ["DEMO_MEMBERS", "PusherHandler", "PusherState", "make_server"]

# Pusher's published limits (the free and standard plans).
MAX_CHANNELS_PER_EVENT = 100
MAX_DATA_BYTES = 10 * 1024
MAX_EVENT_NAME = 200
MAX_BATCH = 10
MAX_USER_ID = 200
TIMESTAMP_WINDOW = 600
EVENT_LOG_SIZE = 100

CHANNEL_RE = re.compile(r"\A[A-Za-z0-9_\-=@,.;]{1,164}\Z")
SOCKET_ID_RE = re.compile(r"\A[0-9]{1,20}\.[0-9]{1,20}\Z")

DEMO_MEMBERS = (
    ("ada", {"name": "Ada Lovelace"}),
    ("grace", {"name": "Grace Hopper"}),
    ("linus", {"name": "Linus Torvalds"}),
)


class Refused(Exception):
    """A request the sandbox answers with ``status`` and ``{"error": reason}``."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _is_presence(channel):
    return channel.startswith("presence-")


class Member:
    """A user in a presence channel: here through sockets, or pinned by the sandbox route."""

    __slots__ = ("info", "pinned", "sockets")

    def __init__(self, info):
        self.info = info
        self.sockets = set()   # socket ids subscribed as this user
        self.pinned = False    # added by POST /_sandbox/.../members (a browser stand-in)

    @property
    def present(self):
        return self.pinned or bool(self.sockets)


class Channel:
    """One channel's subscribers (socket id -> connection) and, for presence, its members."""

    __slots__ = ("members", "name", "subscribers")

    def __init__(self, name):
        self.name = name
        self.subscribers = {}
        self.members = {}  # user_id -> Member, insertion-ordered

    @property
    def presence(self):
        return _is_presence(self.name)

    @property
    def occupied(self):
        return bool(self.members) if self.presence else bool(self.subscribers)

    @property
    def subscription_count(self):
        return len(self.subscribers) + sum(1 for m in self.members.values() if m.pinned)


class PusherState:
    """One Pusher app: credentials, channels, websocket connections, received events.

    One membership for everyone: websocket subscribers, the sandbox routes'
    members and the HTTP API all read and write the channels here. Every
    change holds ``lock``; messages for sockets are queued (in order) under
    it and written after it is released, so a slow socket never holds it.
    ``webhooks`` (a ``WebhookSender`` or None) gets the webhook events.
    """

    def __init__(self, app_id, key, secret, webhooks=None, activity_timeout=120, pong_timeout=30,
                 max_connections=1000):
        self.app_id, self.key, self.secret = str(app_id), key, secret
        self.webhooks = webhooks
        self.activity_timeout = activity_timeout
        self.pong_timeout = pong_timeout
        self.max_connections = max_connections
        self.lock = threading.Lock()
        self.channels = {}      # name -> Channel (only while occupied or subscribed)
        self.connections = {}   # socket id -> connection
        self.users = {}         # user id -> {socket id: connection}, the sockets signed in as them
        self.events = collections.deque(maxlen=EVENT_LOG_SIZE)

    # -- internals (call with the lock held) -------------------------------
    def _channel(self, name):
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name)
        return channel

    def _hooks(self, *events):
        # Pusher's own #server-to-user- channels are not the app's: no webhooks for them.
        events = [e for e in events if not e.get("channel", "").startswith("#")]
        if events and self.webhooks is not None:
            self.webhooks.post(events)

    def _gone_if_empty(self, channel, hooks):
        if not channel.occupied and not channel.subscribers:
            self.channels.pop(channel.name, None)
        if not channel.occupied:
            hooks.append({"name": "channel_vacated", "channel": channel.name})

    def _member_joined(self, channel, user_id, member, except_socket, touched, hooks):
        """Tell everyone else (and the app's webhook) that ``user_id`` is here now."""
        data = json.dumps({"user_id": user_id, "user_info": member.info})
        for socket_id, conn in channel.subscribers.items():
            if socket_id != except_socket:
                conn.enqueue({"event": "pusher_internal:member_added", "channel": channel.name, "data": data})
                touched.add(conn)
        hooks.append({"name": "member_added", "channel": channel.name, "user_id": user_id})

    def _member_left(self, channel, user_id, touched, hooks):
        del channel.members[user_id]
        data = json.dumps({"user_id": user_id})
        for conn in channel.subscribers.values():
            conn.enqueue({"event": "pusher_internal:member_removed", "channel": channel.name, "data": data})
            touched.add(conn)
        hooks.append({"name": "member_removed", "channel": channel.name, "user_id": user_id})

    @staticmethod
    def _flush(touched):
        for conn in touched:
            conn.flush()

    # -- websocket connections ----------------------------------------------
    def connect(self, conn):
        """Register a new connection; False when the app is over its connection quota."""
        with self.lock:
            if len(self.connections) >= self.max_connections:
                return False
            self.connections[conn.socket_id] = conn
            return True

    def subscribe(self, conn, name, user_id=None, user_info=None):
        """Subscribe ``conn`` (auth already checked); False if it already was.

        Presence: ``user_id`` joins; the first socket of a user makes them a
        member (``member_added`` to the others), more sockets of theirs don't.
        """
        touched, hooks = {conn}, []
        with self.lock:
            channel = self._channel(name)
            if conn.socket_id in channel.subscribers:
                return False
            was_occupied = channel.occupied
            channel.subscribers[conn.socket_id] = conn
            conn.channels[name] = user_id
            if channel.presence:
                member = channel.members.get(user_id)
                if member is None:
                    member = channel.members[user_id] = Member(user_info)
                    self._member_joined(channel, user_id, member, conn.socket_id, touched, hooks)
                member.sockets.add(conn.socket_id)
                presence = {"ids": list(channel.members),
                            "hash": {uid: m.info for uid, m in channel.members.items()},
                            "count": len(channel.members)}
                data = json.dumps({"presence": presence})
            else:
                data = "{}"
            if not was_occupied and channel.occupied:
                hooks.insert(0, {"name": "channel_occupied", "channel": name})
            conn.enqueue({"event": "pusher_internal:subscription_succeeded", "channel": name, "data": data})
            self._hooks(*hooks)
        self._flush(touched)
        return True

    def unsubscribe(self, conn, name):
        touched, hooks = set(), []
        with self.lock:
            self._unsubscribe(conn, name, touched, hooks)
            self._hooks(*hooks)
        self._flush(touched)

    def _unsubscribe(self, conn, name, touched, hooks):
        channel = self.channels.get(name)
        if channel is None or channel.subscribers.pop(conn.socket_id, None) is None:
            return
        user_id = conn.channels.pop(name, None)
        was_occupied = channel.occupied
        if channel.presence:
            member = channel.members.get(user_id)
            if member is not None:
                member.sockets.discard(conn.socket_id)
                if not member.present:
                    self._member_left(channel, user_id, touched, hooks)
        if was_occupied:
            self._gone_if_empty(channel, hooks)
        elif not channel.subscribers and not channel.members:
            self.channels.pop(name, None)

    def disconnect(self, conn):
        """A socket has gone: it leaves every channel it was in."""
        touched, hooks = set(), []
        with self.lock:
            self.connections.pop(conn.socket_id, None)
            sockets = self.users.get(conn.user_id)
            if sockets is not None:
                sockets.pop(conn.socket_id, None)
                if not sockets:
                    del self.users[conn.user_id]
            for name in list(conn.channels):
                self._unsubscribe(conn, name, touched, hooks)
            self._hooks(*hooks)
        touched.discard(conn)
        self._flush(touched)

    def signed_in(self, conn, user_id):
        """``conn`` passed ``pusher:signin`` as ``user_id``."""
        with self.lock:
            if conn.socket_id in self.connections:  # not one that is already gone
                self.users.setdefault(user_id, {})[conn.socket_id] = conn

    def user_sockets(self, user_id):
        with self.lock:
            return sorted(self.users.get(user_id, {}))

    def terminate_user(self, user_id):
        """Close every socket signed in as ``user_id`` with 4009, as Pusher does; how many.

        Each leaves its channels at once (the others see ``member_removed`` now,
        not when the client answers the close frame)."""
        with self.lock:
            doomed = list(self.users.pop(user_id, {}).values())
        for conn in doomed:
            conn.close(4009, "You got disconnected by the app.")
            self.disconnect(conn)
        return len(doomed)

    def all_connections(self):
        with self.lock:
            return list(self.connections.values())

    def deliver(self, channel_names, message, exclude_socket=None):
        """Queue ``message`` (with its channel) to every subscriber of each channel but one socket."""
        touched = set()
        with self.lock:
            for name in channel_names:
                channel = self.channels.get(name)
                for socket_id, conn in (channel.subscribers.items() if channel else ()):
                    if socket_id != exclude_socket:
                        conn.enqueue({**message, "channel": name})
                        touched.add(conn)
        self._flush(touched)

    # -- membership through the sandbox routes -------------------------------
    def add_member(self, channel_name, user_id, user_info=None):
        """Pin a member (a stand-in for a browser); returns the channel's member count."""
        touched, hooks = set(), []
        with self.lock:
            channel = self._channel(channel_name)
            was_occupied = channel.occupied
            member = channel.members.get(user_id)
            if member is None:
                member = channel.members[user_id] = Member(user_info)
                self._member_joined(channel, user_id, member, None, touched, hooks)
            else:
                member.info = user_info if user_info is not None else member.info
            member.pinned = True
            if not was_occupied:
                hooks.insert(0, {"name": "channel_occupied", "channel": channel_name})
            self._hooks(*hooks)
            count = len(channel.members)
        self._flush(touched)
        return count

    def remove_member(self, channel_name, user_id):
        """Unpin a member; they leave unless a socket of theirs is still subscribed.
        True if they were pinned."""
        touched, hooks = set(), []
        with self.lock:
            channel = self.channels.get(channel_name)
            member = channel.members.get(user_id) if channel else None
            if member is None or not member.pinned:
                return False
            member.pinned = False
            if not member.present:
                self._member_left(channel, user_id, touched, hooks)
                self._gone_if_empty(channel, hooks)
            self._hooks(*hooks)
        self._flush(touched)
        return True

    def member_list(self, channel):
        with self.lock:
            found = self.channels.get(channel)
            return [{"id": uid, "user_info": m.info} for uid, m in (found.members.items() if found else ())]

    def user_ids(self, channel):
        with self.lock:
            found = self.channels.get(channel)
            return list(found.members) if found else []

    def occupied(self):
        """{channel: (user count, subscription count)} for every occupied channel."""
        with self.lock:
            return {name: (len(c.members), c.subscription_count)
                    for name, c in self.channels.items() if c.occupied and not name.startswith("#")}

    # -- events ------------------------------------------------------------
    def record(self, events):
        """Log events received through the HTTP API and deliver them to subscribers."""
        with self.lock:
            self.events.extend(events)
        for event in events:
            self.deliver(event["channels"], {"event": event["name"], "data": event["data"]},
                         exclude_socket=event.get("socket_id"))

    def event_log(self):
        with self.lock:
            return list(self.events)

    def clear_events(self):
        with self.lock:
            self.events.clear()


def string_to_sign(method, path, params):
    """``METHOD\\nPATH\\nk=v&...``: keys lower-cased and sorted, values unescaped."""
    pairs = sorted((k.lower(), v) for k, v in params.items() if k.lower() != "auth_signature")
    return "\n".join([method.upper(), path, "&".join(f"{k}={v}" for k, v in pairs)])


class PusherHandler(JSONHandler):
    """Pusher's HTTP API plus the sandbox-only membership and event-log routes."""

    server_version = "PusherSandbox/1.0"

    @property
    def state(self):
        return self.server.pusher

    def route(self, method):
        path = self.url.path
        if method == "GET" and self.headers.get("Upgrade", "").strip().lower() == "websocket":
            return channels_ws.serve(self, self.state)  # Channels protocol, on the same port
        body = self.read_body()  # always drained, so the keep-alive connection stays in step
        if method == "HEAD":  # an answer to HEAD must have no body
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            if path.startswith("/_sandbox/apps/"):
                return self._sandbox_route(method, path, body)
            if path.startswith("/apps/"):
                return self._api_route(method, path, body)
            raise Refused(404, "not found")
        except Refused as refused:
            self.send_json(refused.status, {"error": refused.reason})

    # -- Pusher's API ------------------------------------------------------
    def _api_route(self, method, path, body):
        parts = path.split("/")  # ['', 'apps', id, ...rest]
        if len(parts) < 4 or unquote(parts[2]) != self.state.app_id:
            raise Refused(404, "unknown app id")
        params = self._authenticate(method, path, body)
        rest = [unquote(p) for p in parts[3:]]

        if rest == ["channels"]:
            self._need(method, "GET")
            return self.send_json(200, self._channels(params))
        if len(rest) == 2 and rest[0] == "channels":
            self._need(method, "GET")
            return self.send_json(200, self._channel(rest[1], params))
        if len(rest) == 3 and rest[0] == "channels" and rest[2] == "users":
            self._need(method, "GET")
            return self.send_json(200, self._users(rest[1]))
        if rest == ["events"]:
            self._need(method, "POST")
            return self.send_json(200, self._events(body))
        if rest == ["batch_events"]:
            self._need(method, "POST")
            return self.send_json(200, self._batch_events(body))
        if len(rest) == 3 and rest[0] == "users" and rest[2] == "terminate_connections":
            self._need(method, "POST")
            self._check_user_id(rest[1])
            self.state.terminate_user(rest[1])
            return self.send_json(200, {})
        raise Refused(404, "not found")

    @staticmethod
    def _need(method, wanted):
        if method != wanted:
            raise Refused(405, f"method not allowed: use {wanted}")

    def _authenticate(self, method, path, body):
        """The request's query parameters (keys lower-cased) once its signature holds."""
        params = {}
        try:
            pairs = parse_qsl(self.url.query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            raise Refused(400, "malformed query string") from None
        for key, value in pairs:
            lowered = key.lower()
            if lowered in params:
                # Two values for one signed key would make the signed string ambiguous.
                raise Refused(400, f"duplicate query parameter: {lowered}")
            params[lowered] = value

        for name in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
            if name not in params:
                raise Refused(401, f"missing {name}")
        if not hmac.compare_digest(params["auth_key"].encode(), self.state.key.encode()):
            raise Refused(401, "unknown auth_key")
        if params["auth_version"] != "1.0":
            raise Refused(401, "unsupported auth_version: must be 1.0")
        try:
            timestamp = int(params["auth_timestamp"])
        except ValueError:
            raise Refused(401, "auth_timestamp is not an integer") from None
        skew = time.time() - timestamp
        if abs(skew) > TIMESTAMP_WINDOW:
            raise Refused(401, f"auth_timestamp expired: {int(skew)} s from server time, "
                               f"allowed {TIMESTAMP_WINDOW}")
        if body and "body_md5" not in params:
            raise Refused(401, "missing body_md5 for a request with a body")
        # The official libraries send body_md5 (of no bytes) on GETs too: check it all the same.
        if "body_md5" in params and not hmac.compare_digest(params["body_md5"].encode(),
                                                            hashlib.md5(body).hexdigest().encode()):
            raise Refused(401, "body_md5 does not match the body")

        secret = self.state.secret.encode()
        signature = params["auth_signature"].encode()
        # The path as sent; also accept it percent-decoded, since a client may sign either.
        for candidate in dict.fromkeys((path, unquote(path))):
            expected = hmac.new(secret, string_to_sign(method, candidate, params).encode(),
                                hashlib.sha256).hexdigest().encode()
            if hmac.compare_digest(signature, expected):
                break
        else:
            raise Refused(401, "invalid auth_signature: expected HMAC-SHA256 of "
                               "METHOD\\nPATH\\nsorted lower-cased query")
        return {k: v for k, v in params.items() if not k.startswith("auth_") and k != "body_md5"}

    @staticmethod
    def _info(params):
        return {a.strip() for a in params.get("info", "").split(",") if a.strip()}

    def _channels(self, params):
        prefix = params.get("filter_by_prefix", "")
        info = self._info(params)
        if "user_count" in info and not _is_presence(prefix):
            raise Refused(400, "info=user_count requires filter_by_prefix=presence-")
        channels = {}
        for name, (users, _subscriptions) in self.state.occupied().items():
            if name.startswith(prefix):
                channels[name] = {"user_count": users} if "user_count" in info else {}
        return {"channels": channels}

    def _channel(self, channel, params):
        self._check_channel(channel)
        info = self._info(params)
        presence = _is_presence(channel)
        if "user_count" in info and not presence:
            raise Refused(400, "user_count is only available for presence channels")
        found = self.state.occupied().get(channel)
        users, subscriptions = found or (0, 0)
        answer = {"occupied": found is not None}
        if "user_count" in info:
            answer["user_count"] = users
        if "subscription_count" in info:
            answer["subscription_count"] = subscriptions  # sockets, plus one per pinned member
        return answer

    def _users(self, channel):
        self._check_channel(channel)
        if not _is_presence(channel):
            raise Refused(400, "users are only available for presence channels")
        return {"users": [{"id": uid} for uid in self.state.user_ids(channel)]}

    @staticmethod
    def _check_user_id(user_id):
        if not user_id or len(user_id) > MAX_USER_ID:
            raise Refused(400, f"invalid user id: 1 to {MAX_USER_ID} characters")

    @staticmethod
    def _check_channel(channel):
        if not CHANNEL_RE.match(channel):
            raise Refused(400, f"invalid channel name: {channel[:80]!r}")

    @staticmethod
    def _json_body(body):
        try:
            payload = json.loads(body or b"null")
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "body is not JSON") from None
        if not isinstance(payload, dict):
            raise Refused(400, "body must be a JSON object")
        return payload

    def _event(self, payload, channels):
        """One validated event as logged: {"name", "channels", "data", "socket_id", "time_ms"}."""
        name, data, socket_id = payload.get("name"), payload.get("data"), payload.get("socket_id")
        if not isinstance(name, str) or not name:
            raise Refused(400, "missing event name")
        if len(name) > MAX_EVENT_NAME:
            raise Refused(400, f"event name longer than {MAX_EVENT_NAME} characters")
        if not isinstance(data, str):
            raise Refused(400, "data must be a string")
        if len(data.encode("utf-8")) > MAX_DATA_BYTES:
            raise Refused(413, f"data larger than {MAX_DATA_BYTES} bytes")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise Refused(400, "missing channels")
        if len(channels) > MAX_CHANNELS_PER_EVENT:
            raise Refused(400, f"more than {MAX_CHANNELS_PER_EVENT} channels")
        for channel in channels:
            self._check_channel(channel)
        if socket_id is not None and not (isinstance(socket_id, str) and SOCKET_ID_RE.match(socket_id)):
            raise Refused(400, "invalid socket_id")
        return {"name": name, "channels": channels, "data": data, "socket_id": socket_id,
                "time_ms": int(time.time() * 1000)}

    def _events(self, body):
        payload = self._json_body(body)
        channels = payload.get("channels")
        if channels is None and "channel" in payload:
            channels = [payload["channel"]]
        self.state.record([self._event(payload, channels)])
        return {}

    def _batch_events(self, body):
        batch = self._json_body(body).get("batch")
        if not isinstance(batch, list) or not batch:
            raise Refused(400, "missing batch")
        if len(batch) > MAX_BATCH:
            raise Refused(400, f"more than {MAX_BATCH} events in a batch")
        events = []
        for item in batch:
            if not isinstance(item, dict):
                raise Refused(400, "each batch entry must be an object")
            events.append(self._event(item, [item.get("channel")]))
        self.state.record(events)  # all or nothing: one bad entry refuses the batch
        return {}

    # -- sandbox-only ------------------------------------------------------
    def _sandbox_route(self, method, path, body):
        parts = [unquote(p) for p in path.split("/")[3:]]  # after '', '_sandbox', 'apps'
        if not parts or parts[0] != self.state.app_id:
            raise Refused(404, "unknown app id")
        rest = parts[1:]
        if rest == ["webhooks"]:
            if method != "GET":
                raise Refused(405, "method not allowed")
            hooks = self.state.webhooks
            return self.send_json(200, {"url": hooks.url if hooks else None,
                                        "deliveries": hooks.deliveries() if hooks else []})
        if len(rest) == 3 and rest[0] == "users" and rest[2] == "connections":
            if method != "GET":
                raise Refused(405, "method not allowed")
            return self.send_json(200, {"socket_ids": self.state.user_sockets(rest[1])})
        if rest == ["events"]:
            if method == "GET":
                return self.send_json(200, {"events": self.state.event_log()})
            if method == "DELETE":
                self.state.clear_events()
                return self.send_json(200, {"cleared": True})
            raise Refused(405, "method not allowed")
        if len(rest) >= 3 and rest[0] == "channels" and rest[2] == "members":
            channel = rest[1]
            self._check_channel(channel)
            if len(rest) == 3 and method == "GET":
                return self.send_json(200, {"members": self.state.member_list(channel)})
            if len(rest) == 3 and method == "POST":
                return self._add_member(channel, body)
            if len(rest) == 4 and method == "DELETE":
                removed = self.state.remove_member(channel, rest[3])
                return self.send_json(200, {"removed": removed})
            raise Refused(405, "method not allowed")
        raise Refused(404, "not found")

    def _add_member(self, channel, body):
        if not _is_presence(channel):
            raise Refused(400, "members can only join presence channels")
        payload = self._json_body(body)
        user_id = payload.get("user_id")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)  # Pusher reports ids as strings
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
            raise Refused(400, "user_id must be a non-empty string")
        user_info = payload.get("user_info")
        if user_info is not None and not isinstance(user_info, dict):
            raise Refused(400, "user_info must be an object")
        count = self.state.add_member(channel, user_id, user_info)
        return self.send_json(201, {"channel": channel, "user_id": user_id, "members": count})


def make_server(host, port, app_id, key, secret, channel="presence-lobby", demo_members=True,
                webhook_url=None, activity_timeout=120, pong_timeout=30):
    """The Pusher sandbox for one app, bound but not started (run ``serve_forever``).

    ``demo_members`` seeds a few members into ``channel`` so a fresh
    presence page has someone in it (no webhooks are sent for them).
    ``webhook_url``: where to POST signed webhooks, as Pusher does.
    ``activity_timeout``/``pong_timeout``: seconds of silence before the
    sandbox pings a socket, and before it closes one that doesn't answer.
    """
    server = SandboxServer((host, port), PusherHandler)
    state = server.pusher = PusherState(app_id, key, secret, activity_timeout=activity_timeout,
                                        pong_timeout=pong_timeout)
    if demo_members and channel:
        for user_id, user_info in DEMO_MEMBERS:
            state.add_member(channel, user_id, dict(user_info))
    if webhook_url:
        state.webhooks = WebhookSender(webhook_url, key, secret)
    close = server.server_close

    def server_close():
        # Pusher closes sockets with 4200 ("reconnect immediately") when a server goes away.
        for conn in state.all_connections():
            conn.close(4200, "Server is going away")
        if state.webhooks is not None:
            state.webhooks.stop()
        close()
    server.server_close = server_close
    return server
