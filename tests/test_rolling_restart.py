"""A rolling restart behind the project's nginx template fails no request.

Debian's nginx, rendered from deploy/nginx/default.conf.template as in
test_nginx.py, in front of two ``python app.py`` instances on one database
(one `server` line each, as the template says for plain nginx + N
processes). Signed-in users, each from their own address, run a closed loop
of POSTs (/pusher/auth, with their CSRF token) and GETs (/dashboard) while
the instances are restarted one at a time as an orchestrator does: SIGTERM,
wait for the exit, start again, wait for its /readyz, and on to the next at
once (the hard case: with nginx's default fail_timeout the first one would
still be out of rotation). Every answer must be a 2xx/3xx; no
connection may fail. What makes it hold: the drain (SHUTDOWN_DRAIN, answers
with `Connection: close`, queued connections served before the socket
closes) and the template's passive checks (max_fails=1 fail_timeout=1s,
upstream keep-alive shorter than the drain, retries only before a byte was
sent).
"""

import json
import re
import threading
import time

import pytest
import requests
from test_nginx import Nginx

from conftest import csrf_from
from support import App, FromAddress, app_env, started_app, wait_for

DRAIN = 3.0  # the shipped default of SHUTDOWN_DRAIN
USERS = 6


class User(threading.Thread):
    """One signed-in browser in a closed loop: POST, GET, POST, ... until told to stop."""

    def __init__(self, proxy, number):
        super().__init__(name=f"user-{number}", daemon=True)
        self.proxy = proxy
        self.session = requests.Session()
        self.session.mount("http://", FromAddress(f"127.0.30.{number + 1}"))
        self.stop = threading.Event()
        self.answers = []  # (monotonic time, what, status or error)
        page = self.session.get(proxy.url("/login"), timeout=10)
        answer = self.session.post(proxy.url("/login"), allow_redirects=False, timeout=10,
                                   data={"username": "demo", "password": "demo", "csrf_token": csrf_from(page.text)})
        assert answer.status_code == 303, answer.text
        self.csrf = csrf_from(self.session.get(proxy.url("/dashboard"), timeout=10).text)

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 2:
                what, call = "POST /pusher/auth", lambda n=n: self.session.post(
                    self.proxy.url("/pusher/auth"), data={"socket_id": f"{n}.{n}", "channel_name": "private-user-demo"},
                    headers={"X-CSRF-Token": self.csrf}, allow_redirects=False, timeout=15)
            else:
                what, call = "GET /dashboard", lambda: self.session.get(
                    self.proxy.url("/dashboard"), allow_redirects=False, timeout=15)
            try:
                status = call().status_code
            except requests.RequestException as exc:
                status = f"{type(exc).__name__}: {exc}"
            self.answers.append((time.monotonic(), what, status))
            time.sleep(0.08)  # ~10 requests a second: under the template's 20 r/s per address


def two_upstreams(proxy, first, second):
    """The rendered template with one `server` line per instance, as for plain nginx + N processes."""
    path = proxy.dir / "conf.d" / "socialos.conf"
    conf = path.read_text()
    line = re.search(rf"^\s*server 127\.0\.0\.1:{first.port} (.*);$", conf, re.M)
    assert line, "the template's upstream server line"
    conf = conf.replace(line.group(0), f"{line.group(0)}\n    server 127.0.0.1:{second.port} {line.group(1)};")
    path.write_text(conf)


def ready(app):
    return app.proc.alive() and requests.get(app.url("/readyz"), timeout=2).status_code == 200


def test_restarting_instances_one_at_a_time_fails_no_request(db, sandbox):
    env = app_env(db, sandbox, TRUSTED_PROXY="1", SHUTDOWN_DRAIN=str(DRAIN), LOG_LEVEL="INFO")
    apps = [App(dict(env)), App(dict(env))]  # one database: the same environment
    proxy, users = None, []
    try:
        for app in apps:
            app.start()
        for app in apps:
            wait_for(lambda app=app: ready(app), 30, "app ready")
        proxy = Nginx(f"127.0.0.1:{apps[0].port}")
        two_upstreams(proxy, *apps)
        checked = proxy.check()
        assert checked.returncode == 0, checked.stderr
        proxy.start()
        users = [User(proxy, i) for i in range(USERS)]
        for user in users:
            user.start()
        time.sleep(1.0)  # both instances in use before the first restart

        restarts, stop_logs = [], []
        for app in apps:
            signalled = time.monotonic()
            code = app.stop()  # SIGTERM, then wait for the exit
            stopped = time.monotonic()
            stop_logs.append(app.proc.output())
            assert code == 0, stop_logs[-1][-2000:]
            app.start(wait=False)
            wait_for(lambda app=app: ready(app), 30, "restarted app ready")
            restarts.append((signalled, stopped - signalled, time.monotonic() - stopped))
        # The last one restarted is back in rotation within a second or two (fail_timeout=1s).
        seen_from = len(proxy.access_log.read_text().splitlines())

        def both_in_use():
            lines = proxy.access_log.read_text().splitlines()[seen_from:]
            return {f"127.0.0.1:{app.port}" for app in apps} <= {json.loads(line)["upstream"] for line in lines}
        back = time.monotonic()
        wait_for(both_in_use, 5, "both instances in nginx's rotation")
        back = time.monotonic() - back
        for user in users:
            user.stop.set()
        for user in users:
            user.join(20)

        answers = [a for user in users for a in user.answers]
        failed = [(round(t - restarts[0][0], 3), what, status) for t, what, status in answers
                  if not (isinstance(status, int) and 200 <= status < 400)]
        assert not failed, f"{len(failed)} of {len(answers)} failed: {failed[:10]}"
        # A real load through every restart, POSTs included.
        posts = [a for a in answers if a[1].startswith("POST")]
        assert len(answers) >= 100 and len(posts) >= 50, len(answers)
        for signalled, took, _start in restarts:
            during = [a for a in answers if signalled <= a[0] <= signalled + took]
            assert len(during) >= 10, f"too little load during a restart: {len(during)}"
            # The instance drained for SHUTDOWN_DRAIN before it stopped, and stopped soon after.
            assert DRAIN <= took < DRAIN + 8, took
        # Each stop said how long it drained, in its last line.
        for text in stop_logs:
            assert re.search(r"stopped: drained 3\.\d s.*exit 0\n$", text), text[-1500:]
        print(f"restarts (signalled, stop took, start took): {restarts}; both in use again after {back:.2f} s")
    finally:
        for user in users:
            user.stop.set()
        if proxy:
            proxy.stop()
        for app in apps:
            app.stop()


@pytest.fixture
def draining_app(db, sandbox):
    with started_app(db, sandbox, SHUTDOWN_DRAIN="2") as app:
        yield app


def test_a_stopping_instance_is_not_ready_at_once_and_serves_until_the_drain_ends(draining_app):
    app = draining_app
    wait_for(lambda: ready(app), 30, "app ready")
    keep = requests.Session()
    assert keep.get(app.url("/login"), timeout=5).headers.get("Connection", "").lower() != "close"
    signalled = time.monotonic()
    app.proc.proc.send_signal(15)

    def not_ready():
        answer = requests.get(app.url("/readyz"), timeout=2)
        return answer.status_code == 503 and answer.json()["status"] == "stopping"
    wait_for(not_ready, 1, "/readyz 503 after SIGTERM")
    assert time.monotonic() - signalled < 1
    # Still serving, each answer closing its connection; /livez too (the process is fine).
    answer = keep.get(app.url("/login"), timeout=5)
    assert answer.status_code == 200 and answer.headers.get("Connection", "").lower() == "close"
    assert requests.get(app.url("/livez"), timeout=5).status_code == 200
    app.proc.proc.wait(10)
    took = time.monotonic() - signalled
    assert app.proc.proc.returncode == 0
    assert 2.0 <= took < 4.5, took
