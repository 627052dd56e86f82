"""The real processes a bench run talks to, each on an ephemeral loopback port.

SecantusDB (the database, its own process), the sandboxes (plain HTTP for the
app's sign-in; HTTPS for the client figures, see ``tls``) and the app itself
(``python -m bench.serve``: ``app.py``'s start plus the bench pages). Output
of each goes to a log file under a temporary directory, shown on failure.
"""

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
PUSHER_APP = {"PUSHER_APP_ID": "demo", "PUSHER_KEY": "demo-key", "PUSHER_SECRET": "demo-secret"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check, timeout, what):
    """Poll ``check`` until it is truthy; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - a service coming up
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s: {last!r}")


class Proc:
    """A child process (its own process group) with its output in a log file."""

    def __init__(self, name, args, env=None, logdir=None):
        self.name, self.args, self.env = name, args, env
        self.log_path = Path(logdir or tempfile.gettempdir()) / f"{name}.log"
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited (code {self.proc.returncode}):\n{self.output()[-3000:]}")
        return True

    def cpu_seconds(self):
        """User + system CPU time the process has used so far (Linux /proc), else 0."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def output(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Database:
    """SecantusDB on its own port, data in a temporary directory."""

    def __init__(self, logdir, name="secantusdb"):
        self.port = free_port()
        self.path = tempfile.mkdtemp(prefix=f"{name}-", dir=logdir)
        self.proc = Proc(name, [str(BIN / "secantusd-py"), "--host", "127.0.0.1",
                                        "--port", str(self.port), "--storage-path", self.path,
                                        "--log-level", "WARNING"], logdir=logdir)

    def uri(self, db):
        return f"mongodb://127.0.0.1:{self.port}/{db}?directConnection=true"

    def start(self):
        self.proc.start()
        wait_for(lambda: self.proc.alive() and port_open(self.port), 60, "SecantusDB")
        return self

    def stop(self):
        self.proc.stop()
        shutil.rmtree(self.path, ignore_errors=True)


class Sandbox:
    """``python -m socialos_app.sandbox``: the app's upstreams (plain HTTP) for sign-in."""

    def __init__(self, logdir):
        self.api_port, self.pusher_port = free_port(), free_port()
        self.proc = Proc("sandbox", [PYTHON, "-m", "socialos_app.sandbox", "--host", "127.0.0.1",
                                     "--api-port", str(self.api_port),
                                     "--pusher-port", str(self.pusher_port)],
                         env={**os.environ, **PUSHER_APP}, logdir=logdir)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.api_port}"

    def start(self):
        self.proc.start()
        wait_for(lambda: self.proc.alive() and port_open(self.api_port) and port_open(self.pusher_port),
                 30, "sandbox")
        return self

    def stop(self):
        self.proc.stop()


class BenchApp:
    """``python -m bench.serve``: the app as ``app.py`` starts it, plus ``/_bench/...`` pages.

    Production mode (MONGODB_URI set): the database and the sandbox are the
    separate processes above. ``secure_key`` is kept here so ``fill`` can make
    sessions the app opens.
    """

    def __init__(self, db, sandbox, logdir, database="bench", name="app"):
        self.db = db
        self.name = name
        self.logdir = logdir
        self.port = free_port()
        self.database = database
        self.mongodb_uri = db.uri(database)
        self.secure_key_hex = secrets.token_hex(32)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PUSHER_", "SOCIALOS_", "SESSION_", "SECURE_KEY", "MONGODB_"))}
        env.update({
            "MONGODB_URI": self.mongodb_uri,
            "SECURE_KEY": self.secure_key_hex,
            "SOCIALOS_API_URL": f"{sandbox.base}/api",
            "SOCIALOS_ADMIN_URL": f"{sandbox.base}/admin",
            "SOCIALOS_ADMIN_USER": "admin",
            "SOCIALOS_ADMIN_PASSWORD": "admin",
            "PUSHER_HOST": "127.0.0.1",
            "PUSHER_PORT": str(sandbox.pusher_port),
            "PUSHER_SCHEME": "http",
            "COOKIE_SECURE": "0",
            # One log line per request would be the same cost on every page: leave it out
            # so the ratios show the session layer, not the logger.
            "LOG_LEVEL": "WARNING",
            **PUSHER_APP,
        })
        self.env = env
        self.proc = None

    @property
    def secure_key(self):
        return bytes.fromhex(self.secure_key_hex)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, count_db=False):
        """Start (or restart) the app; ``count_db`` registers the command counter."""
        env = {**self.env, "BENCH_COUNT_DB": "1" if count_db else "0"}
        self.proc = Proc(self.name, [PYTHON, "-m", "bench.serve", "--host", "127.0.0.1",
                                 "--port", str(self.port)], env=env, logdir=self.logdir).start()
        wait_for(lambda: self.proc.alive()
                 and requests.get(self.url("/healthz"), timeout=2).status_code == 200, 60, self.name)
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()
