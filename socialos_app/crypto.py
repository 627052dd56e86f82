"""Session cryptography: tokens, record ids, sealed credentials, CSRF tokens.

The cookie carries a 256-bit random *token*. The database never sees it:

* the record id is HMAC-SHA256(token) under a subkey of SECURE_KEY, so a
  leaked database yields no cookie and cannot be brute-forced without the key;
* the upstream API key is sealed under keys that HKDF derives from
  SECURE_KEY *and* the token, so opening it takes both the server secret
  and the user's cookie; the record id is bound in as associated data, so
  a blob cannot be moved to another record.

Seal formats (the first byte of every blob):

* ``\x02`` (written since this version): ChaCha20 (RFC 8439, pycryptodome)
  with a random 96-bit nonce, then HMAC-SHA256 (the standard library's C
  ``hmac``) over version, nonce, record id and ciphertext: encrypt-then-MAC,
  the MAC checked in constant time before anything is decrypted. HKDF
  gives 64 bytes per token: the cipher key, then the MAC key. Three calls
  into pycryptodome's C code per open, against about twenty for AES-GCM
  and five for AES-CTR: each call releases and retakes the GIL, and under
  16 busy request threads those hand-offs, not the cryptography, were the
  cost (``bench``: ``credentials_open_16_threads_vs_1``).
* ``\x01``: AES-256-GCM under a 32-byte HKDF key. Still opened; the engine
  re-seals such a record as ``\x02`` the first time it is opened.

HKDF-SHA256 (RFC 5869) is used in its two steps: Extract, over SECURE_KEY,
once per process with pycryptodome; Expand, with the token in ``info``,
once per request. A 32-byte Expand is a single HMAC, done with Python's
C ``hmac`` (OpenSSL): pycryptodome's HMAC is a Python wrapper, and on the
hot path it cost more than the database read. The result is byte for byte
``Crypto.Protocol.KDF.HKDF(SECURE_KEY, 32, b"", SHA256, context=info)``
(``tests/test_crypto.py`` checks it).

Two more subkeys, derived once per process, serve the stored record itself:

* ``record_tag``: HMAC-SHA256 (the standard library's C ``hmac``, a few µs)
  over every field of a session record except ``accessed``, so a database
  writer without SECURE_KEY can't grant admin, extend a lifetime or move a
  field between records (``sessions/engine.py`` builds the message);
* ``seal_ref``: the upstream key's *token* (never its password), sealed with
  AES-256-GCM under a server-only key, record id as associated data, so the
  server can revoke the keys of sessions it ends without their cookies.

Rotation: a ``Keyring`` holds the current SECURE_KEY and any previous ones
and owns the loop over them (record ids, opening, record tags, CSRF checks). New
sessions use the current key; a session made under a previous key is still
found (its record id under that key) and opened, then re-sealed.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from Crypto.Cipher import AES, ChaCha20
from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol.KDF import HKDF

__all__ = ["Keyring", "ServerKey", "new_token", "looks_like_token", "outdated_seal"]

TOKEN_BYTES = 32          # 256 bits of entropy in every cookie
FORMAT_VERSION = b"\x01"  # first byte of an AES-GCM blob (session seals before v2; key references)
SEAL_V2 = b"\x02"         # first byte of a ChaCha20 + HMAC-SHA256 session seal
NONCE_BYTES = 12          # 96-bit nonce, random per seal (GCM and ChaCha20 alike)
TAG_BYTES = 16            # GCM tag
MAC_BYTES = 32            # HMAC-SHA256 tag of a v2 seal
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    """A fresh URL-safe session token (256 random bits, 43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(value: object) -> bool:
    """Cheap shape check so junk cookies never reach the database."""
    return isinstance(value, str) and bool(_TOKEN_RE.match(value))


def outdated_seal(blob: object) -> bool:
    """True for a session seal in an older format than ``seal`` writes (re-seal it on use)."""
    return isinstance(blob, (bytes, bytearray)) and blob[:1] != SEAL_V2


def _token_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=")


def hkdf_extract(master: bytes) -> bytes:
    """HKDF-SHA256 Extract with an empty salt: the pseudorandom key (once per process)."""
    return HMAC.new(b"\0" * SHA256.digest_size, master, SHA256).digest()


def _hmac(key: bytes, message: bytes) -> bytes:
    # hmac.new, not hmac.digest: the one-shot form releases the GIL around every call, and
    # under 16 busy request threads each release costs a wait for the GIL to come back.
    return hmac.new(key, message, "sha256").digest()


def hkdf_expand(prk: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 Expand to 32 bytes: one HMAC block, T(1) = HMAC(PRK, info || 0x01)."""
    return _hmac(prk, info + b"\x01")


def hkdf_expand64(prk: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 Expand to 64 bytes: T(1) || T(2), T(2) = HMAC(PRK, T(1) || info || 0x02)."""
    first = hkdf_expand(prk, info)
    return first + _hmac(prk, first + info + b"\x02")


def _subkey(master: bytes, purpose: bytes) -> bytes:
    key = HKDF(master, 32, b"", SHA256, context=b"socialos/v1/" + purpose)
    assert isinstance(key, bytes)  # one key asked for: bytes, not a tuple
    return key


def _gcm_seal(key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(FORMAT_VERSION + aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return FORMAT_VERSION + nonce + ciphertext + tag


def _gcm_open(key: bytes, aad: bytes, blob: object) -> bytes | None:
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
        return None
    if blob[:1] != FORMAT_VERSION:
        return None
    nonce = blob[1:1 + NONCE_BYTES]
    ciphertext, tag = blob[1 + NONCE_BYTES:-TAG_BYTES], blob[-TAG_BYTES:]
    try:
        cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(FORMAT_VERSION + aad)
        return cipher.decrypt_and_verify(bytes(ciphertext), bytes(tag))
    except (ValueError, KeyError, binascii.Error):
        return None


def _v2_mac(mac_key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    # Every part length-framed: the record id can't bleed into the ciphertext.
    return _hmac(mac_key, SEAL_V2 + nonce + len(aad).to_bytes(4, "big") + aad + ciphertext)


def _v2_seal(keys: bytes, aad: bytes, plaintext: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = ChaCha20.new(key=keys[:32], nonce=nonce).encrypt(plaintext)
    return SEAL_V2 + nonce + ciphertext + _v2_mac(keys[32:], nonce, aad, ciphertext)


def _v2_open(keys: bytes, aad: bytes, blob: bytes | bytearray) -> bytes | None:
    if len(blob) < 1 + NONCE_BYTES + MAC_BYTES:
        return None
    nonce = bytes(blob[1:1 + NONCE_BYTES])
    ciphertext, mac = bytes(blob[1 + NONCE_BYTES:-MAC_BYTES]), bytes(blob[-MAC_BYTES:])
    if not hmac.compare_digest(_v2_mac(keys[32:], nonce, aad, ciphertext), mac):
        return None
    return ChaCha20.new(key=keys[:32], nonce=nonce).decrypt(ciphertext)


class ServerKey:
    """Everything one server secret derives: record ids, seals, record tags and CSRF tokens.

    (Named for the server secret it comes from; no session owns one.)
    """

    def __init__(self, master: bytes) -> None:
        self._prk = hkdf_extract(master)
        self._id_key = _subkey(master, b"record-id")
        self._csrf_key = _subkey(master, b"csrf")
        # The HMAC's keyed state made once; each tag copies it (C, thread-safe).
        self._tag_hmac = hmac.new(_subkey(master, b"record-tag"), digestmod="sha256")
        self._ref_key = _subkey(master, b"key-ref")

    def record_id(self, token: str) -> str:
        """The database id of the session a token names (64 hex chars)."""
        return hmac.new(self._id_key, token.encode(), hashlib.sha256).hexdigest()

    # The token in HKDF's info: neither the server secret nor the cookie alone derives these.
    def _seal_key(self, token: str) -> bytes:
        return hkdf_expand(self._prk, b"socialos/v1/seal:" + _token_bytes(token))

    def _seal_keys(self, token: str) -> bytes:
        return hkdf_expand64(self._prk, b"socialos/v2/seal:" + _token_bytes(token))

    def seal(self, token: str, record_id: str, plaintext: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` for this token and record (format v2)."""
        return _v2_seal(self._seal_keys(token), record_id.encode(), plaintext)

    def open(self, token: object, record_id: object, blob: object) -> bytes | None:
        """The plaintext, or None when the blob is tampered, truncated or not ours (v2 or v1)."""
        if not isinstance(token, str) or not isinstance(record_id, str):
            return None
        if not isinstance(blob, (bytes, bytearray)):
            return None
        try:
            if blob[:1] == SEAL_V2:
                return _v2_open(self._seal_keys(token), record_id.encode(), blob)
            return _gcm_open(self._seal_key(token), record_id.encode(), blob)
        except (ValueError, binascii.Error):
            return None

    def record_tag(self, message: bytes) -> bytes:
        """HMAC-SHA256 of a record's canonical bytes (32 bytes)."""
        mac = self._tag_hmac.copy()
        mac.update(message)
        return mac.digest()

    def check_record_tag(self, message: bytes, tag: object) -> bool:
        """Constant-time check of a stored record tag."""
        return isinstance(tag, bytes) and hmac.compare_digest(self.record_tag(message), tag)

    def seal_ref(self, record_id: str, text: str) -> bytes:
        """Seal a server-side reference (the upstream key's token) to one record."""
        return _gcm_seal(self._ref_key, b"key-ref:" + record_id.encode(), text.encode())

    def open_ref(self, record_id: str, blob: object) -> str | None:
        """The reference ``seal_ref`` sealed for this record, or None."""
        plain = _gcm_open(self._ref_key, b"key-ref:" + record_id.encode(), blob)
        try:
            return plain.decode() if plain is not None else None
        except UnicodeDecodeError:
            return None

    def csrf_token(self, binding: str) -> str:
        """A CSRF token bound to a session token (or a pre-session cookie)."""
        return hmac.new(self._csrf_key, b"csrf:" + binding.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, binding: str | None, given: object) -> bool:
        """Constant-time check of a submitted CSRF token."""
        if not binding or not isinstance(given, str):
            return False
        # As bytes: compare_digest raises TypeError on str with non-ASCII characters.
        return hmac.compare_digest(self.csrf_token(binding).encode(), given.encode("utf-8", "replace"))


class Keyring:
    """The current server secret first, then previous ones still honoured.

    Callers never loop over the keys: the keyring tries them itself.
    """

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        self._keys = [ServerKey(current)] + [ServerKey(k) for k in previous]

    @property
    def current(self) -> ServerKey:
        """The key new sessions, seals and CSRF tokens are made with."""
        return self._keys[0]

    def record_ids(self, token: str) -> list[str]:
        """Record ids of a token under every key, current first."""
        return [key.record_id(token) for key in self._keys]

    def open(self, token: str, record_id: str, blob: object) -> bytes | None:
        """Open a session's seal with whichever key named the record; None if none does."""
        for key in self._keys:
            if key.record_id(token) == record_id:
                return key.open(token, record_id, blob)
        return None

    def check_record_tag(self, message: bytes, tag: object, index: int | None = None) -> bool:
        """True when ``tag`` is the record tag of ``message`` under the key at ``index``
        of ``record_ids``' order (the key that named the record), or, without
        ``index``, under any honoured key."""
        if index is not None:  # the hot path: one HMAC
            return self._keys[index].check_record_tag(message, tag)
        return any(key.check_record_tag(message, tag) for key in self._keys)

    def open_ref(self, record_id: str, blob: object) -> str | None:
        """Open a sealed server-side reference under any key; None if none opens it."""
        for key in self._keys:
            found = key.open_ref(record_id, blob)
            if found is not None:
                return found
        return None

    def csrf_token(self, binding: str) -> str:
        """A CSRF token for ``binding`` under the current key."""
        return self.current.csrf_token(binding)

    def check_csrf(self, binding: str | None, given: object) -> bool:
        """True when ``given`` is the CSRF token of ``binding`` under any honoured key."""
        return any(key.check_csrf(binding, given) for key in self._keys)
