"""Prometheus metrics (the optional ``metrics`` extra), and the upstream's trouble in the log.

Other modules report through the small functions here; each is a no-op
when ``prometheus_client`` is not installed, so the runtime never needs it.
Everything is registered on one private ``CollectorRegistry`` (``REGISTRY``),
never the library's global one, so nothing else in the process can collide
with these names.

State that already exists somewhere (the database's health, the session
cache, the circuit breakers and bulkheads, the server's thread pool, the
driver's connection pool, the touch writer's queue) is read when
``/metrics`` is scraped, by one collector (``watch`` tells it where to
look), never counted again on the request path.

The web side lives here too: the ``tools.request_metrics`` CherryPy tool
(requests by route template, method and status, with a latency histogram)
and ``MetricsPage``, mounted at ``/metrics`` by ``web.mount`` when
``available``.

Label values are never user input: routes are handler paths (unknown paths
collapse into ``UNMATCHED``), methods and statuses come from fixed sets, and
names passed to the reporting functions are reduced to a short identifier
(anything else counts as ``"other"``). No label ever holds a user name, a
token or an id from a URL.

``upstream_call`` (the transport's ``observe`` hook) also writes the log's
WARNING lines when a service stops answering or its circuit breaker opens,
and when either recovers (``logs.trouble``), with or without the extra.
"""

from __future__ import annotations

import functools
import inspect
import logging
import platform
import re
import string
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Protocol

import cherrypy
from cherrypy._cpdispatch import PageHandler

from socialos_app.db.connection import database
from socialos_app.ops import logs

try:
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Histogram,
        disable_created_metrics,
        exposition,
    )
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.registry import Collector
except ImportError:  # the runtime never needs the extra
    CollectorRegistry = None  # type: ignore[assignment,misc]
    Collector = object  # type: ignore[assignment,misc]

__all__ = ["REGISTRY", "UNMATCHED", "MetricsPage", "available", "route_of", "security", "session_cache",
           "set_live_sessions", "sign_in", "live_call", "upstream_call", "watch", "SECURITY_EVENTS", "ANSWERED"]

log = logging.getLogger("socialos")

available = CollectorRegistry is not None

UNMATCHED = "unmatched"   # the one route label of every path no handler serves
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "SEARCH"})
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,48}")
_TRANSLATE = str.maketrans(string.punctuation, "_" * len(string.punctuation))  # as CherryPy's dispatcher
LIVE_SESSIONS_TTL = 10.0  # seconds a session count is reused, so scrapes don't hammer the database
# Every security event the app logs (grep "security_event("): a series each from the start.
SECURITY_EVENTS = ("csrf_refused", "session_tampered", "sign_in_failed", "sign_in_throttled",
                   "confirm_failed", "confirm_throttled", "identity_confirmed",
                   "devices_signed_out", "user_signed_out_by_admin", "webhook_refused", "channel_refused")
# Upstream outcomes that are answers, not failures: the service is there and said no
# (a wrong password is Unauthorized). Everything else counts as an upstream error.
ANSWERED = frozenset({"ok", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "PayloadTooLarge"})
_WHY = {"timeout": "no answer in time", "refused": "not reachable", "busy": "too many calls already waiting on it",
        "circuit_open": "its circuit breaker is open"}
CLUSTER_WIDE = " Cluster-wide: every instance reports the same number (aggregate with max(), never sum())."


def _name(value: object) -> str:
    """A caller-given label value, or "other" if it isn't a short identifier."""
    text = str(value)
    return text if _NAME.fullmatch(text) else "other"


_ENDPOINT = re.compile(r"[A-Za-z0-9_.:/* -]{1,48}")


def _circuits(states: dict[Any, dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """``(service, endpoint, state)`` of every circuit breaker in ``Transport.state()``.

    Breakers are per endpoint ("SEARCH user": a bounded set the clients
    name); a transport with one breaker per service gives endpoint "*".
    """
    for service, state in states.items():
        circuits = state.get("circuits")
        if isinstance(circuits, dict):
            for endpoint, circuit in circuits.items():
                yield str(service), str(endpoint), str(circuit)
        elif "circuit" in state:
            yield str(service), "*", str(state["circuit"])


class _Engine(Protocol):
    cache: Any
    touches: Any


class _Transport(Protocol):
    max_in_flight: int

    def state(self) -> dict[Any, dict[str, Any]]: ...


class _Health(Protocol):
    @property
    def database_up(self) -> bool: ...


class _Watched:
    """What the collector and the upstream watcher read (``watch`` fills it)."""

    engine: _Engine | None = None
    transport: _Transport | None = None
    health: _Health | None = None


_watched = _Watched()


def watch(engine: _Engine | None = None, transport: _Transport | None = None,
          health: _Health | None = None) -> None:
    """Tell the metrics (and the upstream trouble log) where the app's state lives.

    ``engine`` the session engine (cache, touch writer), ``transport`` the
    upstream transport (``state()``: breakers and bulkheads), ``health`` the
    database health (``database_up``); the driver's pool is the connection's
    (``db.connection``). Read at scrape time only; anything not given is left out.
    Works without the extra too (the breaker log lines need the transport).
    """
    _watched.engine, _watched.transport, _watched.health = engine, transport, health


class _LiveSessions(Collector):
    """Collector for the live-session gauges: calls ``fn`` at most once per ``ttl``.

    ``fn`` returns the session engine's ``stats()`` dict (``active``,
    ``users``) or a plain count. If it fails, the gauges are left out of that
    scrape (an absent series, not a stale or made-up number).
    """

    def __init__(self) -> None:
        self.fn: Callable[[], Any] | None = None
        self.ttl = LIVE_SESSIONS_TTL
        self._lock = threading.Lock()
        self._at: float | None = None
        self._value: tuple[int, int | None] | None = None

    def set(self, fn: Callable[[], Any], ttl: float) -> None:
        with self._lock:
            self.fn, self.ttl, self._at, self._value = fn, ttl, None, None

    def _read(self) -> tuple[int, int | None] | None:
        with self._lock:  # one database call however many scrapes arrive together
            now = time.monotonic()
            if self.fn is None:
                return None
            if self._at is None or now - self._at >= self.ttl:
                try:
                    stats = self.fn()
                    if isinstance(stats, dict):
                        self._value = (int(stats["active"]), int(stats["users"]) if "users" in stats else None)
                    else:
                        self._value = (int(stats), None)
                except Exception as exc:  # noqa: BLE001 - a scrape must never fail on this
                    log.debug("live sessions not counted: %s", type(exc).__name__)
                    self._value = None
                self._at = now  # failures are cached too: an outage doesn't slow every scrape
            return self._value

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("socialos_sessions_live", "Live (unexpired) sessions." + CLUSTER_WIDE)
        yield GaugeMetricFamily("socialos_session_users", "Distinct users with a live session." + CLUSTER_WIDE)

    def collect(self) -> Iterator[Metric]:
        value = self._read()
        if value is None:
            return
        active, users = value
        yield GaugeMetricFamily("socialos_sessions_live", "Live (unexpired) sessions." + CLUSTER_WIDE, value=active)
        if users is not None:
            yield GaugeMetricFamily("socialos_session_users", "Distinct users with a live session." + CLUSTER_WIDE,
                                    value=users)


def _version() -> str:
    try:
        return metadata.version("socialos-app")
    except metadata.PackageNotFoundError:
        return "unknown"


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _StateCollector(Collector):
    """This instance's state, read at scrape time from where it already lives (see ``watch``).

    Each part is skipped when its source is missing or fails: a scrape never
    fails, and an absent series is never a made-up number.
    """

    def __init__(self) -> None:
        self.build = {"version": _version(), "python": platform.python_version()}

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no fixed set: which parts appear depends on what is watched

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("socialos_build_info", "The running build: always 1, labelled by version.",
                                 labels=list(self.build))
        info.add_metric(list(self.build.values()), 1)
        yield info
        for part in (self._database, self._cache, self._upstreams, self._threads, self._mongo_pool,
                     self._touches):
            try:
                yield from part()
            except Exception as exc:  # noqa: BLE001 - one broken source must not fail the scrape
                log.debug("metrics: %s not read: %s", part.__name__, type(exc).__name__)

    def _database(self) -> Iterator[Metric]:
        health = _watched.health
        if health is not None:
            yield _gauge("socialos_database_up", "1 when the session database answered its last ping "
                         "(the background ping behind /readyz), else 0.", 1 if health.database_up else 0)

    def _cache(self) -> Iterator[Metric]:
        engine = _watched.engine
        cache = getattr(engine, "cache", None)
        if cache is None:
            return
        yield _gauge("socialos_session_cache_trusted", "1 while the change stream runs and the instance's "
                     "session cache is used, 0 while every session is read from the database.",
                     1 if cache.trusted else 0)
        yield _gauge("socialos_session_cache_entries", "Session records in this instance's cache.", len(cache))
        yield _gauge("socialos_session_cache_capacity", "Most records this instance's cache holds.", cache.size)

    def _upstreams(self) -> Iterator[Metric]:
        transport = _watched.transport
        if transport is None:
            return
        circuit = GaugeMetricFamily("socialos_upstream_circuit_open", "1 while the circuit breaker of a "
                                    "service's endpoint refuses calls (open or probing), else 0.",
                                    labels=["service", "endpoint"])
        in_flight = GaugeMetricFamily("socialos_upstream_in_flight", "Calls waiting on a service now "
                                      "(its bulkhead's places taken).", labels=["service"])
        states = transport.state()
        for service, endpoint, state in sorted(_circuits(states)):
            label = endpoint if _ENDPOINT.fullmatch(endpoint) else "other"
            circuit.add_metric([_name(service), label], 0 if state == "closed" else 1)
        for service, guards in sorted(states.items(), key=lambda item: str(item[0])):
            in_flight.add_metric([_name(service)], int(guards.get("in_flight", 0)))
        yield circuit
        yield in_flight
        yield _gauge("socialos_upstream_in_flight_limit", "A service's bulkhead: most calls waiting on it at "
                     "once; one more is refused at once.", transport.max_in_flight)

    def _threads(self) -> Iterator[Metric]:
        pool = getattr(getattr(cherrypy.server, "httpserver", None), "requests", None)
        if pool is None or not hasattr(pool, "idle"):
            return
        threads = len(getattr(pool, "_threads", ()))
        yield _gauge("socialos_server_threads", "Request threads of the HTTP server.", threads)
        yield _gauge("socialos_server_threads_busy", "Request threads serving a connection now.",
                     max(0, threads - int(pool.idle)))
        yield _gauge("socialos_server_queue", "Accepted connections waiting for a request thread.", int(pool.qsize))

    def _mongo_pool(self) -> Iterator[Metric]:
        if _watched.engine is None:
            return  # not an app process (a script, a test): no connection of ours to read
        client = database().client  # raises (and is skipped) when nothing is connected
        servers = getattr(getattr(client, "_topology", None), "_servers", None)
        if not servers:
            return
        # The driver has no public gauge of its pools; its pool objects' counters are read
        # as they are (skipped if a driver version names them otherwise).
        in_use = GaugeMetricFamily("socialos_mongo_pool_in_use", "Database connections checked out now, by "
                                   "server.", labels=["server"])
        size = GaugeMetricFamily("socialos_mongo_pool_max", "Most database connections per server (maxPoolSize).",
                                 labels=["server"])
        for address, server in list(servers.items()):
            pool = getattr(server, "pool", None)
            active = getattr(pool, "active_sockets", None)
            if not isinstance(active, int):
                continue
            label = _name(":".join(str(part) for part in address) if isinstance(address, tuple) else address)
            in_use.add_metric([label], active)
            limit = getattr(pool, "max_pool_size", None)
            if isinstance(limit, int):
                size.add_metric([label], limit)
        yield in_use
        yield size

    def _touches(self) -> Iterator[Metric]:
        touches = getattr(_watched.engine, "touches", None)
        backlog = getattr(touches, "backlog", None)
        if isinstance(backlog, int):
            yield _gauge("socialos_session_touch_backlog", "Session touches waiting for the background writer.",
                         backlog)


if available:
    # The *_created series only matter to OpenMetrics consumers; they double every scrape.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # the library's own, unannotated
    _registry = CollectorRegistry()
    REGISTRY: CollectorRegistry | None = _registry
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)
    GCCollector(registry=_registry)
    _requests = Counter("socialos_http_requests", "HTTP requests by route template, method and status.",
                        ["route", "method", "status"], registry=REGISTRY)
    _request_seconds = Histogram("socialos_http_request_duration_seconds",
                                 "Time from dispatch to the end of the response, by route template.",
                                 ["route", "method"], registry=REGISTRY)
    _upstream = Counter("socialos_upstream_requests", "Upstream calls by service and outcome.",
                        ["service", "outcome"], registry=REGISTRY)
    _upstream_errors = Counter("socialos_upstream_errors", "Failed upstream calls (no answer, an error status "
                               "or a bad answer; not a refusal such as a wrong password) by service and error.",
                               ["service", "error"], registry=REGISTRY)
    _upstream_seconds = Histogram("socialos_upstream_request_duration_seconds",
                                  "Upstream call duration by service.", ["service"], registry=REGISTRY)
    _sign_ins = Counter("socialos_sign_ins", "Sign-in attempts by outcome.", ["outcome"], registry=REGISTRY)
    _session_cache = Counter("socialos_session_cache_lookups",
                             "Session lookups answered by the instance cache (hit) or the database (miss).",
                             ["result"], registry=REGISTRY)
    _security = Counter("socialos_security_events", "Security events by name (every one the log writes).",
                        ["event"], registry=REGISTRY)
    _live_calls = Counter("socialos_live_calls", "Background calls that keep live pages in step with sessions "
                          "(terminate a user's Pusher connections, notify them) by action and outcome.",
                          ["action", "outcome"], registry=REGISTRY)
    _live = _LiveSessions()
    _registry.register(_live)
    _registry.register(_StateCollector())
    # Series that exist from the start, so rate() and alerts see a 0, not nothing.
    for _outcome in ("ok", "wrong", "throttled", "upstream_error"):
        _sign_ins.labels(_outcome)
    for _event in SECURITY_EVENTS:
        _security.labels(_event)
    # Bound once: a lookup happens on every signed-in request.
    _cache_hit, _cache_miss = _session_cache.labels("hit"), _session_cache.labels("miss")
else:
    REGISTRY = None


# -- reporting functions (called by other modules) -----------------------------
def upstream_call(service: str, outcome: str, seconds: float | None) -> None:
    """One upstream call (the transport's ``observe`` hook): ``service`` ("socialos",
    "socialos-admin", "pusher"), ``outcome`` ("ok", an error class name, a
    no-answer reason such as "timeout" or "circuit_open"), its duration.

    Counted by outcome; counted as an error only when it is one (see
    ``ANSWERED``). A service that stops answering, and its circuit breaker
    opening, are logged once (``logs.trouble``), and so is each recovery.
    """
    _log_upstream(str(service), str(outcome))
    if not available:
        return
    label, outcome = _name(service), _name(outcome)
    _upstream.labels(label, outcome).inc()
    if outcome not in ANSWERED:
        _upstream_errors.labels(label, outcome).inc()
    if seconds is not None and seconds >= 0:
        _upstream_seconds.labels(label).observe(seconds)


def _log_upstream(service: str, outcome: str) -> None:
    where = logs.cap(logs.escape(service), 60)
    if outcome in ANSWERED:
        logs.recovered("upstream " + service, "upstream %s answering again", where)
    else:
        why = _WHY.get(outcome) or f"answered with an error ({logs.cap(logs.escape(outcome), 60)})"
        logs.trouble("upstream " + service, "upstream %s failing: %s", where, why)
    transport = _watched.transport
    if transport is None:
        return
    try:
        states = transport.state()
    except Exception:  # noqa: BLE001 - a call's report must never fail the call
        return
    for name, endpoint, state in _circuits(states):
        key = f"breaker {name} {endpoint}"
        words = logs.cap(logs.escape(f"{name} {endpoint}"), 100)
        if state == "closed":
            logs.recovered(key, "circuit breaker of %s closed: calls go through again", words)
        else:
            logs.trouble(key, "circuit breaker of %s open: its calls fail at once for a few seconds", words)


def sign_in(outcome: str) -> None:
    """A sign-in attempt: "ok", "wrong", "throttled", "upstream_error"."""
    if available:
        _sign_ins.labels(_name(outcome)).inc()


def session_cache(hit: bool) -> None:
    """A session lookup served from the instance cache (True) or the database."""
    if available:
        (_cache_hit if hit else _cache_miss).inc()


def security(event: str) -> None:
    """A security event counted by name. ``logs.security_event`` calls this for every
    event it logs, so callers need not."""
    if available:
        _security.labels(_name(event)).inc()


logs.on_security_event(security)


def live_call(action: str, outcome: str) -> None:
    """A background live-connection call (``presence.connections``): ``action`` "terminate" or
    "notify"; ``outcome`` "ok", "retry", "failed" (given up), "dropped" (queue full), "invalid"."""
    if available:
        _live_calls.labels(_name(action), _name(outcome)).inc()


def set_live_sessions(fn: Callable[[], Any], ttl: float = LIVE_SESSIONS_TTL) -> None:
    """Report live sessions through ``fn()`` (the session engine's ``stats``).

    ``fn`` is called when ``/metrics`` is scraped, at most once per ``ttl``
    seconds. Calling this again replaces the callback.
    """
    if available:
        _live.set(fn, ttl)


# -- the request tool ------------------------------------------------------
def route_of(request: Any) -> str:
    """The route template of a dispatched request, never its raw path.

    A handler's own path (``/dashboard``, ``/pusher/auth``); ``/*`` appended
    when it took path segments as arguments; a static directory's config
    section; ``UNMATCHED`` for anything else. The set of values is bounded by
    the app's handlers, whatever paths clients send.
    """
    section = request.config.get("tools.staticdir.section")
    if request.config.get("tools.staticdir.on") and section:
        return str(section)
    handler = request.handler
    if not isinstance(handler, PageHandler):
        return UNMATCHED  # cherrypy.NotFound, or a dispatcher we don't know
    segments = [s for s in request.path_info.strip("/").split("/") if s]
    used = len(segments) - len(request.args)
    if used < 0 or not _takes(handler.callable, len(request.args)):
        return UNMATCHED  # e.g. "/no/such/page" lands on the root's index, which takes no segments
    # Segments map to attribute names as the dispatcher maps them, so "/pusher.auth"
    # and "/pusher/auth" share one label.
    route = "/" + "/".join(s.translate(_TRANSLATE) for s in segments[:used])
    return route + ("/*" if request.args else "")


def _takes(handler: Any, count: int) -> bool:
    """Whether ``handler`` accepts ``count`` positional path segments."""
    if not count:
        return True
    func = getattr(handler, "__func__", None)
    limit = _positional(func, 1) if func is not None else _positional(handler, 0)
    return limit is None or count <= limit


@functools.lru_cache(maxsize=512)
def _positional(func: Any, bound: int) -> int | None:
    """How many positional arguments ``func`` takes (None: any), less ``bound`` (self)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) - bound


def _start() -> None:
    request = cherrypy.serving.request
    request._metrics_t0 = time.perf_counter()
    try:
        request._metrics_route = route_of(request)
    except Exception:  # noqa: BLE001 - counting must never break a request
        request._metrics_route = UNMATCHED


def _end() -> None:
    request, response = cherrypy.serving.request, cherrypy.serving.response
    t0 = getattr(request, "_metrics_t0", None)
    if t0 is None:
        return
    seconds = time.perf_counter() - t0
    status = str(response.status or "").split(" ", 1)[0]
    status = status if len(status) == 3 and status.isdigit() else "other"
    route = request._metrics_route
    if status == "404" and (route.endswith("/*") or request.path_info.endswith("/") and route != "/"):
        route = UNMATCHED  # the page refused the extra segments or the slash: not one of its addresses
    method = request.method if request.method in METHODS else "other"
    counter, histogram = _request_children(route, method, status)
    counter.inc()
    histogram.observe(seconds)


_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_MAX_CHILDREN = 4096  # routes x methods x statuses: bounded by the app's handlers, a cap all the same


def _request_children(route: str, method: str, status: str) -> tuple[Any, Any]:
    """The request counter's and the latency histogram's series for these labels, looked up once."""
    key = (route, method, status)
    pair = _children.get(key)
    if pair is None:
        pair = (_requests.labels(route, method, status), _request_seconds.labels(route, method))
        if len(_children) < _MAX_CHILDREN:
            _children[key] = pair
    return pair


class RequestMetricsTool(cherrypy.Tool):
    """``tools.request_metrics``: count and time every request.

    Two hooks: the route is read when the resource starts (before other
    tools may wrap the handler), the status and duration when the request
    ends (after error pages, so 500s are counted as 500s).
    """

    def __init__(self) -> None:
        super().__init__("on_start_resource", _start, name="request_metrics")

    def _setup(self) -> None:
        if not available:
            return
        hooks = cherrypy.serving.request.hooks
        hooks.attach("on_start_resource", _start, priority=10)
        hooks.attach("on_end_request", _end)


# -- the page ----------------------------------------------------------------
class MetricsPage:
    """``GET /metrics``: this process's metrics in Prometheus text format
    (OpenMetrics when the scraper asks for it).

    The object itself is the handler (not an ``index``), so ``/metrics`` is
    answered as is, with no redirect to ``/metrics/``.
    """

    exposed = True

    def __call__(self, **_ignored: object) -> bytes:
        request = cherrypy.serving.request
        if request.method not in ("GET", "HEAD"):
            cherrypy.serving.response.headers["Allow"] = "GET, HEAD"
            raise cherrypy.HTTPError(405)
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        cherrypy.serving.response.headers["Content-Type"] = content_type
        return encoder(_registry)
