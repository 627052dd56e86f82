"""Logging: one line per event on stdout, in text or JSON, with no secret in it.

- **One format, one timestamp.** Every record, the app's and CherryPy's, goes
  through one root handler: ``TIME LEVEL LOGGER MESSAGE`` (UTC, ms), or one
  JSON object per line with ``LOG_FORMAT=json``. CherryPy's own ``[date]``
  prefix is dropped.
- **A request id on every request.** ``tools.request_id`` takes a sane
  incoming ``X-Request-ID`` or makes one, sets ``cherrypy.request.request_id``
  and answers it in the response header; the request line carries it with the
  (proxy-aware) client address and user agent. The path is logged without its
  query (it may hold search terms); the session shows as a short hash of its
  record id, never as anything that opens it.
- **Scrubbed.** A filter on the root handler removes Cookie and Authorization
  headers, ``password=``/``token=``/``csrf...=``/``secret=`` values, URL
  passwords, session-token-like and long hex strings, and the configured
  secrets themselves from *anything* logged, whoever logged it.
- **Short and bounded.** A traceback becomes one line (the exception and where
  it was raised; the full traceback only at LOG_LEVEL=DEBUG), and identical
  warnings and errors are rate-limited.
"""

import hashlib
import json
import logging
import re
import secrets
import sys
import threading
import time
from datetime import UTC, datetime

import cherrypy

__all__ = ["setup", "log", "security_event", "log_request", "assign_request_id", "scrub", "ScrubFilter",
           "RateLimitFilter", "TextFormatter", "JsonFormatter"]

log = logging.getLogger("socialos")
request_log = logging.getLogger("socialos.request")
security_log = logging.getLogger("socialos.security")

# -- scrubbing ------------------------------------------------------------------------
_SECRET_NAMES = r"[\w.-]*?(?:password|passwd|secret|token|csrf|authorization|cookie|session|secure_key|api_key)"
_HEADER_LINE = re.compile(
    r"(?im)^(\s*(?:set-cookie|cookie|authorization|proxy-authorization|x-pusher-signature)\s*:\s*).*$")
_PAIR = re.compile(
    r"(?i)(?<![\w-])(" + _SECRET_NAMES + r"""['"]?\s*[:=]\s*)(?!\[scrubbed\])('[^']*'|"[^"]*"|[^\s,;&)}\]]+)""")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
# Session tokens (43 urlsafe chars), key passwords and the like: long urlsafe runs
# with a digit or both cases (so long snake_case names in tracebacks survive).
_URLSAFE_RUN = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{32,}(?![\w-])")
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")
_CHERRYPY_TIME = re.compile(r"^\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}\]\s*")
MASK = "[scrubbed]"


def _token_like(match):
    text = match.group(0)
    mixed = any(c.isdigit() for c in text) or (any(c.islower() for c in text) and any(c.isupper() for c in text))
    return MASK if mixed else text


def scrub(text, literals=()):
    """``text`` with every secret-looking part replaced by ``[scrubbed]``."""
    if not text:
        return text
    for literal in literals:
        if literal in text:
            text = text.replace(literal, MASK)
    text = _HEADER_LINE.sub(lambda m: m.group(1) + MASK, text)
    text = _PAIR.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + "****@", text)
    text = _HEX_RUN.sub(MASK, text)
    return _URLSAFE_RUN.sub(_token_like, text)


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def fold_traceback(text):
    """A message with a traceback in it as one line: what was raised, and where."""
    head, marker, tb = text.partition("Traceback (most recent call last):")
    if not marker:
        return text
    lines = [line for line in tb.strip().splitlines() if line.strip()]
    raised = lines[-1].strip() if lines else "an exception"
    frames = _FRAME.findall(tb)
    where = ""
    if frames:
        path, line, func = frames[-1]
        where = f" [at {path.rsplit('site-packages/', 1)[-1]}:{line} in {func}]"
    head = " ".join(head.split())
    return f"{head} {raised}{where}".strip()


class ScrubFilter(logging.Filter):
    """On the root handler: every record leaves as one scrubbed line.

    Formats the record's message (args, exc_info, CherryPy's traceback text)
    here, once, so no formatter can put a secret or a traceback back.
    """

    def __init__(self, literals=(), keep_tracebacks=False):
        super().__init__()
        self.literals = tuple(sorted({s for s in literals if s and len(s) >= 8}, key=len, reverse=True))
        self.keep_tracebacks = keep_tracebacks

    def filter(self, record):
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        if record.name.startswith("cherrypy"):
            text = _CHERRYPY_TIME.sub("", text.lstrip())
        if not self.keep_tracebacks:
            text = fold_traceback(text)
        record.msg, record.args = scrub(text, self.literals), None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {k: scrub(v, self.literals) if isinstance(v, str) else v for k, v in fields.items()}
        if not getattr(record, "request_id", None):
            request = cherrypy.serving.request
            record.request_id = getattr(request, "request_id", None)
        return True


class RateLimitFilter(logging.Filter):
    """Identical warnings and errors: at most ``burst`` per ``window`` seconds each.

    The next one let through says how many were dropped, so a flood is
    visible without filling the disk (one bad client once wrote 1.2 MiB/s).
    """

    def __init__(self, burst=5, window=60.0):
        super().__init__()
        self.burst, self.window = burst, window
        self._seen = {}
        self._lock = threading.Lock()

    def filter(self, record):
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = time.monotonic()
        with self._lock:
            start, count, dropped = self._seen.get(key, (now, 0, 0))
            if now - start >= self.window:
                start, count = now, 0
            if count >= self.burst:
                self._seen[key] = (start, count, dropped + 1)
                return False
            self._seen[key] = (start, count + 1, 0)
            if len(self._seen) > 2000:
                self._seen.clear()  # many different messages: no flood of one to hold back
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this dropped)"
        return True


def _timestamp(record):
    when = datetime.fromtimestamp(record.created, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO socialos.request GET /login 200 ...`` (one timestamp)."""

    def format(self, record):
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        rid = getattr(record, "request_id", None)
        if rid and "rid=" not in line:
            line += f" rid={rid}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and the event's fields."""

    def format(self, record):
        entry = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        for key, value in (getattr(record, "fields", None) or {}).items():
            entry.setdefault(key, value)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _secret_literals(settings):
    """The configured secrets as they may appear in text: never logged, even by accident."""
    if settings is None:
        return ()
    origins = getattr(settings, "origins", {})
    out = []
    for field in ("admin_password", "pusher_secret"):
        if origins.get(field, ("", ""))[1] != "embedded":  # the sandbox's demo values aren't secrets
            out.append(getattr(settings, field, ""))
    for key in (settings.secure_key, *settings.secure_key_previous):
        if key:
            out += [key.hex(), key.hex().upper()]
    uri = settings.mongodb_uri or ""
    if "@" in uri:
        out.append(uri.partition("://")[2].rpartition("@")[0].partition(":")[2])
    return out


def setup(level="INFO", fmt="text", settings=None):
    """Route every logger (the app's, CherryPy's, the libraries') to one scrubbed handler on stdout.

    Also switches off, server-wide, CherryPy's request-header logging and
    tracebacks in answers, and its own screen and access logs.
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ScrubFilter(_secret_literals(settings), keep_tracebacks=(level == "DEBUG")))
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    cherrypy.config.update({
        "log.screen": False, "log.access_file": "", "log.error_file": "",
        "request.show_tracebacks": False,
        "request.show_mismatched_params": False,
        "tools.log_headers.on": False,  # would write Cookie and Authorization on errors
        "tools.request_id.on": True,
    })
    for name in ("cherrypy.error", "cherrypy.access"):
        logging.getLogger(name).handlers[:] = []
    cherrypy.log.error_log.propagate = True
    cherrypy.log.access_log.propagate = False  # our request line replaces the access log

    def thread_errors(args):
        if args.exc_type is not SystemExit:
            log.error("uncaught error in thread %s", getattr(args.thread, "name", "?"),
                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
    threading.excepthook = thread_errors
    return handler


# -- the request line -----------------------------------------------------------------
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\"\\]")


def assign_request_id():
    """``tools.request_id``: the caller's X-Request-ID when sane, else a new one; answered back."""
    request = cherrypy.serving.request
    given = request.headers.get("X-Request-ID", "")
    rid = given if _REQUEST_ID.match(given) else secrets.token_hex(8)
    request.request_id = rid
    cherrypy.serving.response.headers["X-Request-ID"] = rid


def start_timer():
    cherrypy.serving.request._socialos_t0 = time.perf_counter()


def log_request():
    """``tools.request_log``: one INFO line per request, after the answer is sent."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    request, response = cherrypy.serving.request, cherrypy.serving.response
    t0 = getattr(request, "_socialos_t0", None)
    ms = (time.perf_counter() - t0) * 1000 if t0 else (time.time() - response.time) * 1000
    signed_in = getattr(request, "signed_in", None)
    sid = hashlib.sha256(signed_in.record.id.encode()).hexdigest()[:8] if signed_in else "-"
    status = str(response.status or "").split(" ", 1)[0]
    ip = getattr(request.remote, "ip", None) or "-"
    agent = _CONTROL.sub("", request.headers.get("User-Agent", ""))[:160]
    rid = getattr(request, "request_id", None) or "-"
    request_log.info(
        '%s %s %s %.1fms ip=%s rid=%s sid=%s ua="%s"', request.method, request.path_info, status, ms, ip, rid,
        sid, agent,
        extra={"request_id": rid, "fields": {"method": request.method, "path": request.path_info,
                                             "status": int(status) if status.isdigit() else status,
                                             "ms": round(ms, 1), "ip": ip, "sid": sid, "user_agent": agent}})


cherrypy.tools.request_id = cherrypy.Tool("on_start_resource", assign_request_id, priority=1)
cherrypy.tools.request_timer = cherrypy.Tool("on_start_resource", start_timer, priority=2)
cherrypy.tools.request_log = cherrypy.Tool("on_end_request", log_request)


# -- security events ------------------------------------------------------------------
def security_event(event, **fields):
    """A security-relevant event at WARNING: ``event`` names it, ``fields`` say
    who and where. Never pass a token, password, cookie or key here (the
    scrub filter is a second line of defence, not the first)."""
    request = cherrypy.serving.request
    if "ip" not in fields and getattr(request, "request_id", None):  # inside a request: who asked
        fields["ip"] = getattr(request.remote, "ip", None) or "-"
    detail = " ".join(f"{k}={v}" for k, v in fields.items())
    security_log.warning("security event=%s %s", event, detail, extra={"fields": {"event": event, **fields}})
