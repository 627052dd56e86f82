"""The MongoDB session backend.

Records are ``db.documents.SessionDocument``s: its ``meta`` declares the
indexes (``setup`` makes them, the idle TTL from ``SESSION_TTL``). Listing a
user's devices, ending them and counting for /admin go through the ODM; the
per-request operations (create, load, update, touch, destroy) use the
Document's pymongo collection directly, because mongoengine's query building
and object construction cost more than the round trip itself. Reads go to
the primary; writes wait for a majority *and* the journal (``w=majority,
j=true``), so a session ended here stays ended after a crash and is seen
ended by every instance. Touches of ``accessed`` alone are written ``w=1``
without the journal: all they move is idle expiry, by at most a minute if
one is lost.

``watch`` is the change feed the engine's per-instance cache listens to: it
carries revocations (deletes, replaces, changes of any field but
``accessed``), never touches (see ``REVOCATIONS``).
"""

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pymongo
from pymongo import ReadPreference, UpdateOne, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from socialos_app.db.connection import DRIVER_ERRORS, guarded
from socialos_app.db.documents import SessionDocument, collection_of, create_indexes, objects
from socialos_app.ops import logs
from socialos_app.sessions.store import (
    TAKE_BATCH,
    ChangeListener,
    RecordExists,
    SessionRecord,
    SessionStats,
    SessionStore,
)
from socialos_app.storage import StoreUnavailable

__all__ = ["MongoSessionStore", "REVOCATIONS", "document_from_record", "record_from_document"]

log = logging.getLogger("socialos")

Document = dict[str, Any]

# How long one wait for change events lasts: bounds how quickly ``stop`` is noticed.
WATCH_AWAIT_MS = 250
WATCH_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)
# What each instance's stream carries: revocations, not activity. Matched on the server, so
# what is left out is never sent: inserts (a new record can't be cached yet: ids are never
# reused while they exist) and touches, updates that only move ``accessed`` to about now (one
# per active session per minute, from every instance; an instance re-reads a cached record
# that looks idle instead of following them). Deletes, replaces, other updates, invalidations,
# and a write that moves ``accessed`` into the past (it shortens the session) still arrive.
TOUCH_SLACK_MS = 60_000  # a touch is written within this of its ``accessed`` (batched, or delayed)
_NEVER = datetime(9999, 1, 1)
_TOUCH = {"$and": [
    {"$eq": ["$operationType", "update"]},
    {"$eq": [{"$map": {"input": {"$objectToArray": "$updateDescription.updatedFields"}, "in": "$$this.k"}},
             ["accessed"]]},
    {"$eq": [{"$size": {"$ifNull": ["$updateDescription.removedFields", []]}}, 0]},
    {"$eq": [{"$type": "$updateDescription.updatedFields.accessed"}, "date"]},
    # wallTime: the server's clock at the write (an event without it is never taken for a touch).
    {"$gte": ["$updateDescription.updatedFields.accessed",
              {"$subtract": [{"$ifNull": ["$wallTime", _NEVER]}, TOUCH_SLACK_MS]}]},
]}
REVOCATIONS = [{"$match": {"operationType": {"$ne": "insert"}, "$expr": {"$not": [_TOUCH]}}}]

_FIELDS = ("username", "name", "admin", "sealed", "created", "accessed", "expires",
           "handle", "user_agent", "address", "key_ref", "tag", "fresh", "notice")
_DEFAULTS: dict[str, object] = {"name": "", "admin": False, "handle": "", "user_agent": "", "address": "",
                                "key_ref": b"", "tag": b"", "fresh": None, "notice": ""}


def record_from_document(doc: Mapping[str, Any]) -> SessionRecord:
    """The record a stored document holds (fields as found: the engine checks their types)."""
    get = doc.get
    return SessionRecord(doc["_id"], *(get(f, _DEFAULTS.get(f)) for f in _FIELDS))


def document_from_record(record: SessionRecord) -> Document:
    """The stored form of a record (as ``SessionDocument(...).to_mongo()`` makes it)."""
    return {"_id": record.id, **{f: getattr(record, f) for f in _FIELDS}}


class MongoSessionStore(SessionStore):
    """Sessions in one MongoDB collection: ``SessionDocument``'s own by default (tests pass another)."""

    def __init__(self, collection: Collection[Document] | None = None) -> None:
        base = collection if collection is not None else collection_of(SessionDocument)
        self.collection: Collection[Document] = base.with_options(
            read_preference=ReadPreference.PRIMARY,
            write_concern=WriteConcern(w="majority", j=True),
        )
        # Touches only move idle expiry: one lost in a crash ends a session at most
        # TOUCH_EVERY early, so they don't wait for the journal.
        self._touches = self.collection.with_options(write_concern=WriteConcern(w=1, j=False))

    def _objects(self) -> Any:
        return objects(SessionDocument, self.collection)

    def setup(self, idle_seconds: int) -> None:
        guarded(create_indexes, SessionDocument, self.collection, ttl={"idle_ttl": idle_seconds})

    def create(self, record: SessionRecord) -> None:
        try:
            self.collection.insert_one(document_from_record(record))
        except DuplicateKeyError:
            raise RecordExists(record.id) from None
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    def load(self, ids: Sequence[str]) -> SessionRecord | None:
        # ``ids``: one per honoured server key (``Keyring.record_ids``), a handful at most.
        query = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": list(ids)}}
        doc = guarded(self.collection.find_one, query)
        return record_from_document(doc) if doc else None

    def update(self, record: SessionRecord) -> bool:
        doc = document_from_record(record)
        del doc["_id"]
        return guarded(self.collection.replace_one, {"_id": record.id}, doc).matched_count == 1

    def touch(self, record_id: str, accessed: datetime) -> None:
        guarded(self._touches.update_one, {"_id": record_id}, {"$set": {"accessed": accessed}})

    def touch_many(self, touches: Mapping[str, datetime]) -> None:
        if not touches:
            return
        writes = [UpdateOne({"_id": rid}, {"$set": {"accessed": at}}) for rid, at in touches.items()]
        guarded(self._touches.bulk_write, writes, ordered=False)

    def destroy(self, record_id: str) -> bool:
        return guarded(self.collection.delete_one, {"_id": record_id}).deleted_count == 1

    def take(self, username: str, handle: str | None = None, keep_id: str | None = None) -> list[SessionRecord]:
        return [record for batch in self.take_batches(username, handle, keep_id) for record in batch]

    def take_batches(self, username: str, handle: str | None = None, keep_id: str | None = None,
                     batch: int = TAKE_BATCH) -> Iterator[list[SessionRecord]]:
        # Never one unbounded read or ``$in``: each round reads at most ``batch`` records and deletes
        # exactly those, each call under the client's deadline, so any number of sessions ends in
        # steps that each fit it. Every delete reaches the change feed as its own event.
        query = self._objects().filter(username=username)
        if handle is not None:
            query = query.filter(handle=handle)
        if keep_id is not None:
            query = query.filter(id__ne=keep_id)
        size = max(1, min(batch, TAKE_BATCH))
        while True:
            docs = guarded(list, query.clone().limit(size).as_pymongo())
            if not docs:
                return
            found = [record_from_document(d) for d in docs]
            guarded(self._objects().filter(id__in=[r.id for r in found], username=username).delete)
            yield found
            if len(docs) < size:
                return

    def _live(self, accessed_after: datetime | None, expires_after: datetime | None) -> Any:
        query = self._objects()
        if accessed_after is not None:
            query = query.filter(accessed__gt=accessed_after)
        if expires_after is not None:
            query = query.filter(expires__gt=expires_after)
        return query

    def list_user(self, username: str, accessed_after: datetime | None = None,
                  expires_after: datetime | None = None, limit: int = 50) -> list[SessionRecord]:
        query = self._live(accessed_after, expires_after).filter(username=username)
        newest = query.order_by("-created").limit(limit).as_pymongo()
        return [record_from_document(d) for d in guarded(list, newest)]

    def stats(self, accessed_after: datetime, expires_after: datetime,
              timeout: float | None = None) -> SessionStats:
        # One aggregation: the database counts, nothing but 25 numbers comes back.
        facets = [{"$facet": {"hours": [{"$group": {"_id": {"$hour": "$created"}, "n": {"$sum": 1}}}],
                              "users": [{"$group": {"_id": "$username"}}, {"$count": "n"}]}}]
        live = self._live(accessed_after, expires_after)

        def count() -> list[Document]:
            # pymongo.timeout replaces the client's per-operation deadline for this one call.
            with pymongo.timeout(timeout) if timeout is not None else contextlib.nullcontext():
                return list(live.aggregate(facets))

        result = guarded(count)  # the call itself can fail too
        found = result[0] if result else {}
        by_hour = {h: 0 for h in range(24)}
        for row in found.get("hours", []):
            if isinstance(row.get("_id"), int) and 0 <= row["_id"] < 24:
                by_hour[row["_id"]] = int(row["n"])
        users = found.get("users") or [{"n": 0}]
        return {"active": sum(by_hour.values()), "users": int(users[0]["n"]), "by_hour": by_hour}

    def ping(self) -> None:
        guarded(self.collection.database.command, "ping")

    def watch(self, listener: ChangeListener, stop: threading.Event) -> None:
        """Follow the collection's change stream until ``stop`` is set.

        After an error the stream is resumed from its last resume token (a
        new one is opened when that history is gone); the listener is told
        ``stream_down`` first and ``stream_up`` again only once the stream
        is open, so nothing cached while it was down is trusted.
        """
        token: Mapping[str, Any] | None = None
        failures = 0
        while not stop.is_set():
            try:
                with self.collection.watch(REVOCATIONS, resume_after=token,
                                           max_await_time_ms=WATCH_AWAIT_MS) as stream:
                    listener.stream_up()
                    logs.recovered("change_stream", "session change stream running again; the session cache "
                                   "is trusted")
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
                logs.trouble("change_stream", "session change stream lost: %s; every session is read from "
                             "the database until it is back", logs.database_words(exc))
                stop.wait(delay)


def _dispatch(change: Mapping[str, Any], listener: ChangeListener) -> bool:
    """Tell the listener what one change event means; False when the stream is over."""
    kind = change.get("operationType")
    record_id = (change.get("documentKey") or {}).get("_id")
    if kind in ("update", "delete", "replace") and record_id is not None:
        listener.forget(record_id)
    else:  # drop, rename, dropDatabase, invalidate, or anything unknown: start over
        listener.stream_down()
        return False
    return True
