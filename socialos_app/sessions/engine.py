"""Session policy: cookie token in, signed-in record out; every session rule.

The engine owns the rules (idle and absolute expiry, touching, record
integrity, re-sealing after a key rotation, a user's live devices, ending
them, statistics); stores only keep records (``store.SessionStore``).

Per signed-in request: at most one database read (none when the record is
in this instance's cache, the change feed is confirmed and the cached
``accessed`` is within ``idle``, see ``cache.py``), an HMAC check of the
record, and a write only when ``accessed`` is over ``TOUCH_EVERY`` old (idle expiry stays exact to a
minute with almost no writes; once ``start_background`` has run, written by
a background thread, ``touches.py``, so the page never waits for it) or
when a session made under a previous SECURE_KEY is re-sealed under the
current one. The upstream credentials are
opened only by ``credentials()``, when a page uses them.

Record integrity. Every field but ``accessed`` is authenticated: ``tag`` is
HMAC-SHA256 (stdlib C ``hmac``, an HKDF subkey of the SECURE_KEY that names
the record) over ``record_message(record)``, checked on every resume
without opening the seal. A record that fails is deleted and reported as
``session_tampered``. So a database writer without SECURE_KEY can't grant
admin, extend ``expires``, move a session to another user or swap fields
between records; it can still delete sessions, read what the record shows
(usernames, times, user agents, addresses), and keep a session from idling
out by rewriting ``accessed`` (never past ``expires``).

Records made before tags existed (no ``tag``) keep working and are re-tagged
on first use, so deploying this signs no one out. Untagged records are
trusted no further than this rule, because a writer can strip a tag:

* the seal must open (it is AES-GCM bound to the record id, so the record
  is really ours) and its plaintext must not carry the ``"v": 2`` marker
  that every seal written since tags exist carries: stripping the tag from a
  new record is therefore detected as tampering, and only records sealed by
  the old code are ever adopted;
* ``admin`` is never carried over (nothing authenticated it): an admin with a
  pre-deploy session signs in again to reach /admin;
* ``expires`` is clamped to at most ``max_age`` from now and ``created`` to
  now, and the record must not already be expired or idle;
* what a writer could still have changed in an old record before its
  adoption (``username``, ``name``, ``handle``, ``user_agent``, ``address``)
  is adopted as found: a one-time window that closes when the last
  pre-deploy session has been used or has expired (``SESSION_MAX_AGE``).
"""

import hashlib
import json
import secrets
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from socialos_app.crypto import Keyring, ServerKey, looks_like_token, new_token, outdated_seal
from socialos_app.ops import logs, metrics
from socialos_app.sessions.cache import SessionCache
from socialos_app.sessions.stats import Counts, LiveCounts
from socialos_app.sessions.store import TAKE_BATCH, RecordExists, SessionRecord, SessionStats, SessionStore
from socialos_app.sessions.touches import TouchWriter
from socialos_app.storage import StoreUnavailable, utcnow

__all__ = ["Credentials", "SessionEngine", "record_message"]

TOUCH_EVERY = timedelta(seconds=60)
SEAL_MARK = 2          # "v" in every seal's plaintext since records carry tags
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Credentials:
    """The upstream API key of a session: what the sealed blob holds."""

    token: str
    password: str

    def __repr__(self) -> str:  # never print the key password
        return "Credentials(token=..., password=...)"


_LENGTH = struct.Struct(">I")


def _framed(part: bytes) -> bytes:
    return _LENGTH.pack(len(part)) + part


def _when(value: object) -> bytes:
    # Subtracting a naive datetime fails (TypeError) for anything but a naive datetime.
    if not isinstance(value, datetime):
        raise TypeError("not a naive datetime")
    return str((value - _EPOCH) // _MS).encode()


def record_message(record: SessionRecord) -> bytes:
    """The bytes a record's tag authenticates: every field but ``accessed``.

    Records without ``fresh`` and ``notice`` (made before them) keep the
    message their tag was made over; any other record has a message of its
    own format that carries both.

    Each field length-prefixed (no field can bleed into the next) and typed
    strictly (``admin`` must be a real bool, dates real datetimes): a value
    of another type raises ``TypeError``, which the engine treats as tampering.
    (Runs on every signed-in request: written flat, without a call per field.)
    """
    admin = record.admin
    if admin is not True and admin is not False:
        raise TypeError("admin is not a bool")
    sealed, key_ref = record.sealed, record.key_ref
    if not isinstance(sealed, bytes) or not isinstance(key_ref, bytes):
        raise TypeError("not bytes")
    text = str.encode  # TypeError for anything but a str
    fresh, notice = record.fresh, record.notice
    parts = (
        _framed(text(record.id)), _framed(text(record.username)), _framed(text(record.name)),
        _framed(b"1" if admin else b"0"), _framed(_when(record.created)), _framed(_when(record.expires)),
        _framed(text(record.handle)), _framed(text(record.user_agent)), _framed(text(record.address)),
        _framed(sealed), _framed(key_ref))
    if fresh is None and not notice:
        # A record from before freshness and notices: its tag is over this message, so it keeps working.
        return b"".join((b"socialos/v1/record",) + parts)
    # Another prefix: stripping the new fields (or adding them) always changes the message.
    return b"".join((b"socialos/v2/record",) + parts + (
        _framed(_when(fresh) if fresh is not None else b""), _framed(text(notice))))


def _tagged(key: ServerKey, record: SessionRecord) -> SessionRecord:
    """``record`` with its tag under ``key``: every field but ``accessed`` authenticated."""
    return replace(record, tag=key.record_tag(record_message(record)))


def _pack(credentials: Credentials) -> bytes:
    return json.dumps({"t": credentials.token, "p": credentials.password, "v": SEAL_MARK}).encode()


def _unpack(plain: bytes | None) -> tuple[Credentials, bool] | None:
    """``(credentials, marked)`` from a seal's plaintext, or None."""
    if plain is None:
        return None
    try:
        data = json.loads(plain)
        return Credentials(token=data["t"], password=data["p"]), data.get("v") == SEAL_MARK
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def short_id(record_id: object) -> str:
    """8 hex characters naming a record in logs (a hash of its id, never the id)."""
    return hashlib.sha256(str(record_id).encode()).hexdigest()[:8]


class SessionEngine:
    """Creates, resumes and ends sessions over any ``SessionStore``.

    ``keyring`` is the ``crypto.Keyring`` of the server secrets.
    ``cache_size`` > 0 keeps up to that many records in this instance,
    trusted only while ``start_background`` has the store's change feed running.
    ``touch_every`` (seconds): how old ``accessed`` may grow before a request writes it
    (``TOUCH_EVERY``; tests shorten it with the idle timeout).
    Every method may raise ``StoreUnavailable`` (a real database failure only).
    """

    def __init__(self, store: SessionStore, keyring: Keyring, idle_seconds: int, max_age_seconds: int,
                 cache_size: int = 0, touch_every: float = TOUCH_EVERY.total_seconds()) -> None:
        self.store = store
        self.keyring = keyring
        self.idle = timedelta(seconds=idle_seconds)
        self.max_age = timedelta(seconds=max_age_seconds)
        self.touch_every = timedelta(seconds=touch_every)
        self.cache = SessionCache(cache_size) if cache_size else None
        self.counts = LiveCounts(self._count)
        self.touches = TouchWriter(store, self._forget)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # Told of each record ended for tampering (the security history listens; the record as found).
        self.on_tampered: Callable[[SessionRecord], None] | None = None

    # -- lifecycle ------------------------------------------------------------------
    def setup(self) -> None:
        """Make the store's indexes (idempotent)."""
        self.store.setup(int(self.idle.total_seconds()))

    def start_background(self) -> None:
        """Start this instance's background work: the touch writer, and the store's
        change feed in a thread (when there is a cache), so the cache can be trusted."""
        self.touches.start()
        if self.cache is None or (self._watcher is not None and self._watcher.is_alive()):
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="session-changes", daemon=True)
        self._watcher.start()

    def stop_background(self, timeout: float = 5.0) -> None:
        """Stop the feed thread (the cache is no longer trusted) and write pending touches."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout)
            self._watcher = None
        if self.cache is not None:
            self.cache.stream_down()
        self.touches.stop(timeout)

    def _watch(self) -> None:
        cache = self.cache
        if cache is None:
            return
        try:
            self.store.watch(cache, self._stop)
        except NotImplementedError:
            pass  # a store without a feed: read through on every request
        finally:
            cache.stream_down()

    # -- one session ------------------------------------------------------------------
    def start(self, username: str, name: str, admin: bool, credentials: Credentials, user_agent: str = "",
              address: str = "") -> tuple[str, SessionRecord]:
        """A new session with a fresh token (never one the browser offered): ``(token, record)``."""
        token = new_token()
        key = self.keyring.current
        record_id = key.record_id(token)
        now = utcnow()
        record = SessionRecord(
            id=record_id, username=username, name=name or username, admin=bool(admin),
            sealed=key.seal(token, record_id, _pack(credentials)),
            created=now, accessed=now, expires=now + self.max_age,
            handle=secrets.token_hex(6), user_agent=(user_agent or "")[:200], address=(address or "")[:64],
            key_ref=key.seal_ref(record_id, credentials.token), fresh=now,
        )
        record = _tagged(key, record)
        self.store.create(record)
        return token, record

    def rotate(self, token: str, record: SessionRecord, credentials: Credentials) -> tuple[str, SessionRecord] | None:
        """The session under a new token, made fresh now, with ``credentials`` sealed in it:
        ``(new token, record)``; the old token names nothing afterwards.

        After "Confirm it's you" (a privilege change: OWASP asks for a new
        token). Everything else of the session (handle, times, notice) is
        kept. None when the session ended meanwhile: nothing is revived.
        """
        new = new_token()
        key = self.keyring.current
        record_id = key.record_id(new)
        now = utcnow()
        fresh = _tagged(key, replace(record, id=record_id, accessed=now, fresh=now,
                                     sealed=key.seal(new, record_id, _pack(credentials)),
                                     key_ref=key.seal_ref(record_id, credentials.token)))
        self.store.create(fresh)
        if not any([self._destroy(rid) for rid in self.keyring.record_ids(token)]):
            self._destroy(record_id)  # the old session ended while we rotated it: so does this one
            return None
        return new, fresh

    def is_fresh(self, record: SessionRecord, seconds: float) -> bool:
        """True when the record's owner proved their password here within ``seconds``
        (its sign-in for records made before freshness existed)."""
        since = record.fresh if record.fresh is not None else record.created
        return isinstance(since, datetime) and utcnow() - since < timedelta(seconds=seconds)

    def resume(self, token: str | None) -> SessionRecord | None:
        """The live, authentic record a token names, or None. Never opens the seal
        (except once for a record made before tags or under a previous key)."""
        if not token or not looks_like_token(token):
            return None
        ids = self.keyring.record_ids(token)
        cache = self.cache
        now = utcnow()
        record = cache.get(ids[0]) if cache is not None else None
        if record is not None and now - record.accessed >= self.idle and now < record.expires:
            # Other instances' touches don't reach this cache (the change feed leaves them out):
            # a record that looks idle here may not be. The database's ``accessed`` decides.
            record = None
        snapshot = None
        if record is not None:
            metrics.session_cache(True)
            index = 0
        else:
            if cache is not None:
                metrics.session_cache(False)
                snapshot = cache.snapshot()
            record = self.store.load(ids)
            if record is None:
                return None
            try:
                index = ids.index(record.id)
            except ValueError:
                return None
        if not record.tag:
            return self._adopt(token, record, index, now)
        if not self._authentic(record, index):
            self._tampered(record)
            return None
        if now >= record.expires or now - record.accessed >= self.idle:
            # MongoDB's TTL monitor runs once a minute: expiry is enforced here too.
            self._destroy(record.id)
            return None
        if index:
            credentials = self._open(token, record)
            if credentials is None:
                self._tampered(record)
                return None
            return self._reseal(token, record, credentials, now)
        if cache is not None:
            cache.put(record, snapshot)
        if now - record.accessed >= self.touch_every:
            if not self.touches.touch(record.id, now):  # written in the background when it can be
                self.store.touch(record.id, now)
            record = replace(record, accessed=now)
            if cache is not None:
                cache.touched_here(record.id, now)
        return record

    def credentials(self, token: str, record: SessionRecord) -> Credentials | None:
        """Open the record's sealed upstream key (per request; never cached), or None.

        A seal in an older format (``crypto.outdated_seal``) is re-sealed in the
        current one on the way, so each record pays for the old format once."""
        credentials = self._open(token, record)
        if credentials is not None and outdated_seal(record.sealed) and self.keyring.current.record_id(
                token) == record.id:
            self._upgrade_seal(token, record, credentials)
        return credentials

    def end(self, token: str | None) -> bool:
        """Delete the session a token names; True when there was one."""
        if not token or not looks_like_token(token):
            return False
        return any([self._destroy(rid) for rid in self.keyring.record_ids(token)])

    # -- a user's sessions ------------------------------------------------------------
    def devices(self, username: str, limit: int = 50) -> list[SessionRecord]:
        """The user's live sessions, newest first, at most ``limit`` (authentic records only)."""
        now = utcnow()
        records = self.store.list_user(username, accessed_after=now - self.idle, expires_after=now, limit=limit)
        return [r for r in records if self._authentic_any(r)]

    def end_devices(self, username: str, keep_id: str | None = None, handle: str | None = None) -> list[str]:
        """End the user's sessions (all but ``keep_id``; only the one with ``handle``
        when given); the upstream key tokens of the ones ended, to revoke upstream."""
        return [key_token for _record, key_token in self.end_sessions(username, keep_id, handle)
                if key_token is not None]

    def end_sessions(self, username: str, keep_id: str | None = None,
                     handle: str | None = None) -> list[tuple[SessionRecord, str | None]]:
        """``end_devices``, telling each record ended with its upstream key token
        (None when there is none to revoke): the security history names them."""
        return [ended for batch in self.end_batches(username, keep_id, handle) for ended in batch]

    def end_batches(self, username: str, keep_id: str | None = None, handle: str | None = None,
                    batch: int = TAKE_BATCH) -> Iterator[list[tuple[SessionRecord, str | None]]]:
        """``end_sessions`` in bounded steps (``SessionStore.take_batches``): each step's sessions
        are ended when it is yielded, so a caller can write and revoke as it goes and any number
        of sessions ends in steps that each fit the database's deadline. Iterate to the end."""
        for taken in self.store.take_batches(username, handle=handle, keep_id=keep_id, batch=batch):
            ended: list[tuple[SessionRecord, str | None]] = []
            for record in taken:
                self._forget(record.id)
                key_token = None
                if record.key_ref and self._authentic_any(record):
                    key_token = self.keyring.open_ref(record.id, record.key_ref)
                ended.append((record, key_token))
            yield ended

    # -- notices on a user's sessions ---------------------------------------------------
    def set_notice(self, username: str, notice: str, keep_id: str | None = None) -> int:
        """Put ``notice`` on each of the user's live sessions but ``keep_id``; how many.

        A tagged field of the record: it reaches every instance's cache through the
        change feed like any revocation, so showing it costs no read per request."""
        return self._renotice(username, notice, lambda record: record.id != keep_id)

    def clear_notice(self, username: str, notice: str) -> int:
        """Take ``notice`` off every session of the user that still holds it (shown once
        anywhere, it is gone everywhere); how many."""
        return self._renotice(username, "", lambda record: record.notice == notice)

    def _renotice(self, username: str, notice: str, which: Callable[[SessionRecord], bool]) -> int:
        changed = 0
        key = self.keyring.current
        for record in self.devices(username):
            if not record.tag or not which(record) or record.notice == notice:
                continue
            if not key.check_record_tag(record_message(record), record.tag):
                continue  # tagged under a previous key: its next use re-seals it; no notice meanwhile
            self._forget(record.id)
            if self.store.update(_tagged(key, replace(record, notice=notice))):  # never revives an ended one
                changed += 1
        return changed

    def stats(self) -> Counts:
        """``{"active", "users", "by_hour": {0..23: n}, "counted_at", "age", "pending"}`` over live
        sessions: counted by the store in the background, at most one count at a time
        (``stats.LiveCounts``), so /admin never waits long for a count of every session."""
        return self.counts.get()

    def _count(self, timeout: float) -> SessionStats:
        now = utcnow()
        return self.store.stats(now - self.idle, now, timeout=timeout)

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""
        self.store.ping()

    # -- internals --------------------------------------------------------------------
    def _open(self, token: str, record: SessionRecord) -> Credentials | None:
        unpacked = _unpack(self.keyring.open(token, record.id, record.sealed))
        return unpacked[0] if unpacked is not None else None

    def _authentic(self, record: SessionRecord, index: int | None = None) -> bool:
        """True when the record's tag is right under the key at ``index`` of ``record_ids``
        (any honoured key without it). A field of the wrong type is tampering, never an error."""
        try:
            message = record_message(record)
        except TypeError:
            return False
        return self.keyring.check_record_tag(message, record.tag, index)

    def _authentic_any(self, record: SessionRecord) -> bool:
        if not record.tag:
            return not record.key_ref  # pre-tag records: shown, though nothing vouches for them
        return self._authentic(record)

    def _forget(self, record_id: str) -> None:
        if self.cache is not None:
            self.cache.forget(record_id)

    def _destroy(self, record_id: str) -> bool:
        self._forget(record_id)
        return self.store.destroy(record_id)

    def _tampered(self, record: SessionRecord) -> None:
        self._destroy(record.id)
        logs.security_event("session_tampered", sid=short_id(record.id))
        hook = self.on_tampered
        if hook is not None:
            try:
                hook(record)
            except StoreUnavailable:
                pass  # the security log has it; the history misses one line

    def _adopt(self, token: str, record: SessionRecord, index: int, now: datetime) -> SessionRecord | None:
        """A record from before tags: check it, clamp what nothing vouched for, tag it."""
        unpacked = _unpack(self.keyring.open(token, record.id, record.sealed))
        if unpacked is None or unpacked[1]:
            # Not ours, or a record written since tags exist with its tag stripped.
            self._tampered(record)
            return None
        credentials = unpacked[0]
        try:
            if now >= record.expires or now - record.accessed >= self.idle:
                self._destroy(record.id)
                return None
            # Nothing vouched for ``created`` either: an adopted session is never fresh.
            clamped = replace(record, admin=False, created=min(record.created, now),
                              expires=min(record.expires, now + self.max_age), fresh=_EPOCH, notice="")
            record_message(clamped)  # every field of the right type
        except TypeError:
            self._tampered(record)
            return None
        if index:
            return self._reseal(token, clamped, credentials, now)
        key = self.keyring.current
        fresh = replace(clamped, accessed=now, sealed=key.seal(token, record.id, _pack(credentials)),
                        key_ref=key.seal_ref(record.id, credentials.token))
        fresh = _tagged(key, fresh)
        self._forget(record.id)
        return fresh if self.store.update(fresh) else None

    def _upgrade_seal(self, token: str, record: SessionRecord, credentials: Credentials) -> None:
        key = self.keyring.current
        fresh = _tagged(key, replace(record, sealed=key.seal(token, record.id, _pack(credentials))))
        self._forget(record.id)
        try:
            self.store.update(fresh)  # matches nothing once the session has ended: nothing revived
        except StoreUnavailable:
            pass  # the page still has its credentials; the next use tries again

    def _reseal(self, token: str, record: SessionRecord, credentials: Credentials,
                now: datetime) -> SessionRecord | None:
        """Move a session made under a previous key to its current-key record.

        Safe under any concurrency, on one instance or many: the first request
        to insert the new id wins and deletes the old record; every other one
        finds the id taken (``RecordExists``) and uses the winner's record. If
        the old record vanished meanwhile (a sign-out), the new one is removed
        too, so a sign-out racing a re-seal never leaves a live session.
        """
        key = self.keyring.current
        new_id = key.record_id(token)
        fresh = replace(record, id=new_id, accessed=now,
                        sealed=key.seal(token, new_id, _pack(credentials)),
                        key_ref=key.seal_ref(new_id, credentials.token))
        fresh = _tagged(key, fresh)
        try:
            self.store.create(fresh)
        except RecordExists:
            winner = self.store.load([new_id])
            if winner is None or not winner.tag:
                return None
            if not self._authentic(winner, 0):  # the current key: index 0 of record_ids
                self._tampered(winner)
                return None
            return winner
        if not self._destroy(record.id):
            self._destroy(new_id)  # the old session ended while we moved it: so does this one
            return None
        return fresh
