"""Every error as a page of ours: a heading, a sentence, a way back — never
a traceback, whatever stage of the request failed."""

import html
import logging
import traceback

import cherrypy

from socialos_app.web.render import render

__all__ = ["HEADINGS", "error_page", "unexpected_error"]

log = logging.getLogger("socialos")

HEADINGS = {400: "That request didn't make sense", 403: "Not allowed", 404: "Page not found",
            405: "Not allowed here", 408: "That took too long", 413: "That was too big",
            429: "Slow down", 500: "Something went wrong", 502: "An upstream service failed",
            503: "Temporarily unavailable", 504: "An upstream service did not answer"}


def error_page(status: object, message: str | None, traceback: str | None, version: str | None) -> str:  # CherryPy's
    """CherryPy's ``error_page.default``: our template with a plain sentence."""
    code = int(str(status).split()[0])
    request = cherrypy.serving.request
    headers = cherrypy.serving.response.headers
    headers["Content-Type"] = "text/html;charset=utf-8"
    headers["Cache-Control"] = "no-store"
    # CherryPy has already HTML-escaped the message; Jinja escapes it again on output.
    message = html.unescape(message or "")
    if code == 503:
        headers["Retry-After"] = "5"
    if code == 404:
        message = "There is nothing at this address."
    elif code >= 500 and ("Traceback" in message or code == 500):
        message = "The server hit a problem. It has been logged; please try again."
    signed_in = getattr(request, "signed_in", None)
    back, label = ("/dashboard", "Back to your dashboard") if signed_in else ("/login", "Go to sign in")
    heading = HEADINGS.get(code, "Error")
    try:
        return render("error.html", title=heading, heading=heading, message=message, back=back,
                      back_label=label, user=signed_in, csrf_token=getattr(request, "csrf_token", ""),
                      request_id=getattr(request, "request_id", ""))  # for templates/error.html to quote
    except Exception:  # noqa: BLE001 - the error page itself must never fail
        return f"{code} {heading}"


def unexpected_error() -> None:
    """CherryPy's ``request.error_response``: log the traceback once, show the 500 page."""
    request = cherrypy.serving.request
    log.error("unhandled error on %s %s\n%s", request.method, request.path_info, traceback.format_exc())
    cherrypy.HTTPError(500).set_response()
