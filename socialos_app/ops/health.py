"""Liveness and readiness.

``/livez`` does no I/O: 200 while the process serves requests. ``/readyz``
(and ``/healthz``) answer from the last database ping, which a background
thread makes every second, so a health check never waits on the database
and answers fast however busy or stuck the request threads are.

A stopping instance publishes ``drain`` on the engine's bus (``cli.py`` does,
on SIGTERM): from then on ``/readyz`` answers 503 whatever the database
says, while the instance keeps serving everything else until it stops.
"""

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import cherrypy
from cherrypy.process.plugins import Monitor

from socialos_app.ops import logs
from socialos_app.storage import StoreUnavailable

__all__ = ["Health", "DRAIN_CHANNEL"]

PING_EVERY = 1.0
# A ping result older than this (the ping itself is stuck) counts as a failure.
STALE_AFTER = 5.0
# The engine bus channel a stopping instance publishes on: readiness off for good.
DRAIN_CHANNEL = "drain"

_Page = TypeVar("_Page", bound=Callable[..., bytes])


def _expose(page: _Page) -> _Page:
    """``cherrypy.expose``, keeping the page's type (CherryPy ships none)."""
    exposed: _Page = cherrypy.expose(page)
    return exposed


class Health:
    """The health pages over ``ping``, which raises ``StoreUnavailable`` unless the database answers."""

    def __init__(self, ping: Callable[[], object]) -> None:
        self.ping = ping
        self._lock = threading.Lock()
        self._ok, self._at = False, 0.0
        self._draining = False

    def check(self) -> None:
        """Ping the database once and remember the answer."""
        try:
            self.ping()
            ok = True
        except StoreUnavailable as exc:
            ok = False
            logs.trouble("database", "session database down: %s", logs.database_words(exc))
        if ok:
            logs.recovered("database", "session database answering again")
        with self._lock:
            self._ok, self._at = ok, time.monotonic()

    @property
    def database_up(self) -> bool:
        """Whether the database answered the last ping (draining or not): ``socialos_database_up``."""
        with self._lock:
            return self._ok and time.monotonic() - self._at < STALE_AFTER

    def drain(self) -> None:
        """Stop being ready for good: this instance is on its way out."""
        with self._lock:
            self._draining = True

    @property
    def draining(self) -> bool:
        with self._lock:
            return self._draining

    @property
    def ready(self) -> bool:
        with self._lock:
            return not self._draining and self._ok and time.monotonic() - self._at < STALE_AFTER

    def plugin(self, bus: Any) -> Monitor:
        """An engine plugin pinging every second; the first ping runs before the server listens.

        Also subscribes :meth:`drain` to the bus's ``drain`` channel.
        """
        monitor = Monitor(bus, self.check, frequency=PING_EVERY, name="health")
        bus.subscribe("start", self.check, priority=65)
        bus.subscribe(DRAIN_CHANNEL, self.drain)
        return monitor

    @_expose
    def livez(self, **_ignored: str) -> bytes:
        """200 while this process serves requests."""
        cherrypy.serving.response.headers["Content-Type"] = "application/json"
        return b'{"status": "ok"}'

    @_expose
    def readyz(self, **_ignored: str) -> bytes:
        """200 when the session database answered its last ping and the instance is not stopping, else 503."""
        response = cherrypy.serving.response
        response.headers["Content-Type"] = "application/json"
        if self.ready:
            return b'{"status": "ok", "database": "ok"}'
        response.status = 503
        if self.draining:
            return b'{"status": "stopping"}'
        response.headers["Retry-After"] = "5"
        return b'{"status": "unavailable", "database": "unreachable"}'
