"""A small, spec-exact client for Pusher's HTTP API, channel authorization
and webhook verification.

Signing (Pusher's "HTTP API reference", *Authentication*): every request
carries ``auth_key``, ``auth_timestamp``, ``auth_version=1.0``, ``body_md5``
(hex MD5 of the exact body bytes, when there is a body) and
``auth_signature``: the hex HMAC-SHA256, keyed with the app secret, of

    METHOD \\n PATH \\n k1=v1&k2=v2...

where the query parameters are sorted by *lower-cased* key and joined
*unescaped*; the query is URL-encoded only when it goes on the wire.

Only Pusher's protocol lives here (signing, its limits, authorization,
webhooks). Calls go out through the process's transport
(``socialos_app.upstream.transport.Transport``), shared with the Social OS client, so
every server thread shares a few warm connections to Pusher, and failures
come back as the typed errors of ``socialos_app.upstream.errors`` with service
"pusher"; the secret never appears in an error, a log line or a repr.
Needs requests only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode

from socialos_app.settings import Settings
from socialos_app.upstream.errors import (
    AnswerTooLarge,
    Forbidden,
    NotFound,
    Unauthorized,
    UpstreamError,
    UpstreamUnavailable,
)
from socialos_app.upstream.transport import JSON, OnTransport, Timeout, Transport, clean

__all__ = [
    "Pusher", "WebhookError", "BadRequest", "PayloadTooLarge", "sign_query", "channel_authorization",
    "user_authentication", "valid_channel", "valid_presence_channel", "valid_private_channel", "valid_socket_id",
    "valid_user_id", "MAX_USER_ID",
    "MAX_CHANNELS", "MAX_DATA_BYTES", "MAX_EVENT_NAME", "MAX_BATCH",
    # the shared errors its calls raise, here so a script needs one import
    "UpstreamError", "Unauthorized", "Forbidden", "NotFound", "UpstreamUnavailable", "AnswerTooLarge",
]

SERVICE: Final = "pusher"  # the key its errors, breakers and metrics carry
AUTH_VERSION = "1.0"

# Pusher's documented limits; checked here so a bad call fails fast, before any I/O.
MAX_CHANNELS = 100
MAX_DATA_BYTES = 10 * 1024
MAX_EVENT_NAME = 200
MAX_BATCH = 10
MAX_CHANNEL_NAME = 164
MAX_USER_ID = 200  # as the official libraries check a user id

# Explicit ASCII classes: \d and \w would also accept other scripts' digits and letters.
_CHANNEL_RE = re.compile(rf"\A[A-Za-z0-9_\-=@,.;]{{1,{MAX_CHANNEL_NAME}}}\Z")
_SOCKET_ID_RE = re.compile(r"\A[0-9]{1,20}\.[0-9]{1,20}\Z")
_USER_ID_RE = re.compile(rf"\A[A-Za-z0-9_\-=@,.;]{{1,{MAX_USER_ID}}}\Z")

# Compact JSON: the bytes we hash are the bytes we send, with no stray spaces
# (and channel_data must be byte-identical to what pusher-js forwards).
_COMPACT = (",", ":")


class BadRequest(UpstreamError):
    """400 from Pusher: a call it refuses as malformed (such as ``user_count`` off a presence channel)."""

    status = 400


class PayloadTooLarge(UpstreamError):
    """413 from Pusher: an event over its size limit."""

    status = 413


_EXTRA_ERRORS: Final[dict[int, type[UpstreamError]]] = {400: BadRequest, 413: PayloadTooLarge}


# -- validation -------------------------------------------------------------

def valid_channel(name: object) -> bool:
    """True for a name Pusher accepts: ``[A-Za-z0-9_\\-=@,.;]``, 1..164 characters."""
    return isinstance(name, str) and bool(_CHANNEL_RE.match(name))


def valid_presence_channel(name: object) -> bool:
    """A valid channel name that starts ``presence-`` (and has more after it)."""
    return valid_channel(name) and isinstance(name, str) and name.startswith("presence-") \
        and len(name) > len("presence-")


def valid_private_channel(name: object) -> bool:
    """A valid channel name that starts ``private-`` (and has more after it)."""
    return valid_channel(name) and isinstance(name, str) and name.startswith("private-") \
        and len(name) > len("private-")


def valid_user_id(user_id: object) -> bool:
    """True for a user id Pusher takes in ``user_data`` and in a users/{id} path: 1..200 characters
    of a channel name's alphabet (the official libraries check the same)."""
    return isinstance(user_id, str) and len(user_id) <= MAX_USER_ID and bool(_USER_ID_RE.match(user_id))


def valid_socket_id(socket_id: object) -> bool:
    """True for a Pusher socket id: digits, a dot, digits (bounded length)."""
    return isinstance(socket_id, str) and bool(_SOCKET_ID_RE.match(socket_id))


# -- signing ----------------------------------------------------------------

def _hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def _as_bytes(body: bytes | bytearray | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def sign_query(key: str, secret: str, method: str, path: str, params: Mapping[str, object] | None,
               body: bytes | str | None = None, timestamp: float | None = None) -> dict[str, str]:
    """``params`` plus Pusher's auth parameters and ``auth_signature``, ready to URL-encode.

    ``body`` (bytes or str) must be exactly what will be sent: its MD5 is
    signed. Keys keep their case in the result but are lower-cased for
    signing, as Pusher does on its side.
    """
    query = {str(k): str(v) for k, v in (params or {}).items()}
    query.update({
        "auth_key": key,
        "auth_timestamp": str(int(time.time() if timestamp is None else timestamp)),
        "auth_version": AUTH_VERSION,
    })
    if body:
        query["body_md5"] = hashlib.md5(_as_bytes(body)).hexdigest()
    query.pop("auth_signature", None)

    lowered: dict[str, str] = {}
    for k, v in query.items():
        if k.lower() in lowered:
            # "Info" and "info" would sign as one key but travel as two.
            raise ValueError(f"query parameter given twice (case-insensitively): {k}")
        lowered[k.lower()] = v
    signed = "&".join(f"{k}={v}" for k, v in sorted(lowered.items()))
    query["auth_signature"] = _hmac_hex(secret, f"{method.upper()}\n{path}\n{signed}")
    return query


# -- channel authorization --------------------------------------------------

def channel_authorization(key: str, secret: str, socket_id: str, channel: str, user_id: str | int | None = None,
                          user_info: JSON = None) -> dict[str, str]:
    """Pusher's channel authorization answer for a private- or presence- channel.

    private:  ``{"auth": "KEY:" + HMAC(secret, "SOCKET:CHANNEL")}``
    presence: also ``channel_data`` (compact JSON ``{"user_id", "user_info"}``),
              and the HMAC covers ``SOCKET:CHANNEL:CHANNEL_DATA``.
    Raises ValueError on a bad socket id, channel or (presence) user id.
    """
    if not valid_socket_id(socket_id):
        raise ValueError("invalid socket_id")
    if not valid_channel(channel):
        raise ValueError("invalid channel name")
    if channel.startswith("private-encrypted-"):
        # Would need a shared_secret derived from an encryption master key we don't hold.
        raise ValueError("encrypted channels are not supported")

    if valid_presence_channel(channel):
        # Pusher takes a string or a number; anything else would not round-trip to pusher-js.
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int)) or user_id == "":
            raise ValueError("a presence channel needs a user_id (string or integer)")
        if isinstance(user_id, str) and len(user_id) > 200:
            raise ValueError("user_id too long")
        member: dict[str, JSON] = {"user_id": user_id}
        if user_info is not None:
            member["user_info"] = user_info
        channel_data = json.dumps(member, separators=_COMPACT)
        signature = _hmac_hex(secret, f"{socket_id}:{channel}:{channel_data}")
        return {"auth": f"{key}:{signature}", "channel_data": channel_data}

    if valid_private_channel(channel):
        return {"auth": f"{key}:{_hmac_hex(secret, f'{socket_id}:{channel}')}"}

    # Public channels need no authorization; refusing keeps a mistake visible.
    raise ValueError("only private- and presence- channels are authorized")


# -- user authentication -----------------------------------------------------

def user_authentication(key: str, secret: str, socket_id: str, user_data: Mapping[str, JSON]) -> dict[str, str]:
    """Pusher's user authentication answer (``pusher:signin``) for one connection.

    ``user_data`` needs an ``id`` (``valid_user_id``); it travels as compact JSON
    ``user_data``, and ``auth`` is ``KEY:`` + HMAC-SHA256(secret, ``SOCKET_ID::user::USER_DATA``),
    so the signature binds the user to that one socket.
    Raises ValueError on a bad socket id, a bad id or user data that isn't JSON.
    """
    if not valid_socket_id(socket_id):
        raise ValueError("invalid socket_id")
    if not valid_user_id(user_data.get("id")):
        raise ValueError("user_data needs an id: 1 to 200 of A-Z a-z 0-9 _ - = @ , . ;")
    try:
        encoded = json.dumps(dict(user_data), separators=_COMPACT)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"user_data is not JSON-serializable: {exc}") from None
    return {"auth": f"{key}:{_hmac_hex(secret, f'{socket_id}::user::{encoded}')}", "user_data": encoded}


# -- webhooks ---------------------------------------------------------------

class WebhookError(Exception):
    """A webhook that must be refused: ``status`` 401 (not from Pusher) or 400 (unreadable)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings (as UTF-8, so any text is comparable)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _no_constants(name: str) -> JSON:
    """json.loads' hook for NaN and ±Infinity, which JSON proper doesn't have."""
    raise ValueError(f"{name} is not a JSON number")


# -- the client -------------------------------------------------------------

class Pusher(OnTransport):
    """Signed calls to one Pusher app's HTTP API.

    ``transport`` is the process's ``socialos_app.upstream.transport.Transport`` (a client
    made without one gets a pool of its own); ``timeout`` overrides the
    transport's (connect, read) seconds, and a call takes at most their sum in all.
    """

    def __init__(self, app_id: str | int, key: str, secret: str, base_url: str, *,
                 transport: Transport | None = None, timeout: Timeout | None = None) -> None:
        if not (app_id and key and secret):
            raise ValueError("Pusher needs an app id, a key and a secret")
        super().__init__(transport, timeout)
        self.app_id = str(app_id)
        self.key = key
        self._secret = secret  # underscore: kept out of repr and vars-dumping helpers
        self.base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport | None = None) -> Pusher:
        """The client for the app configured in ``settings`` on the process's ``transport``.

        Without a transport, one is made from the same settings (pool size, timeouts, size limit).
        """
        return cls(settings.pusher_app_id, settings.pusher_key, settings.pusher_secret,
                   settings.pusher_base_url, transport=Transport.given_or_from(transport, settings))

    def __repr__(self) -> str:
        return f"Pusher(app_id={self.app_id!r}, key={self.key!r}, base_url={self.base_url!r})"

    def _request(self, method: str, endpoint: str, path: str, params: Mapping[str, str] | None = None,
                 payload: JSON = None) -> JSON:
        """Sign and send one call; the decoded JSON answer, or a typed error.

        ``endpoint`` ("GET channels", "POST events") keys the call's circuit breaker.
        """
        body = json.dumps(payload, separators=_COMPACT).encode("utf-8") if payload is not None else b""
        query = sign_query(self.key, self._secret, method, path, params or {}, body or None)
        # quote (not quote_plus) and nothing left "safe": the server decodes exactly what we signed.
        url = f"{self.base_url}{path}?{urlencode(query, quote_via=quote, safe='')}"
        headers = {"Content-Type": "application/json"} if body else None
        return self.transport.call(SERVICE, method, url, endpoint=endpoint, data=body or None, headers=headers,
                                   timeout=self._timeout, errors=_EXTRA_ERRORS, secret=self._secret)

    def _app_path(self, *parts: str) -> str:
        return "/".join([f"/apps/{quote(self.app_id, safe='')}", *parts])

    # -- queries -----------------------------------------------------------
    def channel_users(self, channel: str) -> list[str]:
        """The user ids in a presence channel."""
        if not valid_presence_channel(channel):
            raise ValueError("users are only listed for valid presence- channels")
        answer = self._request("GET", "GET channels", self._app_path("channels", channel, "users"))
        users = answer.get("users") if isinstance(answer, dict) else None
        if not isinstance(users, list):
            raise UpstreamError("answer has no users list", status=200, service=SERVICE)
        return [str(user["id"]) for user in users if isinstance(user, dict) and "id" in user]

    def channel_info(self, channel: str, info: Iterable[str] | None = ("user_count", "subscription_count")) -> JSON:
        """``{"occupied": bool, ...}`` plus the attributes asked for in ``info``.

        ``user_count`` is asked only for presence channels: Pusher refuses it for others.
        """
        if not valid_channel(channel):
            raise ValueError("invalid channel name")
        wanted = [a for a in (info or ()) if a != "user_count" or valid_presence_channel(channel)]
        params = {"info": ",".join(wanted)} if wanted else {}
        return self._request("GET", "GET channels", self._app_path("channels", channel), params)

    def channels(self, prefix: str | None = None, info: str | Iterable[str] | None = None) -> JSON:
        """``{name: {attributes}}`` for the occupied channels, optionally by prefix.

        ``info`` may be ``("user_count",)``, which Pusher allows only with a ``presence-`` prefix.
        """
        params: dict[str, str] = {}
        if prefix:
            params["filter_by_prefix"] = prefix
        if info:
            params["info"] = info if isinstance(info, str) else ",".join(info)
        answer = self._request("GET", "GET channels", self._app_path("channels"), params)
        return answer.get("channels", {}) if isinstance(answer, dict) else {}

    # -- events ------------------------------------------------------------
    def trigger(self, channels: str | Iterable[str], name: str, data: JSON, socket_id: str | None = None) -> JSON:
        """Publish one event to up to 100 channels; ``socket_id`` excludes that sender."""
        if isinstance(channels, str):
            channels = [channels]
        if not isinstance(channels, (list, tuple, set, frozenset)):
            raise ValueError("channels must be a channel name or a list of them")
        event = _event(name, data, socket_id)
        names = list(channels)
        if not names:
            raise ValueError("no channels")
        if len(names) > MAX_CHANNELS:
            raise ValueError(f"more than {MAX_CHANNELS} channels")
        for channel in names:
            if not valid_channel(channel):
                raise ValueError("invalid channel name")
        # Key order as in Pusher's worked example: name, channels, data.
        body: dict[str, JSON] = {"name": event["name"], "channels": names, "data": event["data"]}
        if socket_id is not None:
            body["socket_id"] = socket_id
        return self._request("POST", "POST events", self._app_path("events"), payload=body)

    def trigger_batch(self, events: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> JSON:
        """Publish up to 10 events in one call; each ``{"channel", "name", "data", "socket_id"?}``."""
        if not isinstance(events, (list, tuple)):
            raise ValueError("events must be a list")
        items = list(events)
        if not items:
            raise ValueError("no events")
        if len(items) > MAX_BATCH:
            raise ValueError(f"more than {MAX_BATCH} events in a batch")
        batch = []
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("each event must be a dict")
            channel = item.get("channel")
            if not valid_channel(channel):
                raise ValueError("invalid channel name")
            event = _event(item.get("name"), item.get("data"), item.get("socket_id"))
            batch.append({"channel": channel, **event})
        return self._request("POST", "POST events", self._app_path("batch_events"), payload={"batch": batch})

    # -- authorization and webhooks ----------------------------------------
    def authorize(self, socket_id: str, channel: str, user_id: str | int | None = None,
                  user_info: JSON = None) -> dict[str, str]:
        """The channel authorization JSON a pusher-js client needs (see ``channel_authorization``)."""
        return channel_authorization(self.key, self._secret, socket_id, channel, user_id, user_info)

    def authenticate_user(self, socket_id: str, user_id: str, user_info: JSON = None) -> dict[str, str]:
        """The user authentication JSON pusher-js's ``signin`` needs (see ``user_authentication``):
        ``user_data`` is ``{"id": user_id}``, plus ``user_info`` when given."""
        user_data: dict[str, JSON] = {"id": user_id}
        if user_info is not None:
            user_data["user_info"] = user_info
        return user_authentication(self.key, self._secret, socket_id, user_data)

    def terminate_user_connections(self, user_id: str) -> JSON:
        """Close every connection signed in (``pusher:signin``) as ``user_id``; Pusher answers ``{}``.

        Connections that never signed in are not closed, whatever presence channels they are in.
        """
        if not valid_user_id(user_id):
            raise ValueError("invalid user id")
        return self._request("POST", "POST users", self._app_path("users", quote(user_id, safe=""),
                                                                     "terminate_connections"), payload={})

    def verify_webhook(self, key_header: str | None, signature_header: str | None,
                       body: bytes | str | None) -> dict[str, JSON]:
        """The webhook's payload ``{"time_ms", "events"}``, or WebhookError.

        ``key_header`` is X-Pusher-Key, ``signature_header`` X-Pusher-Signature
        (hex HMAC-SHA256 of the raw body); ``body`` the raw bytes as received.
        Its text is cleaned as every upstream answer is (``transport.clean``),
        and NaN or Infinity (not JSON, though Python's parser takes them) make it unreadable.
        """
        raw = _as_bytes(body if body is not None else b"")
        if not key_header or not _same(key_header, self.key):
            raise WebhookError("unknown X-Pusher-Key", 401)
        expected = hmac.new(self._secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()
        if not signature_header or not _same(signature_header.strip(), expected):
            raise WebhookError("bad X-Pusher-Signature", 401)
        # Parsed only once authentic: nobody else gets to exercise the JSON parser.
        try:
            payload = clean(json.loads(raw, parse_constant=_no_constants))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise WebhookError("body is not JSON", 400) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            raise WebhookError("body has no events list", 400)
        return payload


def _event(name: object, data: JSON, socket_id: object) -> dict[str, str]:
    """A checked ``{"name", "data"[, "socket_id"]}``; ``data`` that isn't a string is JSON-encoded."""
    if not isinstance(name, str) or not name:
        raise ValueError("event name must be a non-empty string")
    if len(name) > MAX_EVENT_NAME:
        raise ValueError(f"event name longer than {MAX_EVENT_NAME} characters")
    if not isinstance(data, str):
        try:
            data = json.dumps(data, separators=_COMPACT)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"data is not JSON-serializable: {exc}") from None
    if len(data.encode("utf-8")) > MAX_DATA_BYTES:
        raise ValueError(f"data larger than {MAX_DATA_BYTES} bytes")
    if socket_id is not None and not valid_socket_id(socket_id):
        raise ValueError("invalid socket_id")
    event = {"name": name, "data": data}
    if isinstance(socket_id, str):
        event["socket_id"] = socket_id
    return event
