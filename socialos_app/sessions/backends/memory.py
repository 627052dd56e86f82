"""An in-memory session backend: one process, nothing durable.

For tests and single-process experiments (the contract suite runs against
it and the MongoDB store alike); sessions vanish with the process and are
not shared between instances, so production uses ``mongo.MongoSessionStore``.
"""

import threading
from dataclasses import replace

from socialos_app.sessions.store import RecordExists, SessionStore

__all__ = ["MemorySessionStore"]


class MemorySessionStore(SessionStore):
    """Records in a dict behind one lock. Nothing is removed by age here: the
    engine enforces idle and absolute expiry on every read, and lists and
    counts pass the live bounds in."""

    def __init__(self):
        self._records = {}
        self._lock = threading.Lock()

    def setup(self, idle_seconds):
        """Nothing to make: no indexes, and no removal by age (see the class)."""

    def create(self, record):
        with self._lock:
            if record.id in self._records:
                raise RecordExists(record.id)
            self._records[record.id] = record

    def load(self, ids):
        with self._lock:
            for record_id in ids:
                record = self._records.get(record_id)
                if record is not None:
                    return record
        return None

    def update(self, record):
        with self._lock:
            if record.id not in self._records:
                return False
            self._records[record.id] = record
            return True

    def touch(self, record_id, accessed):
        with self._lock:
            record = self._records.get(record_id)
            if record is not None:
                # Frozen records: a touched one is a copy with only ``accessed`` changed.
                self._records[record_id] = replace(record, accessed=accessed)

    def destroy(self, record_id):
        with self._lock:
            return self._records.pop(record_id, None) is not None

    def take(self, username, handle=None, keep_id=None):
        with self._lock:
            gone = [r for r in self._records.values()
                    if r.username == username and r.id != keep_id and (handle is None or r.handle == handle)]
            for record in gone:
                del self._records[record.id]
        return gone

    def _live(self, username=None, accessed_after=None, expires_after=None):
        with self._lock:
            records = list(self._records.values())
        return [r for r in records
                if (username is None or r.username == username)
                and (accessed_after is None or r.accessed > accessed_after)
                and (expires_after is None or r.expires > expires_after)]

    def list_user(self, username, accessed_after=None, expires_after=None, limit=50):
        found = self._live(username, accessed_after, expires_after)
        found.sort(key=lambda r: r.created, reverse=True)
        return found[:limit]

    def stats(self, accessed_after, expires_after, timeout=None):
        live = self._live(None, accessed_after, expires_after)
        by_hour = {h: 0 for h in range(24)}
        for record in live:
            by_hour[record.created.hour] += 1
        return {"active": len(live), "users": len({r.username for r in live}), "by_hour": by_hour}

    def ping(self):
        return None

