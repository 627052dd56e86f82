"""The MongoDB session backend.

The document schema is declared as a mongoengine ``Document`` (the
project's schema language); every operation goes to the raw pymongo
collection, because mongoengine's query building and object construction
cost more than the round trip itself. Reads go to the primary; writes wait
for a majority *and* the journal (``w=majority, j=true``), so a session
ended here stays ended after a crash and is seen ended by every instance.
Touches of ``accessed`` alone are written ``w=1`` without the journal: all
they move is idle expiry, by at most a minute if one is lost.

``watch`` is the change feed the engine's per-instance cache listens to.
"""

import contextlib
import logging

import mongoengine as me
import pymongo
from pymongo import DESCENDING, ReadPreference, UpdateOne, WriteConcern
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from socialos_app.db.connection import ALIAS, guarded
from socialos_app.sessions.store import RecordExists, SessionRecord, SessionStore
from socialos_app.storage import StoreUnavailable

__all__ = ["MongoSessionStore", "SessionDocument"]

log = logging.getLogger("socialos")

# How long one wait for change events lasts: bounds how quickly ``stop`` is noticed.
WATCH_AWAIT_MS = 250
WATCH_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)
# A new record can't be cached yet (ids are never reused while they exist): inserts are
# left out of the stream, so sign-ins cost the cache nothing.
_NO_INSERTS = [{"$match": {"operationType": {"$ne": "insert"}}}]


class SessionDocument(me.Document):
    """A session as stored: nothing here opens a cookie or an upstream key."""

    id = me.StringField(primary_key=True)
    username = me.StringField(required=True)
    name = me.StringField(default="")
    admin = me.BooleanField(default=False)
    sealed = me.BinaryField(required=True)
    created = me.DateTimeField(required=True)
    accessed = me.DateTimeField(required=True)
    expires = me.DateTimeField(required=True)
    handle = me.StringField(default="")
    user_agent = me.StringField(default="")
    address = me.StringField(default="")
    key_ref = me.BinaryField(default=b"")
    tag = me.BinaryField(default=b"")

    # Indexes are made by MongoSessionStore.setup(): the idle TTL comes from settings.
    meta = {"collection": "sessions", "db_alias": ALIAS, "auto_create_index": False}


_FIELDS = ("username", "name", "admin", "sealed", "created", "accessed", "expires",
           "handle", "user_agent", "address", "key_ref", "tag")
_DEFAULTS = {"name": "", "admin": False, "handle": "", "user_agent": "", "address": "",
             "key_ref": b"", "tag": b""}


def _record(doc):
    get = doc.get
    return SessionRecord(doc["_id"], *(get(f, _DEFAULTS.get(f)) for f in _FIELDS))


def _document(record):
    """The stored form of a record (as ``SessionDocument(...).to_mongo()`` makes it)."""
    return {"_id": record.id, **{f: getattr(record, f) for f in _FIELDS}}


class MongoSessionStore(SessionStore):
    """Sessions in one MongoDB collection (assembly passes ``sessions`` of the app's database)."""

    def __init__(self, collection):
        self.collection = collection.with_options(
            read_preference=ReadPreference.PRIMARY,
            write_concern=WriteConcern(w="majority", j=True),
        )
        # Touches only move idle expiry: one lost in a crash ends a session at most
        # TOUCH_EVERY early, so they don't wait for the journal.
        self._touches = self.collection.with_options(write_concern=WriteConcern(w=1, j=False))

    def setup(self, idle_seconds):
        def make():
            c = self.collection
            try:
                c.create_index("accessed", name="idle_ttl", expireAfterSeconds=idle_seconds)
            except OperationFailure:
                # SESSION_TTL changed since the index was made: adjust it in place.
                c.database.command("collMod", c.name, index={
                    "name": "idle_ttl", "expireAfterSeconds": idle_seconds})
            c.create_index("expires", name="absolute_ttl", expireAfterSeconds=0)
            c.create_index("username", name="by_user")
            info = c.index_information().get("idle_ttl", {})
            if info.get("expireAfterSeconds") != idle_seconds:
                c.database.command("collMod", c.name, index={
                    "name": "idle_ttl", "expireAfterSeconds": idle_seconds})
        guarded(make)

    def create(self, record):
        try:
            self.collection.insert_one(_document(record))
        except DuplicateKeyError:
            raise RecordExists(record.id) from None
        except PyMongoError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    def load(self, ids):
        query = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": list(ids)}}
        doc = guarded(self.collection.find_one, query)
        return _record(doc) if doc else None

    def update(self, record):
        doc = _document(record)
        del doc["_id"]
        return guarded(self.collection.replace_one, {"_id": record.id}, doc).matched_count == 1

    def touch(self, record_id, accessed):
        guarded(self._touches.update_one, {"_id": record_id}, {"$set": {"accessed": accessed}})

    def touch_many(self, touches):
        if not touches:
            return
        writes = [UpdateOne({"_id": rid}, {"$set": {"accessed": at}}) for rid, at in touches.items()]
        guarded(self._touches.bulk_write, writes, ordered=False)

    def destroy(self, record_id):
        return guarded(self.collection.delete_one, {"_id": record_id}).deleted_count == 1

    def take(self, username, handle=None, keep_id=None):
        query = {"username": username}
        if handle is not None:
            query["handle"] = handle
        if keep_id is not None:
            query["_id"] = {"$ne": keep_id}
        found = [_record(d) for d in guarded(list, self.collection.find(query))]
        if found:
            guarded(self.collection.delete_many, {"_id": {"$in": [r.id for r in found]}, "username": username})
        return found

    @staticmethod
    def _live(accessed_after, expires_after):
        query = {}
        if accessed_after is not None:
            query["accessed"] = {"$gt": accessed_after}
        if expires_after is not None:
            query["expires"] = {"$gt": expires_after}
        return query

    def list_user(self, username, accessed_after=None, expires_after=None, limit=50):
        query = {"username": username, **self._live(accessed_after, expires_after)}
        cursor = self.collection.find(query).sort("created", DESCENDING).limit(limit)
        return [_record(d) for d in guarded(list, cursor)]

    def stats(self, accessed_after, expires_after, timeout=None):
        # One aggregation: the database counts, nothing but 25 numbers comes back.
        pipeline = [{"$match": self._live(accessed_after, expires_after)},
                    {"$facet": {"hours": [{"$group": {"_id": {"$hour": "$created"}, "n": {"$sum": 1}}}],
                                "users": [{"$group": {"_id": "$username"}}, {"$count": "n"}]}}]

        def count():
            # pymongo.timeout replaces the client's per-operation deadline for this one call.
            with pymongo.timeout(timeout) if timeout is not None else contextlib.nullcontext():
                return list(self.collection.aggregate(pipeline))

        result = guarded(count)  # the call itself can fail too
        facets = result[0] if result else {}
        by_hour = {h: 0 for h in range(24)}
        for row in facets.get("hours", []):
            if isinstance(row.get("_id"), int) and 0 <= row["_id"] < 24:
                by_hour[row["_id"]] = int(row["n"])
        users = facets.get("users") or [{"n": 0}]
        return {"active": sum(by_hour.values()), "users": int(users[0]["n"]), "by_hour": by_hour}

    def ping(self):
        guarded(self.collection.database.command, "ping")

    def watch(self, listener, stop):
        """Follow the collection's change stream until ``stop`` is set.

        After an error the stream is resumed from its last resume token (a
        new one is opened when that history is gone); the listener is told
        ``stream_down`` first and ``stream_up`` again only once the stream
        is open, so nothing cached while it was down is trusted.
        """
        token, failures = None, 0
        while not stop.is_set():
            try:
                with self.collection.watch(_NO_INSERTS, resume_after=token,
                                           max_await_time_ms=WATCH_AWAIT_MS) as stream:
                    listener.stream_up()
                    failures = 0
                    while not stop.is_set() and stream.alive:
                        change = stream.try_next()
                        token = stream.resume_token or token
                        if change is not None and not _dispatch(change, listener):
                            token = None  # invalidated: history after this point can't be resumed
                            break
                listener.stream_down()
            except PyMongoError as exc:
                listener.stream_down()
                if isinstance(exc, OperationFailure) and token is not None:
                    token = None  # the resume point is gone (history lost): start a new stream
                delay = WATCH_RETRY_SECONDS[min(failures, len(WATCH_RETRY_SECONDS) - 1)]
                failures += 1
                if failures == 1:
                    log.warning("session change stream stopped (%s); reading every session through "
                                "until it is back", type(exc).__name__)
                stop.wait(delay)


def _dispatch(change, listener):
    """Tell the listener what one change event means; False when the stream is over."""
    kind = change.get("operationType")
    record_id = (change.get("documentKey") or {}).get("_id")
    if kind == "update" and record_id is not None:
        description = change.get("updateDescription") or {}
        updated = description.get("updatedFields") or {}
        if set(updated) == {"accessed"} and not description.get("removedFields"):
            listener.touched(record_id, updated["accessed"])
        else:
            listener.forget(record_id)
    elif kind in ("delete", "replace") and record_id is not None:
        listener.forget(record_id)
    else:  # drop, rename, dropDatabase, invalidate, or anything unknown: start over
        listener.stream_down()
        return False
    return True
