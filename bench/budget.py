"""``python -m bench.budget``: where a request's CPU goes, part by part, measured in one process.

The app is mounted here as ``bench.serve`` mounts it (``socialos_app.web.app.mount``,
the bench pages, the floor), with ``SESSION_STORE=memory`` and the request log at
INFO written to /dev/null, and requests are handed to CherryPy's WSGI application
directly: no sockets, one thread, so each figure is this thread's CPU time alone
and the machine's other load barely moves it. cheroot's reading and writing is
the same for every page and left out (the load runs in ``__main__`` include it).

The parts are a ladder of pages, each the one before plus one part of the app:

    floor    CherryPy alone: its own request and response classes, every tool off
    parse    + the app's request and response classes (cookies read leniently, Host
             checked, the client address) and its log (no CherryPy access line)
    render   + CherryPy's encode tool (the page returns text)
    headers  + the security headers
    log      + the request id (and start time) and the request log line
    metrics  + the request metrics
    tools    + the app's other tools: known paths, HEAD as GET, CSRF, upstream errors
             (this rung is ``/_bench/bare``, the bench's bare page)
    session  + the session tool: cookie, record from the instance cache, tag checked
             (``/_bench/signed``)

A part's cost is its rung less the rung below; each rung is its least round of
interleaved rounds (another process's load only ever adds to a round), the
cyclic garbage collector run between rounds rather than inside one.
``python -m bench.budget --profile PAGE`` prints a cProfile of one rung instead.
"""

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import secrets
import sys
import time
from pathlib import Path

import cherrypy

from socialos_app import settings as settings_mod
from socialos_app.ops import logs
from socialos_app.sessions import Credentials

from . import serve

__all__ = ["RUNGS", "Budget", "measure", "main"]

ROOT = Path(__file__).resolve().parent.parent
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")
# rung: the tools switched on (beyond those below it) and the page; "/_floor" and the two
# bench pages are the pages the load runs use.
RUNGS = ("floor", "parse", "render", "headers", "log", "metrics", "tools", "session")
_ADDED = {
    "render": ("encode",),
    "headers": ("secure_headers",),
    "log": ("request_id", "request_log"),
    "metrics": ("request_metrics",),
}


def _environ(path, cookie):
    return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "HTTP_HOST": "127.0.0.1:8080",
            "HTTP_USER_AGENT": USER_AGENT, "HTTP_ACCEPT": "*/*", "HTTP_COOKIE": f"session={cookie}",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False}


class _BytesPage:
    """``/_bench/bare``'s answer as bytes, for the rung without the encode tool."""

    @cherrypy.expose
    def bare(self):
        return b"ok -"


class Budget:
    """The app mounted in this process with one page per rung; ``request(rung)`` serves one."""

    def __init__(self):
        env = {"MONGODB_URI": "mongodb://127.0.0.1:9/budget",  # never connected: the store is memory
               "SESSION_STORE": "memory", "SECURE_KEY": secrets.token_hex(32), "LOG_LEVEL": "INFO",
               "SOCIALOS_API_URL": "http://127.0.0.1:9", "SOCIALOS_ADMIN_URL": "http://127.0.0.1:9",
               "SOCIALOS_ADMIN_USER": "admin", "SOCIALOS_ADMIN_PASSWORD": "admin-password",
               "PUSHER_APP_ID": "1", "PUSHER_KEY": "budget-key", "PUSHER_SECRET": "budget-secret-0123",
               "PUSHER_HOST": "127.0.0.1", "PUSHER_PORT": "9", "PUSHER_SCHEME": "http", "COOKIE_SECURE": "0"}
        server_conf = ROOT / "conf" / "server.conf"
        settings = settings_mod.load(env, conf={}, make_key=False)
        handler = logs.setup(settings.log_level, settings.log_format, settings)
        handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - the process's lifetime
        cherrypy.config.update(str(server_conf))
        services = serve.mount_with_bench(settings)
        self.services = services
        self._mount_rungs(services)
        token, _record = services.engine.start("demo", "Demo", False, Credentials("key", "key-password"),
                                               user_agent=USER_AGENT)
        self.cookie = token

    def _mount_rungs(self, services):
        app = cherrypy.tree.apps[""]
        base = serve.bench_config(services)["/"]
        below = set()
        for rung in RUNGS[1:6]:
            below |= set(_ADDED.get(rung, ()))
            config = dict(base)
            for key in list(config):
                name = key.split(".")[1] if key.startswith("tools.") and key.endswith(".on") else None
                if name and name not in below:
                    config[key] = False
            for name in ("encode", "secure_headers", "request_id", "request_log",
                         "request_metrics", "known_paths", "head_as_get", "csrf", "upstream_errors"):
                config[f"tools.{name}.on"] = name in below
            # Without the encode tool a page must return bytes: the same tiny page, as bytes.
            pages = serve.BenchPages(services) if "encode" in below else _BytesPage()
            mounted = cherrypy.tree.mount(pages, f"/_rung_{rung}", config={"/": config})
            mounted.request_class, mounted.response_class, mounted.log = (app.request_class, app.response_class,
                                                                          app.log)

    def path(self, rung):
        return {"floor": "/_floor", "tools": "/_bench/bare", "session": "/_bench/signed"}.get(
            rung, f"/_rung_{rung}/bare")

    def request(self, rung):
        """Serve one GET of ``rung``'s page through CherryPy's WSGI application, to its close."""
        status = []
        body = cherrypy.tree(_environ(self.path(rung), self.cookie), lambda s, h, e=None: status.append(s))
        try:
            for _chunk in body:
                pass
        finally:
            body.close()  # on_end_request: the log line, the metrics
        if not status or not status[0].startswith("200"):
            raise RuntimeError(f"{self.path(rung)} answered {status}")


def measure(budget, rounds=15, per_round=200):
    """µs of this thread's CPU per request for every rung (the least round), and each part's cost."""
    for rung in RUNGS:  # warm-up: imports, caches, the first record read
        for _ in range(50):
            budget.request(rung)
    times = {rung: [] for rung in RUNGS}
    for r in range(rounds):
        order = RUNGS[r % len(RUNGS):] + RUNGS[:r % len(RUNGS)]
        for rung in order:
            # The cyclic collector runs between rounds, not in one: whichever rung it fell in
            # would carry every rung's garbage.
            gc.collect()
            gc.disable()
            try:
                t0 = time.thread_time()
                for _ in range(per_round):
                    budget.request(rung)
                times[rung].append((time.thread_time() - t0) / per_round * 1e6)
            finally:
                gc.enable()
    # The least of the rounds: other processes' load only ever adds to a round (cache, cores).
    per_rung = {rung: round(min(v), 1) for rung, v in times.items()}
    parts = {"floor": per_rung["floor"]}
    for lower, rung in zip(RUNGS, RUNGS[1:]):
        parts[rung] = round(per_rung[rung] - per_rung[lower], 1)
    return {"per_rung_us": per_rung, "parts_us": parts}


def profile_text(budget, rung, n=3000, top=40):
    """cProfile of ``n`` requests of one rung, by own time and by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        budget.request(rung)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--profile", choices=RUNGS, help="print a cProfile of this rung instead")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for python -m bench)")
    args = parser.parse_args(argv)
    budget = Budget()
    if args.profile:
        print(profile_text(budget, args.profile))
        return 0
    result = measure(budget, args.rounds, args.per_round)
    if args.json:
        print(json.dumps(result))
        return 0
    print("part      µs/request (this thread's CPU, in process; rung less the rung below)")
    for rung in RUNGS:
        print(f"{rung:<9} {result['parts_us'][rung]:8.1f}   (rung {result['per_rung_us'][rung]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
