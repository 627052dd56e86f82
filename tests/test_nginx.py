"""The front proxy: Debian's nginx running deploy/nginx/default.conf.template
in front of ``python app.py``, over real loopback sockets.

The template is rendered as the official nginx image renders it (envsubst of
NGINX_PORT and APP_UPSTREAM only) and included in a minimal main config, as
conf.d/*.conf is included inside http {} in the image and on Debian. nginx
runs as an ordinary process on an ephemeral port, its files in a temp dir.

What it shows:
- ordinary users are served (every probe 200, p95 under 1 s) while 100
  header tricklers, 16 slow uploads and 100 silent connections hold on, and
  nginx cuts the tricklers and silent ones after client_header_timeout;
- no Content-Length/Transfer-Encoding trick gets a second request to the app
  (what nginx sends the app is recorded byte for byte by a relay and parsed);
- X-Forwarded-* are overwritten, never appended; per-address limits answer
  429 to one address and not to the next; HSTS only over TLS.
"""

import http.client
import json
import os
import re
import secrets
import select
import shutil
import socket
import ssl
import string
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import sign_in
from support import Proc, free_port, port_open, read_answer, started_app, wait_for

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "nginx" / "default.conf.template"
VARIABLES = ("NGINX_PORT", "APP_UPSTREAM")
HEADER_TIMEOUT = 10  # client_header_timeout in the template


# --- nginx as a test process --------------------------------------------------

def nginx_binary():
    """Debian's nginx; installed with apt-get (as root) when missing, else a skip."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("nginx is not installed (as root: apt-get install -y nginx-light)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx-light"]):
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.skip(f"could not install nginx-light: {done.stderr.strip()[-300:]}")
    return shutil.which("nginx") or "/usr/sbin/nginx"


def render(port, upstream):
    """The template as the official image renders it: envsubst of the two names only."""
    text = TEMPLATE.read_text()
    values = {"NGINX_PORT": str(port), "APP_UPSTREAM": upstream}
    if shutil.which("envsubst"):
        shell_format = " ".join(f"${{{name}}}" for name in VARIABLES)
        done = subprocess.run(["envsubst", shell_format], input=text, capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", ""), **values}, check=True)
        return done.stdout
    return string.Template(text).safe_substitute(values)


def enable_tls(conf, port, cert, key):
    """Uncomment the template's `#tls ` lines, as the README tells an operator to."""
    conf = re.sub(r"^(\s*)#tls ", r"\1", conf, flags=re.MULTILINE)
    conf = conf.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    conf = conf.replace("/etc/nginx/tls/fullchain.pem", str(cert))
    return conf.replace("/etc/nginx/tls/privkey.pem", str(key))


MAIN_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/conf.d/*.conf;
}}
"""


class Nginx:
    """nginx in the foreground with the rendered template, on an ephemeral loopback port."""

    def __init__(self, upstream, tls=None):
        self.binary = nginx_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="socialos-nginx-"))
        self.dir.chmod(0o755)  # workers (nobody, when run as root) write temp files under it
        (self.dir / "conf.d").mkdir()
        self.port = free_port()
        conf = render(self.port, upstream)
        # The plain listener on loopback only (the template listens on all addresses).
        conf = conf.replace(f"listen {self.port} default_server;",
                            f"listen 127.0.0.1:{self.port} default_server;")
        # The JSON access log in the test's own directory, not the system's.
        self.access_log = self.dir / "socialos.access.log"
        conf = conf.replace("/var/log/nginx/access.log", str(self.access_log))
        self.tls_port = None
        if tls:
            self.tls_port = free_port()
            conf = enable_tls(conf, self.tls_port, *tls)
        (self.dir / "conf.d" / "socialos.conf").write_text(conf)
        (self.dir / "nginx.conf").write_text(MAIN_CONF.format(dir=self.dir))
        self.proc = None

    def command(self, *extra):
        return [self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                "-e", str(self.dir / "error.log"), *extra]

    def check(self):
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self):
        self.proc = Proc("nginx", self.command("-g", "daemon off;")).start()
        wait_for(lambda: self.proc.alive() and port_open(self.port), 10, "nginx")
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"


class Relay:
    """A byte-for-byte relay between nginx and the app that keeps what nginx sent.

    Not a stand-in for anything: the app behind it answers; the relay only lets
    the test read the exact requests that reached the app."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.streams = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            stream = bytearray()
            with self.lock:
                self.streams.append(stream)
            threading.Thread(target=self._pump, args=(client, upstream, stream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src, dst, record):
        try:
            while data := src.recv(65536):
                if record is not None:
                    with self.lock:
                        record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def requests(self):
        """Every request the app received, parsed with the framing nginx gave it."""
        with self.lock:
            streams = [bytes(s) for s in self.streams]
        found = []
        for stream in streams:
            while stream:
                head, sep, rest = stream.partition(b"\r\n\r\n")
                assert sep, f"nginx sent an incomplete request head: {stream[:300]!r}"
                line, *fields = head.decode("latin-1").split("\r\n")
                headers = [(name.strip().lower(), value.strip())
                           for name, value in (f.split(":", 1) for f in fields)]
                names = [name for name, _ in headers]
                assert "transfer-encoding" not in names, f"nginx passed chunked framing on: {line}"
                lengths = [value for name, value in headers if name == "content-length"]
                assert len(lengths) <= 1, f"nginx passed {len(lengths)} Content-Lengths: {line}"
                size = int(lengths[0]) if lengths else 0
                found.append((line, headers, rest[:size]))
                stream = rest[size:]
        return found

    def close(self):
        self.closed = True
        self.listener.close()


# --- fixtures -------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxied_app(db, sandbox):
    """The app as deployed behind nginx: TRUSTED_PROXY=1."""
    with started_app(db, sandbox, TRUSTED_PROXY="1") as server:
        yield server


@pytest.fixture(scope="module")
def nginx(proxied_app):
    proxy = Nginx(f"127.0.0.1:{proxied_app.port}").start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def relay(proxied_app):
    tap = Relay(proxied_app.port)
    yield tap
    tap.close()


@pytest.fixture(scope="module")
def tapped(relay):
    """A second nginx from the same template, whose upstream is the relay."""
    proxy = Nginx(f"127.0.0.1:{relay.port}").start()
    yield proxy
    proxy.stop()


# --- raw HTTP helpers -------------------------------------------------------------

def connect(port, source="127.0.0.1", timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def exchange(port, raw, timeout=5):
    """Send raw bytes, read until nginx closes: (status codes seen, all bytes)."""
    with connect(port) as s:
        s.sendall(raw)
        data = read_answer(s, timeout)
    return [int(code) for code in re.findall(rb"(?m)^HTTP/1\.[01] (\d{3}) ", data)], data


def header(headers, name):
    return [value for key, value in headers if key == name]


# --- the template ------------------------------------------------------------------

def test_rendered_template_passes_nginx_t():
    proxy = Nginx("127.0.0.1:9")
    try:
        answer = proxy.check()
        assert answer.returncode == 0, answer.stderr
        conf = (proxy.dir / "conf.d" / "socialos.conf").read_text()
        assert "${" not in conf.replace("${%s}", ""), "a variable was left unrendered"
        # nginx's own variables survived the rendering.
        for var in ("$binary_remote_addr", "$remote_addr", "$scheme", "$http_host", "$request_id"):
            assert var in conf, var
    finally:
        proxy.stop()


def test_the_documented_tls_block_works_and_only_tls_gets_hsts(proxied_app, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "fullchain.pem")
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(tmp_path / "fullchain.pem", append=True)
    cert.private_key_pem.write_to_path(tmp_path / "privkey.pem")
    tmp_path.chmod(0o755)
    proxy = Nginx(f"127.0.0.1:{proxied_app.port}", tls=(tmp_path / "fullchain.pem", tmp_path / "privkey.pem"))
    try:
        checked = proxy.check()
        assert checked.returncode == 0, checked.stderr
        proxy.start()
        wait_for(lambda: port_open(proxy.tls_port), 10, "nginx TLS port")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        conn = http.client.HTTPSConnection("localhost", proxy.tls_port, context=context, timeout=10)
        conn.request("GET", "/login")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200
        hsts = answer.getheader("Strict-Transport-Security", "")
        assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31536000, hsts
        assert answer.getheader("Server") == "nginx"
        # Plain http: redirected to https, no HSTS; health routes still answer.
        plain = requests.get(proxy.url("/login?x=1"), allow_redirects=False, timeout=10)
        assert plain.status_code == 308 and plain.headers["Location"] == "https://127.0.0.1/login?x=1"
        assert "Strict-Transport-Security" not in plain.headers
        health = requests.get(proxy.url("/healthz"), timeout=10)
        assert health.status_code == 200 and "Strict-Transport-Security" not in health.headers
    finally:
        proxy.stop()


def test_plain_http_has_no_hsts_and_no_version(nginx):
    answer = requests.get(nginx.url("/login"), timeout=10)
    assert answer.status_code == 200
    assert "Strict-Transport-Security" not in answer.headers
    assert answer.headers["Server"] == "nginx"
    assert requests.get(nginx.url("/metrics"), timeout=10).status_code == 404


# --- what reaches the app -------------------------------------------------------------

def test_forwarded_headers_are_overwritten_not_appended(tapped, relay):
    marker = secrets.token_hex(4)
    raw = (f"GET /login?m={marker} HTTP/1.1\r\nHost: shop.example:8443\r\n"
           "X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-Host: evil.example\r\n"
           "X-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.66\r\nX-Forwarded-Port: 1\r\n"
           "X-Forwarded-Ssl: on\r\nForwarded: for=203.0.113.66;proto=https\r\n"
           "X-Request-ID: req-123.abc\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n").encode()
    codes, _ = exchange(tapped.port, raw)
    assert codes == [200]
    (line, headers, _body), = [r for r in relay.requests() if marker in r[0]]
    assert header(headers, "x-forwarded-for") == ["127.0.0.1"]
    assert header(headers, "x-real-ip") == ["127.0.0.1"]
    assert header(headers, "x-forwarded-proto") == ["http"]
    assert header(headers, "x-forwarded-host") == ["shop.example:8443"]
    assert header(headers, "host") == ["shop.example"]
    # The request id is nginx's own, whatever the client sent: one id for both logs.
    assert re.fullmatch(r"[0-9a-f]{32}", header(headers, "x-request-id")[0])
    for dropped in ("forwarded", "x-forwarded-port", "x-forwarded-ssl", "upgrade"):
        assert not header(headers, dropped), dropped

    # ... and so it is for a request id that is not even a token.
    codes, _ = exchange(tapped.port, (f"GET /login?m={marker}2 HTTP/1.1\r\nHost: x\r\n"
                                      "X-Request-ID: <script>\r\nConnection: close\r\n\r\n").encode())
    assert codes == [200]
    (_line, headers, _body), = [r for r in relay.requests() if marker + "2" in r[0]]
    assert re.fullmatch(r"[0-9a-f]{32}", header(headers, "x-request-id")[0])


SMUGGLED = "GET /smuggled-{m} HTTP/1.1\r\nHost: localhost\r\n\r\n"


def smuggling_cases(marker):
    """(name, raw request, statuses nginx may answer) for each framing trick."""
    hidden = SMUGGLED.format(m=marker)
    te_body = f"0\r\n\r\n{hidden}"
    chunk = f"{len(hidden):x}\r\n{hidden}\r\n0\r\n\r\n"
    start = ("POST /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n")
    return [
        ("CL.TE", f"{start}Content-Length: {len(te_body)}\r\nTransfer-Encoding: chunked\r\n\r\n{te_body}", {400}),
        ("TE.CL", f"{start}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunk}", {400}),
        ("two different Content-Lengths",
         f"{start}Content-Length: 0\r\nContent-Length: {len(hidden)}\r\n\r\n{hidden}", {400}),
        ("two equal Content-Lengths",
         f"{start}Content-Length: {len(hidden)}\r\nContent-Length: {len(hidden)}\r\n\r\n{hidden}", {400}),
        ("TE chunked, identity",
         f"{start}Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n{chunk}", {400, 501}),
        ("TE with a space before the colon",
         f"{start}Transfer-Encoding : chunked\r\nContent-Length: {len(te_body)}\r\n\r\n{te_body}", None),
        ("TE on HTTP/1.0",
         f"{start.replace('HTTP/1.1', 'HTTP/1.0')}Transfer-Encoding: chunked\r\n\r\n{te_body}", {400}),
        ("TE with a tab", f"{start}Transfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n{chunk}", None),
    ]


@pytest.mark.parametrize("case", range(len(smuggling_cases(""))),
                         ids=[name for name, _, _ in smuggling_cases("")])
def test_no_request_is_smuggled_through_nginx(tapped, relay, case):
    marker = secrets.token_hex(6)
    name, raw, expected = smuggling_cases(marker)[case]
    codes, _ = exchange(tapped.port, raw.encode())
    assert codes, f"{name}: no answer from nginx"
    if expected is not None:
        assert codes[0] in expected, f"{name}: nginx answered {codes}"
    # A control request with the same marker, after the attack on the same upstream
    # connections: the relay sees requests, so an absent smuggled one is really absent.
    control, _ = exchange(tapped.port, f"GET /login?control-{marker} HTTP/1.1\r\nHost: localhost\r\n"
                                       "Connection: close\r\n\r\n".encode())
    assert control == [200]
    lines = [line for line, _, _ in relay.requests()]
    assert any(f"control-{marker}" in line for line in lines), "the relay saw no control request"
    assert not [line for line in lines if f"/smuggled-{marker}" in line], f"{name}: smuggled through: {lines}"


# --- per-address limits ---------------------------------------------------------------

def test_request_rate_limit_is_per_address(nginx):
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10, source_address=("127.0.0.9", 0))
    statuses = []
    for _ in range(120):
        conn.request("GET", "/static/style.css")
        answer = conn.getresponse()
        answer.read()
        statuses.append(answer.status)
        if answer.will_close:
            conn.close()
    conn.close()
    assert set(statuses) == {200, 429}, statuses
    assert statuses[:60] == [200] * 60, "the burst must pass untouched"
    other = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10, source_address=("127.0.0.10", 0))
    other.request("GET", "/static/style.css")
    assert other.getresponse().status == 200, "another address is not limited"
    other.close()


def test_connection_limit_is_per_address(nginx):
    """40 unfinished uploads from one address: 32 are held, the rest get 429 at once."""
    sockets = []
    try:
        for _ in range(40):
            s = connect(nginx.port, source="127.0.0.11")
            s.sendall(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nx")
            sockets.append(s)
        # The refusals come at once; the 32 held uploads stay silent.
        refused, waiting = set(), list(sockets)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(refused) < 8:
            ready, _, _ = select.select(waiting, [], [], 0.1)
            for s in ready:
                if s.recv(4096).startswith(b"HTTP/1.1 429"):
                    refused.add(s)
                waiting.remove(s)
        ready, _, _ = select.select(waiting, [], [], 0.3)
        assert not ready, "a held upload was answered before its body arrived"
        refused = len(refused)
        assert refused == 8, refused
        answer = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10, source_address=("127.0.0.12", 0))
        answer.request("GET", "/login")
        assert answer.getresponse().status == 200
        answer.close()
    finally:
        for s in sockets:
            s.close()


# --- slow and silent clients ------------------------------------------------------------

class Attack:
    """Header tricklers, slow uploads and silent connections, each from its own
    loopback address; one thread sends a byte a second on the first two kinds and
    notes when nginx closes any of them."""

    def __init__(self, port, tricklers=100, uploads=16, silent=100):
        self.port = port
        self.socks = {}  # socket -> [kind, connected at, closed at]
        for kind, count, net in (("trickle", tricklers, 1), ("upload", uploads, 2), ("silent", silent, 3)):
            for i in range(count):
                s = connect(port, source=f"127.0.{net}.{i + 1}")
                s.setblocking(False)
                self.socks[s] = [kind, time.monotonic(), None]
                if kind == "trickle":
                    s.send(b"GET /login HTTP/1.1\r\nHost: localhost\r\nX-Trickle: ")
                elif kind == "upload":
                    s.send(b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
                           b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _closed(self, s):
        self.socks[s][2] = time.monotonic()

    def _run(self):
        next_byte = time.monotonic() + 1
        while not self.stop.is_set():
            live = [s for s, (_, _, closed) in self.socks.items() if closed is None]
            readable, _, _ = select.select(live, [], [], 0.1) if live else ([], [], [])
            for s in readable:
                try:
                    if not s.recv(4096):
                        self._closed(s)
                except (ConnectionResetError, BrokenPipeError):
                    self._closed(s)
                except BlockingIOError:
                    pass
            if time.monotonic() >= next_byte:
                next_byte += 1
                for s in live:
                    if self.socks[s][0] != "silent" and self.socks[s][2] is None:
                        try:
                            s.send(b"a")
                        except (ConnectionResetError, BrokenPipeError):
                            self._closed(s)
                        except BlockingIOError:
                            pass

    def open(self, kind):
        return sum(1 for k, _, closed in self.socks.values() if k == kind and closed is None)

    def lifetimes(self, kind):
        return [closed - opened for k, opened, closed in self.socks.values() if k == kind and closed]

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def test_users_are_served_while_slow_and_silent_clients_hold_on(nginx):
    session, answer = sign_in(nginx)  # an ordinary user, through nginx
    assert answer.status_code == 303, answer.text
    attack = Attack(nginx.port)
    try:
        started = time.monotonic()
        timings, held = [], []
        probes = [(session.get, "/dashboard"), (requests.get, "/login"), (requests.get, "/static/style.css"),
                  (requests.get, "/healthz")]
        # Probe until nginx has cut every trickler and silent connection (bounded).
        deadline = started + HEADER_TIMEOUT + 3
        while time.monotonic() < deadline and (attack.open("trickle") or attack.open("silent")):
            for get, path in probes:
                t0 = time.monotonic()
                reply = get(nginx.url(path), timeout=10, allow_redirects=False)
                timings.append((time.monotonic() - t0, path, reply.status_code))
            held.append((time.monotonic() - started, attack.open("trickle"), attack.open("upload"),
                         attack.open("silent")))
            time.sleep(0.3)  # ~13 requests a second: an ordinary user's pace
        elapsed = time.monotonic() - started

        bad = [t for t in timings if t[2] != 200]
        assert not bad, f"probes not answered 200: {bad[:5]}"
        durations = sorted(t[0] for t in timings)
        p95 = durations[int(0.95 * (len(durations) - 1))]
        assert len(durations) >= 40 and p95 < 1.0, (len(durations), p95, durations[-5:])
        # The attack really held on while users were served ...
        early = [h for h in held if h[0] < HEADER_TIMEOUT - 2]
        assert early and all(h[1:] == (100, 16, 100) for h in early), held[:3]
        # ... until nginx's header deadline cut the tricklers and the silent ones, and
        # only then; the uploads, still sending, are held by nginx, not the app.
        assert attack.open("trickle") == 0 and attack.open("silent") == 0, (elapsed, held[-1])
        for kind in ("trickle", "silent"):
            lives = attack.lifetimes(kind)
            assert min(lives) > HEADER_TIMEOUT - 1 and max(lives) < HEADER_TIMEOUT + 2.5, (kind, min(lives), max(lives))
        assert attack.open("upload") == 16
    finally:
        attack.close()


def access_lines(proxy, marker, timeout=5):
    """nginx's JSON access lines for requests whose path holds ``marker`` (written as each request ends)."""
    def found():
        text = proxy.access_log.read_text() if proxy.access_log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if marker in line]
    return wait_for(found, timeout, "nginx's access line")


def test_access_log_is_json_with_request_id_upstream_and_no_query_values(tapped, relay):
    marker = secrets.token_hex(4)
    answer = requests.get(tapped.url(f"/login-{marker}?password=hunter2-{marker}&next=/x"), timeout=10,
                          headers={"X-Request-ID": "client-chosen-id"})
    assert answer.status_code == 404
    (entry,) = access_lines(tapped, marker)
    assert entry["path"] == f"/login-{marker}" and entry["method"] == "GET" and entry["status"] == 404
    rid = entry["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid), entry
    # The id the app got is the one in nginx's log.
    (_line, headers, _body), = [r for r in relay.requests() if marker in r[0]]
    assert header(headers, "x-request-id") == [rid]
    assert entry["upstream"] == f"127.0.0.1:{relay.port}" and entry["upstream_status"] == "404"
    assert float(entry["upstream_response_time"]) >= 0 and float(entry["request_time"]) >= 0
    # No query string value anywhere in nginx's log, and no client-chosen id.
    text = tapped.access_log.read_text()
    assert f"hunter2-{marker}" not in text and "client-chosen-id" not in text
