"""Embedded mode (`python app.py` with no MONGODB_URI) as a newcomer runs it,
and `--check-config` as an operator runs it."""

import hashlib
import os
import secrets
import signal
import subprocess

import pytest
import requests

from conftest import sign_in
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

    def start():
        app = App(env, port=port).start()
        started.append(app)
        wait_for(lambda: requests.get(app.url("/healthz"), timeout=2).status_code == 200, 30,
                 "embedded app healthy")
        # The banner is the last thing start-up does: a person reads it as "ready".
        wait_for(lambda: f"http://127.0.0.1:{port}" in app.proc.output(), 10, "the banner")
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


# -- --check-config ------------------------------------------------------------------
SECRETS = {
    "SECURE_KEY": secrets.token_hex(32),
    "SOCIALOS_ADMIN_PASSWORD": "adm-" + secrets.token_hex(8),
    "PUSHER_SECRET": "psh-" + secrets.token_hex(8),
    "MONGODB_URI": f"mongodb://ops:db-{secrets.token_hex(8)}@127.0.0.1:1/prod",
}


def production(**overrides):
    env = clean_env(**SECRETS, SOCIALOS_API_URL="https://api.example.test/api",
                    SOCIALOS_ADMIN_URL="https://api.example.test/admin", SOCIALOS_ADMIN_USER="ops",
                    PUSHER_APP_ID="123", PUSHER_KEY="public-key")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def check_config(env):
    return subprocess.run([PYTHON, "app.py", "--check-config"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("override,name", [
    ({"SECURE_KEY": secrets.token_hex(8)}, "SECURE_KEY"),
    ({"SECURE_KEY": "00" * 32}, "SECURE_KEY"),
    ({"SOCIALOS_API_URL": None}, "SOCIALOS_API_URL"),
    ({"PUSHER_SECRET": None}, "PUSHER_SECRET"),
    ({"SESSION_TTL": "soon"}, "SESSION_TTL"),
], ids=["short-key", "weak-key", "no-api-url", "no-pusher-secret", "bad-ttl"])
def test_check_config_refuses_a_bad_setting_with_one_line_naming_it(override, name):
    result = check_config(production(**override))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert "Traceback" not in result.stderr
    for value in SECRETS.values():
        assert value not in result.stderr + result.stdout


def test_check_config_prints_the_settings_with_secrets_masked():
    result = check_config(production(SESSION_TTL="1800"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "session_ttl = 1800" in out
    assert "api_url = https://api.example.test/api" in out
    assert "admin_user = ops" in out
    assert "secure_key = ****" in out
    for value in SECRETS.values():
        assert value not in out and value not in result.stderr
    assert SECRETS["MONGODB_URI"].split("@")[0].split(":")[-1] not in out  # not even the password part
