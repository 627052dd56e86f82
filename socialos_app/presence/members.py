"""Who the app knows in presence channels, in MongoDB: names, missing profiles,
membership reported by Pusher's webhooks, and which webhooks were applied.

Pusher's channel-users call returns only ids. Names come from our own
channel authorizations (we sign each member's ``user_info``) and from the
Social OS profile when a page looks one up; an id with no profile (404) is
remembered as missing for a while so it isn't asked again on every view.
Membership comes from webhooks: the page shows it when Pusher itself
can't be asked.

Webhook bodies are applied once: Pusher redelivers a body it got no 2xx
for, so the SHA-256 of each body is kept (TTL index) and a body already
applied is answered without being applied again.
"""

from datetime import timedelta

from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError

from socialos_app.db.connection import guarded
from socialos_app.storage import StoreUnavailable, utcnow

__all__ = ["MemberDirectory", "MISSING_FOR", "DELIVERY_MEMORY"]

MISSING_FOR = timedelta(minutes=10)   # a 404 profile isn't looked up again for this long
DELIVERY_MEMORY = 3600                # seconds a webhook body's digest is kept (TTL)
# Pusher redelivers for a while; a body older than the webhook window (300 s) is refused
# anyway, so an hour covers every redelivery that could still be accepted.


class MemberDirectory:
    """Names, missing profiles and channel membership by user id.

    ``members`` is the ``presence_members`` collection, ``deliveries`` the
    ``webhook_deliveries`` one. Every method may raise ``StoreUnavailable``.
    """

    def __init__(self, members, deliveries):
        self.members = members
        self.deliveries = deliveries
        self._ready = False

    def setup(self):
        """Indexes: membership by channel; applied webhook digests expire by themselves."""
        guarded(self.members.create_index, "channels")
        guarded(self.deliveries.create_index, "at", expireAfterSeconds=DELIVERY_MEMORY)
        self._ready = True

    # -- names -----------------------------------------------------------------
    def lookup(self, user_ids):
        """``({user_id: name}, {user_ids whose profile is missing})`` for these ids (one query)."""
        if not user_ids:
            return {}, set()
        docs = guarded(list, self.members.find({"_id": {"$in": list(user_ids)}}, {"name": 1, "missing": 1}))
        since = utcnow() - MISSING_FOR
        names = {d["_id"]: d["name"] for d in docs if isinstance(d.get("name"), str) and d["name"]}
        missing = {d["_id"] for d in docs if d["_id"] not in names and d.get("missing") and d["missing"] > since}
        return names, missing

    def remember(self, user_id, name):
        """A member's name (from our channel authorization or their profile)."""
        guarded(self.members.update_one, {"_id": user_id},
                {"$set": {"name": name, "seen": utcnow()}, "$unset": {"missing": ""}}, upsert=True)

    def remember_missing(self, user_ids):
        """These ids have no Social OS profile (a 404): don't ask again for ``MISSING_FOR``."""
        if user_ids:
            now = utcnow()
            guarded(self.members.bulk_write,
                    [UpdateOne({"_id": uid}, {"$set": {"missing": now}}, upsert=True) for uid in user_ids],
                    ordered=False)

    # -- webhooks --------------------------------------------------------------
    def claim_delivery(self, digest):
        """True when a webhook body (by its digest) must be applied; False when it already was.

        A body whose earlier delivery failed half-way (claimed, never marked
        applied) is applied again: every event is idempotent on its own.
        """
        if not self._ready:
            self.setup()
        try:
            self.deliveries.insert_one({"_id": digest, "at": utcnow(), "applied": False})
            return True
        except DuplicateKeyError:
            found = guarded(self.deliveries.find_one, {"_id": digest}, {"applied": 1})
            return not (found and found.get("applied"))
        except PyMongoError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    def delivery_applied(self, digest):
        """Mark a claimed webhook body as applied: a redelivery of it is answered, not applied."""
        guarded(self.deliveries.update_one, {"_id": digest}, {"$set": {"applied": True}})

    def apply(self, events):
        """Apply Pusher webhook events; returns how many were understood."""
        done = 0
        for event in events:
            if not isinstance(event, dict):
                continue
            kind, channel, user = event.get("name"), event.get("channel"), event.get("user_id")
            if not isinstance(channel, str):
                continue
            if kind == "member_added" and isinstance(user, str):
                guarded(self.members.update_one, {"_id": user},
                        {"$addToSet": {"channels": channel}, "$set": {"seen": utcnow()}}, upsert=True)
            elif kind == "member_removed" and isinstance(user, str):
                guarded(self.members.update_one, {"_id": user}, {"$pull": {"channels": channel}})
            elif kind == "channel_vacated":
                guarded(self.members.update_many, {"channels": channel}, {"$pull": {"channels": channel}})
            elif kind != "channel_occupied":
                continue
            done += 1
        return done

    def in_channel(self, channel):
        """``{user_id: name}`` of those webhooks last said are in ``channel`` (name may be '')."""
        docs = guarded(list, self.members.find({"channels": channel}, {"name": 1}).limit(500))
        return {d["_id"]: d.get("name") or "" for d in docs}
