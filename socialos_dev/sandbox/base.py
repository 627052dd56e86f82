"""What both sandboxes share: a threaded HTTP/1.1 server with keep-alive,
JSON helpers, and sandbox-only control routes for tests and benchmarks.

Control routes (sandbox only, never part of a real upstream):

    GET    /_sandbox/stats    {"connections": N, "requests": N}: TCP connections accepted so far
    POST   /_sandbox/faults   {"count": N, "path_prefix": "/api/", "delay": s, "status": 503,
                               "body": "raw text", "close": false}
                              the next N requests under path_prefix are delayed, answered
                              with status/body instead, or have their connection closed
    DELETE /_sandbox/faults   clear all faults; also resets nothing else
"""

import base64
import binascii
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["JSONHandler", "SandboxServer"]

MAX_BODY = 1024 * 1024


class SandboxServer(ThreadingHTTPServer):
    """A threaded server that counts the connections it accepts."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.faults = []

    def process_request(self, request, client_address):
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def take_fault(self, path):
        """The fault armed for this path, if any (consumed)."""
        with self.lock:
            self.requests += 1
            for fault in self.faults:
                if path.startswith(fault.get("path_prefix", "/")) and fault["count"] > 0:
                    fault["count"] -= 1
                    return fault
        return None


class JSONHandler(BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1 keep-alive, JSON answers, Basic auth parsing.

    Subclasses define ``route(method)`` and call the helpers below.
    """

    protocol_version = "HTTP/1.1"
    server_version = "Sandbox/1.0"
    # Headers and body go out in two writes: without this, each answer on a
    # kept-alive connection waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # quiet: tests read answers, not logs
        pass

    # -- request helpers -------------------------------------------------
    @property
    def url(self):
        return urlsplit(self.path)

    @property
    def query(self):
        return {k: v[-1] for k, v in parse_qs(self.url.query, keep_blank_values=True).items()}

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def form(self, body):
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

    def basic_auth(self):
        """(user, password) from the Authorization header, or (None, None)."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, None
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return user, password

    def send_json(self, status, payload, headers=None):
        self.send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def send_raw(self, status, body, content_type="text/plain", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has no body, or the next answer is garbled
            self.wfile.write(body)

    # -- dispatch --------------------------------------------------------
    def _dispatch(self):
        method = self.command
        try:
            if self.url.path.startswith("/_sandbox/stats") or self.url.path == "/_sandbox/faults":
                return self._control(method)
            fault = self.server.take_fault(self.url.path)
            if fault:
                if fault.get("delay"):
                    time.sleep(float(fault["delay"]))
                if fault.get("close"):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault.get("status"):
                    self.read_body()
                    body = fault.get("body")
                    if body is None:
                        return self.send_json(fault["status"], {"error": "injected fault"})
                    return self.send_raw(fault["status"], body.encode(), "text/html")
            self.route(method)
        except ValueError as exc:
            self.send_json(400, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _control(self, method):
        srv = self.server
        if method == "GET":
            with srv.lock:
                return self.send_json(200, {"connections": srv.connections, "requests": srv.requests})
        if method == "POST":
            fault = json.loads(self.read_body() or b"{}")
            fault.setdefault("count", 1)
            with srv.lock:
                srv.faults.append(fault)
            return self.send_json(200, {"armed": fault})
        if method == "DELETE":
            with srv.lock:
                srv.faults.clear()
            return self.send_json(200, {"cleared": True})
        return self.send_json(405, {"error": "method not allowed"})

    def route(self, method):  # pragma: no cover - subclasses answer
        self.send_json(404, {"error": "not found"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_SEARCH = do_HEAD = _dispatch
