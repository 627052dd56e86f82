"""The entry point: ``python app.py`` and the ``socialos-app`` console script.

    python app.py [--host HOST] [--port PORT] [--check-config [--connect]]

Settings: flags > environment (or NAME_FILE) > conf/server.conf > defaults.
With no MONGODB_URI the app runs in embedded mode (local database and
sandboxes). A start that can't happen is one line on stderr and one of these
exit statuses, never a traceback:

    0  stopped cleanly (SIGTERM, Ctrl-C), or --check-config found nothing wrong
    1  anything else that stopped the start (a bug: the line says what and where)
    2  a bad or missing setting (every one is listed), or a bad command line
    3  a port the app needs is taken (named with its setting), or HOST isn't an address here
    4  embedded mode's database or sandboxes did not start (see DATA_DIR/embedded.log)
    5  the session database can't be used as configured (a wrong password, replica-set
       name or privilege: at once), or did not answer within DATABASE_WAIT seconds

Stopping (SIGTERM or Ctrl-C): ``/readyz`` answers 503 at once, every answer
carries ``Connection: close``, and the app keeps serving for SHUTDOWN_DRAIN
seconds; then it takes the connections already queued on its socket, stops
listening, finishes what it holds and exits 0. A second signal cuts the
drain short.
"""

import argparse
import errno
import logging
import select
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import cherrypy
from cherrypy.lib import reprconf

from socialos_app import resources
from socialos_app import settings as settings_mod
from socialos_app.db.checks import DatabaseCheckFailed, check_database, unauthorized
from socialos_app.ops import logs
from socialos_app.ops.health import DRAIN_CHANNEL
from socialos_app.storage import StoreUnavailable

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_SETTINGS", "EXIT_PORT_TAKEN", "EXIT_EMBEDDED_FAILED",
           "EXIT_DATABASE", "DATABASE_WAIT"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_SETTINGS, EXIT_PORT_TAKEN, EXIT_EMBEDDED_FAILED, EXIT_DATABASE = 0, 1, 2, 3, 4, 5
PROG = "socialos-app"
# How long a start waits for a database that does not answer (yet) before exiting 5,
# one line per attempt; the restart policy then starts it again.
DATABASE_WAIT = 30.0
DATABASE_RETRY_EVERY = 1.0
log = logging.getLogger("socialos")

Settings = settings_mod.Settings
Conf = dict[str, Any]


def conf_dir() -> Path:
    """``conf/`` of a source checkout, else the copy the wheel carries inside the package."""
    return resources.root() / "conf"


def port_taken(host: str, port: int) -> str | None:
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


def ports_in_use(settings: Settings) -> list[str]:
    """One line per port the app needs that it can't listen on, naming its setting."""
    wanted = [("PORT", settings.host, settings.port)]
    if settings.embedded:
        wanted += [("SANDBOX_API_PORT", "127.0.0.1", settings.sandbox_api_port),
                   ("SANDBOX_PUSHER_PORT", "127.0.0.1", settings.sandbox_pusher_port),
                   ("EMBEDDED_DB_PORT", "127.0.0.1", settings.embedded_db_port)]
    seen: dict[int, str] = {}
    problems: list[str] = []
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Social OS sign-in app")
    parser.add_argument("--host", help="address to listen on (overrides HOST)")
    parser.add_argument("--port", help="port to listen on (overrides PORT)")
    parser.add_argument("--check-config", action="store_true",
                        help="print the effective settings (secrets masked), where each came from, "
                             "and every bad one; write nothing; exit 2 when one is bad")
    parser.add_argument("--connect", action="store_true",
                        help="with --check-config: also connect to the session database and check it as "
                             "a start does (credentials, replica set, change streams); exit 5 when it fails")
    args = parser.parse_args(argv)
    if args.connect and not args.check_config:
        parser.error("--connect goes with --check-config")
    return args


def fail(message: str, status: int) -> int:
    """The one line a failed start prints."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return status


def uri_variable(s: Settings) -> str:
    """The variable the operator set the database URI with: MONGODB_URI or MONGODB_URI_FILE."""
    return "MONGODB_URI_FILE" if s.origins.get("mongodb_uri", ("", ""))[1] == "file" else "MONGODB_URI"


def check_config(args: argparse.Namespace, conf: Conf) -> int:
    """``--check-config``: the settings table on stdout, each bad setting on its own stderr line."""
    # A misspelt name is read by nobody: said first, as it may be why a setting below is missing.
    for warning in settings_mod.unknown_variables():
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
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
    if args.connect:
        return check_connection(s)
    return EXIT_OK


def check_connection(s: Settings) -> int:
    """``--check-config --connect``: the start's database checks, once, writing nothing."""
    if s.embedded:
        print("database: embedded mode (started with the app; nothing to connect to now)", flush=True)
        return EXIT_OK
    try:
        found = check_database(s.database_uri, s.db_timeout_ms)
    except DatabaseCheckFailed as exc:
        return fail(f"{uri_variable(s)}: {exc.cause}", EXIT_DATABASE)
    print(f"database: ok: {found} ({settings_mod.mask_uri(s.database_uri)})", flush=True)
    return EXIT_OK


def wait_for_database(s: Settings, services: Any, wait: float = DATABASE_WAIT) -> str:
    """The start's database checks (then the app's indexes), retried while nothing answers.

    Returns what was found; raises :class:`DatabaseCheckFailed` at once for a
    mistake waiting can't fix, or when ``wait`` seconds have passed.
    """
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        attempt += 1
        try:
            found = check_database(s.database_uri, s.db_timeout_ms)
            try:
                services.engine.setup()
                services.throttle.setup()
            except StoreUnavailable as exc:
                refused = unauthorized(exc, s.database_uri, "create the app's indexes")
                if refused is not None:
                    raise refused from None
                raise DatabaseCheckFailed(f"could not create the app's indexes ({exc})", retry=True) from None
            return found
        except DatabaseCheckFailed as exc:
            left = deadline - time.monotonic()
            if not exc.retry:
                raise
            if left <= 0:
                raise DatabaseCheckFailed(f"{exc.cause} (still, after {attempt} attempts in {wait:.0f} s)",
                                          retry=True) from None
            log.warning("database not ready (%s): %s; attempt %d, trying again for up to %.0f s",
                        uri_variable(s), exc.cause, attempt, left)
            time.sleep(min(DATABASE_RETRY_EVERY, max(left, 0.0)))


class _Shutdown:
    """SIGTERM/SIGINT: drain, then stop; act on the first signal only, and not before the server is up.

    The first signal publishes ``drain`` (``/readyz`` answers 503, answers
    close their connections) and starts a thread that stops the engine after
    ``drain`` seconds; a second signal cuts the drain short and is otherwise
    ignored, so it never races the first shutdown. One that arrives while the
    HTTP server is still starting is kept until it has started (its first
    answers may already have been seen), then acted on the same way.
    """

    def __init__(self, engine: Any, drain: float) -> None:
        self.engine = engine
        self.drain = drain
        self.ready = False
        self.asked = False
        self.lock = threading.Lock()
        self.cut_short = threading.Event()
        self.signalled_at: float | None = None
        self.drained = 0.0
        self.stopped_at: float | None = None

    def signal(self) -> None:
        with self.lock:
            first, self.asked = not self.asked, True
            go = first and self.ready
        if not first:
            self.cut_short.set()
        elif go:
            self._begin()

    def started(self) -> bool:
        """The server is up: True when a signal is already waiting (and now acted on)."""
        with self.lock:
            self.ready = True
            waiting = self.asked
        if waiting:
            self._begin()
        return waiting

    def _begin(self) -> None:
        self.signalled_at = time.monotonic()
        self.engine.publish(DRAIN_CHANNEL)
        if self.drain > 0:
            log.info("stopping: not ready from now on (/readyz 503); serving %.1f s more (SHUTDOWN_DRAIN)",
                     self.drain)
        # Not a daemon: the engine's block() waits for it, so the process can't end mid-stop.
        threading.Thread(target=self._drain_then_stop, name="drain").start()

    def _drain_then_stop(self) -> None:
        self.cut_short.wait(self.drain)
        assert self.signalled_at is not None
        self.drained = time.monotonic() - self.signalled_at
        self.engine.exit()


def close_after_answer(server: Any) -> None:
    """From now on every answer says ``Connection: close``: no peer (nginx) keeps a connection
    to this instance for a next request, so none is left to be cut when it stops listening."""
    httpserver = getattr(server, "httpserver", None)
    if httpserver is not None:
        httpserver.keep_alive_conn_limit = 0


def _self_connect(bound: tuple[Any, ...]) -> None:
    """Wake the server's selector (it waits up to half a second otherwise) by connecting to it."""
    host, port = bound[0], bound[1]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        pass


def stop_accepting(server: Any) -> int:
    """Stop listening without resetting connections the kernel has already queued; how many were taken.

    cheroot's own ``stop()`` halts its selector and then closes the listening
    socket: connections the kernel completed in between (a proxy's request
    already sent on them) are reset, and a proxy must not replay a POST it has
    sent. Here the accept loop is halted, everything queued is accepted and
    handed to the worker threads, readable kept-alive connections too, and
    only then is the socket closed; ``server.stop()`` (next on the bus) then
    finishes what the threads hold. What is left is the microseconds between
    the last ``accept()`` and ``close()``. Uses cheroot internals, checked
    for first: without them, cheroot's plain stop.
    """
    httpserver: Any = getattr(server, "httpserver", None)
    conns: Any = getattr(httpserver, "_connections", None)
    sock = getattr(httpserver, "socket", None)
    if not getattr(server, "running", False) or not getattr(httpserver, "ready", False) or conns is None \
            or sock is None or not all(hasattr(conns, name) for name in ("_stop_requested", "_serving",
                                                                          "_selector", "_from_server_socket")):
        return 0
    httpserver.keep_alive_conn_limit = 0  # whatever is answered from now on closes its connection
    # The selector loop ends after its current select() (a connection wakes it), and with the
    # server not ready, cheroot's serve() does not start it again.
    httpserver.ready = False
    conns._stop_requested = True
    _self_connect(sock.getsockname())
    deadline = time.monotonic() + 2.0
    while conns._serving and time.monotonic() < deadline:
        time.sleep(0.002)
    taken = 0
    try:
        conns._selector.unregister(sock.fileno())
    except (KeyError, ValueError, OSError):
        pass
    sock.setblocking(False)
    for _ in range(4096):  # bounded: the backlog is socket_queue_size deep
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            break
        conn = conns._from_server_socket(sock)
        if conn is not None:
            httpserver.process_conn(conn)
            taken += 1
    sock.close()
    httpserver.socket = None
    # Kept-alive connections whose next request has arrived: served, not closed under it.
    for fd, conn in list(conns._selector.select(timeout=0)):
        if conn is not httpserver:
            conns._selector.unregister(fd)
            httpserver.process_conn(conn)
            taken += 1
    # cheroot's stop() (next) does the rest only for a server it thinks is running.
    httpserver.ready = True
    return taken


def _engine_log(msg: str, level: int = logging.INFO) -> None:
    """CherryPy's engine messages: its start/stop chatter at DEBUG, warnings and errors as they are."""
    cherrypy.log.error(msg, "ENGINE", severity=level if level >= logging.WARNING else logging.DEBUG)


def quiet_engine(engine: Any) -> None:
    """Route the engine's bus log through :func:`_engine_log` instead of CherryPy's own."""
    for listener in list(engine.listeners.get("log", ())):
        if getattr(listener, "__module__", "") == "cherrypy":  # cherrypy/__init__.py's _buslog
            engine.unsubscribe("log", listener)
    engine.subscribe("log", _engine_log)


def banner(s: Settings, found: str | None) -> None:
    """What a person reads as "ready": printed only once the server and every child answer."""
    url = f"http://{s.host}:{s.port}"
    if not s.embedded:
        log.info("%s listening on %s; database %s (%s)", PROG, url, settings_mod.mask_uri(s.database_uri),
                 found, extra={"fields": {"url": url, "embedded": False}})
        return
    lines = [f"{PROG} listening on {url}",
             "  embedded mode: sign in as demo / demo (admin / admin is an admin)",
             f"  Social OS sandbox: {s.api_url} (admin API {s.admin_url})",
             f"  Pusher sandbox:    {s.pusher_base_url} (app {s.pusher_app_id})",
             f"  data: {Path(s.data_dir).resolve()}"]
    if s.log_format == "json":  # stdout stays one JSON object per line
        log.info(" | ".join(line.strip() for line in lines), extra={"fields": {"url": url, "embedded": True}})
    else:
        print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except Exception:  # noqa: BLE001 - a bug at start-up: one line saying what and where, not a traceback
        return fail(f"could not start: {logs.fold_traceback(traceback.format_exc())}", EXIT_FAILED)


def _main(argv: list[str] | None) -> int:
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
    engine = cherrypy.engine
    quiet_engine(engine)
    cherrypy.config.update(str(server_conf))
    cherrypy.config.update({
        "server.socket_host": s.host,
        "server.socket_port": s.port,
        "server.thread_pool": s.thread_pool,
        "server.max_request_body_size": s.max_body_bytes,
    })
    from socialos_app.web import app as web_app
    mount: Any = web_app.mount  # typed or not, the assembly's own business
    services = mount(s)

    found = None
    if s.embedded:
        try:
            from socialos_dev.embedded import EmbeddedFailed, EmbeddedPlugin
        except ImportError:  # the production image leaves embedded mode out
            return fail("embedded mode is not installed here: set MONGODB_URI (and the other settings "
                        "--check-config lists)", EXIT_BAD_SETTINGS)
        plugin: Any = EmbeddedPlugin  # socialos_dev is outside the typed package
        embedded = plugin(engine, s)
        embedded.subscribe()
        try:
            embedded.launch()
        except EmbeddedFailed as exc:
            return fail(f"embedded mode did not start: {exc}", EXIT_EMBEDDED_FAILED)
    else:
        # First-deploy mistakes stop here, in words, instead of a 503 forever.
        try:
            found = wait_for_database(s, services)
        except DatabaseCheckFailed as exc:
            return fail(f"{uri_variable(s)}: {exc.cause}", EXIT_DATABASE)

    # The HTTP server starts after every other plugin, outside the bus's start:
    # a failed start listener there means a logged traceback and os._exit(70).
    server = cherrypy.server
    server.unsubscribe()
    # The server stops first (in-flight requests finish with every service still up).
    engine.subscribe("stop", lambda: stop_accepting(server), priority=24)
    engine.subscribe("stop", server.stop)
    engine.subscribe(DRAIN_CHANNEL, lambda: close_after_answer(server))
    # Embedded mode has no proxy in front to drain for: Ctrl-C stops at once unless asked otherwise.
    drain = 0.0 if s.embedded and s.origins.get("shutdown_drain", ("", "default"))[1] == "default" \
        else s.shutdown_drain
    shutdown = _Shutdown(engine, drain)
    engine.signal_handler.handlers = {"SIGTERM": shutdown.signal, "SIGINT": shutdown.signal}
    engine.signal_handler.subscribe()
    engine.start()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        engine.exit()
        return fail(f"could not listen on {s.host}:{s.port} (HOST, PORT): {exc}", EXIT_PORT_TAKEN)
    if not shutdown.started():
        banner(s, found)
    engine.block()
    if shutdown.signalled_at is not None:
        log.info("stopped: drained %.1f s, then finished in %.2f s; exit 0", shutdown.drained,
                 time.monotonic() - shutdown.signalled_at - shutdown.drained)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
