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
applied is answered without being applied again. Off the request path
(webhooks, a page's names), so every query but one bulk write goes through the ODM.
"""

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from mongoengine.errors import NotUniqueError
from pymongo import UpdateOne
from pymongo.collection import Collection

from socialos_app.db.connection import guarded
from socialos_app.db.documents import (
    DELIVERY_MEMORY,
    PresenceMember,
    WebhookDelivery,
    collection_of,
    create_indexes,
    objects,
)
from socialos_app.storage import StoreUnavailable, utcnow

__all__ = ["MemberDirectory", "MISSING_FOR", "DELIVERY_MEMORY"]

MISSING_FOR = timedelta(minutes=10)   # a 404 profile isn't looked up again for this long


class MemberDirectory:
    """Names, missing profiles and channel membership by user id.

    ``members`` holds ``db.documents.PresenceMember``s, ``deliveries``
    ``WebhookDelivery``s (their own collections by default; tests pass their
    own). The app keeps them in MongoDB whatever ``SESSION_STORE`` says.
    Every method may raise ``StoreUnavailable``.
    """

    def __init__(self, members: Collection[dict[str, Any]] | None = None,
                 deliveries: Collection[dict[str, Any]] | None = None) -> None:
        self.members = members if members is not None else collection_of(PresenceMember)
        self.deliveries = deliveries if deliveries is not None else collection_of(WebhookDelivery)
        self._ready = False

    def _members(self) -> Any:
        return objects(PresenceMember, self.members)

    def _deliveries(self) -> Any:
        return objects(WebhookDelivery, self.deliveries)

    def setup(self) -> None:
        """Indexes (the Documents' ``meta``): membership by channel; applied webhook digests expire."""
        guarded(create_indexes, PresenceMember, self.members)
        guarded(create_indexes, WebhookDelivery, self.deliveries)
        self._ready = True

    # -- names -----------------------------------------------------------------
    def lookup(self, user_ids: Iterable[str]) -> tuple[dict[str, str], set[str]]:
        """``({user_id: name}, {user_ids whose profile is missing})`` for these ids (one query)."""
        ids = list(user_ids)
        if not ids:
            return {}, set()
        found = self._members().filter(id__in=ids).only("name", "missing").as_pymongo()
        docs: list[dict[str, Any]] = guarded(list, found)
        since = utcnow() - MISSING_FOR
        names = {d["_id"]: d["name"] for d in docs if isinstance(d.get("name"), str) and d["name"]}
        missing = {d["_id"] for d in docs if d["_id"] not in names and d.get("missing") and d["missing"] > since}
        return names, missing

    def remember(self, user_id: str, name: str) -> None:
        """A member's name (from our channel authorization or their profile)."""
        guarded(self._members().filter(id=user_id).update_one, upsert=True,
                set__name=name, set__seen=utcnow(), unset__missing=True)

    def remember_missing(self, user_ids: Iterable[str]) -> None:
        """These ids have no Social OS profile (a 404): don't ask again for ``MISSING_FOR``."""
        ids = list(user_ids)
        if ids:
            now = utcnow()
            # One round trip for them all: a bulk of upserts, which the ODM has no call for.
            guarded(self.members.bulk_write,
                    [UpdateOne({"_id": uid}, {"$set": {"missing": now}}, upsert=True) for uid in ids],
                    ordered=False)

    # -- webhooks --------------------------------------------------------------
    def claim_delivery(self, digest: str) -> bool:
        """True when a webhook body (by its digest) must be applied; False when it already was.

        A body whose earlier delivery failed half-way (claimed, never marked
        applied) is applied again: every event is idempotent on its own.
        """
        if not self._ready:
            self.setup()
        try:
            guarded(self._deliveries().insert, WebhookDelivery(id=digest, at=utcnow(), applied=False),
                    load_bulk=False)
            return True
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, NotUniqueError):
                raise
        found = guarded(self._deliveries().filter(id=digest).only("applied").as_pymongo().first)
        return not (found and found.get("applied"))

    def delivery_applied(self, digest: str) -> None:
        """Mark a claimed webhook body as applied: a redelivery of it is answered, not applied."""
        guarded(self._deliveries().filter(id=digest).update_one, set__applied=True)

    def apply(self, events: Iterable[object]) -> int:
        """Apply Pusher webhook events; returns how many were understood."""
        done = 0
        for event in events:
            if not isinstance(event, dict):
                continue
            kind, channel, user = event.get("name"), event.get("channel"), event.get("user_id")
            if not isinstance(channel, str):
                continue
            if kind == "member_added" and isinstance(user, str):
                guarded(self._members().filter(id=user).update_one, upsert=True,
                        add_to_set__channels=channel, set__seen=utcnow())
            elif kind == "member_removed" and isinstance(user, str):
                guarded(self._members().filter(id=user).update_one, pull__channels=channel)
            elif kind == "channel_vacated":
                guarded(self._members().filter(channels=channel).update, pull__channels=channel)
            elif kind != "channel_occupied":
                continue
            done += 1
        return done

    def in_channel(self, channel: str) -> dict[str, str]:
        """``{user_id: name}`` of those webhooks last said are in ``channel`` (name may be '')."""
        found = self._members().filter(channels=channel).only("name").limit(500).as_pymongo()
        docs: list[dict[str, Any]] = guarded(list, found)
        return {d["_id"]: d.get("name") or "" for d in docs}
