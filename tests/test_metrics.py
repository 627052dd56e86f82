"""/metrics end to end: a real ``app.py`` is scraped over HTTP and the answer is
read with ``prometheus_client``'s own parser.

Counts are compared as differences between two scrapes. The app counts a
request when it ends, which may be just after the client has its answer, so
each check polls /metrics (with a deadline) until the counts arrive and then
requires them to be exact.
"""

import json
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import sign_in
from socialos_app.ops.metrics import SECURITY_EVENTS
from support import ROOT, started_app, wait_for

TIMEOUT = 10
DEADLINE = 5.0
# Routes this module doesn't drive (the fixtures' readiness polls, the scrapes themselves).
NOT_OURS = {"/metrics", "/healthz", "/readyz", "/livez"}
# What a route label may look like: a handler's path (maybe with "/*"), or the one label of unknown paths.
ROUTE = re.compile(r"/[a-z_/]*(/\*)?|unmatched")


# -- helpers -----------------------------------------------------------------
def scrape(app):
    answer = requests.get(app.url("/metrics"), timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["Content-Type"].startswith("text/plain")
    return answer.text


def parse(text):
    """``{(sample name, sorted label items): value}`` through prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_by_route(samples):
    """``Counter((route, method, status))`` of the request counter, our routes only."""
    out = Counter()
    for (name, labels), count in samples.items():
        labels = dict(labels)
        if name == "socialos_http_requests_total" and labels["route"] not in NOT_OURS:
            out[labels["route"], labels["method"], labels["status"]] = int(count)
    return out


def diff(after, before):
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})


def poll(app, done):
    """Scrape until ``done(samples)`` is true or the deadline passes; the last samples."""
    deadline = time.monotonic() + DEADLINE
    while True:
        samples = parse(scrape(app))
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def label_values(samples):
    return {v for (_, labels) in samples for (_, v) in labels}


# -- tests ---------------------------------------------------------------------
def test_request_counts_match_the_requests_made(app):
    """Every request is counted once under its route template, method and status,
    and timed under its route and method."""
    before = parse(scrape(app))
    made = Counter()

    def do(route, method, path, **kw):
        answer = requests.request(method, app.url(path), allow_redirects=False, timeout=TIMEOUT, **kw)
        made[route, method if method != "BREW" else "other", str(answer.status_code)] += 1
        return answer

    for _ in range(3):
        assert do("/login", "GET", "/login").status_code == 200
    for _ in range(2):
        assert do("/dashboard", "GET", "/dashboard").status_code == 303   # signed out
    assert do("/dashboard", "GET", "/dashboard?q=abc").status_code == 303  # the query is not a label
    assert do("/static", "GET", "/static/style.css").status_code == 200
    do("/login", "POST", "/login", data={"username": "x", "password": "y"})  # no CSRF token
    do("/login", "BREW", "/login")
    for _ in range(2):
        do("unmatched", "GET", "/no/such/page/" + secrets.token_hex(4))
    assert sum(made.values()) == 11

    want = lambda s: diff(requests_by_route(s), requests_by_route(before)) == made
    after = poll(app, want)
    assert diff(requests_by_route(after), requests_by_route(before)) == made

    timed = Counter()
    for (route, method, _status), n in made.items():
        timed[route, method] += n
    for (route, method), n in timed.items():
        name = "socialos_http_request_duration_seconds_count"
        assert value(after, name, route=route, method=method) - value(before, name, route=route,
                                                                      method=method) == n
    # The scrapes themselves are counted too, under their own route.
    assert value(after, "socialos_http_requests_total", route="/metrics", method="GET", status="200") >= 1


def test_unknown_paths_share_one_label_and_no_secret_or_name_is_exposed(app):
    """Paths with ids or junk never become labels; tokens and user names never appear."""
    session, answer = sign_in(app)
    assert answer.status_code == 303
    cookies = [c.value for c in session.cookies if c.value]
    assert cookies, "sign-in set no cookie"
    before = parse(scrape(app))
    junk = [secrets.token_hex(6) for _ in range(4)]
    paths = [f"/{junk[0]}", f"/{junk[1]}/{junk[1]}", f"/dashboard/{junk[2]}", f"/pusher/auth/{junk[3]}",
             "/dashboard/"]
    for path in paths:
        assert session.get(app.url(path), allow_redirects=False, timeout=TIMEOUT).status_code == 404

    def arrived(s):
        return (value(s, "socialos_http_requests_total", route="unmatched", method="GET", status="404")
                - value(before, "socialos_http_requests_total", route="unmatched", method="GET", status="404")
                == len(paths))
    after = poll(app, arrived)
    assert arrived(after)

    text = scrape(app)
    for secret in cookies:
        assert secret not in text
    for word in junk:
        assert word not in text
    labels = label_values(after)
    assert "demo" not in labels and "Demo" not in labels
    routes = {dict(labels)["route"] for (name, labels) in after if name == "socialos_http_requests_total"}
    # Five unknown paths, one route label between them; every route is a handler path.
    assert not any(word in route for route in routes for word in junk)
    assert all(ROUTE.fullmatch(r) for r in routes), routes


def test_upstream_calls_errors_and_latency_move_after_a_dashboard_view(app, sandbox):
    session, answer = sign_in(app)
    assert answer.status_code == 303
    before = parse(scrape(app))

    def moved(name, **labels):
        return lambda s: value(s, name, **labels) > value(before, name, **labels)

    assert session.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT).status_code == 200
    ok = moved("socialos_upstream_requests_total", service="socialos", outcome="ok")
    timed = moved("socialos_upstream_request_duration_seconds_count", service="socialos")
    after = poll(app, lambda s: ok(s) and timed(s))
    assert ok(after) and timed(after)
    assert value(after, "socialos_upstream_errors_total", service="socialos", error="UpstreamError") == \
        value(before, "socialos_upstream_errors_total", service="socialos", error="UpstreamError")

    # The upstream fails: the error is counted by service and kind.
    sandbox.fault(path_prefix="/api/user", status=500, count=5)
    page = session.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT)
    assert page.status_code >= 500
    failed = poll(app, lambda s: sum(v for (n, labels), v in s.items() if n == "socialos_upstream_errors_total"
                                    and ("service", "socialos") in labels)
                  > sum(v for (n, labels), v in after.items() if n == "socialos_upstream_errors_total"
                        and ("service", "socialos") in labels))
    errors = {dict(labels)["error"] for (n, labels), v in failed.items()
              if n == "socialos_upstream_errors_total" and v}
    assert errors and "ok" not in errors


def test_sign_in_outcomes_are_counted(app):
    """Wrong passwords, throttled attempts and successes, each under its outcome."""
    before = parse(scrape(app))
    username = "nobody-" + secrets.token_hex(4)
    statuses = []
    for _ in range(10):
        _, answer = sign_in(app, username, "wrong")
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    wrong, throttled = len(statuses) - 1, 1
    _, answer = sign_in(app)
    assert answer.status_code == 303

    def counts(s):
        return {o: value(s, "socialos_sign_ins_total", outcome=o) - value(before, "socialos_sign_ins_total",
                                                                          outcome=o)
                for o in ("ok", "wrong", "throttled", "upstream_error")}
    expected = {"ok": 1, "wrong": wrong, "throttled": throttled, "upstream_error": 0}
    after = poll(app, lambda s: counts(s) == expected)
    assert counts(after) == expected
    assert username not in scrape(app)


def test_every_security_event_the_code_logs_is_a_listed_kind():
    package = Path(__file__).resolve().parent.parent / "socialos_app"
    source = "\n".join(path.read_text() for path in package.rglob("*.py"))
    logged = set(re.findall(r'security_event\(\s*"([a-z_]+)"', source))
    # sign-in and "Confirm it's you" share one password check: f"{what}_failed" / f"{what}_throttled"
    logged |= {f"{what}_{outcome}" for what in re.findall(r'_check_password\([^)]*"([a-z_]+)"\)', source)
               for outcome in ("failed", "throttled")}
    assert logged and logged <= set(SECURITY_EVENTS), logged - set(SECURITY_EVENTS)


def test_security_events_are_counted_by_name(app):
    """Every kind the log writes is a series from the start; each event counted once."""
    before = parse(scrape(app))
    for event in SECURITY_EVENTS:
        assert ("socialos_security_events_total", (("event", event),)) in before, event
    session, answer = sign_in(app)
    assert answer.status_code == 303
    refused = session.post(app.url("/devices"), data={"everywhere": "1"}, allow_redirects=False,
                           timeout=TIMEOUT)  # no CSRF token
    assert refused.status_code == 403
    _, answer = sign_in(app, "nobody-" + secrets.token_hex(4), "wrong")
    assert answer.status_code == 200

    def moved(s, event):
        return (value(s, "socialos_security_events_total", event=event)
                - value(before, "socialos_security_events_total", event=event))

    def counted(s):
        return moved(s, "csrf_refused") == 1 and moved(s, "sign_in_failed") == 1
    after = poll(app, counted)
    assert counted(after)
    assert moved(after, "session_tampered") == 0


def test_a_wrong_password_is_a_sign_in_outcome_not_an_upstream_error(app):
    """A guessing burst must not fire an upstream-error alert: the upstream answered, correctly."""
    before = parse(scrape(app))
    for _ in range(3):
        _, answer = sign_in(app, "nobody-" + secrets.token_hex(4), "wrong")
        assert answer.status_code == 200

    def done(s):
        return (value(s, "socialos_sign_ins_total", outcome="wrong")
                - value(before, "socialos_sign_ins_total", outcome="wrong")) == 3
    after = poll(app, done)
    assert done(after)
    assert value(after, "socialos_upstream_requests_total", service="socialos", outcome="Unauthorized") - value(
        before, "socialos_upstream_requests_total", service="socialos", outcome="Unauthorized") == 3
    errors = {dict(labels)["error"] for (name, labels) in after if name == "socialos_upstream_errors_total"}
    assert "Unauthorized" not in errors


def test_live_sessions_come_from_the_session_engine(start_app):
    """A fresh database: the gauges show exactly the sessions started here."""
    app = start_app()
    for user in ("demo", "demo", "admin"):
        _, answer = sign_in(app, user, user)
        assert answer.status_code == 303
    samples = parse(scrape(app))
    assert value(samples, "socialos_sessions_live") == 3
    assert value(samples, "socialos_session_users") == 2


def test_without_prometheus_client_metrics_are_no_ops_and_there_is_no_metrics_page(start_app, tmp_path):
    """The runtime never needs the extra: every reporting function is a no-op, /metrics a 404."""
    blocker = tmp_path / "prometheus_client"
    blocker.mkdir()
    (blocker / "__init__.py").write_text('raise ImportError("the metrics extra is not installed")\n')
    probe = ("from socialos_app.ops import metrics as m\n"
             "assert not m.available and m.REGISTRY is None\n"
             "m.upstream_call('socialos', 'ok', 0.1); m.sign_in('ok'); m.session_cache(True)\n"
             "m.security('csrf_refused'); m.set_live_sessions(lambda: 1)\n")
    env = {"PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr

    app = start_app(PYTHONPATH=str(tmp_path))
    assert requests.get(app.url("/metrics"), timeout=TIMEOUT).status_code == 404
    _, answer = sign_in(app)
    assert answer.status_code == 303
    assert requests.get(app.url("/login"), timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
def test_metrics_page_answers_each_format_a_scraper_asks_for(app, accept):
    answer = requests.get(app.url("/metrics"), headers={"Accept": accept} if accept else {}, timeout=TIMEOUT)
    assert answer.status_code == 200
    if accept:
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        assert answer.text.rstrip().endswith("# EOF")
    else:
        assert parse(answer.text)
    assert requests.post(app.url("/metrics"), timeout=TIMEOUT).status_code == 405


# -- the instance's state, read at scrape time -----------------------------------------------
def test_the_state_an_operator_alerts_on_is_exported(app):
    session, answer = sign_in(app)
    assert answer.status_code == 303
    assert session.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT).status_code == 200
    samples = poll(app, lambda s: value(s, "socialos_session_cache_trusted") == 1)
    assert value(samples, "socialos_database_up") == 1
    assert value(samples, "socialos_session_cache_trusted") == 1
    assert value(samples, "socialos_session_cache_entries") >= 1
    assert value(samples, "socialos_session_cache_capacity") >= value(samples, "socialos_session_cache_entries")
    threads = value(samples, "socialos_server_threads")
    assert threads >= 1 and 1 <= value(samples, "socialos_server_threads_busy") <= threads  # the scrape's own
    assert ("socialos_server_queue", ()) in samples
    assert ("socialos_session_touch_backlog", ()) in samples
    pools = {dict(labels)["server"]: v for (name, labels), v in samples.items()
             if name == "socialos_mongo_pool_in_use"}
    assert pools and all(v >= 0 for v in pools.values())
    assert all(value(samples, "socialos_mongo_pool_max", server=server) >= 1 for server in pools)
    circuits = {labels: v for (name, labels), v in samples.items() if name == "socialos_upstream_circuit_open"}
    assert circuits and set(circuits.values()) == {0}
    assert all(dict(labels)["service"] in ("socialos", "socialos-admin", "pusher") for labels in circuits)
    assert value(samples, "socialos_upstream_in_flight", service="socialos") == 0
    assert value(samples, "socialos_upstream_in_flight_limit") >= 1
    info = [dict(labels) for (name, labels) in samples if name == "socialos_build_info"]
    assert len(info) == 1 and info[0]["version"] and info[0]["python"].startswith("3.")
    text = scrape(app)
    assert "max(), never sum()" in text  # cluster-wide gauges say how to aggregate them


# -- each fault, then its log line and its metric -------------------------------------------------
@pytest.fixture(scope="module")
def fault_app(mydb, sandbox):
    with started_app(mydb, sandbox, LOG_FORMAT="json", LOG_LEVEL="INFO", UPSTREAM_READ_TIMEOUT="0.3",
                     LOGIN_MAX_FAILURES="1000") as server:
        yield server


def troubles(app, key, state):
    """The JSON log lines of ``key``'s trouble (``state`` "down") or recovery ("up")."""
    out = []
    for line in app.proc.output().splitlines():
        entry = json.loads(line)
        if entry.get("trouble") == key and entry.get("state") == state:
            assert entry["level"] == "WARNING", entry
            out.append(entry)
    return out


def wait_scrape(app, done, what, timeout=20):
    return wait_for(lambda: (lambda s: s if done(s) else None)(parse(scrape(app))), timeout, what)


def test_a_database_outage_and_its_end_are_each_one_warning_and_a_gauge(mydb, fault_app):
    app = fault_app
    session, answer = sign_in(app)
    assert answer.status_code == 303
    wait_scrape(app, lambda s: value(s, "socialos_session_cache_trusted") == 1, "the change stream")
    assert not troubles(app, "database", "down")

    mydb.stop()
    try:
        # Many requests notice; the ping, every second, notices too: one line all the same.
        for _ in range(5):
            assert session.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT).status_code == 503
        down = wait_scrape(app, lambda s: value(s, "socialos_database_up") == 0
                           and value(s, "socialos_session_cache_trusted") == 0, "database_up 0")
        assert down
        wait_for(lambda: troubles(app, "database", "down") and troubles(app, "change_stream", "down"), 15,
                 "the outage's lines")
        line = troubles(app, "database", "down")[0]["message"]
        # Said in words ("database not reachable: no server answered in time"); the class only in brackets.
        assert re.fullmatch(r"session database down: database [a-z :]+ \(\w+\)", line), line
        time.sleep(2)  # more pings fail meanwhile
    finally:
        mydb.start()
    wait_scrape(app, lambda s: value(s, "socialos_database_up") == 1
                and value(s, "socialos_session_cache_trusted") == 1, "database_up 1 and the stream again", 30)
    wait_for(lambda: troubles(app, "database", "up") and troubles(app, "change_stream", "up"), 10,
             "the recovery lines")
    assert session.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT).status_code == 200
    assert len(troubles(app, "database", "down")) == 1 and len(troubles(app, "database", "up")) == 1
    assert len(troubles(app, "change_stream", "down")) == 1 and len(troubles(app, "change_stream", "up")) == 1
    assert "answering again (after" in troubles(app, "database", "up")[0]["message"]


def test_upstream_failures_and_an_open_breaker_are_each_one_warning_and_a_gauge(sandbox, fault_app):
    app = fault_app
    session, answer = sign_in(app)
    assert answer.status_code == 303
    before = parse(scrape(app))
    sandbox.fault(path_prefix="/api/user", delay=1.5, count=5)  # past the read timeout: no answer
    statuses = [session.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT).status_code
                for _ in range(6)]
    assert all(status >= 500 for status in statuses), statuses
    sandbox.clear_faults()

    def is_open(s):
        return any(v == 1 and dict(labels)["service"] == "socialos" for (name, labels), v in s.items()
                   if name == "socialos_upstream_circuit_open")
    opened = parse(scrape(app))
    assert is_open(opened)
    assert value(opened, "socialos_upstream_errors_total", service="socialos", error="timeout") - value(
        before, "socialos_upstream_errors_total", service="socialos", error="timeout") == 5
    assert value(opened, "socialos_upstream_errors_total", service="socialos", error="circuit_open") > value(
        before, "socialos_upstream_errors_total", service="socialos", error="circuit_open")
    failing = troubles(app, "upstream socialos", "down")
    breaker = [e for e in app.proc.output().splitlines() if '"circuit breaker of socialos' in e and " open:" in e]
    assert len(failing) == 1 and "upstream socialos failing: no answer in time" in failing[0]["message"]
    assert len(breaker) == 1, breaker

    # After the breaker's pause one probe goes through, answers, and closes it.
    wait_for(lambda: session.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT).status_code == 200,
             15, "the dashboard once the breaker lets a probe through")
    assert not is_open(parse(scrape(app)))
    assert len(troubles(app, "upstream socialos", "up")) == 1
    closed = [e for e in app.proc.output().splitlines() if '"circuit breaker of socialos' in e and " closed:" in e]
    assert len(closed) == 1, closed
