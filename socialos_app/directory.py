"""Who the app knows in presence channels: member names by user id, in MongoDB.

Pusher's channel-users call returns only ids. Names come from our own
channel authorizations (we sign each member's ``user_info``), from the
Social OS profile when a page looks one up, and membership from webhooks.
"""


import mongoengine as me

from .sessions.engine import utcnow
from .sessions.mongo import ALIAS, call

__all__ = ["MemberDirectory", "PresenceMember"]


class PresenceMember(me.Document):
    """A presence-channel member the app has seen."""

    id = me.StringField(primary_key=True)      # Pusher user_id (a Social OS username here)
    name = me.StringField(default="")
    channels = me.ListField(me.StringField())  # where webhooks last saw them
    seen = me.DateTimeField()

    meta = {"collection": "presence_members", "db_alias": ALIAS, "auto_create_index": False}


class MemberDirectory:
    """Names and channel membership by user id. Methods raise ``StoreUnavailable``."""

    def __init__(self):
        self.collection = PresenceMember._get_collection()

    def names(self, user_ids):
        """``{user_id: name}`` for the ids we know a name of (one query)."""
        if not user_ids:
            return {}
        docs = call(list, self.collection.find({"_id": {"$in": list(user_ids)}}, {"name": 1}))
        return {d["_id"]: d["name"] for d in docs if d.get("name")}

    def remember(self, user_id, name):
        call(self.collection.update_one, {"_id": user_id},
                   {"$set": {"name": name, "seen": utcnow()}}, upsert=True)

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
                call(self.collection.update_one, {"_id": user},
                           {"$addToSet": {"channels": channel}, "$set": {"seen": utcnow()}}, upsert=True)
            elif kind == "member_removed" and isinstance(user, str):
                call(self.collection.update_one, {"_id": user}, {"$pull": {"channels": channel}})
            elif kind == "channel_vacated":
                call(self.collection.update_many, {"channels": channel}, {"$pull": {"channels": channel}})
            elif kind != "channel_occupied":
                continue
            done += 1
        return done

    def in_channel(self, channel):
        """Ids webhooks say are in ``channel``."""
        return sorted(d["_id"] for d in call(list, self.collection.find({"channels": channel}, {"_id": 1})))
