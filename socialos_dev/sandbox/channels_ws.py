"""Pusher's Channels websocket protocol (version 7), as the Pusher sandbox speaks it.

pusher-js connects to ``ws://HOST:PORT/app/{key}?protocol=7&client=js&version=...``
on the sandbox's own port: ``PusherHandler`` hands every ``Upgrade: websocket``
request here. The `websockets` library (sans-I/O ``ServerProtocol``) checks
the handshake and does the framing; this module is the Pusher protocol:

* ``pusher:connection_established`` ``{"socket_id", "activity_timeout"}``;
* ``pusher:subscribe`` to public, ``private-`` and ``presence-`` channels,
  with ``auth`` = ``KEY:HMAC-SHA256(secret, "SOCKET_ID:CHANNEL[:CHANNEL_DATA]")``
  checked exactly as Pusher checks it; a wrong one is refused with
  ``pusher:subscription_error`` ``{"type": "AuthError", "error", "status": 401}``;
* ``pusher_internal:subscription_succeeded`` (for presence, the
  ``{"presence": {"ids", "hash", "count"}}`` of the channel);
  ``pusher_internal:member_added`` / ``member_removed`` to the others, once
  per user whatever the number of their sockets;
* ``pusher:ping`` / ``pusher:pong`` both ways; a socket silent for
  ``activity_timeout`` is pinged, and closed with 4201 if it still says nothing;
* ``client-`` events on private and presence channels, to the other subscribers;
* user authentication: ``pusher:signin`` ``{"auth", "user_data"}`` with
  ``auth`` = ``KEY:HMAC-SHA256(secret, "SOCKET_ID::user::USER_DATA")`` and
  ``user_data`` a JSON object with a string ``id``, answered
  ``pusher:signin_success`` ``{"user_data"}``; a wrong signature (or one made
  for another socket id) is ``pusher:error`` 4009 and the socket is closed
  with 4009, as Pusher does. A signed-in socket may subscribe to its own
  ``#server-to-user-{id}`` channel (pusher-js does) and no other's;
  ``PusherState.terminate_user`` closes a user's signed-in sockets with 4009;
* close codes: 4001 unknown app key, 4005 path not found, 4007 unsupported
  protocol version, 4008 no protocol version, 4100 over connection quota,
  4201 pong not received, 4200 server going away. Each close is preceded by
  ``pusher:error`` ``{"code", "message"}``, as Pusher does.

The HMAC check is written out here rather than imported from the app's
``socialos_app.upstream.pusher``: a sandbox that shared the client's signer would
accept the client's bugs.
"""

import collections
import hashlib
import hmac
import json
import re
import secrets
import select
import socket
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import CLOSED, OPEN
from websockets.server import ServerProtocol

__all__ = ["PROTOCOL_VERSION", "Connection", "serve"]

PROTOCOL_VERSION = 7
MAX_MESSAGE_BYTES = 64 * 1024           # a frame or message larger than this closes the socket (1009)
MAX_CLIENT_EVENT_BYTES = 10 * 1024      # Pusher's limit on an event's data
MAX_USER_ID = 128                       # Pusher's limit on a presence user_id
MAX_USER_INFO_BYTES = 1024              # ... and on its user_info
MAX_PRESENCE_MEMBERS = 100              # ... and on a presence channel's members
SEND_TIMEOUT = 5.0                      # a socket that won't take our bytes this long is dropped

SERVER_TO_USER = "#server-to-user-"

CHANNEL_RE = re.compile(r"\A[A-Za-z0-9_\-=@,.;]{1,164}\Z")
APP_PATH_RE = re.compile(r"\A/app/([^/]+)\Z")


def _socket_id():
    return f"{secrets.randbelow(10**9) + 1}.{secrets.randbelow(10**9) + 1}"


def _hmac_hex(secret, text):
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


class Connection:
    """One websocket: the sans-I/O protocol, its socket, and what it is subscribed to.

    ``lock`` guards the protocol object and writes to the socket; messages
    from other threads are queued with ``enqueue`` (in order, under the
    state's lock) and written by ``flush``.
    """

    def __init__(self, sock, protocol, socket_id):
        self.sock, self.protocol, self.socket_id = sock, protocol, socket_id
        self.lock = threading.Lock()
        self.outbox = collections.deque()
        self.channels = {}  # channel name -> presence user_id (None elsewhere)
        self.user_id = None  # set by a valid pusher:signin
        self.closed = False

    def enqueue(self, message):
        self.outbox.append(message)

    def send(self, message):
        self.enqueue(message)
        self.flush()

    def flush(self):
        """Write every queued message, in order. A dead socket just stops taking them."""
        with self.lock:
            while self.outbox:
                message = self.outbox.popleft()
                if self.closed or self.protocol.state is not OPEN:
                    continue
                self.protocol.send_text(json.dumps(message, separators=(",", ":")).encode())
            self._write()

    def _write(self):
        """Send what the protocol has ready (call with ``lock`` held); b"" means: half-close now."""
        for data in self.protocol.data_to_send():
            if self.closed:
                return
            try:
                if data:
                    self.sock.sendall(data)
                else:  # the closing handshake is over: the server closes the TCP connection first
                    self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.closed = True

    def close(self, code, reason):
        """``pusher:error`` with the code, then a close frame with the same code."""
        self.flush()
        with self.lock:
            if self.closed or self.protocol.state is not OPEN:
                return
            self.protocol.send_text(json.dumps({"event": "pusher:error",
                                                "data": {"code": code, "message": reason}}).encode())
            try:
                self.protocol.send_close(code, reason)
            except InvalidState:
                pass
            self._write()

    def receive(self, data):
        """Feed bytes (b"" at EOF); the frames that arrived."""
        with self.lock:
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            events = self.protocol.events_received()
            self._write()  # pongs to pings and the answer to a close frame go out at once
        return events


def _handshake(handler):
    """Answer the HTTP upgrade; the open frame-level protocol, or None when refused."""
    headers = Headers()
    for name, value in handler.headers.items():
        headers[name] = value
    request = Request(handler.path, headers)
    response = ServerProtocol(max_size=MAX_MESSAGE_BYTES).accept(request)
    response.headers["Server"] = handler.server_version
    handler.close_connection = True  # whatever happens, this connection is no longer HTTP
    handler.wfile.write(response.serialize())
    handler.wfile.flush()
    if response.status_code != 101:
        return None
    # The frames that follow go to a protocol that starts out OPEN (the handshake is done).
    return ServerProtocol(max_size=MAX_MESSAGE_BYTES, state=OPEN)


def _refusal(path, key):
    """(code, message) when the connection must be refused, else None."""
    url = urlsplit(path)
    match = APP_PATH_RE.match(url.path)
    if not match:
        return 4005, "Path not found"
    if not hmac.compare_digest(unquote(match.group(1)).encode(), key.encode()):
        return 4001, (f"App key {unquote(match.group(1))[:64]} not in this cluster. "
                      "Did you forget to specify the cluster?")
    protocol = parse_qs(url.query).get("protocol", [""])[-1]
    if not protocol:
        return 4008, "No protocol version supplied"
    if protocol != str(PROTOCOL_VERSION):
        return 4007, f"Unsupported protocol version: {protocol[:16]} (this server speaks {PROTOCOL_VERSION})"
    return None


def serve(handler, state):
    """Run one websocket connection on the handler's socket until it closes."""
    protocol = _handshake(handler)
    if protocol is None:
        return
    sock = handler.connection
    sock.settimeout(SEND_TIMEOUT)
    conn = Connection(sock, protocol, _socket_id())
    refused = _refusal(handler.path, state.key)
    if refused is None and not state.connect(conn):
        refused = 4100, "Over capacity"
    if refused is not None:
        conn.close(*refused)
        _drain(conn)
        return
    try:
        conn.send({"event": "pusher:connection_established",
                   "data": json.dumps({"socket_id": conn.socket_id, "activity_timeout": state.activity_timeout})})
        Session(conn, state).run()
    except Exception:
        conn.close(4200, "Internal error: reconnect")  # 4200: "reconnect immediately"
        raise
    finally:
        state.disconnect(conn)
        conn.closed = True


def _drain(conn, timeout=1.0):
    """After our close frame: wait briefly for the client's, then let the socket go."""
    deadline = time.monotonic() + timeout
    while conn.protocol.state is not CLOSED and time.monotonic() < deadline:
        ready, _, _ = select.select([conn.sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            data = conn.sock.recv(65536)
        except OSError:
            break
        conn.receive(data)
        if not data:
            break


class Session:
    """The reading side of one connection: frames in, Pusher messages handled."""

    def __init__(self, conn, state):
        self.conn, self.state = conn, state
        self.last_heard = time.monotonic()
        self.pinged_at = None
        self.fragments = None  # a message arriving in several frames

    def run(self):
        conn = self.conn
        while conn.protocol.state is OPEN and not conn.closed:
            ready, _, _ = select.select([conn.sock], [], [], self._wait())
            if not ready:
                if not self._idle():
                    break
                continue
            try:
                data = conn.sock.recv(65536)
            except OSError:
                break
            self.last_heard, self.pinged_at = time.monotonic(), None  # any traffic is activity
            for frame in conn.receive(data):
                self._frame(frame)
            if not data:
                break
        if conn.protocol.state is not CLOSED:
            _drain(conn)

    def _wait(self):
        now = time.monotonic()
        if self.pinged_at is None:
            return max(0.05, self.last_heard + self.state.activity_timeout - now)
        return max(0.05, self.pinged_at + self.state.pong_timeout - now)

    def _idle(self):
        """Nothing heard for a while: ping, or give up on a socket that didn't answer."""
        now = time.monotonic()
        if self.pinged_at is None:
            if now - self.last_heard >= self.state.activity_timeout:
                self.pinged_at = now
                self.conn.send({"event": "pusher:ping", "data": {}})
            return True
        if now - self.pinged_at >= self.state.pong_timeout:
            self.conn.close(4201, "Pong reply not received: ping was sent to the client, "
                                  "but no reply was received")
            return False
        return True

    def _frame(self, frame):
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.fragments = [frame.opcode, bytearray(frame.data)]
        elif frame.opcode is Opcode.CONT and self.fragments is not None:
            self.fragments[1] += frame.data
        else:
            return  # ping, pong and close frames are the protocol's business
        if not frame.fin:
            return
        opcode, data = self.fragments
        self.fragments = None
        if opcode is Opcode.BINARY:
            return self._error("Binary frames are not supported: send JSON text")
        try:
            message = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._error("Message is not JSON")
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            return self._error("Message has no event")
        self._message(message)

    def _error(self, text, code=None):
        self.conn.send({"event": "pusher:error", "data": {"code": code, "message": text}})

    # -- Pusher messages ---------------------------------------------------
    def _message(self, message):
        event, data = message["event"], message.get("data")
        if event == "pusher:ping":
            return self.conn.send({"event": "pusher:pong", "data": {}})
        if event == "pusher:pong":
            return None
        if isinstance(data, str) and event in ("pusher:subscribe", "pusher:unsubscribe"):
            try:  # some clients send data as a JSON string
                data = json.loads(data)
            except ValueError:
                data = None
        if event == "pusher:signin":
            if isinstance(data, str):
                try:
                    data = json.loads(data)
                except ValueError:
                    data = None
            return self._signin(data if isinstance(data, dict) else {})
        if event == "pusher:subscribe":
            return self._subscribe(data if isinstance(data, dict) else {})
        if event == "pusher:unsubscribe":
            channel = data.get("channel") if isinstance(data, dict) else None
            if isinstance(channel, str):
                self.state.unsubscribe(self.conn, channel)
            return None
        if event.startswith("client-"):
            return self._client_event(event, message.get("channel"), data)
        if event.startswith("pusher:"):
            return self._error(f"Unsupported event: {event[:64]}")
        return self._error("Only client- events may be sent by clients")

    def _refuse(self, channel, status, text):
        self.conn.send({"event": "pusher:subscription_error", "channel": channel,
                        "data": json.dumps({"type": "AuthError", "error": text, "status": status})})

    def _signin(self, data):
        """User authentication: the signature binds ``user_data`` to this socket id."""
        auth, user_data = data.get("auth"), data.get("user_data")
        key, _, signature = auth.partition(":") if isinstance(auth, str) else ("", "", "")
        refused = None
        if not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_INFO_BYTES:
            refused = f"user_data must be a JSON string of at most {MAX_USER_INFO_BYTES} bytes"
        elif not hmac.compare_digest(key.encode(), self.state.key.encode()):
            refused = "Invalid key in auth: expected the app key before the colon"
        elif not hmac.compare_digest(signature.encode(), _hmac_hex(
                self.state.secret, f"{self.conn.socket_id}::user::{user_data}").encode()):
            refused = "Invalid signature: expected HMAC SHA256 hex digest of SOCKET_ID::user::USER_DATA"
        else:
            user_id = self._user_id(user_data)
            if user_id is None:
                refused = f"user_data must be a JSON object with an id: a string of 1 to {MAX_USER_ID} characters"
            elif self.conn.user_id not in (None, user_id):
                refused = "This connection is already signed in as another user"
        if refused is not None:
            return self.conn.close(4009, f"Connection not authorized: {refused}")
        self.conn.user_id = user_id
        self.state.signed_in(self.conn, user_id)
        self.conn.send({"event": "pusher:signin_success", "data": {"user_data": user_data}})
        return None

    @staticmethod
    def _user_id(user_data):
        try:
            parsed = json.loads(user_data)
        except (ValueError, RecursionError):
            return None
        user_id = parsed.get("id") if isinstance(parsed, dict) else None
        if isinstance(user_id, str) and 0 < len(user_id) <= MAX_USER_ID:
            return user_id
        return None

    def _subscribe(self, data):
        channel, auth = data.get("channel"), data.get("auth")
        if isinstance(channel, str) and channel.startswith(SERVER_TO_USER):
            # Pusher's own channel for a signed-in user's events: theirs alone, no auth.
            if self.conn.user_id is None or channel != SERVER_TO_USER + self.conn.user_id:
                return self._refuse(channel[:200], 403, "Only the signed-in user may subscribe to their "
                                                        "#server-to-user- channel")
            if channel in self.conn.channels:
                return self._error(f"Existing subscription to channel {channel}")
            self.state.subscribe(self.conn, channel)
            return None
        if not isinstance(channel, str) or not CHANNEL_RE.match(channel):
            return self._refuse(channel if isinstance(channel, str) else None, 400,
                                "Invalid channel name: use 1 to 164 of A-Z a-z 0-9 _ - = @ , . ;")
        if channel in self.conn.channels:
            return self._error(f"Existing subscription to channel {channel}")
        if channel.startswith("private-encrypted-"):
            return self._refuse(channel, 400, "Encrypted channels are not supported by the sandbox")
        presence = channel.startswith("presence-")
        if not (presence or channel.startswith("private-")):
            self.state.subscribe(self.conn, channel)
            return None

        channel_data = data.get("channel_data") if presence else None
        signed = f"{self.conn.socket_id}:{channel}" + (f":{channel_data}" if presence else "")
        if presence and not isinstance(channel_data, str):
            return self._refuse(channel, 401, "Presence channels need channel_data (a JSON string)")
        key, _, signature = auth.partition(":") if isinstance(auth, str) else ("", "", "")
        if not hmac.compare_digest(key.encode(), self.state.key.encode()):
            return self._refuse(channel, 401, "Invalid key in auth: expected the app key before the colon")
        expected = _hmac_hex(self.state.secret, signed)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return self._refuse(channel, 401, f"Invalid signature: expected HMAC SHA256 hex digest of "
                                              f"{signed[:300]}")
        if not presence:
            self.state.subscribe(self.conn, channel)
            return None

        member = self._member(channel_data)
        if isinstance(member, str):
            return self._refuse(channel, 400, member)
        user_id, user_info = member
        if len(self.state.user_ids(channel)) >= MAX_PRESENCE_MEMBERS and \
                user_id not in self.state.user_ids(channel):
            return self._refuse(channel, 403, f"Presence channel is full ({MAX_PRESENCE_MEMBERS} members)")
        self.state.subscribe(self.conn, channel, user_id, user_info)
        return None

    @staticmethod
    def _member(channel_data):
        """(user_id, user_info) from signed channel_data, or what is wrong with it."""
        try:
            member = json.loads(channel_data)
        except (ValueError, RecursionError):
            return "channel_data is not JSON"
        if not isinstance(member, dict):
            return "channel_data must be a JSON object"
        user_id = member.get("user_id")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)  # Pusher reports ids as strings
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
            return f"channel_data needs a user_id: a string of 1 to {MAX_USER_ID} characters"
        user_info = member.get("user_info")
        if len(json.dumps(user_info).encode()) > MAX_USER_INFO_BYTES:
            return f"user_info larger than {MAX_USER_INFO_BYTES} bytes"
        return user_id, user_info

    def _client_event(self, event, channel, data):
        if not isinstance(channel, str) or channel not in self.conn.channels:
            return self._error("Client event rejected: not subscribed to that channel")
        if not channel.startswith(("private-", "presence-")):
            return self._error("Client event rejected: only private and presence channels allow them")
        payload = data if isinstance(data, str) else json.dumps(data)
        if len(payload.encode()) > MAX_CLIENT_EVENT_BYTES:
            return self._error(f"Client event rejected: data larger than {MAX_CLIENT_EVENT_BYTES} bytes")
        message = {"event": event, "data": payload}
        user_id = self.conn.channels.get(channel)
        if user_id is not None:
            message["user_id"] = user_id
        self.state.deliver([channel], message, exclude_socket=self.conn.socket_id)
        return None
