"""The account-security tools: ``fresh_session`` (confirm it's you before a sensitive
action) and ``security_notice`` (a new sign-in told once, on the next page).

``web.toolbox`` registers both; ``web.app`` hands them their objects for the
whole app; a handler that needs a fresh session says so beside itself, as
Flask-Login's ``fresh_login_required`` or Django's decorators do::

    @config({"tools.fresh_session.on": True})

or ``_cp_config = {"tools.fresh_session.on": True}`` on a class (every handler
under it). A session is fresh for ``SESSION_FRESH`` seconds after its sign-in
or its last "Confirm it's you" (``sessions.engine.SessionEngine.is_fresh``; the
time is a tagged field of the record). A stale one is sent to ``/confirm``
with the action as a GET address to come back to: a handler under this tool
answers GET with a page that says what it will do and a POST form of its own,
so confirming never replays the original POST.
"""

from typing import Any
from urllib.parse import quote, urlencode

import cherrypy
from cherrypy.lib import httputil

from socialos_app.accounts import signin as accounts
from socialos_app.sessions import SessionEngine
from socialos_app.storage import StoreUnavailable

__all__ = ["MAX_PENDING_FIELDS", "fresh_session", "pending_action", "security_notice"]

MAX_PENDING_FIELDS = 8      # form fields carried to the GET page of a stale POST
MAX_PENDING_VALUE = 200


def pending_action(request: Any) -> str:
    """The GET address of what ``request`` asked for: its path with its query, or, for a
    POST, with its form fields (short strings only; the CSRF token was taken off by its tool)."""
    path: str = quote(request.path_info, safe="/-_.~")
    if request.method in ("GET", "HEAD"):
        return path + ("?" + request.query_string if request.query_string else "")
    fields = sorted((k, v) for k, v in request.params.items()
                    if isinstance(k, str) and isinstance(v, str) and k != "csrf_token"
                    and len(k) <= 40 and len(v) <= MAX_PENDING_VALUE)[:MAX_PENDING_FIELDS]
    return path + ("?" + urlencode(fields) if fields else "")


def fresh_session(engine: SessionEngine, seconds: float) -> None:
    """Before the handler (after the session, CSRF and admin tools): a session that is not
    fresh is sent to "Confirm it's you", to come back to the action's GET page."""
    request = cherrypy.serving.request
    signed_in = getattr(request, "signed_in", None)
    if signed_in is None or engine.is_fresh(signed_in.record, seconds):
        return  # signed out: the session tool has already answered
    raise cherrypy.HTTPRedirect("/confirm?" + urlencode({"next": pending_action(request)}), 303)


def security_notice(engine: SessionEngine) -> None:
    """Before the handler: a notice on the session's record (a new sign-in elsewhere) goes
    to the page as ``request.security_notice``; once a page has shown it (a 200 HTML answer
    to a GET), it is taken off every session of the user."""
    request = cherrypy.serving.request
    request.security_notice = None
    signed_in = getattr(request, "signed_in", None)
    if signed_in is None or not signed_in.record.notice or not request.request_line.startswith("GET "):
        return
    request.security_notice = accounts.read_notice(signed_in.record)
    request.hooks.attach("before_finalize", _shown, priority=90, engine=engine, record=signed_in.record)


def _shown(engine: SessionEngine, record: Any) -> None:
    response = cherrypy.serving.response
    try:
        code = httputil.valid_status(response.status)[0]  # None (unset) is a 200
    except ValueError:
        return
    if code != 200 or not str(response.headers.get("Content-Type", "")).startswith("text/html"):
        return
    try:
        engine.clear_notice(record.username, record.notice)
    except StoreUnavailable:
        pass  # shown again on the next page, and cleared then
