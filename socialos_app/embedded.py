"""Embedded mode: the local database and the sandboxes as child processes.

An engine plugin, so CherryPy starts them before the app's services and
stops them after the server on Ctrl-C or SIGTERM. Only ``make run`` (no
MONGODB_URI) uses it; production never starts anything of the sandbox.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from cherrypy.process.plugins import SimplePlugin

__all__ = ["EmbeddedPlugin"]


def _wait_port(port, proc, name, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start (code {proc.returncode})")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port} within {timeout:.0f}s")


def _secantus_command():
    exe = Path(sys.executable).parent / "secantusd-py"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("embedded mode needs SecantusDB: pip install -e '.[embedded]' (or set MONGODB_URI)")
    return [found]


class EmbeddedPlugin(SimplePlugin):
    """Starts SecantusDB and ``python -m socialos_app.sandbox`` on loopback."""

    def __init__(self, bus, settings):
        super().__init__(bus)
        self.settings = settings
        self.children = []

    def start(self):
        s = self.settings
        data = Path(s.data_dir)
        (data / "db").mkdir(parents=True, exist_ok=True)
        logs = open(data / "embedded.log", "ab")
        db = subprocess.Popen(
            [*_secantus_command(), "--host", "127.0.0.1", "--port", str(s.embedded_db_port),
             "--storage-path", str(data / "db"), "--log-level", "WARNING"],
            stdout=logs, stderr=subprocess.STDOUT)
        self.children.append(("SecantusDB", db))
        env = {**os.environ, "PUSHER_APP_ID": s.pusher_app_id, "PUSHER_KEY": s.pusher_key,
               "PUSHER_SECRET": s.pusher_secret, "PUSHER_CHANNEL": s.pusher_channel}
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "socialos_app.sandbox", "--host", "127.0.0.1",
             "--api-port", str(s.sandbox_api_port), "--pusher-port", str(s.sandbox_pusher_port),
             "--channel", s.pusher_channel],
            stdout=logs, stderr=subprocess.STDOUT, env=env)
        self.children.append(("sandbox", sandbox))
        try:
            _wait_port(s.embedded_db_port, db, "SecantusDB")
            _wait_port(s.sandbox_api_port, sandbox, "the Social OS sandbox")
            _wait_port(s.sandbox_pusher_port, sandbox, "the Pusher sandbox")
        except RuntimeError as exc:
            self.stop()
            self.bus.log(f"embedded mode failed: {exc} (see {data / 'embedded.log'})", level=40)
            raise
    start.priority = 10  # before the app's services plugin (60) makes its indexes

    def stop(self):
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self.children):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.children.clear()
    stop.priority = 90  # after the HTTP server has stopped taking requests
