"""``python -m socialos_dev.sandbox``: the Social OS API and Pusher sandboxes, standalone.

    python -m socialos_dev.sandbox [--host H] [--api-port P] [--pusher-port Q] [--channel NAME]
                                   [--webhook-url URL]

Defaults come from the environment (SANDBOX_API_PORT, SANDBOX_PUSHER_PORT,
PUSHER_CHANNEL, SANDBOX_WEBHOOK_URL), else 127.0.0.1 and the app's own
defaults (``settings.Settings``: 8081, 8082, presence-lobby), and no webhooks. The Pusher app is
PUSHER_APP_ID/PUSHER_KEY/PUSHER_SECRET when all three are set, else the
demo app (settings.DEMO_PUSHER: 100001/demo-key/demo-secret). Its
websocket (Pusher's Channels protocol) is on the Pusher port, at
``/app/{key}``. Runs until SIGINT or SIGTERM.
"""

import argparse
import os
import sys
from urllib.parse import urlsplit

from socialos_app.settings import DEMO_PUSHER, Settings
from socialos_dev.sandbox import serve

PUSHER_VARIABLES = ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET")


def _port(text):
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _webhook_url(text):
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text


def main(argv=None):
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m socialos_dev.sandbox",
                                     description="Run the Social OS API and Pusher sandboxes.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-port", type=_port, default=env.get("SANDBOX_API_PORT") or Settings.sandbox_api_port)
    parser.add_argument("--pusher-port", type=_port,
                        default=env.get("SANDBOX_PUSHER_PORT") or Settings.sandbox_pusher_port)
    parser.add_argument("--channel", default=env.get("PUSHER_CHANNEL") or Settings.pusher_channel)
    parser.add_argument("--webhook-url", type=_webhook_url, default=env.get("SANDBOX_WEBHOOK_URL") or None,
                        help="where the Pusher sandbox posts signed webhooks (e.g. the app's /pusher/webhook)")
    args = parser.parse_args(argv)

    app = tuple(env.get(name, "") for name in PUSHER_VARIABLES)
    if not all(app):
        app = tuple(DEMO_PUSHER[name] for name in PUSHER_VARIABLES)
    try:
        serve(args.host, args.api_port, args.pusher_port, args.channel, *app, webhook_url=args.webhook_url)
    except OSError as exc:  # typically: the port is taken
        print(f"sandbox: cannot listen on {args.host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
