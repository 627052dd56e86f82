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
    """Reads an instance's client sends, and change events its stream receives."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.events = 0
        self._streams = set()   # request ids of the change stream's opening aggregates

    def started(self, event):
        stream = "$changeStream" in str(event.command.get("pipeline", ""))
        if event.command_name in ("find", "aggregate") and not stream:
            with self.lock:
                self.count += 1
        if stream:
            with self.lock:
                self._streams.add(event.request_id)

    def succeeded(self, event):
        cursor = event.reply.get("cursor") or {}
        if event.command_name == "getMore" or event.request_id in self._streams:
            batch = cursor.get("nextBatch", cursor.get("firstBatch", []))
            with self.lock:
                self.events += len(batch)

    def failed(self, event):
        pass


class Instance:
    def __init__(self, uri, name, key, size=100, idle=IDLE, touch_every=60.0):
        self.reads = Reads()
        self.client = MongoClient(uri, serverSelectionTimeoutMS=2000, timeoutMS=4000, event_listeners=[self.reads])
        self.engine = SessionEngine(MongoSessionStore(self.client[name]["sessions"]), Keyring(key),
                                    idle, MAX_AGE, cache_size=size, touch_every=touch_every)
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


SHORT_IDLE, SHORT_TOUCH = 3, 0.5   # seconds: SESSION_TTL and the touch interval, shortened alike


@pytest.fixture
def two_short(db):
    """Two instances whose sessions idle out after SHORT_IDLE seconds (touched every SHORT_TOUCH)."""
    name = "cache_" + secrets.token_hex(4)
    key = secrets.token_bytes(32)
    a, b = (Instance(db.uri, name, key, idle=SHORT_IDLE, touch_every=SHORT_TOUCH) for _ in range(2))
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


@pytest.mark.parametrize("where", ["on B", "on A"])
def test_a_sign_out_on_one_instance_is_refused_by_the_other(two, where):
    a, b, _raw = two
    if where == "on A":
        a, b = b, a
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    cached(b, token, record.id)
    assert b.engine.end(token) is True
    took = poll(lambda: a.engine.resume(token) is None, "the sign-out seen by the other instance")
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


def quiet(*instances):
    """Wait until each instance's stream has been polled at least once more (no event in flight)."""
    for inst in instances:
        with inst.reads.lock:
            seen = inst.reads.events
        token, record = inst.engine.start("marker", "Marker", False, CREDS)
        inst.engine.end(token)  # a delete: the next event this instance receives
        poll(lambda i=inst, s=seen: i.reads.events > s, "the marker's event")
        with inst.reads.lock:
            inst.reads.events = 0


def test_an_instance_receives_no_event_for_another_instances_touches(two):
    """The stream carries revocations, not touches: B's touches reach the database only."""
    a, b, raw = two
    records = [a.engine.start("ann", "Ann", False, CREDS)[1] for _ in range(20)]
    quiet(a)
    now = utcnow()
    b.engine.store.touch_many({r.id: now for r in records})
    assert raw.count_documents({"accessed": now}) == 20
    b.engine.end(a.engine.start("ann", "Ann", False, CREDS)[0])  # then one revocation, as a marker
    poll(lambda: a.reads.events >= 1, "the revocation after the touches")
    assert a.reads.events == 1  # that one: none for the 20 touches before it (events arrive in order)


def test_a_session_used_only_on_b_for_longer_than_the_idle_time_stays_signed_in_on_a(two_short):
    a, b, raw = two_short
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    cached(b, token, record.id)
    quiet(a)
    deadline = record.accessed + timedelta(seconds=SHORT_IDLE + 1)
    while utcnow() < deadline:   # B serves the session for longer than the idle time; A hears nothing
        assert b.engine.resume(token) is not None
        time.sleep(0.1)
    assert a.reads.events == 0
    assert raw.find_one({"_id": record.id})["accessed"] > record.accessed
    before = a.reads.count
    assert a.engine.resume(token) is not None             # A's copy looks idle: one read says it isn't
    assert a.reads.count == before + 1
    for _ in range(5):
        assert a.engine.resume(token) is not None         # then served from A's cache again
    assert a.reads.count == before + 1


def test_a_session_idle_everywhere_is_refused_on_both(two_short):
    a, b, raw = two_short
    token, record = a.engine.start("ann", "Ann", False, CREDS)
    cached(a, token, record.id)
    cached(b, token, record.id)
    used = max(a.engine.cache.get(record.id).accessed, b.engine.cache.get(record.id).accessed)
    wait_for(lambda: utcnow() - used > timedelta(seconds=SHORT_IDLE), SHORT_IDLE + 5, "the idle time over")
    assert a.engine.resume(token) is None
    assert b.engine.resume(token) is None
    assert raw.find_one({"_id": record.id}) is None


def test_an_idle_touch_elsewhere_still_ends_an_idle_session(two):
    """``accessed`` moved into the past by a writer shortens the session: that event still arrives."""
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
