"""The one transport every upstream call goes through.

``Transport`` is to our clients what requests' ``HTTPAdapter.send`` is to
requests: the one place where a request is prepared and sent, where
urllib3's and requests' failures become our typed errors, where the answer
is read (within a deadline and a size limit), decoded as JSON and cleaned,
and where an HTTP status becomes ``NotFound``, ``Unauthorized``... for the
service that answered. The clients (``socialos.SocialOS``/``Client``,
``pusher.Pusher``) keep only their protocol: URLs and Basic auth, or
signing and Pusher's limits.

Assembly builds one ``Transport`` per process (``Transport.from_settings``)
and hands it to every client, so all server threads share a few warm
keep-alive connections per host instead of paying a TCP (and TLS)
handshake each. The pooled ``requests.Session`` inside serves every user at
once, so it never holds credentials or cookies: each call brings its own.

Every call is bounded as a whole:

* a **deadline**: connect + read timeout seconds for everything (connecting,
  retries, headers, body). requests' read timeout bounds each read only, so
  an upstream trickling a byte a second would hold a page for ever; here a
  watchdog thread shuts the call's socket down when its deadline passes;
* a **size limit**: the answer is read in chunks up to ``max_bytes``; a
  bigger one is ``AnswerTooLarge`` and is never held in memory whole.

Waiting on one upstream must never starve the rest of the app, so it is
guarded twice:

* a **bulkhead** per service: at most ``max_in_flight`` calls wait on that
  service at once; one more fails fast (reason "busy") instead of taking
  yet another server thread;
* a **circuit breaker** per (service, endpoint): after ``failures_to_open``
  calls in a row found no answer (timed out, refused), calls to that
  endpoint fail fast (reason "circuit_open") for ``open_seconds``; then one
  probe goes through, and its outcome closes the circuit or opens it again.
  Keyed by endpoint so that one endpoint's trouble (a slow search) never
  fails another (signing in).

Text the upstream sends is cleaned where it enters (``clean``): every string
of the decoded JSON has its lone surrogates and control characters replaced,
so no page, record or log line downstream can fail on it.

Imports requests, urllib3 and the standard library only: metrics and logs
come in through the ``observe`` callback.
"""

from __future__ import annotations

import heapq
import http.cookiejar
import itertools
import json as jsonlib
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from socialos_app.settings import Settings
from socialos_app.upstream.errors import AnswerTooLarge, UpstreamError, UpstreamUnavailable, error_for_status

__all__ = ["IDEMPOTENT", "DEFAULT_TIMEOUT", "Timeout", "Observer", "Transport", "OnTransport", "CircuitBreaker",
           "Bulkhead", "JSON", "new_session", "clean", "total_seconds"]

Timeout: TypeAlias = "float | tuple[float, float]"
# Told of every call: (service, outcome, seconds). The app counts them in its metrics.
Observer: TypeAlias = Callable[[str, str, float], None]
JSON: TypeAlias = Any  # decoded JSON: dict, list, str, int, float, bool or None

# Retried on connection errors and 502/503/504: safe because repeating them
# changes nothing. POST and PATCH are never retried once sent.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "SEARCH"})

# The one default (connect, read) timeout, in seconds: the settings' own defaults.
# The connect timeout sits just above a multiple of 3 s, the TCP SYN
# retransmission interval, as requests' docs advise.
DEFAULT_TIMEOUT: Final = (Settings.upstream_connect_timeout, Settings.upstream_read_timeout)

MAX_MESSAGE: Final = 200
# Read this much at a time; an error page is read up to ERROR_BODY only (its words are all we show).
_CHUNK: Final = 64 * 1024
_ERROR_BODY: Final = 64 * 1024
# Per service, at most this many endpoints get a breaker of their own; the rest share one.
MAX_ENDPOINTS: Final = 32
# A Retry-After further away than this is taken as this (a day).
MAX_RETRY_AFTER: Final = 86400.0

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_TAG = re.compile(r"<[^>]*>")
# What ``clean`` replaces: C0 controls but tab and newline, DEL, C1 controls, lone surrogates.
# (json.loads joins a valid surrogate pair into one character, so only lone halves remain.)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def total_seconds(timeout: Timeout) -> float:
    """The whole-call deadline for a (connect, read) timeout: their sum (a lone number counts for both)."""
    connect, read = _pair(timeout)
    return connect + read


def _pair(timeout: Timeout) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        return float(timeout[0]), float(timeout[1])
    return float(timeout), float(timeout)


# -- the deadline ----------------------------------------------------------------

class _Call:
    """One call's deadline and the connections it is using (so the watchdog can cut them)."""

    __slots__ = ("deadline", "expired", "done", "_conns", "_lock")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.done = False
        self._conns: list[HTTPConnection] = []
        self._lock = threading.Lock()

    def attach(self, conn: HTTPConnection) -> None:
        """``conn`` now carries this call (a pooled connection moves from call to call)."""
        with self._lock:
            conn._socialos_call = self  # type: ignore[attr-defined]
            if conn not in self._conns:
                self._conns.append(conn)
            if self.expired:
                _cut(conn)

    def expire(self) -> None:
        """The deadline passed: cut every connection still carrying this call."""
        with self._lock:
            if self.done:
                return
            self.expired = True
            for conn in self._conns:
                if getattr(conn, "_socialos_call", None) is self:
                    _cut(conn)

    def finish(self) -> None:
        """The call is over: the watchdog leaves its connections alone from now on."""
        with self._lock:
            self.done = True
            self._conns.clear()


def _cut(conn: HTTPConnection) -> None:
    """Shut the connection's socket down, so a thread blocked reading it wakes at once.

    ``socket.socket.shutdown`` even for TLS: ``SSLSocket.shutdown`` would also drop
    the SSL object under the reading thread. Shutdown, never close: closing would
    free the descriptor for reuse while another thread still reads it.
    """
    sock = conn.sock
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _Watchdog:
    """One daemon thread that expires calls whose deadline has passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, call: _Call) -> None:
        with self._cond:
            heapq.heappush(self._heap, (call.deadline, next(self._order), call))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="upstream-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is call:  # sooner than what it sleeps for (rare: deadlines mostly grow)
                self._cond.notify()

    def _run(self) -> None:
        # Calls that finished are dropped as they reach the top of the heap, without
        # waiting for their deadline; it wakes up only for a call still running then.
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, call = self._heap[0]
                if call.done:
                    heapq.heappop(self._heap)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            call.expire()


_WATCHDOG = _Watchdog()
_current = threading.local()  # .call: the _Call this thread is making, if any


def _active() -> _Call | None:
    call: _Call | None = getattr(_current, "call", None)
    return call


class _DeadlineConnection(HTTPConnection):
    """urllib3's connection, attached to the calling thread's ``_Call`` whenever it is used."""

    def connect(self) -> None:
        call = _active()
        if call is not None and call.expired:
            raise urllib3.exceptions.ConnectTimeoutError(self, "the call's deadline has passed")
        super().connect()
        if call is not None:
            call.attach(self)

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        call = _active()
        if call is not None and self.sock is not None:  # a kept-alive connection: connect() is not called
            call.attach(self)
        super().request(method, url, body, headers, **kwargs)


class _DeadlineTLSConnection(_DeadlineConnection, HTTPSConnection):
    """The same for https."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineTLSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter on pools whose connections the deadline watchdog can cut."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class _Retry(Retry):
    """urllib3's Retry, except that a connect *timeout* is final, as a read timeout is,
    and nothing is retried once the call's deadline has passed.

    Refused connections and 502/503/504 come back at once, so retrying them
    is cheap; a connect timeout costs the whole connect timeout again each
    time, and the page must answer within one timeout.
    """

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> _Retry:
        call = _active()
        if ((call is not None and call.expired)
                or (isinstance(error, urllib3.exceptions.ConnectTimeoutError)
                    and not isinstance(error, urllib3.exceptions.NewConnectionError))):
            raise urllib3.exceptions.MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _retry() -> Retry:
    return _Retry(
        total=2,
        connect=2,  # refused connections; a connect timeout is never retried (see _Retry)
        read=0,  # a read timeout is not retried: the page must answer within one timeout
        status=2,
        backoff_factor=0.1,
        status_forcelist=(502, 503, 504),
        allowed_methods=IDEMPOTENT,
        raise_on_status=False,  # the last 5xx answer reaches the decoder, which types it
        respect_retry_after_header=False,
    )


def new_session(pool_size: int = Settings.thread_pool, verify: bool | str = True) -> requests.Session:
    """A pooled ``requests.Session``: ``pool_size`` keep-alive connections per host.

    ``verify`` is requests' TLS setting: True, or a CA bundle path (a private CA).
    Made once per process, by ``Transport``; tests and benchmarks may make more.
    """
    session = requests.Session()
    session.trust_env = False  # no proxy, netrc or CA-bundle surprises from the environment
    session.verify = verify
    # Shared by every user: never keep a cookie one user's call received.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = _Adapter(pool_connections=8, pool_maxsize=int(pool_size), max_retries=_retry(), pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# -- the guards ----------------------------------------------------------------

class CircuitBreaker:
    """Fails calls fast while an upstream keeps giving no answer.

    closed     every call goes through; ``failures_to_open`` no-answers in a row open it.
    open       every call is refused until ``open_seconds`` have passed.
    half_open  one probe call goes through, the rest are refused; an answer
               closes the circuit, no answer opens it again for ``open_seconds``.

    ``clock`` is injectable (tests drive it by hand); thread-safe.
    """

    def __init__(self, failures_to_open: int = 5, open_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = int(failures_to_open)
        self.open_seconds = float(open_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = "closed"
        self._failures = 0
        self._opened_at = 0.0

    @property
    def state(self) -> str:
        """"closed", "open" or "half_open" (open turns half_open on the next call due a probe)."""
        return self._state

    def allow(self) -> bool:
        """True when a call may go out now (in half_open: the one probe)."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open" and self._clock() - self._opened_at >= self.open_seconds:
                self._state = "half_open"  # this caller is the probe
                return True
            return False

    def record(self, answered: bool | None) -> None:
        """The outcome of a call ``allow`` let through.

        True: the upstream answered (any status: it is there). False: no
        answer (timeout, refused). None: the call never reached the wire
        (a local error), which tells nothing about the upstream.
        """
        with self._lock:
            if answered:
                self._state, self._failures = "closed", 0
            elif answered is None:
                if self._state == "half_open":
                    self._state = "open"  # the probe slot is free again; the next call probes
            elif self._state == "half_open":
                self._state, self._opened_at = "open", self._clock()
            else:
                self._failures += 1
                if self._state == "closed" and self._failures >= self.failures_to_open:
                    self._state, self._opened_at = "open", self._clock()


class Bulkhead:
    """At most ``limit`` calls in flight at once; one more is refused at once, never queued."""

    def __init__(self, limit: int) -> None:
        if int(limit) < 1:
            raise ValueError("a bulkhead needs a limit of at least 1")
        self.limit = int(limit)
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Calls holding a place right now."""
        return self._in_flight

    def enter(self) -> bool:
        """Take a place: True, or False when all ``limit`` are taken."""
        with self._lock:
            if self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        """Give back the place ``enter`` took."""
        with self._lock:
            self._in_flight -= 1


# -- cleaning what comes in -------------------------------------------------------

def _clean_text(text: str) -> str:
    return _UNSAFE.sub("\ufffd", text) if _UNSAFE.search(text) else text


def clean(value: JSON) -> JSON:
    """Decoded JSON with every string (keys too) safe to show, store and encode.

    Lone UTF-16 surrogates (valid JSON: what a JavaScript or Java upstream
    makes of half an emoji) can't be encoded as UTF-8, and control
    characters other than tab and newline corrupt logs and pages: both
    become U+FFFD. Everything else is returned as it was.
    """
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, list):
        return [clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean_text(k): clean(v) for k, v in value.items()}
    return value


# -- the transport ---------------------------------------------------------------

def _short(text: str) -> str:
    """One printable line of at most MAX_MESSAGE characters (messages end up in logs and pages)."""
    text = _CONTROL.sub(" ", _clean_text(str(text))).strip()
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 1] + "…"
    return text


def _no_answer(exc: Exception) -> tuple[str, str] | None:
    """(reason, words) for a requests exception meaning no answer came, else None.

    requests reports a read timeout that urllib3 gave up on after its retry
    budget as a ConnectionError wrapping MaxRetryError(ReadTimeoutError), and
    a read timeout while reading the body as ConnectionError(ReadTimeoutError);
    a refused connection is NewConnectionError, which urllib3 files under
    timeouts too. All of them are told apart here, once.
    """
    if isinstance(exc, requests.exceptions.SSLError):
        return "refused", "could not be reached: the TLS handshake failed"
    if isinstance(exc, requests.Timeout):
        return "timeout", "did not answer in time"
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.RetryError,
                        requests.exceptions.ChunkedEncodingError)):
        inner = exc.args[0] if exc.args else None
        cause = getattr(inner, "reason", inner)
        if (isinstance(cause, urllib3.exceptions.TimeoutError)
                and not isinstance(cause, urllib3.exceptions.NewConnectionError)):
            return "timeout", "did not answer in time"
        return "refused", "could not be reached"
    return None


class _Answer:
    """What came back: status, headers, reason and the body as read (within the limits)."""

    __slots__ = ("status", "headers", "reason", "body")

    def __init__(self, status: int, headers: Mapping[str, str], reason: str, body: bytes) -> None:
        self.status, self.headers, self.reason, self.body = status, headers, reason, body


class Transport:
    """Sends every upstream call: one pooled session, one default timeout, per-service guards.

    ``pool_size`` keep-alive connections per host (the server's thread
    pool, so no thread waits for a connection); ``verify`` is True or a CA
    bundle path; ``timeout`` the default (connect, read) in seconds, and a
    call's whole deadline is their sum (``total_seconds``); ``max_bytes`` the
    largest answer read; ``session`` an existing ``requests.Session`` to
    send on instead of a new pooled one (its connections are not ours to
    cut, so on it the deadline is checked between chunks of the body only).
    Per service at most ``max_in_flight`` calls in flight (default: half the
    pool, so a stuck upstream can never hold more than half the server's
    threads); per (service, endpoint) a circuit breaker that opens after
    ``failures_to_open`` no-answers in a row for ``open_seconds``.
    ``observe``, when given, is called with ``(service, outcome, seconds)``
    after every call.
    """

    def __init__(self, pool_size: int = Settings.thread_pool, *, verify: bool | str = True,
                 timeout: Timeout = DEFAULT_TIMEOUT, max_bytes: int = Settings.upstream_max_bytes,
                 session: requests.Session | None = None, max_in_flight: int | None = None,
                 failures_to_open: int = 5, open_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, observe: Observer | None = None) -> None:
        self.observe = observe
        self.pool_size = int(pool_size)
        self.session = session if session is not None else new_session(self.pool_size, verify)
        self.timeout: Timeout = timeout
        self.max_bytes = int(max_bytes)
        self.max_in_flight = int(max_in_flight or max(1, self.pool_size // 2))
        self._failures_to_open = failures_to_open
        self._open_seconds = open_seconds
        self._clock = clock
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._bulkheads: dict[str, Bulkhead] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Transport:
        """The process's transport: pool sized to the server's thread pool, the settings' timeouts and size limit."""
        return cls(settings.thread_pool,
                   timeout=(settings.upstream_connect_timeout, settings.upstream_read_timeout),
                   max_bytes=settings.upstream_max_bytes, **kwargs)

    @classmethod
    def given_or_from(cls, transport: Transport | None, settings: Settings) -> Transport:
        """``transport`` when there is one, else a new one from ``settings`` (what every client's
        ``from_settings`` needs)."""
        return transport if transport is not None else cls.from_settings(settings)

    def __repr__(self) -> str:
        return (f"<Transport pool={self.pool_size} timeout={self.timeout} max_bytes={self.max_bytes} "
                f"max_in_flight={self.max_in_flight}>")

    def breaker(self, service: str, endpoint: str) -> CircuitBreaker:
        """The circuit breaker of ``endpoint`` (such as "POST key") of ``service``, made on first use.

        A service's first ``MAX_ENDPOINTS`` endpoints get one each; any more share one.
        """
        key = (service, endpoint)
        found = self._breakers.get(key)
        if found is None:
            with self._lock:
                if key not in self._breakers and sum(s == service for s, _ in self._breakers) >= MAX_ENDPOINTS:
                    key = (service, "*")
                found = self._breakers.setdefault(
                    key, CircuitBreaker(self._failures_to_open, self._open_seconds, self._clock))
        return found

    def bulkhead(self, service: str) -> Bulkhead:
        """The bulkhead of ``service`` (a key such as "socialos"), made on its first call."""
        found = self._bulkheads.get(service)
        if found is None:
            with self._lock:
                found = self._bulkheads.setdefault(service, Bulkhead(self.max_in_flight))
        return found

    def state(self) -> dict[str, dict[str, Any]]:
        """``{service: {"in_flight": n, "circuits": {endpoint: state}}}`` for every service called so far."""
        out: dict[str, dict[str, Any]] = {
            service: {"in_flight": b.in_flight, "circuits": {}} for service, b in list(self._bulkheads.items())}
        for (service, endpoint), breaker in list(self._breakers.items()):
            out.setdefault(service, {"in_flight": 0, "circuits": {}})["circuits"][endpoint] = breaker.state
        return out

    def close(self) -> None:
        """Close the pooled connections (engine stop); later calls open new ones."""
        self.session.close()

    # -- one call ------------------------------------------------------------
    def call(self, service: str, method: str, url: str, *, endpoint: str, params: Mapping[str, str] | None = None,
             data: Any = None, json: JSON = None, headers: Mapping[str, str] | None = None, auth: Any = None,
             timeout: Timeout | None = None, errors: Mapping[int, type[UpstreamError]] | None = None,
             secret: str | None = None) -> JSON:
        """Send one request to ``service`` and return its decoded, cleaned JSON answer (``{}`` when empty).

        ``endpoint`` names the kind of call for its circuit breaker (such as
        "SEARCH user"); ``params`` is the query, ``data`` a form or raw body,
        ``json`` a JSON body, ``auth`` requests' auth, ``timeout`` overrides
        the default, ``errors`` maps extra statuses to error classes for this
        service, ``secret`` is scrubbed from any message. Redirects are not followed.

        Raises ``UpstreamUnavailable`` (``.reason`` timeout, refused, busy,
        circuit_open), ``AnswerTooLarge``, the typed error for a failure
        status, or ``UpstreamError`` for a redirect or an answer that is not JSON.
        """
        method = method.upper()
        breaker, bulkhead = self.breaker(service, endpoint), self.bulkhead(service)
        where = urlsplit(url).netloc
        started = time.monotonic()
        outcome = "error"
        try:
            if not bulkhead.enter():
                raise UpstreamUnavailable(f"is busy: too many calls are waiting on it already ({where})",
                                          service=service, reason="busy")
            try:
                if not breaker.allow():
                    raise UpstreamUnavailable(f"has not been answering; calls are paused for a few "
                                              f"seconds ({where})", service=service, reason="circuit_open")
                answered: bool | None = None
                try:
                    answer = self._exchange(service, method, url, where, params, data, json, headers, auth,
                                            timeout or self.timeout, secret, started)
                    answered = True
                except AnswerTooLarge:
                    answered = True  # it is there, and talkative
                    raise
                except UpstreamUnavailable:
                    answered = False
                    raise
                finally:
                    breaker.record(answered)
            finally:
                bulkhead.leave()
            decoded = _decode(service, method, answer, errors, secret)
            outcome = "ok"
            return decoded
        except UpstreamUnavailable as exc:
            outcome = exc.reason
            raise
        except UpstreamError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            if self.observe is not None:
                self.observe(service, outcome, time.monotonic() - started)

    def _exchange(self, service: str, method: str, url: str, where: str, params: Mapping[str, str] | None,
                  data: Any, json: JSON, headers: Mapping[str, str] | None, auth: Any, timeout: Timeout,
                  secret: str | None, started: float) -> _Answer:
        """Send, and read the answer whole, all before the call's deadline."""
        connect, read = _pair(timeout)
        call = _Call(started + connect + read)
        _WATCHDOG.watch(call)
        _current.call = call
        try:
            response = self._send(service, method, url, where, params, data, json, headers, auth,
                                  (connect, read), secret, call)
            try:
                limit = self.max_bytes if 200 <= response.status_code < 300 else min(self.max_bytes, _ERROR_BODY)
                body = _read_body(service, response, call, where, limit, whole=200 <= response.status_code < 300)
                return _Answer(response.status_code, response.headers, response.reason or "", body)
            finally:
                response.close()  # an answer not read to its end takes its connection with it
        finally:
            _current.call = None
            call.finish()

    def _send(self, service: str, method: str, url: str, where: str, params: Mapping[str, str] | None,
              data: Any, json: JSON, headers: Mapping[str, str] | None, auth: Any,
              timeout: tuple[float, float], secret: str | None, call: _Call) -> requests.Response:
        session = self.session
        try:
            # Prepared on its own rather than through the session, so the
            # shared session's cookie jar is never merged in: a cookie one
            # user's call received must not ride along on another user's call.
            # identity: a compressed answer could inflate past the size limit
            # in one read; nothing we call sends enough to gain from it.
            prepared = requests.Request(
                method, url, params=params, data=data, json=json, auth=auth,
                headers={**session.headers, "Accept": "application/json", "Accept-Encoding": "identity",
                         **(headers or {})},
            ).prepare()
            # No redirects: an API has no reason to send us elsewhere, and
            # credentials must not follow one. stream: the body is read here, in bounded chunks.
            return session.send(prepared, timeout=timeout, allow_redirects=False, stream=True)
        except requests.RequestException as exc:
            # `from None` everywhere: a chained exception would carry the URL (signed, for Pusher).
            if call.expired:
                raise _late(service, where) from None
            no_answer = _no_answer(exc)
            if no_answer is not None:
                reason, words = no_answer
                raise UpstreamUnavailable(f"{words} ({where})", service=service, reason=reason) from None
            raise UpstreamError(_scrub(f"request failed: {type(exc).__name__}", secret),
                                service=service) from None


def _late(service: str, where: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"did not answer in time ({where})", service=service, reason="timeout")


def _read_body(service: str, response: requests.Response, call: _Call, where: str, limit: int,
               whole: bool) -> bytes:
    """The body in chunks, never more than ``limit`` bytes held.

    ``whole``: more than ``limit`` is ``AnswerTooLarge``; otherwise (an error
    page, read for its words) the rest is left unread and the connection closed.
    """
    declared = response.headers.get("Content-Length", "")
    if whole and declared.isdigit() and int(declared) > limit:
        raise _too_large(service, where, limit)
    body = bytearray()
    raw = response.raw
    try:
        while not call.expired:
            chunk = raw.read(min(_CHUNK, limit + 1 - len(body)), decode_content=False)
            if not chunk:
                break
            body += chunk
            if len(body) > limit:
                if whole:
                    raise _too_large(service, where, limit)
                del body[limit:]
                break
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError, ValueError):
        if call.expired:
            raise _late(service, where) from None
        raise UpstreamUnavailable(f"could not be reached: the answer broke off ({where})", service=service,
                                  reason="refused") from None
    if call.expired:  # a socket shut down by the watchdog can read as a clean end
        raise _late(service, where)
    return bytes(body)


def _too_large(service: str, where: str, limit: int) -> AnswerTooLarge:
    return AnswerTooLarge(f"sent an answer larger than {limit} bytes, which was not read ({where})",
                          service=service, limit=limit)


def _scrub(text: str, secret: str | None) -> str:
    """One short line, never containing ``secret`` (an upstream may echo it)."""
    text = _short(text)
    if secret and secret in text:
        text = text.replace(secret, "****")
    return text


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds from now (it may be seconds or an HTTP date), or None."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)


def _decode(service: str, method: str, answer: _Answer, errors: Mapping[int, type[UpstreamError]] | None,
            secret: str | None) -> JSON:
    """The cleaned JSON answer of a 2xx, or the typed error for anything else."""
    status, body = answer.status, answer.body
    payload: JSON = None
    decoded = False
    if body.strip():
        try:
            payload, decoded = clean(jsonlib.loads(body)), True
        except (ValueError, RecursionError):  # ValueError includes UnicodeDecodeError
            pass
    if 200 <= status < 300:
        if not body.strip():
            return {}
        if not decoded:
            kind = answer.headers.get("Content-Type", "no content type").split(";")[0]
            raise UpstreamError(_scrub(f"answered with something that is not JSON ({kind})", secret),
                                status=status, service=service)
        return payload
    if 300 <= status < 400:
        raise UpstreamError(_scrub(f"answered {method} with a redirect, which is not followed", secret),
                            status=status, service=service)
    raise error_for_status(status, _scrub(_message(answer, payload), secret), service=service,
                           extra=dict(errors) if errors else None, retry_after=_retry_after(answer.headers))


def _message(answer: _Answer, payload: JSON) -> str:
    """The upstream's own words: its JSON ``error``/``message``, else its text, else the reason."""
    if isinstance(payload, dict):
        for field in ("error", "message"):
            words = payload.get(field)
            if isinstance(words, str) and words.strip():
                return words
    text = answer.body[:2000].decode("utf-8", "replace")
    if "html" in answer.headers.get("Content-Type", ""):
        text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    return text or answer.reason or f"HTTP {answer.status}"


class OnTransport:
    """What every client has: the ``transport`` it sends through and the ``timeout`` it asks for.

    ``transport`` is the process's ``Transport`` (without one, a client gets a
    pool of its own); ``timeout`` overrides the transport's (connect, read) seconds.
    """

    __slots__ = ("transport", "_timeout")

    def __init__(self, transport: Transport | None, timeout: Timeout | None) -> None:
        self.transport = transport if transport is not None else Transport()
        self._timeout = timeout

    @property
    def timeout(self) -> Timeout:
        """The (connect, read) seconds this client's calls wait; the whole call at most their sum."""
        return self._timeout or self.transport.timeout
