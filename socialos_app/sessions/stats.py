"""/admin's session statistics: counted by the store in the background, served from memory.

Counting live sessions is an aggregation over the whole collection: a few
ms on MongoDB with a thousand sessions, tens of ms with 100,000, seconds on
a database that evaluates aggregations in Python (SecantusDB: about 5 s at
100,000). /admin should not wait that long, and its reloads should not
stack counts on the database. So:

* every call starts a count unless one is already running (at most one per
  instance at a time, whatever the number of admins or metrics scrapes);
* it waits ``wait`` seconds for that count (``first_wait`` when nothing has
  been counted yet) and answers with it when it finishes in time;
* otherwise it answers with the last finished count and when it was made
  (``counted_at``), or, before any count has finished, ``pending``;
* the count runs under its own, longer deadline (``timeout``), not a page's.

A failed count leaves the last good one in place; with none, the failure is
raised (``StoreUnavailable``: a 503 page, as any database outage).
"""

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TypedDict

from socialos_app.sessions.store import SessionStats
from socialos_app.storage import StoreUnavailable, utcnow

__all__ = ["Counts", "LiveCounts"]


class Counts(TypedDict):
    """What ``LiveCounts.get`` answers: the store's count, when it was made, how old it is."""

    active: int | None
    users: int | None
    by_hour: dict[int, int]
    counted_at: datetime | None
    age: float | None
    pending: bool

log = logging.getLogger("socialos")


class LiveCounts:
    """Background-counted ``store.stats`` with the time of the count.

    ``count(timeout)`` returns the store's ``{"active", "users", "by_hour"}``.
    ``get()`` returns that plus ``counted_at`` (naive UTC), ``age`` (seconds since) and ``pending``
    (True, with ``active``/``users`` None, until a first count finishes).
    """

    def __init__(self, count: Callable[[float], SessionStats], wait: float = 0.1, first_wait: float = 2.0,
                 timeout: float = 60.0) -> None:
        self._count = count
        self.wait = wait
        self.first_wait = first_wait
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: threading.Event | None = None   # the count in flight
        self._last: Counts | None = None                # the last finished count
        self._error: StoreUnavailable | None = None     # the last count's failure, if it failed

    def get(self) -> Counts:
        """The newest count available within ``wait`` (see the module's docstring)."""
        with self._lock:
            running = self._running
            if running is None:
                running = self._running = threading.Event()
                threading.Thread(target=self._run, args=(running,), name="session-stats",
                                 daemon=True).start()
            had = self._last is not None
        running.wait(self.wait if had else self.first_wait)
        with self._lock:
            last, error = self._last, self._error
        if last is not None:
            counted_at = last["counted_at"] or utcnow()
            return {**last, "age": (utcnow() - counted_at).total_seconds()}
        if error is not None and running.is_set():
            raise error
        return {"active": None, "users": None, "by_hour": {h: 0 for h in range(24)},
                "counted_at": None, "age": None, "pending": True}

    def _run(self, done: threading.Event) -> None:
        result: Counts | None = None
        error: StoreUnavailable | None = None
        try:
            counted = self._count(self.timeout)
            result = {"active": counted["active"], "users": counted["users"], "by_hour": counted["by_hour"],
                      "counted_at": utcnow(), "age": 0.0, "pending": False}
        except StoreUnavailable as exc:
            error = exc
        except Exception:  # noqa: BLE001 - a bug in counting must not stop every later count
            log.exception("session statistics not counted")
            error = StoreUnavailable("count failed")
        finally:
            with self._lock:
                if result is not None:
                    self._last = result
                self._error = error
                self._running = None
            done.set()
