"""Typed errors for upstream calls (the Social OS API, its admin API, Pusher).

Each carries the service it came from twice: ``service``, a stable key to
branch on ("socialos", "socialos-admin", "pusher"), and ``label``, the
name to show a person ("the Social OS API"). Each also carries the HTTP
status and the upstream's own message, never the credentials used for the
call, so it is safe to log or show.
"""

__all__ = ["UpstreamError", "Unauthorized", "Forbidden", "NotFound", "Unimplemented",
           "PayloadTooLarge", "BadRequest", "UpstreamUnavailable", "error_for_status",
           "LABELS", "REASONS", "explain"]

# Service key -> the name a person reads. Keys are what code compares; labels may change.
LABELS = {
    "socialos": "the Social OS API",
    "socialos-admin": "the Social OS admin API",
    "pusher": "Pusher",
}

# Why an upstream gave no answer (UpstreamUnavailable.reason).
REASONS = ("timeout", "refused", "busy", "circuit_open")


class UpstreamError(Exception):
    """The upstream answered, but not with success (or not with JSON)."""

    status = None

    def __init__(self, message="upstream error", status=None, service="socialos"):
        super().__init__(message)
        self.message = message
        self.service = service
        self.label = LABELS.get(service, service)
        if status is not None:
            self.status = status

    def __str__(self):
        return f"{self.label}: {self.status or '-'} {self.message}"


class BadRequest(UpstreamError):
    status = 400


class Unauthorized(UpstreamError):
    status = 401


class Forbidden(UpstreamError):
    status = 403


class NotFound(UpstreamError):
    status = 404


class PayloadTooLarge(UpstreamError):
    status = 413


class Unimplemented(UpstreamError):
    status = 501


class UpstreamUnavailable(UpstreamError):
    """No answer at all. ``reason`` says why, for the page to say it in words:

    "timeout"       connected (or tried to) and no answer came in time;
    "refused"       could not be reached: connection refused, reset or dropped, DNS, TLS;
    "busy"          not tried: too many of our calls already wait on this upstream;
    "circuit_open"  not tried: it kept failing just now, so calls fail fast for a few seconds.
    """

    def __init__(self, message="no answer", status=None, service="socialos", reason="timeout"):
        super().__init__(message, status=status, service=service)
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        self.reason = reason


_BY_STATUS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 501: Unimplemented}


def error_for_status(status, message, service="socialos", extra=None):
    """The typed error for an HTTP status; ``extra`` adds service-specific ones."""
    cls = (extra or {}).get(status) or _BY_STATUS.get(status, UpstreamError)
    return cls(message, status=status, service=service)


def explain(exc):
    """An upstream failure in words a person understands: which service, and what went wrong."""
    label = exc.label[:1].upper() + exc.label[1:]
    if isinstance(exc, UpstreamUnavailable):
        return {
            "refused": f"{label} could not be reached.",
            "busy": f"{label} is too busy to answer right now.",
            "circuit_open": f"{label} has been failing, so we are not asking it for a few seconds.",
        }.get(exc.reason, f"{label} did not answer in time.")
    if isinstance(exc, Unauthorized):
        return f"{label} did not accept this server's credentials."
    status = f" ({exc.status})" if exc.status else ""
    return f"{label} answered with an error{status}."
