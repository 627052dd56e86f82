"""Logging: one line per request on stdout, and the app's own events.

A request line names the method, path (without the query: it may hold
search terms), status, duration and a short hash of the session's record
id, so one browser's requests can be followed without logging anything
that opens a session. Tokens, passwords, key secrets and SECURE_KEY are
never passed to a logger.
"""

import hashlib
import logging
import sys
import time

import cherrypy

__all__ = ["setup", "log", "start_timer", "log_request"]

log = logging.getLogger("socialos")


def setup(level="INFO"):
    """Send the app's and CherryPy's error log to stdout; silence CherryPy's access log."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    cherrypy.config.update({"log.screen": False, "log.access_file": "", "log.error_file": ""})
    cherrypy.log.error_log.propagate = True
    cherrypy.log.access_log.propagate = False


def start_timer():
    cherrypy.serving.request._socialos_t0 = time.perf_counter()


def log_request():
    request, response = cherrypy.serving.request, cherrypy.serving.response
    if not log.isEnabledFor(logging.INFO):
        return
    t0 = getattr(request, "_socialos_t0", None)
    ms = (time.perf_counter() - t0) * 1000 if t0 else 0.0
    signed_in = getattr(request, "signed_in", None)
    sid = hashlib.sha256(signed_in.record.id.encode()).hexdigest()[:8] if signed_in else "-"
    status = str(response.status or "").split(" ", 1)[0]
    log.info("%s %s %s %.1fms sid=%s", request.method, request.path_info, status, ms, sid)


cherrypy.tools.request_timer = cherrypy.Tool("on_start_resource", start_timer)
cherrypy.tools.request_log = cherrypy.Tool("on_end_request", log_request)


security_log = logging.getLogger("socialos.security")


def security_event(event, **fields):
    """A security-relevant event at WARNING: ``event`` names it, ``fields`` say
    who and where. Never pass a token, password, cookie or key here."""
    detail = " ".join(f"{k}={v}" for k, v in fields.items())
    security_log.warning("security event=%s %s", event, detail)
