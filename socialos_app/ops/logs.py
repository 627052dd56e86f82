"""Logging: one line per event on stdout, in text or JSON, with no secret in it.

- **One format, one timestamp.** Every record, the app's and CherryPy's, goes
  through one root handler: ``TIME LEVEL LOGGER MESSAGE`` (UTC, ms), or one
  JSON object per line with ``LOG_FORMAT=json``. CherryPy's own ``[date]``
  prefix is dropped.
- **A request id on every request.** ``tools.request_id`` keeps an incoming
  ``X-Request-ID`` in the one format nginx's template also accepts
  (``REQUEST_ID``: 1-128 of ``A-Z a-z 0-9 . _ : -``) and makes one otherwise,
  sets ``cherrypy.request.request_id`` and answers it in the response header.
  The id is added to a line *after* scrubbing (``rid=`` in text, ``request_id``
  in JSON), so it is never mistaken for a secret. The request line carries the
  (proxy-aware) client address and user agent; the path is logged without its
  query (it may hold search terms); the session shows as a short hash of its
  record id, never as anything that opens it.
- **Bounded first.** Every field is cut to a length before anything else
  looks at it (``cap``: a path to ``MAX_PATH`` characters, a message to
  ``MAX_MESSAGE``, with a ``…[+N]`` marker), so no request can make logging
  slow; the scrubbing patterns run in linear time whatever the text.
- **Scrubbed.** A filter on the root handler removes Cookie and Authorization
  headers, ``password=``/``token=``/``csrf...=``/``secret=`` values, URL
  passwords, session-token-like and long hex strings, and the configured
  secrets themselves from *anything* logged, whoever logged it.
- **Unforgeable.** In the text format every control character (CR, LF, NUL,
  ESC, the rest of C0 and C1, the Unicode line separators) is written as an
  escape, so one record is always one line; JSON escapes them itself.
- **Short and bounded.** A traceback becomes one line (the exception and where
  it was raised; the full traceback only at LOG_LEVEL=DEBUG), and identical
  warnings and errors are rate-limited.
- **Trouble is loud, recovery too.** ``trouble(key, ...)`` and
  ``recovered(key, ...)`` log a WARNING when something the app depends on
  (the database, an upstream, a circuit breaker, the change stream) stops
  working and another when it is back: once per outage each, however many
  requests notice it, and not more often than every ``TROUBLE_QUIET`` seconds
  for one thing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import cherrypy
from cherrypy import _cplogging

from socialos_app.settings import Settings, secret_literals

__all__ = ["setup", "log", "security_event", "log_request", "assign_request_id", "scrub", "cap", "escape",
           "ScrubFilter", "RateLimitFilter", "TextFormatter", "JsonFormatter", "REQUEST_ID", "trouble",
           "recovered", "troubled", "database_words", "on_security_event", "replace_access_line"]

log = logging.getLogger("socialos")
request_log = logging.getLogger("socialos.request")
security_log = logging.getLogger("socialos.security")

# -- bounds ---------------------------------------------------------------------------
MAX_PATH = 300        # a request path in a log line; the rest is counted, not written
MAX_FIELD = 1000      # any other one value (a format argument, a JSON field)
MAX_MESSAGE = 4000    # a whole message, traceback included (DEBUG keeps more: MAX_TRACEBACK)
MAX_TRACEBACK = 20000
_RUN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def cap(text: str, limit: int, literals: Iterable[str] = ()) -> str:
    """``text`` cut to ``limit`` characters with a ``…[+N]`` marker saying how many were left out.

    A cut never leaves part of a secret behind: when it falls inside a
    token-like run (or ends on the start of one of ``literals``), the whole
    run goes, so the scrubber, which only sees what is left, has nothing
    half-recognisable to miss.
    """
    if len(text) <= limit:
        return text
    head = text[:limit]
    if head and head[-1] in _RUN_CHARS and text[limit] in _RUN_CHARS:
        end = len(head)
        while end and head[end - 1] in _RUN_CHARS:
            end -= 1
        head = head[:end]
    for literal in literals:
        for size in range(min(len(literal) - 1, len(head)), 3, -1):
            if head.endswith(literal[:size]):
                head = head[:-size]
                break
    return f"{head}…[+{len(text) - len(head)}]"


# -- scrubbing ------------------------------------------------------------------------
# Every pattern here runs in time linear in its input: no nested or adjacent
# unbounded quantifiers over the same characters, and no unbounded scan that
# can fail and be retried from the next position (tests time them on 64 KB of
# adversarial text). The name of a secret pair is found by its *last* word
# (csrf_token, user.password): what comes before it is left as it is.
_SECRET_WORD = r"(?:password|passwd|secret|token|csrf|authorization|cookie|session|secure_key|api_key)"
_HEADER_LINE = re.compile(
    r"(?im)^([ \t]*(?:set-cookie|cookie|authorization|proxy-authorization|x-pusher-signature)[ \t]*:[ \t]*)"
    r"[^\r\n]*+")
# A quoted value runs to its closing quote or, unclosed, to the end: a scan that never fails.
_PAIR = re.compile(
    r"(?i)(" + _SECRET_WORD + r"""['"]?[ \t]*+[:=][ \t]*+)(?!\[scrubbed\])('[^']*+'?|"[^"]*+"?|[^\s,;&)}\]]++)""")
# Starts only where "://" is; each scan stops at the next "/", so scans never overlap.
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*+:)[^@\s/]++@")
# Session tokens (43 urlsafe chars), key passwords and the like: long urlsafe runs
# with a digit or both cases (so long snake_case names in tracebacks survive).
_URLSAFE_RUN = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{32,}+(?![\w-])")
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}+(?![0-9A-Fa-f])")
_CHERRYPY_TIME = re.compile(r"^\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}\]\s*")
MASK = "[scrubbed]"


def _token_like(match: re.Match[str]) -> str:
    text = match.group(0)
    mixed = any(c.isdigit() for c in text) or (any(c.islower() for c in text) and any(c.isupper() for c in text))
    return MASK if mixed else text


def scrub(text: str, literals: Iterable[str] = ()) -> str:
    """``text`` with every secret-looking part replaced by ``[scrubbed]`` (linear time).

    A pattern is skipped where a plain substring test shows it can't match
    (a header line or pair needs a ``:`` or ``=``, a URL password ``://``,
    a run 32 characters): most text logged per request is short and has none.
    """
    if not text:
        return text
    for literal in literals:
        if literal in text:
            text = text.replace(literal, MASK)
    colon = ":" in text
    if colon:
        text = _HEADER_LINE.sub(_keep_name, text)
    if colon or "=" in text:
        text = _PAIR.sub(_keep_name, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + "****@", text)
    if len(text) < 32:
        return text
    text = _HEX_RUN.sub(MASK, text)
    return _URLSAFE_RUN.sub(_token_like, text)


def _keep_name(match: re.Match[str]) -> str:
    return match.group(1) + MASK


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything
# a terminal or a line-reading tool could take for the end of a line or a command.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group(0)
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape(text: str) -> str:
    """``text`` on one line: every control character written as ``\\n``, ``\\r``, ``\\x1b``..."""
    return _CONTROLS.sub(_escaped, text)


_FRAME = re.compile(r'File "([^"\n]{1,1000})", line (\d{1,9}), in (\S{1,200})')
_TRACEBACK = "Traceback (most recent call last):"


def fold_traceback(text: str) -> str:
    """A message with a traceback in it as one line: what was raised, and where."""
    head, marker, tb = text.partition(_TRACEBACK)
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


def _capped_args(args: Any, literals: Iterable[str]) -> Any:
    """A record's format arguments with every string cut to ``MAX_FIELD``."""
    if isinstance(args, tuple):
        return tuple(cap(a, MAX_FIELD, literals) if isinstance(a, str) else a for a in args)
    if isinstance(args, Mapping):
        return {k: cap(v, MAX_FIELD, literals) if isinstance(v, str) else v for k, v in args.items()}
    return args


class ScrubFilter(logging.Filter):
    """On the root handler: every record leaves bounded and scrubbed.

    Formats the record's message (args, exc_info, CherryPy's traceback text)
    here, once, so no formatter can put a secret or a traceback back. At
    DEBUG (``keep_tracebacks``) a traceback is kept whole, apart from the
    message, in ``record.traceback``.
    """

    def __init__(self, literals: Iterable[str] = (), keep_tracebacks: bool = False, fields: bool = True) -> None:
        super().__init__()
        self.literals = tuple(sorted({s for s in literals if s and len(s) >= 8}, key=len, reverse=True))
        self.keep_tracebacks = keep_tracebacks
        # The text format writes no fields (their values are in the message): scrubbing them is for JSON.
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        literals = self.literals
        if isinstance(record.msg, str):
            record.msg = cap(record.msg, MAX_MESSAGE, literals)
        record.args = _capped_args(record.args, literals)
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            text = f"{record.msg!r} {record.args!r}"
        text = cap(text, MAX_MESSAGE, literals)
        tb = ""
        if record.exc_info and record.exc_info[0] is not None:
            tb = logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            tb = record.exc_text
        elif _TRACEBACK in text and record.name != request_log.name:  # CherryPy logs tracebacks as text
            text, marker, rest = text.partition(_TRACEBACK)
            tb = marker + rest
        if record.name.startswith("cherrypy"):
            text = _CHERRYPY_TIME.sub("", text.lstrip())
        traceback = None
        if tb:
            tb = cap(tb, MAX_TRACEBACK if self.keep_tracebacks else MAX_MESSAGE, literals)
            if self.keep_tracebacks:
                traceback = scrub(tb, literals)
            else:
                text = fold_traceback(text + "\n" + tb)
        record.msg, record.args = scrub(text, literals), None
        record.traceback = traceback
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        fields = getattr(record, "fields", None) if self.fields else None
        if fields:
            record.fields = {k: scrub(cap(v, MAX_FIELD, literals), literals) if isinstance(v, str) else v
                             for k, v in fields.items()}
        if not getattr(record, "request_id", None):
            request = cherrypy.serving.request
            record.request_id = getattr(request, "request_id", None)
        return True


class RateLimitFilter(logging.Filter):
    """Identical warnings and errors: at most ``burst`` per ``window`` seconds each.

    The next one let through says how many were dropped, so a flood is
    visible without filling the disk (one bad client once wrote 1.2 MiB/s).
    """

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        super().__init__()
        self.burst, self.window = burst, window
        self._seen: dict[tuple[str, int, str], tuple[float, int, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
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


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text: one strftime per second


def _timestamp(record: logging.LogRecord) -> str:
    global _second
    second, text = _second  # one read: another thread may replace it meanwhile
    if second != int(record.created):
        second = int(record.created)
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second = (second, text)
    return f"{text}{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO socialos.request GET /login 200 ... rid=...``: one line per record.

    Control characters in the message are escaped; the request id (already
    in its safe format) is appended after scrubbing; a DEBUG traceback
    follows on indented lines, which no line-reader takes for a new record.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {escape(record.getMessage())}"
        rid = getattr(record, "request_id", None)
        if rid:
            line += f" rid={escape(str(rid))}"
        traceback = getattr(record, "traceback", None)
        if traceback:
            line += "".join("\n    " + escape(part) for part in traceback.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage()}
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        traceback = getattr(record, "traceback", None)
        if traceback:
            entry["traceback"] = traceback
        for key, value in (getattr(record, "fields", None) or {}).items():
            entry.setdefault(key, value)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _secret_literals(settings: Settings | None) -> list[str]:
    """The configured secrets as they may appear in text (the settings table says which): never logged."""
    return [] if settings is None else secret_literals(settings)


def setup(level: str = "INFO", fmt: str = "text", settings: Any = None) -> logging.Handler:
    """Route every logger (the app's, CherryPy's, the libraries') to one scrubbed handler on stdout.

    Also switches off, server-wide, CherryPy's request-header logging and
    tracebacks in answers, and its own screen and access logs.
    """
    # No line written says where in the code a record was made, or which thread or process made
    # it: not collected per record (the Logging HOWTO's "Optimization" switches).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ScrubFilter(_secret_literals(settings), keep_tracebacks=(level == "DEBUG"),
                                  fields=(fmt == "json")))
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

    def thread_errors(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None
            if args.exc_value is not None:
                exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
            log.error("uncaught error in thread %s", getattr(args.thread, "name", "?"), exc_info=exc_info)
    threading.excepthook = thread_errors
    return handler


class _AppLog(_cplogging.LogManager):
    """CherryPy's log of one application, less its access line: ``log_request`` writes the app's own."""

    def access(self) -> None:
        """Nothing: CherryPy formats an Apache-style line here on every request, for no handler."""


def replace_access_line(app: Any) -> None:
    """Have ``app`` (a mounted ``cherrypy.Application``) skip CherryPy's access line; its errors log as before."""
    app.log = _AppLog(id(app), cherrypy.log.logger_root)


# -- trouble and recovery -------------------------------------------------------------
TROUBLE_QUIET = 30.0  # seconds: one thing's trouble lines come at most this often


class _Outage:
    __slots__ = ("down", "since", "logged", "last_line", "unlogged")

    def __init__(self) -> None:
        self.down = False
        self.since = 0.0
        self.logged = False      # this outage's line was written (so its recovery is too)
        self.last_line = -1e18   # when the last trouble line of this thing was written
        self.unlogged = 0        # brief outages since then that were not worth a line


_outages: dict[str, _Outage] = {}
_outages_lock = threading.Lock()


def trouble(key: str, message: str, *args: object, quiet: float | None = None) -> bool:
    """``key`` (e.g. "database", "upstream socialos") stopped working: one WARNING per outage.

    Called by everything that notices, as often as it notices; writes
    ``message % args`` when ``key`` goes from working to not, unless its last
    trouble line is less than ``quiet`` seconds old (then the outage is
    written when it has lasted that long, or counted in the next line if it
    ends first). True when a line was written.
    """
    quiet = TROUBLE_QUIET if quiet is None else quiet
    now = time.monotonic()
    with _outages_lock:
        outage = _outages.setdefault(key, _Outage())
        if not outage.down:
            outage.down, outage.since, outage.logged = True, now, False
        if outage.logged or now - outage.last_line < quiet:
            return False
        outage.logged, outage.last_line = True, now
        unlogged, outage.unlogged = outage.unlogged, 0
    suffix = f" ({unlogged} brief outage{'s' if unlogged > 1 else ''} of this before, not logged)" if unlogged else ""
    log.warning(message + suffix, *args, extra={"fields": {"trouble": key, "state": "down"}})
    return True


def recovered(key: str, message: str, *args: object) -> bool:
    """``key`` works again: one WARNING, if its outage was written (with how long it lasted)."""
    with _outages_lock:
        outage = _outages.get(key)
        if outage is None or not outage.down:
            return False
        outage.down = False
        lasted = time.monotonic() - outage.since
        if not outage.logged:
            outage.unlogged += 1
            return False
    log.warning(message + " (after %.1f s)", *args, lasted,
                extra={"fields": {"trouble": key, "state": "up", "seconds": round(lasted, 1)}})
    return True


def troubled(key: str) -> bool:
    """Whether ``key`` is in an outage now (as last reported)."""
    with _outages_lock:
        outage = _outages.get(key)
        return outage is not None and outage.down


# The database's own errors in words, by exception class name (the driver's
# classes, looked up by name so this module needs no driver).
_DB_WORDS = {
    "WaitQueueTimeoutError": "database not answering: every pooled connection is waiting on it",
    "ServerSelectionTimeoutError": "database not reachable: no server answered in time",
    "NetworkTimeout": "database not answering in time",
    "ExecutionTimeout": "database too slow: an operation passed its deadline",
    "NotPrimaryError": "database has no primary: a failover or a lost majority",
    "AutoReconnect": "connection to the database lost",
    "ConnectionFailure": "database not reachable",
    "DocumentTooLarge": "an operation too large for the database",
    "ConfigurationError": "database settings refused by the driver",
    "OperationFailure": "database refused an operation",
    "PyMongoError": "database error",
}
_DB_CODES = {13: "database refused: not authorized", 18: "database refused: authentication failed",
             50: "database too slow: an operation passed its deadline",
             11600: "database shutting down", 91: "database shutting down"}


def database_words(exc: BaseException) -> str:
    """What a database error means, in words ("database not answering ..."), with its class name."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:  # StoreUnavailable carries the driver's error as its cause
        code = getattr(current, "code", None)
        if isinstance(code, int) and code in _DB_CODES:
            return f"{_DB_CODES[code]} ({type(current).__name__})"
        for cls in type(current).__mro__:
            if cls.__name__ in _DB_WORDS:
                return f"{_DB_WORDS[cls.__name__]} ({type(current).__name__})"
        current, seen = current.__cause__, seen + 1
    name = str(exc) if type(exc).__name__ == "StoreUnavailable" else type(exc).__name__
    words = _DB_WORDS.get(name)
    return f"{words} ({name})" if words else f"database error ({cap(escape(name), 80)})"


# -- the request line -----------------------------------------------------------------
# The one request-id format, shared with deploy/nginx/default.conf.template's map:
# ids nginx passes on are kept, anything else replaced.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_UA_CONTROL = re.compile(r"[\x00-\x1f\x7f\"\\]")


def assign_request_id() -> None:
    """``tools.request_id``: the caller's X-Request-ID when in the ``REQUEST_ID`` format, else a new one;
    and when the request started (the log line's duration): one hook for both."""
    request = cherrypy.serving.request
    request._socialos_t0 = time.perf_counter()
    given = request.headers.get("X-Request-ID", "")
    rid = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    request.request_id = rid
    cherrypy.serving.response.headers["X-Request-ID"] = rid


def log_request() -> None:
    """``tools.request_log``: one INFO line per request, after the answer is sent."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    request, response = cherrypy.serving.request, cherrypy.serving.response
    t0 = getattr(request, "_socialos_t0", None)
    ms = (time.perf_counter() - t0) * 1000 if t0 else (time.time() - response.time) * 1000
    signed_in = getattr(request, "signed_in", None)
    sid = hashlib.sha256(signed_in.record.id.encode()).hexdigest()[:8] if signed_in else "-"
    status = str(response.status or "").split(" ", 1)[0][:3]
    ip = cap(str(getattr(request.remote, "ip", None) or "-"), 64)
    agent = cap(_UA_CONTROL.sub("", request.headers.get("User-Agent", "")), 160)
    method = cap(str(request.method), 16)
    path = cap(str(request.path_info), MAX_PATH)
    rid = getattr(request, "request_id", None) or "-"
    # The id is not in the message: the formatter adds it after scrubbing.
    request_log.info(
        '%s %s %s %.1fms ip=%s sid=%s ua="%s"', method, path, status, ms, ip, sid, agent,
        extra={"request_id": rid, "fields": {"method": method, "path": path,
                                             "status": int(status) if status.isdigit() else status,
                                             "ms": round(ms, 1), "ip": ip, "sid": sid, "user_agent": agent}})


# -- security events ------------------------------------------------------------------
_security_listeners: list[Callable[[str], None]] = []


def on_security_event(listener: Callable[[str], None]) -> None:
    """Have ``listener(event)`` called for every security event (the metrics count them this way)."""
    _security_listeners.append(listener)


def security_event(event: str, **fields: object) -> None:
    """A security-relevant event at WARNING: ``event`` names it, ``fields`` say
    who and where. Never pass a token, password, cookie or key here (the
    scrub filter is a second line of defence, not the first). Every event
    is also counted (``on_security_event``), whatever the log level."""
    for listener in _security_listeners:
        try:
            listener(event)
        except Exception:  # noqa: BLE001 - counting must never stop the event being logged
            log.debug("security event listener failed", exc_info=True)
    request = cherrypy.serving.request
    if "ip" not in fields and getattr(request, "request_id", None):  # inside a request: who asked
        fields["ip"] = getattr(request.remote, "ip", None) or "-"
    detail = " ".join(f"{k}={v}" for k, v in fields.items())
    security_log.warning("security event=%s %s", event, detail, extra={"fields": {"event": event, **fields}})
