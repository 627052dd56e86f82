"""Liveness and readiness.

``/livez`` does no I/O: 200 while the process serves requests. ``/readyz``
(and ``/healthz``) answer from the last database ping, which a background
thread makes every second, so a health check never waits on the database
and answers fast however busy or stuck the request threads are.
"""

import threading
import time

import cherrypy
from cherrypy.process.plugins import Monitor

from socialos_app.storage import StoreUnavailable

__all__ = ["Health"]

PING_EVERY = 1.0
# A ping result older than this (the ping itself is stuck) counts as a failure.
STALE_AFTER = 5.0


class Health:
    """The health pages over ``ping``, which raises ``StoreUnavailable`` unless the database answers."""

    def __init__(self, ping):
        self.ping = ping
        self._lock = threading.Lock()
        self._ok, self._at = False, 0.0

    def check(self):
        """Ping the database once and remember the answer."""
        try:
            self.ping()
            ok = True
        except StoreUnavailable:
            ok = False
        with self._lock:
            self._ok, self._at = ok, time.monotonic()

    @property
    def ready(self):
        with self._lock:
            return self._ok and time.monotonic() - self._at < STALE_AFTER

    def plugin(self, bus):
        """An engine plugin pinging every second; the first ping runs before the server listens."""
        monitor = Monitor(bus, self.check, frequency=PING_EVERY, name="health")
        bus.subscribe("start", self.check, priority=65)
        return monitor

    @cherrypy.expose
    def livez(self, **_ignored):
        """200 while this process serves requests."""
        cherrypy.serving.response.headers["Content-Type"] = "application/json"
        return b'{"status": "ok"}'

    @cherrypy.expose
    def readyz(self, **_ignored):
        """200 when the session database answered its last ping, else 503."""
        response = cherrypy.serving.response
        response.headers["Content-Type"] = "application/json"
        if self.ready:
            return b'{"status": "ok", "database": "ok"}'
        response.status = 503
        response.headers["Retry-After"] = "5"
        return b'{"status": "unavailable", "database": "unreachable"}'
