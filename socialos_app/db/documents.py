"""Every collection the app keeps, as a mongoengine ``Document``: fields and indexes in one place.

Each store takes a pymongo collection (its Document's own by default; tests
pass one of a database of their own) and makes the indexes declared here in
``meta`` with ``create_indexes`` at start-up. Off the request path the stores
query through the ODM (``objects``); the per-request path uses the collection
directly, because mongoengine's query building and object construction cost
more than the round trip itself.
"""

from collections.abc import Mapping
from typing import Any

import mongoengine as me
from mongoengine.queryset import QuerySet
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from socialos_app.db.connection import ALIAS
from socialos_app.settings import Settings

__all__ = ["ActivityEvent", "LoginCounter", "PresenceMember", "SessionDocument", "WebhookDelivery",
           "collection_of", "create_indexes", "objects", "DELIVERY_MEMORY"]

# Seconds a webhook body's digest is kept (TTL). Pusher redelivers for a while; a body
# older than the webhook window (300 s) is refused anyway, so an hour covers every
# redelivery that could still be accepted.
DELIVERY_MEMORY = 3600

# Indexes are made at start-up by ``create_indexes`` (so a changed TTL is applied),
# never by mongoengine on first use in the middle of a request.
_EXPLICIT = {"db_alias": ALIAS, "auto_create_index": False, "auto_create_index_on_save": False}


class SessionDocument(me.Document):
    """A signed-in browser as stored (``sessions.store.SessionRecord``): nothing here opens a
    cookie or an upstream key. ``idle_ttl`` takes ``SESSION_TTL`` at start-up."""

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
    fresh = me.DateTimeField()           # last sign-in or "Confirm it's you" (tagged)
    notice = me.StringField(default="")  # a security notice for the next page (tagged)

    meta = {"collection": "sessions", **_EXPLICIT, "indexes": [
        {"fields": ["accessed"], "name": "idle_ttl", "expireAfterSeconds": Settings.session_ttl},
        {"fields": ["expires"], "name": "absolute_ttl", "expireAfterSeconds": 0},
        {"fields": ["username"], "name": "by_user"},
    ]}


class ActivityEvent(me.Document):
    """One line of a user's security history (``accounts.activity``): what happened, on which
    device, from which address, when. Never a secret, a token or a password.

    Wrong passwords and throttled attempts are one line per account, address and
    hour (``wrong`` and ``held`` count them), so a guessing burst can't flood it.
    ``activity_ttl`` takes ``ACTIVITY_DAYS`` at start-up.
    """

    id = me.StringField(primary_key=True)
    username = me.StringField(required=True)
    kind = me.StringField(required=True)
    at = me.DateTimeField(required=True)   # when (the latest, for a counted line)
    first = me.DateTimeField()             # a counted line: its first attempt
    device = me.StringField(default="")    # in words ("Firefox on Windows")
    family = me.StringField(default="")    # browser and system family, to tell a new device
    address = me.StringField(default="")
    by = me.StringField(default="")        # who ended a session: you, others, admin, limit
    sid = me.StringField()                 # a hash naming the session ended, to tell its browser why
    wrong = me.IntField(default=0)
    held = me.IntField(default=0)

    meta = {"collection": "security_activity", **_EXPLICIT, "indexes": [
        {"fields": ["at"], "name": "activity_ttl", "expireAfterSeconds": Settings.activity_days * 86400},
        {"fields": ["username", "-at"], "name": "by_user"},
        {"fields": ["username", "family", "address"], "name": "seen"},
        {"fields": ["sid"], "name": "by_session", "sparse": True},
    ]}


class LoginCounter(me.Document):
    """One sign-in throttle counter (``accounts.throttle``): keyed by a hash, never a name or address."""

    id = me.StringField(primary_key=True)
    count = me.IntField(default=0)
    until = me.DateTimeField()       # the next attempt may be counted from then
    expires = me.DateTimeField()     # end of the window: the counter is removed (TTL)
    ok = me.BooleanField()           # whether the last reservation was counted

    meta = {"collection": "login_failures", **_EXPLICIT, "indexes": [
        {"fields": ["expires"], "name": "ttl", "expireAfterSeconds": 0},
    ]}


class PresenceMember(me.Document):
    """Someone the presence pages know (``presence.members``): a name, a missing profile, channels."""

    id = me.StringField(primary_key=True)
    name = me.StringField()
    seen = me.DateTimeField()
    missing = me.DateTimeField()     # when their profile was last found missing (a 404)
    channels = me.ListField(me.StringField())

    meta = {"collection": "presence_members", **_EXPLICIT, "indexes": ["channels"]}


class WebhookDelivery(me.Document):
    """A Pusher webhook body already claimed (by its SHA-256), so a redelivery isn't applied twice."""

    id = me.StringField(primary_key=True)
    at = me.DateTimeField(required=True)
    applied = me.BooleanField(default=False)

    meta = {"collection": "webhook_deliveries", **_EXPLICIT, "indexes": [
        {"fields": ["at"], "expireAfterSeconds": DELIVERY_MEMORY},
    ]}


def collection_of(document: type[me.Document]) -> Collection[dict[str, Any]]:
    """The document's own pymongo collection on the registered connection (no I/O)."""
    collection: Collection[dict[str, Any]] = document._get_collection()
    return collection


def objects(document: type[me.Document], collection: Collection[dict[str, Any]]) -> QuerySet:
    """The ODM's queries for ``document`` over ``collection`` (which may be another database's)."""
    return QuerySet(document, collection)


def create_indexes(document: type[me.Document], collection: Collection[dict[str, Any]] | None = None,
                   ttl: Mapping[str, int] | None = None) -> None:
    """Make the indexes in ``document``'s ``meta`` on ``collection`` (default: its own).

    What ``Document.ensure_indexes`` does, on any collection, plus one thing it
    can't: ``ttl`` gives named TTL indexes their ``expireAfterSeconds`` from the
    settings, and an index already made with another value is changed in place
    (``collMod``), so a changed ``SESSION_TTL`` takes effect at the next start.
    Idempotent; raises the driver's errors (callers wrap it in ``guarded``).
    """
    target = collection if collection is not None else collection_of(document)
    ttl = ttl or {}
    for spec in document._meta["index_specs"]:
        options = dict(spec)
        fields = options.pop("fields")
        seconds = ttl.get(str(options.get("name")))
        if seconds is not None:
            options["expireAfterSeconds"] = seconds
        try:
            target.create_index(fields, **options)
        except OperationFailure:
            if seconds is None:
                raise
        if seconds is not None:
            # create_index refuses (or, on some servers, ignores) a changed TTL: adjust it in place.
            made = target.index_information().get(options["name"], {})
            if made.get("expireAfterSeconds") != seconds:
                target.database.command("collMod", target.name,
                                        index={"name": options["name"], "expireAfterSeconds": seconds})
