"""Embedded mode: the local database and the sandboxes as child processes.

``python app.py`` with no MONGODB_URI (``make run``) launches them before the
HTTP server starts and the engine stops them after it on Ctrl-C or SIGTERM;
production never starts anything of the sandbox (the image leaves this module
out). The entry point checks every port free before anything starts, and a
child counts as up only when that very process listens on its port: the app
never serves against someone else's database.
"""

import os
from pathlib import Path

from cherrypy.process.plugins import SimplePlugin

from socialos_dev.sandbox.processes import Database, ProcessExited, Sandbox

__all__ = ["EmbeddedPlugin", "EmbeddedFailed"]


class EmbeddedFailed(RuntimeError):
    """Embedded mode could not start; the message is one line for the operator."""


def _loopback(host):
    """How a local process reaches an app listening on ``host`` (the wildcard via loopback)."""
    if host in ("", "0.0.0.0", "::", "localhost"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class EmbeddedPlugin(SimplePlugin):
    """SecantusDB (data under DATA_DIR) and ``python -m socialos_dev.sandbox`` on loopback.

    ``launch()`` is called by the entry point before the engine starts, so a
    failure is one line and an exit status rather than a failed start
    listener; ``stop`` is subscribed to the engine.
    """

    def __init__(self, bus, settings):
        super().__init__(bus)
        self.settings = settings
        self.children = []

    @property
    def log_path(self):
        return Path(self.settings.data_dir) / "embedded.log"

    def launch(self):
        """Start both children and wait until each listens on its own ports; EmbeddedFailed otherwise."""
        s = self.settings
        data = Path(s.data_dir)
        try:
            (data / "db").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedFailed(f"DATA_DIR={s.data_dir} can't be used: {exc.strerror or exc}") from None
        env = {**os.environ, "PUSHER_APP_ID": s.pusher_app_id, "PUSHER_KEY": s.pusher_key,
               "PUSHER_SECRET": s.pusher_secret,
               # The Pusher sandbox sends its signed webhooks to this app, as Pusher would.
               "SANDBOX_WEBHOOK_URL": f"http://{_loopback(s.host)}:{s.port}/pusher/webhook"}
        steps = [
            (Database(s.embedded_db_port, data / "db", log_path=self.log_path, die_with_parent=True),
             f"SecantusDB on 127.0.0.1:{s.embedded_db_port} (EMBEDDED_DB_PORT)"),
            (Sandbox(s.sandbox_api_port, s.sandbox_pusher_port, s.pusher_channel, env, self.log_path,
                     die_with_parent=True),
             f"the sandboxes on 127.0.0.1:{s.sandbox_api_port} (SANDBOX_API_PORT) and "
             f"{s.sandbox_pusher_port} (SANDBOX_PUSHER_PORT)"),
        ]
        for child, what in steps:
            self.children.append(child)
            try:
                child.start()
            except ProcessExited as exc:
                self.stop()
                code = str(exc).split("\n", 1)[0]
                raise EmbeddedFailed(f"{what} did not start: {code}; see {self.log_path}") from None
            except TimeoutError:
                self.stop()
                raise EmbeddedFailed(f"{what} did not answer in time; see {self.log_path}") from None
            except (RuntimeError, OSError) as exc:
                self.stop()
                raise EmbeddedFailed(f"{what} could not be started: {exc}") from None

    def stop(self):
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
    stop.priority = 90  # after the HTTP server has stopped taking requests
