"""The one transport every upstream call goes through.

``Transport`` is to our clients what requests' ``HTTPAdapter.send`` is to
requests: the one place where a request is prepared and sent, where
urllib3's and requests' failures become our typed errors, where the answer
is decoded as JSON and where an HTTP status becomes ``NotFound``,
``Unauthorized``... for the service that answered. The clients
(``client.SocialOS``/``Client``, ``pusher.Pusher``) keep only their
protocol: URLs and Basic auth, or signing and Pusher's limits.

Assembly builds one ``Transport`` per process (``Transport.from_settings``)
and hands it to every client, so all server threads share a few warm
keep-alive connections per host instead of paying a TCP (and TLS)
handshake each. The pooled ``requests.Session`` inside serves every user at
once, so it never holds credentials or cookies: each call brings its own.

Waiting on one upstream must never starve the rest of the app, so each
service gets two guards:

* a **bulkhead**: at most ``max_in_flight`` calls wait on that service at
  once; one more fails fast (reason "busy") instead of taking yet another
  server thread;
* a **circuit breaker**: after ``failures_to_open`` calls in a row found no
  answer (timed out, refused), calls fail fast (reason "circuit_open") for
  ``open_seconds``; then one probe call goes through, and its outcome
  closes the circuit or opens it again.
"""

import http.cookiejar
import json as jsonlib
import re
import threading
import time
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from socialos_app.settings import Settings
from socialos_app.upstream.errors import UpstreamError, UpstreamUnavailable, error_for_status

__all__ = ["IDEMPOTENT", "DEFAULT_TIMEOUT", "Transport", "CircuitBreaker", "Bulkhead", "new_session"]

# Retried on connection errors and 502/503/504: safe because repeating them
# changes nothing. POST and PATCH are never retried once sent.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "SEARCH"})

# The one default (connect, read) timeout, in seconds: the settings' own defaults.
# The connect timeout sits just above a multiple of 3 s, the TCP SYN
# retransmission interval, as requests' docs advise.
DEFAULT_TIMEOUT = (Settings.upstream_connect_timeout, Settings.upstream_read_timeout)

MAX_MESSAGE = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_TAG = re.compile(r"<[^>]*>")


class _Retry(Retry):
    """urllib3's Retry, except that a connect *timeout* is final, as a read timeout is.

    Refused connections and 502/503/504 come back at once, so retrying them
    is cheap; a connect timeout costs the whole connect timeout again each
    time, and the page must answer within one timeout.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if (isinstance(error, urllib3.exceptions.ConnectTimeoutError)
                and not isinstance(error, urllib3.exceptions.NewConnectionError)):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _retry():
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


def new_session(pool_size=Settings.thread_pool, verify=True):
    """A pooled ``requests.Session``: ``pool_size`` keep-alive connections per host.

    ``verify`` is requests' TLS setting: True, or a CA bundle path (a private CA).
    Made once per process, by ``Transport``; tests and benchmarks may make more.
    """
    session = requests.Session()
    session.trust_env = False  # no proxy, netrc or CA-bundle surprises from the environment
    session.verify = verify
    # Shared by every user: never keep a cookie one user's call received.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=int(pool_size),
                          max_retries=_retry(), pool_block=False)
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

    def __init__(self, failures_to_open=5, open_seconds=5.0, clock=time.monotonic):
        self.failures_to_open = int(failures_to_open)
        self.open_seconds = float(open_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = "closed"
        self._failures = 0
        self._opened_at = 0.0

    @property
    def state(self):
        """"closed", "open" or "half_open" (open turns half_open on the next call due a probe)."""
        return self._state

    def allow(self):
        """True when a call may go out now (in half_open: the one probe)."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open" and self._clock() - self._opened_at >= self.open_seconds:
                self._state = "half_open"  # this caller is the probe
                return True
            return False

    def record(self, answered):
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

    def __init__(self, limit):
        if int(limit) < 1:
            raise ValueError("a bulkhead needs a limit of at least 1")
        self.limit = int(limit)
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self):
        """Calls holding a place right now."""
        return self._in_flight

    def enter(self):
        """Take a place: True, or False when all ``limit`` are taken."""
        with self._lock:
            if self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def leave(self):
        """Give back the place ``enter`` took."""
        with self._lock:
            self._in_flight -= 1


# -- the transport ---------------------------------------------------------------

def _short(text):
    """One printable line of at most MAX_MESSAGE characters (messages end up in logs and pages)."""
    text = _CONTROL.sub(" ", str(text)).strip()
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 1] + "…"
    return text


def _no_answer(exc):
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


class Transport:
    """Sends every upstream call: one pooled session, one default timeout, per-service guards.

    ``pool_size`` keep-alive connections per host (the server's thread
    pool, so no thread waits for a connection); ``verify`` is True or a CA
    bundle path; ``timeout`` the default (connect, read) in seconds;
    ``session`` an existing ``requests.Session`` to send on instead of a new
    pooled one. Per service: at most ``max_in_flight`` calls in flight
    (default: half the pool, so a stuck upstream can never hold more than
    half the server's threads), and a circuit breaker that opens after
    ``failures_to_open`` no-answers in a row for ``open_seconds``. ``observe``,
    when given, is called with ``(service, outcome, seconds)`` after every call.
    """

    def __init__(self, pool_size=Settings.thread_pool, *, verify=True, timeout=DEFAULT_TIMEOUT, session=None,
                 max_in_flight=None, failures_to_open=5, open_seconds=5.0, clock=time.monotonic,
                 observe=None):
        # Told of every call (service, outcome, seconds): the app counts them in its
        # metrics; a script using the clients alone has no need to.
        self.observe = observe
        self.pool_size = int(pool_size)
        self.session = session if session is not None else new_session(self.pool_size, verify)
        self.timeout = timeout
        self.max_in_flight = int(max_in_flight or max(1, self.pool_size // 2))
        self._breaker_args = (failures_to_open, open_seconds, clock)
        self._guards = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, **kwargs):
        """The process's transport: pool sized to the server's thread pool, the settings' timeouts."""
        return cls(settings.thread_pool,
                   timeout=(settings.upstream_connect_timeout, settings.upstream_read_timeout), **kwargs)

    def __repr__(self):
        return f"<Transport pool={self.pool_size} timeout={self.timeout} max_in_flight={self.max_in_flight}>"

    def _guards_of(self, service):
        """``(CircuitBreaker, Bulkhead)`` of ``service``, made on its first call."""
        guards = self._guards.get(service)
        if guards is None:
            with self._lock:
                guards = self._guards.setdefault(
                    service, (CircuitBreaker(*self._breaker_args), Bulkhead(self.max_in_flight)))
        return guards

    def breaker(self, service):
        """The circuit breaker of ``service`` (a key such as "socialos")."""
        return self._guards_of(service)[0]

    def bulkhead(self, service):
        """The bulkhead of ``service``."""
        return self._guards_of(service)[1]

    def state(self):
        """``{service: {"circuit": state, "in_flight": n}}`` for every service called so far."""
        return {service: {"circuit": b.state, "in_flight": h.in_flight}
                for service, (b, h) in list(self._guards.items())}

    def close(self):
        """Close the pooled connections (engine stop); later calls open new ones."""
        self.session.close()

    # -- one call ------------------------------------------------------------
    def call(self, service, method, url, *, params=None, data=None, json=None, headers=None,
             auth=None, timeout=None, errors=None, secret=None):
        """Send one request to ``service`` and return its decoded JSON answer (``{}`` when empty).

        ``params`` is the query, ``data`` a form or raw body, ``json`` a JSON
        body, ``auth`` requests' auth, ``timeout`` overrides the default,
        ``errors`` maps extra statuses to error classes for this service,
        ``secret`` is scrubbed from any message. Redirects are not followed.

        Raises ``UpstreamUnavailable`` (``.reason`` timeout, refused, busy,
        circuit_open), the typed error for a failure status, or
        ``UpstreamError`` for a redirect or an answer that is not JSON.
        """
        method = method.upper()
        breaker, bulkhead = self._guards_of(service)
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
                answered = None
                try:
                    response = self._send(service, method, url, where, params, data, json, headers,
                                          auth, timeout or self.timeout, secret)
                    answered = True
                except UpstreamUnavailable:
                    answered = False
                    raise
                finally:
                    breaker.record(answered)
            finally:
                bulkhead.leave()
            with response:
                answer = _decode(service, method, response, errors, secret)
            outcome = "ok"
            return answer
        except UpstreamUnavailable as exc:
            outcome = exc.reason
            raise
        except UpstreamError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            if self.observe is not None:
                self.observe(service, outcome, time.monotonic() - started)

    def _send(self, service, method, url, where, params, data, json, headers, auth, timeout, secret):
        session = self.session
        try:
            # Prepared on its own rather than through the session, so the
            # shared session's cookie jar is never merged in: a cookie one
            # user's call received must not ride along on another user's call.
            prepared = requests.Request(
                method, url, params=params, data=data, json=json, auth=auth,
                headers={**session.headers, "Accept": "application/json", **(headers or {})},
            ).prepare()
            # No redirects: an API has no reason to send us elsewhere, and
            # credentials must not follow one.
            return session.send(prepared, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            no_answer = _no_answer(exc)
            # `from None` everywhere: a chained exception would carry the URL (signed, for Pusher).
            if no_answer is not None:
                reason, words = no_answer
                raise UpstreamUnavailable(f"{words} ({where})", service=service, reason=reason) from None
            raise UpstreamError(_scrub(f"request failed: {type(exc).__name__}", secret),
                                service=service) from None


def _scrub(text, secret):
    """One short line, never containing ``secret`` (an upstream may echo it)."""
    text = _short(text)
    if secret and secret in text:
        text = text.replace(secret, "****")
    return text


def _decode(service, method, response, errors, secret):
    """The JSON answer of a 2xx, or the typed error for anything else."""
    status = response.status_code
    body = response.content
    payload, decoded = None, False
    if body.strip():
        try:
            payload, decoded = jsonlib.loads(body), True
        except (ValueError, RecursionError):  # ValueError includes UnicodeDecodeError
            pass
    if 200 <= status < 300:
        if not body.strip():
            return {}
        if not decoded:
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise UpstreamError(_scrub(f"answered with something that is not JSON ({kind})", secret),
                                status=status, service=service)
        return payload
    if 300 <= status < 400:
        raise UpstreamError(_scrub(f"answered {method} with a redirect, which is not followed", secret),
                            status=status, service=service)
    raise error_for_status(status, _scrub(_message(response, payload), secret), service=service,
                           extra=errors)


def _message(response, payload):
    """The upstream's own words: its JSON ``error``/``message``, else its text, else the reason."""
    if isinstance(payload, dict):
        for field in ("error", "message"):
            if isinstance(payload.get(field), str) and payload[field].strip():
                return payload[field]
    text = response.content[:2000].decode("utf-8", "replace")
    if "html" in response.headers.get("Content-Type", ""):
        text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    return text or response.reason or f"HTTP {response.status_code}"
