"""The real processes a bench run talks to, each on an ephemeral loopback port.

SecantusDB (the database, its own process), the sandboxes (plain HTTP for the
app's sign-in; HTTPS for the client figures, see ``tls``) and the app itself
(``python -m bench.serve``: ``app.py``'s start plus the bench pages; two of
them may share one database, as two instances behind a load balancer do). Output
of each goes to a log file under a temporary directory, shown on failure.
"""

import secrets
import sys
import tempfile
from pathlib import Path

import requests

from socialos_dev.sandbox import processes
from socialos_dev.sandbox.processes import DEMO_PUSHER as PUSHER_APP  # noqa: F401 - re-exported
from socialos_dev.sandbox.processes import free_port, port_open, wait_for  # noqa: F401 - re-exported

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Proc(processes.Proc):
    """A child process logging to ``logdir/NAME.log``."""

    def __init__(self, name, args, env=None, logdir=None):
        super().__init__(name, args, env=env, log_path=Path(logdir) / f"{name}.log" if logdir else None)


class Database(processes.Database):
    """SecantusDB on its own port, data in a temporary directory under ``logdir``.

    By default it presents itself as a single-node replica set (change streams
    work); ``standalone=True`` starts it as a standalone server, where a change
    stream can't open: the session cache's fallback, as with a standalone MongoDB.
    """

    def __init__(self, logdir, name="secantusdb", standalone=False):
        super().__init__(path=tempfile.mkdtemp(prefix=f"{name}-", dir=logdir),
                         log_path=Path(logdir) / f"{name}.log")
        self.standalone = standalone

    def start(self, timeout=60):
        if not self.standalone:
            return super().start(timeout)
        args = [*processes.secantus_command(), "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", self.path, "--log-level", "WARNING", "--standalone"]
        self.proc = processes.Proc("secantusdb", args, log_path=self.log_path).start()
        wait_for(lambda: self.proc.listens_on(self.port), timeout, "SecantusDB (standalone)")
        return self

    def uri(self, db):
        return self.uri_for(db)


class Sandbox(processes.Sandbox):
    """``python -m socialos_dev.sandbox``: the app's upstreams (plain HTTP) for sign-in."""

    def __init__(self, logdir):
        super().__init__(log_path=Path(logdir) / "sandbox.log")


class BenchApp:
    """``python -m bench.serve``: the app as ``app.py`` starts it, plus ``/_bench/...`` pages.

    Production mode (MONGODB_URI set): the database and the sandbox are the
    separate processes above. ``secure_key`` is kept here so ``fill`` can make
    sessions the app opens; a second instance of the same app is made with
    ``peer()`` (same database, same SECURE_KEY, its own port and process).
    """

    def __init__(self, db, sandbox, logdir, database="bench", name="app", secure_key_hex=None):
        self.db = db
        self.sandbox = sandbox
        self.name = name
        self.logdir = logdir
        self.port = free_port()
        self.database = database
        self.mongodb_uri = db.uri(database)
        self.secure_key_hex = secure_key_hex or secrets.token_hex(32)
        # LOG_LEVEL INFO, as in production: the request log line is part of what every app page
        # costs against the floor (written to this process's log file).
        env = processes.app_env(self.mongodb_uri, sandbox, self.secure_key_hex, LOG_LEVEL="INFO")
        self.env = env
        self.proc = None
        self.cache_size = None

    @property
    def secure_key(self):
        return bytes.fromhex(self.secure_key_hex)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def peer(self, name):
        """Another instance of this app: same database and SECURE_KEY, its own process."""
        return BenchApp(self.db, self.sandbox, self.logdir, self.database, name, self.secure_key_hex)

    def launch(self, count_db=False, cache_size=None):
        """Start (or restart) the app without waiting; ``count_db`` registers the command
        counter; ``cache_size`` is SESSION_CACHE_SIZE (None: the app's default; 0: off)."""
        env = {**self.env, "BENCH_COUNT_DB": "1" if count_db else "0"}
        if cache_size is not None:
            env["SESSION_CACHE_SIZE"] = str(cache_size)
        self.cache_size = cache_size
        self.proc = Proc(self.name, [PYTHON, "-m", "bench.serve", "--host", "127.0.0.1",
                                 "--port", str(self.port)], env=env, logdir=self.logdir).start()
        return self

    def ready(self, stream=True):
        """Wait until it answers, and (cache on, ``stream``) until its change stream is confirmed."""
        wait_for(lambda: self.proc.alive()
                 and requests.get(self.url("/healthz"), timeout=2).status_code == 200, 60, self.name)
        if stream and self.cache_size != 0:
            wait_for(lambda: requests.get(self.url("/_bench/cache"), timeout=2).json()["trusted"],
                     30, f"{self.name}'s session change stream")
        return self

    def start(self, count_db=False, cache_size=None):
        """Start (or restart) the app and wait until it is ready."""
        return self.launch(count_db, cache_size).ready()

    def cache(self):
        """The app's session cache: {"on", "trusted", "entries", "size"}."""
        return requests.get(self.url("/_bench/cache"), timeout=10).json()

    def stop(self):
        if self.proc:
            self.proc.stop()
