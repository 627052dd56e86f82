"""``/livez``, ``/readyz``, ``/healthz`` and ``/metrics``: pages for machines, not people.

Load balancers, orchestrators and Prometheus call them every few seconds:
no session, no CSRF and no request log line per call. The answers
themselves are ``ops.health``'s and ``ops.metrics``'s; here is how the web
serves them.
"""

from collections.abc import Callable
from typing import Any, ClassVar

from socialos_app.ops import metrics

__all__ = ["FOR_MACHINES", "MetricsPage", "Probe"]

FOR_MACHINES: dict[str, Any] = {
    "tools.socialos_session.on": False,
    "tools.csrf.on": False,
    "tools.upstream_errors.on": False,
    "tools.request_log.on": False,
}


class Probe:
    """One health endpoint as a page of its own: the object is the handler, so no redirect to ``/livez/``."""

    exposed = True
    _cp_config: ClassVar[dict[str, Any]] = FOR_MACHINES

    def __init__(self, answer: Callable[..., bytes]) -> None:
        self._answer = answer

    def __call__(self, **params: object) -> bytes:
        return self._answer(**params)


class MetricsPage(metrics.MetricsPage):
    """``GET /metrics`` (only with the ``metrics`` extra installed; else a 404)."""

    _cp_config: ClassVar[dict[str, Any]] = FOR_MACHINES
