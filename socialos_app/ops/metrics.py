"""Prometheus metrics (the optional ``metrics`` extra).

Other modules report through the small functions here; each is a no-op
when ``prometheus_client`` is not installed, so the runtime never needs it.
Everything is registered on one private ``CollectorRegistry`` (``REGISTRY``),
never the library's global one, so nothing else in the process can collide
with these names.

The web side lives here too: the ``tools.request_metrics`` CherryPy tool
(requests by route template, method and status, with a latency histogram)
and ``MetricsPage``, mounted at ``/metrics`` by ``web.mount`` when
``available``.

Label values are never user input: routes are handler paths (unknown paths
collapse into ``UNMATCHED``), methods and statuses come from fixed sets, and
names passed to the reporting functions are reduced to a short identifier
(anything else counts as ``"other"``). No label ever holds a user name, a
token or an id from a URL.
"""

import functools
import inspect
import logging
import re
import string
import threading
import time

import cherrypy
from cherrypy._cpdispatch import PageHandler

try:
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Histogram,
        disable_created_metrics,
        exposition,
    )
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector
except ImportError:  # the runtime never needs the extra
    CollectorRegistry = None

__all__ = ["REGISTRY", "UNMATCHED", "MetricsPage", "available", "route_of", "security", "session_cache",
           "set_live_sessions", "sign_in", "upstream_call"]

log = logging.getLogger("socialos")

available = CollectorRegistry is not None

UNMATCHED = "unmatched"   # the one route label of every path no handler serves
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "SEARCH"})
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,48}")
_TRANSLATE = str.maketrans(string.punctuation, "_" * len(string.punctuation))  # as CherryPy's dispatcher
LIVE_SESSIONS_TTL = 10.0  # seconds a session count is reused, so scrapes don't hammer the database


def _name(value):
    """A caller-given label value, or "other" if it isn't a short identifier."""
    value = str(value)
    return value if _NAME.fullmatch(value) else "other"


class _LiveSessions:
    """Collector for the live-session gauges: calls ``fn`` at most once per ``ttl``.

    ``fn`` returns the session engine's ``stats()`` dict (``active``,
    ``users``) or a plain count. If it fails, the gauges are left out of that
    scrape (an absent series, not a stale or made-up number).
    """

    def __init__(self):
        self.fn = None
        self.ttl = LIVE_SESSIONS_TTL
        self._lock = threading.Lock()
        self._at = None
        self._value = None

    def set(self, fn, ttl):
        with self._lock:
            self.fn, self.ttl, self._at, self._value = fn, ttl, None, None

    def _read(self):
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

    def describe(self):
        yield GaugeMetricFamily("socialos_sessions_live", "Live (unexpired) sessions.")
        yield GaugeMetricFamily("socialos_session_users", "Distinct users with a live session.")

    def collect(self):
        value = self._read()
        if value is None:
            return
        active, users = value
        yield GaugeMetricFamily("socialos_sessions_live", "Live (unexpired) sessions.", value=active)
        if users is not None:
            yield GaugeMetricFamily("socialos_session_users", "Distinct users with a live session.",
                                    value=users)


if available:
    # The *_created series only matter to OpenMetrics consumers; they double every scrape.
    disable_created_metrics()
    REGISTRY = CollectorRegistry()
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)
    _requests = Counter("socialos_http_requests", "HTTP requests by route template, method and status.",
                        ["route", "method", "status"], registry=REGISTRY)
    _request_seconds = Histogram("socialos_http_request_duration_seconds",
                                 "Time from dispatch to the end of the response, by route template.",
                                 ["route", "method"], registry=REGISTRY)
    _upstream = Counter("socialos_upstream_requests", "Upstream calls by service and outcome.",
                        ["service", "outcome"], registry=REGISTRY)
    _upstream_errors = Counter("socialos_upstream_errors", "Failed upstream calls by service and error.",
                               ["service", "error"], registry=REGISTRY)
    _upstream_seconds = Histogram("socialos_upstream_request_duration_seconds",
                                  "Upstream call duration by service.", ["service"], registry=REGISTRY)
    _sign_ins = Counter("socialos_sign_ins", "Sign-in attempts by outcome.", ["outcome"], registry=REGISTRY)
    _session_cache = Counter("socialos_session_cache_lookups",
                             "Session lookups answered by the instance cache (hit) or the database (miss).",
                             ["result"], registry=REGISTRY)
    _security = Counter("socialos_security_events", "Security events by name.", ["event"],
                        registry=REGISTRY)
    _live = _LiveSessions()
    REGISTRY.register(_live)
    # Series that exist from the start, so rate() and alerts see a 0, not nothing.
    for _outcome in ("ok", "wrong", "throttled", "upstream_error"):
        _sign_ins.labels(_outcome)
    # Bound once: a lookup happens on every signed-in request.
    _cache_hit, _cache_miss = _session_cache.labels("hit"), _session_cache.labels("miss")
else:
    REGISTRY = None


# -- reporting functions (called by other modules) -----------------------------
def upstream_call(service, outcome, seconds):
    """One upstream call: ``service`` ("socialos", "socialos-admin", "pusher"),
    ``outcome`` ("ok", an error class name, "circuit_open"), its duration."""
    if not available:
        return
    service, outcome = _name(service), _name(outcome)
    _upstream.labels(service, outcome).inc()
    if outcome != "ok":
        _upstream_errors.labels(service, outcome).inc()
    if seconds is not None and seconds >= 0:
        _upstream_seconds.labels(service).observe(seconds)


def sign_in(outcome):
    """A sign-in attempt: "ok", "wrong", "throttled", "upstream_error"."""
    if available:
        _sign_ins.labels(_name(outcome)).inc()


def session_cache(hit):
    """A session lookup served from the instance cache (True) or the database."""
    if available:
        (_cache_hit if hit else _cache_miss).inc()


def security(event):
    """A security event counted by name (tampered record, CSRF refusal, ...)."""
    if available:
        _security.labels(_name(event)).inc()


def set_live_sessions(fn, ttl=LIVE_SESSIONS_TTL):
    """Report live sessions through ``fn()`` (the session engine's ``stats``).

    ``fn`` is called when ``/metrics`` is scraped, at most once per ``ttl``
    seconds. Calling this again replaces the callback.
    """
    if available:
        _live.set(fn, ttl)


# -- the request tool ------------------------------------------------------
def route_of(request):
    """The route template of a dispatched request, never its raw path.

    A handler's own path (``/dashboard``, ``/pusher/auth``); ``/*`` appended
    when it took path segments as arguments; a static directory's config
    section; ``UNMATCHED`` for anything else. The set of values is bounded by
    the app's handlers, whatever paths clients send.
    """
    section = request.config.get("tools.staticdir.section")
    if request.config.get("tools.staticdir.on") and section:
        return section
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


def _takes(handler, count):
    """Whether ``handler`` accepts ``count`` positional path segments."""
    if not count:
        return True
    func = getattr(handler, "__func__", None)
    limit = _positional(func, 1) if func is not None else _positional(handler, 0)
    return limit is None or count <= limit


@functools.lru_cache(maxsize=512)
def _positional(func, bound):
    """How many positional arguments ``func`` takes (None: any), less ``bound`` (self)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) - bound


def _start():
    request = cherrypy.serving.request
    request._metrics_t0 = time.perf_counter()
    try:
        request._metrics_route = route_of(request)
    except Exception:  # noqa: BLE001 - counting must never break a request
        request._metrics_route = UNMATCHED


def _end():
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
    _requests.labels(route, method, status).inc()
    _request_seconds.labels(route, method).observe(seconds)


class RequestMetricsTool(cherrypy.Tool):
    """``tools.request_metrics``: count and time every request.

    Two hooks: the route is read when the resource starts (before other
    tools may wrap the handler), the status and duration when the request
    ends (after error pages, so 500s are counted as 500s).
    """

    def __init__(self):
        super().__init__("on_start_resource", _start, name="request_metrics")

    def _setup(self):
        if not available:
            return
        hooks = cherrypy.serving.request.hooks
        hooks.attach("on_start_resource", _start, priority=10)
        hooks.attach("on_end_request", _end)


cherrypy.tools.request_metrics = RequestMetricsTool()


# -- the page ----------------------------------------------------------------
class MetricsPage:
    """``GET /metrics``: this process's metrics in Prometheus text format
    (OpenMetrics when the scraper asks for it).

    The object itself is the handler (not an ``index``), so ``/metrics`` is
    answered as is, with no redirect to ``/metrics/``.
    """

    exposed = True

    def __call__(self, **_ignored):
        request = cherrypy.serving.request
        if request.method not in ("GET", "HEAD"):
            cherrypy.serving.response.headers["Allow"] = "GET, HEAD"
            raise cherrypy.HTTPError(405)
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        cherrypy.serving.response.headers["Content-Type"] = content_type
        return encoder(REGISTRY)
