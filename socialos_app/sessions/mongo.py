"""The MongoDB session backend, through mongoengine.

The document schema is a mongoengine ``Document``; the hot path (one load
per request) goes to the raw collection with a projection, because
mongoengine's query building and object construction cost more than the
round trip itself. Reads go to the primary and writes wait for a majority,
so a sign-out on one instance is seen by every other at once.
"""

from datetime import timedelta

import mongoengine as me
from pymongo import DESCENDING, ReadPreference, WriteConcern
from pymongo.errors import OperationFailure

from ..db import ALIAS, connect
from ..db import guarded as call  # old name, kept until every caller moves to db.guarded
from .store import SessionRecord, SessionStore

__all__ = ["MongoSessionStore", "SessionDocument", "call", "connect"]

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

    # Indexes are made by MongoSessionStore.setup(): the idle TTL comes from settings.
    meta = {"collection": "sessions", "db_alias": ALIAS, "auto_create_index": False}


_FIELDS = ("username", "name", "admin", "sealed", "created", "accessed", "expires",
           "handle", "user_agent", "address")


def _record(doc):
    return SessionRecord(id=doc["_id"], **{f: doc.get(f) for f in _FIELDS})


class MongoSessionStore(SessionStore):
    """Sessions in the ``sessions`` collection of the connected database."""

    def __init__(self):
        self.collection = SessionDocument._get_collection().with_options(
            read_preference=ReadPreference.PRIMARY,
            write_concern=WriteConcern(w="majority"),
        )

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
        call(make)

    def create(self, record):
        doc = SessionDocument(id=record.id, **{f: getattr(record, f) for f in _FIELDS})
        call(self.collection.insert_one, doc.to_mongo().to_dict())

    def load(self, ids):
        query = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": list(ids)}}
        doc = call(self.collection.find_one, query)
        return _record(doc) if doc else None

    def touch(self, record_id, accessed):
        call(self.collection.update_one, {"_id": record_id}, {"$set": {"accessed": accessed}})

    def replace(self, old_id, record):
        self.create(record)
        self.destroy(old_id)

    def destroy(self, record_id):
        return call(self.collection.delete_one, {"_id": record_id}).deleted_count == 1

    def destroy_where(self, username, handle=None, keep_id=None):
        query = {"username": username}
        if handle is not None:
            query["handle"] = handle
        if keep_id is not None:
            query["_id"] = {"$ne": keep_id}
        return call(self.collection.delete_many, query).deleted_count

    def list_user(self, username):
        cursor = self.collection.find({"username": username}).sort("created", DESCENDING).limit(50)
        return [_record(d) for d in call(list, cursor)]

    def stats(self, now, idle_seconds):
        live = {"accessed": {"$gt": now - timedelta(seconds=idle_seconds)}, "expires": {"$gt": now}}
        docs = call(list, self.collection.find(live, {"username": 1, "created": 1}))
        by_hour = {h: 0 for h in range(24)}
        for d in docs:
            by_hour[d["created"].hour] += 1
        return {"active": len(docs), "users": len({d["username"] for d in docs}), "by_hour": by_hour}

    def ping(self):
        call(self.collection.database.command, "ping")
