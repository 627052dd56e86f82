"""What every store shares, whatever its backend: the error for "not now", and the clock.

The session backends, the sign-in throttle and the presence directory raise
``StoreUnavailable`` for a real failure of their database (a 503 for the page),
and stamp records with ``utcnow()``; neither depends on MongoDB.
"""

from datetime import UTC, datetime

__all__ = ["StoreUnavailable", "utcnow"]


class StoreUnavailable(Exception):
    """The database cannot be reached now; the request should get a 503."""


def utcnow() -> datetime:
    """Naive UTC with millisecond precision, as MongoDB stores and returns it."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
