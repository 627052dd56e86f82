"""What the pages share: notice codes, bounded text from the query, upstream answers read safely, device rows.

After an action a page redirects with a *notice code* (``?notice=signed-out``):
the next page looks the code up in ``NOTICES``, so a message is always one of
ours, never text from the URL.
"""

import json
from typing import Any
from urllib.parse import urlencode

import cherrypy

from socialos_app.accounts.useragent import describe
from socialos_app.sessions import SessionRecord
from socialos_app.upstream.pusher import Pusher, valid_socket_id
from socialos_app.web.render import plural
from socialos_app.web.services import Services
from socialos_app.web.tools import SignedIn

__all__ = ["MAX_QUERY", "NOTICES", "as_dict", "device_row", "json_answer", "notice_text", "page_number",
           "pusher_caller", "text", "url", "with_notice"]

MAX_QUERY = 200

# The one-time messages, by code. ``{n}`` is the count passed as ``n``.
NOTICES: dict[str, str | tuple[str, str]] = {
    "signed-out": "You have signed out.",
    "expired": "Your session has ended. Please sign in again.",
    # The session tool can't tell these two apart: the record is gone either way.
    "ended": "This browser was signed out: its session was ended from another device, or it expired. "
             "Please sign in again.",
    # Why, when the security history knows (web.tools.resolve_session asks it).
    "ended-you": "This browser was signed out from another of your devices. Please sign in again.",
    "ended-others": "This browser was signed out by “Sign out everywhere else” on another of your devices. "
                    "Please sign in again.",
    "ended-admin": "This browser was signed out by an administrator. Please sign in again.",
    "ended-limit": "This browser was signed out because your account signed in on another device and went "
                   "over the limit of signed-in devices; the least recently used one is signed out. "
                   "Please sign in again.",
    "ended-tampered": "This browser was signed out because its session's stored record had been altered. "
                      "Please sign in again.",
    "device-ended": ("That device was already signed out.", "That device has been signed out."),
    "others-ended": ("There were no other devices to sign out.",
                     "Signed out {n}. This is now your only signed-in device."),
    "user-ended": ("That user had no active sessions.", "Ended {n} of that user."),
}
# What ``{n}`` counts, per code.
_COUNTED = {"others-ended": "other device", "user-ended": "session"}


def notice_text(code: object, n: object = None) -> str:
    """The message for a notice code, or "" for anything we didn't write ourselves."""
    entry = NOTICES.get(code) if isinstance(code, str) else None
    if entry is None:
        return ""
    if isinstance(entry, str):
        return entry
    try:
        count = int(n) if isinstance(n, (str, int)) else 1
    except ValueError:
        count = 1
    count = max(0, min(count, 10_000))
    message = entry[0] if count == 0 else entry[1]
    return message.replace("{n}", plural(count, _COUNTED.get(code, "item") if isinstance(code, str) else "item"))


def with_notice(path: str, code: str, n: int | None = None, **query: object) -> str:
    """``path`` with a notice code (and its count) in the query string."""
    return url(path, **query, notice=code, n=None if n is None else str(int(n)))


def url(path: str, **query: object) -> str:
    """``path`` with the non-empty ``query`` values, URL-encoded."""
    params = {k: v for k, v in query.items() if v}
    return f"{path}?{urlencode(params)}" if params else path


def as_dict(answer: object) -> dict[str, Any]:
    """An upstream answer that should be an object; anything else counts as empty."""
    return answer if isinstance(answer, dict) else {}


def page_number(value: object) -> int:
    """A page number from the query: 1 to 10,000, 1 for anything else."""
    try:
        return max(1, min(int(value), 10_000)) if isinstance(value, (str, int)) else 1
    except ValueError:
        return 1


def text(value: object, limit: int = MAX_QUERY) -> str:
    """A query or form value as bounded, stripped text ("" for a list or anything else)."""
    return value.strip()[:limit] if isinstance(value, str) else ""


def device_row(record: SessionRecord, current_id: str) -> dict[str, Any]:
    """What a devices table shows of a session record."""
    return {"handle": record.handle, "label": describe(record.user_agent),
            "user_agent": record.user_agent, "address": record.address or "unknown address",
            "created": record.created, "accessed": record.accessed,
            "current": record.id == current_id}


def json_answer(status: int, payload: object, retry_after: str | None = None) -> bytes:
    """A JSON answer (for pusher-js, which reads these, not pages) with its status."""
    response = cherrypy.serving.response
    response.status = status
    response.headers["Content-Type"] = "application/json"
    if retry_after:
        response.headers["Retry-After"] = retry_after
    return json.dumps(payload).encode()


def pusher_caller(services: Services, socket_id: object) -> tuple[SignedIn, Pusher] | bytes:
    """What ``/pusher/auth`` and ``/pusher/user-auth`` check first: a POST, a live session,
    Pusher configured, a well-formed socket id. The user and the client, or the JSON refusal."""
    if cherrypy.serving.request.method != "POST":
        cherrypy.serving.response.headers["Allow"] = "POST"
        return json_answer(405, {"error": "POST only"})
    user = cherrypy.serving.request.signed_in
    if user is None:
        return json_answer(403, {"error": "sign in first"})
    if services.pusher is None:
        return json_answer(503, {"error": "Pusher is not configured"})
    if not isinstance(socket_id, str) or not valid_socket_id(socket_id):
        return json_answer(400, {"error": "bad socket_id"})
    return user, services.pusher
