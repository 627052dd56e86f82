"""Operating the app: several instances on one database, graceful stop, request logs."""

import re
import threading
import time

import requests

from conftest import csrf_from, sign_in
from support import App, app_env, started_app, wait_for


def test_two_instances_share_sessions_and_sign_out_is_seen_at_once(db, sandbox):
    env = app_env(db, sandbox)
    a, b = App(env).start(), App(env).start()
    try:
        browser, answer = sign_in(a)
        assert answer.status_code == 303
        cookie = browser.cookies.get("session")

        # Signed in on A, the same cookie is good on B.
        on_b = requests.get(b.url("/dashboard"), cookies={"session": cookie}, allow_redirects=False)
        assert on_b.status_code == 200 and "Demo User" in on_b.text

        # Signing out on B ends the session on A within moments (A's cache hears of it
        # through the change stream; the benchmark measures the p99).
        token = csrf_from(on_b.text)
        out = requests.post(b.url("/logout"), data={"csrf_token": token},
                            cookies={"session": cookie}, allow_redirects=False)
        assert out.status_code == 303

        def refused_on_a():
            again = requests.get(a.url("/dashboard"), cookies={"session": cookie}, allow_redirects=False)
            return again.status_code == 303 and again.headers["Location"].startswith("/login?next=%2Fdashboard")
        wait_for(refused_on_a, 2, "the sign-out on B refused on A")
    finally:
        a.stop()
        b.stop()


def test_sigterm_lets_a_slow_request_finish_and_exits_zero(db, sandbox):
    app = started_app(db, sandbox)
    browser, _ = sign_in(app)
    before = sandbox.stats()["requests"]
    sandbox.fault(path_prefix="/api/user", delay=1.5, count=1)
    result = {}

    def slow():
        result["answer"] = browser.get(app.url("/dashboard"), timeout=20)

    worker = threading.Thread(target=slow)
    worker.start()
    # Wait until the app's upstream call is in flight, then ask it to stop.
    wait_for(lambda: sandbox.stats()["requests"] > before, 10, "the slow upstream call")
    started = time.monotonic()
    code = app.stop()
    worker.join(20)
    assert result["answer"].status_code == 200 and "Demo User" in result["answer"].text
    assert code == 0
    assert time.monotonic() - started < 10


def test_request_log_has_one_line_per_request_and_no_secrets(db, sandbox):
    with started_app(db, sandbox, LOG_LEVEL="INFO") as app:
        browser, _ = sign_in(app, "demo", "demo")
        browser.get(app.url("/dashboard?q=secret-search-term"))
        cookie = browser.cookies.get("session")
    out = app.proc.output()
    lines = [line for line in out.splitlines() if " GET /dashboard " in line]
    assert len(lines) == 1
    assert " 200 " in lines[0] and re.search(r" [0-9.]+ms .*sid=[0-9a-f]{8}", lines[0])
    assert "sid=-" not in lines[0]
    for secret in (cookie, app.env["SECURE_KEY"], "password=demo", "secret-search-term"):
        assert secret not in out
    assert "POST /login 303" in out
