"""The real processes a bench run talks to, each on an ephemeral loopback port.

SecantusDB (the database, its own process), the sandboxes (plain HTTP for the
app's sign-in; HTTPS for the client figures, see ``tls``) and the app itself
(``python -m bench.serve``: ``app.py``'s start plus the bench pages). Output
of each goes to a log file under a temporary directory, shown on failure.
"""

import secrets
import sys
import tempfile
from pathlib import Path

import requests

from socialos_app.sandbox import processes
from socialos_app.sandbox.processes import DEMO_PUSHER as PUSHER_APP  # noqa: F401 - re-exported
from socialos_app.sandbox.processes import free_port, port_open, wait_for  # noqa: F401 - re-exported

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Proc(processes.Proc):
    """A child process logging to ``logdir/NAME.log``."""

    def __init__(self, name, args, env=None, logdir=None):
        super().__init__(name, args, env=env, log_path=Path(logdir) / f"{name}.log" if logdir else None)


class Database(processes.Database):
    """SecantusDB on its own port, data in a temporary directory under ``logdir``."""

    def __init__(self, logdir, name="secantusdb"):
        super().__init__(path=tempfile.mkdtemp(prefix=f"{name}-", dir=logdir),
                         log_path=Path(logdir) / f"{name}.log")

    def uri(self, db):
        return self.uri_for(db)


class Sandbox(processes.Sandbox):
    """``python -m socialos_app.sandbox``: the app's upstreams (plain HTTP) for sign-in."""

    def __init__(self, logdir):
        super().__init__(log_path=Path(logdir) / "sandbox.log")


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
        # LOG_LEVEL WARNING (the default here): a log line per request would cost the same on
        # every page, so the ratios show the session layer, not the logger.
        env = processes.app_env(self.mongodb_uri, sandbox, self.secure_key_hex)
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
