"""The pages end to end: sign-in and sign-out, cookies, redirects, headers,
upstream trouble, session timeouts, admin, devices and what the database holds.

Every test talks HTTP to a real ``app.py`` process backed by SecantusDB and
the sandboxes; the database is inspected directly with pymongo where the
test is about what is (or is not) stored.
"""

import base64
import hashlib
import json
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import bson
import pytest
import requests

from conftest import csrf_from, sign_in
from socialos_app.crypto import Keyring
from socialos_app.settings import decode_key
from support import wait_for

TIMEOUT = 10


# -- helpers -----------------------------------------------------------------
def set_cookies(response):
    """``{name: (value, {attribute: value})}`` from the raw Set-Cookie headers."""
    out = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        parts = [p.strip() for p in header.split(";")]
        name, _, value = parts[0].partition("=")
        attrs = {}
        for part in parts[1:]:
            key, _, val = part.partition("=")
            attrs[key.strip().lower()] = val.strip()
        out[name] = (value, attrs)
    return out


def location(response):
    """The Location header as a path (+ query) on the app."""
    parts = urlsplit(response.headers["Location"])
    return parts.path + ("?" + parts.query if parts.query else "")


def get(session, app, path, **kw):
    return session.get(app.url(path), allow_redirects=False, timeout=TIMEOUT, **kw)


def post(session, app, path, **kw):
    return session.post(app.url(path), allow_redirects=False, timeout=TIMEOUT, **kw)


def database(db, app):
    """The app's own database (its name is in the app's MONGODB_URI)."""
    name = urlsplit(app.env["MONGODB_URI"]).path.lstrip("/")
    return db.client()[name]


def record_id(app, token):
    """The session record id a cookie token names, under the app's SECURE_KEY."""
    return Keyring(decode_key(app.env["SECURE_KEY"])).current.record_id(token)


def active_keys(sandbox):
    return requests.get(f"{sandbox.base}/_sandbox/keys", timeout=5).json()["active"]


def assert_sent_to_sign_in(session, app, path="/dashboard"):
    answer = get(session, app, path)
    assert answer.status_code == 303, answer.text
    assert location(answer).startswith("/login")
    return answer


def utcnow():
    return datetime.now(UTC).replace(tzinfo=None)


# -- signing in and out ------------------------------------------------------------
def test_signed_out_visitors_are_sent_to_sign_in(app):
    s = requests.Session()
    root = get(s, app, "/")
    assert root.status_code == 303 and location(root) == "/login"
    dash = get(s, app, "/dashboard")
    assert dash.status_code == 303 and location(dash) == "/login?next=%2Fdashboard"


def test_the_sign_in_form_has_labelled_fields_and_hidden_tokens(app):
    page = requests.get(app.url("/login?next=/presence"), timeout=TIMEOUT)
    assert page.status_code == 200
    html = page.text
    assert re.search(r'<input type="hidden" name="csrf_token" value="[0-9a-f]{64}">', html)
    assert '<input type="hidden" name="next" value="/presence">' in html
    assert '<label for="username">' in html and 'id="username" name="username"' in html
    assert '<label for="password">' in html and 'id="password" name="password" type="password"' in html
    assert 'action="/login"' in html and 'method="post"' in html


def test_sign_in_sets_a_safe_cookie_and_shows_the_profile(app):
    s, answer = sign_in(app)
    assert answer.status_code == 303 and location(answer) == "/dashboard"
    cookies = set_cookies(answer)
    assert "session" in cookies, answer.headers
    value, attrs = cookies["session"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
    assert "httponly" in attrs and attrs["samesite"] == "Lax" and attrs["path"] == "/"
    assert "secure" not in attrs and "domain" not in attrs  # COOKIE_SECURE=0 in the tests

    dash = get(s, app, "/dashboard")
    assert dash.status_code == 200
    assert "<h1>Demo User</h1>" in dash.text           # the upstream profile's name
    assert "demo@example.com" in dash.text              # ... and more of the profile
    assert "Just trying things out." in dash.text
    # Signed in, the root and the sign-in form send to the dashboard.
    assert location(get(s, app, "/")) == "/dashboard"
    assert location(get(s, app, "/login")) == "/dashboard"


def test_secure_cookies_use_the_host_prefix(start_app):
    secure = start_app(COOKIE_SECURE="1")
    # requests never sends a Secure cookie over http: carry the cookies by hand, like a TLS proxy would.
    form = requests.get(secure.url("/login"), timeout=TIMEOUT)
    pre = set_cookies(form)
    assert "__Host-csrf" in pre and "secure" in pre["__Host-csrf"][1] and "csrf" not in pre
    pre_value = pre["__Host-csrf"][0]
    answer = requests.post(secure.url("/login"), allow_redirects=False, timeout=TIMEOUT,
                           headers={"Cookie": f"__Host-csrf={pre_value}"},
                           data={"username": "demo", "password": "demo", "csrf_token": csrf_from(form.text)})
    assert answer.status_code == 303, answer.text
    cookies = set_cookies(answer)
    assert "session" not in cookies and "__Host-session" in cookies
    token, attrs = cookies["__Host-session"]
    assert {"secure", "httponly"} <= set(attrs) and attrs["path"] == "/" and attrs["samesite"] == "Lax"
    assert "domain" not in attrs  # a __Host- cookie must not name a domain

    dash = requests.get(secure.url("/dashboard"), headers={"Cookie": f"__Host-session={token}"},
                        allow_redirects=False, timeout=TIMEOUT)
    assert dash.status_code == 200 and "Demo User" in dash.text
    # The same token under the plain name is not a session on this app.
    plain = requests.get(secure.url("/dashboard"), headers={"Cookie": f"session={token}"},
                         allow_redirects=False, timeout=TIMEOUT)
    assert plain.status_code == 303 and location(plain).startswith("/login")


def test_search_lists_the_matching_people(signed_in, app):
    found = get(signed_in, app, "/dashboard?q=grace")
    assert found.status_code == 200
    assert "Grace Hopper" in found.text and "@grace" in found.text
    assert "Linus Torvalds" not in found.text
    assert 'value="grace"' in found.text  # the query stays in the box
    none = get(signed_in, app, "/dashboard?q=zzzqqq")
    assert none.status_code == 200 and "No one matches" in none.text and "@grace" not in none.text


def test_sign_out_needs_the_csrf_token_and_ends_everything(app, db, sandbox):
    s, answer = sign_in(app)
    token = s.cookies["session"]
    rid = record_id(app, token)
    sessions = database(db, app)["sessions"]
    assert sessions.find_one({"_id": rid}) is not None
    csrf = csrf_from(get(s, app, "/dashboard").text)

    for data in ({}, {"csrf_token": "0" * 64}, {"csrf_token": csrf[:-1] + ("0" if csrf[-1] != "0" else "1")}):
        refused = post(s, app, "/logout", data=data)
        assert refused.status_code == 403, data
        assert "Traceback" not in refused.text
    assert get(s, app, "/dashboard").status_code == 200  # still signed in

    keys_before = active_keys(sandbox)
    out = post(s, app, "/logout", data={"csrf_token": csrf})
    assert out.status_code == 303 and location(out) == "/login?notice=signed-out"
    value, attrs = set_cookies(out)["session"]
    assert value in ("", '""') and (attrs.get("max-age") == "0" or "1970" in attrs.get("expires", ""))
    assert active_keys(sandbox) == keys_before - 1          # the upstream key is revoked
    assert sessions.find_one({"_id": rid}) is None          # the record is deleted
    # The old cookie, replayed by someone who kept it, is worth nothing.
    replay = requests.get(app.url("/dashboard"), cookies={"session": token}, allow_redirects=False,
                          timeout=TIMEOUT)
    assert replay.status_code == 303 and location(replay).startswith("/login")


def test_sign_out_is_post_only(signed_in, app):
    answer = get(signed_in, app, "/logout")
    assert answer.status_code == 405
    assert get(signed_in, app, "/dashboard").status_code == 200


def test_bad_credentials_show_the_form_again_without_a_session(app):
    s, answer = sign_in(app, "alice", "not-alice")
    assert answer.status_code == 200
    assert "Wrong username or password." in answer.text
    assert 'value="alice"' in answer.text          # the username is kept, the password is not
    assert "not-alice" not in answer.text
    assert "session" not in set_cookies(answer) and "session" not in s.cookies
    assert csrf_from(answer.text)                  # a form that can be submitted again
    empty = sign_in(app, "", "")[1]
    assert empty.status_code == 200 and "Enter a username and a password." in empty.text


def test_sign_in_without_a_valid_csrf_token_is_refused(app):
    s = requests.Session()
    form = get(s, app, "/login")
    good = csrf_from(form.text)
    other = requests.Session()
    other_token = csrf_from(get(other, app, "/login").text)  # valid, but for another browser
    for token in (None, "", "nope", "0" * 64, other_token, "\x80", "é" * 64, good.upper()):
        data = {"username": "demo", "password": "demo"}
        if token is not None:
            data["csrf_token"] = token
        answer = post(s, app, "/login", data=data)
        assert answer.status_code == 403, token
        assert "session" not in set_cookies(answer)
        # The form again, with a fresh token and the username kept (never the password).
        assert 'value="demo"' in answer.text and csrf_from(answer.text) != good
    # Without the pre-session cookie the page's token is worth nothing either.
    bare = requests.post(app.url("/login"), data={"username": "demo", "password": "demo", "csrf_token": good},
                         allow_redirects=False, timeout=TIMEOUT)
    assert bare.status_code == 403
    # Control: the fresh form's token in the same browser works.
    ok = post(s, app, "/login", data={"username": "demo", "password": "demo", "csrf_token": csrf_from(answer.text)})
    assert ok.status_code == 303


# -- fixation ------------------------------------------------------------------
def test_a_planted_cookie_is_never_the_session_after_sign_in(app):
    victim = requests.Session()
    form = get(victim, app, "/login")
    forged = secrets.token_urlsafe(32)  # well-formed, but no session
    answer = post(victim, app, "/login", headers={"Cookie": f"csrf={victim.cookies['csrf']}; session={forged}"},
                  data={"username": "demo", "password": "demo", "csrf_token": csrf_from(form.text)})
    assert answer.status_code == 303
    issued = set_cookies(answer)["session"][0]
    assert issued != forged
    assert get(victim, app, "/dashboard").status_code == 200
    forged_try = requests.get(app.url("/dashboard"), cookies={"session": forged}, allow_redirects=False,
                              timeout=TIMEOUT)
    assert forged_try.status_code == 303


def test_a_planted_live_session_is_ended_by_the_victims_sign_in(app):
    # An attacker signs in as bob and plants bob's cookie in the victim's browser ...
    attacker, _ = sign_in(app, "bob", "bob")
    planted = attacker.cookies["session"]
    victim = requests.Session()
    victim.cookies.set("session", planted, domain="127.0.0.1", path="/")
    # ... the victim signs in as themselves: a fresh session, and bob's planted one is over.
    _s, answer = sign_in(app, "demo", "demo", session=victim)
    assert answer.status_code == 303
    issued = set_cookies(answer)["session"][0]
    assert issued != planted
    page = get(victim, app, "/dashboard")
    assert page.status_code == 200 and "<h1>Demo User</h1>" in page.text
    assert_sent_to_sign_in(attacker, app)


def test_signing_in_again_ends_the_previous_session(app):
    s, first = sign_in(app)
    old = set_cookies(first)["session"][0]
    _s, again = sign_in(app, session=s)
    assert again.status_code == 303
    new = set_cookies(again)["session"][0]
    assert new != old
    assert get(s, app, "/dashboard").status_code == 200
    replay = requests.get(app.url("/dashboard"), cookies={"session": old}, allow_redirects=False,
                          timeout=TIMEOUT)
    assert replay.status_code == 303 and location(replay).startswith("/login")


# -- redirects after sign-in ---------------------------------------------------------
@pytest.mark.parametrize("next_path", [
    "https://evil.example/", "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example",
    "javascript:alert(1)", "/login?next=https://evil.example", "/login", "http:/evil.example",
    "/\tevil", "evil.example", "",
])
def test_next_never_leaves_the_site(app, next_path):
    s, answer = sign_in(app, next_path=next_path)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/dashboard"  # a path: never built from the Host header
    # The form never even carries such a next.
    page = requests.get(app.url("/login"), params={"next": next_path}, timeout=TIMEOUT)
    assert '<input type="hidden" name="next" value="">' in page.text


@pytest.mark.parametrize("next_path", ["/presence?channel=presence-x", "/admin", "/dashboard?q=ada"])
def test_next_to_a_page_of_the_site_is_kept(app, next_path):
    _s, answer = sign_in(app, next_path=next_path)
    assert answer.status_code == 303 and location(answer) == next_path


def test_next_survives_the_round_trip_through_the_form(app):
    s = requests.Session()
    bounced = get(s, app, "/presence?channel=presence-x")
    assert location(bounced) == "/login?next=%2Fpresence%3Fchannel%3Dpresence-x"
    form = s.get(app.url(location(bounced)), timeout=TIMEOUT)
    assert '<input type="hidden" name="next" value="/presence?channel=presence-x">' in form.text
    answer = post(s, app, "/login", data={"username": "demo", "password": "demo",
                                          "next": "/presence?channel=presence-x",
                                          "csrf_token": csrf_from(form.text)})
    assert location(answer) == "/presence?channel=presence-x"


# -- headers -----------------------------------------------------------------------
def check_security_headers(answer, no_store=True):
    csp = answer.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert answer.headers.get("X-Content-Type-Options") == "nosniff"
    assert answer.headers.get("Referrer-Policy") in ("same-origin", "no-referrer", "strict-origin")
    if no_store:
        assert "no-store" in answer.headers.get("Cache-Control", "")


def test_pages_carry_security_headers(signed_in, app):
    check_security_headers(requests.get(app.url("/login"), timeout=TIMEOUT))
    for path in ("/dashboard", "/presence", "/no-such-page"):
        check_security_headers(get(signed_in, app, path))
    # The same with a redirect answer: a signed-in page's 303 is not cached either.
    check_security_headers(requests.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT))


# -- upstream trouble -----------------------------------------------------------------
def test_an_expired_upstream_key_ends_the_session(app, sandbox):
    s, answer = sign_in(app, "carol", "carol")  # carol: no other test's session is hurt
    assert answer.status_code == 303
    token = s.cookies["session"]
    assert get(s, app, "/dashboard").status_code == 200
    requests.post(f"{sandbox.base}/_sandbox/expire-keys", json={"username": "carol"},
                  timeout=5).raise_for_status()
    bounced = get(s, app, "/dashboard")
    assert bounced.status_code == 303
    target = urlsplit(bounced.headers["Location"])
    assert target.path == "/login"
    assert parse_qs(target.query) == {"next": ["/dashboard"], "reason": ["expired"]}
    assert set_cookies(bounced)["session"][0] in ("", '""')
    notice = requests.get(app.url(bounced.headers["Location"]), timeout=TIMEOUT)
    assert "Your session has ended. Please sign in again." in notice.text
    replay = requests.get(app.url("/dashboard"), cookies={"session": token}, allow_redirects=False,
                          timeout=TIMEOUT)
    # Replayed, the old cookie names no session: the sign-in page says it ended, not that it expired upstream.
    assert replay.status_code == 303 and "reason=ended" in replay.headers["Location"]


def test_an_upstream_error_is_a_page_and_the_session_survives(quick_app, sandbox):
    app = quick_app
    s, answer = sign_in(app)
    assert answer.status_code == 303
    sandbox.fault(status=500, path_prefix="/api/user", count=1)
    failed = get(s, app, "/dashboard")
    assert failed.status_code == 502
    assert re.search(r"<p>The Social OS API [^<]*\(500\)[^<]*</p>", failed.text)  # a sentence, not a dump
    assert "Traceback" not in failed.text and "<h1>" in failed.text
    assert get(s, app, "/dashboard").status_code == 200  # fault gone: the session is still there


def test_a_slow_upstream_is_a_page_in_bounded_time(quick_app, sandbox):
    app = quick_app
    s, answer = sign_in(app)
    assert answer.status_code == 303
    sandbox.fault(delay=3, path_prefix="/api/user", count=1)
    started = time.monotonic()
    slow = get(s, app, "/dashboard")
    elapsed = time.monotonic() - started
    assert slow.status_code == 504
    assert re.search(r"<p>The Social OS API [^<]{10,}\.</p>", slow.text) and "Traceback" not in slow.text
    assert elapsed < 2.5, f"the page took {elapsed:.1f}s with a 0.5s read timeout"
    sandbox.clear_faults()
    assert get(s, app, "/dashboard").status_code == 200


def test_sign_in_while_the_upstream_fails_is_a_form_with_a_sentence(quick_app, sandbox):
    sandbox.fault(status=500, path_prefix="/api/key", count=1)
    s, answer = sign_in(quick_app)
    assert answer.status_code == 502
    assert re.search(r'role="alert" id="login-error">The Social OS API [^<]{10,}\.</p>', answer.text)
    assert "session" not in set_cookies(answer)
    assert sign_in(quick_app, session=s)[1].status_code == 303  # and then it works


# -- timeouts, enforced on read -----------------------------------------------------------
@pytest.mark.parametrize("field,age", [("accessed", timedelta(seconds=3600 + 5)),
                                       ("expires", timedelta(seconds=-1))])
def test_an_idle_or_too_old_session_is_over_on_the_next_request(app, db, field, age):
    s, _answer = sign_in(app)
    rid = record_id(app, s.cookies["session"])
    sessions = database(db, app)["sessions"]
    # Control: still inside the limits, the session works.
    sessions.update_one({"_id": rid}, {"$set": {"accessed": utcnow() - timedelta(seconds=30)}})
    assert get(s, app, "/dashboard").status_code == 200
    # SESSION_TTL is 3600 and the TTL monitor has not run: only the app can enforce it.
    value = utcnow() - age if field == "accessed" else utcnow() + age
    assert sessions.update_one({"_id": rid}, {"$set": {field: value}}).matched_count == 1
    # The instance's cache hears of the write through the change stream within milliseconds.
    wait_for(lambda: get(s, app, "/dashboard").status_code == 303, 5, "the session over")
    assert location(get(s, app, "/dashboard")).startswith("/login")
    assert sessions.find_one({"_id": rid}) is None


def test_the_idle_timeout_follows_session_ttl(start_app, db):
    short = start_app(SESSION_TTL="60", SESSION_MAX_AGE="120")
    s, answer = sign_in(short)
    assert set_cookies(answer)["session"][1]["max-age"] == "120"
    rid = record_id(short, s.cookies["session"])
    sessions = database(db, short)["sessions"]
    sessions.update_one({"_id": rid}, {"$set": {"accessed": utcnow() - timedelta(seconds=61)}})
    wait_for(lambda: get(s, short, "/dashboard").status_code == 303, 5, "the idle session over")
    assert sessions.find_one({"_id": rid}) is None


def test_use_keeps_a_session_alive(app, db):
    s, _answer = sign_in(app)
    rid = record_id(app, s.cookies["session"])
    sessions = database(db, app)["sessions"]
    old = utcnow() - timedelta(minutes=50)
    sessions.update_one({"_id": rid}, {"$set": {"accessed": old}})

    def touched():  # once the instance has heard of the old time, the next use writes a new one
        assert get(s, app, "/dashboard").status_code == 200
        return sessions.find_one({"_id": rid})["accessed"] > old + timedelta(minutes=49)
    wait_for(touched, 5, "the session touched by its use")


# -- admin ---------------------------------------------------------------------------
def test_the_admin_page_is_for_admins(app):
    admin, answer = sign_in(app, "admin", "admin")
    assert answer.status_code == 303
    page = get(admin, app, "/admin")
    assert page.status_code == 200
    assert "<svg" in page.text and "Active sessions by sign-in hour" in page.text
    assert re.search(r"<strong>\d+ active sessions?</strong> for <strong>\d+ users?</strong>", page.text)
    for name in ("Alice Liddell", "Grace Hopper", "dave@example.com"):
        assert name in page.text
    assert 'href="/admin"' in get(admin, app, "/dashboard").text  # admins get a link

    demo, _ = sign_in(app)
    refused = get(demo, app, "/admin")
    assert refused.status_code == 403 and "Alice Liddell" not in refused.text
    assert 'href="/admin"' not in get(demo, app, "/dashboard").text

    out = requests.get(app.url("/admin"), allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code == 303 and location(out) == "/login?next=%2Fadmin"


def test_the_admin_page_counts_sessions(app):
    admin, _ = sign_in(app, "admin", "admin")

    def active():
        text = get(admin, app, "/admin").text
        return int(re.search(r"<strong>(\d+) active sessions?</strong>", text).group(1))

    before = active()
    sign_in(app, "bob", "bob")
    # Counted in the background (sessions/stats.py): the page may show the count just before.
    wait_for(lambda: active() == before + 1, 10, "the new session counted")


# -- odd requests ---------------------------------------------------------------------
def test_healthz(app):
    answer = requests.get(app.url("/healthz"), timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["status"] == "ok"


def test_an_unknown_page_is_a_friendly_404(signed_in, app):
    answer = get(signed_in, app, "/no/such/page")
    assert answer.status_code == 404
    assert "There is nothing at this address." in answer.text
    assert 'href="/dashboard"' in answer.text and "Traceback" not in answer.text


def test_a_body_over_64_kb_is_refused(signed_in, app):
    csrf = csrf_from(get(signed_in, app, "/dashboard").text)
    big = {"csrf_token": csrf, "padding": "x" * (65 * 1024)}
    for path in ("/login", "/logout", "/pusher/webhook"):
        answer = post(signed_in, app, path, data=big)
        assert answer.status_code == 413, path
        assert "Traceback" not in answer.text
    assert get(signed_in, app, "/dashboard").status_code == 200  # not signed out by it


# -- what the database holds ----------------------------------------------------------------
SESSION_FIELDS = {"_id", "username", "name", "admin", "sealed", "created", "accessed", "expires",
                  "handle", "user_agent", "address", "key_ref", "tag", "fresh", "notice"}


def test_the_database_holds_no_cookie_token_and_no_key_secret(app, db, sandbox):
    s, _answer = sign_in(app)
    get(s, app, "/presence")  # touch the other collections too
    token = s.cookies["session"]
    rid = record_id(app, token)
    mongo = database(db, app)
    record = mongo["sessions"].find_one({"_id": rid})
    assert set(record) == SESSION_FIELDS
    sealed = bytes(record["sealed"])
    assert sealed[:1] == b"\x02" and len(sealed) >= 1 + 12 + 32  # ChaCha20 + HMAC-SHA256 (format 2)

    # The upstream key this session holds, opened the one way there is: SECURE_KEY and the cookie.
    plain = Keyring(decode_key(app.env["SECURE_KEY"])).current.open(token, rid, sealed)
    key = json.loads(plain)
    check = requests.get(f"{sandbox.api_url}/user/demo", auth=("demo", key["p"]), timeout=5)
    assert check.status_code == 200  # it really is the live key secret

    raw = token.encode()
    token_bytes = base64.urlsafe_b64decode(token + "=")
    needles = {
        "token": raw,
        "token bytes": token_bytes,
        "sha256(token)": hashlib.sha256(raw).hexdigest().encode(),
        "sha1(token)": hashlib.sha1(raw).hexdigest().encode(),
        "sha256(token bytes)": hashlib.sha256(token_bytes).hexdigest().encode(),
        "sha256(token) raw": hashlib.sha256(raw).digest(),
        "key password": key["p"].encode(),
        "key token": key["t"].encode(),
    }
    scanned = 0
    for name in mongo.list_collection_names():
        for doc in mongo[name].find():
            blob = bson.encode(doc)
            scanned += 1
            for what, needle in needles.items():
                assert needle not in blob, f"{what} found in a {name} document"
    assert scanned >= 1


# -- signed-in devices -------------------------------------------------------------------------
def test_sign_out_everywhere_else(app):
    first = requests.Session()
    first.headers["User-Agent"] = "Device-One/1.0"
    second = requests.Session()
    second.headers["User-Agent"] = "Device-Two/2.0"
    third = requests.Session()
    third.headers["User-Agent"] = "Device-Three/3.0"
    for browser in (first, second, third):
        assert sign_in(app, "linus", "linus", session=browser)[1].status_code == 303

    page = get(first, app, "/dashboard").text
    for agent in ("Device-One/1.0", "Device-Two/2.0", "Device-Three/3.0"):
        assert agent in page
    assert page.count("This device") == 1
    handles = re.findall(r'name="handle" value="([0-9a-f]{12})"', page)
    assert len(handles) == 2

    # One other device by its row ...
    csrf = csrf_from(page)
    row = re.search(r"Device-Two/2\.0.*?name=\"handle\" value=\"([0-9a-f]{12})\"", page, re.S).group(1)
    assert post(first, app, "/devices", data={"csrf_token": csrf, "handle": row}).status_code == 303
    assert_sent_to_sign_in(second, app)
    assert get(third, app, "/dashboard").status_code == 200
    # ... then all the others; never without the token.
    assert post(first, app, "/devices", data={"everywhere": "1"}).status_code == 403
    assert get(third, app, "/dashboard").status_code == 200
    done = post(first, app, "/devices", data={"csrf_token": csrf, "everywhere": "1"})
    assert done.status_code == 303 and location(done) == "/dashboard?notice=others-ended&n=1"
    assert_sent_to_sign_in(third, app)
    after = get(first, app, "/dashboard")
    assert after.status_code == 200
    listed = after.text.split('id="devices"')[1].split('id="activity"')[0]  # the history names them still
    assert "Device-Two/2.0" not in listed and "Device-Three/3.0" not in listed


def test_two_browsers_list_two_devices(app):
    a, _ = sign_in(app, "dave", "dave")
    b, _ = sign_in(app, "dave", "dave")
    page = get(a, app, "/dashboard").text
    assert page.count("This device") == 1
    assert len(re.findall(r'name="handle" value="[0-9a-f]{12}"', page)) == 1  # the other one
    assert get(b, app, "/dashboard").status_code == 200


def test_the_session_token_never_appears_in_a_url_or_a_page(app):
    """ASVS 3.1.1: the token travels only in the cookie header."""
    s, answer = sign_in(app, next_path="/dashboard?q=ada")
    token = s.cookies.get("session")
    seen = [answer.headers.get("Location", "")]
    for path in ("/", "/dashboard?q=ada", "/presence", "/login", "/nowhere"):
        page = s.get(app.url(path), timeout=TIMEOUT)
        seen += [r.headers.get("Location", "") for r in page.history] + [page.url, page.text]
        seen += re.findall(r'(?:href|action|src)="([^"]*)"', page.text)
    assert token and all(token not in text for text in seen)


@pytest.mark.parametrize("body", ['{"username": "demo"}', '["not", "an", "object"]', "{}"])
def test_a_sparse_or_odd_profile_still_renders_the_dashboard(app, sandbox, body):
    s, _ = sign_in(app)
    sandbox.fault(path_prefix="/api/user", status=200, body=body, count=1)
    page = s.get(app.url("/dashboard"), timeout=TIMEOUT)
    assert page.status_code == 200 and "<h1>demo</h1>" in page.text
    assert "Signed-in devices" in page.text
