"""Prometheus metrics (the optional ``metrics`` extra).

Other modules report through the small functions here; each is a no-op
when ``prometheus_client`` is not installed, so the runtime never needs it.
"""

__all__ = ["upstream_call", "sign_in", "session_cache", "security"]


def upstream_call(service, outcome, seconds):
    """One upstream call: ``service`` ("socialos", "socialos-admin", "pusher"),
    ``outcome`` ("ok", an error class name, "circuit_open"), its duration."""


def sign_in(outcome):
    """A sign-in attempt: "ok", "wrong", "throttled", "upstream_error"."""


def session_cache(hit):
    """A session lookup served from the instance cache (True) or the database."""


def security(event):
    """A security event counted by name (tampered record, CSRF refusal, ...)."""
