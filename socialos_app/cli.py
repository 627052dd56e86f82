"""The entry point: ``python app.py`` and the ``socialos-app`` console script.

    python app.py [--host HOST] [--port PORT] [--check-config]

Settings: flags > environment (or NAME_FILE) > conf/server.conf > defaults.
With no MONGODB_URI the app runs in embedded mode (local database and
sandboxes). A start that can't happen is one line on stderr and one of these
exit statuses, never a traceback:

    0  stopped cleanly (SIGTERM, Ctrl-C), or --check-config found nothing wrong
    2  a bad or missing setting (every one is listed), or a bad command line
    3  a port the app needs is taken (named with its setting), or HOST isn't an address here
    4  embedded mode's database or sandboxes did not start (see DATA_DIR/embedded.log)
"""

import argparse
import logging
import sys
import threading
from pathlib import Path

import cherrypy
from cherrypy.lib import reprconf

from . import logs, resources
from . import settings as settings_mod

__all__ = ["main", "EXIT_OK", "EXIT_BAD_SETTINGS", "EXIT_PORT_TAKEN", "EXIT_EMBEDDED_FAILED"]

EXIT_OK, EXIT_BAD_SETTINGS, EXIT_PORT_TAKEN, EXIT_EMBEDDED_FAILED = 0, 2, 3, 4
PROG = "socialos-app"
log = logging.getLogger("socialos")


def conf_dir():
    """``conf/`` of a source checkout, else the copy the wheel carries inside the package."""
    return resources.root() / "conf"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description="Social OS sign-in app")
    parser.add_argument("--host", help="address to listen on (overrides HOST)")
    parser.add_argument("--port", help="port to listen on (overrides PORT)")
    parser.add_argument("--check-config", action="store_true",
                        help="print the effective settings (secrets masked), where each came from, "
                             "and every bad one; write nothing; exit 2 when one is bad")
    return parser.parse_args(argv)


def fail(message, status):
    """The one line a failed start prints."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return status


def check_config(args, conf):
    """``--check-config``: the settings table on stdout, each bad setting on its own stderr line."""
    try:
        s = settings_mod.load(conf=conf, flags={"host": args.host, "port": args.port}, make_key=False)
    except settings_mod.SettingsError as exc:
        for _, message in exc.problems:
            print(f"{PROG}: bad setting: {message}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    from .embedded import ports_in_use
    lines = settings_mod.report(s)
    # A taken port is not a bad setting (it may be free by the time the app starts): said, not failed.
    lines += [f"note: {problem}" for problem in ports_in_use(s)]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `--check-config | head`
        sys.stdout = None
    return EXIT_OK


def _once(stop):
    """A signal handler that acts on the first signal only: a second SIGTERM (a process
    group signalled twice, an impatient Ctrl-C) must not race the first shutdown."""
    lock = threading.Lock()

    def handler():
        if lock.acquire(blocking=False):
            stop()
    return handler


def banner(s):
    print(f"{PROG} listening on http://{s.host}:{s.port}", flush=True)
    if s.embedded:
        print("  embedded mode: sign in as demo / demo (admin / admin is an admin)", flush=True)
        print(f"  Social OS sandbox: {s.api_url} (admin API {s.admin_url})", flush=True)
        print(f"  Pusher sandbox:    {s.pusher_base_url} (app {s.pusher_app_id})", flush=True)
        print(f"  data: {Path(s.data_dir).resolve()}", flush=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    conf_files = conf_dir()
    server_conf = conf_files / "server.conf"
    conf = reprconf.Parser().dict_from_file(str(server_conf)).get("global", {})
    if args.check_config:
        return check_config(args, conf)
    try:
        s = settings_mod.load(conf=conf, flags={"host": args.host, "port": args.port})
    except settings_mod.SettingsError as exc:
        return fail(f"bad settings (--check-config lists them): {exc}", EXIT_BAD_SETTINGS)

    # Every port first: nothing starts unless all of them are ours to take.
    from .embedded import EmbeddedFailed, EmbeddedPlugin, ports_in_use
    taken = ports_in_use(s)
    if taken:
        return fail("; ".join(taken), EXIT_PORT_TAKEN)

    logs.setup(s.log_level, s.log_format, s)
    cherrypy.config.update(str(server_conf))
    cherrypy.config.update({
        "server.socket_host": s.host,
        "server.socket_port": s.port,
        "server.thread_pool": s.thread_pool,
        "server.max_request_body_size": s.max_body_bytes,
    })
    from .web import mount
    mount(s, conf_files / "app.conf")

    engine = cherrypy.engine
    embedded = None
    if s.embedded:
        embedded = EmbeddedPlugin(engine, s)
        embedded.subscribe()
        try:
            embedded.launch()
        except EmbeddedFailed as exc:
            return fail(f"embedded mode did not start: {exc}", EXIT_EMBEDDED_FAILED)

    # The HTTP server starts after every other plugin, outside the bus's start:
    # a failed start listener there means a logged traceback and os._exit(70).
    server = cherrypy.server
    server.unsubscribe()
    engine.subscribe("stop", server.stop)
    engine.signal_handler.handlers = {"SIGTERM": _once(engine.exit), "SIGINT": _once(engine.exit)}
    engine.signal_handler.subscribe()
    engine.subscribe("stop", lambda: log.info("stopping"), priority=10)
    engine.start()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        engine.exit()
        return fail(f"could not listen on {s.host}:{s.port} (HOST, PORT): {exc}", EXIT_PORT_TAKEN)
    banner(s)
    engine.block()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
