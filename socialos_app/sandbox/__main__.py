"""``python -m socialos_app.sandbox``: the Social OS API and Pusher sandboxes, standalone.

    python -m socialos_app.sandbox [--host H] [--api-port P] [--pusher-port Q] [--channel NAME]

Defaults come from the environment (SANDBOX_API_PORT, SANDBOX_PUSHER_PORT,
PUSHER_CHANNEL), else 127.0.0.1, 8081, 8082 and presence-lobby. The Pusher
app is PUSHER_APP_ID/PUSHER_KEY/PUSHER_SECRET when all three are set, else
demo/demo-key/demo-secret. Runs until SIGINT or SIGTERM.
"""

import argparse
import os
import sys

from socialos_app.sandbox import serve

DEMO_PUSHER = ("demo", "demo-key", "demo-secret")


def _port(text):
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def main(argv=None):
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m socialos_app.sandbox",
                                     description="Run the Social OS API and Pusher sandboxes.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-port", type=_port, default=env.get("SANDBOX_API_PORT") or "8081")
    parser.add_argument("--pusher-port", type=_port, default=env.get("SANDBOX_PUSHER_PORT") or "8082")
    parser.add_argument("--channel", default=env.get("PUSHER_CHANNEL") or "presence-lobby")
    args = parser.parse_args(argv)

    app = tuple(env.get(name, "") for name in ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"))
    if not all(app):
        app = DEMO_PUSHER
    try:
        serve(args.host, args.api_port, args.pusher_port, args.channel, *app)
    except OSError as exc:  # typically: the port is taken
        print(f"sandbox: cannot listen on {args.host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
