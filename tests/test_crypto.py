"""Session cryptography: pure, fast, no processes.

What a user relies on: a cookie nobody can guess, a database that yields
no cookie and no upstream key, and a sealed key that any tampering turns
into "signed out" (never a crash). Settings (a weak secret refused) are
tests/test_settings.py's.
"""

import base64
import secrets

import pytest

from socialos_app import crypto
from socialos_app.crypto import Keyring, ServerKey, looks_like_token, new_token

K1 = secrets.token_bytes(32)
K2 = secrets.token_bytes(32)
HEXCHARS = set("0123456789abcdef")


@pytest.fixture
def key():
    return ServerKey(K1)


@pytest.fixture
def sealed(key):
    token = new_token()
    rid = key.record_id(token)
    return token, rid, key.seal(token, rid, b'{"t": "api-token", "p": "api-password"}')


# -- tokens -------------------------------------------------------------------------
def test_tokens_are_43_url_safe_characters_of_256_random_bits():
    tokens = [new_token() for _ in range(1000)]
    assert len(set(tokens)) == 1000
    for token in tokens[:50]:
        assert len(token) == 43
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(base64.urlsafe_b64decode(token + "=")) == 32
        assert looks_like_token(token)


@pytest.mark.parametrize("junk", ["", "short", "x" * 42, "x" * 44, "a" * 42 + "=", "a" * 42 + "/",
                                  "a" * 42 + "+", None, 42, b"a" * 43, "ä" * 43])
def test_junk_is_not_a_token(junk):
    assert not looks_like_token(junk)


# -- record ids -----------------------------------------------------------------------
def test_record_id_is_64_hex_deterministic_and_per_key():
    token = new_token()
    rid = ServerKey(K1).record_id(token)
    assert len(rid) == 64 and set(rid) <= HEXCHARS
    assert ServerKey(K1).record_id(token) == rid          # same key, same id: sessions can be found
    assert ServerKey(K2).record_id(token) != rid          # another server secret, another id
    assert ServerKey(K1).record_id(new_token()) != rid    # another token, another id
    assert token not in rid


def test_keyring_gives_ids_under_every_key_current_first():
    token = new_token()
    ring = Keyring(K2, [K1])
    assert ring.current.record_id(token) == ServerKey(K2).record_id(token)
    assert ring.record_ids(token) == [ServerKey(K2).record_id(token), ServerKey(K1).record_id(token)]


# -- seal / open ----------------------------------------------------------------------
def test_seal_open_round_trip(key, sealed):
    token, rid, blob = sealed
    assert key.open(token, rid, blob) == b'{"t": "api-token", "p": "api-password"}'
    assert b"api-password" not in blob and b"api-token" not in blob
    assert key.open(token, rid, bytearray(blob)) == b'{"t": "api-token", "p": "api-password"}'


def test_every_byte_of_the_blob_is_protected(key, sealed):
    """Version, nonce, ciphertext and tag: flipping any one bit of any byte opens nothing."""
    token, rid, blob = sealed
    assert blob[:1] == crypto.SEAL_V2
    assert len(blob) == 1 + crypto.NONCE_BYTES + len(b'{"t": "api-token", "p": "api-password"}') + crypto.MAC_BYTES
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            assert key.open(token, rid, bytes(bad)) is None, f"byte {i} bit {bit:#x} not protected"


@pytest.mark.parametrize("cut", [0, 1, 12, 13, 28, 29, -1, -16])
def test_truncated_or_extended_blob_opens_nothing(key, sealed, cut):
    token, rid, blob = sealed
    assert key.open(token, rid, blob[:cut]) is None
    assert key.open(token, rid, blob + b"\x00") is None


@pytest.mark.parametrize("junk", [b"", None, "a string", 12, [1, 2], b"\x01" * 29, b"\x02" + b"\x00" * 40])
def test_garbage_blob_opens_nothing_without_raising(key, junk):
    token = new_token()
    assert key.open(token, key.record_id(token), junk) is None


def test_a_gcm_seal_of_the_first_format_still_opens_and_any_change_opens_nothing(key):
    token = new_token()
    rid = key.record_id(token)
    v1 = crypto._gcm_seal(key._seal_key(token), rid.encode(), b"old secret")
    assert v1[:1] == b"\x01" and crypto.outdated_seal(v1)
    assert key.open(token, rid, v1) == b"old secret"
    assert not crypto.outdated_seal(key.seal(token, rid, b"x"))
    for i in range(len(v1)):
        bad = bytearray(v1)
        bad[i] ^= 0x01
        assert key.open(token, rid, bytes(bad)) is None, f"byte {i} not protected"
    assert key.open(new_token(), rid, v1) is None and key.open(token, "0" * 64, v1) is None
    assert b"\x02" + v1[1:] != v1 and key.open(token, rid, b"\x02" + v1[1:]) is None  # no format confusion


def test_wrong_token_record_or_key_opens_nothing(key, sealed):
    token, rid, blob = sealed
    other = new_token()
    assert key.open(other, rid, blob) is None                      # someone else's cookie
    assert key.open(token, key.record_id(other), blob) is None     # moved to another record
    assert key.open(token, "0" * 64, blob) is None
    assert key.open(token, rid[:-1], blob) is None
    assert ServerKey(K2).open(token, rid, blob) is None           # another server secret


def test_nonces_are_unique_so_the_same_key_seals_differently(key):
    token = new_token()
    rid = key.record_id(token)
    blobs = [key.seal(token, rid, b"same plaintext") for _ in range(200)]
    nonces = {b[1:1 + crypto.NONCE_BYTES] for b in blobs}
    assert len(nonces) == 200
    assert len(set(blobs)) == 200
    assert all(key.open(token, rid, b) == b"same plaintext" for b in blobs[:5])


# -- CSRF tokens ----------------------------------------------------------------------
def test_csrf_token_is_bound_to_the_binding_and_the_key(key):
    a, b = "session:" + new_token(), "session:" + new_token()
    token = key.csrf_token(a)
    assert key.csrf_token(a) == token                 # stable for the same binding
    assert key.csrf_token(b) != token                 # another session, another token
    assert ServerKey(K2).csrf_token(a) != token      # another server secret, another token
    assert key.check_csrf(a, token)
    assert not key.check_csrf(b, token)
    assert not ServerKey(K2).check_csrf(a, token)


@pytest.mark.parametrize("given", [None, "", 123, b"bytes", ["list"], "0" * 64, "x", "é" * 64, "\x00" * 64])
def test_csrf_check_refuses_wrong_missing_and_non_string(key, given):
    binding = "login:" + new_token()
    assert key.check_csrf(binding, given) is False


def test_csrf_check_refuses_without_binding(key):
    assert key.check_csrf("", key.csrf_token("")) is False
    assert key.check_csrf(None, "anything") is False


def test_csrf_check_refuses_a_token_one_character_off(key):
    binding = "session:" + new_token()
    good = key.csrf_token(binding)
    for i in (0, 31, 63):
        bad = good[:i] + ("0" if good[i] != "0" else "1") + good[i + 1:]
        assert not key.check_csrf(binding, bad)
    assert not key.check_csrf(binding, good.upper() if good.upper() != good else good + "0")
    assert not key.check_csrf(binding, good[:-1])


def test_hkdf_in_two_steps_is_rfc_5869_and_pycryptodomes_hkdf():
    from Crypto.Hash import SHA256
    from Crypto.Protocol.KDF import HKDF

    from socialos_app.crypto import hkdf_expand, hkdf_expand64, hkdf_extract

    # RFC 5869, test case 3 (SHA-256, empty salt and info): PRK and the first 32 bytes of OKM.
    prk = hkdf_extract(bytes([0x0B]) * 22)
    assert prk.hex() == "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    assert hkdf_expand(prk, b"").hex() == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
    for n in range(50):
        master, info = secrets.token_bytes(32 + n), secrets.token_bytes(n)
        assert hkdf_expand(hkdf_extract(master), info) == HKDF(master, 32, b"", SHA256, context=info)
        assert hkdf_expand64(hkdf_extract(master), info) == HKDF(master, 64, b"", SHA256, context=info)


# -- record tags, key references, the keyring's own loop -------------------------------
def test_record_tag_is_keyed_and_covers_every_byte():
    key, other = crypto.ServerKey(K1), crypto.ServerKey(K2)
    message = b"socialos/v1/record" + secrets.token_bytes(64)
    tag = key.record_tag(message)
    assert len(tag) == 32 and key.check_record_tag(message, tag)
    assert other.record_tag(message) != tag and not other.check_record_tag(message, tag)
    for i in range(len(message)):
        changed = bytearray(message)
        changed[i] ^= 1
        assert bytes(changed) != message and not key.check_record_tag(bytes(changed), tag)
    assert not key.check_record_tag(message, tag[:-1]) and not key.check_record_tag(message, None)


def test_key_ref_is_sealed_to_its_record_and_opened_by_any_honoured_key():
    old = crypto.ServerKey(K1)
    rid, other_rid = old.record_id(new_token()), old.record_id(new_token())
    blob = old.seal_ref(rid, "upstream-key-token")
    assert b"upstream-key-token" not in blob
    assert old.open_ref(rid, blob) == "upstream-key-token"
    assert old.open_ref(other_rid, blob) is None                      # can't be moved to another record
    assert Keyring(K2, [K1]).open_ref(rid, blob) == "upstream-key-token"  # after a rotation
    assert Keyring(K2).open_ref(rid, blob) is None                    # a retired key opens nothing
    assert old.open_ref(rid, b"junk") is None


def test_keyring_opens_with_the_key_that_named_the_record_and_checks_csrf_under_any():
    token = new_token()
    old = crypto.ServerKey(K1)
    rid = old.record_id(token)
    blob = old.seal(token, rid, b"secret")
    ring = Keyring(K2, [K1])
    assert ring.open(token, rid, blob) == b"secret"
    assert ring.open(new_token(), rid, blob) is None
    assert Keyring(K2).open(token, rid, blob) is None
    csrf = old.csrf_token("session:" + token)
    assert ring.check_csrf("session:" + token, csrf)
    assert ring.csrf_token("session:" + token) == crypto.ServerKey(K2).csrf_token("session:" + token)
    assert ring.csrf_token("session:" + token) != csrf
    assert not Keyring(K2).check_csrf("session:" + token, csrf)


def test_keyring_checks_a_record_tag_under_the_key_that_named_it_or_under_any():
    message = b"socialos/v1/record" + secrets.token_bytes(40)
    tag = ServerKey(K1).record_tag(message)
    ring = Keyring(K2, [K1])
    assert ring.check_record_tag(message, tag, index=1)        # the previous key named the record
    assert not ring.check_record_tag(message, tag, index=0)    # the current key did not make this tag
    assert ring.check_record_tag(message, tag)                 # some honoured key did
    assert not Keyring(K2).check_record_tag(message, tag)
    assert not ring.check_record_tag(message + b"!", tag)      # another message, the same tag
