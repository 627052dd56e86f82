"""The live model's server side: the background terminator and the two endpoints.

``LiveConnections`` runs against a small Pusher stand-in of the test's own
(a real HTTP server that fails on demand, which the sandbox can't be made
to do), through the real ``Pusher`` client. The endpoints run in a real app
against the Pusher sandbox; the answers are checked the way the sandbox
checks a ``pusher:signin``.
"""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from conftest import csrf_from
from socialos_app.presence.connections import LiveConnections
from socialos_app.storage import utcnow
from socialos_app.upstream.pusher import Pusher
from support import wait_for


class FlakyPusher(BaseHTTPRequestHandler):
    """Answers ``failures`` calls with 503, then 200 ``{}``; records each path."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        with server.lock:
            server.calls.append(urlsplit(self.path).path)
            failing = server.failures > 0
            server.failures -= 1 if failing else 0
        body = b'{"error":"busy"}' if failing else b"{}"
        self.send_response(503 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyPusher)
    server.calls, server.failures, server.lock = [], 0, threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def live_for(server, **options):
    seen = []
    client = Pusher("1", "key", "secret", f"http://127.0.0.1:{server.server_address[1]}", timeout=(1, 1))
    return LiveConnections(client, lambda action, outcome: seen.append((action, outcome)), **options), seen


def test_a_failed_terminate_is_retried_in_the_background_and_counted(flaky):
    flaky.failures = 2
    live, seen = live_for(flaky, retry_after=(0.05, 0.05, 0.05))
    started = time.monotonic()
    live.user_ended("alice")
    assert time.monotonic() - started < 0.05  # the page never waits for Pusher
    assert live.wait_idle(5)
    assert flaky.calls == ["/apps/1/users/alice/terminate_connections"] * 3
    assert seen == [("terminate", "retry"), ("terminate", "retry"), ("terminate", "ok")]
    live.stop()


def test_a_call_that_keeps_failing_is_given_up_after_four_tries(flaky):
    flaky.failures = 100
    live, seen = live_for(flaky, retry_after=(0.01, 0.01, 0.01))
    live.user_ended("bob")
    assert live.wait_idle(5)
    assert len(flaky.calls) == 4 and seen[-1] == ("terminate", "failed") and seen.count(("terminate", "retry")) == 3
    live.stop()


def test_the_queue_is_bounded_and_a_waiting_user_is_queued_once(flaky):
    live, seen = live_for(flaky, max_pending=2)
    with live._lock:  # hold the worker back so the jobs stay queued
        for name in ("carol", "carol", "carol", "dave"):
            live.user_ended(name)
        live.notify("erin", "hello")
    assert live.wait_idle(5)
    assert sorted(flaky.calls) == ["/apps/1/users/carol/terminate_connections",
                                   "/apps/1/users/dave/terminate_connections"]
    assert ("notify", "dropped") in seen
    live.stop()


def test_a_notice_goes_to_the_users_private_channel(flaky):
    live, seen = live_for(flaky)
    live.notify("carol", "New sign-in", href="//evil.example/")  # not a path of ours: no link
    live.notify("a+b", "unreachable")  # '+' can't be in a channel name: refused before any call
    assert live.wait_idle(5)
    assert flaky.calls == ["/apps/1/events"]
    assert seen == [("notify", "ok"), ("notify", "invalid")]
    live.stop()


# -- the endpoints, in a real app ----------------------------------------------------------------
def test_user_auth_signs_the_sessions_own_user_and_nothing_else(app, sandbox, signed_in):
    secret = app.env["PUSHER_SECRET"]
    token = csrf_from(signed_in.get(app.url("/presence"), timeout=10).text)
    answer = signed_in.post(app.url("/pusher/user-auth"), data={"socket_id": "123.456"},
                            headers={"X-CSRF-Token": token}, timeout=10)
    assert answer.status_code == 200, answer.text
    auth = answer.json()
    assert json.loads(auth["user_data"]) == {"id": "demo", "user_info": {"name": "Demo User"}}
    key, _, signature = auth["auth"].partition(":")
    assert key == app.env["PUSHER_KEY"]
    assert signature == hmac.new(secret.encode(), f"123.456::user::{auth['user_data']}".encode(),
                                 hashlib.sha256).hexdigest()
    # Without the CSRF token, with a bad socket id, signed out, or not a POST: refused.
    assert signed_in.post(app.url("/pusher/user-auth"), data={"socket_id": "1.2"}, timeout=10).status_code == 403
    assert signed_in.post(app.url("/pusher/user-auth"), data={"socket_id": "x"}, headers={"X-CSRF-Token": token},
                          timeout=10).status_code == 400
    assert signed_in.get(app.url("/pusher/user-auth"), timeout=10).status_code == 405
    anonymous = requests.Session()
    form = anonymous.get(app.url("/login"), timeout=10)
    refused = anonymous.post(app.url("/pusher/user-auth"), data={"socket_id": "1.2"},
                             headers={"X-CSRF-Token": csrf_from(form.text)}, timeout=10)
    assert refused.status_code == 403 and refused.json() == {"error": "sign in first"}


def test_the_session_check_answers_without_touching_the_session(db, app, signed_in):
    sessions = db.client()[urlsplit(app.env["MONGODB_URI"]).path.lstrip("/")]["sessions"]
    record = wait_for(lambda: sessions.find_one({"username": "demo"}, sort=[("created", -1)]), 5, "the record")
    aged = utcnow().replace(microsecond=0) - timedelta(seconds=600)
    sessions.update_one({"_id": record["_id"]}, {"$set": {"accessed": aged}})
    answer = signed_in.get(app.url("/pusher/session"), timeout=10)
    assert answer.status_code == 200
    state = answer.json()
    assert state["live"] is True and 0 < state["check_in"] <= 30
    assert sessions.find_one({"_id": record["_id"]})["accessed"] == aged  # not touched
    assert requests.get(app.url("/pusher/session"), timeout=10).json() == {"live": False}
    assert requests.get(app.url("/pusher/session"), cookies={"session": "x" * 43}, timeout=10).json() == {
        "live": False}
