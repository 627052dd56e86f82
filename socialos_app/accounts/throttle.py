"""Sign-in throttling, shared by every app instance through MongoDB.

Policy (OWASP Authentication Cheat Sheet: throttle, don't lock out).
Every password check is *reserved* first: one atomic MongoDB update per
counter both checks and counts it, so 200 parallel guesses get no more
password checks upstream than 200 sequential ones. Two counters, each over
a 15-minute window since its last counted attempt (an IPv6 address
counts as its /64: ``addresses.counted_address``):

* per username *and* address: ``LOGIN_MAX_FAILURES`` (5) attempts go through
  at once; after that each further attempt must wait 1 s, 2 s, 4 s, ... up
  to 15 minutes. A right password clears this counter;
* per address, across usernames: four times that (20), then the same
  doubling waits, which stops one address guessing across many accounts. A
  right password gives its attempt back, so an office behind one address
  isn't slowed down by its own successful sign-ins.

There is deliberately no counter per username alone: a burst of guesses
against ``bob`` from one address waits at that address, and the real
``bob`` signing in from anywhere else is never held up (not even for the
minute a shared limit would allow). Guessing from many addresses is bounded
per address. Unknown and known usernames are counted alike, so the throttle
tells nobody which accounts exist; counters hold hashes, never usernames or
addresses.
"""

import hashlib
from datetime import datetime, timedelta
from typing import Any

from mongoengine.errors import NotUniqueError
from pymongo import ReturnDocument
from pymongo.collection import Collection

from socialos_app.addresses import counted_address
from socialos_app.db.connection import guarded
from socialos_app.db.documents import LoginCounter, collection_of, create_indexes, objects
from socialos_app.settings import Settings
from socialos_app.storage import StoreUnavailable, utcnow

__all__ = ["LoginThrottle"]

WINDOW = timedelta(minutes=15)
MAX_WAIT = 15 * 60           # seconds
ADDRESS_FACTOR = 4           # the per-address limit is this many times the per-pair one
_EPOCH = datetime(1970, 1, 1)


def _key(kind: str, *values: str) -> str:
    text = "\0".join(v.strip().lower() for v in values)
    return kind + ":" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _reserve_pipeline(now: datetime, limit: int) -> list[dict[str, Any]]:
    """One update that, atomically, counts an attempt if the counter's wait is over.

    ``ok`` says whether it was counted; ``until`` is when the next may be.
    A counter past its window (not yet removed by the TTL monitor) starts over.
    """
    live = {"$gt": [{"$ifNull": ["$expires", _EPOCH]}, now]}
    count = {"$cond": [live, {"$ifNull": ["$count", 0]}, 0]}
    until = {"$cond": [live, {"$ifNull": ["$until", _EPOCH]}, _EPOCH]}
    allowed = {"$lte": [until, now]}
    over = {"$subtract": ["$count", limit]}
    wait_ms = {"$min": [{"$multiply": [{"$pow": [2, over]}, 1000]}, MAX_WAIT * 1000]}
    return [
        {"$set": {"ok": allowed,
                  "count": {"$cond": [allowed, {"$add": [count, 1]}, count]},
                  "until": until,
                  "expires": {"$cond": [allowed, now + WINDOW, {"$ifNull": ["$expires", now + WINDOW]}]}}},
        {"$set": {"until": {"$cond": [{"$and": ["$ok", {"$gte": [over, 0]}]},
                                      {"$add": [now, wait_ms]}, "$until"]}}},
    ]


class LoginThrottle:
    """``reserve()`` before checking a password, ``succeeded()`` after a right one.

    Counters are ``db.documents.LoginCounter``s (its own collection by default;
    tests pass one of their own). The app uses MongoDB for them whatever
    ``SESSION_STORE`` says. Methods raise ``StoreUnavailable`` when the database is down.
    """

    def __init__(self, collection: Collection[dict[str, Any]] | None = None,
                 max_failures: int = Settings.login_max_failures) -> None:
        self.collection = collection if collection is not None else collection_of(LoginCounter)
        self.max_failures = max_failures

    def setup(self) -> None:
        """The TTL index (``LoginCounter``'s ``meta``) that removes counters after their window."""
        guarded(create_indexes, LoginCounter, self.collection)

    def _take(self, key: str, limit: int, now: datetime) -> int:
        # The check-and-count is one pipeline update, which the ODM can't express: pymongo's own.
        def update() -> dict[str, Any] | None:
            return guarded(self.collection.find_one_and_update, {"_id": key}, _reserve_pipeline(now, limit),
                           return_document=ReturnDocument.AFTER)
        doc = update()
        if doc is None:
            # A first attempt: make the counter, then count as above. Not an upsert: two first
            # attempts racing through one upsert may both count, or (SecantusDB) answer nothing.
            counter = LoginCounter(id=key, count=0, until=_EPOCH, expires=now + WINDOW)
            try:
                guarded(objects(LoginCounter, self.collection).insert, counter, load_bulk=False)
            except StoreUnavailable as exc:
                if not isinstance(exc.__cause__, NotUniqueError):
                    raise  # a real outage; a duplicate means the other attempt made it first
            doc = update()
        if doc is None:
            raise StoreUnavailable("the counter was neither found nor made")
        if doc.get("ok"):
            return 0
        return max(1, int((doc["until"] - now).total_seconds() + 0.999))

    def reserve(self, username: str, address: str) -> int:
        """0: go ahead, the attempt is counted; > 0: seconds to wait, nothing counted."""
        now = utcnow()
        address = counted_address(address)  # IPv6 per /64: one client owns them all
        # The address first: an address that is waiting spends nothing of the pair's allowance.
        wait = self._take(_key("a", address), self.max_failures * ADDRESS_FACTOR, now)
        if wait:
            return wait
        return self._take(_key("ua", username, address), self.max_failures, now)

    def succeeded(self, username: str, address: str) -> None:
        """A right password: clear that username's count for this address, give the address its attempt back."""
        counters = objects(LoginCounter, self.collection)
        address = counted_address(address)
        guarded(counters.filter(id=_key("ua", username, address)).delete)
        guarded(counters.filter(id=_key("a", address), count__gt=0).update_one, dec__count=1)
