"""Sign-in throttling: five wrong passwords, then a wait that every app
instance enforces, told the same way for accounts that exist and don't.

Every test gets apps with a database of its own, so counters (per username
and per address: all of these requests come from 127.0.0.1) never leak
between tests.
"""

import html
import math
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests

from conftest import csrf_from

ALERT_RE = re.compile(r'<p class="error" role="alert"[^>]*>(.*?)</p>', re.S)


def allowance(started, limit=5):
    """Checks the doubling schedule allows for a burst that began at ``started``.

    The limit at once; then one more after each wait that has run out while
    the burst went on (1 s, 2 s, 4 s ... after the limit, i.e. at 1, 3, 7 ... s).
    On a loaded machine a burst of hundreds can outlast the first wait: those
    are not extra guesses, they are the schedule.
    """
    elapsed = time.monotonic() - started
    return limit + int(math.log2(elapsed + 1))


class Browser:
    """One browser at the sign-in form: fetch the form once, post it as often as needed."""

    def __init__(self, app):
        self.app = app
        self.s = requests.Session()
        self.csrf = csrf_from(self.s.get(app.url("/login"), timeout=10).text)

    def attempt(self, username, password):
        answer = self.s.post(self.app.url("/login"), timeout=10, allow_redirects=False,
                             data={"username": username, "password": password, "csrf_token": self.csrf})
        return answer


def alert(answer):
    match = ALERT_RE.search(answer.text)
    return html.unescape(match.group(1)).strip() if match else None


def fail(browser, username, times=5):
    for _ in range(times):
        answer = browser.attempt(username, "wrong-" + secrets.token_hex(4))
        assert answer.status_code == 200, answer.status_code
        assert alert(answer) == "Wrong username or password."
        assert "session" not in browser.s.cookies


def assert_throttled(answer):
    assert answer.status_code == 429, answer.status_code
    wait = answer.headers.get("Retry-After", "")
    assert wait.isdigit() and 1 <= int(wait) <= 900
    message = alert(answer)
    assert message and message.startswith("Too many failed attempts. Try again in")
    assert 'name="password"' in answer.text  # still the form, not an error page
    return int(wait), message


def wait_until_allowed(browser, username, password, retry_after):
    """Poll with the right password until it is let through; bounded by Retry-After."""
    deadline = time.monotonic() + retry_after + 5
    while True:
        answer = browser.attempt(username, password)
        if answer.status_code != 429:
            return answer
        assert time.monotonic() < deadline, "still throttled well past Retry-After"
        time.sleep(0.2)


@pytest.fixture
def shared_uri(db):
    return db.uri_for("thr_" + secrets.token_hex(4))


def test_five_wrong_passwords_then_a_wait_even_for_the_right_one(start_app):
    app = start_app()
    b = Browser(app)
    fail(b, "alice")
    started = time.monotonic()
    answer = b.attempt("alice", "alice")
    retry_after, message = assert_throttled(answer)
    assert str(retry_after) in message
    assert "session" not in b.s.cookies

    answer = wait_until_allowed(b, "alice", "alice", retry_after)
    assert answer.status_code == 303, "the right password did not work after the wait"
    assert time.monotonic() - started >= retry_after - 1
    assert b.s.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200

    # Success reset the count: four more mistakes are not enough to be throttled again.
    other = Browser(app)
    fail(other, "alice", times=4)
    assert other.attempt("alice", "alice").status_code == 303


def test_unknown_and_known_usernames_are_throttled_alike(start_app):
    app = start_app()
    known, unknown = Browser(app), Browser(app)
    for _ in range(5):
        a = known.attempt("bob", "wrong-password")
        b = unknown.attempt("nobody-" + "x" * 8, "wrong-password")
        assert (a.status_code, alert(a)) == (b.status_code, alert(b)) == (200, "Wrong username or password.")
    a = known.attempt("bob", "bob")
    b = unknown.attempt("nobody-" + "x" * 8, "whatever")
    wait_a, message_a = assert_throttled(a)
    wait_b, message_b = assert_throttled(b)
    assert (wait_a, message_a) == (wait_b, message_b)
    # Only that username is held up: another account at the same address signs in.
    assert Browser(app).attempt("carol", "carol").status_code == 303


def test_the_throttle_holds_across_app_instances(start_app, shared_uri):
    a = start_app(MONGODB_URI=shared_uri)
    b = start_app(MONGODB_URI=shared_uri)
    fail(Browser(a), "dave")
    on_b = Browser(b)
    retry_after, _ = assert_throttled(on_b.attempt("dave", "dave"))
    answer = wait_until_allowed(on_b, "dave", "dave", retry_after)
    assert answer.status_code == 303
    # B's success cleared the count for A too.
    on_a = Browser(a)
    fail(on_a, "dave", times=4)
    assert on_a.attempt("dave", "dave").status_code == 303


def test_many_usernames_from_one_address_are_throttled(start_app):
    """Guessing across accounts from one address: after four times the limit, everyone there waits."""
    app = start_app()
    b = Browser(app)
    for i in range(20):
        answer = b.attempt(f"guess{i}", "wrong")
        assert answer.status_code == 200 and alert(answer) == "Wrong username or password."
    retry_after, _ = assert_throttled(b.attempt("grace", "grace"))
    assert wait_until_allowed(b, "grace", "grace", retry_after).status_code == 303


# -- the throttle itself, in-process against the real database ---------------------------
@pytest.fixture
def throttle(db):
    from socialos_app.accounts.throttle import LoginThrottle
    name = "thr_" + secrets.token_hex(4)
    client = db.client()
    t = LoginThrottle(client[name]["login_failures"], max_failures=5)
    t.setup()
    yield t
    client.drop_database(name)
    client.close()


def _pass_waits(throttle):
    """As if every wait were over (time travel in the database, no sleeping)."""
    from socialos_app.storage import utcnow
    throttle.collection.update_many({}, {"$set": {"until": utcnow() - timedelta(milliseconds=1)}})


def test_parallel_guesses_get_no_more_checks_than_sequential_ones(throttle):
    barrier = threading.Barrier(50)

    def guess(_):
        barrier.wait(10)
        return throttle.reserve("bob", "10.0.0.1")

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        waits = list(pool.map(guess, range(200)))
    # The allowance however many at once (more only as the doubling waits run out).
    assert 5 <= waits.count(0) <= allowance(started), (waits.count(0), time.monotonic() - started)
    assert all(1 <= w <= 900 for w in waits if w)
    sequential = [throttle.reserve("ann", "10.0.0.2") for _ in range(8)]
    assert sequential[:5] == [0] * 5 and all(sequential[5:])


def test_waits_double_and_a_right_password_clears_the_pair(throttle):
    assert [throttle.reserve("bob", "10.0.0.1") for _ in range(5)] == [0] * 5
    first = throttle.reserve("bob", "10.0.0.1")
    assert first == 1
    _pass_waits(throttle)
    assert throttle.reserve("bob", "10.0.0.1") == 0     # one more try after the wait...
    assert throttle.reserve("bob", "10.0.0.1") == 2     # ...then twice as long
    _pass_waits(throttle)
    assert throttle.reserve("bob", "10.0.0.1") == 0
    throttle.succeeded("bob", "10.0.0.1")
    assert [throttle.reserve("bob", "10.0.0.1") for _ in range(5)] == [0] * 5


def test_a_burst_from_one_address_never_keeps_the_real_user_out_elsewhere(throttle):
    for _ in range(200):
        throttle.reserve("bob", "203.0.113.9")
    assert throttle.reserve("bob", "203.0.113.9") > 0   # the guesser waits...
    assert throttle.reserve("bob", "198.51.100.7") == 0  # ...the real bob, elsewhere, doesn't


def test_one_address_guessing_across_accounts_is_stopped(throttle):
    assert [throttle.reserve(f"user{i}", "10.0.0.3") for i in range(20)] == [0] * 20
    assert throttle.reserve("grace", "10.0.0.3") > 0
    assert throttle.reserve("grace", "10.0.0.4") == 0   # another address is unaffected


def test_successful_sign_ins_give_the_address_its_attempts_back(throttle):
    """An office behind one address: its own successful sign-ins never slow it down."""
    for i in range(40):
        assert throttle.reserve(f"user{i}", "10.0.0.5") == 0
        throttle.succeeded(f"user{i}", "10.0.0.5")


def test_parallel_wrong_passwords_reach_the_upstream_five_times(start_app, sandbox):
    app = start_app()
    browsers = [Browser(app) for _ in range(8)]
    before = sandbox.stats()["requests"]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: browsers[i % 8].attempt("bob", f"wrong-{i}"), range(64)))
    most = allowance(started)
    checks = sandbox.stats()["requests"] - before
    assert 5 <= checks <= most, (checks, most)
    assert sorted({a.status_code for a in answers}) == [200, 429]
    assert sum(a.status_code == 200 for a in answers) == checks
