"""The interface every session backend implements, and its record.

A backend stores opaque records by id; it knows nothing of cookies, keys,
tags or timeouts beyond indexing and filtering by the bounds the engine
passes in. ``engine.SessionEngine`` holds every rule. ``tests/test_store_contract.py``
runs one suite of tests against every backend (MongoDB and in-memory).
"""

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, Self, TypedDict

from socialos_app.settings import Settings

__all__ = ["ChangeListener", "RecordExists", "SessionRecord", "SessionStats", "SessionStore", "TAKE_BATCH"]

# The most records one step of ending a user's sessions reads and deletes (``take_batches``):
# its id list stays far below the 16 MB command limit and its round trip well under the
# deadline (a majority-journaled delete by ``_id $in`` costs more than linearly in the list
# on some servers: SecantusDB took ~0.1 s for 100 ids, ~4 s for 1,000).
TAKE_BATCH = 200


class RecordExists(Exception):
    """``create`` found the id taken: another request made that record first."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One signed-in browser. Frozen: a change is a new record (``dataclasses.replace``).

    ``sealed`` is the upstream API key, encrypted under a key that needs the
    cookie's token; ``key_ref`` the upstream key's token alone, sealed under
    a server-only key; ``tag`` authenticates every field but ``accessed``
    (``fresh`` and ``notice`` included).
    """

    id: str               # keyed hash of the cookie's token, never the token
    username: str
    name: str
    admin: bool
    sealed: bytes = field(repr=False)
    created: datetime     # naive UTC, as MongoDB returns it
    accessed: datetime
    expires: datetime     # absolute end of life
    handle: str = ""      # short public id, to name a device in the owner's list
    user_agent: str = ""
    address: str = ""
    # The server-sealed upstream key token, and the tag (both empty in records made before them).
    key_ref: bytes = field(default=b"", repr=False)
    tag: bytes = field(default=b"", repr=False)
    # When the owner last proved their password here (sign-in or "Confirm it's you"); None in
    # records made before it existed (their ``created`` stands in). Tagged: no writer makes a session fresh.
    fresh: datetime | None = None
    # A security notice waiting for this browser's next page (``accounts.activity``), "" for none. Tagged.
    notice: str = ""


class SessionStats(TypedDict):
    """``SessionStore.stats``: live records, distinct users, records by the hour they were created."""

    active: int
    users: int
    by_hour: dict[int, int]


class ChangeListener(Protocol):
    """What a store's change feed (``SessionStore.watch``) tells; ``sessions.cache.SessionCache`` listens."""

    def stream_up(self) -> None:
        """The feed is open: every later change is sure to be reported."""

    def stream_down(self) -> None:
        """The feed stopped (an error, a restart, lost history): nothing reported may be trusted."""

    def forget(self, record_id: str) -> None:
        """A record was deleted, replaced, changed, or its ``accessed`` moved into the past.

        A touch (``accessed`` alone, moved to about now) needn't be told: a
        listener that keeps records reads one again before refusing it as idle."""


class SessionStore(ABC):
    """Where sessions live. Every method may raise ``storage.StoreUnavailable``, and only
    for a real failure of the backend (never for a missing or duplicate record).

    A backend is one module in ``sessions/backends/`` and one line in its
    ``BACKENDS`` table, which ``SESSION_STORE`` picks from."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The store made from the settings, as ``backends.get_store`` makes it; no I/O here."""
        return cls()

    @abstractmethod
    def setup(self, idle_seconds: int) -> None:
        """Create what the backend needs (indexes; records idle for ``idle_seconds``
        may be removed by the backend itself). Idempotent; a changed
        ``idle_seconds`` takes effect."""

    @abstractmethod
    def create(self, record: SessionRecord) -> None:
        """Store a new record, durably (it survives a crash once this returns).
        Raise ``RecordExists`` if a record with its id is already stored."""

    @abstractmethod
    def load(self, ids: Sequence[str]) -> SessionRecord | None:
        """The stored record whose id is one of ``ids`` (one round trip), or None."""

    @abstractmethod
    def update(self, record: SessionRecord) -> bool:
        """Replace every field of the stored record with ``record.id``; True if it
        was there (False: nothing stored, nothing written)."""

    @abstractmethod
    def touch(self, record_id: str, accessed: datetime) -> None:
        """Set only ``accessed`` of one record (no error if it is gone)."""

    def touch_many(self, touches: Mapping[str, datetime]) -> None:
        """``touch`` each of ``{record_id: accessed}`` (a backend may do it in one round trip)."""
        for record_id, accessed in touches.items():
            self.touch(record_id, accessed)

    @abstractmethod
    def destroy(self, record_id: str) -> bool:
        """Delete one record, durably; True when it existed."""

    @abstractmethod
    def take(self, username: str, handle: str | None = None,
             keep_id: str | None = None) -> list[SessionRecord]:
        """Delete a user's records, durably (only the one with ``handle`` when
        given; never ``keep_id``) and return the records deleted.

        Every one of them, however many: a backend works in bounded steps
        (``take_batches``), never one unbounded query or id list."""

    def take_batches(self, username: str, handle: str | None = None, keep_id: str | None = None,
                     batch: int = TAKE_BATCH) -> Iterator[list[SessionRecord]]:
        """``take`` in steps: each step deletes at most ``batch`` (at most ``TAKE_BATCH``) of the
        records, durably, then yields them, until none is left. Each step is its own bounded
        round trip under the database's deadline; a caller that stops iterating leaves the rest.
        (This default takes them all in one step; a backend that can overrides it.)"""
        taken = self.take(username, handle, keep_id)
        if taken:
            yield taken

    @abstractmethod
    def list_user(self, username: str, accessed_after: datetime | None = None,
                  expires_after: datetime | None = None, limit: int = 50) -> list[SessionRecord]:
        """A user's records, newest ``created`` first, at most ``limit``; only those
        with ``accessed > accessed_after`` and ``expires > expires_after`` when given."""

    @abstractmethod
    def stats(self, accessed_after: datetime, expires_after: datetime,
              timeout: float | None = None) -> SessionStats:
        """Over records with ``accessed > accessed_after`` and ``expires > expires_after``:
        ``{"active": N, "users": distinct usernames, "by_hour": {0..23: N by created hour}}``.
        Computed by the backend without returning the records, within ``timeout``
        seconds when given (a background count may take longer than a page may)."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the backend answers; raise ``StoreUnavailable`` otherwise."""

    def watch(self, listener: ChangeListener, stop: threading.Event) -> None:
        """Optional change feed, run in the caller's thread until ``stop`` (an Event) is set.

        Tells ``listener`` (a ``ChangeListener``) of every change to a stored
        record but touches of ``accessed`` alone, and whether the feed is up.
        A backend without a feed raises ``NotImplementedError``: the engine
        then reads through on every request.
        """
        raise NotImplementedError
