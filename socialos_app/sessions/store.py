"""The small interface every session backend implements, and its record.

A backend stores opaque records by id; it knows nothing of cookies, keys or
timeouts beyond indexing them. ``engine.SessionEngine`` holds the policy.
"""

from dataclasses import dataclass
from datetime import datetime

from ..db import StoreUnavailable

__all__ = ["SessionRecord", "SessionStore", "StoreUnavailable"]


@dataclass
class SessionRecord:
    """One signed-in browser. ``sealed`` is the encrypted upstream API key."""

    id: str               # keyed hash of the cookie's token, never the token
    username: str
    name: str
    admin: bool
    sealed: bytes
    created: datetime     # naive UTC, as MongoDB returns it
    accessed: datetime
    expires: datetime     # absolute end of life
    handle: str = ""      # short public id, to name a device in the owner's list
    user_agent: str = ""
    address: str = ""


class SessionStore:
    """Where sessions live. Every method may raise ``StoreUnavailable``."""

    def setup(self, idle_seconds):
        """Create indexes (idle expiry after ``idle_seconds``); idempotent."""
        raise NotImplementedError

    def create(self, record):
        raise NotImplementedError

    def load(self, ids):
        """The record whose id is one of ``ids`` (tried in one round trip), or None."""
        raise NotImplementedError

    def touch(self, record_id, accessed):
        raise NotImplementedError

    def replace(self, old_id, record):
        """Store ``record`` in place of ``old_id`` (re-sealing under a new key)."""
        raise NotImplementedError

    def destroy(self, record_id):
        """Delete one session; True when it existed."""
        raise NotImplementedError

    def destroy_where(self, username, handle=None, keep_id=None):
        """Delete a user's sessions (one by handle, or all but ``keep_id``); the count."""
        raise NotImplementedError

    def list_user(self, username):
        """A user's live sessions, newest first."""
        raise NotImplementedError

    def stats(self, now, idle_seconds):
        """``{"active": N, "users": N, "by_hour": {0..23: N}}`` over live sessions."""
        raise NotImplementedError

    def ping(self):
        """Raise ``StoreUnavailable`` unless the backend answers."""
        raise NotImplementedError
