"""Real processes for the tests: SecantusDB, the sandboxes and the app,
each on an ephemeral loopback port, started and stopped explicitly."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout=20.0, what="service"):
    """Poll ``check`` until it returns truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - polling a service that is coming up
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s: {last!r}")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Proc:
    """A child process with its output in a log file (read it when a test fails)."""

    def __init__(self, args, env=None, name="proc"):
        self.args, self.env, self.name = args, env, name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def output(self):
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


class Database:
    """SecantusDB on its own port and data directory; stop() and start() keep the data."""

    def __init__(self, path=None, test_commands=True):
        self.port = free_port()
        self.path = path or tempfile.mkdtemp(prefix="secantus-")
        self.test_commands = test_commands
        self.proc = None

    @property
    def uri(self):
        return f"mongodb://127.0.0.1:{self.port}/socialos_test?directConnection=true"

    def uri_for(self, db):
        return f"mongodb://127.0.0.1:{self.port}/{db}?directConnection=true"

    def start(self):
        args = [str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", self.path, "--log-level", "WARNING"]
        if self.test_commands:
            args.append("--enable-test-commands")
        self.proc = Proc(args, name="secantus").start()
        wait_for(lambda: port_open(self.port), 30, "SecantusDB")
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def client(self):
        from pymongo import MongoClient
        return MongoClient(self.uri, serverSelectionTimeoutMS=3000)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.path, ignore_errors=True)


class Sandbox:
    """``python -m socialos_app.sandbox``: the Social OS API and Pusher sandboxes."""

    PUSHER = {"PUSHER_APP_ID": "demo", "PUSHER_KEY": "demo-key", "PUSHER_SECRET": "demo-secret"}

    def __init__(self):
        self.api_port = free_port()
        self.pusher_port = free_port()
        self.proc = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_url(self):
        return f"{self.base}/api"

    @property
    def admin_url(self):
        return f"{self.base}/admin"

    @property
    def pusher_url(self):
        return f"http://127.0.0.1:{self.pusher_port}"

    def start(self):
        env = {**os.environ, **self.PUSHER}
        args = [PYTHON, "-m", "socialos_app.sandbox", "--host", "127.0.0.1",
                "--api-port", str(self.api_port), "--pusher-port", str(self.pusher_port)]
        self.proc = Proc(args, env=env, name="sandbox").start()
        wait_for(lambda: port_open(self.api_port) and port_open(self.pusher_port), 20, "sandbox")
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    # -- sandbox-only controls -------------------------------------------
    def stats(self, which="api"):
        url = self.base if which == "api" else self.pusher_url
        return requests.get(f"{url}/_sandbox/stats", timeout=5).json()

    def fault(self, which="api", **fault):
        url = self.base if which == "api" else self.pusher_url
        requests.post(f"{url}/_sandbox/faults", json=fault, timeout=5).raise_for_status()

    def clear_faults(self):
        for url in (self.base, self.pusher_url):
            requests.delete(f"{url}/_sandbox/faults", timeout=5)


def app_env(db, sandbox, **overrides):
    """The environment of an app process in production mode against the test services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "SOCIALOS_", "SESSION_"))}
    env.update({
        "MONGODB_URI": db.uri_for("app_" + secrets.token_hex(4)),
        "SECURE_KEY": secrets.token_hex(32),
        "SOCIALOS_API_URL": sandbox.api_url,
        "SOCIALOS_ADMIN_URL": sandbox.admin_url,
        "SOCIALOS_ADMIN_USER": "admin",
        "SOCIALOS_ADMIN_PASSWORD": "admin",
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": str(sandbox.pusher_port),
        "PUSHER_SCHEME": "http",
        "COOKIE_SECURE": "0",
        "LOG_LEVEL": "WARNING",
        **Sandbox.PUSHER,
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


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
        self.proc = Proc(args, env=self.env, name="app").start()
        if wait:
            def ready():
                if self.proc.proc.poll() is not None:
                    raise RuntimeError("app exited:\n" + self.proc.output())
                return requests.get(self.url("/healthz"), timeout=2).status_code in (200, 503)
            wait_for(ready, 30, "app")
        return self

    def stop(self, sig=signal.SIGTERM):
        return self.proc.stop(sig) if self.proc else None
