"""Sign-in throttling: failures counted per username and per address in
MongoDB, so the limit holds across every app instance.

After ``max_failures`` failed attempts for a username (or four times that
from one address) each further attempt must wait, doubling from 1 s up to
15 minutes. A success clears the username's count; counters expire by
themselves (TTL index) 15 minutes after the last failure. Unknown and
known usernames are counted alike, so the throttle tells nobody which
accounts exist.
"""

import hashlib
from datetime import timedelta

from pymongo import ReturnDocument

from .db import database, utcnow
from .db import guarded as call

__all__ = ["LoginThrottle"]

WINDOW = timedelta(minutes=15)
MAX_WAIT = 15 * 60


def _key(kind, value):
    return kind + ":" + hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]


class LoginThrottle:
    """``blocked()`` before trying a password, ``failed()``/``succeeded()`` after."""

    def __init__(self, max_failures=5):
        self.max_failures = max_failures
        # Same database as the sessions, a collection of its own.
        self.collection = database()["login_failures"]

    def setup(self):
        call(self.collection.create_index, "expires", name="ttl", expireAfterSeconds=0)

    def _wait(self, doc, limit, now):
        over = doc["count"] - limit
        if over < 0:
            return 0
        wait = min(2 ** over, MAX_WAIT)
        remaining = (doc["last"] + timedelta(seconds=wait) - now).total_seconds()
        return max(0, int(remaining + 0.999))

    def blocked(self, username, address):
        """Seconds to wait before another attempt is allowed (0: go ahead)."""
        keys = {_key("u", username): self.max_failures, _key("a", address): self.max_failures * 4}
        docs = call(list, self.collection.find({"_id": {"$in": list(keys)}}))
        now = utcnow()
        return max([self._wait(d, keys[d["_id"]], now) for d in docs] or [0])

    def failed(self, username, address):
        now = utcnow()
        for key in (_key("u", username), _key("a", address)):
            call(self.collection.find_one_and_update, {"_id": key},
                       {"$inc": {"count": 1}, "$set": {"last": now, "expires": now + WINDOW}},
                       upsert=True, return_document=ReturnDocument.AFTER)

    def succeeded(self, username, address):
        call(self.collection.delete_one, {"_id": _key("u", username)})
