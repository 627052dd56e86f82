"""``python -m bench.serve [--host H] [--port P]``: the app exactly as ``app.py`` starts it,
plus bench-only pages on the same server and thread pool.

Nothing here is product code and the product has no bench routes: this
module runs ``app.main()`` (settings from the environment through
``socialos_app.settings.load``, ``socialos_app.web.mount``, the same
server config) and, right after the app is mounted, mounts ``/_bench``:

    /_bench/bare       no session tool: the floor of a CherryPy page here
    /_bench/signed     the app's session tool: cookie -> record (one find_one) ->
                       credentials opened -> ``request.signed_in.api`` built; no upstream call
    /_bench/ram        CherryPy's own RAM sessions (``tools.sessions``), a value read
    /_bench/ram_login  puts that value in a RAM session (once per bench browser)
    /_bench/dbstats    database commands seen by a pymongo CommandListener in this process
                       (registered only with BENCH_COUNT_DB=1: a listener costs a little on
                       every command, so the throughput runs go without it, as production does)
    /_bench/profile    POST action=start (afresh; clock=cpu|wall)|stop: cProfile the request
                       threads; GET: the top costs (pstats text, or ``fmt=json``: per request, µs)

All pages but dbstats/profile carry the app's other tools (CSRF binding,
security headers, error pages) as the app's own pages do, so a ratio
between two of them is the cost of the session layer alone.
"""

import cProfile
import io
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

import app as app_module
from socialos_app import web

ROOT = Path(__file__).resolve().parent.parent
READS = frozenset({"find", "aggregate", "count", "distinct", "getMore"})
WRITES = frozenset({"insert", "update", "delete", "findAndModify"})


class CommandCounter(monitoring.CommandListener):
    """Counts read and write commands per collection (pymongo command monitoring)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()

    def started(self, event):
        name = event.command_name
        kind = "reads" if name in READS else "writes" if name in WRITES else None
        if kind is None:
            return
        collection = event.command.get(name)
        with self.lock:
            self.counts[(kind, str(collection))] += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def snapshot(self):
        with self.lock:
            items = list(self.counts.items())
        out = {"reads": 0, "writes": 0, "by_collection": {}}
        for (kind, collection), n in items:
            out[kind] += n
            out["by_collection"].setdefault(collection, {"reads": 0, "writes": 0})[kind] += n
        return out


COUNTER = CommandCounter()
COUNTING = os.environ.get("BENCH_COUNT_DB") == "1"


class Profiling:
    """cProfile of request handling: one profiler per server thread, on between start and stop."""

    def __init__(self):
        self.lock = threading.Lock()
        self.profilers = {}  # thread id -> cProfile.Profile
        self.requests = 0
        self.active = False
        self.timer = time.thread_time

    def reset(self, clock="cpu"):
        """Start afresh; ``clock`` "cpu" counts each thread's CPU time, "wall" includes waits."""
        with self.lock:
            self.profilers, self.requests = {}, 0
            self.timer = time.thread_time if clock == "cpu" else time.perf_counter

    def begin(self):
        if not self.active:
            return
        ident = threading.get_ident()
        with self.lock:
            prof = self.profilers.get(ident)
            if prof is None:
                prof = self.profilers[ident] = cProfile.Profile(self.timer)
            self.requests += 1
        cherrypy.serving.request._bench_prof = prof
        prof.enable()

    def end(self):
        prof = getattr(cherrypy.serving.request, "_bench_prof", None)
        if prof is not None:
            prof.disable()

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
        print(f"{self.requests} requests profiled", file=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()

    def summary(self, top=12):
        """Per request: the top functions by own time, and the session layer's steps (µs)."""
        stats = self._stats()
        if stats is None or not self.requests:
            return {"requests": 0, "own": [], "steps": []}
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
        wanted = ("(resolve_session)", "(resume)", "sessions/mongo.py", "(find_one)", "(record_ids)",
                  "crypto.py", "(check_csrf)", "(api)", "(_unpack)", "(secure_headers)")
        steps = sorted((r for r in rows if any(w in r["function"] for w in wanted)),
                       key=lambda r: r["cum_us"], reverse=True)
        return {"requests": n, "own": own, "steps": steps,
                "packages": sorted(packages.values(), key=lambda r: r["own_us"], reverse=True)}


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
cherrypy.tools.bench_profile_begin = cherrypy.Tool("on_start_resource", PROFILING.begin, priority=1)
cherrypy.tools.bench_profile_end = cherrypy.Tool("on_end_resource", PROFILING.end, priority=99)


class BenchPages:
    """Tiny pages; the difference between them is the session machinery in front."""

    @cherrypy.expose
    def bare(self):
        return "ok -"

    @cherrypy.expose
    def signed(self):
        signed_in = cherrypy.serving.request.signed_in
        return f"ok {signed_in.api.username}"  # the user's client, built as a page would

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
    def profile(self, action="", fmt="text", clock="cpu"):
        if cherrypy.serving.request.method == "POST":
            if action not in ("start", "stop"):
                raise cherrypy.HTTPError(400, "action is start or stop")
            if action == "start":
                PROFILING.reset(clock)
            PROFILING.active = action == "start"
            return action
        if fmt == "json":
            cherrypy.serving.response.headers["Content-Type"] = "application/json"
            return json.dumps(PROFILING.summary()).encode()
        cherrypy.serving.response.headers["Content-Type"] = "text/plain"
        return PROFILING.report()


def bench_config(services):
    """The app's own per-request tools on every bench page; the session tools differ per page."""
    base = dict(web.app_config(services)["/"])
    base.update({"tools.socialos_session.on": False,
                 "tools.request_log.on": False,
                 "tools.bench_profile_begin.on": True,
                 "tools.bench_profile_end.on": True})
    internal = {"tools.csrf.on": False, "tools.bench_profile_begin.on": False,
                "tools.bench_profile_end.on": False}
    ram = {"tools.sessions.on": True}
    return {
        "/": base,
        "/signed": {"tools.socialos_session.on": True, "tools.socialos_session.required": True},
        "/ram": ram,
        "/ram_login": ram,
        "/dbstats": internal,
        "/profile": internal,
    }


def mount_with_bench(settings, conf_file=None):
    """``socialos_app.web.mount`` as app.py calls it, then the bench pages beside the app."""
    services = web.mount(settings, conf_file)
    cherrypy.tree.mount(BenchPages(), "/_bench", config=bench_config(services))
    return services


def main(argv=None):
    if COUNTING:
        # Before the app connects: pymongo applies registered listeners to clients made afterwards.
        monitoring.register(COUNTER)
    app_module.mount = mount_with_bench  # app.main() calls mount(settings, APP_CONF)
    return app_module.main(argv)


if __name__ == "__main__":
    sys.exit(main())
