"""The one transport (socialos_app.upstream.transport): failures read the same for every
client, the pool is shared, and a stuck upstream is bounded by its bulkhead
and failed fast by its circuit breaker.

Every upstream here is a real server on a loopback socket: a listening
socket nobody answers on, a closed port, or a tiny HTTP server whose
behaviour the test switches. Waiting is done by polling with a deadline;
the circuit breaker's clock is driven by hand.
"""

import email.utils
import json
import socket
import ssl
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import trustme

from socialos_app.ops import metrics
from socialos_app.settings import Settings
from socialos_app.upstream.errors import AnswerTooLarge, Unauthorized, UpstreamError, UpstreamUnavailable, explain
from socialos_app.upstream.pusher import Pusher
from socialos_app.upstream.socialos import Client, SocialOS
from socialos_app.upstream.transport import DEFAULT_TIMEOUT, MAX_ENDPOINTS, CircuitBreaker, Transport, clean
from support import free_port, wait_for

FAST = (1.0, 0.3)  # (connect, read): a never-answering server costs 0.3 s a call


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Switchable(BaseHTTPRequestHandler):
    """Answers per the server's ``mode``: "ok" (200 JSON), "hold" (wait for ``release``,
    then 200), "silent" (never answer) or "error" (500 with an HTML page)."""

    protocol_version = "HTTP/1.1"
    wbufsize = -1  # one write per answer (flushed by the base class): no delayed-ACK stalls

    def log_message(self, *args):
        pass

    def _answer(self):
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with srv.lock:
            srv.requests += 1
            srv.in_flight += 1
        try:
            mode = srv.mode
            if mode == "script":  # the test's own answer (framed so that the connection can be kept)
                srv.script(self)
                return
            if mode == "silent":
                srv.stopping.wait(30)
                self.close_connection = True
                return
            if mode == "hold":
                srv.release.wait(30)
            if mode == "error":
                self._send(500, "text/html", b"<html><body><h1>Down for maintenance</h1></body></html>")
            else:
                self._send(200, "application/json", b'{"ok": true}')
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _send(self, status, kind, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_SEARCH = _answer


class SwitchableServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Switchable)
        self.mode = "ok"
        self.lock = threading.Lock()
        self.requests = self.in_flight = self.connections = 0
        self.release = threading.Event()
        self.stopping = threading.Event()

    def process_request(self, request, client_address):
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def upstream():
    server = SwitchableServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent():
    """A server that accepts connections (the kernel completes the handshake) and never answers."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def clients(base, transport, timeout=FAST):
    """A Social OS client and a Pusher client, both on ``transport``, both aimed at ``base``."""
    api = SocialOS(f"{base}/api", f"{base}/admin", "admin", "admin-pw", transport=transport, timeout=timeout)
    pusher = Pusher("1", "key", "secret-value", base, transport=transport, timeout=timeout)
    return api.user("demo", "key-pw"), pusher


def unavailable(call):
    """The UpstreamUnavailable ``call()`` raises, and how long it took."""
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        call()
    return caught.value, time.monotonic() - started


# -- the same words for the same failure, whichever client --------------------------------
def test_a_server_that_never_answers_reads_the_same_for_both_clients(silent):
    user, pusher = clients(silent, Transport())
    errors = [unavailable(lambda: user.get("user", "demo")),
              unavailable(lambda: pusher.channels()),
              unavailable(lambda: pusher.trigger("c", "e", "d"))]  # a POST as well as GETs
    for error, elapsed in errors:
        assert error.reason == "timeout"
        assert error.message.startswith("did not answer in time")
        assert elapsed < 1.5, elapsed  # one 0.3 s read timeout: not retried, never the connect timeout
    assert len({error.message for error, _ in errors}) == 1  # word for word, host included
    assert [e.service for e, _ in errors] == ["socialos", "pusher", "pusher"]
    assert [e.label for e, _ in errors] == ["the Social OS API", "Pusher", "Pusher"]
    assert str(errors[0][0]) != str(errors[1][0])  # each names who did not answer


def test_a_refused_connection_could_not_be_reached_not_slow():
    base = f"http://127.0.0.1:{free_port()}"
    user, pusher = clients(base, Transport())
    for call in (lambda: user.get("user", "demo"), lambda: pusher.channels(),
                 lambda: pusher.trigger("c", "e", "d")):
        error, elapsed = unavailable(call)
        assert error.reason == "refused"
        assert error.message.startswith("could not be reached")
        assert "in time" not in error.message
        assert elapsed < 1.0, elapsed  # refused at once, not waited out


@pytest.fixture
def full_backlog():
    """A server whose accept queue is full: the kernel drops new SYNs, so connecting times out."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = sock.getsockname()
    held = []
    for _ in range(8):  # fill the queue until a connect no longer succeeds
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(address)
        except OSError:
            probe.close()
            break
        held.append(probe)
    else:
        pytest.skip("the kernel kept accepting: no way to make a connect timeout here")
    yield f"http://127.0.0.1:{address[1]}"
    for probe in held:
        probe.close()
    sock.close()


def test_a_connect_timeout_is_a_timeout_and_not_retried(full_backlog):
    user, pusher = clients(full_backlog, Transport(), timeout=(0.3, 1.0))
    for call in (lambda: user.get("user"), lambda: pusher.channels()):  # GETs: idempotent, yet one try
        error, elapsed = unavailable(call)
        assert error.reason == "timeout" and error.message.startswith("did not answer in time")
        assert elapsed < 0.6, elapsed  # three tries would take 0.9 s and more


def test_a_read_timeout_is_not_retried(upstream):
    upstream.mode = "silent"
    user, _ = clients(upstream.url, Transport())
    unavailable(lambda: user.get("user", "demo"))  # GET: retried on connect errors and 5xx only
    assert upstream.requests == 1


def test_a_failure_page_reads_the_same_for_both_clients(upstream):
    upstream.mode = "error"
    user, pusher = clients(upstream.url, Transport())
    seen = []
    for call in (lambda: user.post("thing"), lambda: pusher.trigger("c", "e", "d")):
        with pytest.raises(UpstreamError) as caught:
            call()
        assert type(caught.value) is UpstreamError and caught.value.status == 500
        seen.append(caught.value.message)
    assert seen == ["Down for maintenance"] * 2  # the page's words, not its markup


def test_secrets_stay_out_of_every_failure(silent):
    user, pusher = clients(silent, Transport())
    for call in (lambda: user.get("user", "demo"), lambda: pusher.channels()):
        error, _ = unavailable(call)
        assert error.__cause__ is None and error.__suppress_context__  # no chained URL or request
        for text in (str(error), repr(error), error.message):
            assert "key-pw" not in text and "secret-value" not in text and "auth_signature" not in text


# -- one pool, built once, shared -----------------------------------------------------------
def test_both_clients_share_one_pooled_connection(upstream):
    transport = Transport()
    user, pusher = clients(upstream.url, transport)
    for _ in range(20):
        user.get("user", "demo")
        pusher.channels()
    assert upstream.requests == 40
    assert upstream.connections == 1


def test_the_transport_is_built_from_the_settings_and_handed_to_both_clients():
    settings = Settings(thread_pool=40, upstream_connect_timeout=1.5, upstream_read_timeout=4.0,
                        api_url="http://127.0.0.1:9/api", admin_url="http://127.0.0.1:9/admin",
                        admin_user="admin", admin_password="admin-pw",
                        pusher_app_id="1", pusher_key="k", pusher_secret="s", pusher_host="127.0.0.1")
    transport = Transport.from_settings(settings)
    assert transport.pool_size == 40 and transport.timeout == (1.5, 4.0)
    assert transport.session.get_adapter("https://x/").poolmanager.connection_pool_kw["maxsize"] == 40
    assert transport.max_in_flight == 20  # half the pool
    api, pusher = SocialOS.from_settings(settings, transport), Pusher.from_settings(settings, transport)
    assert api.transport is transport and pusher.transport is transport
    assert api.user("u", "p").transport is transport and api.admin().transport is transport
    assert api.timeout == pusher.timeout == (1.5, 4.0)
    # Another size is another pool: never silently the first one's.
    other = Transport(4)
    assert other.session is not transport.session
    assert other.session.get_adapter("https://x/").poolmanager.connection_pool_kw["maxsize"] == 4


def test_one_default_timeout():
    assert DEFAULT_TIMEOUT == (Settings().upstream_connect_timeout, Settings().upstream_read_timeout)
    assert Transport().timeout == DEFAULT_TIMEOUT
    assert Client("http://127.0.0.1:9", "u", "p").timeout == DEFAULT_TIMEOUT
    assert Pusher("1", "k", "s", "http://127.0.0.1:9").timeout == DEFAULT_TIMEOUT
    assert SocialOS("http://127.0.0.1:9/a", "http://127.0.0.1:9/b", "u", "p").timeout == DEFAULT_TIMEOUT


def test_closing_the_transport_leaves_it_usable(upstream):
    transport = Transport()
    user, _ = clients(upstream.url, transport)
    user.get("x")
    transport.close()
    assert user.get("x") == {"ok": True}
    assert upstream.connections == 2  # closed means closed: the second call opened a new one


# -- the circuit breaker --------------------------------------------------------------------
def test_the_breaker_opens_fails_fast_and_closes_after_a_good_probe(upstream):
    clock = FakeClock()
    transport = Transport(failures_to_open=3, open_seconds=5, clock=clock)
    dead = Client(f"http://127.0.0.1:{free_port()}/api", "demo", "pw", transport=transport, timeout=FAST)
    for _ in range(3):
        assert unavailable(lambda: dead.get("user"))[0].reason == "refused"
    assert transport.breaker("socialos", "GET user").state == "open"

    # Open: every call fails at once, whatever the URL of that service, and sends nothing.
    alive = Client(f"{upstream.url}/api", "demo", "pw", transport=transport, timeout=FAST)
    error, elapsed = unavailable(lambda: alive.get("user"))
    assert error.reason == "circuit_open" and elapsed < 0.1
    assert "not been answering" in error.message and "in time" not in error.message
    assert upstream.requests == 0
    # Other services are not affected.
    assert Pusher("1", "k", "s", upstream.url, transport=transport).channel_info("c") == {"ok": True}
    assert upstream.requests == 1

    clock.advance(4.9)
    assert unavailable(lambda: alive.get("user"))[0].reason == "circuit_open"
    clock.advance(0.1)  # open_seconds have passed: the next call is the probe
    assert alive.get("user") == {"ok": True}
    assert transport.breaker("socialos", "GET user").state == "closed"
    assert alive.get("user") == {"ok": True}
    assert upstream.requests == 3


def test_a_failed_probe_opens_the_breaker_again(upstream):
    clock = FakeClock()
    transport = Transport(failures_to_open=2, open_seconds=5, clock=clock)
    client = Client(f"{upstream.url}/api", "demo", "pw", transport=transport, timeout=FAST)
    upstream.mode = "silent"
    for _ in range(2):
        assert unavailable(lambda: client.get("user"))[0].reason == "timeout"
    assert transport.breaker("socialos", "GET user").state == "open"
    clock.advance(5)
    assert unavailable(lambda: client.get("user"))[0].reason == "timeout"  # the probe, timed out
    assert transport.breaker("socialos", "GET user").state == "open"
    assert unavailable(lambda: client.get("user"))[0].reason == "circuit_open"
    assert upstream.requests == 3


def test_only_one_probe_goes_out_while_half_open(upstream):
    clock = FakeClock()
    transport = Transport(failures_to_open=1, open_seconds=5, clock=clock)
    breaker = transport.breaker("socialos", "GET user")
    breaker.record(False)  # one no-answer opens a breaker with failures_to_open=1
    assert breaker.state == "open"
    clock.advance(5)
    upstream.mode = "hold"
    client = Client(f"{upstream.url}/api", "demo", "pw", transport=transport, timeout=(1, 5))
    probe = threading.Thread(target=client.get, args=("user",))
    probe.start()
    wait_for(lambda: upstream.in_flight == 1, 5, "the probe")
    assert breaker.state == "half_open"
    assert unavailable(lambda: client.get("user"))[0].reason == "circuit_open"
    upstream.release.set()
    probe.join(5)
    assert breaker.state == "closed" and upstream.requests == 1


def test_answers_that_are_errors_never_open_the_breaker(upstream):
    upstream.mode = "error"
    transport = Transport(failures_to_open=2)
    client = Client(f"{upstream.url}/api", "demo", "pw", transport=transport, timeout=FAST)
    for _ in range(4):
        with pytest.raises(UpstreamError) as caught:
            client.post("user")
        assert caught.value.status == 500  # it answered: it is there
    assert transport.breaker("socialos", "POST user").state == "closed"


def test_breaker_state_machine_with_a_local_error_in_the_probe():
    clock = FakeClock()
    breaker = CircuitBreaker(failures_to_open=2, open_seconds=3, clock=clock)
    breaker.record(False)
    assert breaker.state == "closed" and breaker.allow()
    breaker.record(True)  # an answer resets the count
    breaker.record(False)
    assert breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(3)
    assert breaker.allow() and not breaker.allow()  # one probe
    breaker.record(None)  # the probe never reached the wire: the next call may probe
    assert breaker.allow()


# -- the bulkhead -------------------------------------------------------------------------
def test_the_bulkhead_bounds_calls_in_flight_per_service(upstream):
    transport = Transport(max_in_flight=2)
    user, pusher = clients(upstream.url, transport, timeout=(1, 10))
    upstream.mode = "hold"
    results = []
    waiting = [threading.Thread(target=lambda: results.append(user.get("user"))) for _ in range(2)]
    for thread in waiting:
        thread.start()
    wait_for(lambda: upstream.in_flight == 2, 5, "two calls in flight")
    assert transport.bulkhead("socialos").in_flight == 2

    error, elapsed = unavailable(lambda: user.get("user"))
    assert error.reason == "busy" and elapsed < 0.1
    assert upstream.requests == 2  # the third was never sent
    # The other service has its own places.
    other = threading.Thread(target=lambda: results.append(pusher.channel_info("c")))
    other.start()
    wait_for(lambda: upstream.in_flight == 3, 5, "pusher's call in flight")

    upstream.release.set()
    for thread in (*waiting, other):
        thread.join(5)
    assert results == [{"ok": True}] * 3
    assert transport.state() == {"socialos": {"in_flight": 0, "circuits": {"GET user": "closed"}},
                                 "pusher": {"in_flight": 0, "circuits": {"GET channels": "closed"}}}
    assert user.get("user") == {"ok": True}  # places given back
    # Busy is not the upstream's fault: the breaker didn't count it.
    assert transport.breaker("socialos", "GET user").state == "closed"


def test_waiting_on_a_stuck_upstream_takes_at_most_half_the_pool(silent):
    """20 calls at once on a 10-thread pool's transport: 5 wait, 15 are refused at once."""
    transport = Transport(10, failures_to_open=1000)
    user, _ = clients(silent, transport, timeout=(1, 0.5))
    reasons, lock = [], threading.Lock()

    def call():
        try:
            user.get("user")
        except UpstreamUnavailable as exc:
            with lock:
                reasons.append(exc.reason)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sorted(reasons) == ["busy"] * 15 + ["timeout"] * 5


# -- metrics --------------------------------------------------------------------------------
@pytest.mark.skipif(not metrics.available, reason="prometheus_client not installed")
def test_every_call_is_reported_by_service_and_outcome(upstream):
    def count(service, outcome):
        return metrics.REGISTRY.get_sample_value("socialos_upstream_requests_total",
                                                 {"service": service, "outcome": outcome}) or 0.0

    before = {k: count(*k) for k in [("socialos", "ok"), ("pusher", "ok"), ("socialos", "refused"),
                                      ("socialos-admin", "UpstreamError")]}
    transport = Transport(observe=metrics.upstream_call)
    user, pusher = clients(upstream.url, transport)
    user.get("x")
    pusher.channels()
    unavailable(Client(f"http://127.0.0.1:{free_port()}", "u", "p", transport=transport).get)
    upstream.mode = "error"
    with pytest.raises(UpstreamError):
        SocialOS(upstream.url, upstream.url, "a", "b", transport=transport).admin().post("x")
    after = {k: count(*k) for k in before}
    assert {k: after[k] - before[k] for k in before} == dict.fromkeys(before, 1.0)


def test_plain_requests_sessions_can_be_given(upstream):
    with requests.Session() as session:
        transport = Transport(session=session)
        assert transport.session is session
        assert Client(upstream.url, "u", "p", transport=transport).get() == {"ok": True}


# -- every call bounded as a whole: one deadline, one size limit ---------------------------
def trickle(data, every, stop):
    """A script writing ``data`` a byte at a time, ``every`` seconds apart, until ``stop`` is set."""
    def script(handler):
        for byte in data:
            if stop.wait(every):
                return
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return
    return script


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"


@pytest.mark.parametrize("where", ["headers", "body"])
def test_an_upstream_trickling_its_answer_is_cut_at_the_deadline(upstream, where):
    """Each byte comes well inside the read timeout, so requests alone would wait for ever."""
    stop = upstream.stopping
    if where == "headers":
        upstream.script = trickle(HEAD, 0.1, stop)
    else:
        def script(handler):
            handler.wfile.write(HEAD + b'{"names": ["')
            handler.wfile.flush()
            trickle(b"a" * 100000, 0.1, stop)(handler)
        upstream.script = script
    upstream.mode = "script"
    user, pusher = clients(upstream.url, Transport(), timeout=(0.5, 0.6))  # a call: 1.1 s in all
    for call in (lambda: user.get("user", "demo"), lambda: pusher.channels()):
        error, elapsed = unavailable(call)
        assert error.reason == "timeout" and error.message.startswith("did not answer in time")
        assert 1.0 < elapsed < 1.6, elapsed


@pytest.fixture
def tls_upstream():
    """The switchable server behind TLS (a CA of the test's own), and that CA's bundle path."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = SwitchableServer()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    with ca.cert_pem.tempfile() as bundle:
        yield server, f"https://127.0.0.1:{server.server_address[1]}", bundle
    server.stopping.set()
    server.shutdown()
    server.server_close()


def test_the_deadline_cuts_a_tls_connection_too(tls_upstream):
    server, base, bundle = tls_upstream
    transport = Transport(4, verify=bundle)
    user, _ = clients(base, transport, timeout=(0.5, 0.6))
    assert user.get("user") == {"ok": True}  # a kept-alive TLS connection, then the same one trickles
    server.script = lambda handler: (handler.wfile.write(HEAD), trickle(b" " * 100000, 0.1, server.stopping)(handler))
    server.mode = "script"
    error, elapsed = unavailable(lambda: user.get("user"))
    assert error.reason == "timeout" and 1.0 < elapsed < 1.6, elapsed
    server.mode = "ok"
    assert user.get("user") == {"ok": True}  # the cut connection was replaced, not reused


def test_an_answer_over_the_size_limit_is_refused_unread(upstream):
    sent = []

    def endless(handler):  # no Content-Length: the body runs until the connection closes
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        block = b'["' + b"x" * 65530 + b'"]'
        try:
            for _ in range(3200):  # 200 MiB if anyone read it all
                handler.wfile.write(block)
                sent.append(len(block))
        except OSError:
            pass

    upstream.mode, upstream.script = "script", endless
    transport = Transport(max_bytes=1 << 20, timeout=(1, 5))
    user, pusher = clients(upstream.url, transport, timeout=None)
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(AnswerTooLarge) as caught:
            user.get("user", "demo")
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    error = caught.value
    assert error.status is None and error.service == "socialos" and error.limit == 1 << 20
    assert "larger than 1048576 bytes" in error.message
    assert explain(error) == "The Social OS API sent an answer too large to read."
    assert elapsed < 2, elapsed
    assert peak < 4 << 20, peak  # a few times the limit at most, never the 200 MiB offered
    wait_for(lambda: upstream.in_flight == 0, 5, "the server to notice the closed connection")
    assert sum(sent) < 32 << 20  # we hung up: the rest was never sent

    # A declared length over the limit is refused before a byte of the body is read.
    def declared(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 209715200\r\n\r\n[")
        handler.wfile.flush()
        upstream.stopping.wait(5)

    upstream.script = declared
    error, elapsed = None, time.monotonic()
    with pytest.raises(AnswerTooLarge):
        pusher.channels()
    assert time.monotonic() - elapsed < 1
    # Both answered: neither breaker counts it as trouble.
    assert transport.breaker("socialos", "GET user").state == transport.breaker("pusher", "GET channels").state \
        == "closed"


def test_an_answer_within_the_limit_is_read_whole(upstream):
    big = json.dumps({"names": ["n" * 1000] * 900}).encode()  # ~0.9 MB, in many chunks

    def script(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(big) + big)

    upstream.mode, upstream.script = "script", script
    user, _ = clients(upstream.url, Transport(max_bytes=len(big)))
    assert len(user.get("user")["names"]) == 900


# -- one endpoint's trouble is its own ----------------------------------------------------
def test_a_timing_out_search_never_opens_the_breaker_for_sign_in_or_profiles(upstream):
    """The search endpoint holds; keys and profiles answer at once, before and after."""
    def script(handler):
        if handler.command == "SEARCH":
            upstream.stopping.wait(30)
            return
        handler._send(200, "application/json", b'{"token": "t", "password": "p", "expires": "e"}')

    upstream.mode, upstream.script = "script", script
    transport = Transport(failures_to_open=3)
    api = SocialOS(f"{upstream.url}/api", transport=transport, timeout=(1, 0.3))
    searcher = api.user("mallory", "key-pw")
    for _ in range(5):
        with pytest.raises(UpstreamUnavailable):
            searcher.search("user", params={"q": "a"})
    assert transport.breaker("socialos", "SEARCH user").state == "open"
    error, elapsed = unavailable(lambda: searcher.search("user", params={"q": "a"}))
    assert error.reason == "circuit_open" and elapsed < 0.1
    # Everyone else signs in and reads profiles as if nothing happened.
    assert api.create_key("carol", "carol-pw", ttl=60)["token"] == "t"
    assert api.user("carol", "p").get("user", "carol")["token"] == "t"
    assert transport.state()["socialos"]["circuits"] == {"SEARCH user": "open", "POST key": "closed",
                                                         "GET user": "closed"}


def test_endpoints_per_service_are_bounded():
    transport = Transport()
    for n in range(MAX_ENDPOINTS + 10):
        transport.breaker("socialos", f"GET part{n}")
    assert len(transport.state()["socialos"]["circuits"]) == MAX_ENDPOINTS + 1  # the rest share "*"


# -- text from upstreams, cleaned where it enters -----------------------------------------
def test_lone_surrogates_and_control_characters_never_get_past_the_decoder(upstream):
    raw = (b'{"name": "Ad\\ud800a", "bio": "tab\\tnew\\nline\\r\\u0000\\u001b[31m\\u0085", '
           b'"emoji": "\\ud83d\\ude00", "\\udfffkey": ["\\udc00", {"deep": "\\u007f"}], "n": 1}')

    def script(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(raw) + raw)

    upstream.mode, upstream.script = "script", script
    user, _ = clients(upstream.url, Transport())
    profile = user.get("user", "ada")
    assert profile == {"name": "Ad\ufffda", "bio": "tab\tnew\nline\ufffd\ufffd\ufffd[31m\ufffd",
                       "emoji": "\U0001F600", "\ufffdkey": ["\ufffd", {"deep": "\ufffd"}], "n": 1}
    json.dumps(profile, ensure_ascii=False).encode("utf-8")  # encodes: nothing left to fail on


def test_clean_leaves_good_text_alone():
    value = {"a": ["é", "漢字", "\U0001F600", 1, 2.5, None, True], "b": "tab\tline\n"}
    assert clean(value) == value
    assert clean("\ud800\udc00") == "\ufffd\ufffd"  # two halves in a str (not joined by a parser) are two


# -- errors say who, and when to come back -------------------------------------------------
@pytest.mark.parametrize("header, expected", [("7", 7.0), ("0", 0.0), ("99999999", 86400.0),
                                              ("soon", None), (None, None)])
def test_retry_after_is_carried_in_seconds(upstream, header, expected):
    def script(handler):
        handler.send_response(429)
        if header is not None:
            handler.send_header("Retry-After", header)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    upstream.mode, upstream.script = "script", script
    user, pusher = clients(upstream.url, Transport())
    for call in (lambda: user.get("user"), lambda: pusher.channels()):
        with pytest.raises(UpstreamError) as caught:
            call()
        assert caught.value.status == 429 and caught.value.retry_after == expected


def test_retry_after_as_a_date(upstream):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)

    def script(handler):
        handler.send_response(503)
        handler.send_header("Retry-After", when)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    upstream.mode, upstream.script = "script", script
    user, _ = clients(upstream.url, Transport())
    with pytest.raises(UpstreamError) as caught:
        user.post("thing")  # a POST: not retried, so the 503 comes back as it was
    assert 110 <= caught.value.retry_after <= 121


def test_every_error_must_name_its_service():
    with pytest.raises(TypeError):
        Unauthorized("no key")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Unauthorized("no key", service="")
    assert Unauthorized("gone", service="pusher").label == "Pusher"
