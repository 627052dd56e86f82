"""``python -m bench`` (``make bench``): every figure, in one run, on this machine.

Writes bench/results.json, bench/results.md (the README's table),
bench/results.png (with matplotlib), bench/results-raw.json (every run's
numbers) and bench/profile.txt (where a signed-in request's time goes),
and prints the table. ``--quick`` is a short smoke run that writes nothing.

Order of the run:

1. SecantusDB, the sandbox and the app (``bench.serve``) as separate processes;
   32 browsers sign in through /login; sessions filled up to 1,000.
2. Database commands over 1,000 signed-in requests (the app restarted with a
   pymongo command listener for this step only).
3. Throughput at concurrency 16: bare, signed-in and RAM-session pages in
   alternating order, 5 rounds of 3 s, medians; p99/p50 at concurrency 32.
4. One bare request's time (concurrency 1) and the time to open a session's
   credentials; a profile of the bare and the signed-in page.
5. Sessions filled up to 100,000; signed-in (and bare) throughput again.
6. The sandboxes over HTTPS: pooled vs fresh connections through the clients.
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
    """Load runs against the app, with the CPU each process spent per request."""

    def __init__(self, app, db, seconds):
        self.app, self.db, self.seconds = app, db, seconds

    def run(self, page, connections=16, cookies=(), cookie_name="session", seconds=None, threads=2):
        app_cpu, db_cpu = self.app.proc.cpu_seconds(), self.db.proc.cpu_seconds()
        result = load.run(self.app.url(f"/_bench/{page}"), seconds or self.seconds, connections,
                          cookies, cookie_name, threads)
        if result.non200 or result.socket_errors or not result.requests:
            raise RuntimeError(f"/_bench/{page}: {result.non200} answers not 200, "
                               f"{result.socket_errors} socket errors in {result.requests} requests")
        n = result.requests
        return {"page": page, "connections": connections, "rps": round(result.rps, 1),
                "p50_ms": result.p50_ms, "p90_ms": result.p90_ms, "p99_ms": result.p99_ms,
                "mean_ms": round(result.mean_ms, 3),
                "app_cpu_us": round((self.app.proc.cpu_seconds() - app_cpu) / n * 1e6),
                "db_cpu_us": round((self.db.proc.cpu_seconds() - db_cpu) / n * 1e6)}


def median(runs, key):
    return statistics.median(r[key] for r in runs)


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


def throughput_rounds(runner, rounds, pages, say_prefix=""):
    """Each round runs every page once, the order rotated so none always goes first."""
    runs = {key: [] for key, *_ in pages}
    for r in range(rounds):
        order = pages[r % len(pages):] + pages[:r % len(pages)]
        for key, page, kwargs in order:
            result = runner.run(page, **kwargs)
            runs[key].append(result)
            say(f"  {say_prefix}round {r + 1} {key:<12} {result['rps']:8.1f} req/s  "
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
    db = Database(logdir).start()
    sandbox = Sandbox(logdir).start()
    app = BenchApp(db, sandbox, logdir)
    tls = None
    filler = None
    raw = {"machine": info, "settings": vars(args)}
    try:
        # 1. the app, real sign-ins, 1,000 sessions stored
        app.start(count_db=True)
        tokens = [sign_in(app, USERS[i % len(USERS)]) for i in range(SIGNED_IN_BROWSERS)]
        filler = Filler(app.mongodb_uri, app.secure_key)
        filler.fill_to(1_000)
        say(f"{SIGNED_IN_BROWSERS} browsers signed in; {filler.count()} sessions stored")

        # 2. database commands per signed-in request
        counts = count_db(app, tokens, 1000)
        raw["db_counts"] = counts
        say(f"database commands over {counts['requests']} signed-in requests: "
            f"{counts['reads']} reads, {counts['writes']} writes {counts['by_collection']}")
        app.stop()
        app.start(count_db=False)  # the throughput runs go without the listener, as production does

        # 3. throughput: bare, signed-in, RAM sessions; latency at concurrency 32
        cookies = tokens + random.sample(filler.tokens, COOKIES_PER_RUN - len(tokens))
        ram_ids = ram_sessions(app, COOKIES_PER_RUN)
        runner = Runner(app, db, args.seconds)
        # The bare page gets the same cookies (a signed-in browser sends them to every page):
        # the difference between the two is the session layer, not parsing a Cookie header.
        pages = [("bare", "bare", {"cookies": cookies}),
                 ("signed", "signed", {"cookies": cookies}),
                 ("ram", "ram", {"cookies": ram_ids, "cookie_name": "session_id"}),
                 ("signed_c32", "signed", {"cookies": cookies, "connections": 32})]
        for key, page, kwargs in pages[:3]:  # warm-up: imports, pools, caches
            runner.run(page, seconds=2, **kwargs)
        say(f"throughput at 1,000 sessions ({args.rounds} rounds of {args.seconds:g} s, concurrency 16/32):")
        small = throughput_rounds(runner, args.rounds, pages)
        raw["runs_1k"] = small

        # 4. one bare request, opening credentials, profile
        bare_c1 = runner.run("bare", connections=1, threads=1)
        crypto = crypto_costs(app.secure_key)
        read_cpu = db_read_client_cpu(app.mongodb_uri, Keyring(app.secure_key).current.record_id(tokens[0]))
        raw.update(bare_c1=bare_c1, crypto=crypto, db_read_client=read_cpu)
        say(f"one bare request at concurrency 1: {bare_c1['mean_ms'] * 1000:.0f} µs; opening credentials: "
            f"{crypto['open_us']} µs ({crypto}); one find_one costs a client {read_cpu['cpu_us']} µs of CPU")
        bare_profile, _text = profile(app, "bare", cookies, 3)
        summary, text = profile(app, "signed", cookies, 3)
        added = profile_difference(bare_profile, summary)
        raw.update(profile=summary, profile_bare=bare_profile, profile_added=added)

        # 5. growth: 100,000 sessions stored
        took = filler.fill_to(args.large, rebuild_indexes=True)
        say(f"{filler.count()} sessions stored (bulk insert of engine-made records: {took:.0f} s)")
        cookies_large = tokens + random.sample(filler.tokens, COOKIES_PER_RUN - len(tokens))
        large_pages = [("bare", "bare", {"cookies": cookies_large}),
                       ("signed", "signed", {"cookies": cookies_large})]
        runner.run("signed", seconds=2, cookies=cookies_large)
        say(f"throughput at {args.large:,} sessions:")
        large = throughput_rounds(runner, args.rounds, large_pages)
        raw["runs_large"] = large

        # 6. pooled vs fresh HTTPS
        certs = Certificates(logdir)
        tls = TLSSandbox(certs, logdir).start()
        api = clients.compare_api(tls, seconds=max(1.0, args.seconds / 2), rounds=args.rounds)
        pusher = clients.compare_pusher(tls, seconds=max(1.0, args.seconds / 2), rounds=args.rounds)
        raw.update(pooled_vs_fresh_api=api, pooled_vs_fresh_pusher=pusher)
        for name, r in (("API", api), ("Pusher", pusher)):
            say(f"{name} client over HTTPS: pooled {r['pooled_per_s']:.0f} calls/s, fresh {r['fresh_per_s']:.0f} "
                f"calls/s (new connections: pooled {r['connections']['pooled']} for "
                f"{r['connections']['pooled_calls']} calls, fresh {r['connections']['fresh']} for "
                f"{r['connections']['fresh_calls']})")
    finally:
        for proc in (tls, app, sandbox, db):
            if proc is not None:
                proc.stop()
        if filler is not None:
            filler.close()

    bare, signed, ram = (median(small[k], "rps") for k in ("bare", "signed", "ram"))
    large_signed, large_bare = median(large["signed"], "rps"), median(large["bare"], "rps")
    p99_over_p50 = statistics.median(r["p99_ms"] / r["p50_ms"] for r in small["signed_c32"])
    results = {
        "signed_in_vs_bare": figures.figure("signed_in_vs_bare", signed / bare),
        "signed_in_vs_cherrypy_ram": figures.figure("signed_in_vs_cherrypy_ram", signed / ram),
        "db_reads_per_request": figures.figure("db_reads_per_request", counts["reads"] / counts["requests"]),
        "db_writes_per_request": figures.figure("db_writes_per_request", counts["writes"] / counts["requests"]),
        "pooled_vs_fresh_api": figures.figure("pooled_vs_fresh_api", api["ratio"]),
        "pooled_vs_fresh_pusher": figures.figure("pooled_vs_fresh_pusher", pusher["ratio"]),
        "growth_100k_vs_1k": figures.figure("growth_100k_vs_1k", large_signed / signed),
        "crypto_open_share": figures.figure("crypto_open_share",
                                            crypto["open_us"] / (bare_c1["mean_ms"] * 1000)),
        "latency_p99_over_p50_c32": figures.figure("latency_p99_over_p50_c32", p99_over_p50),
    }
    cpu = {k: median(small[k], "app_cpu_us") for k in ("bare", "signed", "ram")}
    db_cpu = median(small["signed"], "db_cpu_us")
    raw["medians"] = {"rps": {"bare": bare, "signed": signed, "ram": ram, "signed_large": large_signed,
                              "bare_large": large_bare},
                      "app_cpu_us": cpu, "db_cpu_us_signed": db_cpu,
                      "growth_bare_normalised": (large_signed / large_bare) / (signed / bare)}
    notes = [
        f"Medians of {args.rounds} alternating runs of {args.seconds:g} s at concurrency 16: bare {bare:.0f}, "
        f"signed-in {signed:.0f}, RAM sessions {ram:.0f} req/s; signed-in {large_signed:.0f} req/s with "
        f"{args.large:,} sessions (bare {large_bare:.0f}).",
        f"App CPU per request: bare {cpu['bare']:.0f} µs, RAM sessions {cpu['ram']:.0f} µs, signed-in "
        f"{cpu['signed']:.0f} µs (the database process adds {db_cpu:.0f} µs per signed-in request "
        f"on the same cores). Of the signed-in extra: one find_one costs pymongo ~{read_cpu['cpu_us']} µs "
        f"of CPU, opening the credentials {crypto['open_us']:.0f} µs "
        f"(AES-GCM with its HKDF key {crypto['hkdf_aes_gcm_us']:.0f} µs, record id {crypto['record_id_us']:.0f} µs).",
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
