"""Rotating SECURE_KEY: with the old key as SECURE_KEY_PREVIOUS nobody is
signed out and sessions move to the new key as they are used; without it,
old sessions end."""

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import csrf_from, sign_in
from socialos_app.crypto import ServerKey


@pytest.fixture
def shared(db):
    """One database name for every app of the test, and a raw view of its sessions."""
    name = "rot_" + secrets.token_hex(4)
    client = db.client()
    yield db.uri_for(name), client[name]["sessions"]
    client.drop_database(name)
    client.close()


def dashboard(app, s):
    return s.get(app.url("/dashboard"), allow_redirects=False, timeout=10)


def test_rotation_keeps_everyone_signed_in_and_reseals(start_app, shared):
    uri, sessions = shared
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)

    a = start_app(MONGODB_URI=uri, SECURE_KEY=k1.hex())
    alice, answer = sign_in(a, "alice", "alice")
    assert answer.status_code == 303
    idle, answer = sign_in(a, "bob", "bob")  # a session nobody uses during the rotation
    assert answer.status_code == 303
    alice_token, idle_token = alice.cookies["session"], idle.cookies["session"]
    assert sessions.find_one({"_id": ServerKey(k1).record_id(alice_token)}) is not None
    a.stop()

    b = start_app(MONGODB_URI=uri, SECURE_KEY=k2.hex(), SECURE_KEY_PREVIOUS=k1.hex())
    page = dashboard(b, alice)
    assert page.status_code == 200, "rotation signed a user out"
    assert "alice" in page.text
    # Re-sealed under K2 on first use: the record moved to its K2 id, the K1 record is gone.
    moved = sessions.find_one({"_id": ServerKey(k2).record_id(alice_token)})
    assert moved is not None and moved["username"] == "alice"
    assert sessions.find_one({"_id": ServerKey(k1).record_id(alice_token)}) is None
    assert dashboard(b, alice).status_code == 200
    assert alice.cookies["session"] == alice_token  # the browser's cookie did not have to change

    # A new sign-in on B is made under K2 directly.
    carol, answer = sign_in(b, "carol", "carol")
    assert answer.status_code == 303
    assert sessions.find_one({"_id": ServerKey(k2).record_id(carol.cookies["session"])}) is not None
    assert sessions.find_one({"_id": ServerKey(k1).record_id(carol.cookies["session"])}) is None
    b.stop()

    # K1 retired: re-sealed and new sessions still work, a session left under K1 ends.
    c = start_app(MONGODB_URI=uri, SECURE_KEY=k2.hex())
    assert dashboard(c, alice).status_code == 200
    assert dashboard(c, carol).status_code == 200
    gone = dashboard(c, idle)
    assert gone.status_code == 303 and "/login?next=%2Fdashboard" in gone.headers["Location"]
    assert idle.cookies.get("session") in (None, "")  # and its cookie is dropped
    assert idle_token != alice_token


def test_a_form_from_before_the_rotation_still_submits(start_app, shared):
    uri, sessions = shared
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    a = start_app(MONGODB_URI=uri, SECURE_KEY=k1.hex())
    s, answer = sign_in(a, "dave", "dave")
    assert answer.status_code == 303
    token = csrf_from(dashboard(a, s).text)
    a.stop()

    b = start_app(MONGODB_URI=uri, SECURE_KEY=k2.hex(), SECURE_KEY_PREVIOUS=k1.hex())
    out = s.post(b.url("/logout"), data={"csrf_token": token}, allow_redirects=False, timeout=10)
    assert out.status_code == 303 and "/login" in out.headers["Location"]
    assert dashboard(b, s).status_code == 303
    assert sessions.count_documents({"username": "dave"}) == 0



def test_concurrent_first_requests_after_a_rotation_on_two_instances(start_app, shared):
    """Each old session's first requests reach both instances at once: every one gets its
    page, and exactly one current-key record results (the losers of the re-seal race load
    the winner's record; nothing is reported as a database outage)."""
    uri, sessions = shared
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    a = start_app(MONGODB_URI=uri, SECURE_KEY=k1.hex())
    browsers = []
    for _ in range(8):
        s, answer = sign_in(a, "demo", "demo")
        assert answer.status_code == 303
        browsers.append(s.cookies["session"])
    a.stop()

    env = dict(MONGODB_URI=uri, SECURE_KEY=k2.hex(), SECURE_KEY_PREVIOUS=k1.hex())
    b1, b2 = start_app(**env), start_app(**env)
    barrier = threading.Barrier(32)

    def first_request(job):
        cookie, app = job
        barrier.wait(10)
        return requests.get(app.url("/dashboard"), cookies={"session": cookie},
                            allow_redirects=False, timeout=20).status_code

    jobs = [(cookie, app) for cookie in browsers for app in (b1, b2, b1, b2)]
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(first_request, jobs))
    assert codes == [200] * 32
    old, new = ServerKey(k1), ServerKey(k2)
    for cookie in browsers:
        assert sessions.count_documents({"_id": new.record_id(cookie)}) == 1
        assert sessions.count_documents({"_id": old.record_id(cookie)}) == 0
    assert sessions.count_documents({}) == 8
    for cookie in browsers:  # and they stay good
        assert requests.get(b2.url("/dashboard"), cookies={"session": cookie},
                            allow_redirects=False, timeout=10).status_code == 200
