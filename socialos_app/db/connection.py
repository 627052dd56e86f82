"""The MongoDB connection: one client, registered with mongoengine, and one error wrapper.

Every store (sessions, sign-in throttle, member directory) takes its
collection in its constructor (its ``db.documents`` Document's own by
default), as flask-session's backends take their client and collection;
this module only makes the connection and hands out ``database()``.
"""

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import mongoengine as me
from bson.errors import InvalidBSON
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import DocumentTooLarge, PyMongoError

from socialos_app.settings import Settings
from socialos_app.storage import StoreUnavailable

__all__ = ["ALIAS", "DRIVER_ERRORS", "connect", "disconnect", "database", "guarded"]

ALIAS = "sessions"  # the mongoengine alias every document and store uses

P = ParamSpec("P")
T = TypeVar("T")


def connect(uri: str, timeout_ms: int = Settings.db_timeout_ms, pool_size: int = Settings.thread_pool + 4,
            **client_options: Any) -> MongoClient[dict[str, Any]]:
    """Register the connection (lazy: nothing is sent until first use); the ``MongoClient``.

    Bounded server-selection and socket timeouts turn a dead database into a
    prompt 503 instead of a hung request thread. ``client_options`` go to
    ``MongoClient`` as they are (tests pass ``event_listeners``).
    """
    me.disconnect(ALIAS)
    options: dict[str, Any] = dict(
        serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
        # One deadline for a whole operation, retries included: a slow database
        # can't hold a request thread for more than this.
        timeoutMS=timeout_ms * 2,
        # After a failover or restart, find the server again within ~2 s, not 10.
        heartbeatFrequencyMS=2000,
        maxPoolSize=pool_size, retryWrites=True, tz_aware=False, uuidRepresentation="standard",
    )
    options.update(client_options)
    client: MongoClient[dict[str, Any]] = me.connect(host=uri, alias=ALIAS, **options)
    return client


def disconnect() -> None:
    """Close the connection ``connect`` made (tests; a stopping process)."""
    me.disconnect(ALIAS)


def database() -> Database[dict[str, Any]]:
    """The pymongo ``Database`` named by the connection URI."""
    db: Database[dict[str, Any]] = me.get_db(ALIAS)
    return db


# What a database operation can raise that is the database's (or the driver's) trouble, not a
# bug of ours: pymongo's own errors; ``DocumentTooLarge`` (a command over the server's size
# limit: a subclass of bson's ``InvalidDocument``, not of ``PyMongoError``); an answer the driver
# can't decode; and mongoengine's wrappers of driver errors (``OperationError``, with its
# ``NotUniqueError`` and ``BulkWriteError``).
DRIVER_ERRORS: tuple[type[Exception], ...] = (PyMongoError, DocumentTooLarge, InvalidBSON, me.errors.OperationError)


def guarded(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one database operation; any driver error (``DRIVER_ERRORS``) becomes ``StoreUnavailable``.

    mongoengine re-raises some driver errors as its own ``OperationError``
    (``NotUniqueError`` for a duplicate key): callers that expect a duplicate
    catch ``NotUniqueError`` around the call, inside ``guarded``.
    """
    try:
        return fn(*args, **kwargs)
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from exc
