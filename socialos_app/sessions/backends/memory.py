"""An in-memory session backend: one process, nothing durable (``SESSION_STORE=memory``).

For tests and single-process runs (the contract suite runs against it and
the MongoDB store alike); sessions vanish with the process and are not
shared between instances, so production uses ``mongo.MongoSessionStore``.
The app's sign-in throttle and presence directory still use MongoDB.
There is no change feed: nothing is cached in front of it (none is needed).
"""

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import islice

from socialos_app.sessions.store import TAKE_BATCH, RecordExists, SessionRecord, SessionStats, SessionStore

__all__ = ["MemorySessionStore"]


class MemorySessionStore(SessionStore):
    """Records in a dict behind one lock. Nothing is removed by age here: the
    engine enforces idle and absolute expiry on every read, and lists and
    counts pass the live bounds in."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._lock = threading.Lock()

    def setup(self, idle_seconds: int) -> None:
        """Nothing to make: no indexes, and no removal by age (see the class)."""

    def create(self, record: SessionRecord) -> None:
        with self._lock:
            if record.id in self._records:
                raise RecordExists(record.id)
            self._records[record.id] = record

    def load(self, ids: Sequence[str]) -> SessionRecord | None:
        with self._lock:
            for record_id in ids:
                record = self._records.get(record_id)
                if record is not None:
                    return record
        return None

    def update(self, record: SessionRecord) -> bool:
        with self._lock:
            if record.id not in self._records:
                return False
            self._records[record.id] = record
            return True

    def touch(self, record_id: str, accessed: datetime) -> None:
        with self._lock:
            record = self._records.get(record_id)
            if record is not None:
                # Frozen records: a touched one is a copy with only ``accessed`` changed.
                self._records[record_id] = replace(record, accessed=accessed)

    def destroy(self, record_id: str) -> bool:
        with self._lock:
            return self._records.pop(record_id, None) is not None

    def take(self, username: str, handle: str | None = None, keep_id: str | None = None) -> list[SessionRecord]:
        return [record for batch in self.take_batches(username, handle, keep_id) for record in batch]

    def take_batches(self, username: str, handle: str | None = None, keep_id: str | None = None,
                     batch: int = TAKE_BATCH) -> Iterator[list[SessionRecord]]:
        # Steps as the MongoDB store takes them, so the lock is never held for a whole heavy user.
        size = max(1, min(batch, TAKE_BATCH))
        while True:
            with self._lock:
                gone = list(islice((r for r in self._records.values() if r.username == username
                                    and r.id != keep_id and (handle is None or r.handle == handle)), size))
                for record in gone:
                    del self._records[record.id]
            if gone:
                yield gone
            if len(gone) < size:
                return

    def _live(self, username: str | None = None, accessed_after: datetime | None = None,
              expires_after: datetime | None = None) -> list[SessionRecord]:
        with self._lock:
            records = list(self._records.values())
        return [r for r in records
                if (username is None or r.username == username)
                and (accessed_after is None or r.accessed > accessed_after)
                and (expires_after is None or r.expires > expires_after)]

    def list_user(self, username: str, accessed_after: datetime | None = None,
                  expires_after: datetime | None = None, limit: int = 50) -> list[SessionRecord]:
        found = self._live(username, accessed_after, expires_after)
        found.sort(key=lambda r: r.created, reverse=True)
        return found[:limit]

    def stats(self, accessed_after: datetime, expires_after: datetime,
              timeout: float | None = None) -> SessionStats:
        live = self._live(None, accessed_after, expires_after)
        by_hour = {h: 0 for h in range(24)}
        for record in live:
            by_hour[record.created.hour] += 1
        return {"active": len(live), "users": len({r.username for r in live}), "by_hour": by_hour}

    def ping(self) -> None:
        return None

