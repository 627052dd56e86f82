"""The Pusher client, channel authorization, webhooks and the Pusher sandbox.

Everything here talks over real sockets to a real sandbox process. The
official ``pusher`` library (the top-level package ``pusher``) is the
independent witness: it must work against the sandbox unchanged. Our own
module is always imported as ``ours`` so the two never shadow each other.
"""

import hashlib
import hmac
import json
import secrets
import time
from typing import ClassVar
from urllib.parse import quote, urlencode

import pusher  # the official library
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socialos_app.settings import DEMO_PUSHER, Settings
from socialos_app.upstream import pusher as ours
from socialos_app.upstream.errors import (
    Forbidden,
    NotFound,
    Unauthorized,
    UpstreamError,
    UpstreamUnavailable,
)
from socialos_app.upstream.pusher import BadRequest, PayloadTooLarge
from socialos_app.upstream.transport import Transport
from support import Sandbox, free_port

APP, KEY, SECRET = (DEMO_PUSHER[v] for v in ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"))

# Pusher's published examples (HTTP API reference; authorization signature reference).
DOC_APP, DOC_KEY, DOC_SECRET = "3", "278d425bdf160c739803", "7ad3773142a6692b25b8"
DOC_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'


def unique(prefix):
    """A channel or event name no other test (or module) uses: the sandbox is shared."""
    return f"{prefix}{secrets.token_hex(4)}"


@pytest.fixture
def client(sandbox):
    return ours.Pusher(APP, KEY, SECRET, sandbox.pusher_url, timeout=(2, 5))


@pytest.fixture
def members(sandbox):
    """Add presence members through the sandbox-only route; removed after the test."""
    added = []

    def add(channel, user_id, user_info=None):
        url = f"{sandbox.pusher_url}/_sandbox/apps/{APP}/channels/{channel}/members"
        answer = requests.post(url, json={"user_id": user_id, "user_info": user_info or {}}, timeout=5)
        assert answer.status_code == 201, answer.text
        added.append((channel, user_id))

    yield add
    for channel, user_id in added:
        requests.delete(f"{sandbox.pusher_url}/_sandbox/apps/{APP}/channels/{channel}/members/{user_id}",
                        timeout=5)


def event_log(sandbox):
    return requests.get(f"{sandbox.pusher_url}/_sandbox/apps/{APP}/events", timeout=5).json()["events"]


def requests_seen(sandbox):
    return sandbox.stats("pusher")["requests"]


# -- the two packages named pusher -------------------------------------------

def test_official_library_and_ours_do_not_clash():
    assert ours.__name__ == "socialos_app.upstream.pusher"
    assert pusher.__name__ == "pusher" and hasattr(pusher, "Pusher")
    assert ours is not pusher and ours.Pusher is not pusher.Pusher


# -- Pusher's published vectors ------------------------------------------------

def test_sign_query_reproduces_the_worked_example():
    signed = ours.sign_query(DOC_KEY, DOC_SECRET, "POST", "/apps/3/events", {},
                             body=DOC_BODY, timestamp=1353088179)
    assert signed == {
        "auth_key": DOC_KEY,
        "auth_timestamp": "1353088179",
        "auth_version": "1.0",
        "body_md5": "ec365a775a4cd0599faeb73354201b6f",
        "auth_signature": "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
    }


def test_trigger_sends_the_worked_example_bytes(sandbox):
    """Our body encoding is byte-for-byte the one in Pusher's example (so its MD5 matches)."""
    seen = {}

    class Recorder(requests.Session):
        def send(self, prepared, **kwargs):
            seen.update(method=prepared.method, url=prepared.url, data=prepared.body)
            return super().send(prepared, **kwargs)

    client = ours.Pusher(DOC_APP, DOC_KEY, DOC_SECRET, sandbox.pusher_url,
                         transport=Transport(session=Recorder()))
    with pytest.raises(NotFound):  # the sandbox's app is not app 3
        client.trigger("project-3", "foo", {"some": "data"})
    assert seen["method"] == "POST" and seen["data"] == DOC_BODY
    assert "body_md5=ec365a775a4cd0599faeb73354201b6f" in seen["url"]


def test_sign_query_lower_cases_keys_for_signing_only():
    signed = ours.sign_query("k", "s", "get", "/apps/1/channels", {"Filter_By_Prefix": "presence-"},
                             timestamp=1000)
    assert "Filter_By_Prefix" in signed and "body_md5" not in signed
    expected = hmac.new(b"s", b"GET\n/apps/1/channels\nauth_key=k&auth_timestamp=1000&auth_version=1.0"
                              b"&filter_by_prefix=presence-", hashlib.sha256).hexdigest()
    assert signed["auth_signature"] == expected
    with pytest.raises(ValueError):
        ours.sign_query("k", "s", "GET", "/p", {"info": "a", "INFO": "b"})


def test_authorize_private_channel_example():
    client = ours.Pusher(DOC_APP, DOC_KEY, DOC_SECRET, "http://127.0.0.1:9")
    assert client.authorize("1234.1234", "private-foobar") == {
        "auth": "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"}
    # The official library agrees.
    official = pusher.Pusher("3", DOC_KEY, DOC_SECRET)
    assert official.authenticate("private-foobar", "1234.1234") == client.authorize("1234.1234", "private-foobar")


def test_authorize_presence_channel_example():
    client = ours.Pusher(DOC_APP, DOC_KEY, DOC_SECRET, "http://127.0.0.1:9")
    answer = client.authorize("1234.1234", "presence-foobar", user_id=10, user_info={"name": "Mr. Channels"})
    assert answer == {
        "auth": "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80",
        "channel_data": '{"user_id":10,"user_info":{"name":"Mr. Channels"}}',
    }


@pytest.mark.parametrize("socket_id, channel, user_id", [
    ("1234", "private-x", None),                 # no dot
    ("1234.1234\n", "private-x", None),          # trailing newline
    ("12a4.1234", "private-x", None),
    ("١٢٣.٤٥٦", "private-x", None),              # non-ASCII digits
    ("1" * 40 + ".1", "private-x", None),        # unbounded length
    ("1.1", "private-x y", None),                # space in channel
    ("1.1", "private-" + "x" * 160, None),       # > 164 characters
    ("1.1", "public-channel", None),             # nothing to authorize
    ("1.1", "presence-room", None),              # presence needs a user
    ("1.1", "presence-room", ""),
    ("1.1", "presence-room", {"id": 1}),
    ("1.1", "presence-room", True),
    ("1.1", "private-encrypted-room", None),     # needs a master key we don't have
])
def test_authorize_refuses_bad_input(socket_id, channel, user_id):
    client = ours.Pusher(APP, KEY, SECRET, "http://127.0.0.1:9")
    with pytest.raises(ValueError):
        client.authorize(socket_id, channel, user_id=user_id)


# -- validators -----------------------------------------------------------------

@pytest.mark.parametrize("name, ok", [
    ("presence-lobby", True), ("private-a_b-c=d@e,f.g;h", True), ("a", True), ("x" * 164, True),
    ("", False), ("x" * 165, False), ("has space", False), ("slash/no", False), ("é", False),
    ("line\n", False), ("#server-to-user-1", False), (None, False), (42, False),
])
def test_valid_channel(name, ok):
    assert ours.valid_channel(name) is ok


@pytest.mark.parametrize("name, ok", [
    ("presence-lobby", True), ("presence-", False), ("private-lobby", False),
    ("presence-bad name", False), ("presence-" + "x" * 160, False),
])
def test_valid_presence_channel(name, ok):
    assert ours.valid_presence_channel(name) is ok


@pytest.mark.parametrize("socket_id, ok", [
    ("1234.1234", True), ("0.0", True), ("1234", False), (".1", False), ("1.", False), ("1.2.3", False),
    ("1.2\n", False), ("-1.2", False), ("1" * 21 + ".1", False), ("", False), (None, False),
])
def test_valid_socket_id(socket_id, ok):
    assert ours.valid_socket_id(socket_id) is ok


# -- our client against the sandbox -----------------------------------------------

def test_channel_users_lists_the_demo_members(client):
    assert {"ada", "grace", "linus"} <= set(client.channel_users("presence-lobby"))


def test_channel_users_follow_membership(client, members, sandbox):
    channel = unique("presence-t")
    assert client.channel_users(channel) == []
    members(channel, "u1", {"name": "One"})
    members(channel, "u2")
    assert client.channel_users(channel) == ["u1", "u2"]
    listed = requests.get(f"{sandbox.pusher_url}/_sandbox/apps/{APP}/channels/{channel}/members",
                          timeout=5).json()["members"]
    assert listed[0] == {"id": "u1", "user_info": {"name": "One"}}
    requests.delete(f"{sandbox.pusher_url}/_sandbox/apps/{APP}/channels/{channel}/members/u1", timeout=5)
    assert client.channel_users(channel) == ["u2"]


def test_channel_users_needs_a_presence_channel(client):
    with pytest.raises(ValueError):
        client.channel_users("private-room")


def test_channel_info(client, members):
    channel = unique("presence-t")
    assert client.channel_info(channel) == {"occupied": False, "user_count": 0, "subscription_count": 0}
    members(channel, "a")
    members(channel, "b")
    assert client.channel_info(channel) == {"occupied": True, "user_count": 2, "subscription_count": 2}
    assert client.channel_info(channel, info=()) == {"occupied": True}
    # user_count is presence-only: not asked for other channels (Pusher would refuse it).
    assert client.channel_info("private-" + channel) == {"occupied": False, "subscription_count": 0}


def test_channels_with_prefix_and_info(client, members):
    prefix = unique("presence-p") + "-"
    members(prefix + "one", "a")
    members(prefix + "two", "a")
    members(prefix + "two", "b")
    assert client.channels(prefix=prefix) == {prefix + "one": {}, prefix + "two": {}}
    assert client.channels(prefix=prefix, info=["user_count"]) == {
        prefix + "one": {"user_count": 1}, prefix + "two": {"user_count": 2}}
    assert "presence-lobby" in client.channels()
    with pytest.raises(BadRequest):  # Pusher allows user_count only with a presence- prefix
        client.channels(prefix="private-", info="user_count")


def test_trigger_reaches_the_sandbox(client, sandbox):
    channels = [unique("private-a"), unique("b")]
    assert client.trigger(channels, "greeting", {"text": "héllo & bye"}, socket_id="123.456") == {}
    logged = [e for e in event_log(sandbox) if e["channels"] == channels]
    assert len(logged) == 1
    assert logged[0]["name"] == "greeting" and logged[0]["socket_id"] == "123.456"
    assert logged[0]["data"] == '{"text":"h\\u00e9llo & bye"}'
    assert json.loads(logged[0]["data"]) == {"text": "héllo & bye"}


def test_trigger_string_data_is_sent_as_is(client, sandbox):
    channel = unique("c")
    client.trigger(channel, "raw", "just text")
    assert [e["data"] for e in event_log(sandbox) if e["channels"] == [channel]] == ["just text"]


def test_trigger_batch(client, sandbox):
    channel = unique("batch-")
    events = [{"channel": channel, "name": f"e{i}", "data": {"i": i}} for i in range(3)]
    events[1]["socket_id"] = "1.2"
    assert client.trigger_batch(events) == {}
    logged = [e for e in event_log(sandbox) if e["channels"] == [channel]]
    assert [(e["name"], e["data"], e["socket_id"]) for e in logged] == [
        ("e0", '{"i":0}', None), ("e1", '{"i":1}', "1.2"), ("e2", '{"i":2}', None)]


def test_event_log_keeps_the_last_100(client, sandbox):
    channel = unique("log-")
    for n in range(11):
        client.trigger_batch([{"channel": channel, "name": f"n{n}-{i}", "data": ""} for i in range(10)])
    log = event_log(sandbox)
    assert len(log) == 100
    assert log[-1]["name"] == "n10-9"


@pytest.mark.parametrize("call", [
    lambda c: c.trigger([f"c{i}" for i in range(101)], "e", "d"),
    lambda c: c.trigger([], "e", "d"),
    lambda c: c.trigger("bad channel", "e", "d"),
    lambda c: c.trigger("c", "", "d"),
    lambda c: c.trigger("c", "e" * 201, "d"),
    lambda c: c.trigger("c", "e", "x" * (10 * 1024 + 1)),
    lambda c: c.trigger("c", "e", {"x": "é" * 5200}),       # > 10 KB once encoded
    lambda c: c.trigger("c", "e", {"x": object()}),
    lambda c: c.trigger("c", "e", "d", socket_id="nope"),
    lambda c: c.trigger(None, "e", "d"),
    lambda c: c.trigger_batch([]),
    lambda c: c.trigger_batch(["not a dict"]),
    lambda c: c.trigger_batch([{"channel": "c", "name": "e", "data": ""}] * 11),
    lambda c: c.trigger_batch([{"channel": "bad/", "name": "e", "data": ""}]),
    lambda c: c.channel_info("bad channel"),
])
def test_invalid_calls_fail_before_any_io(client, sandbox, call):
    before = requests_seen(sandbox)
    with pytest.raises(ValueError):
        call(client)
    assert requests_seen(sandbox) == before


def test_limits_at_the_edge_are_accepted(client, sandbox):
    channels = [f"edge{i}" for i in range(100)]
    client.trigger(channels, "e" * 200, "x" * (10 * 1024))
    assert any(e["name"] == "e" * 200 for e in event_log(sandbox))


def test_calls_share_pooled_connections(client, sandbox):
    client.channel_users("presence-lobby")  # warm the pool
    before = sandbox.stats("pusher")["connections"]
    for _ in range(10):
        client.channel_users("presence-lobby")
        client.trigger("pool", "e", "d")
    assert sandbox.stats("pusher")["connections"] - before <= 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20))
def test_any_query_text_is_signed_as_the_sandbox_reads_it(client, prefix):
    """Spaces, &, =, %, + and non-ASCII all survive URL-encoding and verify (a bad
    signature is a 401, raised); the sandbox filters by the prefix it read. Other
    tests' channels may be occupied: a prefix like "p" finds them."""
    found = client.channels(prefix=prefix)
    assert isinstance(found, dict) and all(name.startswith(prefix) for name in found), found


# -- typed errors -------------------------------------------------------------------

@pytest.mark.parametrize("status, error", [
    (400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound),
    (413, PayloadTooLarge), (500, UpstreamError), (503, UpstreamError),
])
def test_upstream_statuses_become_typed_errors(client, sandbox, status, error):
    sandbox.fault("pusher", path_prefix="/apps/", status=status, count=1)
    with pytest.raises(UpstreamError) as caught:
        client.trigger("c", "e", "d")  # a POST: never retried, so one fault is enough
    assert type(caught.value) is error
    assert caught.value.status == status and caught.value.service == "pusher"
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_get_errors_are_typed_too(client, sandbox):
    sandbox.fault("pusher", path_prefix="/apps/", status=500, body="<html>oops</html>", count=1)
    with pytest.raises(UpstreamError) as caught:
        client.channel_users("presence-lobby")
    assert caught.value.status == 500 and "oops" in caught.value.message


def test_real_refusals_are_typed(sandbox):
    with pytest.raises(Unauthorized) as caught:
        ours.Pusher(APP, KEY, "not-the-secret", sandbox.pusher_url).channel_users("presence-lobby")
    assert "auth_signature" in str(caught.value) and "not-the-secret" not in str(caught.value)
    with pytest.raises(Unauthorized, match="auth_key"):
        ours.Pusher(APP, "other-key", SECRET, sandbox.pusher_url).channels()
    with pytest.raises(NotFound):
        ours.Pusher("other-app", KEY, SECRET, sandbox.pusher_url).channels()


def test_slow_answer_is_unavailable_within_the_timeout(sandbox):
    client = ours.Pusher(APP, KEY, SECRET, sandbox.pusher_url, timeout=(2, 0.3))
    sandbox.fault("pusher", path_prefix="/apps/", delay=3, count=1)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        client.trigger("c", "e", "d")
    assert time.monotonic() - started < 1.5
    # A GET is retried once on a read timeout by the pooled session: still bounded.
    sandbox.fault("pusher", path_prefix="/apps/", delay=3, count=3)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        client.channel_users("presence-lobby")
    assert time.monotonic() - started < 2.0


def test_dropped_connection_and_no_server_are_unavailable(client, sandbox):
    sandbox.fault("pusher", path_prefix="/apps/", close=True, count=1)
    with pytest.raises(UpstreamUnavailable):
        client.trigger("c", "e", "d")
    closed = ours.Pusher(APP, KEY, SECRET, f"http://127.0.0.1:{free_port()}", timeout=(1, 1))
    with pytest.raises(UpstreamUnavailable):
        closed.channels()


def test_secret_stays_out_of_repr_and_settings_wiring():
    settings = Settings(pusher_app_id="7", pusher_key="k7", pusher_secret="s3cr3t-value",
                        pusher_host="127.0.0.1", pusher_port=8082, pusher_scheme="http",
                        upstream_connect_timeout=1.5, upstream_read_timeout=4.0)
    client = ours.Pusher.from_settings(settings)
    assert (client.app_id, client.key, client.base_url) == ("7", "k7", "http://127.0.0.1:8082")
    assert client.timeout == (1.5, 4.0)
    assert "s3cr3t-value" not in repr(client) and "s3cr3t-value" not in str(vars(client).keys())


# -- the sandbox checks requests as Pusher does ------------------------------------

def signed_url(base, method, path, params, body=b"", key=KEY, secret=SECRET, timestamp=None,
               body_md5=None, signature=None, sign_keys_lowered=True):
    """A request URL signed by hand (independently of the code under test)."""
    query = dict(params)
    query.update({"auth_key": key, "auth_version": "1.0",
                  "auth_timestamp": str(int(time.time() if timestamp is None else timestamp))})
    if body_md5 is not None:
        query["body_md5"] = body_md5
    elif body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    keyed = sorted(((k.lower() if sign_keys_lowered else k), v) for k, v in query.items())
    to_sign = f"{method}\n{path}\n" + "&".join(f"{k}={v}" for k, v in keyed)
    query["auth_signature"] = signature or hmac.new(secret.encode(), to_sign.encode(),
                                                    hashlib.sha256).hexdigest()
    return f"{base}{path}?{urlencode(query, quote_via=quote)}"


EVENT = json.dumps({"name": "raw", "channels": ["raw-test"], "data": "{}"}).encode()


def send(sandbox, method="GET", path=f"/apps/{APP}/channels", params=None, body=b"", **signing):
    url = signed_url(sandbox.pusher_url, method, path, params or {}, body, **signing)
    headers = {"Content-Type": "application/json"} if body else {}
    return requests.request(method, url, data=body or None, headers=headers, timeout=5)


def test_sandbox_accepts_a_correct_raw_request(sandbox):
    assert send(sandbox).status_code == 200
    assert send(sandbox, "POST", f"/apps/{APP}/events", body=EVENT).status_code == 200


@pytest.mark.parametrize("signing, reason", [
    ({"key": "wrong-key"}, "auth_key"),
    ({"secret": "wrong-secret"}, "auth_signature"),
    ({"signature": "0" * 64}, "auth_signature"),
    ({"timestamp_offset": -601}, "auth_timestamp"),
    ({"timestamp_offset": +700}, "auth_timestamp"),
    ({"body_md5": hashlib.md5(b"something else").hexdigest()}, "body_md5"),
])
def test_sandbox_refuses_bad_signing(sandbox, signing, reason):
    if "timestamp_offset" in signing:  # relative to when the test runs, not when it was collected
        signing = {"timestamp": time.time() + signing["timestamp_offset"]}
    answer = send(sandbox, "POST", f"/apps/{APP}/events", body=EVENT, **signing)
    assert answer.status_code == 401
    assert reason in answer.json()["error"]


def test_sandbox_refuses_a_body_without_body_md5(sandbox):
    url = signed_url(sandbox.pusher_url, "POST", f"/apps/{APP}/events", {})  # signed as if bodiless
    answer = requests.post(url, data=EVENT, headers={"Content-Type": "application/json"}, timeout=5)
    assert answer.status_code == 401 and "body_md5" in answer.json()["error"]


def test_sandbox_refuses_a_tampered_body(sandbox):
    url = signed_url(sandbox.pusher_url, "POST", f"/apps/{APP}/events", {}, EVENT)
    tampered = EVENT.replace(b"raw-test", b"raw-evil")
    assert tampered != EVENT
    answer = requests.post(url, data=tampered, headers={"Content-Type": "application/json"}, timeout=5)
    assert answer.status_code == 401 and "body_md5" in answer.json()["error"]


def test_sandbox_refuses_wrong_version_and_unknown_app(sandbox):
    url = signed_url(sandbox.pusher_url, "GET", f"/apps/{APP}/channels", {}).replace(
        "auth_version=1.0", "auth_version=2.0")
    assert "auth_version=2.0" in url
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 401 and "auth_version" in answer.json()["error"]
    assert send(sandbox, path="/apps/nope/channels").status_code == 404


def test_sandbox_accepts_upper_case_query_keys_signed_lower_cased(sandbox):
    params = {"INFO": "user_count", "Filter_By_Prefix": "presence-lobby"}
    url = signed_url(sandbox.pusher_url, "GET", f"/apps/{APP}/channels", params)
    url = url.replace("auth_key=", "AUTH_KEY=").replace("auth_timestamp=", "Auth_Timestamp=")
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["channels"]["presence-lobby"]["user_count"] >= 3  # INFO was read


def test_sandbox_refuses_keys_signed_in_their_sent_case(sandbox):
    params = {"INFO": "user_count", "Filter_By_Prefix": "presence-"}
    answer = requests.get(signed_url(sandbox.pusher_url, "GET", f"/apps/{APP}/channels", params,
                                     sign_keys_lowered=False), timeout=5)
    assert answer.status_code == 401 and "auth_signature" in answer.json()["error"]


def test_sandbox_enforces_pusher_limits(sandbox):
    def post(event, path="events"):
        body = json.dumps(event).encode()
        return send(sandbox, "POST", f"/apps/{APP}/{path}", body=body)

    assert post({"name": "e", "channel": "one", "data": "x"}).status_code == 200
    assert post({"name": "e", "channels": ["c"], "data": "x" * (10 * 1024 + 1)}).status_code == 413
    assert post({"name": "e", "channels": [f"c{i}" for i in range(101)], "data": ""}).status_code == 400
    assert post({"name": "e" * 201, "channels": ["c"], "data": ""}).status_code == 400
    assert post({"name": "e", "channels": ["c"], "data": {"not": "a string"}}).status_code == 400
    batch = {"batch": [{"channel": "c", "name": "e", "data": ""}] * 11}
    assert post(batch, "batch_events").status_code == 400
    assert send(sandbox, path=f"/apps/{APP}/channels/private-x/users").status_code == 400
    assert send(sandbox, path=f"/apps/{APP}/channels/private-x",
                params={"info": "user_count"}).status_code == 400


def test_sandbox_membership_is_presence_only(sandbox):
    url = f"{sandbox.pusher_url}/_sandbox/apps/{APP}/channels/private-room/members"
    assert requests.post(url, json={"user_id": "x"}, timeout=5).status_code == 400
    url = f"{sandbox.pusher_url}/_sandbox/apps/{APP}/channels/{unique('presence-t')}/members"
    assert requests.post(url, json={"user_info": {}}, timeout=5).status_code == 400


# -- the official library works against the sandbox unchanged ------------------------

class NumericSandbox(Sandbox):
    """The official library accepts only numeric app ids (as real Pusher issues)."""

    PUSHER: ClassVar[dict] = {"PUSHER_APP_ID": "4242", "PUSHER_KEY": KEY, "PUSHER_SECRET": SECRET}


@pytest.fixture(scope="module")
def numeric_sandbox():
    box = NumericSandbox().start()
    yield box
    box.stop()


def test_official_library_against_the_sandbox(numeric_sandbox):
    official = pusher.Pusher("4242", KEY, SECRET, host="127.0.0.1", port=numeric_sandbox.pusher_port,
                             ssl=False, timeout=5)
    channel = unique("official-")
    assert official.trigger(channel, "hello", {"from": "official"}) == {}
    assert official.trigger_batch([{"channel": channel, "name": "b", "data": "x"}]) == {}
    log = requests.get(f"{numeric_sandbox.pusher_url}/_sandbox/apps/4242/events", timeout=5).json()["events"]
    assert [(e["name"], json.loads(e["data"]) if e["name"] == "hello" else e["data"])
            for e in log if e["channels"] == [channel]] == [("hello", {"from": "official"}), ("b", "x")]
    users = official.users_info("presence-lobby")["users"]
    assert {"ada", "grace", "linus"} <= {u["id"] for u in users}
    assert official.channel_info("presence-lobby", ["user_count"])["user_count"] >= 3
    assert "presence-lobby" in official.channels_info("presence-", ["user_count"])["channels"]
    wrong = pusher.Pusher("4242", KEY, "wrong", host="127.0.0.1", port=numeric_sandbox.pusher_port,
                          ssl=False, timeout=5)
    with pytest.raises(pusher.errors.PusherBadAuth):
        wrong.trigger(channel, "e", "d")


# -- webhooks --------------------------------------------------------------------------

def webhook(body, secret=SECRET):
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def tampered(signature):
    """The signature with its last hex digit changed: always a different digit, never by luck the same."""
    wrong = signature[:-1] + ("1" if signature[-1] == "0" else "0")
    assert wrong != signature and len(wrong) == len(signature)
    return wrong


WEBHOOK = json.dumps({"time_ms": int(time.time() * 1000),
                      "events": [{"name": "member_added", "channel": "presence-lobby", "user_id": "ada"}]}
                     ).encode()


def test_webhook_good():
    # Stamped now, not when the module was collected: both checks keep a 5-minute window.
    body = json.dumps({**json.loads(WEBHOOK), "time_ms": int(time.time() * 1000)}).encode()
    client = ours.Pusher(APP, KEY, SECRET, "http://127.0.0.1:9")
    payload = client.verify_webhook(KEY, webhook(body), body)
    assert payload["events"][0]["name"] == "member_added"
    # The official library accepts the same webhook.
    assert pusher.Pusher("1", KEY, SECRET).validate_webhook(KEY, webhook(body), body.decode()) == payload


@pytest.mark.parametrize("key, signature, body, status", [
    ("other-key", webhook(WEBHOOK), WEBHOOK, 401),
    (None, webhook(WEBHOOK), WEBHOOK, 401),
    ("ключ", webhook(WEBHOOK), WEBHOOK, 401),                      # non-ASCII header compares safely
    (KEY, webhook(WEBHOOK, "wrong-secret"), WEBHOOK, 401),
    (KEY, tampered(webhook(WEBHOOK)), WEBHOOK, 401),
    (KEY, None, WEBHOOK, 401),
    (KEY, webhook(WEBHOOK), WEBHOOK + b" ", 401),                  # body changed after signing
    (KEY, webhook(b"\xff\xfe garbage"), b"\xff\xfe garbage", 400),  # authentic but unreadable
    (KEY, webhook(b"[1, 2]"), b"[1, 2]", 400),
    (KEY, webhook(b'{"time_ms": 1}'), b'{"time_ms": 1}', 400),
    # NaN and Infinity are not JSON; taken as numbers, NaN would pass any time-window comparison.
    (KEY, webhook(b'{"time_ms": NaN, "events": []}'), b'{"time_ms": NaN, "events": []}', 400),
    (KEY, webhook(b'{"time_ms": -Infinity, "events": []}'), b'{"time_ms": -Infinity, "events": []}', 400),
])
def test_webhook_refused(key, signature, body, status):
    if key == KEY and body == WEBHOOK:  # a refused signature must really be a wrong one
        assert signature != webhook(WEBHOOK)
    client = ours.Pusher(APP, KEY, SECRET, "http://127.0.0.1:9")
    with pytest.raises(ours.WebhookError) as caught:
        client.verify_webhook(key, signature, body)
    assert caught.value.status == status
    assert SECRET not in str(caught.value)


def test_webhook_text_is_cleaned_where_it_enters():
    body = json.dumps({"time_ms": int(time.time() * 1000),
                       "events": [{"name": "member_added", "channel": "presence-lobby",
                                   "user_id": "ad\ud800a\x1b[31m"}]}).encode()
    payload = ours.Pusher(APP, KEY, SECRET, "http://127.0.0.1:9").verify_webhook(KEY, webhook(body), body)
    user_id = payload["events"][0]["user_id"]
    assert user_id == "ad\ufffda\ufffd[31m"
    user_id.encode("utf-8")  # no lone surrogate left to fail on
