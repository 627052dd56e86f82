"""Session cryptography: tokens, record ids, sealed credentials, CSRF tokens.

The cookie carries a 256-bit random *token*. The database never sees it:

* the record id is HMAC-SHA256(token) under a subkey of SECURE_KEY, so a
  leaked database yields no cookie and cannot be brute-forced without the key;
* the upstream API key is sealed with AES-256-GCM under a key that HKDF
  derives from SECURE_KEY *and* the token, so opening it takes both the
  server secret and the user's cookie; the record id is bound in as
  associated data, so a blob cannot be moved to another record.

HKDF-SHA256 (RFC 5869) is used in its two steps: Extract, over SECURE_KEY,
once per process with pycryptodome; Expand, with the token in ``info``,
once per request. A 32-byte Expand is a single HMAC, done with Python's
C ``hmac`` (OpenSSL): pycryptodome's HMAC is a Python wrapper, and on the
hot path it cost more than the database read. The result is byte for byte
``Crypto.Protocol.KDF.HKDF(SECURE_KEY, 32, b"", SHA256, context=info)``
(``tests/test_crypto.py`` checks it).

Rotation: a ``Keyring`` holds the current SECURE_KEY and any previous ones.
New sessions use the current key; a session made under a previous key is
still found (its record id under that key) and opened, then re-sealed.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from Crypto.Cipher import AES
from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol.KDF import HKDF

__all__ = ["Keyring", "SessionKey", "new_token", "looks_like_token"]

TOKEN_BYTES = 32          # 256 bits of entropy in every cookie
FORMAT_VERSION = b"\x01"  # first byte of every sealed blob
NONCE_BYTES = 12          # 96-bit GCM nonce, random per seal
TAG_BYTES = 16
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_token():
    """A fresh URL-safe session token (256 random bits, 43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(value):
    """Cheap shape check so junk cookies never reach the database."""
    return isinstance(value, str) and bool(_TOKEN_RE.match(value))


def _token_bytes(token):
    return base64.urlsafe_b64decode(token + "=")


def hkdf_extract(master):
    """HKDF-SHA256 Extract with an empty salt: the pseudorandom key (once per process)."""
    return HMAC.new(b"\0" * SHA256.digest_size, master, SHA256).digest()


def hkdf_expand(prk, info):
    """HKDF-SHA256 Expand to 32 bytes: one HMAC block, T(1) = HMAC(PRK, info || 0x01)."""
    return hmac.digest(prk, info + b"\x01", "sha256")


def _subkey(master, purpose):
    return HKDF(master, 32, b"", SHA256, context=b"socialos/v1/" + purpose)


class SessionKey:
    """Everything one server secret derives: record ids, seals and CSRF tokens."""

    def __init__(self, master):
        self._prk = hkdf_extract(master)
        self._id_key = _subkey(master, b"record-id")
        self._csrf_key = _subkey(master, b"csrf")

    def record_id(self, token):
        """The database id of the session a token names (64 hex chars)."""
        return hmac.new(self._id_key, token.encode(), hashlib.sha256).hexdigest()

    def _seal_key(self, token):
        # The token in HKDF's info: neither the server secret nor the cookie alone derives it.
        return hkdf_expand(self._prk, b"socialos/v1/seal:" + _token_bytes(token))

    def seal(self, token, record_id, plaintext):
        """Encrypt and authenticate ``plaintext`` for this token and record."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        cipher = AES.new(self._seal_key(token), AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(FORMAT_VERSION + record_id.encode())
        ciphertext, tag = cipher.encrypt_and_digest(plaintext)
        return FORMAT_VERSION + nonce + ciphertext + tag

    def open(self, token, record_id, blob):
        """The plaintext, or None when the blob is tampered, truncated or not ours."""
        if not isinstance(blob, (bytes, bytearray)) or len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
            return None
        if blob[:1] != FORMAT_VERSION:
            return None
        nonce = blob[1:1 + NONCE_BYTES]
        ciphertext, tag = blob[1 + NONCE_BYTES:-TAG_BYTES], blob[-TAG_BYTES:]
        try:
            cipher = AES.new(self._seal_key(token), AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
            cipher.update(FORMAT_VERSION + record_id.encode())
            return cipher.decrypt_and_verify(bytes(ciphertext), bytes(tag))
        except (ValueError, KeyError, binascii.Error):
            return None

    def csrf_token(self, binding):
        """A CSRF token bound to a session token (or a pre-session cookie)."""
        return hmac.new(self._csrf_key, b"csrf:" + binding.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, binding, given):
        """Constant-time check of a submitted CSRF token."""
        if not binding or not isinstance(given, str):
            return False
        # As bytes: compare_digest raises TypeError on str with non-ASCII characters.
        return hmac.compare_digest(self.csrf_token(binding).encode(), given.encode("utf-8", "replace"))


class Keyring:
    """The current server secret first, then previous ones still honoured."""

    def __init__(self, current, previous=()):
        self.keys = [SessionKey(current)] + [SessionKey(k) for k in previous]

    @property
    def current(self):
        return self.keys[0]

    def record_ids(self, token):
        """Record ids of a token under every key, current first."""
        return [key.record_id(token) for key in self.keys]
