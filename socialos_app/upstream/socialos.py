"""The Social OS API client library: its protocol only.

Two names:

``Client``
    Calls one base URL with one set of credentials: a user's API key, the
    admin account, or (only to create a key) a user's real password. Every
    call returns decoded JSON or raises a typed error from
    ``socialos_app.upstream.errors``.

``SocialOS``
    The factory bound to the settings: hands out a ``Client`` per user (no
    I/O, cheap enough to make per request), the admin client, and creates
    and revokes API keys.

What stays here is the Social OS protocol: base URLs, one quoted path
segment per part, Basic auth. Sending, retries, timeouts, the per-service
guards, decoding and error typing are the transport's
(``socialos_app.upstream.transport.Transport``), which assembly builds once and hands
to the factory; every ``Client`` it makes shares it. The transport serves
every user at once, so it never holds credentials: each call carries its
own Basic auth.
"""

from urllib.parse import quote, urlsplit

from socialos_app.upstream.errors import Unauthorized, UpstreamError
from socialos_app.upstream.transport import Transport

__all__ = ["Client", "SocialOS", "SERVICE", "ADMIN_SERVICE"]

SERVICE = "socialos"              # error and metrics key of the user API
ADMIN_SERVICE = "socialos-admin"  # ... and of the admin API


def _check_base_url(base_url):
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


def _quote_part(part):
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


class Client:
    """Calls one Social OS base URL with one set of credentials.

    ``Client(base_url, username, password)`` then ``client.get("user", name)``
    calls ``GET base_url/user/<name>``. Each path part is percent-quoted on
    its own, so user input in a part cannot reach another resource.

    ``transport`` is the process's ``socialos_app.upstream.transport.Transport`` (a
    client made without one gets a pool of its own); ``timeout`` overrides
    the transport's (connect, read) seconds; ``service`` is the key errors
    and metrics carry ("socialos" or "socialos-admin").

    Returns decoded JSON (``{}`` for an empty answer). Raises
    ``Unauthorized`` (401), ``Forbidden`` (403), ``NotFound`` (404),
    ``Unimplemented`` (501), ``UpstreamError`` for any other failure status,
    a redirect or a non-JSON answer, and ``UpstreamUnavailable`` when the
    upstream gave no answer (see its ``reason``). No message or repr ever
    contains the password.
    """

    __slots__ = ("base_url", "username", "_password", "transport", "_timeout", "service")

    def __init__(self, base_url, username, password, *, transport=None, timeout=None, service=SERVICE):
        self.base_url = _check_base_url(base_url)
        self.username = str(username)
        self._password = str(password)
        self.transport = transport if transport is not None else Transport()
        self._timeout = timeout
        self.service = service

    def __repr__(self):
        return f"<Client {self.base_url} as {self.username!r}>"

    @property
    def timeout(self):
        """The (connect, read) seconds this client's calls wait."""
        return self._timeout or self.transport.timeout

    def url(self, *parts):
        """The absolute URL for these path parts (each quoted as one segment)."""
        return "/".join([self.base_url, *(_quote_part(p) for p in parts)])

    # -- the verbs ---------------------------------------------------------
    def get(self, *parts, **kw):
        """GET base/parts...; see ``request``."""
        return self.request("GET", *parts, **kw)

    def post(self, *parts, **kw):
        """POST base/parts...; never retried once sent (it may not be safe to repeat)."""
        return self.request("POST", *parts, **kw)

    def put(self, *parts, **kw):
        """PUT base/parts...; see ``request``."""
        return self.request("PUT", *parts, **kw)

    def patch(self, *parts, **kw):
        """PATCH base/parts...; never retried once sent."""
        return self.request("PATCH", *parts, **kw)

    def delete(self, *parts, **kw):
        """DELETE base/parts...; see ``request``."""
        return self.request("DELETE", *parts, **kw)

    def search(self, *parts, **kw):
        """SEARCH base/parts... (a real HTTP verb; the query goes in ``params``)."""
        return self.request("SEARCH", *parts, **kw)

    def request(self, method, *parts, params=None, data=None, json=None):
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
        return self.transport.call(self.service, method, url, params=params, data=data, json=json,
                                   auth=auth, timeout=self._timeout, secret=self._password)


class SocialOS:
    """The Social OS API as configured: API URL, admin URL, admin credentials.

    Holds no per-user state, so one instance serves the whole process. Every
    client it makes rides ``transport`` (default: a pool of its own).
    """

    def __init__(self, api_url, admin_url, admin_user, admin_password, *, transport=None, timeout=None):
        self.api_url = _check_base_url(api_url)
        self.admin_url = _check_base_url(admin_url)
        self.admin_user = admin_user
        self._admin_password = admin_password
        self.transport = transport if transport is not None else Transport()
        self._timeout = timeout

    @classmethod
    def from_settings(cls, settings, transport=None):
        """The factory for these ``Settings`` (URLs, admin account) on the process's ``transport``.

        Without a transport, one is made from the same settings (pool size, timeouts).
        """
        return cls(settings.api_url, settings.admin_url, settings.admin_user, settings.admin_password,
                   transport=transport if transport is not None else Transport.from_settings(settings))

    def __repr__(self):
        return f"<SocialOS api={self.api_url} admin={self.admin_url} as {self.admin_user!r}>"

    @property
    def timeout(self):
        """The (connect, read) seconds its clients' calls wait."""
        return self._timeout or self.transport.timeout

    def _client(self, base_url, username, password, service=SERVICE):
        return Client(base_url, username, password, transport=self.transport, timeout=self._timeout,
                      service=service)

    def user(self, username, key_password):
        """A client acting as ``username`` with an API key's password (no I/O)."""
        return self._client(self.api_url, username, key_password)

    def admin(self):
        """A client for the admin API with the admin credentials (no I/O)."""
        return self._client(self.admin_url, self.admin_user, self._admin_password, service=ADMIN_SERVICE)

    def create_key(self, username, password, ttl):
        """Create an API key with the user's real password; ``ttl`` in seconds.

        Returns ``{"token", "password", "expires"}`` (all strings). Raises
        ``Unauthorized`` for bad credentials, ``UpstreamError`` when the
        answer lacks any of those fields.
        """
        answer = self._client(self.api_url, username, password).post("key", data={"ttl": str(int(ttl))})
        fields = ("token", "password", "expires")
        if not isinstance(answer, dict) or not all(
                isinstance(answer.get(f), str) and answer[f] for f in fields):
            raise UpstreamError("answered the key request without a token, password and expiry",
                                service=SERVICE)
        return {f: answer[f] for f in fields}

    def revoke_key(self, username, key_token, key_password):
        """Delete the API key ``key_token``, authenticating with the key itself."""
        return self._client(self.api_url, username, key_password).delete("key", key_token)
