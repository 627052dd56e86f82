"""Embedded mode: the local database and the sandboxes as child processes.

An engine plugin, so CherryPy starts them before the app's services and
stops them after the server on Ctrl-C or SIGTERM. Only ``make run`` (no
MONGODB_URI) uses it; production never starts anything of the sandbox.
"""

import os
from pathlib import Path

from cherrypy.process.plugins import SimplePlugin

from .sandbox.processes import Database, Sandbox

__all__ = ["EmbeddedPlugin"]


class EmbeddedPlugin(SimplePlugin):
    """Starts SecantusDB (data under DATA_DIR) and ``python -m socialos_app.sandbox`` on loopback."""

    def __init__(self, bus, settings):
        super().__init__(bus)
        self.settings = settings
        self.children = []

    def start(self):
        s = self.settings
        data = Path(s.data_dir)
        (data / "db").mkdir(parents=True, exist_ok=True)
        log = data / "embedded.log"
        env = {**os.environ, "PUSHER_APP_ID": s.pusher_app_id, "PUSHER_KEY": s.pusher_key,
               "PUSHER_SECRET": s.pusher_secret}
        try:
            for child in (Database(s.embedded_db_port, data / "db", log_path=log),
                          Sandbox(s.sandbox_api_port, s.sandbox_pusher_port, s.pusher_channel, env, log)):
                self.children.append(child)
                child.start()
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            self.bus.log(f"embedded mode failed: {exc} (see {log})", level=40)
            raise
    start.priority = 10  # before the app's services plugin (60) makes its indexes

    def stop(self):
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
    stop.priority = 90  # after the HTTP server has stopped taking requests
