"""Embedded mode (`python app.py` with no MONGODB_URI) as a newcomer runs it,
and `--check-config` as an operator runs it."""

import hashlib
import os
import signal
import socket
import subprocess

import pytest
import requests

from conftest import sign_in
from socialos_app.cli import EXIT_PORT_TAKEN
from support import PYTHON, ROOT, App, free_port, port_open, wait_for

SCRUB = ("MONGODB_", "SECURE_KEY", "SOCIALOS_", "PUSHER_", "SESSION_", "COOKIE_", "SANDBOX_",
         "EMBEDDED_", "DATA_DIR", "HOST", "PORT")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def embedded(tmp_path):
    """An embedded-mode app on free ports; its children are checked gone at the end."""
    ports = {"SANDBOX_API_PORT": free_port(), "SANDBOX_PUSHER_PORT": free_port(),
             "EMBEDDED_DB_PORT": free_port()}
    env = clean_env(DATA_DIR=tmp_path / "data", LOG_LEVEL="WARNING", **ports)
    port = free_port()
    started = []

    def start(*args):
        app = App(env, port=port, args=args).start()
        started.append(app)
        wait_for(lambda: requests.get(app.url("/healthz"), timeout=2).status_code == 200, 30,
                 "embedded app healthy")
        # The banner is the last thing start-up does: a person reads it as "ready".
        wait_for(lambda: f":{port}" in app.proc.output() and "listening" in app.proc.output(), 10, "the banner")
        return app

    start.ports = ports
    start.data_dir = tmp_path / "data"
    yield start
    for app in started:
        if app.proc.proc.poll() is None:
            app.stop()
    if any(port_open(p) for p in ports.values()):
        # A test failed half-way: take down what our own app process started.
        for app in started:
            try:
                os.killpg(app.proc.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_embedded_mode_runs_the_whole_thing_on_one_command(embedded):
    app = embedded()
    out = app.proc.output()
    assert f"http://127.0.0.1:{app.port}" in out
    assert "demo / demo" in out
    for port in embedded.ports.values():
        assert port_open(port)

    health = requests.get(app.url("/healthz"), timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"

    s, answer = sign_in(app, "demo", "demo")
    assert answer.status_code == 303
    assert "session" in s.cookies  # not __Host-: plain HTTP on loopback works out of the box
    dashboard = s.get(app.url("/dashboard"), timeout=10)
    assert dashboard.status_code == 200 and "demo" in dashboard.text

    presence = s.get(app.url("/presence"), timeout=10)
    assert presence.status_code == 200
    for name in ("Ada Lovelace", "Grace Hopper", "Linus Torvalds"):
        assert name in presence.text
    assert "presence-lobby" in presence.text


def test_embedded_key_is_private_and_kept_so_sessions_survive_a_restart(embedded):
    app = embedded()
    key_file = embedded.data_dir / "secure_key"
    assert key_file.exists()
    assert (key_file.stat().st_mode & 0o777) == 0o600
    fingerprint = hashlib.sha256(key_file.read_bytes()).hexdigest()

    s, answer = sign_in(app, "admin", "admin")
    assert answer.status_code == 303
    assert s.get(app.url("/admin"), allow_redirects=False, timeout=10).status_code == 200

    # SIGTERM: a clean exit, and the database and sandboxes go with it.
    assert app.stop(signal.SIGTERM) == 0
    wait_for(lambda: not any(port_open(p) for p in embedded.ports.values()), 15, "children gone")
    assert not port_open(app.port)

    again = embedded()
    assert hashlib.sha256(key_file.read_bytes()).hexdigest() == fingerprint  # reused, not replaced
    assert (key_file.stat().st_mode & 0o777) == 0o600
    page = s.get(again.url("/admin"), allow_redirects=False, timeout=10)
    assert page.status_code == 200, "the session did not survive a restart in embedded mode"

    assert again.stop(signal.SIGTERM) == 0
    wait_for(lambda: not any(port_open(p) for p in embedded.ports.values()), 15, "children gone")


# -- ports: every one checked before anything starts ----------------------------------------
@pytest.mark.parametrize("setting", ["PORT", "SANDBOX_API_PORT", "SANDBOX_PUSHER_PORT", "EMBEDDED_DB_PORT"])
def test_a_taken_port_stops_the_start_with_one_line_naming_it(tmp_path, setting):
    ports = {"PORT": free_port(), "SANDBOX_API_PORT": free_port(), "SANDBOX_PUSHER_PORT": free_port(),
             "EMBEDDED_DB_PORT": free_port()}
    data = tmp_path / "data"
    with socket.socket() as squatter:  # someone else's server (another SecantusDB, another app...)
        squatter.bind(("127.0.0.1", ports[setting]))
        squatter.listen()
        result = subprocess.run([PYTHON, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                                env=clean_env(DATA_DIR=data, **ports))
    assert result.returncode == EXIT_PORT_TAKEN == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{setting}={ports[setting]}" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in result.stderr and "listening" not in result.stdout
    # Nothing was started: no data directory, none of the other ports taken, no child left behind.
    assert not data.exists()
    assert not any(port_open(port) for name, port in ports.items() if name != setting)
    assert not children_of_data_dir(data)


def children_of_data_dir(data):
    """Processes whose command line names this DATA_DIR (SecantusDB keeps its data there)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if str(data).encode() in cmdline:
                found.append(int(pid))
    return found


def test_embedded_children_do_not_outlive_a_killed_app(embedded):
    app = embedded()
    data = embedded.data_dir
    assert children_of_data_dir(data), "SecantusDB should be running with its data under DATA_DIR"
    os.kill(app.proc.proc.pid, signal.SIGKILL)  # no chance to clean up: the children must notice
    app.proc.proc.wait(10)
    wait_for(lambda: not any(port_open(p) for p in embedded.ports.values()), 15, "children gone")
    wait_for(lambda: not children_of_data_dir(data), 15, "no orphan")


def test_embedded_mode_on_any_address_sets_cookies_plain_http_can_keep(embedded):
    app = embedded("--host", "0.0.0.0")
    assert f"http://0.0.0.0:{app.port}" in app.proc.output()
    s, answer = sign_in(app, "demo", "demo")
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("session=") and "secure" not in cookie.lower()
    assert s.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200
