"""The session engine over the real MongoDB backend (SecantusDB), in-process.

The engine and store are driven only through their public methods; the
database is inspected and aged through a separate pymongo client, and
every command the store sends is counted with pymongo's command monitoring.
"""

import hashlib
import json
import secrets
import threading
from datetime import timedelta

import pytest
from pymongo import monitoring

from socialos_app.crypto import Keyring, ServerKey, new_token
from socialos_app.db.connection import connect, disconnect
from socialos_app.sessions import Credentials, SessionEngine
from socialos_app.sessions.backends.mongo import MongoSessionStore, record_from_document
from socialos_app.sessions.engine import record_message
from socialos_app.storage import utcnow

IDLE = 600
MAX_AGE = 3600
CREDS = Credentials(token="upstream-token", password="upstream-key-password")


class Commands(monitoring.CommandListener):
    """Every command the store's client sends to one database."""

    def __init__(self, database):
        self.database = database
        self.lock = threading.Lock()
        self.names = []
        self.write_concerns = []

    def started(self, event):
        if event.database_name == self.database:
            with self.lock:
                self.names.append(event.command_name)
                self.write_concerns.append((event.command_name, event.command.get("writeConcern")))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def clear(self):
        with self.lock:
            self.names.clear()
            self.write_concerns.clear()

    def count(self, *names):
        with self.lock:
            return sum(1 for n in self.names if n in names)

    @property
    def writes(self):
        return self.count("insert", "update", "delete", "findAndModify")

    @property
    def reads(self):
        return self.count("find", "aggregate", "count")


@pytest.fixture
def sessions(db):
    """A store on a database of its own, its command log, and a raw view of its collection."""
    name = "sess_" + secrets.token_hex(4)
    commands = Commands(name)
    client = connect(db.uri_for(name), event_listeners=[commands])
    store = MongoSessionStore(client[name]["sessions"])
    raw = db.client()
    yield store, commands, raw[name]["sessions"]
    raw.drop_database(name)
    raw.close()
    disconnect()


def rewrite(raw, engine, record_id, **fields):
    """Change stored fields as the server itself would (re-tagged under the engine's key)."""
    doc = raw.find_one({"_id": record_id})
    doc.update(fields)
    record = record_from_document(doc)
    tag = engine.keyring.current.record_tag(record_message(record))
    raw.update_one({"_id": record_id}, {"$set": {**fields, "tag": tag}})


def make_engine(store, key=None, idle=IDLE, max_age=MAX_AGE):
    engine = SessionEngine(store, Keyring(key or secrets.token_bytes(32)), idle, max_age)
    engine.setup()
    return engine


@pytest.fixture
def engine(sessions):
    store, _commands, _raw = sessions
    return make_engine(store)


# -- indexes ----------------------------------------------------------------------------
def test_ttl_indexes_expire_idle_and_old_sessions(sessions, engine):
    _store, _commands, raw = sessions
    indexes = raw.index_information()
    idle = next(i for i in indexes.values() if i["key"] == [("accessed", 1)])
    assert idle["expireAfterSeconds"] == IDLE
    absolute = next(i for i in indexes.values() if i["key"] == [("expires", 1)])
    assert absolute["expireAfterSeconds"] == 0


def test_changing_the_idle_timeout_updates_the_ttl_index_in_place(sessions, engine):
    store, _commands, raw = sessions
    token, _ = engine.start("ann", "Ann", False, CREDS)
    make_engine(store, idle=1800)  # the app restarted with another SESSION_TTL
    idle = [i for i in raw.index_information().values() if i["key"] == [("accessed", 1)]]
    assert len(idle) == 1 and idle[0]["expireAfterSeconds"] == 1800
    make_engine(store, idle=1800)  # and again: idempotent
    idle = [i for i in raw.index_information().values() if i["key"] == [("accessed", 1)]]
    assert len(idle) == 1 and idle[0]["expireAfterSeconds"] == 1800
    assert engine.resume(token) is not None  # sessions survive the change


# -- start / resume ---------------------------------------------------------------------
def test_start_then_resume_returns_the_credentials(sessions, engine):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann Example", True, CREDS, user_agent="UA/1", address="127.0.0.1")
    again = engine.resume(token)
    assert again is not None
    assert engine.credentials(token, again) == CREDS
    assert (again.username, again.name, again.admin) == ("ann", "Ann Example", True)
    assert again.id == record.id
    # What the database holds: no token, no key password, the record id under the key.
    doc = raw.find_one({"_id": record.id})
    assert doc is not None
    assert doc["_id"] == engine.keyring.current.record_id(token)
    stored = repr(doc)
    assert token not in stored and CREDS.password not in stored and CREDS.token not in stored
    assert doc["expires"] - doc["created"] == timedelta(seconds=MAX_AGE)


def test_each_start_makes_a_new_token(sessions, engine):
    tokens = {engine.start("ann", "Ann", False, CREDS)[0] for _ in range(5)}
    assert len(tokens) == 5


def test_unknown_and_garbage_tokens_resume_nothing(sessions, engine):
    _store, commands, _raw = sessions
    engine.start("ann", "Ann", False, CREDS)
    commands.clear()
    assert engine.resume(new_token()) is None          # well-formed, unknown: one read, no error
    assert commands.reads == 1 and commands.writes == 0
    commands.clear()
    for junk in ("", "x", "a" * 200, "../../etc/passwd", "a" * 42 + "!", None, 42, "{'$ne': 1}"):
        assert engine.resume(junk) is None
    assert commands.names == []                         # junk never reaches the database


def test_a_session_of_another_server_secret_is_not_resumed(sessions, engine):
    store, _commands, _raw = sessions
    token, _ = engine.start("ann", "Ann", False, CREDS)
    assert make_engine(store).resume(token) is None


def test_a_tampered_record_is_not_resumed(sessions, engine):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann", False, CREDS)
    sealed = bytearray(raw.find_one({"_id": record.id})["sealed"])
    sealed[20] ^= 1
    raw.update_one({"_id": record.id}, {"$set": {"sealed": bytes(sealed)}})
    assert engine.resume(token) is None


# -- expiry -----------------------------------------------------------------------------
def test_idle_expiry_is_enforced_on_read(sessions, engine):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann", False, CREDS)
    raw.update_one({"_id": record.id}, {"$set": {"accessed": utcnow() - timedelta(seconds=IDLE - 30)}})
    assert engine.resume(token) is not None            # not idle long enough yet
    raw.update_one({"_id": record.id}, {"$set": {"accessed": utcnow() - timedelta(seconds=IDLE + 1)}})
    assert engine.resume(token) is None
    assert raw.find_one({"_id": record.id}) is None    # and the record is gone for good


def test_absolute_expiry_is_enforced_on_read_even_when_active(sessions, engine):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann", False, CREDS)
    rewrite(raw, engine, record.id, expires=utcnow() + timedelta(seconds=30))
    assert engine.resume(token) is not None
    rewrite(raw, engine, record.id, expires=utcnow() - timedelta(seconds=1), accessed=utcnow())
    assert engine.resume(token) is None
    assert raw.find_one({"_id": record.id}) is None


# -- one read per request, a write at most once a minute -------------------------------
def test_resume_reads_once_and_touches_at_most_once_a_minute(sessions, engine):
    _store, commands, raw = sessions
    commands.clear()
    token, record = engine.start("ann", "Ann", False, CREDS)
    accessed = raw.find_one({"_id": record.id})["accessed"]
    for i in range(10):
        assert engine.resume(token) is not None
        assert commands.reads == i + 1                  # exactly one read per resume
    assert commands.writes == 1                         # the insert only: no touch within a minute
    assert commands.count("insert") == 1
    assert raw.find_one({"_id": record.id})["accessed"] == accessed

    two_minutes_ago = utcnow() - timedelta(minutes=2)
    raw.update_one({"_id": record.id}, {"$set": {"accessed": two_minutes_ago}})
    commands.clear()
    assert engine.resume(token) is not None
    assert commands.reads == 1 and commands.writes == 1 and commands.count("update") == 1
    touched = raw.find_one({"_id": record.id})["accessed"]
    assert touched > two_minutes_ago + timedelta(seconds=100)

    commands.clear()
    for _ in range(5):
        assert engine.resume(token) is not None
    assert commands.reads == 5 and commands.writes == 0
    assert raw.find_one({"_id": record.id})["accessed"] == touched


# -- end and the owner's device list ----------------------------------------------------
def test_end_deletes_the_session(sessions, engine):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann", False, CREDS)
    other, _ = engine.start("ann", "Ann", False, CREDS)
    assert engine.end(token) is True
    assert raw.find_one({"_id": record.id}) is None
    assert engine.resume(token) is None
    assert engine.end(token) is False
    assert engine.end("garbage") is False
    assert engine.resume(other) is not None             # only that one session ended


def test_devices_and_end_devices(sessions, engine):
    _store, _commands, raw = sessions
    started = [engine.start("ann", "Ann", False, Credentials(f"key-{i}", f"pw-{i}"), user_agent=f"device-{i}")
               for i in range(3)]
    ben, _ = engine.start("ben", "Ben", False, Credentials("key-ben", "pw-ben"))

    listed = engine.devices("ann")
    assert [r.user_agent for r in listed] == ["device-2", "device-1", "device-0"]  # newest first
    assert all(r.username == "ann" for r in listed)
    assert len({r.handle for r in listed}) == 3 and all(len(r.handle) == 12 for r in listed)
    assert engine.devices("nobody") == []

    # Sign out one device by its handle: never another user's, never the current one.
    victim = started[1][1]
    assert engine.end_devices("ben", handle=victim.handle) == []
    assert engine.end_devices("ann", handle=victim.handle, keep_id=victim.id) == []
    assert engine.end_devices("ann", handle=victim.handle) == ["key-1"]   # its upstream key token
    assert engine.resume(started[1][0]) is None
    assert engine.resume(started[0][0]) is not None

    # Sign out everywhere else.
    keep = started[2][1]
    assert engine.end_devices("ann", keep_id=keep.id) == ["key-0"]
    assert [r.id for r in engine.devices("ann")] == [keep.id]
    assert engine.resume(started[2][0]) is not None
    assert engine.resume(ben) is not None
    # The key token is stored sealed, never in clear.
    assert b"key-2" not in repr(raw.find_one({"_id": keep.id})).encode()


def test_devices_lists_live_sessions_only(sessions, engine):
    _store, _commands, raw = sessions
    (_, live), (_, idle), (_, old) = [engine.start("ann", "Ann", False, CREDS) for _ in range(3)]
    now = utcnow()
    raw.update_one({"_id": idle.id}, {"$set": {"accessed": now - timedelta(seconds=IDLE + 5)}})
    rewrite(raw, engine, old.id, expires=now - timedelta(seconds=5))
    assert [r.id for r in engine.devices("ann")] == [live.id]


def test_stats_count_live_sessions_only(sessions, engine):
    _store, commands, raw = sessions
    engine.start("ann", "Ann", False, CREDS)
    engine.start("ann", "Ann", False, CREDS)
    engine.start("ben", "Ben", False, CREDS)
    _, idle = engine.start("cat", "Cat", False, CREDS)
    _, old = engine.start("dan", "Dan", False, CREDS)
    now = utcnow()
    raw.update_one({"_id": idle.id}, {"$set": {"accessed": now - timedelta(seconds=IDLE + 5)}})
    rewrite(raw, engine, old.id, expires=now - timedelta(seconds=5))

    commands.clear()
    stats = engine.stats()
    assert commands.names == ["aggregate"]            # counted by the database, one command
    assert stats["active"] == 3
    assert stats["users"] == 2
    assert set(stats["by_hour"]) == set(range(24))
    assert sum(stats["by_hour"].values()) == 3
    assert stats["by_hour"][now.hour] + stats["by_hour"][(now.hour + 1) % 24] == 3


def test_ping_answers_when_the_database_does(sessions):
    _store, _commands, _raw = sessions
    make_engine(_store).ping()  # raises StoreUnavailable otherwise (see test_faults.py)


def test_record_id_is_the_keyed_hash_of_the_token(sessions):
    store, _commands, raw = sessions
    key = secrets.token_bytes(32)
    engine = make_engine(store, key=key)
    token, _ = engine.start("ann", "Ann", False, CREDS)
    assert raw.find_one({"_id": ServerKey(key).record_id(token)}) is not None
    assert raw.count_documents({}) == 1


# -- durability -------------------------------------------------------------------------
def test_session_writes_wait_for_a_majority_and_the_journal(sessions, engine):
    _store, commands, _raw = sessions
    commands.clear()
    token, record = engine.start("ann", "Ann", False, CREDS)
    other, _ = engine.start("ann", "Ann", False, CREDS)
    engine.end_devices("ann", keep_id=record.id)
    engine.end(token)
    writes = [(name, wc) for name, wc in commands.write_concerns if name in ("insert", "delete")]
    assert [name for name, _ in writes] == ["insert", "insert", "delete", "delete"]
    for _name, wc in writes:
        assert wc == {"w": "majority", "j": True}


# -- record integrity: a database writer without SECURE_KEY gains nothing ----------------
def _security_events(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "socialos.security"]


@pytest.mark.parametrize("change", [
    {"admin": True},
    {"expires": "ten years"},
    {"username": "ben"},
    {"name": "Someone Else"},
    {"created": "now"},
    {"handle": "0123456789ab"},
    {"admin": 1},
])
def test_a_database_writer_changing_any_field_ends_the_session(sessions, engine, caplog, change):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann", False, CREDS)
    now = utcnow()
    change = {k: {"ten years": now + timedelta(days=3650), "now": now}.get(v, v) if isinstance(v, str) else v
              for k, v in change.items()}
    stored = raw.find_one({"_id": record.id})
    assert all(stored[k] != v or type(stored[k]) is not type(v) for k, v in change.items())  # really a change
    raw.update_one({"_id": record.id}, {"$set": change})
    caplog.clear()
    assert engine.resume(token) is None
    assert raw.find_one({"_id": record.id}) is None     # destroyed, not just refused
    events = _security_events(caplog)
    assert len(events) == 1 and "event=session_tampered" in events[0]
    assert f"sid={hashlib.sha256(record.id.encode()).hexdigest()[:8]}" in events[0]
    assert token not in events[0] and record.id not in events[0]


def test_touching_accessed_is_the_one_unauthenticated_change(sessions, engine):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann", True, CREDS)
    raw.update_one({"_id": record.id}, {"$set": {"accessed": utcnow() - timedelta(seconds=5)}})
    again = engine.resume(token)
    assert again is not None and again.admin is True


def test_stripping_the_tag_of_a_new_record_does_not_make_it_a_legacy_one(sessions, engine, caplog):
    _store, _commands, raw = sessions
    token, record = engine.start("ann", "Ann", False, CREDS)
    raw.update_one({"_id": record.id}, {"$unset": {"tag": ""}, "$set": {"admin": True}})
    assert engine.resume(token) is None
    assert raw.find_one({"_id": record.id}) is None
    assert any("event=session_tampered" in e for e in _security_events(caplog))


def _legacy_record(raw, key, username="ann", admin=False, expires_in=timedelta(seconds=MAX_AGE)):
    """A session as the code before record tags wrote it: no tag, no key_ref, an unmarked seal."""
    token = new_token()
    rid = key.record_id(token)
    now = utcnow()
    raw.insert_one({"_id": rid, "username": username, "name": username.title(), "admin": admin,
                    "sealed": key.seal(token, rid, json.dumps({"t": CREDS.token, "p": CREDS.password}).encode()),
                    "created": now, "accessed": now, "expires": now + expires_in,
                    "handle": secrets.token_hex(6), "user_agent": "old", "address": "127.0.0.1"})
    return token, rid


def test_a_session_from_before_tags_keeps_working_and_is_tagged_on_first_use(sessions):
    store, _commands, raw = sessions
    key = secrets.token_bytes(32)
    engine = make_engine(store, key=key)
    token, rid = _legacy_record(raw, ServerKey(key))
    record = engine.resume(token)
    assert record is not None and record.username == "ann" and record.id == rid
    assert engine.credentials(token, record) == CREDS
    stored = raw.find_one({"_id": rid})
    assert stored["tag"] and stored["key_ref"]                   # re-tagged in place, key token sealed
    assert engine.resume(token) is not None                      # and resumed as a tagged record from now on
    assert engine.end_devices("ann") == [CREDS.token]


def test_a_legacy_record_grants_no_admin_and_no_lifetime(sessions):
    """The rule for records without a tag: admin is never carried over, expires is clamped."""
    store, _commands, raw = sessions
    key = secrets.token_bytes(32)
    engine = make_engine(store, key=key)
    token, rid = _legacy_record(raw, ServerKey(key), admin=True, expires_in=timedelta(days=3650))
    before = utcnow()
    record = engine.resume(token)
    assert record is not None
    assert record.admin is False
    assert record.expires <= before + timedelta(seconds=MAX_AGE + 1)
    stored = raw.find_one({"_id": rid})
    assert stored["admin"] is False and stored["expires"] == record.expires
    # Stripping the new tag again (to try once more) is tampering now.
    raw.update_one({"_id": rid}, {"$unset": {"tag": ""}, "$set": {"admin": True}})
    assert engine.resume(token) is None and raw.find_one({"_id": rid}) is None


def test_a_legacy_record_with_a_seal_that_does_not_open_is_destroyed(sessions, engine):
    _store, _commands, raw = sessions
    other_key = ServerKey(secrets.token_bytes(32))
    token = new_token()
    rid = engine.keyring.current.record_id(token)
    now = utcnow()
    raw.insert_one({"_id": rid, "username": "ann", "name": "Ann", "admin": True, "created": now,
                    "accessed": now, "expires": now + timedelta(days=1),
                    "sealed": other_key.seal(token, rid, b'{"t": "x", "p": "y"}')})
    assert engine.resume(token) is None
    assert raw.find_one({"_id": rid}) is None


def test_a_seal_in_the_gcm_format_opens_and_is_resealed_in_the_current_one_on_first_use(sessions, engine):
    """Records sealed with AES-GCM (format 1) keep working; their first open re-seals them
    as ChaCha20 + HMAC-SHA256 (format 2), tag and all, so each pays for GCM once."""
    from socialos_app import crypto
    _store, commands, raw = sessions
    token, record = engine.start("ann", "Ann", False, CREDS)
    key = engine.keyring.current
    v1 = crypto._gcm_seal(key._seal_key(token), record.id.encode(), json.dumps(
        {"t": CREDS.token, "p": CREDS.password, "v": 2}).encode())
    assert v1[:1] == b"\x01" and raw.find_one({"_id": record.id})["sealed"][:1] == b"\x02"
    rewrite(raw, engine, record.id, sealed=v1)
    resumed = engine.resume(token)
    assert resumed is not None and resumed.sealed == v1
    commands.clear()
    assert engine.credentials(token, resumed) == CREDS
    assert commands.writes == 1                                  # re-sealed in place
    stored = raw.find_one({"_id": record.id})
    assert stored["sealed"][:1] == b"\x02" and stored["sealed"] != v1
    again = engine.resume(token)                                 # the new tag holds
    assert again is not None and again.sealed == stored["sealed"]
    commands.clear()
    assert engine.credentials(token, again) == CREDS
    assert commands.writes == 0                                  # and nothing is re-sealed twice


# -- re-sealing after a rotation, under concurrency --------------------------------------
def test_concurrent_reseals_on_two_engines_make_exactly_one_current_record(sessions, db):
    store, _commands, raw = sessions
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    old = make_engine(store, key=k1)
    tokens = [old.start("ann", "Ann", False, Credentials(f"key-{i}", f"pw-{i}"))[0] for i in range(6)]
    # A second "instance": its own client and engine, the same database.
    other_client = db.client()
    other_store = MongoSessionStore(other_client[raw.database.name]["sessions"])
    engines = [SessionEngine(s, Keyring(k2, [k1]), IDLE, MAX_AGE) for s in (store, other_store)]
    barrier = threading.Barrier(24)
    results, errors = [], []

    def first_request(token, engine):
        barrier.wait(10)
        try:
            record = engine.resume(token)
            results.append((token, record, record and engine.credentials(token, record)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=first_request, args=(t, engines[i % 2]))
               for t in tokens for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    other_client.close()
    assert errors == []
    assert len(results) == 24 and all(r is not None for _, r, _ in results)
    for token, record, creds in results:
        assert record.id == ServerKey(k2).record_id(token)
        assert creds == Credentials(f"key-{tokens.index(token)}", f"pw-{tokens.index(token)}")
    for token in tokens:
        assert raw.count_documents({"_id": ServerKey(k2).record_id(token)}) == 1
        assert raw.count_documents({"_id": ServerKey(k1).record_id(token)}) == 0
    assert raw.count_documents({}) == 6


def test_a_sign_out_racing_a_reseal_leaves_no_live_session(sessions):
    """The re-sealer finds the old record gone after inserting the new one: it removes it too."""
    store, _commands, raw = sessions
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    token, old_record = make_engine(store, key=k1).start("ann", "Ann", False, CREDS)
    engine = SessionEngine(store, Keyring(k2, [k1]), IDLE, MAX_AGE)
    loaded = store.load([old_record.id])
    raw.delete_one({"_id": old_record.id})             # the sign-out lands between load and re-seal
    assert engine._reseal(token, loaded, CREDS, utcnow()) is None
    assert raw.count_documents({}) == 0
    assert engine.resume(token) is None


# -- the app in a real process: collections made at start-up, SESSION_STORE=memory --------
def test_the_app_runs_on_the_memory_store_and_makes_every_collections_indexes(db, start_app):
    """One process, sessions in its memory: sign-in works and nothing of the session
    reaches MongoDB; the throttle and presence collections still get their indexes there."""
    from conftest import csrf_from, sign_in
    name = "memapp_" + secrets.token_hex(4)
    app = start_app(MONGODB_URI=db.uri_for(name), SESSION_STORE="memory")
    raw = db.client()
    try:
        browser, answer = sign_in(app, "demo", "demo")
        assert answer.status_code == 303, answer.text
        page = browser.get(app.url("/dashboard"), allow_redirects=False, timeout=10)
        assert page.status_code == 200 and "demo" in page.text
        assert raw[name]["sessions"].count_documents({}) == 0
        ttl = {coll: {i["key"][0][0]: i.get("expireAfterSeconds")
                      for i in raw[name][coll].index_information().values()}
               for coll in ("login_failures", "presence_members", "webhook_deliveries")}
        assert ttl["login_failures"]["expires"] == 0
        assert "channels" in ttl["presence_members"]
        assert ttl["webhook_deliveries"]["at"] == 3600
        browser.post(app.url("/logout"), data={"csrf_token": csrf_from(page.text)}, timeout=10)
        after = browser.get(app.url("/dashboard"), allow_redirects=False, timeout=10)
        assert after.status_code == 303 and "/login" in after.headers["Location"]
    finally:
        raw.drop_database(name)
        raw.close()
