"""The app's CherryPy request and response classes.

They change what CherryPy does before any tool or config runs, where a
hostile or merely careless neighbour could otherwise take the site down:

- cookies are read leniently: another app's cookie on the domain whose
  name Python's parser rejects (``AMCV_...@AdobeOrg``) is skipped, never a
  400 for every page;
- a missing or malformed Host header is a 400 page of ours, and nothing is
  ever built from an unparseable one;
- no error page shows a traceback and no answer names the server version;
- the client's address is the connection's, or with ``TRUSTED_PROXY`` the
  one trusted proxies added to X-Forwarded-For (``addresses.client_address``),
  set before anything (a log line, a throttle, an error page) reads it;
- every answer carries the security headers, the ones made before any tool
  runs (a bad Host) and cheroot's own plain answers
  (``HTTPServer``) included.
"""

import re
from http.cookies import CookieError, SimpleCookie
from typing import Any, ClassVar, cast

import cherrypy
from cheroot import errors as cheroot_errors
from cheroot.server import HTTPConnection
from cherrypy import _cprequest
from cherrypy._cpwsgi_server import CPWSGIHTTPRequest, CPWSGIServer
from cherrypy.lib import httputil

from socialos_app.addresses import TrustedProxies, client_address
from socialos_app.web.errorpages import error_page, unexpected_error

__all__ = ["ERROR_HEADERS", "HTTPServer", "Request", "Response", "ResponseHeaders", "parse_cookies", "read_body",
           "request_class"]

# The headers of an answer no tool has seen: a strict policy (error pages load our stylesheet at most).
ERROR_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# host[:port], a bracketed IPv6 literal, or nothing else
_HOST = re.compile(r"(?:[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
MAX_COOKIES = 64


def parse_cookies(header: str, into: SimpleCookie) -> None:
    """Add each ``name=value`` pair of a Cookie header to ``into`` (a SimpleCookie).

    Pairs that aren't one, or that the standard library refuses, are skipped
    one by one; the first of duplicate names wins (the most specific path).
    """
    for count, pair in enumerate(header.split(";")):
        if count >= MAX_COOKIES:
            break
        name, sep, value = pair.strip().partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or name in into:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        try:
            into[name] = value
        except CookieError:
            continue  # a name the standard library won't hold: not one of ours anyway


class Request(_cprequest.Request):
    """CherryPy's request, lenient with cookies and strict with Host; ``request_class`` makes the app's."""

    header_list: list[tuple[str, str]]  # set by CherryPy for each request
    trusted_proxies: ClassVar[TrustedProxies] = TrustedProxies()
    show_tracebacks = False
    show_mismatched_params = False
    # Class defaults, so errors raised before the app's config applies
    # (bad headers, a missing Host) get our page too.
    error_page = {"default": error_page}
    error_response = staticmethod(unexpected_error)

    def process_headers(self) -> None:
        # The address first: whatever fails below is logged (and throttled) under the right one.
        forwarded = [value for name, value in self.header_list if name.lower() == "x-forwarded-for"]
        if self.trusted_proxies and forwarded:
            self.remote.ip = client_address(self.remote.ip or "", ",".join(forwarded), self.trusted_proxies)
        try:
            self._check_headers()
        except cherrypy.HTTPError:
            cherrypy.serving.response.headers.update(ERROR_HEADERS)  # no tool will run for this answer
            raise

    def _check_headers(self) -> None:
        cookie_headers = [value for name, value in self.header_list if name.lower() == "cookie"]
        self.header_list = [(n, v) for n, v in self.header_list if n.lower() != "cookie"]
        try:
            super().process_headers()
        finally:
            self.header_list += [("Cookie", v) for v in cookie_headers]
        if cookie_headers:
            self.headers["Cookie"] = "; ".join(cookie_headers)
        self.cookie = SimpleCookie()
        for value in cookie_headers:
            parse_cookies(value, self.cookie)
        host = dict.get(self.headers, "Host")
        if host is not None and not _HOST.fullmatch(str(host)):
            raise cherrypy.HTTPError(400, "The Host header of this request is not a host name.")


def request_class(trusted_proxies: TrustedProxies) -> type[Request]:
    """The app's request class: client addresses as ``trusted_proxies`` say."""
    return cast(type[Request], type("Request", (Request,), {"trusted_proxies": trusted_proxies}))


def read_body(limit: int) -> bytes:
    """The request's raw body, at most ``limit`` bytes; a 4xx page for one that is too big or malformed.

    For handlers that read the body themselves (the webhook): CherryPy's
    parsers never see it, so a chunked body's faults (a chunk size of 2^63,
    a size that isn't hex, a body that stops) are answered here.
    """
    request = cherrypy.serving.request
    try:
        body = cast(bytes, request.body.read(limit + 1))
    except cheroot_errors.MaxSizeExceeded:
        raise cherrypy.HTTPError(413, "This request's body is larger than this server accepts.") from None
    except (ValueError, EOFError):
        raise cherrypy.HTTPError(400, "This request's body could not be read.") from None
    except OSError as exc:
        if "Too Large" in str(exc):  # cheroot's word for a chunk size past its limit (e.g. 2^63)
            raise cherrypy.HTTPError(413, "This request's body is larger than this server accepts.") from None
        raise cherrypy.HTTPError(408, "This request's body arrived too slowly or not at all.") from None
    if len(body) > limit:
        raise cherrypy.HTTPError(413, f"This request's body is larger than the {limit} bytes accepted here.")
    return body


class ResponseHeaders(httputil.HeaderMap):
    """CherryPy's response header map, writing header names and the values every answer
    shares (``constant``: the security headers, the server name) from bytes encoded once.

    The bytes are CherryPy's own encoding of each (``encode_header_item``),
    so the answer on the wire is the same; any other value is encoded per answer as CherryPy does.
    """

    _encoded: ClassVar[dict[str, bytes]] = {}
    _MAX_KNOWN = 512  # names are the app's own; values only ever ``constant`` ones: a bound all the same

    @classmethod
    def constant(cls, *values: str) -> None:
        """Encode ``values`` once: answers that carry them write these bytes."""
        for value in values:
            if len(cls._encoded) < cls._MAX_KNOWN:
                cls._encoded[value] = cls.encode_header_item(value)

    def output(self) -> list[tuple[bytes, bytes]]:
        """The headers as (name, value) bytes for the wire, as CherryPy's ``output``."""
        known, out = self._encoded, []
        for name, value in self.items():
            encoded_name = known.get(name)
            if encoded_name is None:
                encoded_name = self.encode_header_item(name)
                if len(known) < self._MAX_KNOWN:
                    known[name] = encoded_name  # a header name: set by code, never taken from a request
            encoded = known.get(value) if isinstance(value, str) else None
            if encoded is None:
                encoded = self.encode_header_item(value if isinstance(value, (str, bytes)) else str(value))
            out.append((encoded_name, encoded))
        return out


ResponseHeaders.constant("socialos-app", "text/html;charset=utf-8", *ERROR_HEADERS.values())


class Response(_cprequest.Response):
    """CherryPy's response without the server banner; its headers a ``ResponseHeaders``."""

    headers: httputil.HeaderMap  # set by CherryPy's __init__, replaced in ours

    def __init__(self) -> None:
        super().__init__()
        headers = ResponseHeaders()
        dict.update(headers, self.headers)  # CherryPy's defaults (Content-Type, Date), names already Title-Case
        dict.__setitem__(headers, "Server", "socialos-app")
        self.headers = headers


# -- cheroot's own answers ---------------------------------------------------------------------
class _PlainAnswers(CPWSGIHTTPRequest):
    """cheroot's request, whose own short answers (413 over the body limit, 400 on a malformed
    request line or header, 414, 505) carry the security headers too."""

    def simple_response(self, status: Any, msg: Any = "") -> None:
        status = str(status)
        body = msg.encode("ISO-8859-1", "replace") if isinstance(msg, str) else bytes(msg or b"")
        lines = [f"{self.server.protocol} {status}", f"Content-Length: {len(body)}", "Content-Type: text/plain",
                 "Server: socialos-app", *(f"{name}: {value}" for name, value in ERROR_HEADERS.items())]
        if status[:3] in ("413", "414"):
            self.close_connection = True  # the rest of the request is not read: the connection can't go on
            if self.response_protocol == "HTTP/1.1":
                lines.append("Connection: close")
        try:
            self.conn.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("ISO-8859-1") + body)
        except OSError as exc:
            if exc.args and exc.args[0] not in cheroot_errors.socket_errors_to_ignore:
                raise


class _Connection(HTTPConnection):
    RequestHandlerClass = _PlainAnswers


class HTTPServer(CPWSGIServer):
    """CherryPy's server (``server.instance``) with ``_PlainAnswers`` for cheroot's own answers."""

    ConnectionClass = _Connection

    def __init__(self, adapter: Any) -> None:
        super().__init__(adapter)
        # CherryPy's __init__ sets CPWSGIHTTPRequest on the connection class; ours is a subclass of it.
        self.ConnectionClass.RequestHandlerClass = _PlainAnswers
