"""The Social OS API client library: its protocol only.

Three names:

``Client``
    Calls the user API with one set of credentials: a user's API key or
    (only to create a key) a user's real password. Every call returns
    decoded JSON or raises a typed error from ``socialos_app.upstream.errors``.

``AdminClient``
    The same for the admin API with the admin account.

``SocialOS``
    The factory: hands out a ``Client`` per user (no I/O, cheap enough to
    make per request), the admin client when admin credentials were given,
    and creates and revokes API keys.

What stays here is the Social OS protocol: base URLs, one quoted path
segment per part, Basic auth. Sending, retries, the deadline, the size
limit, the guards, decoding and error typing are the transport's
(``socialos_app.upstream.transport.Transport``), which assembly builds once and hands
to the factory; every ``Client`` it makes shares it. The transport serves
every user at once, so it never holds credentials: each call carries its
own Basic auth.

Needs requests only: a script can use it without CherryPy or MongoDB (see
the README's "Using the client in your own code").
"""

from __future__ import annotations

from typing import Any, ClassVar, Final
from urllib.parse import quote, urlsplit

from socialos_app.settings import Settings
from socialos_app.upstream.errors import (
    AnswerTooLarge,
    Forbidden,
    NotFound,
    Unauthorized,
    Unimplemented,
    UpstreamError,
    UpstreamUnavailable,
)
from socialos_app.upstream.transport import JSON, OnTransport, Timeout, Transport

__all__ = ["Client", "AdminClient", "SocialOS", "AdminNotConfigured", "SERVICE", "ADMIN_SERVICE",
           # the errors its calls raise, here so a script needs one import
           "UpstreamError", "Unauthorized", "Forbidden", "NotFound", "Unimplemented", "UpstreamUnavailable",
           "AnswerTooLarge"]

SERVICE: Final = "socialos"              # error, breaker and metrics key of the user API
ADMIN_SERVICE: Final = "socialos-admin"  # ... and of the admin API
_MAX_ENDPOINT: Final = 40


class AdminNotConfigured(RuntimeError):
    """An admin call on a ``SocialOS`` made without the admin URL, user and password."""


def _check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL must be an http:// or https:// URL, not {base_url!r}")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would show up in reprs, logs and error
        # messages; they belong in the username/password arguments.
        raise ValueError("base URL must not contain credentials")
    if parts.query or parts.fragment:
        raise ValueError("base URL must not have a query or fragment")
    return base_url.rstrip("/")


def _quote_part(part: object) -> str:
    """A path part as one percent-quoted segment that cannot leave the base URL."""
    if part is None:
        raise ValueError("a path part cannot be None")
    text = str(part)
    # "/" is quoted below, but "", "." and ".." survive quoting unchanged and
    # would be collapsed by URL normalization (urllib3 removes dot segments),
    # reaching a different resource than the caller named.
    if text in ("", ".", ".."):
        raise ValueError(f"invalid path part: {text!r}")
    return quote(text, safe="")


class Client(OnTransport):
    """Calls the Social OS user API at ``base_url`` with one set of credentials.

    ``Client(base_url, username, password)`` then ``client.get("user", name)``
    calls ``GET base_url/user/<name>``. Each path part is percent-quoted on
    its own, so user input in a part cannot reach another resource.

    ``transport`` is the process's ``Transport`` (a client made without one
    gets a pool of its own); ``timeout`` overrides the transport's
    (connect, read) seconds, and a call takes at most their sum in all.

    Returns decoded JSON (``{}`` for an empty answer), every string in it
    cleaned (see ``transport.clean``). Raises ``Unauthorized`` (401),
    ``Forbidden`` (403), ``NotFound`` (404), ``Unimplemented`` (501),
    ``UpstreamError`` for any other failure status (with ``retry_after``
    when the upstream sent ``Retry-After``), a redirect or a non-JSON
    answer, ``AnswerTooLarge`` past the transport's size limit, and
    ``UpstreamUnavailable`` when no answer came in time (see its
    ``reason``). No message or repr ever contains the password.
    """

    __slots__ = ("base_url", "username", "_password")
    service: ClassVar[str] = SERVICE

    def __init__(self, base_url: str, username: str, password: str, *, transport: Transport | None = None,
                 timeout: Timeout | None = None) -> None:
        super().__init__(transport, timeout)
        self.base_url = _check_base_url(base_url)
        self.username = str(username)
        self._password = str(password)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} as {self.username!r}>"

    def url(self, *parts: object) -> str:
        """The absolute URL for these path parts (each quoted as one segment)."""
        return "/".join([self.base_url, *(_quote_part(p) for p in parts)])

    # -- the verbs ---------------------------------------------------------
    def get(self, *parts: object, **kw: Any) -> JSON:
        """GET base/parts...; see ``request``."""
        return self.request("GET", *parts, **kw)

    def post(self, *parts: object, **kw: Any) -> JSON:
        """POST base/parts...; never retried once sent (it may not be safe to repeat)."""
        return self.request("POST", *parts, **kw)

    def put(self, *parts: object, **kw: Any) -> JSON:
        """PUT base/parts...; see ``request``."""
        return self.request("PUT", *parts, **kw)

    def patch(self, *parts: object, **kw: Any) -> JSON:
        """PATCH base/parts...; never retried once sent."""
        return self.request("PATCH", *parts, **kw)

    def delete(self, *parts: object, **kw: Any) -> JSON:
        """DELETE base/parts...; see ``request``."""
        return self.request("DELETE", *parts, **kw)

    def search(self, *parts: object, **kw: Any) -> JSON:
        """SEARCH base/parts... (a real HTTP verb; the query goes in ``params``)."""
        return self.request("SEARCH", *parts, **kw)

    def request(self, method: str, *parts: object, params: dict[str, str] | None = None, data: Any = None,
                json: JSON = None) -> JSON:
        """Call ``method`` on base/parts... and return the decoded JSON answer.

        ``params`` is the query string, ``data`` a form body, ``json`` a JSON
        body. Raises ValueError for a path part of "", "." or "..".
        """
        url = self.url(*parts)
        if ":" in self.username:
            # Basic auth cannot carry such a name (the colon separates the
            # password); no upstream account can match, so say so plainly.
            raise Unauthorized("a username cannot contain ':'", service=self.service)
        # Credentials as UTF-8 bytes (requests would use latin-1 for str).
        auth = (self.username.encode("utf-8"), self._password.encode("utf-8"))
        # The breaker's key: the verb and the first part ("POST key", "SEARCH user"), so a
        # failing search never fails fast a sign-in.
        endpoint = f"{method.upper()} {str(parts[0])[:_MAX_ENDPOINT] if parts else ''}".rstrip()
        return self.transport.call(self.service, method, url, endpoint=endpoint, params=params, data=data,
                                   json=json, auth=auth, timeout=self._timeout, secret=self._password)


class AdminClient(Client):
    """A ``Client`` for the admin API: its errors and metrics say "socialos-admin"."""

    __slots__ = ()
    service: ClassVar[str] = ADMIN_SERVICE


class SocialOS(OnTransport):
    """The Social OS API as configured: its API URL and, for admin calls, the admin URL and account.

    Holds no per-user state, so one instance serves the whole process. Every
    client it makes rides ``transport`` (default: a pool of its own). A
    script acting only as users leaves the admin arguments out; ``admin()``
    then raises ``AdminNotConfigured``.
    """

    __slots__ = ("api_url", "admin_url", "admin_user", "_admin_password")

    def __init__(self, api_url: str, admin_url: str | None = None, admin_user: str | None = None,
                 admin_password: str | None = None, *, transport: Transport | None = None,
                 timeout: Timeout | None = None) -> None:
        super().__init__(transport, timeout)
        self.api_url = _check_base_url(api_url)
        self.admin_url = _check_base_url(admin_url) if admin_url else None
        self.admin_user = admin_user or None
        self._admin_password = admin_password or None

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport | None = None) -> SocialOS:
        """The factory for these ``Settings`` (URLs, admin account) on the process's ``transport``.

        Without a transport, one is made from the same settings (pool size, timeouts, size limit).
        """
        return cls(settings.api_url, settings.admin_url, settings.admin_user, settings.admin_password,
                   transport=Transport.given_or_from(transport, settings))

    def __repr__(self) -> str:
        admin = f" admin={self.admin_url} as {self.admin_user!r}" if self.admin_url else ""
        return f"<SocialOS api={self.api_url}{admin}>"

    def user(self, username: str, key_password: str) -> Client:
        """A client acting as ``username`` with an API key's password (no I/O)."""
        return Client(self.api_url, username, key_password, transport=self.transport, timeout=self._timeout)

    def admin(self) -> AdminClient:
        """A client for the admin API with the admin credentials (no I/O).

        Raises ``AdminNotConfigured`` when this factory was made without them.
        """
        if not (self.admin_url and self.admin_user and self._admin_password):
            raise AdminNotConfigured("admin calls need SocialOS(api_url, admin_url, admin_user, admin_password)")
        return AdminClient(self.admin_url, self.admin_user, self._admin_password, transport=self.transport,
                           timeout=self._timeout)

    def create_key(self, username: str, password: str, ttl: int) -> dict[str, str]:
        """Create an API key with the user's real password; ``ttl`` in seconds.

        Returns ``{"token", "password", "expires"}`` (all strings). Raises
        ``Unauthorized`` for bad credentials, ``UpstreamError`` when the
        answer lacks any of those fields.
        """
        answer = Client(self.api_url, username, password, transport=self.transport,
                        timeout=self._timeout).post("key", data={"ttl": str(int(ttl))})
        fields = ("token", "password", "expires")
        if not isinstance(answer, dict) or not all(
                isinstance(answer.get(f), str) and answer[f] for f in fields):
            raise UpstreamError("answered the key request without a token, password and expiry",
                                service=SERVICE)
        return {f: answer[f] for f in fields}

    def revoke_key(self, username: str, key_token: str, key_password: str) -> JSON:
        """Delete the API key ``key_token``, authenticating with the key itself."""
        return self.user(username, key_password).delete("key", key_token)
