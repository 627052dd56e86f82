"""Account security (issue 22): confirm it's you, the security history, new sign-in
notices, the optional session limit. Real app processes, SecantusDB, the sandbox;
other addresses are real ones (the client binds 127.0.0.x), never a header.
"""

import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest
import requests
from test_browser import AXE_URL, DESKTOP, PHONE, TIMEOUT_MS, axe, axe_violations, browser, layout_problems  # noqa: F401
from test_web import active_keys, database, get, location, post, record_id

from conftest import csrf_from, sign_in
from socialos_app.accounts.throttle import _key as throttle_key
from socialos_app.crypto import Keyring
from socialos_app.sessions import Credentials, SessionEngine
from socialos_app.sessions.backends.memory import MemorySessionStore
from socialos_app.sessions.backends.mongo import MongoSessionStore
from socialos_app.storage import utcnow
from support import FromAddress, started_app, wait_for

DEADLINE = 10.0
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0"
CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.5 Mobile/15E148 Safari/604.1")


def client(agent, address="127.0.0.1"):
    s = requests.Session()
    s.headers["User-Agent"] = agent
    if address != "127.0.0.1":
        s.mount("http://", FromAddress(address))
    return s


def signed_in_as(app, username, agent, address="127.0.0.1"):
    s, answer = sign_in(app, username, username, session=client(agent, address))
    assert answer.status_code == 303, answer.text
    return s


def dashboard(s, app):
    page = get(s, app, "/dashboard")
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    return page.text


def handle_of(page, agent_words):
    return re.search(re.escape(agent_words) + r".*?name=\"handle\" value=\"([0-9a-f]{12})\"", page, re.S).group(1)


def history(db, app, username):
    return list(database(db, app)["security_activity"].find({"username": username}))


@pytest.fixture(scope="module")
def stale_app(db, sandbox):
    """Sessions stay fresh for four seconds: short to wait out, long enough for a confirmed
    browser to reach its action on a loaded machine."""
    with started_app(db, sandbox, SESSION_FRESH="4") as server:
        yield server


def wait_stale(s, app, path="/devices?everywhere=1"):
    """Until the session is no longer fresh: the action's GET page asks for the password."""
    def asks():
        answer = get(s, app, path)
        return answer.status_code == 303 and location(answer).startswith("/confirm?")
    wait_for(asks, DEADLINE, "the session no longer fresh")


# -- confirm it's you -------------------------------------------------------------------------
def test_a_stale_session_confirms_before_ending_a_device_and_a_wrong_password_changes_nothing(stale_app, db):
    app = stale_app
    here = signed_in_as(app, "alice", FIREFOX_WINDOWS)
    phone = signed_in_as(app, "alice", SAFARI_IPHONE)
    laptop = signed_in_as(app, "alice", CHROME_LINUX)
    page = dashboard(here, app)
    target = handle_of(page, "Safari on iPhone")
    wait_stale(here, app)

    # The POST itself is refused without effect: the browser goes to "Confirm it's you".
    asked = post(here, app, "/devices", data={"csrf_token": csrf_from(page), "handle": target})
    assert asked.status_code == 303
    assert location(asked) == "/confirm?next=" + requests.utils.quote(f"/devices?handle={target}", safe="")
    assert get(phone, app, "/dashboard").status_code == 200 and get(laptop, app, "/dashboard").status_code == 200

    form = get(here, app, location(asked))
    assert form.status_code == 200 and "Confirm it&#39;s you" in form.text
    assert 'value="alice"' in form.text and "sign out one of your devices" in form.text
    assert 'type="password"' in form.text

    # A wrong password: said so, nothing changed, counted by the sign-in throttle.
    old_cookie = here.cookies["session"]
    counters = database(db, app)["login_failures"]
    before = (counters.find_one({"_id": throttle_key("ua", "alice", "127.0.0.1")}) or {}).get("count", 0)
    wrong = post(here, app, "/confirm", data={"csrf_token": csrf_from(form.text), "password": "nope",
                                               "next": f"/devices?handle={target}"})
    assert wrong.status_code == 200 and "Wrong password" in wrong.text
    assert here.cookies["session"] == old_cookie
    assert counters.find_one({"_id": throttle_key("ua", "alice", "127.0.0.1")})["count"] == before + 1
    assert get(phone, app, "/dashboard").status_code == 200
    wait_stale(here, app)  # still not fresh

    # The right one: a new token (the old one names nothing), then the action's own page.
    old_id = record_id(app, old_cookie)
    right = post(here, app, "/confirm", data={"csrf_token": csrf_from(wrong.text), "password": "alice",
                                               "next": f"/devices?handle={target}"})
    assert right.status_code == 303 and location(right) == f"/devices?handle={target}"
    assert here.cookies["session"] != old_cookie
    assert database(db, app)["sessions"].find_one({"_id": old_id}) is None
    stale = requests.get(app.url("/dashboard"), cookies={"session": old_cookie}, allow_redirects=False, timeout=10)
    assert stale.status_code == 303
    ask = get(here, app, location(right))
    assert ask.status_code == 200 and "Sign out this device?" in ask.text and "Safari on iPhone" in ask.text
    assert get(phone, app, "/dashboard").status_code == 200  # confirming ended nothing by itself
    done = post(here, app, "/devices", data={"csrf_token": csrf_from(ask.text), "handle": target})
    assert done.status_code == 303
    assert get(phone, app, "/dashboard").status_code == 303      # exactly that device
    assert get(laptop, app, "/dashboard").status_code == 200
    assert "Confirmed it&#39;s you on Firefox on Windows" in dashboard(here, app)


def test_the_admin_pages_need_a_fresh_session(stale_app):
    admin = signed_in_as(stale_app, "admin", FIREFOX_WINDOWS)
    wait_stale(admin, stale_app, "/admin")
    asked = get(admin, stale_app, "/admin/sessions?username=bob")
    assert location(asked) == "/confirm?next=%2Fadmin%2Fsessions%3Fusername%3Dbob"
    form = get(admin, stale_app, location(asked))
    assert "end every session of bob" in form.text
    right = post(admin, stale_app, "/confirm", data={"csrf_token": csrf_from(form.text), "password": "admin",
                                                      "next": "/admin/sessions?username=bob"})
    assert location(right) == "/admin/sessions?username=bob"
    assert get(admin, stale_app, "/admin").status_code == 200
    demo = signed_in_as(stale_app, "demo", FIREFOX_WINDOWS)
    assert get(demo, stale_app, "/admin").status_code == 403  # not an admin: no password form


def test_a_database_writer_cannot_make_a_session_fresh(stale_app, db):
    s = signed_in_as(stale_app, "bob", CHROME_LINUX)
    wait_stale(s, stale_app)
    sessions = database(db, stale_app)["sessions"]
    rid = record_id(stale_app, s.cookies["session"])
    assert sessions.update_one({"_id": rid}, {"$set": {"fresh": utcnow()}}).modified_count == 1

    def ended():
        answer = get(s, stale_app, "/dashboard")
        return answer.status_code == 303 and location(answer).startswith("/login")
    wait_for(ended, DEADLINE, "the tampered session ended")
    assert sessions.find_one({"_id": rid}) is None
    assert any(e["kind"] == "tampered" for e in history(db, stale_app, "bob"))


def test_freshness_and_notices_are_tagged_fields_of_the_record_in_both_backends(db):
    client = db.client()
    name = "security_" + secrets.token_hex(4)
    try:
        for store in (MemorySessionStore(), MongoSessionStore(client[name]["sessions"])):
            store.setup(600)
            engine = SessionEngine(store, Keyring(secrets.token_bytes(32)), 600, 3600)
            token, record = engine.start("ann", "Ann", False, Credentials("t" * 20, "p" * 20))
            assert record.fresh == record.created and engine.is_fresh(record, 60)
            assert store.load([record.id]) == record  # the backend keeps both fields as they are
            assert engine.set_notice("ann", '{"d": "x"}') == 1
            assert engine.resume(token).notice == '{"d": "x"}'
            rotated = engine.rotate(token, engine.resume(token), Credentials("u" * 20, "q" * 20))
            assert rotated is not None and engine.resume(token) is None
            new_token, fresh = rotated
            assert engine.resume(new_token).handle == record.handle
            # A writer moving ``fresh`` (or clearing the notice) without SECURE_KEY: tampering.
            store.update(replace(fresh, fresh=utcnow() + timedelta(hours=1)))
            assert engine.resume(new_token) is None and store.load([fresh.id]) is None
    finally:
        client.drop_database(name)
        client.close()


# -- the history ------------------------------------------------------------------------------
def test_the_history_shows_each_event_in_words(app, db):
    first = signed_in_as(app, "carol", FIREFOX_WINDOWS)
    second = signed_in_as(app, "carol", CHROME_LINUX, "127.0.0.2")
    stranger = client(SAFARI_IPHONE, "127.0.0.3")
    assert sign_in(app, "carol", "wrong-guess", session=stranger)[1].status_code == 200
    assert sign_in(app, "carol", "wrong-again", session=stranger)[1].status_code == 200

    page = dashboard(first, app)
    recent = page.split('id="activity"')[1]
    assert "Signed in on Firefox on Windows from 127.0.0.1" in recent
    assert "Signed in on Chrome on Linux from 127.0.0.2" in recent
    assert "2 wrong passwords entered from 127.0.0.3" in recent  # one line for both
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', recent)
    assert 'href="/activity"' in recent

    done = post(first, app, "/devices", data={"csrf_token": csrf_from(page), "handle": handle_of(page, "Chrome")})
    assert done.status_code == 303
    told = get(second, app, "/dashboard")
    assert location(told) == "/login?next=%2Fdashboard&reason=ended-you"
    assert "signed out from another of your devices" in second.get(app.url(location(told)), timeout=10).text
    assert "Chrome on Linux (127.0.0.2) was signed out from another of your devices" in dashboard(first, app)

    third = signed_in_as(app, "carol", SAFARI_IPHONE, "127.0.0.3")
    out = post(first, app, "/devices", data={"csrf_token": csrf_from(dashboard(first, app)), "everywhere": "1"})
    assert out.status_code == 303
    assert location(get(third, app, "/dashboard")).endswith("reason=ended-others")
    again = signed_in_as(app, "carol", FIREFOX_WINDOWS)
    token = again.cookies["session"]
    assert post(first, app, "/logout", data={"csrf_token": csrf_from(dashboard(first, app))}).status_code == 303

    full = get(again, app, "/activity")
    assert full.status_code == 200
    for line in ("Safari on iPhone (127.0.0.3) was signed out by “Sign out everywhere else”",
                 "Signed out on Firefox on Windows (127.0.0.1)", "Signed in on Safari on iPhone from 127.0.0.3"):
        assert line in full.text, line

    admin = signed_in_as(app, "admin", FIREFOX_WINDOWS)
    seen = get(admin, app, "/admin/activity?username=carol")
    assert seen.status_code == 200 and "Security activity of carol" in seen.text
    assert "2 wrong passwords entered from 127.0.0.3" in seen.text
    assert 'href="/admin/activity?username=carol"' in get(admin, app, "/admin?q=carol").text
    ended = post(admin, app, "/admin/sessions", data={"csrf_token": csrf_from(seen.text), "username": "carol"})
    assert ended.status_code == 303
    assert location(get(again, app, "/dashboard")).endswith("reason=ended-admin")
    assert "signed out by an administrator" in get(admin, app, "/admin/activity?username=carol").text

    # Never a secret: no password tried, no cookie, no key in any line.
    for event in history(db, app, "carol"):
        blob = repr(event)
        for secret in ("wrong-guess", "wrong-again", token):
            assert secret not in blob


def test_the_history_is_paged(app):
    s = signed_in_as(app, "dave", FIREFOX_WINDOWS)
    for n in range(22):  # a line per address and hour: 22 lines
        assert sign_in(app, "dave", "not-it", session=client(CHROME_LINUX, f"127.0.1.{n + 1}"))[1].status_code == 200
    first = get(s, app, "/activity")
    assert first.text.count('<li class="history-') == 20
    assert 'href="/activity?page=2"' in first.text and 'rel="prev"' not in first.text
    second = get(s, app, "/activity?page=2")
    assert second.text.count('<li class="history-') == 3  # 2 more guesses and the sign-in
    assert 'href="/activity"' in second.text
    assert "Signed in on Firefox on Windows" in second.text
    assert get(s, app, "/activity?page=999999").status_code == 200  # bounded, never an error


def test_500_wrong_passwords_from_one_address_make_a_handful_of_lines(app, db):
    guesser = client(CHROME_LINUX, "127.0.0.9")
    form = guesser.get(app.url("/login"), timeout=10)
    csrf = csrf_from(form.text)

    def guesses(first):  # four guessers at once, each on its own connection, one cookie
        one = client(CHROME_LINUX, "127.0.0.9")
        one.cookies.update(guesser.cookies)
        return [one.post(app.url("/login"), data={"username": "ada", "password": f"guess-{n}",
                                                  "csrf_token": csrf}, allow_redirects=False, timeout=10).status_code
                for n in range(first, 500, 4)]

    with ThreadPoolExecutor(4) as pool:
        statuses = {status for batch in pool.map(guesses, range(4)) for status in batch}
    assert statuses <= {200, 429} and 429 in statuses
    lines = history(db, app, "ada")
    assert 1 <= len(lines) <= 2  # one line per hour (two if the burst crossed an hour)
    assert sum(e["wrong"] + e["held"] for e in lines) == 500
    assert all(e["kind"] == "failed" and e["address"] == "127.0.0.9" for e in lines)
    # Made-up usernames: a line only for an attempt the throttle let through, none once it holds them back.
    for n in range(30):
        guesser.post(app.url("/login"), data={"username": f"nobody{n}", "password": "x", "csrf_token": csrf},
                     allow_redirects=False, timeout=10)
    made_up = database(db, app)["security_activity"].count_documents({"username": {"$regex": "^nobody"}})
    assert made_up <= 20  # only attempts the throttle let through to a password check (4 x LOGIN_MAX_FAILURES)


# -- new sign-in notices ---------------------------------------------------------------------
def test_a_new_sign_in_is_noticed_once_on_the_other_sessions(app):
    desk = signed_in_as(app, "grace", FIREFOX_WINDOWS)
    also = signed_in_as(app, "grace", FIREFOX_WINDOWS)  # the same device and address: no notice
    assert "New sign-in:" not in dashboard(desk, app)

    newcomer = signed_in_as(app, "grace", CHROME_LINUX, "127.0.0.2")
    assert "New sign-in:" not in dashboard(newcomer, app)  # not on the session that signed in

    def shown():
        return "New sign-in:" in get(desk, app, "/activity").text
    wait_for(shown, DEADLINE, "the notice on the other session's next page")
    page = get(desk, app, "/activity").text
    assert "New sign-in:" not in page  # once
    assert "New sign-in:" not in dashboard(also, app)  # shown on one session: gone from every one
    assert "New sign-in:" not in dashboard(desk, app)

    # The same device and address again: already seen, no notice.
    signed_in_as(app, "grace", CHROME_LINUX, "127.0.0.2")
    assert "New sign-in:" not in dashboard(desk, app)


def test_the_notice_says_what_signed_in_and_leads_through_confirmation(app):
    desk = signed_in_as(app, "linus", FIREFOX_WINDOWS)
    signed_in_as(app, "linus", SAFARI_IPHONE, "127.0.0.7")
    found = []

    def shown():
        text = dashboard(desk, app)
        found.append(text)
        return "New sign-in:" in text
    wait_for(shown, DEADLINE, "the notice")
    text = re.sub(r"\s+", " ", found[-1])
    assert re.search(r"New sign-in:</strong> Safari on iPhone from 127\.0\.0\.7 at <time datetime=", text)
    assert 'action="/devices"' in text and 'name="everywhere" value="1"' in text
    assert "Sign out everywhere else</button>" in text


# -- the session limit ---------------------------------------------------------------------------
def test_the_limit_ends_the_least_recently_used_session_and_says_so(start_app, db, sandbox):
    app = start_app(MAX_SESSIONS_PER_USER="2")
    oldest = signed_in_as(app, "bob", FIREFOX_WINDOWS)
    idle = signed_in_as(app, "bob", CHROME_LINUX, "127.0.0.2")
    # The newer session is the least recently used one: its last use moved back.
    sessions = database(db, app)["sessions"]
    rid = record_id(app, idle.cookies["session"])
    sessions.update_one({"_id": rid}, {"$set": {"accessed": utcnow() - timedelta(minutes=5)}})
    keys = active_keys(sandbox)

    newest = signed_in_as(app, "bob", SAFARI_IPHONE, "127.0.0.3")
    told = get(idle, app, "/dashboard")
    assert told.status_code == 303 and location(told).endswith("reason=ended-limit")
    words = idle.get(app.url(location(told)), timeout=10).text
    assert "over the limit of signed-in devices" in words
    assert get(oldest, app, "/dashboard").status_code == 200
    page = dashboard(newest, app)
    assert "Chrome on Linux (127.0.0.2) was signed out because a new sign-in went over the limit" in page
    assert sessions.count_documents({"username": "bob"}) == 2
    wait_for(lambda: active_keys(sandbox) == keys, DEADLINE, "the ended session's key revoked upstream")


def test_no_limit_by_default(app):
    many = [signed_in_as(app, "demo", FIREFOX_WINDOWS) for _ in range(4)]
    assert all(get(s, app, "/dashboard").status_code == 200 for s in many)


def test_the_confirm_page_is_only_for_signed_in_people_and_next_stays_on_this_site(app):
    out = requests.get(app.url("/confirm"), allow_redirects=False, timeout=10)
    assert out.status_code == 303 and location(out).startswith("/login")
    s = signed_in_as(app, "demo", FIREFOX_WINDOWS)
    page = get(s, app, "/confirm?next=https://evil.example/")
    assert page.status_code == 200
    assert 'name="next" value="/dashboard"' in page.text
    empty = post(s, app, "/confirm", data={"csrf_token": csrf_from(page.text), "password": ""})
    assert empty.status_code == 400 and "Enter your password" in empty.text
    assert post(s, app, "/confirm", data={"password": "demo"}).status_code == 403  # no CSRF token


# -- in a real browser: 390 px, axe, no scripts ------------------------------------------------
def test_the_notice_and_confirmation_at_phone_width_with_axe_and_without_scripts(browser, stale_app, axe):  # noqa: F811
    app = stale_app
    context = browser.new_context(base_url=app.base, viewport=PHONE, user_agent=FIREFOX_WINDOWS)
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**" + AXE_URL, lambda route: route.fulfill(status=200, content_type="application/javascript",
                                                              body=axe))
    bare = browser.new_context(base_url=app.base, viewport=PHONE, java_script_enabled=False)
    found = {}
    try:
        pg = context.new_page()
        pg.goto("/login")
        pg.fill("#username", "ada")
        pg.fill("#password", "ada")
        pg.click("form.stack button[type=submit]")
        pg.wait_for_url("**/dashboard")
        signed_in_as(app, "ada", CHROME_LINUX, "127.0.0.2")
        pg.goto("/activity")

        def noticed():
            if pg.locator("#security-notice").count() == 1:
                return True
            pg.reload()
            return False
        wait_for(noticed, DEADLINE, "the notice")
        found["notice"] = layout_problems(pg) + axe_violations(pg)
        pg.goto("/dashboard")
        found["dashboard"] = layout_problems(pg) + axe_violations(pg)
        pg.set_viewport_size(DESKTOP)
        pg.goto("/confirm?next=%2Fdevices%3Feverywhere%3D1")
        found["confirm desktop"] = layout_problems(pg) + axe_violations(pg)
        pg.set_viewport_size(PHONE)
        pg.reload()
        found["confirm"] = layout_problems(pg) + axe_violations(pg)
        pg.fill("#confirm-password", "wrong")
        pg.click("form.stack button[type=submit]")
        found["wrong"] = layout_problems(pg) + axe_violations(pg)
        assert "Wrong password" in pg.inner_text("#confirm-error")

        # Without scripts: the whole way from the dashboard through confirmation to the action.
        plain = bare.new_page()
        plain.goto("/login")
        plain.fill("#username", "ada")
        plain.fill("#password", "ada")
        plain.click("form.stack button[type=submit]")
        plain.wait_for_url("**/dashboard")
        wait_for(lambda: plain.goto("/devices?everywhere=1") and "/confirm" in plain.url, DEADLINE, "stale")
        plain.fill("#confirm-password", "ada")
        plain.click("form.stack button[type=submit]")
        plain.wait_for_url("**/devices?everywhere=1")
        assert "other device" in plain.inner_text("h1")
        plain.click("form.actions button[type=submit]")
        plain.wait_for_url("**/dashboard?notice=others-ended*")
        assert "This is now your only signed-in device." in plain.inner_text("#notice")
    finally:
        context.close()
        bare.close()
    bad = {where: p for where, p in found.items() if p}
    assert not bad, bad
