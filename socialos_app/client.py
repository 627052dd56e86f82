"""The Social OS API client library.

Two names:

``Client``
    Calls one base URL with one set of credentials: a user's API key, the
    admin account, or (only to create a key) a user's real password. Every
    call returns decoded JSON or raises a typed error from
    ``socialos_app.errors``.

``SocialOS``
    The factory bound to the settings: hands out a ``Client`` per user (no
    I/O, cheap enough to make per request), the admin client, and creates
    and revokes API keys.

All clients ride on the process-wide pooled session (``socialos_app.http``)
so every thread shares a few warm keep-alive connections. That session
serves every user at once, so it never holds credentials or cookies:
each call carries its own Basic auth.
"""

import json as jsonlib
import re
from urllib.parse import quote, urlsplit

import requests
import urllib3

from socialos_app import http as shared_http
from socialos_app.errors import Unauthorized, UpstreamError, UpstreamUnavailable, error_for_status

__all__ = ["Client", "SocialOS", "DEFAULT_TIMEOUT"]

# (connect, read) seconds. The connect timeout sits just above a multiple of
# 3 s, the TCP SYN retransmission interval, as requests' docs advise.
DEFAULT_TIMEOUT = (3.05, 10.0)

MAX_MESSAGE = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _short(text):
    """One printable line of at most MAX_MESSAGE characters (messages end up in logs and pages)."""
    text = _CONTROL.sub(" ", str(text)).strip()
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 1] + "…"
    return text


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


def _timed_out(exc):
    """True when a connection error is really a timeout.

    When urllib3 gives up after retrying read timeouts, requests reports a
    ConnectionError wrapping MaxRetryError(reason=ReadTimeoutError). A refused
    connection is NewConnectionError, which urllib3 files under timeouts too.
    """
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", inner)  # a timeout while reading the body comes bare
    return (isinstance(reason, urllib3.exceptions.TimeoutError)
            and not isinstance(reason, urllib3.exceptions.NewConnectionError))


class Client:
    """Calls one Social OS base URL with one set of credentials.

    ``Client(base_url, username, password)`` then ``client.get("user", name)``
    calls ``GET base_url/user/<name>``. Each path part is percent-quoted on
    its own, so user input in a part cannot reach another resource.

    ``http`` is a ``requests.Session``; by default the process-wide pooled
    one (looked up per call, so ``socialos_app.http.reset()`` takes effect).
    ``timeout`` is requests' ``(connect, read)`` in seconds.

    Returns decoded JSON (``{}`` for an empty answer). Raises
    ``Unauthorized`` (401), ``Forbidden`` (403), ``NotFound`` (404),
    ``Unimplemented`` (501), ``UpstreamError`` for any other failure status
    or a non-JSON answer, and ``UpstreamUnavailable`` when the upstream
    cannot be reached or does not answer in time. No message or repr ever
    contains the password.
    """

    __slots__ = ("base_url", "username", "_password", "_http", "timeout", "service")

    def __init__(self, base_url, username, password, *, http=None, timeout=DEFAULT_TIMEOUT,
                 service="Social OS API"):
        self.base_url = _check_base_url(base_url)
        self.username = str(username)
        self._password = str(password)
        self._http = http
        self.timeout = timeout
        self.service = service

    def __repr__(self):
        return f"<Client {self.base_url} as {self.username!r}>"

    @property
    def http(self):
        """The requests session the calls go through."""
        return self._http if self._http is not None else shared_http.pooled_session()

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
        method = method.upper()
        url = self.url(*parts)
        if ":" in self.username:
            # Basic auth cannot carry such a name (the colon separates the
            # password); no upstream account can match, so say so plainly.
            raise Unauthorized("a username cannot contain ':'", service=self.service)
        session = self.http
        # Prepare the request on its own rather than through the session, so
        # the shared session's cookie jar is never merged in: a cookie one
        # user's call received must not ride along on another user's call.
        # Credentials are UTF-8 bytes (requests would use latin-1 for str).
        try:
            prepared = requests.Request(
                method, url, params=params, data=data, json=json,
                headers={**session.headers, "Accept": "application/json"},
                auth=(self.username.encode("utf-8"), self._password.encode("utf-8")),
            ).prepare()
            # No redirects: an API has no reason to send us elsewhere, and the
            # credentials must not follow one.
            response = session.send(prepared, timeout=self.timeout, allow_redirects=False)
        except requests.Timeout:
            raise self._unavailable("did not answer in time") from None
        except requests.exceptions.SSLError:
            raise self._unavailable("could not be reached: the TLS handshake failed") from None
        except (requests.ConnectionError, requests.exceptions.RetryError,
                requests.exceptions.ChunkedEncodingError) as exc:
            if _timed_out(exc):
                raise self._unavailable("did not answer in time") from None
            raise self._unavailable("could not be reached") from None
        except requests.RequestException as exc:
            raise UpstreamError(self._scrub(f"request failed: {type(exc).__name__}"),
                                service=self.service) from None
        with response:
            return self._decode(method, response)

    # -- internals ---------------------------------------------------------
    def _unavailable(self, what):
        return UpstreamUnavailable(f"{what} ({urlsplit(self.base_url).netloc})", service=self.service)

    def _scrub(self, text):
        """Never let the password reach a message, even if an upstream echoes it."""
        text = _short(text)
        if self._password and self._password in text:
            text = text.replace(self._password, "****")
        return text

    def _decode(self, method, response):
        status = response.status_code
        body = response.content
        payload = None
        decoded = False
        if body.strip():
            try:
                payload = jsonlib.loads(body)
                decoded = True
            except ValueError:  # includes UnicodeDecodeError
                pass
        if 200 <= status < 300:
            if not body.strip():
                return {}
            if not decoded:
                kind = response.headers.get("Content-Type", "no content type").split(";")[0]
                raise UpstreamError(self._scrub(f"answered with something that is not JSON ({kind})"),
                                    status=status, service=self.service)
            return payload
        if 300 <= status < 400:
            raise UpstreamError(self._scrub(f"answered {method} with a redirect, which is not followed"),
                                status=status, service=self.service)
        message = None
        if isinstance(payload, dict):
            for field in ("error", "message"):
                if isinstance(payload.get(field), str) and payload[field].strip():
                    message = payload[field]
                    break
        if message is None:
            message = response.reason or f"HTTP {status}"
        raise error_for_status(status, self._scrub(message), service=self.service)


class SocialOS:
    """The Social OS API as configured: API URL, admin URL, admin credentials.

    Holds no per-user state, so one instance serves the whole process.
    """

    def __init__(self, api_url, admin_url, admin_user, admin_password, *,
                 timeout=DEFAULT_TIMEOUT, http=None):
        self.api_url = _check_base_url(api_url)
        self.admin_url = _check_base_url(admin_url)
        self.admin_user = admin_user
        self._admin_password = admin_password
        self.timeout = timeout
        self._http = http

    @classmethod
    def from_settings(cls, settings):
        """The factory for these ``Settings`` (URLs, admin account, timeouts, pool size)."""
        return cls(
            settings.api_url, settings.admin_url, settings.admin_user, settings.admin_password,
            timeout=(settings.upstream_connect_timeout, settings.upstream_read_timeout),
            http=shared_http.pooled_session(settings.thread_pool),
        )

    def __repr__(self):
        return f"<SocialOS api={self.api_url} admin={self.admin_url} as {self.admin_user!r}>"

    def _client(self, base_url, username, password, service="Social OS API"):
        return Client(base_url, username, password, http=self._http, timeout=self.timeout,
                      service=service)

    def user(self, username, key_password):
        """A client acting as ``username`` with an API key's password (no I/O)."""
        return self._client(self.api_url, username, key_password)

    def admin(self):
        """A client for the admin API with the admin credentials (no I/O)."""
        return self._client(self.admin_url, self.admin_user, self._admin_password,
                            service="Social OS admin API")

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
                                service="Social OS API")
        return {f: answer[f] for f in fields}

    def revoke_key(self, username, key_token, key_password):
        """Delete the API key ``key_token``, authenticating with the key itself."""
        return self._client(self.api_url, username, key_password).delete("key", key_token)
