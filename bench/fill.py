"""Sessions in bulk, made by the project's own code, inserted in batches.

Each record comes from ``SessionEngine.start`` (fresh token, HMAC record id,
credentials sealed with ChaCha20 + HMAC-SHA256 under keys HKDF derives from SECURE_KEY and
the token, the server-sealed key reference, the integrity tag) with the app's
SECURE_KEY, and is stored as ``MongoSessionStore.create`` stores it
(``document_from_record``; checked once per run against ``SessionDocument.to_mongo``):
the app resumes these sessions exactly like ones made by signing in. Only
the upstream key inside is made up (so they serve the pages that never call
upstream; ``/_bench/upstream`` uses real sign-ins), and the writes go in
batches of thousands instead of one insert per record. Two worker processes
make the records while this one inserts them. Each carries a real browser's
User-Agent, so the records (and the cache's bytes per session) have a real size.
"""

import dataclasses
import multiprocessing
import secrets
import time
from concurrent.futures import ProcessPoolExecutor

import bson
from pymongo import MongoClient

from socialos_app.crypto import Keyring
from socialos_app.db.documents import SessionDocument
from socialos_app.sessions import Credentials, SessionEngine
from socialos_app.sessions.backends.memory import MemorySessionStore
from socialos_app.sessions.backends.mongo import MongoSessionStore, document_from_record

__all__ = ["Filler", "USER_AGENT"]

BATCH = 2500
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")


class _Collect(MemorySessionStore):
    """An in-memory store that also keeps, in order, what ``SessionEngine.start`` creates."""

    def __init__(self):
        super().__init__()
        self.records = []

    def create(self, record):
        self.records.append(record)


_worker = {}


def _init_worker(secure_key, idle_seconds, max_age_seconds):
    collect = _Collect()
    _worker["collect"] = collect
    _worker["engine"] = SessionEngine(collect, Keyring(secure_key), idle_seconds, max_age_seconds)


def _make_batch(start, n, check=False):
    """``n`` sessions numbered from ``start``: (tokens, documents)."""
    collect, engine = _worker["collect"], _worker["engine"]
    collect.records.clear()
    tokens = []
    for i in range(start, start + n):
        credentials = Credentials(token=secrets.token_hex(16), password=secrets.token_hex(16))
        token, _record = engine.start(f"bench{i % 5000}", f"Bench user {i}", False, credentials,
                                      user_agent=USER_AGENT, address="127.0.0.1")
        tokens.append(token)
    docs = [document_from_record(r) for r in collect.records]
    if check:
        first = collect.records[0]
        stored = SessionDocument(**dataclasses.asdict(first)).to_mongo().to_dict()
        if bson.encode(stored) != bson.encode(docs[0]):
            raise AssertionError("bulk documents differ from what MongoSessionStore.create stores")
    return tokens, docs


class Filler:
    """Adds sessions to the app's database; keeps the tokens it made (to use as cookies)."""

    def __init__(self, uri, secure_key, idle_seconds=3600, max_age_seconds=86400, workers=2):
        self.uri = uri
        self.client = MongoClient(uri, serverSelectionTimeoutMS=5000)
        self.collection = self.client.get_default_database()["sessions"]
        self.idle_seconds = idle_seconds
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker,
                                        initargs=(secure_key, idle_seconds, max_age_seconds))
        self.tokens = []

    def count(self):
        return self.collection.count_documents({})

    def fill_to(self, target, rebuild_indexes=False):
        """Insert sessions until the collection holds ``target``; seconds taken.

        ``rebuild_indexes``: drop the secondary indexes, load, and have
        ``MongoSessionStore.setup`` make them again, as a bulk load does
        (much faster than maintaining them document by document).
        """
        t0 = time.perf_counter()
        missing = target - self.count()
        if missing <= 0:
            return 0.0
        if rebuild_indexes:
            for name in self.collection.index_information():
                if name != "_id_":
                    self.collection.drop_index(name)
        first = len(self.tokens)
        futures = [self.pool.submit(_make_batch, first + k, min(BATCH, missing - k), k == 0)
                   for k in range(0, missing, BATCH)]
        for future in futures:
            tokens, docs = future.result()
            self.collection.insert_many(docs, ordered=False)
            self.tokens.extend(tokens)
        if rebuild_indexes:
            MongoSessionStore(self.collection).setup(self.idle_seconds)
        return time.perf_counter() - t0

    def close(self):
        self.pool.shutdown(cancel_futures=True)
        self.client.close()
