"""Logs as an operator reads them: one line per event with one timestamp, JSON on
request, a request id end to end, and no secret in anything logged, whoever logged it."""

import json
import logging
import re
import secrets
import socket
import threading
import time

import pytest
import requests

from conftest import csrf_from, sign_in
from socialos_app.ops.logs import (
    MAX_PATH,
    REQUEST_ID,
    JsonFormatter,
    RateLimitFilter,
    ScrubFilter,
    TextFormatter,
    cap,
    database_words,
    escape,
    recovered,
    scrub,
    trouble,
    troubled,
)
from support import read_answer, started_app, wait_for

ISO = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
CHERRYPY_DATE = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\]")
# Everything this module's apps were given or made that must never reach a log.
SEEN_SECRETS = []


@pytest.fixture(scope="module")
def json_app(db, sandbox):
    with started_app(db, sandbox, LOG_FORMAT="json", LOG_LEVEL="INFO", LOGIN_MAX_FAILURES="1000") as server:
        SEEN_SECRETS.append(server.env["SECURE_KEY"])
        yield server


@pytest.fixture(scope="module")
def text_app(db, sandbox):
    with started_app(db, sandbox, LOG_LEVEL="INFO") as server:
        SEEN_SECRETS.append(server.env["SECURE_KEY"])
        yield server


def json_lines(app):
    out = []
    for line in app.proc.output().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object
    return out


def request_line(app, rid, timeout=10):
    """The JSON request line carrying ``rid`` (written after the answer is sent: poll)."""
    def find():
        return next((e for e in json_lines(app) if e.get("request_id") == rid and "status" in e), None)
    return wait_for(find, timeout, f"the request line of {rid}")


def signed_in_session(app):
    s, answer = sign_in(app)
    assert answer.status_code == 303, answer.text
    token = next(c.value for c in s.cookies if c.name in ("session", "__Host-session"))
    SEEN_SECRETS.append(token)
    return s, token


# -- format ---------------------------------------------------------------------------
def test_json_lines_parse_and_carry_the_request_id(json_app):
    answer = requests.get(json_app.url("/login"), headers={"User-Agent": "probe/1.0"}, timeout=10)
    rid = answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{16}", rid)
    entry = request_line(json_app, rid)
    assert entry["method"] == "GET" and entry["path"] == "/login" and entry["status"] == 200
    assert entry["ip"] == "127.0.0.1" and entry["user_agent"] == "probe/1.0"
    assert ISO.match(entry["time"] + " ") and entry["level"] == "INFO"
    other = requests.get(json_app.url("/login"), timeout=10).headers["X-Request-ID"]
    assert other != rid  # one per request


def test_an_incoming_request_id_is_honoured_and_a_bad_one_replaced(json_app):
    mine = "edge-" + secrets.token_hex(6)
    answer = requests.get(json_app.url("/login"), headers={"X-Request-ID": mine}, timeout=10)
    assert answer.headers["X-Request-ID"] == mine
    assert request_line(json_app, mine)["path"] == "/login"
    for bad in ("has space", "x" * 129, "quote\"d", "semi;colon", "ümlaut"):
        got = requests.get(json_app.url("/login"), headers={"X-Request-ID": bad.encode()},
                           timeout=10).headers["X-Request-ID"]
        assert got != bad and re.fullmatch(r"[0-9a-f]{16}", got)


def test_any_id_nginx_passes_on_is_kept_whole_and_never_scrubbed(json_app, text_app):
    """nginx's own ids are 32 hex digits (which the scrubber takes for a secret anywhere else);
    its template passes on a client's id of up to 128 characters of the same alphabet."""
    ids = [secrets.token_hex(16), "x" * 128, "a:b.c_d-" + secrets.token_urlsafe(40).replace("-", "_")]
    for rid in ids:
        assert REQUEST_ID.fullmatch(rid)
        assert requests.get(json_app.url("/login"), headers={"X-Request-ID": rid},
                            timeout=10).headers["X-Request-ID"] == rid
        entry = request_line(json_app, rid)
        assert "[scrubbed]" not in entry["message"] and rid not in entry["message"]  # the id is its own field
        assert requests.get(text_app.url("/login"), headers={"X-Request-ID": rid},
                            timeout=10).headers["X-Request-ID"] == rid
        line = wait_for(lambda rid=rid: next((ln for ln in text_app.proc.output().splitlines()
                                              if ln.endswith(f" rid={rid}")), None), 10, "the text request line")
        assert "socialos.request GET /login 200" in line and "[scrubbed]" not in line


def test_the_request_id_is_on_the_error_page(json_app):
    rid = secrets.token_hex(16)
    answer = requests.get(json_app.url("/no/such/page"), headers={"X-Request-ID": rid}, timeout=10)
    assert answer.status_code == 404 and answer.headers["X-Request-ID"] == rid
    assert rid in answer.text


def test_a_proxied_request_logs_the_client_address_only_when_the_proxy_is_trusted(db, sandbox):
    with started_app(db, sandbox, LOG_FORMAT="json", LOG_LEVEL="INFO", TRUSTED_PROXY="1") as trusted:
        rid = requests.get(trusted.url("/login"), headers={"X-Forwarded-For": "203.0.113.7"},
                           timeout=10).headers["X-Request-ID"]
        assert request_line(trusted, rid)["ip"] == "203.0.113.7"


def test_text_lines_have_one_timestamp_each(text_app):
    requests.get(text_app.url("/login"), timeout=10)
    wait_for(lambda: "socialos.request GET /login 200" in text_app.proc.output(), 10, "the request line")
    lines = [line for line in text_app.proc.output().splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("socialos-app listening", "  ")):
            continue  # the start-up banner, for a person
        assert ISO.match(line), line
        assert not CHERRYPY_DATE.search(line), line


# -- nothing secret, nothing huge -------------------------------------------------------
def test_a_stalled_signed_in_post_logs_no_cookie(json_app):
    s, token = signed_in_session(json_app)
    csrf = csrf_from(s.get(json_app.url("/dashboard"), timeout=10).text)
    SEEN_SECRETS.append(csrf)
    rid = "stall-" + secrets.token_hex(4)
    body = f"csrf_token={csrf}&socket_id=1.2&channel_name=presence-lobby&x=".encode()
    # (Not /logout: signing out revokes the upstream key in the background.)
    head = (f"POST /pusher/auth HTTP/1.1\r\nHost: 127.0.0.1:{json_app.port}\r\nCookie: session={token}\r\n"
            f"Authorization: Basic {secrets.token_urlsafe(12)}\r\nX-Request-ID: {rid}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body) + 500}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", json_app.port), timeout=10) as conn:
        conn.sendall(head.encode() + body)
        time.sleep(0.3)  # the body is half sent; then the client goes away mid-body
        conn.shutdown(socket.SHUT_WR)
        try:
            conn.recv(65536)
        except OSError:
            pass
    time.sleep(0.5)
    out = json_app.proc.output()
    assert token not in out and csrf not in out
    assert "Cookie:" not in out and "Authorization:" not in out and "Request Headers" not in out


def test_an_unknown_charset_is_one_short_line_not_a_traceback(json_app):
    before = len(json_app.proc.output().splitlines())
    rid = "charset-" + secrets.token_hex(4)
    answer = requests.post(json_app.url("/login"), data=b"username=a&password=b",
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=bogus-9",
                                    "X-Request-ID": rid}, timeout=10)
    assert answer.status_code < 500
    request_line(json_app, rid)
    new = json_app.proc.output().splitlines()[before:]
    others = [line for line in new if json.loads(line).get("request_id") != rid or "status" not in json.loads(line)]
    assert len(others) <= 1, new
    for line in new:
        assert len(line) < 600 and "Traceback" not in line and 'File "' not in line, line


def test_the_logs_of_this_module_hold_no_token_password_or_key(json_app, text_app):
    # Wrong passwords and a signed-in session, so there is something to leak.
    wrong = "wrong-" + secrets.token_hex(6)
    SEEN_SECRETS.append(wrong)
    for app in (json_app, text_app):
        sign_in(app, "demo", wrong)
        signed_in_session(app)
        sign_in(app, "demo", "demo")
    wait_for(lambda: all(app.proc.output().count("/login") >= 3 for app in (json_app, text_app)), 10, "lines")
    logs = json_app.proc.output() + text_app.proc.output()
    assert len(SEEN_SECRETS) >= 5
    for value in SEEN_SECRETS:
        assert value not in logs and value.upper() not in logs


# -- the filters, in process ----------------------------------------------------------------
def test_scrub_removes_headers_pairs_url_passwords_tokens_and_known_secrets():
    token, key = secrets.token_urlsafe(32), secrets.token_hex(32)
    text = (f"Request Headers:\n  Cookie: session={token}; theme=dark\n  Authorization: Basic dXNlcjpw\n"
            f"form {{'password': 'hunter2', 'csrf_token': '{key}'}} password=swordfish&x=1 "
            f"mongodb://ops:S3cret@db/prod token {token} literal zebra-crossing-42")
    clean = scrub(text, literals=("zebra-crossing-42",))
    for secret in (token, key, "hunter2", "swordfish", "S3cret", "dXNlcjpw", "zebra-crossing-42"):
        assert secret not in clean
    assert "theme=dark" not in clean  # the whole Cookie header goes
    assert "mongodb://ops:****@db/prod" in clean and "x=1" in clean
    ordinary = "GET /dashboard 200 3.1ms ip=127.0.0.1 rid=0123456789abcdef sid=1a2b3c4d test_sign_in_and_out_of_the_app"
    assert scrub(ordinary) == ordinary


def test_a_traceback_is_one_line_and_repeats_are_rate_limited():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("test.logs.ratelimit")
    logger.propagate = False
    handler = Keep()
    handler.setFormatter(TextFormatter())
    handler.addFilter(ScrubFilter())
    handler.addFilter(RateLimitFilter(burst=3, window=60))
    logger.handlers[:] = [handler]
    try:
        for _ in range(40):
            try:
                "abc".encode("bogus-9")
            except LookupError:
                logger.exception("unhandled error on POST /login")
        logger.error("something else")
    finally:
        logger.handlers[:] = []
    assert len(records) == 4, records
    assert all("\n" not in line and ISO.match(line) for line in records)
    assert "LookupError: unknown encoding: bogus-9" in records[0] and "test_logs.py" in records[0]
    assert records[-1].endswith("something else")


# -- linear time, one line per record ---------------------------------------------------------
ADVERSARIAL = {
    "dotted words": "a." * 32768,                 # the old secret-name pattern: ~4 s for 8 KB
    "newlines": "\n" * 65536,                    # the old header pattern: ~3.5 s for 8 KB
    "blanks after a name": "password" + " " * 65528,
    "unclosed quotes": "password='" * 6553,
    "unclosed double quotes": 'token="' * 9362,
    "schemes": "a://" * 16384,
    "user-colon runs": "://a:" * 13107,
    "one long word": "a" * 65536,
    "a long token-like run": "A1" * 32767 + "é",
    "hex then not": "0123456789abcdef" * 4095 + "g" * 16,
    "header names": "cookie:" * 9362,
    "frames": 'File "' * 10922,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_scrubbing_takes_linear_time_on_adversarial_text(name):
    text = ADVERSARIAL[name]
    assert 65000 <= len(text) <= 65600
    literals = ("zebra-crossing-42",)
    scrub(text[:4096], literals)  # warm up the compiled patterns
    started = time.perf_counter()
    scrub(text, literals)
    TextFormatter().format(logging.LogRecord("t", logging.INFO, __file__, 1, text, None, None))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.2, f"{name}: {elapsed:.3f} s for 64 KB"


def test_a_record_is_capped_before_it_is_scrubbed_and_a_cut_leaves_no_part_of_a_token():
    token = secrets.token_urlsafe(32)
    cut = cap("x" * 10 + " " + token + " tail", 30)
    assert cut.startswith("x" * 10 + " …[+") and token[:4] not in cut
    assert cap("/" + "a" * 5000, MAX_PATH) == "/…[+5000]"  # a cut inside one long run: the run goes
    path = "/a/" * 1000
    assert cap(path, MAX_PATH) == path[:MAX_PATH] + f"…[+{len(path) - MAX_PATH}]"
    assert cap("short", 10) == "short"
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "GET %s", ("/p" * 100_000,), None)
    ScrubFilter().filter(record)
    assert len(record.getMessage()) < 1100 and record.getMessage().endswith("]")


def test_control_characters_are_escaped_in_text_and_kept_in_json():
    raw = "/x\r\nFORGED security event=sign_in_failed\x00\x1b[2J\x85\u2028end"
    assert escape(raw) == "/x\\r\\nFORGED security event=sign_in_failed\\x00\\x1b[2J\\x85\\u2028end"
    record = logging.LogRecord("socialos.request", logging.INFO, __file__, 1, "G\rET %s", (raw,), None)
    ScrubFilter().filter(record)
    text = TextFormatter().format(record)
    assert len(text.splitlines()) == 1 and not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in text)
    assert json.loads(JsonFormatter().format(record))["message"] == "G\rET " + raw


def forged_lines(output):
    return [line for line in output.splitlines() if line.startswith("FORGED") or not ISO.match(line)
            and not line.startswith(("socialos-app listening", "  "))]


def test_a_path_with_an_encoded_line_break_writes_one_line(text_app, json_app):
    rid = secrets.token_hex(16)
    path = "/x%0d%0aFORGED%20security%20event=sign_in_failed%20user=alice%20ip=198.51.100.9%00%1b[2J"
    for app in (text_app, json_app):
        answer = requests.get(app.url(path), headers={"X-Request-ID": rid}, timeout=10)
        assert answer.status_code == 404
    line = wait_for(lambda: next((ln for ln in text_app.proc.output().splitlines() if ln.endswith(rid)), None),
                    10, "the request line")
    assert "GET /x\\r\\nFORGED security event=sign_in_failed" in line and "\\x00\\x1b[2J" in line
    assert not forged_lines(text_app.proc.output())
    assert request_line(json_app, rid)["path"].startswith("/x\r\nFORGED security")  # JSON: as it came


def test_cherrypys_own_lines_go_through_the_same_handler():
    """Engine chatter is at DEBUG; wherever it is written, it gets the one format and the escapes."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(TextFormatter())
    handler.addFilter(ScrubFilter())
    record = logging.LogRecord("cherrypy.error", logging.INFO, __file__, 1,
                               "[02/Jan/2026:03:04:05] ENGINE Bus STARTED\r\nFORGED", None, None)
    assert handler.filter(record)
    handler.emit(record)
    assert ISO.match(records[0]) and not CHERRYPY_DATE.search(records[0])
    assert records[0].endswith("cherrypy.error ENGINE Bus STARTED\\r\\nFORGED")


def test_a_raw_control_character_in_the_method_is_escaped(text_app):
    rid = secrets.token_hex(16)
    with socket.create_connection(("127.0.0.1", text_app.port), timeout=10) as conn:
        conn.sendall(b"G\x1bE\rT\x00 /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: " + rid.encode()
                     + b"\r\nConnection: close\r\n\r\n")
        read_answer(conn, 10)
    output = text_app.proc.output()
    assert "\x00" not in output and "\x1b" not in output
    assert not forged_lines(output)
    line = next((ln for ln in output.splitlines() if ln.endswith(rid)), None)
    assert line is not None
    assert line.split(" socialos.request ", 1)[1].startswith("G\\x1bE\\rT\\x00 /login")


def test_a_12_kb_path_costs_no_one_else_any_time(text_app):
    """Before: the scrubber spent 9-19 s on one such line, holding the GIL, /livez included."""
    rid = secrets.token_hex(16)
    path = "/" + "a." * 6000
    done = []

    def attack():
        for n in range(3):
            requests.get(text_app.url(path), headers={"X-Request-ID": f"{rid}{n}"}, timeout=60)
        done.append(True)

    attacker = threading.Thread(target=attack)
    attacker.start()
    worst = 0.0
    while attacker.is_alive():
        started = time.monotonic()
        assert requests.get(text_app.url("/livez"), timeout=30).status_code == 200
        worst = max(worst, time.monotonic() - started)
    attacker.join()
    assert done and worst < 1.0, f"/livez took {worst:.1f} s"
    line = wait_for(lambda: next((ln for ln in text_app.proc.output().splitlines() if ln.endswith(f"{rid}2")),
                                 None), 10, "the request line")
    assert f"…[+{len(path)}]" in line or "…[+" in line
    assert len(line) < 1000


# -- trouble and recovery, once each ----------------------------------------------------------
def test_trouble_is_one_line_per_outage_recovery_one_more_and_flapping_is_held_back(caplog):
    key = "test-thing-" + secrets.token_hex(4)
    caplog.set_level(logging.WARNING, logger="socialos")

    def lines(state):
        return [r for r in caplog.records if getattr(r, "fields", {}).get("trouble") == key
                and r.fields["state"] == state]

    assert not recovered(key, "back")  # never down: nothing to say
    for _ in range(50):  # every request that notices reports it
        trouble(key, "%s down", "thing", quiet=0.3)
    assert troubled(key) and len(lines("down")) == 1 and lines("down")[0].getMessage() == "thing down"
    assert recovered(key, "%s back", "thing") and not troubled(key)
    assert len(lines("up")) == 1 and lines("up")[0].getMessage().startswith("thing back (after ")
    assert lines("up")[0].levelno == logging.WARNING

    # Down again at once: held back (the last line is fresh); back before it is written: not written either.
    assert not trouble(key, "down", quiet=0.3)
    assert not recovered(key, "back")
    # Down again and staying down: written once the quiet time has passed, with the brief outage counted.
    assert not trouble(key, "down", quiet=0.3)
    wait_for(lambda: trouble(key, "down", quiet=0.3), 5, "the held-back line")
    assert lines("down")[-1].getMessage() == "down (1 brief outage of this before, not logged)"
    assert len(lines("down")) == 2 and recovered(key, "back") and len(lines("up")) == 2


def test_database_errors_are_named_in_words():
    class PyMongoError(Exception):
        pass

    class WaitQueueTimeoutError(PyMongoError):
        pass

    class OperationFailure(PyMongoError):
        def __init__(self, code):
            super().__init__("Authentication failed. Refer to docstring.")
            self.code = code

    class StoreUnavailable(Exception):
        pass

    def wrapped(exc):
        try:
            raise StoreUnavailable(type(exc).__name__) from exc
        except StoreUnavailable as outer:
            return outer

    assert database_words(wrapped(WaitQueueTimeoutError())) == \
        "database not answering: every pooled connection is waiting on it (WaitQueueTimeoutError)"
    assert database_words(wrapped(OperationFailure(18))) == \
        "database refused: authentication failed (OperationFailure)"
    assert database_words(wrapped(OperationFailure(2))) == "database refused an operation (OperationFailure)"
    assert database_words(StoreUnavailable("SomethingNew\r\n")) == "database error (SomethingNew\\r\\n)"
