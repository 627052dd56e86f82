"""A dead or misbehaving database gives a clear 503 that heals by itself;
a misbehaving Social OS API at sign-in gives the form with a sentence.

The database here is a SecantusDB of this module's own (stopped, restarted
and fitted with failpoints), never the shared one.
"""

import re
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests

from conftest import csrf_from, sign_in
from support import started_app, wait_for

DB_DOWN = "The session database is not answering right now"


@pytest.fixture(scope="module")
def app(mydb, sandbox):
    with started_app(mydb, sandbox) as server:
        yield server


@pytest.fixture
def failpoint(mydb):
    """Arm SecantusDB's ``failCommand`` failpoint; always switched off after the test."""
    with mydb.failpoint() as arm:
        yield arm


def signed_in_as(app, user):
    s, answer = sign_in(app, user, user)
    assert answer.status_code == 303, answer.text
    assert s.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200
    return s


def timed_get(s, url, **kw):
    started = time.monotonic()
    answer = s.get(url, allow_redirects=False, timeout=30, **kw)
    return answer, time.monotonic() - started


def assert_friendly_503(answer):
    assert answer.status_code == 503, answer.text[:500]
    assert answer.headers.get("Retry-After", "").isdigit()
    assert 0 < int(answer.headers["Retry-After"]) <= 60
    assert "text/html" in answer.headers.get("Content-Type", "")
    assert "Temporarily unavailable" in answer.text
    assert DB_DOWN in answer.text
    assert "Traceback" not in answer.text and "pymongo" not in answer.text.lower()
    # The browser keeps its cookie: an outage signs nobody out.
    assert "session=" not in answer.headers.get("Set-Cookie", "")


def sessions_in(mydb, app):
    name = urlsplit(app.env["MONGODB_URI"]).path.lstrip("/")
    client = mydb.client()
    try:
        return sorted(d["_id"] for d in client[name]["sessions"].find({}, {"_id": 1}))
    finally:
        client.close()


# -- the database goes away and comes back -------------------------------------------------
def test_dead_database_gives_a_prompt_503_and_heals_without_a_restart(mydb, app):
    alice = signed_in_as(app, "alice")
    bob = signed_in_as(app, "bob")
    before = sessions_in(mydb, app)
    assert len(before) >= 2

    mydb.stop()
    try:
        # Within a few seconds the instance knows (its change stream breaks, its reads fail):
        # a cached session is no longer trusted and every page reads through to a 503.
        stopped = time.monotonic()
        wait_for(lambda: alice.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 503,
                 6, "a 503 once the database is gone")
        answer, elapsed = timed_get(alice, app.url("/dashboard"))
        assert_friendly_503(answer)
        assert elapsed < 6 and time.monotonic() - stopped < 12, f"503 took {elapsed:.1f}s"

        # Readiness comes from a background ping: it turns within its timeout, and answers at once.
        wait_for(lambda: requests.get(app.url("/healthz"), timeout=10).status_code == 503, 6, "/healthz 503")
        health, elapsed = timed_get(requests, app.url("/healthz"))
        assert health.status_code == 503 and elapsed < 0.5
        assert health.json()["status"] != "ok"
        assert requests.get(app.url("/livez"), timeout=10).status_code == 200  # alive, just not ready
        assert health.headers.get("Retry-After", "").isdigit()

        # The sign-in form still renders: for a new visitor at once, for a signed-in one too.
        form, elapsed = timed_get(requests, app.url("/login"))
        assert form.status_code == 200 and 'name="csrf_token"' in form.text and elapsed < 2
        form, elapsed = timed_get(bob, app.url("/login"))
        assert form.status_code == 200 and 'name="password"' in form.text and elapsed < 6

        # Signing in needs the database: a 503 with a sentence, not a 500.
        visitor = requests.Session()
        page = visitor.get(app.url("/login"), timeout=10)
        post = visitor.post(app.url("/login"), data={"username": "carol", "password": "carol",
                                                     "csrf_token": csrf_from(page.text)},
                            allow_redirects=False, timeout=30)
        assert post.status_code == 503 and "Traceback" not in post.text
    finally:
        mydb.start()

    # Same port, same data: the same cookies work again, the app was never restarted.
    wait_for(lambda: alice.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200,
             20, "the dashboard after the database came back")
    assert bob.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200
    assert "alice" in alice.get(app.url("/dashboard"), timeout=10).text
    wait_for(lambda: requests.get(app.url("/healthz"), timeout=10).status_code == 200, 6, "/healthz 200 again")
    assert app.proc.proc.poll() is None
    assert sessions_in(mydb, app) == before  # no session lost


# -- failpoints (SecantusDB's configureFailPoint failCommand) -----------------------------
def test_a_failed_read_is_a_503_and_the_next_request_works(app, failpoint):
    s = signed_in_as(app, "carol")
    failpoint({"times": 1}, failCommands=["find"], errorCode=2)
    answer, elapsed = timed_get(s, app.url("/dashboard"))
    assert_friendly_503(answer)
    assert elapsed < 6
    assert s.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200


def test_a_dropped_connection_is_retried_or_a_503_never_a_500(app, failpoint):
    s = signed_in_as(app, "ada")
    failpoint({"times": 1}, failCommands=["find"], closeConnection=True)
    answer, elapsed = timed_get(s, app.url("/dashboard"))
    assert answer.status_code == 200, answer.status_code  # pymongo retries the read
    assert elapsed < 6

    failpoint("alwaysOn", failCommands=["find"], closeConnection=True)  # every retry fails too
    answer, elapsed = timed_get(s, app.url("/dashboard"))
    assert_friendly_503(answer)
    assert elapsed < 6  # the driver's operation deadline (timeoutMS) bounds the retries
    failpoint("off")
    assert s.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200


def test_a_database_slower_than_the_socket_timeout_is_a_503_within_bounds(app, failpoint):
    s = signed_in_as(app, "grace")
    # The operation deadline (timeoutMS) is 2 x db_timeout_ms = 4 s; block the read for longer.
    failpoint({"times": 1}, failCommands=["find"], blockConnection=True, blockTimeMS=5000)
    answer, elapsed = timed_get(s, app.url("/dashboard"))
    assert_friendly_503(answer)
    assert 3.5 < elapsed < 6, f"503 after {elapsed:.1f}s"
    answer, elapsed = timed_get(s, app.url("/dashboard"))
    assert answer.status_code == 200 and elapsed < 5


def test_health_reports_a_failing_database(app, failpoint):
    assert requests.get(app.url("/healthz"), timeout=10).status_code == 200
    failpoint({"times": 2}, failCommands=["ping"], errorCode=2)
    wait_for(lambda: requests.get(app.url("/healthz"), timeout=10).status_code == 503, 5, "/healthz 503")
    assert requests.get(app.url("/livez"), timeout=10).status_code == 200
    wait_for(lambda: requests.get(app.url("/healthz"), timeout=10).status_code == 200, 5, "/healthz 200 again")


# -- a session write is slow -------------------------------------------------------------
def test_a_slow_touch_never_holds_a_page(mydb, app, failpoint):
    """``accessed`` is written by a background thread (sessions/touches.py): a page whose
    session is due for its once-a-minute touch doesn't wait for the database's write."""
    before = set(sessions_in(mydb, app))
    s = signed_in_as(app, "dave")
    (record_id,) = set(sessions_in(mydb, app)) - before
    client = mydb.client()
    sessions = client[urlsplit(app.env["MONGODB_URI"]).path.lstrip("/")]["sessions"]
    try:
        two_minutes_ago = sessions.find_one({"_id": record_id})["accessed"] - timedelta(minutes=2)
        sessions.update_one({"_id": record_id}, {"$set": {"accessed": two_minutes_ago}})
        # The next touch blocks for longer than any page may wait for the database (4 s).
        failpoint({"times": 1}, failCommands=["update"], blockConnection=True, blockTimeMS=6000)
        pages = []

        def touched():
            pages.append(timed_get(s, app.url("/dashboard")))
            return sessions.find_one({"_id": record_id})["accessed"] > two_minutes_ago + timedelta(seconds=60)

        wait_for(touched, 30, "the touch written")
    finally:
        client.close()
    assert all(answer.status_code == 200 for answer, _ in pages), [a.status_code for a, _ in pages]
    assert max(elapsed for _, elapsed in pages) < 3, [round(e, 2) for _, e in pages]


# -- /admin's session count is slow ------------------------------------------------------
def active_count(s, app):
    """The active-session count /admin shows, or None while it says it is counting."""
    page = s.get(app.url("/admin"), allow_redirects=False, timeout=30)
    assert page.status_code == 200, page.status_code
    found = re.search(r"<strong>(\d+) active sessions?</strong>", page.text)
    return int(found.group(1)) if found else None


def test_a_slow_session_count_never_holds_the_admin_page(app, failpoint):
    admin = signed_in_as(app, "admin")
    first = wait_for(lambda: active_count(admin, app), 10, "a first count")
    signed_in_as(app, "linus")
    # The next count takes longer than any page may wait for the database (4 s).
    failpoint({"times": 1}, failCommands=["aggregate"], blockConnection=True, blockTimeMS=6000)
    answer, elapsed = timed_get(admin, app.url("/admin"))
    assert answer.status_code == 200, answer.status_code  # not a 503 after the page's deadline
    shown = re.search(r"<strong>(\d+) active sessions?</strong>", answer.text)
    assert shown and int(shown.group(1)) in (first, first + 1)  # the last count that finished
    assert elapsed < 3.5, f"/admin took {elapsed:.1f}s"
    # The slow count lands (under its own, longer deadline) and the new session shows.
    wait_for(lambda: active_count(admin, app) == first + 1, 20, "the slow count landed")


def test_before_its_first_count_the_admin_page_says_it_is_counting(mydb, sandbox, failpoint):
    # No session cache, so no change stream: the only aggregate is the count.
    with started_app(mydb, sandbox, SESSION_CACHE_SIZE="0") as fresh:
        admin = signed_in_as(fresh, "admin")
        failpoint({"times": 1}, failCommands=["aggregate"], blockConnection=True, blockTimeMS=5000)
        page = admin.get(fresh.url("/admin"), allow_redirects=False, timeout=30)
        assert page.status_code == 200
        assert "Counting live sessions" in page.text and "Alice Liddell" in page.text
        assert wait_for(lambda: active_count(admin, fresh), 20, "the first count") >= 1


# -- the Social OS API misbehaves at sign-in ---------------------------------------------
def post_login(app, user="linus"):
    s = requests.Session()
    page = s.get(app.url("/login"), timeout=10)
    started = time.monotonic()
    answer = s.post(app.url("/login"), data={"username": user, "password": user,
                                             "csrf_token": csrf_from(page.text)},
                    allow_redirects=False, timeout=30)
    return s, answer, time.monotonic() - started


def assert_login_form_with_sentence(s, answer, app, *words):
    assert answer.status_code in (502, 503, 504), answer.status_code
    assert 'name="password"' in answer.text and 'name="csrf_token"' in answer.text
    assert 'role="alert"' in answer.text
    assert "Social OS API" in answer.text and "try again" in answer.text
    for word in words:
        assert word in answer.text
    assert "Traceback" not in answer.text
    assert "session" not in s.cookies  # no session was made
    assert s.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 303


@pytest.mark.parametrize("fault", [
    {"close": True, "count": 3},
    {"status": 500, "count": 3},
    {"status": 503, "count": 3},
    {"status": 200, "body": "<html>maintenance</html>", "count": 3},
    {"status": 500, "body": "<html>oops</html>", "count": 3},
], ids=["closed", "500", "503", "not-json", "500-html"])
def test_upstream_fault_at_sign_in_is_the_form_with_a_sentence(app, sandbox, fault):
    sandbox.fault(path_prefix="/api/key", **fault)
    s, answer, elapsed = post_login(app)
    assert elapsed < 15
    assert_login_form_with_sentence(s, answer, app)
    sandbox.clear_faults()
    s, answer, _ = post_login(app)
    assert answer.status_code == 303  # and it works once the upstream does
