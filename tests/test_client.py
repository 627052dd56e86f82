"""The Social OS API client, over real sockets against the sandbox process."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from socialos_app.upstream.errors import (
    Forbidden,
    NotFound,
    Unauthorized,
    Unimplemented,
    UpstreamError,
    UpstreamUnavailable,
)
from socialos_app.upstream.socialos import Client, SocialOS
from socialos_app.upstream.transport import Transport
from support import free_port


@pytest.fixture
def api(sandbox):
    return SocialOS(sandbox.api_url, sandbox.admin_url, "admin", "admin")


@pytest.fixture
def demo(api):
    """A live API key for demo, and demo's client on it."""
    key = api.create_key("demo", "demo", ttl=600)
    return key, api.user("demo", key["password"])


def requests_seen(sandbox, fn):
    """How many requests reached the sandbox while ``fn`` ran (control routes are not counted)."""
    before = sandbox.stats()["requests"]
    try:
        fn()
    finally:
        after = sandbox.stats()["requests"]
    return after - before


def connections_opened(sandbox, fn):
    """TCP connections the sandbox accepted while ``fn`` ran, less the one stats() itself opens."""
    before = sandbox.stats()["connections"]
    fn()
    return sandbox.stats()["connections"] - before - 1


# -- keys -----------------------------------------------------------------------
def test_create_key_returns_a_usable_key(api, sandbox):
    key = api.create_key("demo", "demo", ttl=600)
    assert set(key) == {"token", "password", "expires"}
    assert key["password"] != "demo"
    assert api.user("demo", key["password"]).get("user", "demo")["username"] == "demo"


def test_create_key_with_a_wrong_password_is_unauthorized(api):
    with pytest.raises(Unauthorized) as caught:
        api.create_key("demo", "not-the-password", ttl=600)
    assert caught.value.status == 401


def test_the_real_password_is_not_an_api_key(api):
    with pytest.raises(Unauthorized):
        api.user("demo", "demo").get("user", "demo")


def test_revoked_key_stops_working(api, sandbox, demo):
    key, client = demo
    active = requests.get(f"{sandbox.base}/_sandbox/keys", timeout=5).json()["active"]
    api.revoke_key("demo", key["token"], key["password"])
    assert requests.get(f"{sandbox.base}/_sandbox/keys", timeout=5).json()["active"] == active - 1
    with pytest.raises(Unauthorized):
        client.get("user", "demo")


def test_revoking_needs_the_key_password(api, demo):
    key, client = demo
    with pytest.raises(Unauthorized):
        api.revoke_key("demo", key["token"], "demo")  # the real password is not the key's
    assert client.get("user", "demo")["username"] == "demo"


def test_expired_key_is_unauthorized(api, sandbox, demo):
    _, client = demo
    requests.post(f"{sandbox.base}/_sandbox/expire-keys", json={"username": "demo"},
                  timeout=5).raise_for_status()
    with pytest.raises(Unauthorized):
        client.get("user", "demo")


# -- the calls the app makes ---------------------------------------------------
def test_profile_through_the_user_client(demo):
    _, client = demo
    profile = client.get("user", "alice")
    assert profile["username"] == "alice"
    assert profile["name"] == "Alice Liddell"
    assert {"email", "joined", "followers", "following", "posts"} <= set(profile)


def test_search_is_a_real_verb_with_a_query(demo):
    _, client = demo
    found = client.search("user", params={"q": "LIDD"})["results"]
    assert [p["username"] for p in found] == ["alice"]
    everyone = client.search("user", params={"q": ""})["results"]
    assert {"demo", "admin", "alice", "bob"} <= {p["username"] for p in everyone}


def test_admin_lists_users_with_their_admin_flag(api):
    users = {u["username"]: u for u in api.admin().get("user")["users"]}
    assert users["admin"]["admin"] is True
    assert users["demo"]["admin"] is False


def test_admin_api_is_forbidden_to_a_non_admin(sandbox):
    with pytest.raises(Forbidden) as caught:
        SocialOS(sandbox.api_url, sandbox.admin_url, "demo", "demo").admin().get("user")
    assert caught.value.status == 403


# -- status mapping ------------------------------------------------------------------
def test_unknown_user_is_not_found(demo):
    _, client = demo
    with pytest.raises(NotFound) as caught:
        client.get("user", "nobody-here")
    assert caught.value.status == 404
    assert caught.value.message == "no such user"  # the upstream's own message


def test_unsupported_verb_is_unimplemented(demo):
    _, client = demo
    with pytest.raises(Unimplemented) as caught:
        client.patch("user", "demo", json={"name": "x"})
    assert caught.value.status == 501


@pytest.mark.parametrize("status", [400, 409, 418, 500])
def test_other_failures_are_upstream_errors_with_their_status(sandbox, demo, status):
    _, client = demo
    sandbox.fault(path_prefix="/api/user", status=status, count=1)
    with pytest.raises(UpstreamError) as caught:
        client.get("user", "demo")
    assert type(caught.value) is UpstreamError
    assert caught.value.status == status
    assert caught.value.message == "injected fault"


def test_a_200_that_is_not_json_is_an_upstream_error(sandbox, demo):
    _, client = demo
    sandbox.fault(path_prefix="/api/user", status=200, body="<html>", count=1)
    with pytest.raises(UpstreamError) as caught:
        client.get("user", "demo")
    assert "not JSON" in str(caught.value)
    assert caught.value.status == 200


# -- the shared pool -----------------------------------------------------------------
def test_calls_share_one_pooled_connection(sandbox, demo):
    key, _ = demo
    client = Client(sandbox.api_url, "demo", key["password"], transport=Transport())

    def fifty():
        for _ in range(50):
            client.get("user", "demo")

    assert connections_opened(sandbox, fifty) == 1


def test_a_fresh_session_per_call_pays_a_connection_each(sandbox, demo):
    key, _ = demo

    def fifty():
        for _ in range(50):
            with requests.Session() as session:
                Client(sandbox.api_url, "demo", key["password"],
                       transport=Transport(session=session)).get("user", "demo")

    assert connections_opened(sandbox, fifty) == 50


def test_the_shared_session_never_keeps_anyones_credentials(sandbox, demo):
    key, _ = demo
    transport = Transport()
    Client(sandbox.api_url, "demo", key["password"], transport=transport).get("user", "demo")
    stranger = Client(sandbox.api_url, "demo", "wrong", transport=transport)
    with pytest.raises(Unauthorized):
        stranger.get("user", "demo")  # the good call before lent it nothing
    session = transport.session
    assert session.auth is None and "Authorization" not in session.headers


class _CookieSetter(BaseHTTPRequestHandler):
    """An upstream that sets a cookie on every answer and echoes the Cookie header it got."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"cookie": self.headers.get("Cookie", "")}).encode()
        self.send_response(200)
        self.send_header("Set-Cookie", "sid=for-whoever-called-first; Path=/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def cookie_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CookieSetter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def test_a_cookie_one_user_got_never_rides_on_another_users_call(cookie_upstream):
    shared = Transport()
    alice = Client(cookie_upstream, "alice", "alice-key", transport=shared)
    bob = Client(cookie_upstream, "bob", "bob-key", transport=shared)
    assert alice.get("whoami") == {"cookie": ""}
    assert bob.get("whoami") == {"cookie": ""}
    assert not list(shared.session.cookies)  # and the jar kept nothing
    with requests.Session() as plain:  # even a plain session given by the caller keeps none on our calls
        alice = Client(cookie_upstream, "alice", "alice-key", transport=Transport(session=plain))
        bob = Client(cookie_upstream, "bob", "bob-key", transport=Transport(session=plain))
        assert alice.get("whoami") == {"cookie": ""}
        assert bob.get("whoami") == {"cookie": ""}


def test_redirects_are_not_followed(cookie_upstream):
    with pytest.raises(UpstreamError) as caught:
        Client(cookie_upstream, "demo", "key").get("moved")
    assert caught.value.status == 302


# -- retries and timeouts ------------------------------------------------------------
def test_a_get_is_retried_after_a_503(sandbox, demo):
    _, client = demo
    sandbox.fault(path_prefix="/api/user", status=503, count=1)
    seen = requests_seen(sandbox, lambda: client.get("user", "demo"))
    assert seen == 2  # the 503 and the retry that succeeded


def test_a_post_is_not_retried_after_a_503(sandbox, demo):
    _, client = demo
    sandbox.fault(path_prefix="/api/user", status=503, count=1)

    def post():
        with pytest.raises(UpstreamError) as caught:
            client.post("user", "demo", data={"x": "1"})
        assert caught.value.status == 503

    assert requests_seen(sandbox, post) == 1


def test_a_get_that_keeps_failing_reports_the_last_status(sandbox, demo):
    _, client = demo
    sandbox.fault(path_prefix="/api/user", status=503, count=10)
    with pytest.raises(UpstreamError) as caught:
        client.get("user", "demo")
    assert caught.value.status == 503


def test_a_slow_upstream_is_unavailable_quickly(sandbox, demo):
    key, _ = demo
    client = Client(sandbox.api_url, "demo", key["password"], timeout=(1, 0.5))
    # Enough delayed answers for the GET and its one read retry.
    sandbox.fault(path_prefix="/api/user", delay=2, count=3)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        client.get("user", "demo")
    elapsed = time.monotonic() - started
    assert elapsed < 1.9, elapsed  # two 0.5 s read timeouts, well before the 2 s answer
    assert "did not answer in time" in str(caught.value)


def test_a_closed_port_is_unavailable():
    client = Client(f"http://127.0.0.1:{free_port()}/api", "demo", "demo")
    with pytest.raises(UpstreamUnavailable) as caught:
        client.get("user", "demo")
    assert "could not be reached" in str(caught.value)


# -- paths ------------------------------------------------------------------------------
@pytest.mark.parametrize("part", ["..", ".", ""])
def test_dot_and_empty_parts_are_refused(demo, part):
    _, client = demo
    with pytest.raises(ValueError):
        client.get(part, "admin", "user")


def test_a_slash_in_a_part_stays_inside_that_part(demo):
    _, client = demo
    assert client.get("user", "demo")["username"] == "demo"
    with pytest.raises(NotFound):
        client.get("user/demo")  # one segment "user%2Fdemo", not /user/demo
    with pytest.raises(NotFound):
        client.get("user", "../../admin/user")
    assert client.url("user", "a/b?c#d") == client.base_url + "/user/a%2Fb%3Fc%23d"


# -- secrets stay secret ----------------------------------------------------------------
def test_the_password_never_shows(sandbox):
    secret = "pw-Xq9-never-print-me"
    clients = [Client(sandbox.api_url, "demo", secret),
               Client(f"http://127.0.0.1:{free_port()}/api", "demo", secret)]
    factory = SocialOS(sandbox.api_url, sandbox.admin_url, "admin", secret)
    errors = []
    for client in clients:
        with pytest.raises(UpstreamError) as caught:
            client.get("user", "demo")
        errors.append(caught.value)
    with pytest.raises(Unauthorized) as caught:
        factory.admin().get("user")
    errors.append(caught.value)
    shown = [repr(factory), repr(factory.admin()), *map(repr, clients), *map(str, errors),
             *map(repr, errors)]
    assert isinstance(errors[0], Unauthorized) and isinstance(errors[1], UpstreamUnavailable)
    assert "demo" in repr(clients[0]) and sandbox.api_url in repr(clients[0])
    assert not [text for text in shown if secret in text]


def test_each_api_names_itself_in_its_errors(sandbox, demo):
    _, client = demo
    with pytest.raises(NotFound) as caught:
        client.get("user", "nobody-here")
    assert caught.value.service == "socialos" and caught.value.label == "the Social OS API"
    with pytest.raises(Forbidden) as caught:
        SocialOS(sandbox.api_url, sandbox.admin_url, "demo", "demo").admin().get("user")
    assert caught.value.service == "socialos-admin" and caught.value.label == "the Social OS admin API"
