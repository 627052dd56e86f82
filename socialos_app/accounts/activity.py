"""Each user's security history: sign-ins, sign-outs, devices ended and by whom,
identity confirmed, wrong passwords and throttled attempts, tampered sessions.

Kept in MongoDB (``db.documents.ActivityEvent``) for ``ACTIVITY_DAYS`` (a TTL
index), written as session records are (``w=majority``, journaled), so a line
the page reported stays after a crash. An event is one insert. Wrong
passwords and attempts held back by the throttle are counted on one line per
account, address and hour (an upsert with ``$inc``), so a flood of guesses
grows the history by a line an hour, not a line a guess; throttled attempts
are only counted on an account that had a wrong password from that address
this hour or the last, so a spray of made-up usernames past the throttle
writes nothing.

Nothing here holds a secret: device words, an address, times, and for an
ended session a hash of its record id (``session_ref``), which lets the
browser that held it be told why it was signed out.
"""

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING, ReadPreference, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from socialos_app.accounts.useragent import browser_of, system_of
from socialos_app.db.connection import guarded
from socialos_app.db.documents import ActivityEvent, collection_of, create_indexes
from socialos_app.settings import Settings
from socialos_app.storage import StoreUnavailable, utcnow

__all__ = ["Activity", "Event", "ENDED_BY", "PAGE_SIZE", "family_of", "session_ref", "words"]

PAGE_SIZE = 20        # lines per page of /activity
MAX_PAGE_SIZE = 50
MAX_PAGE = 500        # deeper pages would make the database skip too far
_TEXT = 200           # characters of a device or address kept

# Who ended a session, as the history says it.
ENDED_BY = {
    "you": "from another of your devices",
    "others": "by “Sign out everywhere else”",
    "admin": "by an administrator",
    "limit": "because a new sign-in went over the limit of signed-in devices",
}


def session_ref(record_id: str) -> str:
    """A hash naming a session record in the history (never its id, never its token)."""
    return hashlib.sha256(b"socialos/ended:" + record_id.encode()).hexdigest()[:32]


def family_of(user_agent: object) -> str:
    """The browser and system family ("Firefox on Windows"): what tells a new device."""
    agent = user_agent if isinstance(user_agent, str) else ""
    return f"{browser_of(agent) or 'Unknown browser'} on {system_of(agent) or 'an unknown system'}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word if count == 1 else word + 's'}"


@dataclass(frozen=True)
class Event:
    """One line of the history as pages show it."""

    kind: str
    at: datetime
    device: str = ""
    address: str = ""
    by: str = ""
    first: datetime | None = None
    wrong: int = 0
    held: int = 0

    @property
    def words(self) -> str:
        """The line in words (``words``)."""
        return words(self)


def words(event: Event) -> str:
    """What happened, in a sentence without its time."""
    device = event.device or "an unknown device"
    address = event.address or "an unknown address"
    if event.kind == "signed_in":
        return f"Signed in on {device} from {address}"
    if event.kind == "signed_out":
        return f"Signed out on {device} ({address})"
    if event.kind == "ended":
        return f"{device} ({address}) was signed out {ENDED_BY.get(event.by, 'from elsewhere')}"
    if event.kind == "confirmed":
        return f"Confirmed it's you on {device} from {address}"
    if event.kind == "failed":
        parts = []
        if event.wrong:
            parts.append(f"{_plural(event.wrong, 'wrong password')} entered")
        if event.held:
            parts.append(f"{_plural(event.held, 'attempt')} held back by the sign-in throttle")
        return (" and ".join(parts) or "Sign-in attempts") + f" from {address}"
    if event.kind == "tampered":
        return f"A session on {device} ({address}) was ended: its stored record had been altered"
    return event.kind


def _hour(now: datetime) -> str:
    return now.strftime("%Y%m%d%H")


def _counted_id(username: str, address: str, hour: str) -> str:
    key = "\0".join((username, address, hour)).encode()
    return "c:" + hashlib.sha256(key).hexdigest()[:40]


class Activity:
    """The security history over one collection (``ActivityEvent``'s own by default; tests pass one).

    Methods raise ``StoreUnavailable`` when the database is down.
    """

    def __init__(self, collection: Collection[dict[str, Any]] | None = None,
                 days: int = Settings.activity_days) -> None:
        base = collection if collection is not None else collection_of(ActivityEvent)
        # As the session store writes its records: a majority, journaled; reads from the primary.
        self.collection: Collection[dict[str, Any]] = base.with_options(
            read_preference=ReadPreference.PRIMARY, write_concern=WriteConcern(w="majority", j=True))
        self.days = days

    def setup(self) -> None:
        """The indexes of ``ActivityEvent``, its TTL from ``ACTIVITY_DAYS`` (idempotent)."""
        guarded(create_indexes, ActivityEvent, self.collection, ttl={"activity_ttl": self.days * 86400})

    # -- writing --------------------------------------------------------------------
    def record(self, username: str, kind: str, *, device: str = "", address: str = "", family: str = "",
               by: str = "", sid: str = "", at: datetime | None = None) -> None:
        """One event, one insert."""
        doc: dict[str, Any] = {"_id": secrets.token_hex(12), "username": username, "kind": kind,
                               "at": at or utcnow(), "device": device[:_TEXT], "address": address[:_TEXT]}
        if family:
            doc["family"] = family[:_TEXT]
        if by:
            doc["by"] = by
        if sid:
            doc["sid"] = sid
        guarded(self.collection.insert_one, doc)

    def record_many(self, events: Iterable[dict[str, Any]]) -> None:
        """Several events of ``record``'s keyword arguments (with ``username`` and ``kind``), one write."""
        now = utcnow()
        docs = []
        for event in events:
            doc = {"_id": secrets.token_hex(12), "at": now, **event}
            docs.append({k: (v[:_TEXT] if isinstance(v, str) and k in ("device", "address") else v)
                         for k, v in doc.items() if v != ""})
        if docs:
            guarded(self.collection.insert_many, docs, ordered=False)

    def failed(self, username: str, address: str) -> None:
        """A wrong password on ``username`` from ``address``: counted on this hour's line."""
        self._count(username.lower(), address, "wrong", create=True)

    def held(self, username: str, address: str) -> None:
        """An attempt the throttle held back: counted on this hour's line, if the account
        had a wrong password from this address this hour or the last (else not at all)."""
        self._count(username.lower(), address, "held", create=False)

    def _count(self, username: str, address: str, field: str, create: bool) -> None:
        now = utcnow()
        address = address[:_TEXT]
        line = _counted_id(username, address, _hour(now))
        update = {"$inc": {field: 1}, "$max": {"at": now}}
        if guarded(self.collection.update_one, {"_id": line}, update).matched_count:
            return
        if not create:
            last = _counted_id(username, address, _hour(now - timedelta(hours=1)))
            if guarded(self.collection.find_one, {"_id": last}, {"_id": 1}) is None:
                return
        fields = {"wrong": 0, "held": 0}
        fields.pop(field)
        try:
            guarded(self.collection.update_one, {"_id": line},
                    {**update, "$setOnInsert": {"username": username, "kind": "failed", "first": now,
                                                "address": address, **fields}}, upsert=True)
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, DuplicateKeyError):
                raise
            # Another attempt made the line first: count on it.
            guarded(self.collection.update_one, {"_id": line}, update)

    # -- reading --------------------------------------------------------------------
    def seen(self, username: str, family: str, address: str) -> bool:
        """Whether ``username`` signed in from this browser family and address within the window."""
        since = utcnow() - timedelta(days=self.days)
        found = guarded(self.collection.find_one, {"username": username, "family": family[:_TEXT],
                                                   "address": address[:_TEXT], "at": {"$gt": since}},
                        {"_id": 1})
        return found is not None

    def page(self, username: str, number: int = 1, size: int = PAGE_SIZE) -> tuple[list[Event], bool]:
        """One page of the user's history, newest first, and whether an older page follows."""
        size = max(1, min(size, MAX_PAGE_SIZE))
        number = max(1, min(number, MAX_PAGE))
        names = sorted({username, username.lower()})
        since = utcnow() - timedelta(days=self.days)  # the TTL monitor may lag: the window is exact here
        cursor = self.collection.find({"username": {"$in": names}, "at": {"$gt": since}}).sort(
            "at", DESCENDING).skip((number - 1) * size).limit(size + 1)
        docs = guarded(list, cursor)
        return [_event(d) for d in docs[:size]], len(docs) > size and number < MAX_PAGE

    def recent(self, username: str, count: int = 10) -> list[Event]:
        """The user's last ``count`` events, newest first."""
        return self.page(username, 1, count)[0]

    def why_ended(self, record_ids: Sequence[str]) -> str:
        """How the session one of ``record_ids`` named was ended ("you", "others", "admin",
        "limit", "tampered"), or "" when the history doesn't say."""
        refs = [session_ref(r) for r in record_ids]
        found = guarded(self.collection.find_one, {"sid": {"$in": refs}}, {"kind": 1, "by": 1})
        if found is None:
            return ""
        if found.get("kind") == "tampered":
            return "tampered"
        by = found.get("by")
        return by if isinstance(by, str) and by in ENDED_BY else ""


def _event(doc: dict[str, Any]) -> Event:
    def text(name: str) -> str:
        value = doc.get(name)
        return value if isinstance(value, str) else ""

    def number(name: str) -> int:
        value = doc.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    at = doc.get("at")
    first = doc.get("first")
    return Event(kind=text("kind"), at=at if isinstance(at, datetime) else datetime(1970, 1, 1),
                 device=text("device"), address=text("address"), by=text("by"),
                 first=first if isinstance(first, datetime) else None, wrong=number("wrong"), held=number("held"))
