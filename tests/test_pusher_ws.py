"""The Pusher sandbox's websocket side: Pusher's Channels protocol (v7), spoken
to a real websocket client over a real socket, and the signed webhooks it sends.

The sandbox runs in this process (``make_server`` in a thread: short idle
timeouts, a webhook receiver of the test's own); the client is the
`websockets` library's. Message shapes are checked against the protocol's
documented ones; the official ``pusher`` library's ``authenticate`` output is
accepted unchanged.
"""

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pusher  # the official server library
import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from socialos_dev.sandbox import pusher as sandbox_pusher

APP_ID, KEY, SECRET = "100001", "ws-key", "ws-secret"
SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")
WAIT = 3.0


class Hooks(BaseHTTPRequestHandler):
    """Receives the sandbox's webhooks: kept with their headers for the tests to read."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hooks():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    server.received, server.status = [], 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def start_sandbox(**options):
    server = sandbox_pusher.make_server("127.0.0.1", 0, APP_ID, KEY, SECRET, demo_members=False, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def box(hooks):
    server = start_sandbox(webhook_url=f"http://127.0.0.1:{hooks.server_address[1]}/hook")
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def ws_url(box, key=KEY, query="protocol=7&client=js&version=8.4.0&flash=false"):
    return f"ws://127.0.0.1:{box.server_address[1]}/app/{key}" + (f"?{query}" if query else "")


class Client:
    """One websocket to the sandbox, with the socket id it was given."""

    def __init__(self, box, **kw):
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url(box, **kw), open_timeout=WAIT, close_timeout=1))
        self.hello = self.next()
        self.socket_id = json.loads(self.hello["data"])["socket_id"] if self.hello["event"].endswith(
            "connection_established") else None

    def send(self, event, data, channel=None):
        message = {"event": event, "data": data}
        if channel:
            message["channel"] = channel
        self.ws.send(json.dumps(message))

    def next(self, timeout=WAIT):
        return json.loads(self.ws.recv(timeout=timeout))

    def expect(self, event, timeout=WAIT):
        """The next message that is ``event`` (anything else before it is an error)."""
        message = self.next(timeout)
        assert message["event"] == event, message
        return message

    def quiet(self, wait=0.3):
        """True when nothing arrives for ``wait`` seconds."""
        try:
            message = self.ws.recv(timeout=wait)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected message: {message}")

    def subscribe(self, channel, auth=None, channel_data=None):
        data = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send("pusher:subscribe", data)

    def join(self, channel, user_id, name=None):
        """Subscribe to a presence channel with a correct signature; the presence data."""
        channel_data = json.dumps({"user_id": user_id, "user_info": {"name": name or user_id}})
        self.subscribe(channel, sign(f"{self.socket_id}:{channel}:{channel_data}"), channel_data)
        message = self.expect("pusher_internal:subscription_succeeded")
        return json.loads(message["data"])["presence"]

    def close(self):
        self._stack.close()


def sign(text, secret=SECRET, key=KEY):
    return f"{key}:" + hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def fresh(prefix):
    return prefix + secrets.token_hex(4)


@pytest.fixture
def clients(box):
    opened = []

    def open_client(**kw):
        client = Client(box, **kw)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def api_users(box, channel):
    """The channel's users through the HTTP API, as the official library asks for them."""
    official = pusher.Pusher(APP_ID, KEY, SECRET, host="127.0.0.1", port=box.server_address[1], ssl=False)
    return sorted(u["id"] for u in official.users_info(channel)["users"])


def poll(check, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


# -- a transcript against the documented message shapes ------------------------------------
def test_transcript_of_a_session_has_the_documented_shapes(box, clients):
    a = clients()
    assert set(a.hello) == {"event", "data"}
    established = json.loads(a.hello["data"])  # data is a JSON-encoded string
    assert a.hello["event"] == "pusher:connection_established"
    assert set(established) == {"socket_id", "activity_timeout"}
    assert SOCKET_ID.match(established["socket_id"]) and established["activity_timeout"] == 120

    public = fresh("public-")
    a.subscribe(public)
    assert a.next() == {"event": "pusher_internal:subscription_succeeded", "channel": public, "data": "{}"}

    private = fresh("private-")
    a.subscribe(private, sign(f"{a.socket_id}:{private}"))
    assert a.next() == {"event": "pusher_internal:subscription_succeeded", "channel": private, "data": "{}"}

    room = fresh("presence-")
    assert a.join(room, "ada", "Ada") == {"ids": ["ada"], "hash": {"ada": {"name": "Ada"}}, "count": 1}

    b = clients()
    assert b.join(room, "bob", "Bob") == {"ids": ["ada", "bob"], "hash": {"ada": {"name": "Ada"},
                                                                         "bob": {"name": "Bob"}}, "count": 2}
    added = a.expect("pusher_internal:member_added")
    assert added["channel"] == room and json.loads(added["data"]) == {"user_id": "bob",
                                                                     "user_info": {"name": "Bob"}}
    assert b.quiet()  # nobody tells bob about bob

    a.send("pusher:ping", {})
    assert a.next() == {"event": "pusher:pong", "data": {}}

    # Client events on a presence channel reach the others, with the sender's user_id.
    b.send("client-typing", {"now": True}, channel=room)
    typed = a.expect("client-typing")
    assert typed == {"event": "client-typing", "channel": room, "data": '{"now": true}', "user_id": "bob"}
    a.send("client-x", {}, channel=public)  # not on public channels
    assert a.expect("pusher:error")["data"]["code"] is None

    # An event triggered through the HTTP API (the official library) reaches subscribers, but
    # not the socket named as its sender.
    official = pusher.Pusher(APP_ID, KEY, SECRET, host="127.0.0.1", port=box.server_address[1], ssl=False)
    official.trigger(room, "greeting", {"hi": 1}, socket_id=a.socket_id)
    greeting = b.next()
    assert greeting == {"event": "greeting", "channel": room, "data": greeting["data"]}
    assert json.loads(greeting["data"]) == {"hi": 1}
    assert a.quiet()

    b.send("pusher:unsubscribe", {"channel": room})
    removed = a.expect("pusher_internal:member_removed")
    assert removed["channel"] == room and json.loads(removed["data"]) == {"user_id": "bob"}


# -- auth checked exactly as Pusher checks it ----------------------------------------------
def test_forged_or_borrowed_auth_is_refused_with_subscription_error(box, clients):
    a, b = clients(), clients()
    assert a.socket_id != b.socket_id
    private = fresh("private-")
    right_for_b = sign(f"{b.socket_id}:{private}")
    room = fresh("presence-")
    data = json.dumps({"user_id": "mallory", "user_info": {"name": "Mallory"}})
    signed = sign(f"{a.socket_id}:{room}:{data}")
    forged_data = data.replace("mallory", "admin")
    assert forged_data != data
    wrong_digit = right_for_b[:-1] + ("1" if right_for_b[-1] == "0" else "0")
    assert wrong_digit != right_for_b
    cases = [
        (private, right_for_b, None),                                  # another socket's auth
        (private, sign(f"{a.socket_id}:{private}", secret="guess"), None),  # wrong secret
        (private, sign(f"{a.socket_id}:{private}", key="other-key"), None),  # right HMAC, wrong key
        (private, None, None),                                         # no auth at all
        (private, "garbage", None),
        (room, signed, forged_data),                                   # channel_data changed after signing
        (room, sign(f"{a.socket_id}:{room}"), data),                   # signed without the channel_data
    ]
    for channel, auth, channel_data in cases:
        a.subscribe(channel, auth, channel_data)
        refused = a.expect("pusher:subscription_error")
        assert refused["channel"] == channel
        assert json.loads(refused["data"]) | {"error": ""} == {"type": "AuthError", "error": "", "status": 401}
    # Nothing was subscribed: an event on those channels reaches no one, and no one joined the room.
    box.pusher.deliver([private, room], {"event": "probe", "data": "{}"})
    assert a.quiet()
    assert api_users(box, room) == []
    # b's own auth works for b.
    b.subscribe(private, right_for_b)
    assert b.expect("pusher_internal:subscription_succeeded")["channel"] == private


def test_the_official_librarys_authenticate_output_is_accepted_unchanged(box, clients):
    official = pusher.Pusher(APP_ID, KEY, SECRET)
    a = clients()
    private, room = fresh("private-"), fresh("presence-")
    auth = official.authenticate(private, a.socket_id)
    a.subscribe(private, auth["auth"])
    assert a.expect("pusher_internal:subscription_succeeded")["channel"] == private
    auth = official.authenticate(room, a.socket_id, {"user_id": "grace", "user_info": {"name": "Grace"}})
    a.subscribe(room, auth["auth"], auth["channel_data"])
    presence = json.loads(a.expect("pusher_internal:subscription_succeeded")["data"])["presence"]
    assert presence["hash"] == {"grace": {"name": "Grace"}}


# -- one membership: sockets, the HTTP API and the sandbox routes --------------------------
def test_a_user_is_one_member_whatever_their_sockets(box, clients):
    room = fresh("presence-")
    watcher = clients()
    watcher.join(room, "watcher")
    first, second = clients(), clients()
    first.join(room, "sam")
    assert json.loads(watcher.expect("pusher_internal:member_added")["data"])["user_id"] == "sam"
    assert second.join(room, "sam")["count"] == 2  # watcher and sam: sam counted once
    assert watcher.quiet()                          # no second member_added for sam's second tab
    assert api_users(box, room) == ["sam", "watcher"]
    first.close()
    assert watcher.quiet()                          # sam is still here on the other socket
    second.close()
    assert json.loads(watcher.expect("pusher_internal:member_removed")["data"]) == {"user_id": "sam"}
    assert api_users(box, room) == ["watcher"]


def test_sandbox_route_members_and_sockets_share_one_membership(box, clients):
    room = fresh("presence-")
    members = f"{box.url}/_sandbox/apps/{APP_ID}/channels/{room}/members"
    a = clients()
    a.join(room, "ws-user")
    assert requests.post(members, json={"user_id": "routed", "user_info": {"name": "R"}}, timeout=5).ok
    assert json.loads(a.expect("pusher_internal:member_added")["data"]) == {"user_id": "routed",
                                                                           "user_info": {"name": "R"}}
    assert api_users(box, room) == ["routed", "ws-user"]
    listed = requests.get(members, timeout=5).json()["members"]
    assert sorted(m["id"] for m in listed) == ["routed", "ws-user"]
    official = pusher.Pusher(APP_ID, KEY, SECRET, host="127.0.0.1", port=box.server_address[1], ssl=False)
    assert official.channel_info(room, ["user_count", "subscription_count"]) == {
        "occupied": True, "user_count": 2, "subscription_count": 2}
    assert room in official.channels_info("presence-", ["user_count"])["channels"]
    assert requests.delete(f"{members}/routed", timeout=5).json() == {"removed": True}
    assert json.loads(a.expect("pusher_internal:member_removed")["data"]) == {"user_id": "routed"}
    a.close()
    assert poll(lambda: room not in official.channels_info("presence-")["channels"])


# -- keeping connections honest: pings, idle sockets, close codes -------------------------
def test_a_silent_socket_is_pinged_then_closed_with_4201_and_a_ponging_one_stays():
    server = start_sandbox(activity_timeout=0.3, pong_timeout=1.0)
    try:
        silent = Client(server)
        assert json.loads(silent.hello["data"])["activity_timeout"] == 0.3
        assert silent.expect("pusher:ping") == {"event": "pusher:ping", "data": {}}
        closing = silent.expect("pusher:error")
        assert closing["data"]["code"] == 4201
        with pytest.raises(ConnectionClosed) as closed:
            silent.next()
        assert closed.value.rcvd.code == 4201

        lively = Client(server)
        for _ in range(3):  # answered pings keep it open past several timeouts
            lively.expect("pusher:ping")
            lively.send("pusher:pong", {})
        lively.send("pusher:ping", {})
        assert lively.expect("pusher:pong")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kw, code", [
    ({"key": "no-such-key"}, 4001),
    ({"query": "client=js&version=8.4.0"}, 4008),
    ({"query": "protocol=6&client=js"}, 4007),
])
def test_refused_connections_get_pusher_error_and_the_documented_close_code(box, kw, code):
    client = Client(box, **kw)
    assert client.hello["event"] == "pusher:error" and client.hello["data"]["code"] == code
    with pytest.raises(ConnectionClosed) as closed:
        client.next()
    assert closed.value.rcvd.code == code


def test_a_wrong_path_is_4005_and_plain_http_still_works_on_the_same_port(box):
    with connect(f"ws://127.0.0.1:{box.server_address[1]}/socket/{KEY}?protocol=7", open_timeout=WAIT) as ws:
        assert json.loads(ws.recv(timeout=WAIT))["data"]["code"] == 4005
    official = pusher.Pusher(APP_ID, KEY, SECRET, host="127.0.0.1", port=box.server_address[1], ssl=False)
    assert official.channels_info() == {"channels": {}} or "channels" in official.channels_info()


def test_stopping_the_sandbox_closes_sockets_with_4200():
    server = start_sandbox()
    client = Client(server)
    server.shutdown()
    server.server_close()
    assert client.expect("pusher:error")["data"]["code"] == 4200
    with pytest.raises(ConnectionClosed) as closed:
        client.next()
    assert closed.value.rcvd.code == 4200


# -- webhooks, signed as Pusher signs them ------------------------------------------------
def test_webhooks_are_signed_and_tell_occupied_added_removed_vacated(box, clients, hooks):
    room = fresh("presence-")

    def about_room():
        found = []
        for _headers, body in list(hooks.received):
            payload = json.loads(body)
            found += [(e["name"], e.get("user_id")) for e in payload["events"] if e["channel"] == room]
        return found

    a = clients()
    a.join(room, "hook-user")
    assert poll(lambda: len(about_room()) >= 2) and about_room() == [("channel_occupied", None),
                                                                     ("member_added", "hook-user")]
    a.close()
    assert poll(lambda: len(about_room()) >= 4)
    assert about_room()[2:] == [("member_removed", "hook-user"), ("channel_vacated", None)]
    for headers, body in hooks.received:
        assert headers["X-Pusher-Key"] == KEY
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Pusher-Signature"], expected)
        assert abs(json.loads(body)["time_ms"] - time.time() * 1000) < 60_000
        # The official library accepts them as Pusher's own.
        assert pusher.Pusher(APP_ID, KEY, SECRET).validate_webhook(KEY, headers["X-Pusher-Signature"],
                                                                   body.decode()) is not None
    log = requests.get(f"{box.url}/_sandbox/apps/{APP_ID}/webhooks", timeout=5).json()
    assert log["url"].endswith("/hook") and all(d["status"] == 200 for d in log["deliveries"])


# -- user authentication (pusher:signin) and terminated connections -------------------------
def signin(client, auth):
    client.send("pusher:signin", {"auth": auth["auth"], "user_data": auth["user_data"]})


def closed_with(client):
    """The close code the sandbox ended ``client`` with (after its pusher:error)."""
    error = client.expect("pusher:error")
    with pytest.raises(ConnectionClosed) as closed:
        client.next()
    assert closed.value.rcvd.code == error["data"]["code"]
    return closed.value.rcvd.code


def test_signin_with_our_signature_and_the_official_librarys(box, clients):
    from socialos_app.upstream.pusher import Pusher, user_authentication
    ours = Pusher(APP_ID, KEY, SECRET, box.url)
    a, b = clients(), clients()
    auth = ours.authenticate_user(a.socket_id, "grace", {"name": "Grace"})
    signin(a, auth)
    assert a.expect("pusher:signin_success")["data"] == {"user_data": auth["user_data"]}
    # The official library's authenticate_user is the oracle: its output is accepted unchanged.
    official = pusher.Pusher(APP_ID, KEY, SECRET).authenticate_user(b.socket_id, {"id": "ada", "name": "Ada"})
    signin(b, official)
    assert json.loads(b.expect("pusher:signin_success")["data"]["user_data"])["id"] == "ada"
    assert requests.get(f"{box.url}/_sandbox/apps/{APP_ID}/users/grace/connections",
                        timeout=5).json() == {"socket_ids": [a.socket_id]}
    # pusher-js then subscribes to the user's own #server-to-user- channel; no one else's.
    a.subscribe("#server-to-user-grace")
    assert a.expect("pusher_internal:subscription_succeeded")["channel"] == "#server-to-user-grace"
    a.subscribe("#server-to-user-ada")
    assert json.loads(a.expect("pusher:subscription_error")["data"])["status"] == 403
    # Pusher's worked example (library auth reference): {"id":"12345"} on socket 1234.1234.
    example = user_authentication("278d425bdf160c739803", "7ad3773142a6692b25b8", "1234.1234", {"id": "12345"})
    assert example == {"auth": "278d425bdf160c739803:"
                               "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba",
                       "user_data": '{"id":"12345"}'}


def test_a_forged_signin_and_a_borrowed_socket_id_are_refused_with_4009(box, clients):
    from socialos_app.upstream.pusher import user_authentication
    forged, victim, thief = clients(), clients(), clients()
    signin(forged, user_authentication(KEY, "not-the-secret", forged.socket_id, {"id": "grace"}))
    assert closed_with(forged) == 4009
    # A signature made for the victim's socket is worth nothing on another one.
    signin(thief, user_authentication(KEY, SECRET, victim.socket_id, {"id": "grace"}))
    assert closed_with(thief) == 4009
    assert requests.get(f"{box.url}/_sandbox/apps/{APP_ID}/users/grace/connections",
                        timeout=5).json() == {"socket_ids": []}
    victim.subscribe("#server-to-user-grace")  # never signed in: not theirs either
    assert json.loads(victim.expect("pusher:subscription_error")["data"])["status"] == 403


def test_terminate_user_connections_closes_that_users_signed_in_sockets_with_4009(box, clients):
    from socialos_app.upstream.pusher import Pusher
    ours = Pusher(APP_ID, KEY, SECRET, box.url)
    room = fresh("presence-")
    watcher, first, second, bystander = clients(), clients(), clients(), clients()
    watcher.join(room, "watcher")
    for c in (first, second):
        signin(c, ours.authenticate_user(c.socket_id, "carol"))
        c.expect("pusher:signin_success")
    first.join(room, "carol")
    watcher.expect("pusher_internal:member_added")
    second.join(room, "carol")
    bystander.join(room, "carol")  # in the channel as carol but never signed in: Pusher leaves it be
    assert ours.terminate_user_connections("carol") == {}
    assert closed_with(first) == closed_with(second) == 4009
    assert bystander.quiet() and watcher.quiet()  # carol is still here through the bystander socket
    assert presence_ids(box, room) == ["carol", "watcher"]
    bystander.close()
    assert json.loads(watcher.expect("pusher_internal:member_removed")["data"]) == {"user_id": "carol"}


def presence_ids(box, channel):
    return sorted(u["id"] for u in requests.get(
        f"{box.url}/_sandbox/apps/{APP_ID}/channels/{channel}/members", timeout=5).json()["members"])


def test_the_official_librarys_terminate_user_connections_signing_is_accepted(box, clients):
    """The official library signs the call; it is sent to the documented path.

    Its own ``terminate_user_connections`` (3.3.x) builds ``/users/{id}/terminate_connections``
    without ``/apps/{app_id}`` (its other calls have it; the Node library's has it too), which
    Pusher's HTTP API does not serve: the sandbox answers it 404 like any unknown path.
    """
    from pusher.http import POST, Request
    official = pusher.Pusher(APP_ID, KEY, SECRET, host="127.0.0.1", port=box.server_address[1], ssl=False)
    client = official._pusher_client
    a = clients()
    signin(a, pusher.Pusher(APP_ID, KEY, SECRET).authenticate_user(a.socket_id, {"id": "dora"}))
    a.expect("pusher:signin_success")
    own = client.terminate_user_connections.make_request("dora")
    assert own.path == "/users/dora/terminate_connections"
    assert requests.post(own.url, data=own.body, headers=own.headers, timeout=5).status_code == 404
    assert a.quiet()
    signed = Request(client, POST, f"/apps/{APP_ID}/users/dora/terminate_connections", {})
    assert client.http.send_request(signed) == {}
    assert closed_with(a) == 4009
    # A wrong signature is refused as on every other call.
    bad = pusher.Pusher(APP_ID, KEY, "wrong", host="127.0.0.1", port=box.server_address[1], ssl=False)
    with pytest.raises(pusher.errors.PusherBadAuth):
        bad._pusher_client.http.send_request(
            Request(bad._pusher_client, POST, f"/apps/{APP_ID}/users/dora/terminate_connections", {}))
