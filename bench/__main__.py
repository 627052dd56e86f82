"""``python -m bench`` (``make bench``): every figure, in one run, on this machine.

Writes bench/results.json, bench/results.md (the README's table),
bench/results.png (with matplotlib), bench/results-raw.json (every run's
numbers) and bench/profile.txt (where a signed-in request's time goes),
and prints the table. ``--quick`` is a short smoke run that writes nothing.

Order of the run:

1. The sandbox, and two apps (``bench.serve``) each with its own SecantusDB
   process; 32 browsers sign in to each through /login. One database holds
   1,000 sessions, the other 100,000 (bulk-inserted, made by SessionEngine).
2. Database commands over 1,000 signed-in requests (the first app started
   with a pymongo command listener for this step only).
3. Throughput at concurrency 16: bare, signed-in and RAM-session pages, and
   the signed-in page of the 100,000-session app, in rotating order, 5 rounds
   of 3 s, medians; p99/p50 of the signed-in page at concurrency 32; bare and
   signed-in at concurrency 1 (one request's time).
4. The time to open a session's credentials and the CPU of one database read,
   alone; a profile of the bare and the signed-in page.
5. The sandboxes over HTTPS: pooled vs fresh connections through the clients.
"""

import argparse
import http.client
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from socialos_app.crypto import Keyring
from socialos_app.sessions import Credentials, SessionEngine
from socialos_app.sessions.store import SessionStore

from . import clients, figures, load
from .fill import Filler
from .procs import BenchApp, Database, Sandbox
from .tls import Certificates, TLSSandbox

HERE = Path(__file__).resolve().parent
USERS = ["demo", "alice", "bob", "carol", "dave", "ada", "grace", "linus"]
SIGNED_IN_BROWSERS = 32   # real sign-ins through /login
COOKIES_PER_RUN = 256     # cookies a load run cycles through (the 32 above + stored sessions)


def say(text):
    print(text, flush=True)


# -- browsers ------------------------------------------------------------------
def sign_in(app, username):
    """A browser signing in: the form, its CSRF token, the POST; the session cookie's token."""
    s = requests.Session()
    page = s.get(app.url("/login"), timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
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


# -- measurements ----------------------------------------------------------------
def count_db(app, tokens, n=1000):
    """Database reads and writes the app makes over ``n`` signed-in requests."""
    def stats():
        return requests.get(app.url("/_bench/dbstats"), timeout=10).json()

    before = stats()
    if not before.get("enabled"):
        raise RuntimeError("the app's command counter is not on")
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    for i in range(n):
        conn.request("GET", "/_bench/signed", headers={"Cookie": f"session={tokens[i % len(tokens)]}"})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"signed-in request {i} answered {answer.status}")
    conn.close()
    after = stats()
    by_collection = {}
    for name, counts in after["by_collection"].items():
        was = before["by_collection"].get(name, {"reads": 0, "writes": 0})
        delta = {k: counts[k] - was[k] for k in ("reads", "writes")}
        if any(delta.values()):
            by_collection[name] = delta
    return {"requests": n, "reads": after["reads"] - before["reads"],
            "writes": after["writes"] - before["writes"], "by_collection": by_collection}


class Runner:
    """Load runs against an app, with the CPU the app and its database spent per request."""

    def __init__(self, seconds):
        self.seconds = seconds

    def run(self, app, page, connections=16, cookies=(), cookie_name="session", seconds=None, threads=2):
        app_cpu, db_cpu = app.proc.cpu_seconds(), app.db.proc.cpu_seconds()
        result = load.run(app.url(f"/_bench/{page}"), seconds or self.seconds, connections,
                          cookies, cookie_name, threads)
        if result.non200 or result.socket_errors:
            raise RuntimeError(f"/_bench/{page}: {result.non200} answers not 200, "
                               f"{result.socket_errors} socket errors in {result.requests} requests")
        if not result.requests:
            # Nothing finished in the run: a database pause (SecantusDB's TTL sweep holds its
            # lock for seconds with 100,000 sessions), counted as 0 req/s. A dead app is an error.
            if requests.get(app.url("/healthz"), timeout=30).status_code != 200:
                raise RuntimeError(f"/_bench/{page}: no answer, and the app is not healthy")
        n = result.requests

        def per_request(seconds):
            return round(seconds / n * 1e6) if n else None

        return {"page": page, "connections": connections, "rps": round(result.rps, 1),
                "p50_ms": result.p50_ms, "p90_ms": result.p90_ms, "p99_ms": result.p99_ms,
                "mean_ms": round(result.mean_ms, 3),
                "app_cpu_us": per_request(app.proc.cpu_seconds() - app_cpu),
                "db_cpu_us": per_request(app.db.proc.cpu_seconds() - db_cpu)}


def paired(runs, target, baseline):
    """The median over rounds of target req/s ÷ baseline req/s, each pair from the same round."""
    ratios = [t["rps"] / b["rps"] for t, b in zip(runs[target], runs[baseline]) if b["rps"]]
    return statistics.median(ratios) if ratios else 0.0


def median(runs, key):
    """The median over runs (a run that finished no request has no CPU figures: left out)."""
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else 0.0


class _OneRecord(SessionStore):
    """An in-memory store holding one record: opening it costs no I/O."""

    record = None

    def create(self, record):
        self.record = record

    def load(self, ids):
        return self.record if self.record and self.record.id in ids else None

    def touch(self, record_id, accessed):
        pass


def crypto_costs(secure_key, n=2000):
    """µs to open a session's credentials (``SessionEngine.resume`` without I/O) and its parts."""
    store = _OneRecord()
    engine = SessionEngine(store, Keyring(secure_key), 3600, 86400)
    token, record = engine.start("demo", "Demo", False, Credentials("key-token", "key-password"))
    key = engine.keyring.current

    def timed(fn):
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n // 5):
                fn()
            best.append((time.perf_counter() - t0) / (n // 5) * 1e6)
        return round(statistics.median(best), 1)

    assert engine.resume(token) is not None
    return {"open_us": timed(lambda: engine.resume(token)),
            "record_id_us": timed(lambda: engine.keyring.record_ids(token)),
            "hkdf_aes_gcm_us": timed(lambda: key.open(token, record.id, record.sealed)),
            "csrf_token_us": timed(lambda: key.csrf_token("session:" + token))}


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
    """cProfile (each thread's CPU time) of a page under load at concurrency 8; (summary, text)."""
    requests.post(app.url("/_bench/profile"), data={"action": "start", "clock": "cpu"},
                  timeout=10).raise_for_status()
    load.run(app.url(f"/_bench/{page}"), seconds, 8, cookies, "session")
    requests.post(app.url("/_bench/profile"), data={"action": "stop"}, timeout=10).raise_for_status()
    summary = requests.get(app.url("/_bench/profile"), params={"fmt": "json"}, timeout=30).json()
    text = requests.get(app.url("/_bench/profile"), timeout=30).text
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
            say(f"  round {r + 1} {key:<12} {result['rps']:8.1f} req/s  "
                f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                f"app CPU {result['app_cpu_us']} µs/req  db CPU {result['db_cpu_us']} µs/req")
    return runs


# -- the run -----------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3, help="length of each load run (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per figure (default 5)")
    parser.add_argument("--large", type=int, default=100_000, help="sessions stored for the growth figure")
    parser.add_argument("--quick", action="store_true", help="short smoke run (writes no results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.large = 2, 1, 5_000

    started = time.monotonic()
    if not load.ensure_wrk():
        say("note: wrk could not be installed; using the threaded Python load generator "
            "(it shares the cores with the app, so absolute rates are lower)")
    info = figures.machine("wrk" if load.have_wrk() else "python threads")
    say(f"bench on {info['cores']} cores ({info['cpu']}), Python {info['python']}, {info['database']}, "
        f"load: {info['load']}")

    logdir = tempfile.mkdtemp(prefix="bench-")
    sandbox = Sandbox(logdir).start()
    # Two apps, each with its own database process: 1,000 sessions stored and 100,000.
    # Only the one under load works, so their runs can alternate like every other pair.
    db_small, db_large = Database(logdir, "secantusdb-1k").start(), Database(logdir, "secantusdb-large").start()
    small_app = BenchApp(db_small, sandbox, logdir, name="app-1k")
    large_app = BenchApp(db_large, sandbox, logdir, name="app-large")
    tls = None
    fillers = []
    raw = {"machine": info, "settings": vars(args)}
    try:
        # 1. the app, real sign-ins, 1,000 sessions stored; database commands per request
        small_app.start(count_db=True)
        tokens = [sign_in(small_app, USERS[i % len(USERS)]) for i in range(SIGNED_IN_BROWSERS)]
        small_fill = Filler(small_app.mongodb_uri, small_app.secure_key)
        fillers.append(small_fill)
        small_fill.fill_to(1_000)
        say(f"{SIGNED_IN_BROWSERS} browsers signed in; {small_fill.count()} sessions stored")
        small_fill.close()  # its tokens stay: the load runs use them as cookies
        counts = count_db(small_app, tokens, 1000)
        raw["db_counts"] = counts
        say(f"database commands over {counts['requests']} signed-in requests: "
            f"{counts['reads']} reads, {counts['writes']} writes {counts['by_collection']}")
        small_app.stop()
        small_app.start(count_db=False)  # the load runs go without the listener, as production does

        # 2. the same with 100,000 sessions stored
        large_app.start()
        large_tokens = [sign_in(large_app, USERS[i % len(USERS)]) for i in range(SIGNED_IN_BROWSERS)]
        large_fill = Filler(large_app.mongodb_uri, large_app.secure_key)
        fillers.append(large_fill)
        took = large_fill.fill_to(args.large, rebuild_indexes=True)
        say(f"second app: {large_fill.count():,} sessions stored "
            f"(bulk insert of engine-made records: {took:.0f} s)")
        large_fill.close()

        # 3. throughput: bare, signed-in, RAM sessions, signed-in with 100k stored; c32 latency
        cookies = tokens + random.sample(small_fill.tokens, COOKIES_PER_RUN - len(tokens))
        cookies_large = large_tokens + random.sample(large_fill.tokens, COOKIES_PER_RUN - len(large_tokens))
        ram_ids = ram_sessions(small_app, COOKIES_PER_RUN)
        runner = Runner(args.seconds)
        # The bare page gets the same cookies (a signed-in browser sends them to every page):
        # the difference between the two is the session layer, not parsing a Cookie header.
        spec = [("bare", small_app, "bare", {"cookies": cookies}),
                ("signed", small_app, "signed", {"cookies": cookies}),
                ("ram", small_app, "ram", {"cookies": ram_ids, "cookie_name": "session_id"}),
                ("signed_large", large_app, "signed", {"cookies": cookies_large}),
                ("signed_c32", small_app, "signed", {"cookies": cookies, "connections": 32}),
                ("bare_c1", small_app, "bare", {"cookies": cookies, "connections": 1, "threads": 1}),
                ("signed_c1", small_app, "signed", {"cookies": cookies, "connections": 1, "threads": 1})]
        for _key, app, page, options in spec[:4]:  # warm-up: imports, pools, caches
            runner.run(app, page, **{**options, "seconds": 2})
        say(f"throughput ({args.rounds} rounds of {args.seconds:g} s, concurrency 16; signed_c32 at 32; "
            f"signed_large with {args.large:,} sessions stored):")
        runs = throughput_rounds(runner, args.rounds, spec)
        raw["runs"] = runs
        large_app.stop()

        # 4. opening credentials, one database read, profiles
        crypto = crypto_costs(small_app.secure_key)
        read_cpu = db_read_client_cpu(small_app.mongodb_uri,
                                      Keyring(small_app.secure_key).current.record_id(tokens[0]))
        raw.update(crypto=crypto, db_read_client=read_cpu)
        say(f"opening credentials (one thread, no I/O): {crypto}; one find_one costs its client "
            f"{read_cpu['cpu_us']} µs of CPU")
        bare_profile, _text = profile(small_app, "bare", cookies, 3)
        summary, text = profile(small_app, "signed", cookies, 3)
        added = profile_difference(bare_profile, summary)
        raw.update(profile=summary, profile_bare=bare_profile, profile_added=added)
        for proc in (small_app, db_small, db_large):  # nothing else running for the HTTPS figures
            proc.stop()

        # 5. pooled vs fresh HTTPS
        certs = Certificates(logdir)
        tls = TLSSandbox(certs, logdir).start()
        api = clients.compare_api(tls, seconds=1.0, rounds=args.rounds + 2)
        pusher = clients.compare_pusher(tls, seconds=1.0, rounds=args.rounds + 2)
        raw.update(pooled_vs_fresh_api=api, pooled_vs_fresh_pusher=pusher)
        for name, r in (("API", api), ("Pusher", pusher)):
            say(f"{name} client over HTTPS: pooled {r['pooled_per_s']:.0f} calls/s, fresh {r['fresh_per_s']:.0f} "
                f"calls/s (new connections: pooled {r['connections']['pooled']} for "
                f"{r['connections']['pooled_calls']} calls, fresh {r['connections']['fresh']} for "
                f"{r['connections']['fresh_calls']})")
    except BaseException:
        say(f"bench failed; the processes' logs are in {logdir}")
        raise
    finally:
        for proc in (tls, small_app, large_app, sandbox, db_small, db_large):
            if proc is not None:
                proc.stop()
        for filler in fillers:
            filler.close()

    bare, signed, ram, large_signed = (median(runs[k], "rps") for k in ("bare", "signed", "ram", "signed_large"))
    bare_c1_us = median(runs["bare_c1"], "mean_ms") * 1000
    c1_ratio = paired(runs, "signed_c1", "bare_c1")
    p99_over_p50 = statistics.median(r["p99_ms"] / r["p50_ms"] for r in runs["signed_c32"] if r["p50_ms"])
    stalled = sum(1 for r in runs["signed_large"] if not r["rps"])
    worst_large_p99 = max(r["p99_ms"] for r in runs["signed_large"])
    worst_small_p99 = max(r["p99_ms"] for r in runs["signed"])
    results = {
        "signed_in_vs_bare": figures.figure("signed_in_vs_bare", paired(runs, "signed", "bare")),
        "signed_in_vs_cherrypy_ram": figures.figure("signed_in_vs_cherrypy_ram", paired(runs, "signed", "ram")),
        "db_reads_per_request": figures.figure("db_reads_per_request", counts["reads"] / counts["requests"]),
        "db_writes_per_request": figures.figure("db_writes_per_request", counts["writes"] / counts["requests"]),
        "pooled_vs_fresh_api": figures.figure("pooled_vs_fresh_api", api["ratio"]),
        "pooled_vs_fresh_pusher": figures.figure("pooled_vs_fresh_pusher", pusher["ratio"]),
        "growth_100k_vs_1k": figures.figure("growth_100k_vs_1k", paired(runs, "signed_large", "signed")),
        "crypto_open_share": figures.figure("crypto_open_share",
                                            crypto["open_us"] / bare_c1_us),
        "latency_p99_over_p50_c32": figures.figure("latency_p99_over_p50_c32", p99_over_p50),
    }
    cpu = {k: median(runs[k], "app_cpu_us") for k in runs}
    db_cpu = {k: median(runs[k], "db_cpu_us") for k in runs}
    raw["medians"] = {"rps": {k: median(runs[k], "rps") for k in runs},
                      "app_cpu_us": cpu, "db_cpu_us": db_cpu, "signed_vs_bare_c1": c1_ratio}
    notes = [
        f"Ratios are medians over {args.rounds} rounds of the ratio within each round (every round runs "
        f"every page once, in rotating order, {args.seconds:g} s each). Median req/s at concurrency 16: "
        f"bare {bare:.0f}, "
        f"signed-in {signed:.0f}, RAM sessions {ram:.0f} req/s; signed-in {large_signed:.0f} req/s with "
        f"{args.large:,} sessions stored (a second app and database, its runs in the same rotation).",
        f"App CPU per request at concurrency 16: bare {cpu['bare']:.0f} µs, RAM sessions {cpu['ram']:.0f} µs, "
        f"signed-in {cpu['signed']:.0f} µs, and the database process {db_cpu['signed']:.0f} µs more per "
        f"signed-in request on the same cores. At concurrency 1: bare {cpu['bare_c1']:.0f} µs, signed-in "
        f"{cpu['signed_c1']:.0f} µs (signed-in ÷ bare req/s there: {c1_ratio:.2f}).",
        f"Alone, without I/O or other threads: one find_one costs pymongo {read_cpu['cpu_us']} µs of CPU, "
        f"opening the credentials {crypto['open_us']:.0f} µs (AES-GCM with its HKDF key "
        f"{crypto['hkdf_aes_gcm_us']:.0f} µs, record id {crypto['record_id_us']:.0f} µs). Under concurrency "
        f"both cost several times that: each of pycryptodome's ~20 C calls (cffi) and each socket call "
        f"releases the GIL, and with 16 busy threads every release is a thread switch.",
        f"Worst p99 of the signed-in page at concurrency 16: {worst_small_p99 / 1000:.2f} s with 1,000 "
        f"sessions stored, {worst_large_p99 / 1000:.2f} s with {args.large:,}"
        + (f"; {stalled} of {args.rounds} runs with {args.large:,} finished no request at all: SecantusDB's "
           "TTL sweeper walks every session once a minute holding its storage lock (~5 s at 100,000), and "
           "reads wait (MongoDB's TTL monitor does not block reads like this)." if stalled else "."),
        "Profile (CPU a signed-in request adds to a bare one): " + ", ".join(
            f"{r['package']} {r['share']:.0%} ({r['calls']:.0f} calls)" for r in added if r["share"] >= 0.03) + ".",
        f"HTTPS calls/s, pooled vs fresh: Social OS API {api['pooled_per_s']:.0f} vs {api['fresh_per_s']:.0f}, "
        f"Pusher {pusher['pooled_per_s']:.0f} vs {pusher['fresh_per_s']:.0f}; new TCP+TLS connections "
        f"seen by the sandbox: pooled {api['connections']['pooled'] + pusher['connections']['pooled']}, "
        f"fresh {api['connections']['fresh'] + pusher['connections']['fresh']}.",
    ]
    if not args.quick:
        figures.write_json(results)
        (HERE / "results-raw.json").write_text(json.dumps(raw, indent=2, ensure_ascii=False, default=str) + "\n")
        (HERE / "profile.txt").write_text(text)
        figures.write_markdown(results, info, notes)
        drawn = figures.draw(results, info)
        if drawn is None:
            say("(matplotlib not installed: no chart)")
    say("")
    say(figures.table(results))
    say("")
    for note in notes:
        say(f"- {note}")
    say("")
    say(f"what a signed-in request adds to a bare one (cProfile of {summary['requests']} requests, "
        f"CPU time; the profiler inflates absolute µs, the shares hold):")
    for row in added:
        if row["cpu_us"] > 0:
            say(f"  {row['share']:5.0%}  {row['package']:<18} {row['calls']:7.0f} Python calls/request")
    say("the session layer's steps (cumulative profiled CPU µs per request):")
    for row in summary["steps"][:8]:
        say(f"  {row['cum_us']:8.0f}  {row['function']}")
    say(f"done in {time.monotonic() - started:.0f} s"
        + ("" if args.quick else "; wrote bench/results.json, results.md, results.png, profile.txt"))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
