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
    /_bench/profile    POST start|stop: cProfile the request threads; GET: the top costs

All pages but dbstats/profile carry the app's other tools (CSRF binding,
security headers, error pages) as the app's own pages do, so a ratio
between two of them is the cost of the session layer alone.
"""

import cProfile
import io
import json
import pstats
import sys
import threading
from collections import Counter

import cherrypy
from pymongo import monitoring

import app as app_module
from socialos_app import web

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


class Profiling:
    """cProfile of request handling: one profiler per server thread, on between start and stop."""

    def __init__(self):
        self.lock = threading.Lock()
        self.local = threading.local()
        self.profilers = []
        self.active = False

    def begin(self):
        if not self.active:
            return
        prof = getattr(self.local, "prof", None)
        if prof is None:
            prof = self.local.prof = cProfile.Profile()
            with self.lock:
                self.profilers.append(prof)
        cherrypy.serving.request._bench_prof = prof
        prof.enable()

    def end(self):
        prof = getattr(cherrypy.serving.request, "_bench_prof", None)
        if prof is not None:
            prof.disable()

    def report(self, top=25):
        """Top functions by own time and by cumulative time, as text."""
        with self.lock:
            profilers = list(self.profilers)
        if not profilers:
            return "no profile recorded\n"
        stats = pstats.Stats(profilers[0], stream=io.StringIO())
        for prof in profilers[1:]:
            stats.add(prof)
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


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
        return COUNTER.snapshot()

    @cherrypy.expose
    def profile(self, action=""):
        if cherrypy.serving.request.method == "POST":
            if action not in ("start", "stop"):
                raise cherrypy.HTTPError(400, "action is start or stop")
            PROFILING.active = action == "start"
            return action
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
    # Before the app connects: pymongo applies registered listeners to clients made afterwards.
    monitoring.register(COUNTER)
    app_module.mount = mount_with_bench  # app.main() calls mount(settings, APP_CONF)
    return app_module.main(argv)


if __name__ == "__main__":
    sys.exit(main())
