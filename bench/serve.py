"""``python -m bench.serve [--host H] [--port P]``: the app exactly as ``app.py`` starts it,
plus bench-only pages on the same server and thread pool.

Nothing here is product code and the product has no bench routes: this
module runs ``socialos_app.cli.main()`` (what ``app.py`` runs: settings from
the environment, ``socialos_app.web.app.mount``, the same server config and
engine plugins, the session cache's change stream included) and, right
after the app is mounted, mounts ``/_bench``:

    /_bench/bare       no session tool: the floor of a CherryPy page here
    /_bench/signed     the app's session tool: cookie -> record (from this instance's cache,
                       or one find_one) -> integrity tag checked -> ``request.signed_in``;
                       no upstream call, so the sealed credentials are never opened
    /_bench/upstream   signed in: one pooled call to the Social OS API with the user's own
                       key (``signed_in.api``: the seal opened, as a page that calls upstream does)
    /_bench/upstream_unsigned  no session: the same call with a key the page holds itself
    /_bench/ram        CherryPy's own RAM sessions (``tools.sessions``), a value read
    /_bench/ram_login  puts that value in a RAM session (once per bench browser)
    /_bench/cached     signed in: whether this instance's cache holds the record now
    /_bench/cache      the session cache: trusted (change stream confirmed), entries, size
    /_bench/stats      ``engine.stats()`` timed in this process (``n`` times), ms each
    /_bench/dbstats    database commands seen by a pymongo CommandListener in this process
                       (registered only with BENCH_COUNT_DB=1: a listener costs a little on
                       every command, so the throughput runs go without it, as production does);
                       the change stream's own commands are counted apart
    /_bench/profile    POST action=start (afresh; clock=cpu|wall)|stop: cProfile the request
                       threads; GET: the top costs (pstats text, or ``fmt=json``: per request, µs)

All pages but dbstats/profile carry the app's other tools (request id,
CSRF binding, security headers, the request log line, the metrics, error
pages) as the app's own pages do, so a ratio between two of them is the
cost of the session layer alone.

Beside them, a page of CherryPy's own, with nothing of the app:

    /_floor            the same tiny answer from a second CherryPy application on the same
                       server and thread pool, every tool off (CherryPy's defaults too: encode,
                       trailing_slash, log_tracebacks) and CherryPy's own request and response
                       classes: what this server costs before the app adds anything

``BENCH_SWITCH_INTERVAL`` (seconds) sets the GIL's switch interval, for experiments on the tail.
"""

import cProfile
import io
import itertools
import json
import os
import pstats
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cherrypy
from pymongo import monitoring

from socialos_app import cli
from socialos_app.web import app as web

ROOT = Path(__file__).resolve().parent.parent
READS = frozenset({"find", "aggregate", "count", "distinct", "getMore"})
WRITES = frozenset({"insert", "update", "delete", "findAndModify"})
KEY_USERS = ("demo", "alice", "bob", "carol", "dave", "ada", "grace", "linus")  # the sandbox's users


class CommandCounter(monitoring.CommandListener):
    """Counts read and write commands per collection (pymongo command monitoring).

    The session cache's change stream (an ``aggregate`` with ``$changeStream``
    and then a ``getMore`` every few hundred ms, whatever the traffic) is
    counted apart as "stream": it is one background feed per instance, not
    a read made by any request.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()
        self.opening = set()   # request ids of $changeStream aggregates in flight
        self.streams = set()   # cursor ids of change streams

    def started(self, event):
        name = event.command_name
        command = event.command
        if name == "aggregate" and any("$changeStream" in stage for stage in command.get("pipeline", ())):
            with self.lock:
                self.opening.add(event.request_id)
            kind = "stream"
        elif name == "getMore" and command.get("getMore") in self.streams:
            kind = "stream"
        else:
            kind = "reads" if name in READS else "writes" if name in WRITES else None
        if kind is None:
            return
        collection = command.get("collection") if name == "getMore" else command.get(name)
        with self.lock:
            self.counts[(kind, str(collection))] += 1

    def succeeded(self, event):
        if event.request_id in self.opening:
            with self.lock:
                self.opening.discard(event.request_id)
                cursor = (event.reply or {}).get("cursor") or {}
                if cursor.get("id"):
                    self.streams.add(cursor["id"])

    def failed(self, event):
        with self.lock:
            self.opening.discard(event.request_id)

    def snapshot(self):
        with self.lock:
            items = list(self.counts.items())
        out = {"reads": 0, "writes": 0, "stream": 0, "by_collection": {}}
        for (kind, collection), n in items:
            out[kind] += n
            out["by_collection"].setdefault(collection, {"reads": 0, "writes": 0, "stream": 0})[kind] += n
        return out


COUNTER = CommandCounter()
COUNTING = os.environ.get("BENCH_COUNT_DB") == "1"


class Profiling:
    """cProfile of whole requests: from the first byte read to the last written and the request's close.

    Installed on the server's connection class (``install``), so every part
    of a request is seen: cheroot reading and parsing it, CherryPy's dispatch
    and config, the tools, the handler, the answer's headers and body going
    out, and the ``on_end_request`` hooks (the log line, the metrics) that run
    after. One profiler per server thread, on between ``reset`` and ``active = False``.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.profilers = {}  # thread id -> cProfile.Profile
        self.requests = 0
        self.active = False
        self.timer = time.thread_time
        self.installed = False

    def install(self, server):
        """Profile the connections ``server`` accepts from now on (once; wrk opens new ones per run)."""
        if self.installed:
            return
        profiling, base = self, server.ConnectionClass

        class ProfiledConnection(base):
            def communicate(self):  # one request per call (cheroot's connection manager has it between)
                prof = profiling.profiler()
                if prof is None:
                    return super().communicate()
                prof.enable()
                try:
                    return super().communicate()
                finally:
                    prof.disable()

        server.ConnectionClass = ProfiledConnection
        self.installed = True

    def reset(self, clock="cpu"):
        """Start afresh; ``clock`` "cpu" counts each thread's CPU time, "wall" includes waits."""
        with self.lock:
            self.profilers, self.requests = {}, 0
            self.timer = time.thread_time if clock == "cpu" else time.perf_counter

    def profiler(self):
        """This thread's profiler while profiling is on (a request is starting), else None."""
        if not self.active:
            return None
        ident = threading.get_ident()
        with self.lock:
            prof = self.profilers.get(ident)
            if prof is None:
                prof = self.profilers[ident] = cProfile.Profile(self.timer)
            self.requests += 1
        return prof

    def _stats(self):
        with self.lock:
            profilers = list(self.profilers.values())
        if not profilers:
            return None
        stats = pstats.Stats(profilers[0], stream=io.StringIO())
        for prof in profilers[1:]:
            stats.add(prof)
        return stats

    def report(self, top=30):
        """Top functions by own time and by cumulative time, as pstats text."""
        stats = self._stats()
        if stats is None:
            return "no profile recorded\n"
        out = io.StringIO()
        stats.stream = out
        print(f"{self.requests} requests profiled (whole requests: read, parse, app, write, close)", file=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()

    def summary(self, top=12):
        """Per request: the top functions by own time, the session layer's steps and the budget (µs)."""
        stats = self._stats()
        if stats is None or not self.requests:
            return {"requests": 0, "own": [], "steps": [], "packages": [], "budget": {}}
        n = self.requests
        rows = []
        for (path, line, func), (_cc, calls, own, cum, _callers) in stats.stats.items():
            short = path.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
            rows.append({"function": f"{short}:{line}({func})" if line else func,
                         "calls": round(calls / n, 2), "own_us": round(own / n * 1e6, 1),
                         "cum_us": round(cum / n * 1e6, 1)})
        own = sorted(rows, key=lambda r: r["own_us"], reverse=True)[:top]
        packages = {}
        for row in rows:
            name = _package(row["function"])
            entry = packages.setdefault(name, {"package": name, "calls": 0.0, "own_us": 0.0})
            entry["calls"] = round(entry["calls"] + row["calls"], 2)
            entry["own_us"] = round(entry["own_us"] + row["own_us"], 1)
        wanted = ("(resolve_session)", "(resume)", "sessions/mongo.py", "sessions/cache.py", "(find_one)",
                  "(record_ids)", "(record_message)", "(check_record_tag)", "crypto.py", "(check_csrf)",
                  "(credentials)", "(api)", "(_unpack)", "(secure_headers)")
        steps = sorted((r for r in rows if any(w in r["function"] for w in wanted)),
                       key=lambda r: r["cum_us"], reverse=True)
        return {"requests": n, "own": own, "steps": steps, "budget": budget(stats, n),
                "packages": sorted(packages.values(), key=lambda r: r["own_us"], reverse=True)}


# Where a request's CPU goes, by the function each part starts in: (file ending, function name).
# Each part is the cumulative time of its entry points, less the parts nested inside it, so
# no time counts twice; "server" is everything else (cheroot's I/O, CherryPy's own steps).
BUDGET = {
    "parse": [("cheroot/server.py", "parse_request"), ("cherrypy/_cprequest.py", "process_headers"),
              ("web/request.py", "process_headers"), ("cherrypy/_cprequest.py", "process_query_string")],
    # Dispatch, the config merged and applied (tool setup: CherryPy's NamespaceSet), the hooks run.
    "tools": [("cherrypy/_cprequest.py", "get_resource"), ("cherrypy/lib/reprconf.py", "__call__"),
              ("cherrypy/_cprequest.py", "run_hooks")],
    "session": [("web/tools.py", "resolve_session")],
    "handler": [("bench/serve.py", "bare"), ("bench/serve.py", "signed"), ("bench/serve.py", "__call__")],
    "render": [("cherrypy/lib/encoding.py", "__call__"), ("cherrypy/_cprequest.py", "collapse_body")],
    "headers": [("web/tools.py", "secure_headers"), ("cherrypy/_cprequest.py", "finalize"),
                ("cheroot/server.py", "send_headers")],
    "log": [("ops/logs.py", "assign_request_id"), ("ops/logs.py", "log_request")],
    "metrics": [("ops/metrics.py", "_start"), ("ops/metrics.py", "_end")],
}
_ROOT_CALL = ("cheroot/server.py", "communicate")


def budget(stats, requests):
    """Profiled CPU µs per request by part (``BUDGET``), each part's nested parts taken out.

    ``tools`` is CherryPy's dispatch, config and hook running less the named
    tools inside; ``render`` is the encode tool less the handler it wraps;
    ``headers`` the security headers, CherryPy's header encoding and cheroot's write of them.
    """
    def cum(entries):
        total = 0.0
        for (path, _line, func), (_cc, _nc, _own, cumulative, _callers) in stats.stats.items():
            if any(path.endswith(f) and func == name for f, name in entries):
                total += cumulative
        return total / requests * 1e6

    raw = {part: cum(entries) for part, entries in BUDGET.items()}
    whole = cum([_ROOT_CALL])
    out = dict(raw)
    # Nesting: hooks run the named tools; the encode tool runs the handler; finalize runs in
    # CherryPy's respond, outside the hooks; the log and metrics end hooks run in run_hooks too.
    out["tools"] = raw["tools"] - sum(raw[p] for p in ("session", "log", "metrics", "handler", "render")) \
        - raw_secure(stats, requests)
    out["render"] = raw["render"] - raw["handler"]
    out["server"] = whole - sum(v for k, v in out.items())
    return {k: round(v, 1) for k, v in out.items()} | {"total": round(whole, 1)}


def raw_secure(stats, requests):
    """µs of the secure_headers tool (a hook: counted in ``headers``, taken out of ``tools``)."""
    for (path, _line, func), (_cc, _nc, _own, cumulative, _callers) in stats.stats.items():
        if path.endswith("web/tools.py") and func == "secure_headers":
            return cumulative / requests * 1e6
    return 0.0


def _package(function):
    """Who a profiled function belongs to: the app, a library, or Python itself."""
    head = function.split("/")[0].split(".")[0].split(":")[0]
    if function.startswith("{") or function.startswith("<"):
        return "python built-ins"
    if head in ("Crypto", "cffi"):
        return "pycryptodome"
    if head in ("pymongo", "bson"):
        return "pymongo"
    if head in ("socialos_app", "bench", "cherrypy", "cheroot", "jinja2"):
        return head
    return "python stdlib" if "/lib/python3" in function else head


PROFILING = Profiling()


class BenchPages:
    """Tiny pages; the difference between them is the session machinery in front."""

    def __init__(self, services):
        self.services = services
        self._keys = None
        self._keys_lock = threading.Lock()
        self._turn = itertools.count()

    @cherrypy.expose
    def bare(self):
        return "ok -"

    @cherrypy.expose
    def signed(self):
        # A page that shows who is signed in and never calls upstream: the
        # record is checked (its tag) but the sealed credentials stay shut.
        return f"ok {cherrypy.serving.request.signed_in.username}"

    @cherrypy.expose
    def upstream(self):
        signed_in = cherrypy.serving.request.signed_in
        answer = signed_in.api.get("user", signed_in.username)  # the seal opened, one pooled call
        return f"ok {answer.get('username', '-')}"

    @cherrypy.expose
    def upstream_unsigned(self):
        username, password = self._key()
        answer = self.services.socialos.user(username, password).get("user", username)
        return f"ok {answer.get('username', '-')}"

    def _key(self):
        """The users' API keys, made once (with the sandbox's demo passwords), taken in turn."""
        if self._keys is None:
            with self._keys_lock:
                if self._keys is None:
                    made = []
                    for username in KEY_USERS:
                        key = self.services.socialos.create_key(username, username, ttl=3600)
                        made.append((username, key["password"]))
                    self._keys = made
        return self._keys[next(self._turn) % len(self._keys)]

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def cached(self):
        engine = self.services.engine
        record = cherrypy.serving.request.signed_in.record
        return {"cached": engine.cache is not None and engine.cache.get(record.id) is not None}

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def cache(self):
        cache = self.services.engine.cache
        if cache is None:
            return {"on": False, "trusted": False, "entries": 0, "size": 0}
        return {"on": True, "trusted": cache.trusted, "entries": len(cache), "size": cache.size}

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def stats(self, n="5"):
        """``engine.stats()`` (what /admin waits for) timed here, without HTTP: ms per call,
        whether the first count is still pending and how old the count shown is (s),
        or the error that ended a call (the app's database deadline applies)."""
        times, answer = [], None
        for _ in range(max(1, min(int(n), 100))):
            t0 = time.perf_counter()
            try:
                answer = self.services.engine.stats()
            except Exception as exc:  # noqa: BLE001 - reported, not raised: the bench wants the time
                return {"ms": times + [round((time.perf_counter() - t0) * 1000, 2)],
                        "error": f"{type(exc).__module__}.{type(exc).__name__}"}
            times.append(round((time.perf_counter() - t0) * 1000, 2))
        return {"ms": times, "active": answer["active"], "users": answer["users"], "error": None,
                "pending": answer.get("pending", False), "age_s": answer.get("age")}

    @cherrypy.expose
    def ram(self):
        return f"ok {cherrypy.session.get('user', '-')}"

    @cherrypy.expose
    def ram_login(self, user="demo"):
        cherrypy.session["user"] = str(user)[:64]
        return "ok"

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def dbstats(self):
        return {"enabled": COUNTING, **COUNTER.snapshot()}

    @cherrypy.expose
    def profile(self, action="", fmt="text", clock="cpu", top="30"):
        if cherrypy.serving.request.method == "POST":
            if action not in ("start", "stop"):
                raise cherrypy.HTTPError(400, "action is start or stop")
            if action == "start":
                PROFILING.install(cherrypy.server.httpserver)
                PROFILING.reset(clock)
            PROFILING.active = action == "start"
            return action
        if fmt == "json":
            cherrypy.serving.response.headers["Content-Type"] = "application/json"
            return json.dumps(PROFILING.summary()).encode()
        cherrypy.serving.response.headers["Content-Type"] = "text/plain"
        return PROFILING.report(max(1, min(int(top), 500)))


def bench_config(services):
    """The app's own per-request tools on every bench page; the session tools differ per page."""
    base = dict(web.app_config(services)["/"])
    base.update({"tools.socialos_session.on": False})
    internal = {"tools.csrf.on": False}
    ram = {"tools.sessions.on": True}
    signed = {"tools.socialos_session.on": True, "tools.socialos_session.required": True}
    return {
        "/": base,
        "/signed": signed,
        "/upstream": signed,
        "/cached": signed,
        "/cache": internal,
        "/stats": internal,
        "/ram": ram,
        "/ram_login": ram,
        "/dbstats": internal,
        "/profile": internal,
    }


class FloorPage:
    """``/_floor``: the bench's tiny answer with nothing of the app in front of it."""

    exposed = True

    def __call__(self):
        return b"ok -"  # bytes: with tools.encode off, CherryPy sends what the handler returns


def floor_config(services):
    """Every tool off: the app's, the bench's, and the ones CherryPy or the app switch on server-wide."""
    switches = {key for key in cherrypy.config if key.startswith("tools.") and key.endswith(".on")}
    switches |= {key for key in web.app_config(services)["/"] if key.startswith("tools.") and key.endswith(".on")}
    switches |= {f"tools.{name}.on" for name in ("encode", "trailing_slash", "log_tracebacks", "log_headers")}
    return {"/": dict.fromkeys(sorted(switches), False)}


_app_mount = web.mount


def mount_with_bench(settings):
    """``socialos_app.web.app.mount`` as the entry point calls it, then the bench pages beside the app."""
    services = _app_mount(settings)
    app = cherrypy.tree.apps[""]
    bench = cherrypy.tree.mount(BenchPages(services), "/_bench", config=bench_config(services))
    # The app's request and response classes and its log, as the app's own pages have them.
    bench.request_class, bench.response_class, bench.log = app.request_class, app.response_class, app.log
    cherrypy.tree.mount(FloorPage(), "/_floor", config=floor_config(services))
    return services


def main(argv=None):
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # experiments only: the GIL's switch interval, seconds
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    if COUNTING:
        # Before the app connects: pymongo applies registered listeners to clients made afterwards.
        monitoring.register(COUNTER)
    web.mount = mount_with_bench  # cli.main() imports web.mount when it starts the app
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
