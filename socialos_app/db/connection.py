"""The MongoDB connection: one client, registered with mongoengine, and one error wrapper.

Every store (sessions, sign-in throttle, member directory) takes its
collection in its constructor, as flask-session's backends take their
client and collection; this module only makes the connection and hands
out ``database()``. The connection is registered with mongoengine (the
schema documents use it), but the hot path talks to pymongo collections
directly: mongoengine's query building costs more than the round trip.
"""

import mongoengine as me
from pymongo.errors import PyMongoError

from socialos_app.settings import Settings
from socialos_app.storage import StoreUnavailable

__all__ = ["ALIAS", "connect", "disconnect", "database", "guarded"]

ALIAS = "sessions"  # the mongoengine alias every document and store uses


def connect(uri, timeout_ms=Settings.db_timeout_ms, pool_size=Settings.thread_pool + 4, **client_options):
    """Register the connection (lazy: nothing is sent until first use); the ``MongoClient``.

    Bounded server-selection and socket timeouts turn a dead database into a
    prompt 503 instead of a hung request thread. ``client_options`` go to
    ``MongoClient`` as they are (tests pass ``event_listeners``).
    """
    me.disconnect(ALIAS)
    options = dict(
        serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
        # One deadline for a whole operation, retries included: a slow database
        # can't hold a request thread for more than this.
        timeoutMS=timeout_ms * 2,
        # After a failover or restart, find the server again within ~2 s, not 10.
        heartbeatFrequencyMS=2000,
        maxPoolSize=pool_size, retryWrites=True, tz_aware=False, uuidRepresentation="standard",
    )
    options.update(client_options)
    return me.connect(host=uri, alias=ALIAS, **options)


def disconnect():
    """Close the connection ``connect`` made (tests; a stopping process)."""
    me.disconnect(ALIAS)


def database():
    """The pymongo ``Database`` named by the connection URI."""
    return me.get_db(ALIAS)


def guarded(fn, *args, **kwargs):
    """Run one database operation; any driver error becomes ``StoreUnavailable``."""
    try:
        return fn(*args, **kwargs)
    except PyMongoError as exc:
        raise StoreUnavailable(type(exc).__name__) from exc
