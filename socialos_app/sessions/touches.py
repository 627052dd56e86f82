"""Writes of ``accessed``, off the request path.

A signed-in request that finds its session's ``accessed`` over a minute old
updates it (idle expiry stays exact to a minute). A busy database can hold
even that small write for seconds (a TTL sweep over a large collection, a
failover): the page needn't wait. So
the engine hands touches to one background thread per instance, which
gathers them for up to a second and writes them together (one bulk write,
one pending touch per session: a newer one replaces an older one not yet
written). A database answers a batch for much less than the same touches
one by one, change-stream fan-out included (SecantusDB: ~45% less CPU per
touch in batches of five).

A touch is only ever an ``update`` of an existing record: a session ended
meanwhile is not revived. A touch that fails is reported to ``on_failure``
(the engine forgets its cached entry, so the next request reads the
record again and touches it again). When the writer isn't running, or
``limit`` touches are already waiting, ``touch`` returns False and the
caller writes inline.
"""

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from socialos_app.sessions.store import SessionStore
from socialos_app.storage import StoreUnavailable

__all__ = ["TouchWriter"]

log = logging.getLogger("socialos")


class TouchWriter:
    """One background thread writing queued touches with ``store.touch_many``."""

    def __init__(self, store: SessionStore, on_failure: Callable[[str], None], limit: int = 10_000,
                 gather: float = 1.0) -> None:
        self._store = store
        self._gather = gather
        self._on_failure = on_failure
        self._limit = limit
        self._pending: dict[str, datetime] = {}  # record id -> accessed, insertion-ordered
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False

    def start(self) -> None:
        """Start writing in the background (idempotent)."""
        with self._cond:
            if self._running:
                return
            self._running = True
            self._thread = threading.Thread(target=self._run, name="session-touches", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is waiting, then stop; touches go inline again."""
        with self._cond:
            self._running = False
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def backlog(self) -> int:
        """Touches waiting to be written (``socialos_session_touch_backlog``)."""
        return len(self._pending)

    def touch(self, record_id: str, accessed: datetime) -> bool:
        """Queue a touch; False when the caller should write it itself."""
        with self._cond:
            if not self._running or (len(self._pending) >= self._limit and record_id not in self._pending):
                return False
            self._pending[record_id] = accessed
            self._cond.notify()
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._pending:
                    self._cond.wait()
                if self._running:  # let the touches of the next moment join this write
                    self._cond.wait_for(lambda: not self._running, self._gather)
                batch, self._pending = self._pending, {}
                running = self._running
            try:
                self._store.touch_many(batch)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any one write
                if not isinstance(exc, StoreUnavailable):
                    log.exception("session touches not written")
                for record_id in batch:
                    self._on_failure(record_id)
            if not running:
                return
