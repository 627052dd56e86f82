"""The sandboxes over HTTPS, with a certificate made for the run.

``Certificates(tmpdir)`` makes a private CA and a server certificate for
127.0.0.1/localhost with trustme and writes them as files; the clients
verify the server through ``ca_path`` (a CA bundle, as a private CA in
production would be configured), never with verification off.

``python -m bench.tls --cert C --key K --api-port P --pusher-port Q`` runs
the Social OS sandbox and the Pusher sandbox (the same code as
``python -m socialos_dev.sandbox``) with their listening sockets wrapped in
TLS, until SIGTERM.
"""

import argparse
import signal
import ssl
import sys
import threading
from pathlib import Path

from .procs import PUSHER_APP, PYTHON, Proc, free_port, port_open, wait_for

__all__ = ["Certificates", "TLSSandbox"]


class Certificates:
    """A throwaway CA and a server certificate for the loopback address."""

    def __init__(self, directory):
        import trustme

        directory = Path(directory)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = directory / "bench-ca.pem"
        self.cert_path = directory / "bench-server.pem"
        self.key_path = directory / "bench-server.key"
        ca.cert_pem.write_to_path(str(self.ca_path))
        server.cert_chain_pems[0].write_to_path(str(self.cert_path))
        for extra in server.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert_path), append=True)
        server.private_key_pem.write_to_path(str(self.key_path))


class TLSSandbox:
    """``python -m bench.tls`` as a child process on two ephemeral ports."""

    def __init__(self, certs, logdir):
        self.api_port, self.pusher_port = free_port(), free_port()
        self.ca_path = str(certs.ca_path)
        self.proc = Proc("tls-sandbox", [PYTHON, "-m", "bench.tls", "--cert", str(certs.cert_path),
                                         "--key", str(certs.key_path), "--api-port", str(self.api_port),
                                         "--pusher-port", str(self.pusher_port)], logdir=logdir)

    @property
    def api_base(self):
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def pusher_base(self):
        return f"https://127.0.0.1:{self.pusher_port}"

    def start(self):
        self.proc.start()
        wait_for(lambda: self.proc.alive() and port_open(self.api_port) and port_open(self.pusher_port),
                 30, "TLS sandbox")
        return self

    def stop(self):
        self.proc.stop()


def main(argv=None):
    from socialos_dev.sandbox import pusher, socialos

    parser = argparse.ArgumentParser(prog="python -m bench.tls")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--pusher-port", type=int, required=True)
    args = parser.parse_args(argv)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    servers = [socialos.make_server("127.0.0.1", args.api_port),
               pusher.make_server("127.0.0.1", args.pusher_port, PUSHER_APP["PUSHER_APP_ID"],
                                  PUSHER_APP["PUSHER_KEY"], PUSHER_APP["PUSHER_SECRET"])]
    for server in servers:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"TLS sandboxes on https://127.0.0.1:{args.api_port} and :{args.pusher_port}", flush=True)
    while not stop.wait(0.5):
        pass
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
