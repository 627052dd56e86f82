"""One suite, every session backend: what ``SessionStore`` promises, run against
the MongoDB store (SecantusDB) and the in-memory store alike, as Django runs one
mixin of tests against every session backend."""

import secrets
from dataclasses import replace
from datetime import timedelta

import pytest

from socialos_app.crypto import Keyring
from socialos_app.sessions import Credentials, RecordExists, SessionEngine, SessionRecord, SessionStore
from socialos_app.sessions.backends.memory import MemorySessionStore
from socialos_app.sessions.backends.mongo import MongoSessionStore
from socialos_app.storage import utcnow


def memory_store(request):
    yield MemorySessionStore()


def mongo_store(request):
    db = request.getfixturevalue("db")
    name = "contract_" + secrets.token_hex(4)
    client = db.client()
    yield MongoSessionStore(client[name]["sessions"])
    client.drop_database(name)
    client.close()


# How the suite makes a fresh store of each backend. A backend added to BACKENDS
# without a maker here fails test_every_backend_runs_this_suite.
MAKERS = {"memory": memory_store, "mongodb": mongo_store}


@pytest.fixture(params=sorted(MAKERS))
def store(request):
    made = MAKERS[request.param](request)
    s = next(made)
    s.setup(600)
    yield s
    next(made, None)


def test_every_backend_runs_this_suite():
    from socialos_app.sessions.backends import BACKENDS
    assert set(MAKERS) == set(BACKENDS)


def record(username="ann", created=None, **fields):
    now = utcnow()
    created = created or now
    base = SessionRecord(id=secrets.token_hex(32), username=username, name=username.title(), admin=False,
                         sealed=secrets.token_bytes(40), created=created, accessed=created,
                         expires=created + timedelta(hours=1), handle=secrets.token_hex(6),
                         user_agent="UA", address="127.0.0.1", key_ref=secrets.token_bytes(30),
                         tag=secrets.token_bytes(32))
    return replace(base, **fields)


def test_the_interface_is_abstract():
    with pytest.raises(TypeError):
        SessionStore()


def test_create_then_load_returns_every_field(store):
    r = record()
    store.create(r)
    assert store.load([r.id]) == r
    assert store.load([secrets.token_hex(32), r.id]) == r       # any of several ids, one call
    assert store.load([secrets.token_hex(32)]) is None


def test_create_refuses_an_id_that_exists(store):
    r = record()
    store.create(r)
    with pytest.raises(RecordExists):
        store.create(replace(r, username="ben"))
    assert store.load([r.id]).username == "ann"


def test_update_replaces_every_field_of_an_existing_record_only(store):
    r = record()
    store.create(r)
    changed = replace(r, admin=True, name="Changed", tag=b"t" * 32)
    assert changed != r
    assert store.update(changed) is True
    assert store.load([r.id]) == changed
    ghost = record()
    assert store.update(ghost) is False
    assert store.load([ghost.id]) is None


def test_touch_changes_accessed_only(store):
    r = record()
    store.create(r)
    later = r.accessed + timedelta(seconds=90)
    store.touch(r.id, later)
    assert store.load([r.id]) == replace(r, accessed=later)
    store.touch(secrets.token_hex(32), later)                   # a record that is gone: no error


def test_touch_many_changes_accessed_only_and_revives_nothing(store):
    a, b = record(), record()
    store.create(a)
    store.create(b)
    gone = secrets.token_hex(32)
    later = a.accessed + timedelta(seconds=90)
    store.touch_many({a.id: later, gone: later, b.id: later + timedelta(seconds=1)})
    assert store.load([a.id]) == replace(a, accessed=later)
    assert store.load([b.id]) == replace(b, accessed=later + timedelta(seconds=1))
    assert store.load([gone]) is None                           # a session ended meanwhile stays ended
    store.touch_many({})


def test_destroy_says_whether_there_was_one(store):
    r = record()
    store.create(r)
    assert store.destroy(r.id) is True
    assert store.load([r.id]) is None
    assert store.destroy(r.id) is False


def test_take_removes_and_returns_one_users_records(store):
    a1, a2, a3, b1 = record("ann"), record("ann"), record("ann"), record("ben")
    for r in (a1, a2, a3, b1):
        store.create(r)
    assert store.take("ann", handle=b1.handle) == []             # never another user's
    assert store.take("ann", handle=a1.handle, keep_id=a1.id) == []
    assert [r.id for r in store.take("ann", handle=a1.handle)] == [a1.id]
    assert store.load([a1.id]) is None
    assert sorted(r.id for r in store.take("ann", keep_id=a3.id)) == [a2.id]
    assert store.load([a3.id]) == a3 and store.load([b1.id]) == b1


def test_list_user_newest_first_live_bounds_and_limit(store):
    now = utcnow()
    made = [record("ann", created=now - timedelta(minutes=10 - i)) for i in range(5)]
    for r in made:
        store.create(r)
    store.create(record("ben"))
    idle = replace(made[0], accessed=now - timedelta(hours=2))
    store.update(idle)
    old = replace(made[1], expires=now - timedelta(seconds=1))
    store.update(old)
    assert [r.id for r in store.list_user("ann")] == [r.id for r in reversed(made)]
    live = store.list_user("ann", accessed_after=now - timedelta(hours=1), expires_after=now)
    assert [r.id for r in live] == [r.id for r in reversed(made[2:])]
    assert len(store.list_user("ann", limit=2)) == 2
    assert store.list_user("nobody") == []


def test_stats_count_live_records_by_user_and_hour(store):
    now = utcnow()
    for username in ("ann", "ann", "ben"):
        # Made at 7 o'clock (whatever the time now), used just now: live at any hour of the day.
        store.create(record(username, created=now.replace(hour=7), accessed=now, expires=now + timedelta(hours=1)))
    store.create(record("cat", created=now.replace(hour=9), accessed=now - timedelta(hours=2)))
    store.create(record("dan", created=now.replace(hour=9), expires=now - timedelta(seconds=1)))
    stats = store.stats(now - timedelta(hours=1), now)
    assert stats == {"active": 3, "users": 2, "by_hour": {h: (3 if h == 7 else 0) for h in range(24)}}
    empty = store.stats(now + timedelta(hours=5), now)
    assert empty["active"] == 0 and empty["users"] == 0


def test_setup_is_idempotent_and_ping_answers(store):
    store.setup(600)
    store.setup(900)
    store.ping()


def test_the_engine_runs_the_same_on_every_store(store):
    engine = SessionEngine(store, Keyring(secrets.token_bytes(32)), 600, 3600)
    engine.setup()
    token, r = engine.start("ann", "Ann", True, Credentials("key-token", "key-password"))
    other, _ = engine.start("ann", "Ann", False, Credentials("other-token", "other-password"))
    resumed = engine.resume(token)
    assert resumed == r and engine.credentials(token, resumed) == Credentials("key-token", "key-password")
    assert {d.id for d in engine.devices("ann")} == {r.id, engine.keyring.current.record_id(other)}
    assert engine.stats()["active"] == 2
    assert engine.end_devices("ann", keep_id=r.id) == ["other-token"]
    assert engine.resume(other) is None
    assert engine.end(token) is True and engine.resume(token) is None


# -- choosing a backend -------------------------------------------------------------------
def test_session_store_setting_picks_the_backend_by_name(db):
    from socialos_app.db.connection import connect, disconnect
    from socialos_app.sessions.backends import get_store
    from socialos_app.settings import Settings

    connect(db.uri_for("contract_" + secrets.token_hex(4)))  # lazy: nothing is sent
    try:
        assert isinstance(get_store(Settings(session_store="memory")), MemorySessionStore)
        mongo = get_store(Settings(session_store="mongodb"))
        assert isinstance(mongo, MongoSessionStore) and mongo.collection.name == "sessions"
        with pytest.raises(ValueError, match="mongodb"):
            get_store(Settings(session_store="redis"))
    finally:
        disconnect()
