"""Typed errors for upstream calls (the Social OS API, its admin API, Pusher).

Each carries the service it came from twice: ``service``, a stable key to
branch on ("socialos", "socialos-admin", "pusher"), and ``label``, the
name to show a person ("the Social OS API"). ``service`` has no default:
a new client that forgot to name itself would otherwise pass for another
one (an app signs a user out on the Social OS API's 401, not on anyone's).
Each also carries the HTTP status (None when no status came back), the
upstream's own message, never the credentials used for the call, so it is
safe to log or show, and ``retry_after``: the seconds the upstream asked
us to wait (its ``Retry-After``), or None.

Only the errors every client raises live here; a client with statuses of
its own (Pusher's 400 and 413) defines their classes beside it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["UpstreamError", "Unauthorized", "Forbidden", "NotFound", "Unimplemented",
           "UpstreamUnavailable", "AnswerTooLarge", "error_for_status", "LABELS", "REASONS", "explain"]

# Service key -> the name a person reads. Keys are what code compares; labels may change.
LABELS: Final[dict[str, str]] = {
    "socialos": "the Social OS API",
    "socialos-admin": "the Social OS admin API",
    "pusher": "Pusher",
}

# Why an upstream gave no answer (UpstreamUnavailable.reason).
REASONS: Final = ("timeout", "refused", "busy", "circuit_open")


class UpstreamError(Exception):
    """The upstream answered, but not with success (or not with JSON)."""

    status: int | None = None

    def __init__(self, message: str, *, service: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        if not service:
            raise ValueError("an upstream error must name its service")
        self.message = message
        self.service = service
        self.label = LABELS.get(service, service)
        self.retry_after = retry_after
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.label}: {self.status or '-'} {self.message}"


class Unauthorized(UpstreamError):
    """401: the credentials were not accepted (for a user's key: it expired or was revoked)."""

    status = 401


class Forbidden(UpstreamError):
    """403: the credentials are good but may not do this."""

    status = 403


class NotFound(UpstreamError):
    """404: no such resource."""

    status = 404


class Unimplemented(UpstreamError):
    """501: the upstream does not do this verb on this path."""

    status = 501


class AnswerTooLarge(UpstreamError):
    """The answer was bigger than the size limit, so it was not read (``limit`` bytes)."""

    def __init__(self, message: str, *, service: str, limit: int) -> None:
        super().__init__(message, service=service)
        self.limit = limit


class UpstreamUnavailable(UpstreamError):
    """No answer at all. ``reason`` says why, for the page to say it in words:

    "timeout"       connected (or tried to) and no whole answer came in time;
    "refused"       could not be reached: connection refused, reset or dropped, DNS, TLS;
    "busy"          not tried: too many of our calls already wait on this upstream;
    "circuit_open"  not tried: it kept failing just now, so calls fail fast for a few seconds.
    """

    def __init__(self, message: str, *, service: str, reason: str, status: int | None = None) -> None:
        super().__init__(message, service=service, status=status)
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        self.reason = reason


_BY_STATUS: Final[dict[int, type[UpstreamError]]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 501: Unimplemented}


def error_for_status(status: int, message: str, *, service: str,
                     extra: dict[int, type[UpstreamError]] | None = None,
                     retry_after: float | None = None) -> UpstreamError:
    """The typed error for an HTTP status; ``extra`` adds service-specific ones."""
    cls = (extra or {}).get(status) or _BY_STATUS.get(status, UpstreamError)
    return cls(message, status=status, service=service, retry_after=retry_after)


def explain(exc: UpstreamError) -> str:
    """An upstream failure in words a person understands: which service, and what went wrong."""
    label = exc.label[:1].upper() + exc.label[1:]
    if isinstance(exc, UpstreamUnavailable):
        return {
            "refused": f"{label} could not be reached.",
            "busy": f"{label} is too busy to answer right now.",
            "circuit_open": f"{label} has been failing, so we are not asking it for a few seconds.",
        }.get(exc.reason, f"{label} did not answer in time.")
    if isinstance(exc, AnswerTooLarge):
        return f"{label} sent an answer too large to read."
    if isinstance(exc, Unauthorized):
        return f"{label} did not accept this server's credentials."
    status = f" ({exc.status})" if exc.status else ""
    return f"{label} answered with an error{status}."
