"""``python -m bench`` (``make bench``): every figure, in one run, on this machine.

Writes bench/results.json, bench/results.md (the README's table),
bench/results.png (with matplotlib), bench/results-raw.json (every run's
numbers) and bench/profile.txt (where a signed-in request's time goes),
and prints the table. ``--quick`` is a short smoke run that writes nothing.

Order of the run:

1. The sandbox and two SecantusDB processes (single-node replica sets, as the
   default docker-compose.yml runs MongoDB; the app refuses a standalone
   server at start): one for the 1,000-session app, one for the 100,000-session app.
2. Database commands per signed-in request, counted by a pymongo command
   listener in the app: with SESSION_CACHE_SIZE=0 and in steady state with the cache on.
3. Two instances of the app on one database: sign out on A, poll B until it
   refuses the cookie (``--trials`` times).
4. The second app with 100,000 sessions: ``engine.stats()`` timed, and the
   bytes the cache keeps per session.
5. Throughput at concurrency 16, in rotating order, 9 rounds of 2 s, medians:
   the floor (CherryPy alone on the same server and thread pool, every tool
   off), bare, signed-in, RAM sessions, signed-in with 100,000 stored, a page
   making one upstream call signed in and the same call without a session.
   The sessions' once-a-minute touches are spread over the minute first, as
   on a live site (``spread_touches``).
6. Whole-request profiles of the floor, the bare and the signed-in page;
   opening credentials (one thread and 16) and one database read's client CPU, alone.
7. The CPU budget by part (``bench.budget``: the app in one process, a ladder of pages).
8. The sandboxes over HTTPS: pooled vs fresh connections through the clients.
"""

import argparse
import gc
import http.client
import json
import math
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import requests

from socialos_app.crypto import Keyring
from socialos_app.sessions import Credentials, SessionEngine
from socialos_app.sessions.backends.memory import MemorySessionStore
from socialos_app.sessions.backends.mongo import MongoSessionStore, record_from_document
from socialos_app.sessions.cache import SessionCache
from socialos_app.storage import utcnow

from . import clients, figures, load
from .fill import Filler
from .procs import BenchApp, Database, Sandbox
from .tls import Certificates, TLSSandbox

HERE = Path(__file__).resolve().parent
USERS = ["demo", "alice", "bob", "carol", "dave", "ada", "grace", "linus"]
SIGNED_IN_BROWSERS = 32   # real sign-ins through /login
COOKIES_PER_RUN = 256     # cookies a load run cycles through (the 32 above + stored sessions)
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def say(text):
    print(text, flush=True)


# -- browsers ------------------------------------------------------------------
def sign_in(app, username):
    """A browser signing in: the form, its CSRF token, the POST; the session cookie's token."""
    s = requests.Session()
    page = s.get(app.url("/login"), timeout=10)
    token = CSRF_FIELD.search(page.text).group(1)
    answer = s.post(app.url("/login"), data={"username": username, "password": username, "csrf_token": token},
                    allow_redirects=False, timeout=10)
    if answer.status_code != 303 or not s.cookies.get("session"):
        raise RuntimeError(f"sign-in as {username} failed: {answer.status_code}")
    return s.cookies.get("session")


def ram_sessions(app, n):
    """``n`` CherryPy RAM sessions holding a user name; their session_id cookies."""
    ids = []
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    for i in range(n):
        conn.request("GET", f"/_bench/ram_login?user={USERS[i % len(USERS)]}")
        answer = conn.getresponse()
        answer.read()
        cookie = answer.getheader("Set-Cookie") or ""
        match = re.search(r"session_id=([0-9a-f]+)", cookie)
        if answer.status != 200 or not match:
            raise RuntimeError(f"RAM session {i} not made: {answer.status}")
        ids.append(match.group(1))
    conn.close()
    return ids


def get(conn, path, token):
    """One GET on a keep-alive connection with the session cookie: the status."""
    conn.request("GET", path, headers={"Cookie": f"session={token}"})
    answer = conn.getresponse()
    answer.read()
    return answer.status


# -- measurements ----------------------------------------------------------------
def warm_cache(app, tokens, timeout=30.0):
    """Serve every token until the app's cache holds all of them (steady state)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    deadline = time.monotonic() + timeout
    passes = 0
    while True:
        passes += 1
        for token in tokens:
            if get(conn, "/_bench/signed", token) != 200:
                raise RuntimeError("a signed-in request was refused while warming the cache")
        state = app.cache()
        if state["trusted"] and state["entries"] >= len(set(tokens)):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app.name}'s cache did not fill: {state}")
    conn.close()
    return passes


def spread_touches(app, tokens, every_s=60):
    """Give these sessions' ``accessed`` the spread a live site has: uniformly over the last
    minute, so the engine's once-a-minute touches arrive evenly, not all in one burst.

    Sessions made together by the bench (the sign-ins, the bulk fill, and any that
    waited through another step) all fall due in the same second; on a real site
    each falls due at its own moment. ``accessed`` is the one field the record's
    tag leaves out; the app's caches take the new values from the change stream
    as they take any touch. The number of writes over a minute is the same.
    """
    from pymongo import MongoClient, UpdateOne
    key = Keyring(app.secure_key).current
    now = utcnow()
    ops = [UpdateOne({"_id": key.record_id(t)},
                     {"$set": {"accessed": now - timedelta(milliseconds=random.randrange(every_s * 1000))}})
           for t in set(tokens)]
    client = MongoClient(app.mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        client.get_default_database()["sessions"].bulk_write(ops, ordered=False)
    finally:
        client.close()


def count_db(app, tokens, n=1000):
    """Database reads and writes the app makes over ``n`` signed-in requests."""
    def stats():
        return requests.get(app.url("/_bench/dbstats"), timeout=10).json()

    before = stats()
    if not before.get("enabled"):
        raise RuntimeError("the app's command counter is not on")
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    t0 = time.perf_counter()
    for i in range(n):
        status = get(conn, "/_bench/signed", tokens[i % len(tokens)])
        if status != 200:
            raise RuntimeError(f"signed-in request {i} answered {status}")
    seconds = time.perf_counter() - t0
    conn.close()
    after = stats()
    by_collection = {}
    kinds = ("reads", "writes", "stream")
    for name, counts in after["by_collection"].items():
        was = before["by_collection"].get(name, {})
        delta = {k: counts.get(k, 0) - was.get(k, 0) for k in kinds}
        if any(delta.values()):
            by_collection[name] = delta
    return {"requests": n, "seconds": round(seconds, 2),
            **{k: after[k] - before[k] for k in kinds}, "by_collection": by_collection}


def percentile(values, p):
    """Nearest-rank percentile (with 50 values, p99 is the worst one)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def signout_trials(a, b, trials, timeout=5.0):
    """Sign in on B, sign out on A, poll B until it refuses the cookie.

    Each trial: a real sign-in through B's /login; B serves the session until
    its cache holds the record; the user's dashboard on A gives the sign-out
    form's CSRF token; POST /logout on A. From the moment A answers (the
    user is told they are signed out), B is asked on a keep-alive connection,
    request after request, until it refuses. Both ms figures include the
    refusing request's own round trip.
    """
    out = []
    for i in range(trials):
        token = sign_in(b, USERS[i % len(USERS)])
        cookie = {"session": token}
        conn_b = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
        deadline = time.monotonic() + timeout
        while not requests.get(b.url("/_bench/cached"), cookies=cookie, timeout=10).json()["cached"]:
            if time.monotonic() > deadline:
                raise RuntimeError("B never cached the session")
        page = requests.get(a.url("/dashboard"), cookies=cookie, timeout=10)
        csrf = CSRF_FIELD.search(page.text).group(1)
        with requests.Session() as s:
            s.cookies.set("session", token)
            t_sent = time.perf_counter()
            answer = s.post(a.url("/logout"), data={"csrf_token": csrf}, allow_redirects=False, timeout=10)
            t_answered = time.perf_counter()
        if answer.status_code != 303 or "signed-out" not in answer.headers.get("Location", ""):
            raise RuntimeError(f"sign-out on A answered {answer.status_code} {answer.headers.get('Location')}")
        polls, refused = 0, None
        while time.perf_counter() - t_answered < timeout:
            polls += 1
            if get(conn_b, "/_bench/signed", token) != 200:
                refused = time.perf_counter()
                break
        conn_b.close()
        if refused is None:
            raise RuntimeError(f"B still served a signed-out session after {timeout} s")
        out.append({"after_answer_ms": round((refused - t_answered) * 1000, 2),
                    "after_request_ms": round((refused - t_sent) * 1000, 2),
                    "signout_ms": round((t_answered - t_sent) * 1000, 2), "polls": polls})
    return out


class _CountingListener:
    """A ``ChangeListener`` that counts what an instance's cache would be told."""

    def __init__(self):
        self.up = threading.Event()
        self.lock = threading.Lock()
        self.forgotten = []

    def stream_up(self):
        self.up.set()

    def stream_down(self):
        pass

    def forget(self, record_id):
        with self.lock:
            self.forgotten.append(record_id)


def stream_events_per_touch(uri, touches=1000, batch=100, timeout=60.0):
    """Change events one instance receives per touch written by another.

    Instance A is ``MongoSessionStore.watch`` (the app's own stream pipeline)
    with a listener that counts; instance B is a store on another client
    writing touches with ``touch_many``, as the touch writer does: ``accessed``
    of ``touches`` stored sessions set to now, in batches of ``batch``. A
    marker record deleted last ends the count (events arrive in commit order).
    ``before``: the same touches seen through a stream that leaves out inserts
    only (the pipeline before issue 25), for the paper model.
    """
    from pymongo import MongoClient
    clients = [MongoClient(uri, serverSelectionTimeoutMS=5000) for _ in range(3)]
    a_store = MongoSessionStore(clients[0].get_default_database()["sessions"])
    b_store = MongoSessionStore(clients[1].get_default_database()["sessions"])
    old = clients[2].get_default_database()["sessions"]
    listener, stop = _CountingListener(), threading.Event()
    watcher = threading.Thread(target=a_store.watch, args=(listener, stop), daemon=True)
    old_events = []

    def follow_old(stream):
        for change in stream:
            old_events.append(change["operationType"])
            if change["operationType"] == "delete" and change["documentKey"]["_id"] == marker:
                return

    marker = "bench-marker-" + secrets.token_hex(8)
    try:
        watcher.start()
        if not listener.up.wait(timeout):
            raise RuntimeError("the session change stream did not open")
        ids = [d["_id"] for d in b_store.collection.find({}, {"_id": 1}).limit(touches)]
        with old.watch([{"$match": {"operationType": {"$ne": "insert"}}}]) as stream:
            old_follower = threading.Thread(target=follow_old, args=(stream,), daemon=True)
            old_follower.start()
            for k in range(0, len(ids), batch):
                now = utcnow()
                b_store.touch_many({rid: now for rid in ids[k:k + batch]})
            b_store.collection.insert_one({"_id": marker, "accessed": utcnow()})
            b_store.collection.delete_one({"_id": marker})
            deadline = time.monotonic() + timeout
            while marker not in listener.forgotten or old_follower.is_alive():
                if time.monotonic() > deadline:
                    raise RuntimeError("the marker's delete never arrived")
                time.sleep(0.05)
    finally:
        stop.set()
        watcher.join(5)
        for client in clients:
            client.close()
    events = len(listener.forgotten) - 1          # the marker's own delete is not a touch's
    before = len(old_events) - 1
    return {"touches": len(ids), "events": events, "per_touch": events / len(ids) if ids else 0.0,
            "before_events": before, "before_per_touch": before / len(ids) if ids else 0.0}


def admin_stats(app, idle_seconds=3600, counts=2, views=9, every_s=0.5):
    """/admin's statistics with every stored session live.

    ``count_ms``: the aggregation itself (``MongoSessionStore.stats``), timed
    in this process on a client without the app's operation deadline.
    ``ms``: what /admin waits for its statistics inside the app
    (``engine.stats()``: the last count, a new one started in the background),
    ``views`` calls ``every_s`` apart after the app's first count has landed.
    """
    from pymongo import MongoClient
    client = MongoClient(app.mongodb_uri, serverSelectionTimeoutMS=5000)
    store = MongoSessionStore(client.get_default_database()["sessions"])
    count_ms, answer = [], None
    for _ in range(counts):
        now = utcnow()
        t0 = time.perf_counter()
        answer = store.stats(now - timedelta(seconds=idle_seconds), now, timeout=120)
        count_ms.append(round((time.perf_counter() - t0) * 1000, 1))
    client.close()

    def view():
        return requests.get(app.url("/_bench/stats"), params={"n": 1}, timeout=120).json()

    first = view()
    t_end = time.monotonic() + 120
    while first.get("pending") and time.monotonic() < t_end:
        time.sleep(every_s)
        first = view()
    seen = []
    for _ in range(views):
        time.sleep(every_s)
        seen.append(view())
    return {"ms": [v["ms"][-1] for v in seen], "count_ms": count_ms, "active": answer["active"],
            "users": answer["users"], "shown": [v.get("active") for v in seen],
            "age_s": [v.get("age_s") for v in seen], "errors": [v["error"] for v in seen if v.get("error")]}


def cache_bytes(uri, n=10_000):
    """Bytes a ``SessionCache`` keeps per record: ``n`` stored sessions decoded as the
    store decodes them and cached, measured with tracemalloc (everything kept, nothing else).

    The raw BSON is fetched first; decoding happens while tracing, so every
    string, bytes and datetime a cached record holds is counted, and the
    decoded documents themselves are freed as the store frees them.
    """
    from bson import decode
    from bson.binary import UuidRepresentation
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument
    from pymongo import MongoClient
    client = MongoClient(uri, serverSelectionTimeoutMS=5000, document_class=RawBSONDocument)
    raws = [doc.raw for doc in client.get_default_database()["sessions"].find().limit(n)]
    client.close()
    options = CodecOptions(tz_aware=False, uuid_representation=UuidRepresentation.STANDARD)  # as db.connect
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        cache = SessionCache(n)
        cache.stream_up()
        for raw in raws:
            cache.put(record_from_document(decode(raw, options)), cache.snapshot())
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    entries = len(cache)
    return {"entries": entries, "bytes": kept, "per_session": kept / entries if entries else 0.0}


def page_path(page):
    """The address of a bench page: ``floor`` is ``/_floor`` (CherryPy alone), the rest under ``/_bench``."""
    return "/_floor" if page == "floor" else f"/_bench/{page}"


class Runner:
    """Load runs against an app, with the CPU the app and its database spent per request."""

    def __init__(self, seconds, processes=None):
        self.seconds = seconds
        self.processes = processes or {}  # name -> anything with .proc: CPU of each, per run

    def run(self, app, page, connections=16, cookies=(), cookie_name="session", seconds=None, threads=2):
        others = {name: p.proc.cpu_seconds() for name, p in self.processes.items()
                  if p.proc is not app.proc and p.proc is not app.db.proc}
        app_cpu, db_cpu = app.proc.cpu_seconds(), app.db.proc.cpu_seconds()
        result = load.run(app.url(page_path(page)), seconds or self.seconds, connections,
                          cookies, cookie_name, threads)
        if result.non200 or result.socket_errors:
            raise RuntimeError(f"{page_path(page)}: {result.non200} answers not 200, "
                               f"{result.socket_errors} socket errors in {result.requests} requests")
        if not result.requests:
            # Nothing finished in the run: a database pause (SecantusDB's TTL sweep holds its
            # lock for seconds with 100,000 sessions), counted as 0 req/s. A dead app is an error.
            if requests.get(app.url("/healthz"), timeout=30).status_code != 200:
                raise RuntimeError(f"{page_path(page)}: no answer, and the app is not healthy")
        n = result.requests

        def per_request(seconds):
            return round(seconds / n * 1e6) if n else None

        # Processes that should be idle during this run: their CPU share of one core (a TTL sweep
        # of the 100,000-session database, say, takes the cores from whatever runs meanwhile).
        idle = {name: round((self.processes[name].proc.cpu_seconds() - was) / result.seconds, 3)
                for name, was in others.items()} if result.seconds else {}
        return {"page": page, "connections": connections, "rps": round(result.rps, 1),
                "p50_ms": result.p50_ms, "p90_ms": result.p90_ms, "p99_ms": result.p99_ms,
                "mean_ms": round(result.mean_ms, 3),
                "app_cpu_us": per_request(app.proc.cpu_seconds() - app_cpu),
                "db_cpu_us": per_request(app.db.proc.cpu_seconds() - db_cpu),
                "others_cpu": idle}


def paired(runs, target, baseline):
    """The median over rounds of target req/s ÷ baseline req/s, each pair from the same round."""
    ratios = [t["rps"] / b["rps"] for t, b in zip(runs[target], runs[baseline]) if b["rps"]]
    return statistics.median(ratios) if ratios else 0.0


def median(runs, key):
    """The median over runs (a run that finished no request has no CPU figures: left out)."""
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else 0.0


def crypto_costs(secure_key, n=2000, threads=16):
    """µs per step of a signed-in request without I/O: resuming (record id, tag check) and
    opening the credentials, alone and with ``threads`` threads opening at once."""
    engine = SessionEngine(MemorySessionStore(), Keyring(secure_key), 3600, 86400)
    token, record = engine.start("demo", "Demo", False, Credentials("key-token", "key-password"))
    key = engine.keyring.current
    assert engine.resume(token) is not None and engine.credentials(token, record) is not None

    def timed(fn):
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n // 5):
                fn()
            best.append((time.perf_counter() - t0) / (n // 5) * 1e6)
        return round(statistics.median(best), 1)

    def open_once():
        engine.credentials(token, record)

    def in_threads(count, per_thread):
        """Wall µs per open with ``count`` threads opening at once (2 cores: ideal is µs alone)."""
        barrier = threading.Barrier(count + 1)

        def work():
            barrier.wait()
            for _ in range(per_thread):
                open_once()
        pool = [threading.Thread(target=work) for _ in range(count)]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        return (time.perf_counter() - t0) / (count * per_thread) * 1e6

    alone = statistics.median(in_threads(1, 400) for _ in range(3))
    together = statistics.median(in_threads(threads, 400 // threads * 4) for _ in range(3))
    return {"resume_us": timed(lambda: engine.resume(token)),
            "open_us": timed(open_once),
            "record_id_us": timed(lambda: engine.keyring.record_ids(token)),
            "hkdf_seal_open_us": timed(lambda: key.open(token, record.id, record.sealed)),
            "csrf_token_us": timed(lambda: key.csrf_token("session:" + token)),
            "open_1_thread_us": round(alone, 1), f"open_{threads}_threads_us": round(together, 1),
            "open_threads_vs_1": together / alone}


def db_read_client_cpu(uri, record_id, n=2000):
    """CPU µs this process spends on one indexed find_one (pymongo's share of a read)."""
    from pymongo import MongoClient
    client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    collection = client.get_default_database()["sessions"]
    collection.find_one({"_id": record_id})
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        collection.find_one({"_id": record_id})
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    client.close()
    return {"cpu_us": round(cpu / n * 1e6), "wall_us": round(wall / n * 1e6)}


def profile(app, page, cookies, seconds):
    """cProfile (each thread's CPU time) of whole requests of a page under load at concurrency 8;
    (summary, text)."""
    requests.post(app.url("/_bench/profile"), data={"action": "start", "clock": "cpu"},
                  timeout=10).raise_for_status()
    load.run(app.url(page_path(page)), seconds, 8, cookies, "session")
    requests.post(app.url("/_bench/profile"), data={"action": "stop"}, timeout=10).raise_for_status()
    summary = requests.get(app.url("/_bench/profile"), params={"fmt": "json"}, timeout=30).json()
    text = requests.get(app.url("/_bench/profile"), params={"top": 60}, timeout=30).text
    return summary, text


def profile_difference(bare, signed):
    """Per package: Python calls and profiled CPU µs a signed-in request adds to a bare one."""
    was = {p["package"]: p for p in bare["packages"]}
    rows = []
    for p in signed["packages"]:
        b = was.get(p["package"], {"calls": 0, "own_us": 0})
        rows.append({"package": p["package"], "calls": round(p["calls"] - b["calls"], 1),
                     "cpu_us": round(p["own_us"] - b["own_us"], 1)})
    total = sum(r["cpu_us"] for r in rows if r["cpu_us"] > 0) or 1
    for r in rows:
        r["share"] = round(max(r["cpu_us"], 0) / total, 3)
    return sorted(rows, key=lambda r: r["cpu_us"], reverse=True)


def throughput_rounds(runner, rounds, runs_spec):
    """Each round makes every run once, the order rotated so none always goes first.

    ``runs_spec``: (key, app, page, options) tuples; answers {key: [results]}.
    """
    runs = {key: [] for key, *_ in runs_spec}
    for r in range(rounds):
        order = runs_spec[r % len(runs_spec):] + runs_spec[:r % len(runs_spec)]
        for key, app, page, options in order:
            result = runner.run(app, page, **options)
            runs[key].append(result)
            busy = ", ".join(f"{n} {v:.0%}" for n, v in result["others_cpu"].items() if v >= 0.05)
            say(f"  round {r + 1} {key:<17} {result['rps']:8.1f} req/s  "
                f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                f"app CPU {result['app_cpu_us']} µs/req  db CPU {result['db_cpu_us']} µs/req"
                + (f"  (meanwhile: {busy} of a core)" if busy else ""))
    return runs


# -- the run, in steps -------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=2, help="length of each load run, whole seconds (default 2)")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds per figure (default 9)")
    parser.add_argument("--large", type=int, default=100_000, help="sessions stored for the growth figure")
    parser.add_argument("--trials", type=int, default=50, help="sign-out trials across two instances")
    parser.add_argument("--quick", action="store_true", help="short smoke run (writes no results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.large, args.trials = 2, 1, 5_000, 10  # wrk takes whole seconds
    return args


class Processes:
    """Every process of a run: the sandbox, two databases, the apps on them; ``stop()`` ends them all.

    Two apps, each with its own database process: 1,000 sessions stored and
    100,000; only the one under load works, so their runs can alternate like
    every other pair.
    """

    def __init__(self, logdir):
        self.logdir = logdir
        self.sandbox = Sandbox(logdir).start()
        self.db_small = Database(logdir, "secantusdb-1k").start()
        self.db_large = Database(logdir, "secantusdb-large").start()
        self.small_app = BenchApp(self.db_small, self.sandbox, logdir, name="app-1k")
        self.peer_app = self.small_app.peer("app-1k-b")       # a second instance on the same database
        self.large_app = BenchApp(self.db_large, self.sandbox, logdir, name="app-large")
        self.tls = None
        self.fillers = []

    def filler(self, app):
        """A ``Filler`` for ``app``'s database, closed with the run."""
        filler = Filler(app.mongodb_uri, app.secure_key)
        self.fillers.append(filler)
        return filler

    def stop(self):
        for proc in (self.tls, self.small_app, self.peer_app, self.large_app, self.sandbox,
                     self.db_small, self.db_large):
            if proc is not None:
                proc.stop()
        for filler in self.fillers:
            filler.close()


def sign_in_and_fill(procs):
    """Launch the apps; real sign-ins on the 1,000-session app (command counter on, cache off),
    the rest stored in bulk; (the sign-ins' tokens, the cookies every load run cycles through)."""
    app = procs.small_app
    app.launch(count_db=True, cache_size=0)
    procs.large_app.launch()
    app.ready()
    tokens = [sign_in(app, USERS[i % len(USERS)]) for i in range(SIGNED_IN_BROWSERS)]
    fill = procs.filler(app)
    fill.fill_to(1_000)
    say(f"{SIGNED_IN_BROWSERS} browsers signed in; {fill.count()} sessions stored")
    fill.close()  # its tokens stay: the load runs use them as cookies
    return tokens, tokens + random.sample(fill.tokens, COOKIES_PER_RUN - len(tokens))


def count_commands(procs, cookies):
    """Database commands per signed-in request: cache off, then steady state with the cache on."""
    app = procs.small_app
    off = count_db(app, cookies, 1000)
    say(f"cache off (SESSION_CACHE_SIZE=0): {off['reads']} reads, {off['writes']} writes "
        f"over {off['requests']} signed-in requests {off['by_collection']}")
    app.stop()
    app.launch(count_db=True)  # the default SESSION_CACHE_SIZE, counted

    app.ready()
    spread_touches(app, cookies)
    passes = warm_cache(app, cookies)
    steady = count_db(app, cookies, 1000)
    say(f"cache on, steady state ({passes} warm-up passes over {len(cookies)} sessions): "
        f"{steady['reads']} reads, {steady['writes']} writes over {steady['requests']} requests "
        f"in {steady['seconds']} s; change stream commands meanwhile: {steady['stream']}; cache {app.cache()}")
    app.stop()
    return {"cache_off": off, "steady": steady, "warm_passes": passes}


def two_instances(procs, trials):
    """Sign out on A, refused by B; change events per touch another instance writes."""
    a, b = procs.small_app, procs.peer_app
    a.launch()  # the load runs go without the listener, as production does
    b.launch()
    a.ready()
    b.ready()
    done = signout_trials(a, b, trials)
    visible = [t["after_answer_ms"] for t in done]
    say(f"sign-out on A refused by B, {len(done)} trials: p50 {percentile(visible, 50):.1f} ms, "
        f"p99 {percentile(visible, 99):.1f} ms after A answered "
        f"(from the sign-out request: p99 {percentile([t['after_request_ms'] for t in done], 99):.1f} ms)")
    stream = stream_events_per_touch(a.mongodb_uri)
    say(f"change events one instance receives per touch written by another: {stream['per_touch']:.3f} "
        f"({stream['events']} for {stream['touches']} touches; a stream leaving out inserts only: "
        f"{stream['before_per_touch']:.3f})")
    b.stop()
    return done, stream


def large_store(procs, large):
    """The second app with ``large`` sessions stored: /admin's statistics, the cache's bytes per session."""
    app = procs.large_app
    app.ready()
    tokens = [sign_in(app, USERS[i % len(USERS)]) for i in range(SIGNED_IN_BROWSERS)]
    fill = procs.filler(app)
    took = fill.fill_to(large, rebuild_indexes=True)
    say(f"second app: {fill.count():,} sessions stored (bulk insert of engine-made records: {took:.0f} s)")
    fill.close()
    stats = admin_stats(app)
    say(f"/admin's statistics with {stats['active']:,} live sessions ({stats['users']:,} users): "
        f"the count {stats['count_ms']} ms; engine.stats() in the app {stats['ms']} ms, "
        f"showing {stats['shown']}, counted {stats['age_s']} s before")
    footprint = cache_bytes(app.mongodb_uri)
    say(f"session cache: {footprint['bytes']:,} bytes for {footprint['entries']:,} records "
        f"({footprint['per_session']:.0f} bytes each)")
    cookies = tokens + random.sample(fill.tokens, COOKIES_PER_RUN - len(tokens))
    return cookies, stats, footprint


def throughput(procs, args, tokens, cookies, cookies_large):
    """Every page at concurrency 16, in rotating rounds; {key: [runs]}."""
    small, large = procs.small_app, procs.large_app
    ram_ids = ram_sessions(small, COOKIES_PER_RUN)
    spread_touches(small, cookies)
    spread_touches(large, cookies_large)
    warm_cache(large, cookies_large)
    runner = Runner(args.seconds, {"db-1k": procs.db_small, "db-large": procs.db_large, "sandbox": procs.sandbox,
                                   "app-1k": small, "app-large": large})
    # The bare page and the floor get the same cookies (a signed-in browser sends them to every
    # page): the differences are the app's tools and the session layer, not parsing a Cookie header.
    # The upstream pages use the real sign-ins only (their keys exist upstream).
    spec = [("floor", small, "floor", {"cookies": cookies}),
            ("bare", small, "bare", {"cookies": cookies}),
            ("signed", small, "signed", {"cookies": cookies}),
            ("ram", small, "ram", {"cookies": ram_ids, "cookie_name": "session_id"}),
            ("signed_large", large, "signed", {"cookies": cookies_large}),
            ("upstream", small, "upstream", {"cookies": tokens}),
            ("upstream_unsigned", small, "upstream_unsigned", {"cookies": tokens})]
    for _key, app, page, options in spec:  # warm-up: imports, pools, keys, caches
        runner.run(app, page, **{**options, "seconds": 1})
    say(f"throughput ({args.rounds} rounds of {args.seconds:g} s, concurrency 16; "
        f"signed_large with {args.large:,} sessions stored):")
    runs = throughput_rounds(runner, args.rounds, spec)
    caches = {"app-1k": small.cache(), "app-large": large.cache()}
    large.stop()
    return runs, caches


def profiles(procs, tokens, cookies):
    """Whole-request profiles of the floor, the bare and the signed-in page (right after the runs:
    an idle gap would make touches fall due together); opening credentials; one database read."""
    app = procs.small_app
    floor, _text = profile(app, "floor", cookies, 2)
    bare, _text = profile(app, "bare", cookies, 2)
    signed, text = profile(app, "signed", cookies, 2)
    crypto = crypto_costs(app.secure_key)
    read_cpu = db_read_client_cpu(app.mongodb_uri, Keyring(app.secure_key).current.record_id(tokens[0]))
    say(f"without I/O: {crypto}; one find_one costs its client {read_cpu['cpu_us']} µs of CPU")
    for proc in (app, procs.db_small, procs.db_large):  # nothing else running for what follows
        proc.stop()
    return {"floor": floor, "bare": bare, "signed": signed, "text": text, "crypto": crypto, "read_cpu": read_cpu}


def cpu_budget():
    """``bench.budget`` in its own process (it mounts the app in-process): µs per part."""
    out = subprocess.run([sys.executable, "-m", "bench.budget", "--json"], capture_output=True, text=True,
                         timeout=900, cwd=HERE.parent)
    if out.returncode != 0:
        raise RuntimeError(f"bench.budget failed: {out.stderr.strip()[-500:]}")
    budget = json.loads(out.stdout)
    say("CPU per request by part (in process, µs): " + ", ".join(
        f"{part} {us:.0f}" for part, us in budget["parts_us"].items()))
    return budget


def https_clients(procs):
    """Pooled vs fresh HTTPS through both clients (report only)."""
    certs = Certificates(procs.logdir)
    procs.tls = TLSSandbox(certs, procs.logdir).start()
    api = clients.compare_api(procs.tls, seconds=1.0, rounds=4)
    pusher = clients.compare_pusher(procs.tls, seconds=1.0, rounds=4)
    for name, r in (("API", api), ("Pusher", pusher)):
        say(f"{name} client over HTTPS: pooled {r['pooled_per_s']:.0f} calls/s, fresh {r['fresh_per_s']:.0f} "
            f"calls/s (new connections: pooled {r['connections']['pooled']} for "
            f"{r['connections']['pooled_calls']} calls, fresh {r['connections']['fresh']} for "
            f"{r['connections']['fresh_calls']})")
    return api, pusher


def results_of(m):
    """Every figure of ``results.json`` from the measurements ``m`` (the raw dict)."""
    runs, counts, stats, prof = m["runs"], m["db_counts"], m["admin_stats"], m["profiles"]
    steady, off = counts["steady"], counts["cache_off"]
    visible = [t["after_answer_ms"] for t in m["signout_trials"]]
    fig = figures.figure
    return {
        "signed_in_vs_floor": fig("signed_in_vs_floor", paired(runs, "signed", "floor")),
        "bare_vs_floor": fig("bare_vs_floor", paired(runs, "bare", "floor")),
        "signed_in_vs_bare": fig("signed_in_vs_bare", paired(runs, "signed", "bare")),
        "signed_in_vs_cherrypy_ram": fig("signed_in_vs_cherrypy_ram", paired(runs, "signed", "ram")),
        "db_reads_per_request": fig("db_reads_per_request", steady["reads"] / steady["requests"]),
        "db_reads_per_request_stream_off": fig("db_reads_per_request_stream_off", off["reads"] / off["requests"]),
        "db_writes_per_request": fig("db_writes_per_request", steady["writes"] / steady["requests"]),
        "signout_visible_p99_ms": fig("signout_visible_p99_ms", percentile(visible, 99)),
        "stream_events_per_touch": fig("stream_events_per_touch", m["stream_events"]["per_touch"]),
        "upstream_page_vs_unsigned": fig("upstream_page_vs_unsigned", paired(runs, "upstream", "upstream_unsigned")),
        "admin_stats_100k_p50_ms": fig("admin_stats_100k_p50_ms", statistics.median(stats["ms"])),
        "admin_stats_count_100k_ms": fig("admin_stats_count_100k_ms", statistics.median(stats["count_ms"])),
        "growth_100k_vs_1k": fig("growth_100k_vs_1k", paired(runs, "signed_large", "signed")),
        "cache_bytes_per_session": fig("cache_bytes_per_session", m["cache_bytes"]["per_session"]),
        "pooled_vs_fresh_api": fig("pooled_vs_fresh_api", m["pooled_vs_fresh_api"]["ratio"]),
        "pooled_vs_fresh_pusher": fig("pooled_vs_fresh_pusher", m["pooled_vs_fresh_pusher"]["ratio"]),
        "credentials_open_16_threads_vs_1": fig("credentials_open_16_threads_vs_1",
                                                prof["crypto"]["open_threads_vs_1"]),
        "latency_p99_over_p50_c16": fig("latency_p99_over_p50_c16", statistics.median(
            r["p99_ms"] / r["p50_ms"] for r in runs["signed"] if r["p50_ms"])),
    }


def notes_of(m, args):
    """The notes under the table in ``results.md``: what each figure is made of, in this run."""
    runs, counts, stats, prof = m["runs"], m["db_counts"], m["admin_stats"], m["profiles"]
    steady, off = counts["steady"], counts["cache_off"]
    trials, footprint, crypto, read_cpu = m["signout_trials"], m["cache_bytes"], prof["crypto"], prof["read_cpu"]
    api, pusher, cookies = m["pooled_vs_fresh_api"], m["pooled_vs_fresh_pusher"], COOKIES_PER_RUN
    rps = {k: median(runs[k], "rps") for k in runs}
    cpu = {k: median(runs[k], "app_cpu_us") for k in runs}
    db_cpu = {k: median(runs[k], "db_cpu_us") for k in runs}
    m["medians"] = {"rps": rps, "app_cpu_us": cpu, "db_cpu_us": db_cpu}
    visible = [t["after_answer_ms"] for t in trials]
    after_request = [t["after_request_ms"] for t in trials]
    ages = [a for a in stats["age_s"] if a is not None]
    idle = [r["others_cpu"].get("db-large", 0.0) for key in ("bare", "signed", "ram") for r in runs[key]]
    stalled = sum(1 for r in runs["signed_large"] if not r["rps"])
    p99 = {k: statistics.median(r["p99_ms"] for r in runs[k]) for k in ("floor", "bare", "signed")}
    p50 = {k: statistics.median(r["p50_ms"] for r in runs[k]) for k in ("floor", "bare", "signed")}
    parts = m["budget"]["parts_us"]
    return [
        f"Ratios are medians over {args.rounds} rounds of the ratio within each round (every round runs "
        f"every page once, in rotating order, {args.seconds:g} s each, concurrency 16). Median req/s: "
        f"floor (CherryPy alone, same server and thread pool) {rps['floor']:.0f}, bare {rps['bare']:.0f}, "
        f"signed-in {rps['signed']:.0f}, RAM sessions {rps['ram']:.0f}; signed-in {rps['signed_large']:.0f} with "
        f"{args.large:,} sessions stored (a second app and database, its runs in the same rotation); one "
        f"upstream call signed in {rps['upstream']:.0f}, the same call without a session "
        f"{rps['upstream_unsigned']:.0f}.",
        f"App CPU per request: floor {cpu['floor']:.0f} µs, bare {cpu['bare']:.0f} µs, RAM sessions "
        f"{cpu['ram']:.0f} µs, signed-in {cpu['signed']:.0f} µs; the database process {db_cpu['signed']:.0f} µs "
        f"per signed-in request (no reads: each of the {cookies} sessions' `accessed` is written once a minute, "
        f"in a background batch, w=1, and comes back to the app through its change stream) and "
        f"{db_cpu['bare']:.0f} µs per bare one.",
        "CPU per request by part, in process (`bench/budget.py`, µs, each part the page with it less the page "
        "without): " + ", ".join(f"{part} {us:.0f}" for part, us in parts.items()) + ".",
        f"Latency at concurrency 16, p50 / p99 (medians over rounds): floor {p50['floor']:.1f} / "
        f"{p99['floor']:.1f} ms, bare {p50['bare']:.1f} / {p99['bare']:.1f} ms, signed-in {p50['signed']:.1f} / "
        f"{p99['signed']:.1f} ms.",
        f"Database commands over 1,000 signed-in requests after a warm-up pass: {steady['reads']} reads, "
        f"{steady['writes']} writes with the cache on (the change stream's own {steady['stream']} getMores "
        f"in those {steady['seconds']:.1f} s are per instance, not per request); {off['reads']} reads with "
        f"SESSION_CACHE_SIZE=0. A session's first request on an instance reads it "
        f"once; `accessed` is written at most once a minute per session, so writes per request depend "
        f"on how often a session comes back: here {cookies} sessions in turn, each every "
        f"{steady['seconds'] / (steady['requests'] / cookies):.1f} s (a session seen once a minute "
        f"or less would write on every request).",
        f"Sign-out across instances ({len(trials)} trials, two apps on one database, B idle): B refused the "
        f"cookie p50 {percentile(visible, 50):.1f} ms, worst {max(visible):.1f} ms after A answered the "
        f"sign-out; counted from A receiving it, p99 {percentile(after_request, 99):.1f} ms (A's sign-out "
        f"itself, upstream key revocation included: p50 "
        f"{statistics.median(t['signout_ms'] for t in trials):.1f} ms). p99 of 50 is the worst trial.",
        f"/admin's statistics with {stats['active']:,} live sessions: engine.stats() answered in p50 "
        f"{statistics.median(stats['ms']):.0f} ms inside the app over {len(stats['ms'])} views "
        f"{0.5:g} s apart (worst {max(stats['ms']):.0f} ms), showing counts "
        f"{min(ages, default=0):.1f}–{max(ages, default=0):.1f} s "
        f"old: it waits at most 100 ms for a count and otherwise shows the last one. The count itself, "
        f"one aggregation that SecantusDB evaluates in Python, takes "
        f"{statistics.median(stats['count_ms']):.0f} ms at this size (timed by the bench without the app's "
        f"deadline; the app runs it in the background under its own 60 s deadline)"
        + (f"; errors: {stats['errors']}" if stats["errors"] else "") + ".",
        f"Session cache: {footprint['per_session']:.0f} bytes per cached session (tracemalloc over "
        f"{footprint['entries']:,} records with a browser's User-Agent), so the default "
        f"SESSION_CACHE_SIZE of 10,000 costs about {footprint['per_session'] * 10_000 / 2**20:.0f} MiB.",
        f"Without I/O, one thread: resuming a session (record id, tag check) {crypto['resume_us']:.0f} µs; "
        f"opening its credentials {crypto['open_us']:.0f} µs (HKDF + HMAC-SHA256 + ChaCha20 "
        f"{crypto['hkdf_seal_open_us']:.0f} µs), only on pages that call upstream; 16 threads opening at once: "
        f"{crypto['open_16_threads_us']:.0f} µs each against {crypto['open_1_thread_us']:.0f} alone. One "
        f"find_one costs pymongo {read_cpu['cpu_us']} µs of CPU.",
        f"The 100,000-session database, idle meanwhile, used a median {statistics.median(idle):.0%} of a core "
        f"(worst {max(idle):.0%}) during the 1,000-session app's runs"
        + (" (SecantusDB's own TTL sweep walks every stored session once a minute)" if max(idle) >= 0.2 else "")
        + ". Every run shares the 2 cores with whatever else the machine runs; the paired ratios "
        "absorb most of that, not all.",
        f"Worst p99 of the signed-in page: {max(r['p99_ms'] for r in runs['signed']):.1f} ms with 1,000 sessions "
        f"stored, {max(r['p99_ms'] for r in runs['signed_large']):.1f} ms with {args.large:,}"
        + (f"; {stalled} of {args.rounds} runs with {args.large:,} finished no request at all (a database "
           "pause: SecantusDB's TTL sweep)." if stalled else "."),
        "Profile (CPU a signed-in request adds to a bare one): " + ", ".join(
            f"{r['package']} {r['share']:.0%} ({r['calls']:.0f} calls)" for r in m["profile_added"]
            if r["share"] >= 0.03) + ".",
        f"HTTPS calls/s, pooled vs fresh: Social OS API {api['pooled_per_s']:.0f} vs {api['fresh_per_s']:.0f}, "
        f"Pusher {pusher['pooled_per_s']:.0f} vs {pusher['fresh_per_s']:.0f}; new TCP+TLS connections "
        f"seen by the sandbox: pooled {api['connections']['pooled'] + pusher['connections']['pooled']}, "
        f"fresh {api['connections']['fresh'] + pusher['connections']['fresh']}.",
    ]


def write_results(results, raw, notes, info, profile_text):
    """results.json, results-raw.json, profile.txt, results.md and the chart."""
    figures.write_json(results)
    (HERE / "results-raw.json").write_text(json.dumps(raw, indent=2, ensure_ascii=False, default=str) + "\n")
    (HERE / "profile.txt").write_text(profile_text)
    figures.write_markdown(results, info, notes)
    if figures.draw(results, info) is None:
        say("(matplotlib not installed: no chart)")


def show(results, notes, prof):
    """The table, the notes and where a signed-in request's time goes, on stdout."""
    say("")
    say(figures.table(results))
    say("")
    for note in notes:
        say(f"- {note}")
    say("")
    for page in ("floor", "bare", "signed"):
        say(f"whole-request profile of {page} (profiled CPU µs per request; the profiler inflates small "
            f"calls, the shares hold): {prof[page].get('budget')}")
    summary = prof["signed"]
    say("the session layer's steps (cumulative profiled CPU µs per request):")
    for row in summary["steps"][:8]:
        say(f"  {row['cum_us']:8.0f}  {row['function']}")


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    if not load.ensure_wrk():
        say("note: wrk could not be installed; using the threaded Python load generator "
            "(it shares the cores with the app, so absolute rates are lower)")
    info = figures.machine("wrk" if load.have_wrk() else "python threads")
    say(f"bench on {info['cores']} cores ({info['cpu']}), Python {info['python']}, {info['database']}, "
        f"load: {info['load']}, load average {os.getloadavg()[0]:.1f}")
    logdir = tempfile.mkdtemp(prefix="bench-")
    raw = {"machine": info, "settings": vars(args), "load_average_before": os.getloadavg()}
    procs = Processes(logdir)
    try:
        tokens, cookies = sign_in_and_fill(procs)
        raw["db_counts"] = count_commands(procs, cookies)
        raw["signout_trials"], raw["stream_events"] = two_instances(procs, args.trials)
        cookies_large, raw["admin_stats"], raw["cache_bytes"] = large_store(procs, args.large)
        raw["runs"], raw["cache_after_runs"] = throughput(procs, args, tokens, cookies, cookies_large)
        raw["profiles"] = profiles(procs, tokens, cookies)
        raw["budget"] = cpu_budget()
        raw["pooled_vs_fresh_api"], raw["pooled_vs_fresh_pusher"] = https_clients(procs)
    except BaseException:
        say(f"bench failed; the processes' logs are in {logdir}")
        raise
    finally:
        procs.stop()
    raw["load_average_after"] = os.getloadavg()
    prof = raw["profiles"]
    raw["profile_added"] = profile_difference(prof["bare"], prof["signed"])
    profile_text = prof.pop("text")
    results = results_of(raw)
    notes = notes_of(raw, args)
    if not args.quick:
        write_results(results, raw, notes, info, profile_text)
    show(results, notes, prof)
    say(f"done in {time.monotonic() - started:.0f} s"
        + ("" if args.quick else "; wrote bench/results.json, results.md, results.png, profile.txt"))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
