"""Start-up checks of the session database: the first-deploy mistakes, named in words.

``check_database(uri)`` connects with its own short-lived client and checks,
within a bounded time, what the app needs and the driver would otherwise
report only as a 503 forever: the credentials, that the server is a replica
set member under the name the URI gives, that there is a primary, and that
change streams open (the session cache trusts only what a change stream
confirms). It raises :class:`DatabaseCheckFailed` with the cause in words;
``retry`` says whether waiting could help (nothing answers yet) or not (a
wrong password, set name or privilege stays wrong).
"""

import re
from typing import Any

from pymongo import MongoClient
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

__all__ = ["DatabaseCheckFailed", "check_database", "unauthorized"]

AUTH_FAILED, UNAUTHORIZED = 18, 13  # the server's error codes
# pymongo appends its configuration and topology to selection errors: not words for an operator.
_DRIVER_TAIL = re.compile(r"\s*(\(configured timeouts:.*|, Timeout: .*|Topology Description: .*)$", re.S)


class DatabaseCheckFailed(Exception):
    """The database can't be used as configured; ``cause`` in words, ``retry`` when waiting may help."""

    def __init__(self, cause: str, *, retry: bool) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry = retry


def _words(exc: BaseException) -> str:
    """A driver error's own message without the driver's configuration dump."""
    text = str(exc.args[0] if isinstance(exc, OperationFailure) and exc.args else exc)
    text = _DRIVER_TAIL.sub("", text.split(", full error:")[0]).strip().rstrip(",")
    return text.replace("Refer to docstring.", "").strip() or type(exc).__name__


def _privilege(exc: OperationFailure, user: str, db: str, what: str) -> DatabaseCheckFailed:
    who = f"user {user!r}" if user else "the connection (no user in the URI)"
    return DatabaseCheckFailed(f"{who} may not {what} on database {db!r} ({_words(exc)}): "
                               f"grant it readWrite on {db!r}", retry=False)


def _diagnose_selection(seeds: list[tuple[str, int]], set_name: str | None, timeout_ms: int,
                        exc: ServerSelectionTimeoutError) -> DatabaseCheckFailed:
    """Why no usable server was found: ask each seed directly what it is."""
    unreachable = []
    for host, port in seeds:
        probe: MongoClient[dict[str, Any]] = MongoClient(
            host, port, directConnection=True, serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms, appname="socialos-app start-up check")
        try:
            hello = probe.admin.command("hello")
        except PyMongoError as probe_exc:
            unreachable.append(f"{host}:{port}: {_words(probe_exc)}")
            continue
        finally:
            probe.close()
        actual = hello.get("setName")
        if set_name and actual != set_name:
            is_in = f"replica set {actual!r}" if actual else "no replica set (a standalone server)"
            return DatabaseCheckFailed(f"replica set name mismatch: the URI says replicaSet={set_name}, "
                                       f"but {host}:{port} is in {is_in}", retry=False)
    if unreachable:
        return DatabaseCheckFailed("no answer from " + "; ".join(unreachable), retry=True)
    return DatabaseCheckFailed(f"no primary found ({_words(exc)})", retry=True)


def check_database(uri: str, timeout_ms: int = 3000) -> str:
    """Connect as the app will and check it can work; a one-line description of what was found.

    Raises :class:`DatabaseCheckFailed`. Never sends a password anywhere but
    to the database, and never puts one in a message.
    """
    try:
        parsed = parse_uri(uri)
    except (ConfigurationError, ValueError) as exc:
        raise DatabaseCheckFailed(f"not a valid MongoDB URI: {_words(exc)}", retry=False) from None
    user = parsed.get("username") or ""
    # pymongo gives the options as a plain dict, spelt as in its documentation.
    options = {str(k).lower(): v for k, v in (parsed.get("options") or {}).items()}
    set_name = options.get("replicaset")
    db_name = parsed.get("database") or "test"
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, timeoutMS=timeout_ms * 2,
        appname="socialos-app start-up check")
    try:
        try:
            hello = client[db_name].command("hello")
        except ServerSelectionTimeoutError as exc:
            if "belongs to a set named" in str(exc):  # pymongo's own words, with a direct connection
                raise DatabaseCheckFailed(f"replica set name mismatch: {_words(exc)}", retry=False) from None
            raise _diagnose_selection(list(parsed.get("nodelist") or []), set_name, timeout_ms, exc) from None
        except OperationFailure as exc:
            if exc.code == AUTH_FAILED:
                source = options.get("authsource") or db_name
                raise DatabaseCheckFailed(
                    f"authentication failed for user {user!r} (authSource {source!r}): wrong user name or "
                    "password, or the user lives in another database", retry=False) from None
            raise DatabaseCheckFailed(f"the server refused: {_words(exc)}", retry=False) from None
        actual_set = hello.get("setName")
        if not actual_set:
            raise DatabaseCheckFailed("the server is not a replica set member: the session cache needs change "
                                      "streams, which only a replica set has (a single-node set will do)",
                                      retry=False)
        if not hello.get("isWritablePrimary"):
            raise DatabaseCheckFailed(f"{hello.get('me', 'the server')} is not the primary yet", retry=True)
        try:
            with client[db_name].watch(max_await_time_ms=50) as stream:
                stream.try_next()
        except OperationFailure as exc:
            if exc.code == UNAUTHORIZED:
                raise _privilege(exc, user, db_name, "open change streams") from None
            raise DatabaseCheckFailed(f"change streams are not available: {_words(exc)}", retry=False) from None
        return f"replica set {actual_set!r}, primary {hello.get('primary') or hello.get('me')}, database {db_name!r}"
    except DatabaseCheckFailed:
        raise
    except OperationFailure as exc:
        if exc.code == UNAUTHORIZED:
            raise _privilege(exc, user, db_name, "do what the app needs") from None
        raise DatabaseCheckFailed(f"the server refused: {_words(exc)}", retry=False) from None
    except PyMongoError as exc:
        raise DatabaseCheckFailed(_words(exc), retry=True) from None
    finally:
        client.close()


def unauthorized(exc: BaseException, uri: str, what: str) -> DatabaseCheckFailed | None:
    """When ``exc`` (or what it was raised from) is the server's "not authorized": the failure in words."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OperationFailure) and seen.code == UNAUTHORIZED:
            try:
                parsed = parse_uri(uri)
            except (ConfigurationError, ValueError):
                parsed = {}
            return _privilege(seen, parsed.get("username") or "", parsed.get("database") or "test", what)
        seen = seen.__cause__
    return None
