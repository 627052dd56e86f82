"""The entry point: ``python app.py`` and the ``socialos-app`` console script.

    python app.py [--host HOST] [--port PORT] [--check-config]

Settings: flags > environment (or NAME_FILE) > conf/server.conf > defaults.
With no MONGODB_URI the app runs in embedded mode (local database and
sandboxes). A start that can't happen is one line on stderr and one of these
exit statuses, never a traceback:

    0  stopped cleanly (SIGTERM, Ctrl-C), or --check-config found nothing wrong
    1  anything else that stopped the start (a bug: the line says what and where)
    2  a bad or missing setting (every one is listed), or a bad command line
    3  a port the app needs is taken (named with its setting), or HOST isn't an address here
    4  embedded mode's database or sandboxes did not start (see DATA_DIR/embedded.log)
"""

import argparse
import errno
import logging
import socket
import sys
import threading
import traceback
from pathlib import Path

import cherrypy
from cherrypy.lib import reprconf

from socialos_app import resources
from socialos_app import settings as settings_mod
from socialos_app.ops import logs

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_SETTINGS", "EXIT_PORT_TAKEN", "EXIT_EMBEDDED_FAILED"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_SETTINGS, EXIT_PORT_TAKEN, EXIT_EMBEDDED_FAILED = 0, 1, 2, 3, 4
PROG = "socialos-app"
log = logging.getLogger("socialos")


def conf_dir():
    """``conf/`` of a source checkout, else the copy the wheel carries inside the package."""
    return resources.root() / "conf"


def port_taken(host, port):
    """Why ``host:port`` can't be listened on ("already in use", ...), or None when it can.

    Binds as the servers will (SO_REUSEADDR), so a port in TIME_WAIT is free
    and one with a listener, on any address, is not.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            return exc.strerror or str(exc)
    return None


def ports_in_use(settings):
    """One line per port the app needs that it can't listen on, naming its setting."""
    wanted = [("PORT", settings.host, settings.port)]
    if settings.embedded:
        wanted += [("SANDBOX_API_PORT", "127.0.0.1", settings.sandbox_api_port),
                   ("SANDBOX_PUSHER_PORT", "127.0.0.1", settings.sandbox_pusher_port),
                   ("EMBEDDED_DB_PORT", "127.0.0.1", settings.embedded_db_port)]
    seen, problems = {}, []
    for name, host, port in wanted:
        if not port:
            continue  # 0: the system picks one
        if port in seen:
            problems.append(f"{name}={port} is the same port as {seen[port]}")
            continue
        seen[port] = name
        why = port_taken(host, port)
        if why:
            problems.append(f"{name}={port} on {host or '0.0.0.0'} is not available: {why}")
    return problems


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
    lines = settings_mod.report(s)
    # A taken port is not a bad setting (it may be free by the time the app starts): said, not failed.
    lines += [f"note: {problem}" for problem in ports_in_use(s)]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `--check-config | head`
        sys.stdout = None
    return EXIT_OK


class _Shutdown:
    """SIGTERM/SIGINT: act on the first signal only, and not before the server is up.

    A second signal (a process group signalled twice, an impatient Ctrl-C)
    must not race the first shutdown; one that arrives while the HTTP server
    is still starting is kept until it has started, so stopping it stops it.
    """

    def __init__(self, engine):
        self.engine = engine
        self.ready = False
        self.asked = False
        self.lock = threading.Lock()

    def signal(self):
        with self.lock:
            first, self.asked = not self.asked, True
            go = first and self.ready
        if go:
            self.engine.exit()

    def started(self):
        """The server is up: True when a signal is already waiting (and now acted on)."""
        with self.lock:
            self.ready = True
            waiting = self.asked
        if waiting:
            self.engine.exit()
        return waiting


def banner(s):
    """What a person reads as "ready": printed only once the server and every child answer."""
    lines = [f"{PROG} listening on http://{s.host}:{s.port}"]
    if s.embedded:
        lines += ["  embedded mode: sign in as demo / demo (admin / admin is an admin)",
                  f"  Social OS sandbox: {s.api_url} (admin API {s.admin_url})",
                  f"  Pusher sandbox:    {s.pusher_base_url} (app {s.pusher_app_id})",
                  f"  data: {Path(s.data_dir).resolve()}"]
    if s.log_format == "json":  # stdout stays one JSON object per line
        log.info(" | ".join(line.strip() for line in lines),
                 extra={"fields": {"url": f"http://{s.host}:{s.port}", "embedded": s.embedded}})
    else:
        print("\n".join(lines), flush=True)


def main(argv=None):
    try:
        return _main(argv)
    except Exception:  # noqa: BLE001 - a bug at start-up: one line saying what and where, not a traceback
        return fail(f"could not start: {logs.fold_traceback(traceback.format_exc())}", EXIT_FAILED)


def _main(argv):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    conf_files = conf_dir()
    server_conf = conf_files / "server.conf"
    conf = reprconf.Parser().dict_from_file(str(server_conf)).get("global", {})
    if args.check_config:
        return check_config(args, conf)
    flags = {"host": args.host, "port": args.port}
    try:
        s = settings_mod.load(conf=conf, flags=flags, make_key=False)
    except settings_mod.SettingsError as exc:
        return fail(f"bad settings (--check-config lists them): {exc}", EXIT_BAD_SETTINGS)

    # Every port first: nothing starts, and nothing is written, unless all of them are ours to take.
    taken = ports_in_use(s)
    if taken:
        return fail("; ".join(taken), EXIT_PORT_TAKEN)
    if s.embedded and not s.secure_key:
        s = settings_mod.load(conf=conf, flags=flags)  # now embedded mode makes its key under DATA_DIR

    logs.setup(s.log_level, s.log_format, s)
    cherrypy.config.update(str(server_conf))
    cherrypy.config.update({
        "server.socket_host": s.host,
        "server.socket_port": s.port,
        "server.thread_pool": s.thread_pool,
        "server.max_request_body_size": s.max_body_bytes,
    })
    from socialos_app.web.app import mount
    mount(s)

    engine = cherrypy.engine
    embedded = None
    if s.embedded:
        try:
            from socialos_dev.embedded import EmbeddedFailed, EmbeddedPlugin
        except ImportError:  # the production image leaves embedded mode out
            return fail("embedded mode is not installed here: set MONGODB_URI (and the other settings "
                        "--check-config lists)", EXIT_BAD_SETTINGS)
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
    shutdown = _Shutdown(engine)
    engine.signal_handler.handlers = {"SIGTERM": shutdown.signal, "SIGINT": shutdown.signal}
    engine.signal_handler.subscribe()
    engine.subscribe("stop", lambda: log.info("stopping"), priority=10)
    engine.start()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        engine.exit()
        return fail(f"could not listen on {s.host}:{s.port} (HOST, PORT): {exc}", EXIT_PORT_TAKEN)
    if not shutdown.started():
        banner(s)
    engine.block()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
