"""Each instance's memory of the session records it recently served.

A bounded LRU keyed by record id, kept honest by the store's change feed
(``SessionStore.watch``; MongoDB change streams): a delete, a replace or
any update evicts the entry. The feed carries no touches of ``accessed``
(they would reach every instance, for every session, once a minute), so an
entry's ``accessed`` is the one read from the database or written by this
instance, never newer than the database's: the engine reads an entry that
looks idle once more before refusing it (another instance may have kept the
session alive). Correctness never depends on the cache:

* until the feed is confirmed running (``stream_up``), and again from the
  moment it stops (``stream_down``: an error, a restart, lost history),
  ``get`` finds nothing and the engine reads every request through;
* every event and every change of state moves an *epoch*; a record read
  from the database is only cached if no event arrived while it was being
  read (``snapshot`` before the read, ``put`` after), so an entry read
  before the feed was confirmed, or overtaken by a change, is never trusted.

Records here hold the sealed credentials, never opened ones: those are
opened per request, only when a page uses them.
"""

import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from socialos_app.sessions.store import SessionRecord

__all__ = ["SessionCache"]


class SessionCache:
    """Bounded LRU of ``SessionRecord``s, trusted only while the change feed runs."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self._entries: OrderedDict[str, SessionRecord] = OrderedDict()
        self._lock = threading.Lock()
        self._trusted = False
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def trusted(self) -> bool:
        """True while the change feed is confirmed running."""
        return self._trusted

    def get(self, record_id: str) -> SessionRecord | None:
        """The cached record, or None (always None while the feed is not confirmed)."""
        with self._lock:
            if not self._trusted:
                return None
            record = self._entries.get(record_id)
            if record is not None:
                self._entries.move_to_end(record_id)
            return record

    def snapshot(self) -> int | None:
        """Take before reading the database; hand to ``put``. None: don't cache now."""
        with self._lock:
            return self._epoch if self._trusted and self.size else None

    def put(self, record: SessionRecord, snapshot: int | None) -> None:
        """Cache a record read since ``snapshot``, unless anything changed meanwhile."""
        if snapshot is None:
            return
        with self._lock:
            if not self._trusted or self._epoch != snapshot:
                return
            self._entries[record.id] = record
            self._entries.move_to_end(record.id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    # -- the change feed (SessionStore.watch calls these) -----------------------------
    def stream_up(self) -> None:
        """The feed is open: every change from now on will be reported."""
        with self._lock:
            self._entries.clear()
            self._epoch += 1
            self._trusted = True

    def stream_down(self) -> None:
        """The feed stopped: forget everything, trust nothing until it is back."""
        with self._lock:
            self._entries.clear()
            self._epoch += 1
            self._trusted = False

    def forget(self, record_id: str) -> None:
        """A record was deleted, replaced or changed (or this instance's touch of it failed)."""
        with self._lock:
            self._entries.pop(record_id, None)
            self._epoch += 1

    def touched_here(self, record_id: str, accessed: datetime) -> None:
        """This instance is writing ``accessed`` of a record: move the entry forward (never
        back), so concurrent requests don't touch again (a failed write ``forget``s it)."""
        with self._lock:
            record = self._entries.get(record_id)
            if record is not None and accessed > record.accessed:
                self._entries[record_id] = replace(record, accessed=accessed)
            self._epoch += 1
