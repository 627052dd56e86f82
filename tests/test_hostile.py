"""Hostile input, generated: whatever a client sends, the app answers in time,
never with a 5xx or a stack trace, and never echoes markup unescaped.

One app for the whole module (login throttling set high, so generated wrong
passwords don't lock the test's own address out) and one signed-in browser.
"""

import hashlib
import hmac
import json
import re
import socket
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import csrf_from, sign_in
from support import read_answer, started_app

BOUND = 3.0  # seconds: no answer may take longer (upstream timeouts don't come into play here)
KEY, SECRET = "demo-key", "demo-secret"

fuzz = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CHANNEL_RE = re.compile(r"\Apresence-[A-Za-z0-9_\-=@,.;]+\Z")
SOCKET_RE = re.compile(r"\A[0-9]{1,20}\.[0-9]{1,20}\Z")

XSS = [
    "<script>alert(1)</script>",
    '"><script>alert(1)</script>',
    "'><img src=x onerror=alert(1)>",
    '" autofocus onfocus="alert(1)',
    "</title><svg onload=alert(1)>",
    "<iframe src=javascript:alert(1)>",
    "{{7*7}}<b>bold</b>",
]


# -- fixtures and checks -------------------------------------------------------------
@pytest.fixture(scope="module")
def app(db, sandbox):
    with started_app(db, sandbox, LOGIN_MAX_FAILURES="1000") as server:
        yield server


@pytest.fixture(scope="module")
def browser(app):
    """A signed-in demo browser and its CSRF token."""
    s, answer = sign_in(app)
    assert answer.status_code == 303
    return s, csrf_from(s.get(app.url("/dashboard"), timeout=10).text)


@pytest.fixture(scope="module")
def login_form(app):
    """A signed-out browser's pre-session cookie and the sign-in form's token bound to it."""
    page = requests.get(app.url("/login"), timeout=10)
    return page.cookies["csrf"], csrf_from(page.text)


def timed(call, *args, **kwargs):
    started = time.monotonic()
    answer = call(*args, allow_redirects=False, timeout=BOUND + 5, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"answered in {elapsed:.2f}s"
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    owner = getattr(call, "__self__", None)
    if isinstance(owner, requests.Session) and answer.status_code in (413, 414, 431):
        # The HTTP server closes the connection after these without saying so: start afresh.
        owner.close()
    return answer


RAW_MARKUP = ("<script", "<img", "<svg", "<iframe", "<b>", "</title><", '" autofocus', "'>")


def no_raw_markup(html, payload):
    """The payload's markup does not reach the page as markup (escaped text is fine)."""
    assert payload not in html, payload
    html = html.replace('<script src="/static/app.js" defer></script>', "")  # every page's own script
    for needle in RAW_MARKUP:
        assert needle not in html, needle


def header_safe(text):
    """Text a client can put in a header value (no line breaks; requests refuses those)."""
    return text.replace("\r", "").replace("\n", "").lstrip(" \t\f\v")


junk = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(['"', ";", "=", "\\", ",", "%", "%00", "\x00", "\u202e", "\ufeff", "../..", "$where",
                     '{"$gt": ""}', "a" * 43, "ä" * 43, " " * 5, *XSS]),
    st.builds(lambda part, n: part * n, st.text(min_size=1, max_size=4), st.integers(500, 4000)),
)


# -- the session cookie ------------------------------------------------------------------
COOKIE_NAMES = st.sampled_from(["session", "session", "__Host-session", "csrf", "Session", "session "])


@fuzz
@given(pairs=st.lists(st.tuples(COOKIE_NAMES, junk), min_size=1, max_size=3),
       path=st.sampled_from(["/dashboard", "/", "/login", "/presence", "/admin"]))
def test_any_cookie_header_is_answered_calmly(app, pairs, path):
    header = "; ".join(f"{name}={value}" for name, value in pairs)
    answer = timed(requests.get, app.url(path), headers={"Cookie": header_safe(header).encode("utf-8")})
    if path == "/login":
        assert answer.status_code in (200, 400, 413, 431)
    else:
        assert answer.status_code in (303, 400, 413, 431)
        if answer.status_code == 303:
            assert "/login" in answer.headers["Location"]


# -- the sign-in form ----------------------------------------------------------------------
def field(values):
    """A form field: absent, one value, or repeated."""
    return st.one_of(st.none(), values, st.lists(values, min_size=2, max_size=3))


@settings(fuzz, max_examples=150)
@given(username=field(st.one_of(st.just("demo"), junk)),
       password=field(st.one_of(st.just("demo"), junk)),
       next_path=field(st.one_of(st.sampled_from(["/dashboard", "/presence?channel=presence-x", "//evil.example",
                                                  "/\\evil.example", "https://evil.example/",
                                                  "javascript:alert(1)", "/%2F%2Fevil.example"]), junk)),
       token=st.one_of(st.just("valid"), st.just("valid"), field(junk)))
def test_any_sign_in_post_is_answered_calmly(app, login_form, username, password, next_path, token):
    pre, good = login_form
    data = []
    for name, value in (("username", username), ("password", password), ("next", next_path),
                        ("csrf_token", good if token == "valid" else token)):
        for item in ([] if value is None else value if isinstance(value, list) else [value]):
            data.append((name, item))
    answer = timed(requests.post, app.url("/login"), data=data, cookies={"csrf": pre})
    issued = "session" in answer.cookies
    if answer.status_code == 303:
        # Only the right password signs in, and only to a page of this site.
        assert issued and isinstance(username, str) and username.strip() == "demo" and password == "demo"
        target = answer.headers["Location"]
        assert target.startswith("/") and not target.startswith("//")
        assert not target.startswith("/login") and "\\" not in target
    else:
        assert not issued
        assert answer.status_code in (200, 400, 403, 413, 429)


# -- search, channels, socket ids ------------------------------------------------------------------
@fuzz
@given(q=junk)
def test_any_search_is_a_page(app, browser, q):
    s, _ = browser
    answer = timed(s.get, app.url("/dashboard"), params={"q": q})
    assert answer.status_code in (200, 413, 414)


@fuzz
@given(channel=st.one_of(
    st.builds(lambda body: "presence-" + body, st.text(alphabet="abcXYZ019_-=@,.;", min_size=1, max_size=170)),
    st.builds(lambda body: "presence-" + body, st.text(max_size=30)),
    st.builds(lambda p, body: p + body, st.sampled_from(["private-", "presence", "Presence-", "", "presence--"]),
              st.text(alphabet="abc=@,.;!<>\" ", max_size=20)),
    junk))
def test_any_channel_name_is_shown_or_refused_with_400(app, browser, channel):
    s, _ = browser
    answer = timed(s.get, app.url("/presence"), params={"channel": channel})
    valid = bool(CHANNEL_RE.match(channel)) and len(channel) <= 164
    if answer.status_code in (413, 414):
        return
    assert answer.status_code == (200 if valid else 400), (channel, answer.text[-400:])
    if valid:  # the signed call to Pusher went through for this name
        assert '<strong id="member-count">' in answer.text


@fuzz
@given(socket_id=st.one_of(st.from_regex(SOCKET_RE, fullmatch=True), junk,
                           st.builds(lambda a, b: f"{a}.{b}", st.integers(-5, 10**25), st.integers(-5, 10**25))),
       channel=st.sampled_from(["presence-lobby", "private-user-demo", "private-user-alice", "lobby"]))
def test_any_socket_id_is_authorized_or_refused_with_400(app, browser, socket_id, channel):
    s, csrf = browser
    answer = timed(s.post, app.url("/pusher/auth"), data={"socket_id": socket_id, "channel_name": channel},
                   headers={"X-CSRF-Token": csrf})
    well_formed = bool(SOCKET_RE.match(socket_id)) and channel != "lobby"
    ok = well_formed and channel != "private-user-alice"  # demo's own private channel only
    if answer.status_code == 413:  # over the 64 KB body limit: refused before it is read
        assert len(socket_id.encode()) > 10_000
        return
    assert answer.status_code == (200 if ok else 403 if well_formed else 400), (socket_id, answer.text)
    if ok:
        assert answer.json()["auth"].startswith(KEY + ":")


# -- webhooks ------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
webhook_events = st.lists(st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["member_added", "member_removed", "channel_vacated",
                                                    "channel_occupied", "client_event"]),
                           "channel": st.one_of(st.text(max_size=30), json_values),
                           "user_id": st.one_of(st.text(max_size=30), json_values)}),
    json_values), max_size=5)
def _webhook(events, fresh, t):
    """A webhook body: fresh ones carry the current time (Pusher's libraries allow 300 s)."""
    return json.dumps({"time_ms": int(time.time() * 1000) if fresh else t, "events": events}).encode()


webhook_bodies = st.one_of(
    st.builds(_webhook, webhook_events, st.booleans(), st.integers(0, 2**53)),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.binary(max_size=300),
)


def sign(body):
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@fuzz
@given(body=webhook_bodies,
       key=st.one_of(st.none(), st.just(KEY), st.text(max_size=40)),
       signature=st.one_of(st.none(), st.just("right"), st.text(max_size=80),
                           st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)))
def test_any_unauthentic_webhook_is_401(app, body, key, signature):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-Pusher-Key"] = header_safe(key).encode("utf-8")
    if signature == "right":
        signature = sign(body)
    if signature is not None:
        headers["X-Pusher-Signature"] = header_safe(signature).encode("utf-8")
    answer = timed(requests.post, app.url("/pusher/webhook"), data=body, headers=headers)
    authentic = key == KEY and signature is not None and hmac.compare_digest(
        header_safe(signature).strip().encode(), sign(body).encode())
    if not authentic:
        assert answer.status_code == 401, answer.text
    else:  # authentic: applied, malformed, or stale (401 with its reason)
        assert answer.status_code in (200, 400, 401)


@settings(fuzz, max_examples=120)
@given(body=webhook_bodies)
def test_any_signed_webhook_body_is_handled_or_400(app, body):
    answer = timed(requests.post, app.url("/pusher/webhook"), data=body,
                   headers={"X-Pusher-Key": KEY, "X-Pusher-Signature": sign(body)})
    def strict(constant):  # NaN and Infinity are not JSON: the app refuses them as malformed
        raise ValueError(constant)

    try:
        payload = json.loads(body, parse_constant=strict)
    except ValueError:
        payload = None
    well_formed = isinstance(payload, dict) and isinstance(payload.get("events"), list)
    stamp = payload.get("time_ms") if well_formed else None
    timed_ok = isinstance(stamp, int) and not isinstance(stamp, bool)
    if not well_formed or not timed_ok:
        expected = 400
    else:
        expected = 200 if abs(time.time() * 1000 - stamp) < 290_000 else 401
    assert answer.status_code == expected, (body[:200], answer.text)


@pytest.mark.parametrize("body", [b"[" * 60000, b'{"events": ' + b"[" * 30000, b'{"a":' * 12000 + b"1"])
def test_a_deeply_nested_signed_webhook_is_400(app, body):
    assert len(body) < 64 * 1024
    answer = timed(requests.post, app.url("/pusher/webhook"), data=body,
                   headers={"X-Pusher-Key": KEY, "X-Pusher-Signature": sign(body)})
    assert answer.status_code == 400


# -- markup in echoed input ------------------------------------------------------------------------
payloads = st.builds(lambda a, x, b: a + x + b, st.text(alphabet="ab &;#", max_size=4), st.sampled_from(XSS),
                     st.text(alphabet="ab &;#", max_size=4))


@settings(fuzz, max_examples=40)
@given(payload=payloads)
def test_markup_in_the_username_is_escaped(app, login_form, payload):
    pre, good = login_form
    answer = timed(requests.post, app.url("/login"), cookies={"csrf": pre},
                   data={"username": payload, "password": "x", "csrf_token": good})
    assert answer.status_code == 200 and "Wrong username or password." in answer.text
    no_raw_markup(answer.text, payload)
    assert "&lt;" in answer.text or "&#34;" in answer.text or "&#39;" in answer.text


@settings(fuzz, max_examples=40)
@given(payload=payloads)
def test_markup_in_the_search_is_escaped(app, browser, payload):
    s, _ = browser
    answer = timed(s.get, app.url("/dashboard"), params={"q": payload})
    assert answer.status_code == 200
    no_raw_markup(answer.text, payload.strip())


@settings(fuzz, max_examples=40)
@given(payload=payloads)
def test_markup_in_next_is_escaped(app, payload):
    answer = timed(requests.get, app.url("/login"), params={"next": "/" + payload})
    assert answer.status_code == 200
    no_raw_markup(answer.text, payload)


@settings(fuzz, max_examples=40)
@given(payload=payloads)
def test_markup_in_a_channel_name_is_not_echoed(app, browser, payload):
    s, _ = browser
    answer = timed(s.get, app.url("/presence"), params={"channel": "presence-" + payload})
    assert answer.status_code == 400
    no_raw_markup(answer.text, payload)


# -- the HTTP layer ----------------------------------------------------------------------------------
def test_a_20_kb_header_is_a_4xx(app, browser):
    s, _ = browser
    for headers in ({"X-Big": "a" * 20 * 1024}, {f"X-H{i}": "b" * 100 for i in range(200)}):
        answer = timed(s.get, app.url("/dashboard"), headers=headers)
        assert 400 <= answer.status_code < 500
    long_url = timed(s.get, app.url("/dashboard?q=" + "a" * 20 * 1024))
    assert 400 <= long_url.status_code < 500 or long_url.status_code == 200
    assert s.get(app.url("/dashboard"), timeout=10).status_code == 200  # still signed in, still serving


def raw_request(app, data, wait=BOUND):
    """Send raw bytes; the status code the server answers with (None: it just closed)."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=wait) as conn:
        conn.sendall(data)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = read_answer(conn, wait)
    assert b"Traceback" not in chunks
    match = re.match(rb"HTTP/1\.[01] (\d{3})", chunks)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /login HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\n",
    b"POST /pusher/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello",
    b"GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /dashboard HTTP/1.1\r\nHost: x\r\nCookie: session=\xff\xfe\xfd\r\n\r\n",
    b"GET /login?next=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /presence?channel=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /pusher/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 9\r\n\r\n%ff=%fe&a",
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
    b"Content-Length: 20\r\n\r\n--zz\r\nbroken\r\n--zz--",
])
def test_malformed_requests_are_never_a_5xx(app, data):
    status = raw_request(app, data)
    assert status is None or status < 500, status


def test_an_unknown_http_version_is_505_not_500(app):
    assert raw_request(app, b"GET / HTTP/9.9\r\nHost: x\r\n\r\n") == 505  # the one 5xx that is the client's


def test_multipart_forms_still_work_and_broken_ones_are_400(app):
    page = requests.get(app.url("/login"), timeout=10)
    fields = {"username": (None, "demo"), "password": (None, "demo"), "csrf_token": (None, csrf_from(page.text))}
    answer = timed(requests.post, app.url("/login"), files=fields, cookies=page.cookies)
    assert answer.status_code == 303 and "session" in answer.cookies
    broken = timed(requests.post, app.url("/login"), data=b"--zz\r\nbroken\r\n--zz--",
                   headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert broken.status_code == 400


# -- issue 21, item 10: webhook bodies, headers on every answer, private channels ------------
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Cache-Control")


def raw_answer(app, data, wait=BOUND):
    """``(status, headers as lower-cased {name: value}, raw bytes)`` of a raw request."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=wait) as conn:
        conn.sendall(data)
        chunks = read_answer(conn, wait, done=lambda got: b"\r\n\r\n" in got)
    head, _, _ = chunks.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else None
    return status, {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}, chunks


def errors_logged(app, since):
    return [line for line in app.proc.output()[since:].splitlines() if " ERROR " in line or '"ERROR"' in line]


@pytest.mark.parametrize("chunks,status", [
    (b"8000000000000000\r\n", 413),                   # 2^63
    (b"FFFFFFFFFFFFFFFFFFFF\r\n", 413),
    (b"10000\r\n" + b"a" * 0x10000 + b"\r\n10000\r\n" + b"a" * 0x10000 + b"\r\n0\r\n\r\n", 413),  # over 64 KB
    (b"zz\r\n", 400),
])
def test_a_chunked_webhook_too_big_or_malformed_is_4xx_without_an_error_line(app, chunks, status):
    since = len(app.proc.output())
    head = b"POST /pusher/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    found, headers, _ = raw_answer(app, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    assert found == status
    assert all(name.lower() in headers for name in SECURITY_HEADERS), headers
    assert not errors_logged(app, since)


def test_a_bad_host_and_cheroots_own_413_carry_the_security_headers(app):
    for data, status in [(b"GET /login HTTP/1.1\r\nHost: bad host!\r\n\r\n", 400),
                         (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413),
                         (b"GET /login HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n", 400)]:
        found, headers, raw = raw_answer(app, data)
        assert found == status, raw[:200]
        missing = [name for name in SECURITY_HEADERS if name.lower() not in headers]
        assert not missing, (data[:40], missing)
        assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_signed_webhook_with_time_ms_nan_is_refused(app, constant):
    event = '{"name": "member_added", "channel": "presence-lobby", "user_id": "nan-user"}'
    body = f'{{"time_ms": {constant}, "events": [{event}]}}'.encode()
    answer = requests.post(app.url("/pusher/webhook"), data=body, timeout=10,
                           headers={"Content-Type": "application/json", "X-Pusher-Key": KEY,
                                    "X-Pusher-Signature": sign(body)})
    assert answer.status_code == 400, answer.text
