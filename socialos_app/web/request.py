"""The app's CherryPy request and response classes.

They change what CherryPy does before any tool or config runs, where a
hostile or merely careless neighbour could otherwise take the site down:

- cookies are read leniently: another app's cookie on the domain whose
  name Python's parser rejects (``AMCV_...@AdobeOrg``) is skipped, never a
  400 for every page;
- a missing or malformed Host header is a 400 page of ours, and nothing is
  ever built from an unparseable one;
- no error page shows a traceback and no answer names the server version.
"""

import re
from http.cookies import CookieError, SimpleCookie

import cherrypy
from cherrypy import _cprequest

from socialos_app.web.errorpages import error_page, unexpected_error

__all__ = ["Request", "Response", "parse_cookies"]

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
    """CherryPy's request, lenient with cookies and strict with Host."""

    header_list: list[tuple[str, str]]  # set by CherryPy for each request
    show_tracebacks = False
    show_mismatched_params = False
    # Class defaults, so errors raised before the app's config applies
    # (bad headers, a missing Host) get our page too.
    error_page = {"default": error_page}
    error_response = staticmethod(unexpected_error)

    def process_headers(self) -> None:
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


class Response(_cprequest.Response):
    """CherryPy's response without the server banner."""

    def __init__(self) -> None:
        super().__init__()
        self.headers["Server"] = "socialos-app"
