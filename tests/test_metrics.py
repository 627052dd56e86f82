"""/metrics end to end: a real ``app.py`` is scraped over HTTP and the answer is
read with ``prometheus_client``'s own parser.

Counts are compared as differences between two scrapes. The app counts a
request when it ends, which may be just after the client has its answer, so
each check polls /metrics (with a deadline) until the counts arrive and then
requires them to be exact.
"""

import re
import secrets
import subprocess
import sys
import time
from collections import Counter

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import sign_in
from support import ROOT

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


def test_security_events_are_counted_by_name(app):
    session, answer = sign_in(app)
    assert answer.status_code == 303
    before = parse(scrape(app))
    refused = session.post(app.url("/devices"), data={"everywhere": "1"}, allow_redirects=False,
                           timeout=TIMEOUT)  # no CSRF token
    assert refused.status_code == 403

    def counted(s):
        return (value(s, "socialos_security_events_total", event="csrf_refused")
                - value(before, "socialos_security_events_total", event="csrf_refused")) == 1
    assert counted(poll(app, counted))


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
