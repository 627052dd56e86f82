"""Real processes for the tests: SecantusDB, the sandboxes and the app,
each on an ephemeral loopback port, started and stopped explicitly."""

import contextlib
import secrets
import signal
import sys
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from socialos_dev.sandbox import processes
from socialos_dev.sandbox.processes import Proc, free_port, port_open, wait_for

__all__ = ["App", "Database", "Sandbox", "Proc", "app_env", "free_port", "port_open", "wait_for",
           "read_answer", "LOGS", "SECRETS", "remember_secret"]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Database(processes.Database):
    """SecantusDB with test commands (failpoints) on, and a pymongo client at hand."""

    def __init__(self, path=None, test_commands=True):
        super().__init__(path=path, test_commands=test_commands)

    @property
    def uri(self):
        return self.uri_for("socialos_test")

    def client(self):
        from pymongo import MongoClient
        return MongoClient(self.uri, serverSelectionTimeoutMS=3000)

    @contextlib.contextmanager
    def failpoint(self):
        """SecantusDB's ``failCommand`` failpoint: yields ``arm(mode, **data)``; always off on exit."""
        client = self.client()

        def arm(mode, **data):
            client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)

        try:
            yield arm
        finally:
            client.admin.command("configureFailPoint", "failCommand", mode="off")
            client.close()


class Sandbox(processes.Sandbox):
    """The sandboxes, with their sandbox-only control routes."""

    def stats(self, which="api"):
        url = self.base if which == "api" else self.pusher_url
        return requests.get(f"{url}/_sandbox/stats", timeout=5).json()

    def fault(self, which="api", **fault):
        url = self.base if which == "api" else self.pusher_url
        requests.post(f"{url}/_sandbox/faults", json=fault, timeout=5).raise_for_status()

    def clear_faults(self):
        for url in (self.base, self.pusher_url):
            requests.delete(f"{url}/_sandbox/faults", timeout=5)


def read_answer(conn, wait, done=None):
    """The bytes a raw socket answers with, until the peer closes or resets, ``wait``
    seconds pass, or ``done(bytes so far)`` is true."""
    data = bytearray()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            chunk = conn.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data.extend(chunk)
        if done is not None and done(data):
            break
    return bytes(data)


def app_env(db, sandbox, **overrides):
    """Production-mode settings against the test services: a fresh database name and key."""
    # Stopping test apps at once: only tests of the drain itself ask for one.
    overrides.setdefault("SHUTDOWN_DRAIN", "0")
    return processes.app_env(db.uri_for("app_" + secrets.token_hex(4)), sandbox, secrets.token_hex(32),
                             **overrides)


# What the run's app logs must never hold: filled as apps start and tests sign in,
# checked when the run ends (conftest.py).
LOGS = []       # log files of every app process started
SECRETS = set() # SECURE_KEYs, session tokens, CSRF tokens and passwords the tests used


def remember_secret(value, minimum=8):
    """Add a value the logs must never contain (short or everyday words are skipped)."""
    if isinstance(value, str) and len(value) >= minimum:
        SECRETS.add(value)


class App:
    """``python app.py`` on an ephemeral port; ``url(path)`` builds addresses."""

    def __init__(self, env, port=None, args=()):
        self.port = port or free_port()
        self.env = env
        self.args = list(args)
        self.proc = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path="/"):
        return self.base + path

    def start(self, wait=True):
        args = [PYTHON, "app.py", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = Proc("app", args, env=self.env).start()
        LOGS.append(self.proc.log_path)
        for name in ("SECURE_KEY", "SOCIALOS_ADMIN_PASSWORD", "PUSHER_SECRET"):
            remember_secret(self.env.get(name))
        if wait:
            def ready():
                return self.proc.alive() and requests.get(self.url("/healthz"), timeout=2).status_code in (200, 503)
            wait_for(ready, 30, "app")
        return self

    def stop(self, sig=signal.SIGTERM):
        return self.proc.stop(sig) if self.proc else None

    def __enter__(self):
        return self if self.proc else self.start()

    def __exit__(self, *exc_info):
        self.stop()


def started_app(db, sandbox, **overrides):
    """An app process against the test services with settings of the caller's own; use with ``with``."""
    return App(app_env(db, sandbox, **overrides)).start()


class FromAddress(HTTPAdapter):
    """Connections from one loopback source address (127.0.0.x), so the server sees a client of its own."""

    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)
