"""Session policy: cookie token in, signed-in user and upstream key out.

One database read per signed-in request; a write only when ``accessed``
is more than ``TOUCH_EVERY`` old (so idle expiry stays accurate to a
minute without a write per request) or when a session made under a
previous SECURE_KEY is re-sealed under the current one.
"""

import json
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta

from ..crypto import Keyring, looks_like_token, new_token
from ..db import utcnow
from .store import SessionRecord

__all__ = ["Credentials", "SessionEngine", "utcnow"]

TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Credentials:
    """The upstream API key of a session: what the sealed blob holds."""

    token: str
    password: str

    def __repr__(self):  # never print the key password
        return "Credentials(token=..., password=...)"


class SessionEngine:
    """Creates, resumes and ends sessions over any ``SessionStore``."""

    def __init__(self, store, keyring, idle_seconds, max_age_seconds):
        self.store = store
        self.keyring = keyring if isinstance(keyring, Keyring) else Keyring(keyring)
        self.idle = timedelta(seconds=idle_seconds)
        self.max_age = timedelta(seconds=max_age_seconds)

    def setup(self):
        self.store.setup(int(self.idle.total_seconds()))

    def start(self, username, name, admin, credentials, user_agent="", address=""):
        """A new session with a fresh token (never one the browser offered)."""
        token = new_token()
        key = self.keyring.current
        record_id = key.record_id(token)
        now = utcnow()
        record = SessionRecord(
            id=record_id, username=username, name=name or username, admin=bool(admin),
            sealed=key.seal(token, record_id, self._pack(credentials)),
            created=now, accessed=now, expires=now + self.max_age,
            handle=secrets.token_hex(6), user_agent=user_agent[:200], address=address[:64],
        )
        self.store.create(record)
        return token, record

    def resume(self, token):
        """``(record, credentials)`` for a live session, else None. One read."""
        if not looks_like_token(token):
            return None
        ids = self.keyring.record_ids(token)
        record = self.store.load(ids)
        if record is None:
            return None
        now = utcnow()
        if now >= record.expires or now - record.accessed >= self.idle:
            # MongoDB's TTL monitor runs once a minute: expiry is enforced here too.
            self.store.destroy(record.id)
            return None
        key_index = ids.index(record.id)
        plain = self.keyring.keys[key_index].open(token, record.id, record.sealed)
        credentials = self._unpack(plain)
        if credentials is None:
            return None
        if key_index:
            record = self._reseal(token, record, credentials, now)
        elif now - record.accessed >= TOUCH_EVERY:
            self.store.touch(record.id, now)
            record.accessed = now
        return record, credentials

    def end(self, token):
        """Delete the session a token names; True when there was one."""
        if not looks_like_token(token):
            return False
        return any(self.store.destroy(rid) for rid in self.keyring.record_ids(token))

    def _reseal(self, token, record, credentials, now):
        key = self.keyring.current
        new_id = key.record_id(token)
        fresh = replace(record, id=new_id, accessed=now,
                        sealed=key.seal(token, new_id, self._pack(credentials)))
        self.store.replace(record.id, fresh)
        return fresh

    @staticmethod
    def _pack(credentials):
        return json.dumps({"t": credentials.token, "p": credentials.password}).encode()

    @staticmethod
    def _unpack(plain):
        if plain is None:
            return None
        try:
            data = json.loads(plain)
            return Credentials(token=data["t"], password=data["p"])
        except (ValueError, KeyError, TypeError):
            return None
