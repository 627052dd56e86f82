"""The per-instance session cache, kept honest by MongoDB change streams.

Two "instances" are two engines with their own MongoClient on one database
(SecantusDB presents itself as a single-node replica set, so change streams
work); the database is changed behind their backs through a third client.
Everything is polled with a deadline, never a bare sleep.
"""

import secrets
import threading
import time
from datetime import timedelta

import pytest
from pymongo import MongoClient, monitoring

from socialos_app.crypto import Keyring
from socialos_app.sessions import Credentials, SessionEngine
from socialos_app.sessions.backends.mongo import MongoSessionStore
from socialos_app.storage import utcnow
from support import Database, wait_for

IDLE, MAX_AGE = 600, 3600
CREDS = Credentials("key-token", "key-password")


class Reads(monitoring.CommandListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0

    def started(self, event):
        stream = "$changeStream" in str(event.command.get("pipeline", ""))
        if event.command_name in ("find", "aggregate") and not stream:
            with self.lock:
                self.count += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


class Instance:
    def __init__(self, uri, name, key, size=100):
        self.reads = Reads()
        self.client = MongoClient(uri, serverSelectionTimeoutMS=2000, timeoutMS=4000, event_listeners=[self.reads])
        self.engine = SessionEngine(MongoSessionStore(self.client[name]["sessions"]), Keyring(key),
                                    IDLE, MAX_AGE, cache_size=size)
        self.engine.setup()
        self.engine.start_background()
        wait_for(lambda: self.engine.cache.trusted, 10, "the change stream")

    def close(self):
        self.engine.stop_background()
        self.client.close()


def cached(inst, token, record_id):
    """Resume until the record is in the instance's cache (a change event may race the first put)."""
    poll(lambda: inst.engine.resume(token) is not None and inst.engine.cache.get(record_id) is not None,
         "the record cached")


def poll(check, what, timeout=5.0):
    started = time.monotonic()
    wait_for(check, timeout, what)
    return time.monotonic() - started


@pytest.fixture
def two(db):
    name = "cache_" + secrets.token_hex(4)
    key = secrets.token_bytes(32)
    a, b = Instance(db.uri, name, key), Instance(db.uri, name, key)
    raw = db.client()
    yield a, b, raw[name]["sessions"]
    a.close()
    b.close()
    raw.drop_database(name)
    raw.close()


def test_steady_state_requests_read_nothing_from_the_database(two):
    a, _b, _raw = two
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    assert a.engine.resume(token) is not None           # the first read goes through...
    cached(a, token, record.id)
    before = a.reads.count
    for _ in range(20):
        assert a.engine.resume(token) is not None       # ...then none
    assert a.reads.count == before
    assert a.engine.credentials(token, a.engine.resume(token)) == CREDS


def test_a_sign_out_on_one_instance_is_refused_by_the_other(two):
    a, b, _raw = two
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    cached(b, token, record.id)
    assert b.engine.end(token) is True
    took = poll(lambda: a.engine.resume(token) is None, "the sign-out seen on A")
    assert took < 2.0


def test_a_record_deleted_in_the_database_is_refused(two):
    a, _b, raw = two
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    raw.delete_one({"_id": record.id})
    poll(lambda: a.engine.resume(token) is None, "the deleted record refused")


def test_a_record_tampered_in_the_database_ends_the_session_on_the_cached_path(two, caplog):
    a, _b, raw = two
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    assert a.engine.resume(token).admin is False
    raw.update_one({"_id": record.id}, {"$set": {"admin": True}})
    poll(lambda: a.engine.resume(token) is None, "the tampered record refused")
    assert raw.find_one({"_id": record.id}) is None
    assert any("event=session_tampered" in r.getMessage() for r in caplog.records)


def test_a_touch_updates_the_cached_entry_without_a_reload(two):
    a, _b, raw = two
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    before = a.reads.count
    later = record.accessed + timedelta(seconds=5)
    raw.update_one({"_id": record.id}, {"$set": {"accessed": later}})
    poll(lambda: a.engine.cache.get(record.id).accessed == later, "the touch applied to the entry")
    assert a.engine.resume(token).accessed == later
    assert a.reads.count == before


def test_an_idle_touch_elsewhere_still_ends_an_idle_session(two):
    a, _b, raw = two
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    raw.update_one({"_id": record.id}, {"$set": {"accessed": utcnow() - timedelta(seconds=IDLE + 5)}})
    poll(lambda: a.engine.resume(token) is None, "the idle session ended")


def test_the_lru_bound_holds(db):
    name = "cache_" + secrets.token_hex(4)
    small = Instance(db.uri, name, secrets.token_bytes(32), size=3)
    try:
        tokens = [small.engine.start("ann", "Ann", False, CREDS)[0] for _ in range(5)]
        for token in tokens:
            assert small.engine.resume(token) is not None
        assert len(small.engine.cache) == 3
        before = small.reads.count
        assert small.engine.resume(tokens[-1]) is not None   # recent: cached
        assert small.reads.count == before
        assert small.engine.resume(tokens[0]) is not None    # evicted: read again
        assert small.reads.count == before + 1
        assert len(small.engine.cache) == 3
    finally:
        small.close()
        db.client().drop_database(name)


def test_without_a_confirmed_stream_every_request_reads_through(two):
    a, _b, _raw = two
    token, _ = a.engine.start("ann", "Ann", False, CREDS)
    assert a.engine.resume(token) is not None
    a.engine.stop_background()
    assert not a.engine.cache.trusted and len(a.engine.cache) == 0
    before = a.reads.count
    for _ in range(5):
        assert a.engine.resume(token) is not None
    assert a.reads.count == before + 5


def test_a_database_restart_reads_through_then_the_cache_comes_back():
    database = Database(test_commands=False).start()
    name = "restart"
    inst = Instance(database.uri_for(name), name, secrets.token_bytes(32))
    try:
        token, record = inst.engine.start("ann", "Ann", False, CREDS)
        cached(inst, token, record.id)
        database.stop()
        poll(lambda: not inst.engine.cache.trusted, "the stream noticed the outage", timeout=10)
        database.start()
        poll(lambda: inst.engine.cache.trusted, "the stream back", timeout=15)
        cached(inst, token, record.id)                       # read through, then cached again
        before = inst.reads.count
        assert inst.engine.resume(token) is not None
        assert inst.reads.count == before
        raw = MongoClient(database.uri_for(name), serverSelectionTimeoutMS=3000)
        raw[name]["sessions"].delete_many({})
        raw.close()
        poll(lambda: inst.engine.resume(token) is None, "a delete after the restart seen")
    finally:
        inst.close()
        database.cleanup()
