"""socialos-app entry point.

    python app.py [--host HOST] [--port PORT] [--check-config]

Settings: flags > environment > conf/server.conf > defaults. With no
MONGODB_URI the app runs in embedded mode (local database and sandboxes).
"""

import argparse
import logging
import sys
from pathlib import Path

import cherrypy
from cherrypy.lib import reprconf

from socialos_app import logs, settings as settings_mod
from socialos_app.web import mount

HERE = Path(__file__).resolve().parent
SERVER_CONF = HERE / "conf" / "server.conf"
APP_CONF = HERE / "conf" / "app.conf"
log = logging.getLogger("socialos")


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Social OS sign-in app")
    parser.add_argument("--host", help="address to listen on (overrides HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides PORT)")
    parser.add_argument("--check-config", action="store_true",
                        help="print the effective settings (secrets masked) and exit")
    return parser.parse_args(argv)


def load_settings(args):
    conf = reprconf.Parser().dict_from_file(str(SERVER_CONF)).get("global", {})
    try:
        return settings_mod.load(conf=conf, flags={"host": args.host, "port": args.port})
    except settings_mod.SettingsError as exc:
        print(f"socialos-app: bad setting: {exc}", file=sys.stderr)
        sys.exit(2)


def banner(s):
    def show():
        print(f"socialos-app listening on http://{s.host}:{s.port}", flush=True)
        if s.embedded:
            print("  embedded mode: sign in as demo / demo (admin / admin is an admin)", flush=True)
            print(f"  Social OS sandbox: {s.api_url} (admin API {s.admin_url})", flush=True)
            print(f"  Pusher sandbox:    {s.pusher_base_url} (app {s.pusher_app_id})", flush=True)
            print(f"  data: {Path(s.data_dir).resolve()}", flush=True)
    return show


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    s = load_settings(args)
    if args.check_config:
        for name, value in s.masked().items():
            print(f"{name} = {value}")
        return 0

    logs.setup(s.log_level)
    cherrypy.config.update(str(SERVER_CONF))
    cherrypy.config.update({
        "server.socket_host": s.host,
        "server.socket_port": s.port,
        "server.thread_pool": s.thread_pool,
        "server.max_request_body_size": s.max_body_bytes,
    })
    if s.embedded:
        from socialos_app.embedded import EmbeddedPlugin
        EmbeddedPlugin(cherrypy.engine, s).subscribe()
    mount(s, APP_CONF)

    engine = cherrypy.engine
    engine.signal_handler.handlers = {"SIGTERM": engine.exit, "SIGINT": engine.exit}
    engine.signal_handler.subscribe()
    engine.subscribe("start", banner(s), priority=90)
    engine.subscribe("stop", lambda: log.info("stopping"), priority=10)
    try:
        engine.start()
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        print(f"socialos-app: could not start: {exc}", file=sys.stderr)
        engine.exit()
        return 1
    engine.block()
    return 0


if __name__ == "__main__":
    sys.exit(main())
