"""Typed errors for upstream calls (Social OS API and Pusher).

Each carries the HTTP status and the upstream's own message, never the
credentials used for the call, so it is safe to log or show.
"""

__all__ = ["UpstreamError", "Unauthorized", "Forbidden", "NotFound", "Unimplemented",
           "PayloadTooLarge", "BadRequest", "UpstreamUnavailable", "error_for_status"]


class UpstreamError(Exception):
    """The upstream answered, but not with success (or not with JSON)."""

    status = None

    def __init__(self, message="upstream error", status=None, service="Social OS API"):
        super().__init__(message)
        self.message = message
        self.service = service
        if status is not None:
            self.status = status

    def __str__(self):
        return f"{self.service}: {self.status or '-'} {self.message}"


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
    """No answer in time, or no connection at all."""


_BY_STATUS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 501: Unimplemented}


def error_for_status(status, message, service="Social OS API", extra=None):
    """The typed error for an HTTP status; ``extra`` adds service-specific ones."""
    cls = (extra or {}).get(status) or _BY_STATUS.get(status, UpstreamError)
    return cls(message, status=status, service=service)
