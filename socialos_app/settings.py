"""Settings: read once at start-up, never per request.

Precedence is flags > environment (or a secret's ``_FILE``) > ``conf/``
files > defaults. The defaults are written once, on :class:`Settings`; the
table :data:`VARIABLES` says, one line per setting, which variable sets which
field, how its text is read and whether it is a secret. Everything else comes
from that line: every variable is read by one path (``load``), a secret may
come from ``NAME_FILE``, is masked by :meth:`Settings.masked` and
:func:`report` and is scrubbed from the logs (:func:`secret_literals`), and
``--check-config`` lists it and hints at near misses (:func:`unknown_variables`).

With no ``MONGODB_URI`` the app runs in *embedded mode*: a local database and
the sandboxes on loopback, with a server secret kept under DATA_DIR. Outside it
every secret and upstream URL must be given.

Every bad setting is collected and reported at once, by its variable name,
in one :class:`SettingsError`; nothing here writes a file unless asked to
(``make_key``), so ``--check-config`` changes nothing.
"""

import base64
import binascii
import difflib
import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, cast
from urllib.parse import unquote, urlsplit

from socialos_app.addresses import TrustedProxies, trusted_proxies

__all__ = ["DEMO_PUSHER", "SANDBOX_ADMIN", "SECRETS", "Choice", "IntRange", "Seconds", "Settings", "SettingsError",
           "VARIABLES", "Variable", "decode_key", "load", "mask_uri", "report", "secret_literals",
           "unknown_variables"]

# Embedded mode's Pusher app, shared with the sandbox. The id is numeric because
# Pusher's own server libraries refuse anything else.
DEMO_PUSHER = {"PUSHER_APP_ID": "100001", "PUSHER_KEY": "demo-key", "PUSHER_SECRET": "demo-secret"}
SANDBOX_ADMIN = ("admin", "admin")
# What embedded mode supplies itself and every other deployment must give.
REQUIRED_OUTSIDE_EMBEDDED = ("SECURE_KEY", "SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL", "SOCIALOS_ADMIN_USER",
                             "SOCIALOS_ADMIN_PASSWORD", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET")
_MAKE_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'


class SettingsError(ValueError):
    """One or more settings are missing or unusable.

    ``problems`` is a list of ``(variable, message)``; each message names its
    variable, so ``str()`` is one line an operator can act on.
    """

    def __init__(self, problems: str | Iterable[tuple[str, str]]) -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


@dataclass(frozen=True)
class Settings:
    """Every knob of the app, resolved, with its default. Immutable: safe to share across threads."""

    host: str = "127.0.0.1"
    port: int = 8080
    mongodb_uri: str | None = None
    secure_key: bytes = b""
    secure_key_previous: tuple[bytes, ...] = ()
    api_url: str = ""
    admin_url: str = ""
    admin_user: str = ""
    admin_password: str = ""
    session_ttl: int = 3600
    session_max_age: int = 86400
    session_cache_size: int = 10000
    cookie_secure: bool = True
    pusher_app_id: str = ""
    pusher_key: str = ""
    pusher_secret: str = ""
    pusher_cluster: str = "mt1"
    pusher_host: str = ""
    pusher_port: int = 0
    pusher_scheme: str = "https"
    pusher_channel: str = "presence-lobby"
    # Where the browser loads pusher-js from for live updates ('' = server-rendered only).
    pusher_js_url: str = ""
    # Where the browser's pusher-js connects ('' disables live updates).
    pusher_ws_host: str = ""
    data_dir: str = "./var"
    sandbox_api_port: int = 8081
    sandbox_pusher_port: int = 8082
    embedded_db_port: int = 27018
    log_level: str = "INFO"
    log_format: str = "text"
    thread_pool: int = 16
    upstream_connect_timeout: float = 3.05
    upstream_read_timeout: float = 5.0
    # Behind reverse proxies: trust X-Forwarded-Proto/Host, and X-Forwarded-For's entries they added.
    trusted_proxy: TrustedProxies = TrustedProxies()
    db_timeout_ms: int = 2000
    max_body_bytes: int = 64 * 1024
    login_max_failures: int = 5
    # The session backend, by name (sessions/backends): "mongodb", or "memory" for one process.
    session_store: str = "mongodb"
    # Seconds a session stays fresh for sensitive actions after sign-in or "Confirm it's you".
    session_fresh: int = 600
    # Days each user's security activity is kept.
    activity_days: int = 90
    # Live sessions per user; beyond it the least recently used ends (0: no limit).
    max_sessions_per_user: int = 0
    # Seconds a stopping instance keeps serving while it already answers /readyz with 503.
    shutdown_drain: float = 3.0
    # The largest upstream answer read, in bytes; a bigger one is refused.
    upstream_max_bytes: int = 4 * 1024 * 1024
    # Where each value came from, by field: (variable, "flag"|"env"|"file"|"conf"|"default"|"embedded").
    origins: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def embedded(self) -> bool:
        """True when the app brings its own database and sandboxes."""
        return self.mongodb_uri is None

    @property
    def database_uri(self) -> str:
        """The MongoDB URI in force (embedded mode points at the local server)."""
        if self.mongodb_uri:
            return self.mongodb_uri
        return f"mongodb://127.0.0.1:{self.embedded_db_port}/socialos?directConnection=true"

    @property
    def cookie_name(self) -> str:
        """``__Host-session`` over HTTPS: no subdomain or path can plant or shadow it."""
        return "__Host-session" if self.cookie_secure else "session"

    @property
    def pusher_configured(self) -> bool:
        """True when a Pusher app (id, key and secret) is configured."""
        return bool(self.pusher_app_id and self.pusher_key and self.pusher_secret)

    @property
    def pusher_base_url(self) -> str:
        """Pusher's HTTP API: ``api-CLUSTER.pusher.com`` unless a host is given."""
        if self.pusher_host:
            port = f":{self.pusher_port}" if self.pusher_port else ""
            return f"{self.pusher_scheme}://{self.pusher_host}{port}"
        return f"https://api-{self.pusher_cluster}.pusher.com"

    def masked(self) -> dict[str, object]:
        """The settings as printable ``{field: value}``, secrets shown only as set/unset
        (or as their variable's ``shown`` form: a MongoDB URI with only its password masked)."""
        out: dict[str, object] = {}
        for var in VARIABLES:
            value = getattr(self, var.field)
            if var.secret:
                value = (var.shown(value) if var.shown else "****") if value else "(unset)"
            out[var.field] = value
        return out


# -- reading one value ----------------------------------------------------------------
class _Bad(ValueError):
    """A value that can't be used; the message reads after the variable's name."""


def _key(text: str) -> bytes:
    """A server secret as hex or base64, at least 32 random bytes; says how it read a text it refuses.

    Text that is neither is refused rather than taken as raw bytes: a
    passphrase is not random, and a key must mean one thing everywhere.
    """
    text = text.strip()
    if not text:
        raise _Bad(f"is too short: it is empty; need at least 32 random bytes (make one with: {_MAKE_KEY})")
    raw, how = None, "hex"
    if len(text) % 2 == 0:
        try:
            raw = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None:
        how = "base64"
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise _Bad(f"must be hex or base64 (make one with: {_MAKE_KEY})") from None
    if len(raw) < 32:
        # Say how the text was read: a 42-character passphrase is 31 bytes only as base64.
        raise _Bad(f"is too short: its {len(text)} characters read as {how} give {len(raw)} bytes; need at least "
                   f"32 random bytes (make one with: {_MAKE_KEY})")
    if len(set(raw)) < 16:
        raise _Bad("is too weak: it does not look random")
    return raw


def decode_key(text: str, name: str = "SECURE_KEY") -> bytes:
    """Decode a server secret given as hex or base64; at least 32 random bytes.

    Raises :class:`SettingsError` naming ``name`` and saying how the text was read.
    """
    try:
        return _key(text)
    except _Bad as exc:
        raise SettingsError([(name, f"{name} {exc}")]) from None


def _keys(text: str) -> tuple[bytes, ...]:
    parts = [part for part in text.split(",") if part.strip()]
    out = []
    for number, part in enumerate(parts, 1):
        try:
            out.append(_key(part))
        except _Bad as exc:
            raise _Bad(f"key {number} of {len(parts)} {exc}" if len(parts) > 1 else str(exc)) from None
    return tuple(out)


def _wrapped(parse: Callable[[str], Any], text: str) -> Any:
    """A parser of another module, its ValueError read as this table's."""
    try:
        return parse(text)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _Bad(f"must be 1/0 or true/false, not {text!r}")


@dataclass(frozen=True)
class IntRange:
    """A whole number from ``low`` to ``high``."""

    low: int
    high: int

    def __call__(self, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise _Bad(f"must be a whole number, not {text!r}") from None
        if not self.low <= value <= self.high:
            raise _Bad(f"must be between {self.low} and {self.high}, not {value}")
        return value


@dataclass(frozen=True)
class Seconds:
    """A number of seconds from ``low`` to ``high`` (fractions allowed)."""

    low: float
    high: float

    def __call__(self, text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise _Bad(f"must be a number of seconds, not {text!r}") from None
        if not self.low <= value <= self.high:  # also refuses nan
            raise _Bad(f"must be between {self.low} and {self.high} seconds, not {value}")
        return value


class Choice:
    """One of ``allowed`` (compared in lower case, or upper case with ``upper=True``)."""

    def __init__(self, *allowed: str, upper: bool = False) -> None:
        self.allowed, self.upper = allowed, upper

    def __call__(self, text: str) -> str:
        value = text.strip().upper() if self.upper else text.strip().lower()
        if value not in self.allowed:
            raise _Bad(f"must be {', '.join(self.allowed[:-1])} or {self.allowed[-1]}, not {text!r}")
        return value


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _is_hostname(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _host(text: str) -> str:
    value = text.strip()
    if not _is_hostname(value):
        raise _Bad(f"must be a host name or IP address, not {text!r}")
    return value


def _host_port(text: str) -> str:
    """``host`` or ``host:port`` (a websocket host for the browser)."""
    value = text.strip()
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if not _is_hostname(host) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise _Bad(f"must be a host name, optionally with :port, not {text!r}")
    return value


def _url(text: str) -> str:
    value = text.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Bad(f"must be an absolute http:// or https:// URL, not {text!r}")
    return value


def _channel(text: str) -> str:
    # Pusher's channel-name alphabet and length; /presence shows presence channels only.
    value = text.strip()
    if not (value.startswith("presence-") and re.fullmatch(r"[A-Za-z0-9_\-=@,.;]{10,164}", value)):
        raise _Bad(f"must be a Pusher presence channel such as presence-lobby, not {text!r}")
    return value


def _text(text: str) -> str:
    return text.strip()


def mask_uri(uri: str) -> str:
    """``uri`` with only its password replaced by ``****`` (user, hosts and options kept).

    Splits as pymongo does: the host part ends at the first ``/`` or ``?``,
    and the user info ends at its last ``@``.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    host_part = re.split(r"[/?]", rest, maxsplit=1)[0]
    if "@" not in host_part:
        return uri
    userinfo = host_part.rpartition("@")[0]
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':****' if colon else ''}@{rest[len(userinfo) + 1:]}"


def _uri_password(uri: str) -> str:
    host_part = re.split(r"[/?]", uri.partition("://")[2], maxsplit=1)[0]
    return host_part.rpartition("@")[0].partition(":")[2] if "@" in host_part else ""


def _uri_secrets(uri: str) -> list[str]:
    """A URI's password as it is written and as it is meant (percent-decoded)."""
    password = _uri_password(uri)
    return sorted({password, unquote(password)} - {""})


# pymongo's hint points at its docstring, which an operator reading this line doesn't have.
_CAMELCASE_HINT = re.compile(r"\s*or maybe a camelCase version of one\?")
_DOCSTRING_HINT = re.compile(r"\s*Refer to docstring\.?")


def _mongodb_uri(text: str) -> str:
    """Checked by the driver's own parser; its message never carries the password."""
    value = text.strip()
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri
    try:
        parse_uri(value, connect_timeout=5)
    except (PyMongoError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = _DOCSTRING_HINT.sub("", _CAMELCASE_HINT.sub("?", message))
        for secret in _uri_secrets(value):
            message = message.replace(secret, "****")
        raise _Bad(f"is not a usable MongoDB URI ({mask_uri(value)}): {message}") from None
    return value


Parser = Callable[[str], object]


@dataclass(frozen=True)
class Variable:
    """One setting as an operator writes it: its name, the field it sets, how its text is read.

    The field's default is the default (on :class:`Settings`). A ``secret`` may
    come from ``NAME_FILE``, is masked wherever settings are shown, and is
    scrubbed from every log line; ``shown`` and ``literals`` override how (for
    a value of which only a part is secret, such as a URI's password).
    """

    name: str
    field: str
    parse: Parser = _text
    secret: bool = False
    conf: str = ""      # the conf/server.conf key that may set it too
    flag: str = ""      # the command-line flag that may set it too
    shown: Callable[[Any], str] | None = None          # a secret's printable form
    literals: Callable[[Any], list[str]] | None = None  # the parts of a secret's value to scrub


VARIABLES: tuple[Variable, ...] = (
    Variable("HOST", "host", _host, conf="server.socket_host", flag="host"),
    Variable("PORT", "port", IntRange(0, 65535), conf="server.socket_port", flag="port"),
    Variable("MONGODB_URI", "mongodb_uri", _mongodb_uri, secret=True, shown=mask_uri, literals=_uri_secrets),
    Variable("SECURE_KEY", "secure_key", _key, secret=True),
    Variable("SECURE_KEY_PREVIOUS", "secure_key_previous", _keys, secret=True),
    Variable("SOCIALOS_API_URL", "api_url", _url),
    Variable("SOCIALOS_ADMIN_URL", "admin_url", _url),
    Variable("SOCIALOS_ADMIN_USER", "admin_user"),
    Variable("SOCIALOS_ADMIN_PASSWORD", "admin_password", secret=True),
    Variable("SESSION_TTL", "session_ttl", IntRange(60, 30 * 86400)),
    Variable("SESSION_MAX_AGE", "session_max_age", IntRange(60, 365 * 86400)),
    Variable("SESSION_CACHE_SIZE", "session_cache_size", IntRange(0, 10_000_000)),
    Variable("COOKIE_SECURE", "cookie_secure", _flag),
    Variable("PUSHER_APP_ID", "pusher_app_id"),
    Variable("PUSHER_KEY", "pusher_key"),
    Variable("PUSHER_SECRET", "pusher_secret", secret=True),
    Variable("PUSHER_CLUSTER", "pusher_cluster", _host),
    Variable("PUSHER_HOST", "pusher_host", _host),
    Variable("PUSHER_PORT", "pusher_port", IntRange(0, 65535)),
    Variable("PUSHER_SCHEME", "pusher_scheme", Choice("http", "https")),
    Variable("PUSHER_CHANNEL", "pusher_channel", _channel),
    Variable("PUSHER_JS_URL", "pusher_js_url", _url),
    Variable("PUSHER_WS_HOST", "pusher_ws_host", _host_port),
    Variable("DATA_DIR", "data_dir"),
    Variable("SANDBOX_API_PORT", "sandbox_api_port", IntRange(1, 65535)),
    Variable("SANDBOX_PUSHER_PORT", "sandbox_pusher_port", IntRange(1, 65535)),
    Variable("EMBEDDED_DB_PORT", "embedded_db_port", IntRange(1, 65535)),
    Variable("LOG_LEVEL", "log_level", Choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True)),
    Variable("LOG_FORMAT", "log_format", Choice("text", "json")),
    Variable("UPSTREAM_CONNECT_TIMEOUT", "upstream_connect_timeout", Seconds(0.1, 60)),
    Variable("UPSTREAM_READ_TIMEOUT", "upstream_read_timeout", Seconds(0.1, 300)),
    Variable("TRUSTED_PROXY", "trusted_proxy", lambda text: _wrapped(trusted_proxies, text)),
    Variable("DB_TIMEOUT_MS", "db_timeout_ms", IntRange(100, 60_000)),
    Variable("LOGIN_MAX_FAILURES", "login_max_failures", IntRange(1, 1000)),
    Variable("SESSION_STORE", "session_store", Choice("mongodb", "memory")),
    Variable("SESSION_FRESH", "session_fresh", IntRange(1, 7 * 86400)),
    Variable("ACTIVITY_DAYS", "activity_days", IntRange(1, 3650)),
    Variable("MAX_SESSIONS_PER_USER", "max_sessions_per_user", IntRange(0, 100_000)),
    Variable("SHUTDOWN_DRAIN", "shutdown_drain", Seconds(0, 300)),
    Variable("UPSTREAM_MAX_BYTES", "upstream_max_bytes", IntRange(1024, 1 << 30)),
    # Server knobs that live in conf/server.conf only.
    Variable("server.thread_pool", "thread_pool", IntRange(1, 1024), conf="server.thread_pool"),
    Variable("server.max_request_body_size", "max_body_bytes", IntRange(1024, 1 << 30),
             conf="server.max_request_body_size"),
)
# Secrets, by variable: each may be read from NAME_FILE, is masked and scrubbed.
SECRETS: tuple[str, ...] = tuple(v.name for v in VARIABLES if v.secret)
_BY_NAME = {v.name: v for v in VARIABLES}
_DEFAULTS: dict[str, object] = {f.name: f.default for f in fields(Settings) if f.name != "origins"}


# -- resolving all of them ------------------------------------------------------------
class _Found(NamedTuple):
    text: str
    origin: str  # "flag", "env", "file" or "conf"
    label: str   # how a problem with this text names it: the variable, or its _FILE and the path


class _Reader:
    """Reads every variable by one path: finds its text, parses it, remembers where it came from."""

    def __init__(self, env: Mapping[str, str], conf: Mapping[str, object], flags: Mapping[str, object]) -> None:
        self.env, self.conf, self.flags = env, conf, flags
        self.problems: list[tuple[str, str]] = []
        self.values: dict[str, object] = {}
        self.origins: dict[str, tuple[str, str]] = {}
        self._found: dict[str, _Found | None] = {}

    def problem(self, name: str, message: str) -> None:
        self.problems.append((name, message))

    def has_problem(self, name: str) -> bool:
        return any(problem[0] == name for problem in self.problems)

    def found(self, var: Variable) -> _Found | None:
        """The variable's text and origin, or None when nothing sets it (looked up once)."""
        if var.name not in self._found:
            self._found[var.name] = self._find(var)
        return self._found[var.name]

    def _find(self, var: Variable) -> _Found | None:
        if var.flag and self.flags.get(var.flag) is not None:
            return _Found(str(self.flags[var.flag]), "flag", var.name)
        if var.secret:
            value, file_name = self.env.get(var.name) or "", self.env.get(var.name + "_FILE") or ""
            if value and file_name:
                self.problem(var.name, f"{var.name} and {var.name}_FILE are both set: keep one")
                return None
            if file_name:
                try:
                    text = Path(file_name).read_text(encoding="utf-8")
                except (OSError, UnicodeError) as exc:
                    self.problem(var.name, f"{var.name}_FILE can't be read: {getattr(exc, 'strerror', None) or exc}")
                    return None
                text = text.rstrip("\r\n")  # as editors and `echo` leave it
                if not text:
                    self.problem(var.name, f"{var.name}_FILE names an empty file")
                    return None
                return _Found(text, "file", f"{var.name}_FILE ({file_name})")
        in_env = self.env.get(var.name)
        if in_env:  # an empty variable counts as unset, as in Compose files
            return _Found(in_env, "env", var.name)
        if var.conf and self.conf.get(var.conf) is not None:
            return _Found(str(self.conf[var.conf]), "conf", var.name)
        return None

    def given(self, name: str) -> bool:
        return self.found(_BY_NAME[name]) is not None

    def read(self, var: Variable) -> None:
        """Parse the variable into its field, or its field's default when nothing sets it."""
        found = self.found(var)
        if found is None:
            self.set(var.name, _DEFAULTS[var.field], "default")
            return
        try:
            value = var.parse(found.text)
        except _Bad as exc:
            self.problem(var.name, f"{found.label} {exc}")
            return
        self.set(var.name, value, found.origin)

    def set(self, name: str, value: object, origin: str) -> None:
        var = _BY_NAME[name]
        self.values[var.field] = value
        self.origins[var.field] = (name, origin)

    def fallback(self, name: str, value: object, origin: str = "embedded") -> None:
        """A mode's own default for a variable nobody set."""
        if not self.given(name):
            self.set(name, value, origin)


def _embedded_key(data_dir: str, make: bool) -> bytes:
    """Embedded mode's secret, kept under DATA_DIR (mode 0600); made only when ``make``."""
    path = Path(data_dir) / "secure_key"
    if not path.exists():
        if not make:
            return b""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return decode_key(path.read_text(), f"SECURE_KEY (in {path})")


def load(environ: Mapping[str, str] | None = None, conf: Mapping[str, object] | None = None,
         flags: Mapping[str, object] | None = None, *, make_key: bool = True) -> Settings:
    """Resolve every setting: ``flags`` over ``environ`` (or ``NAME_FILE``) over ``conf`` over defaults.

    ``conf`` is the ``[global]`` section of ``conf/server.conf`` (CherryPy names
    such as ``server.socket_port``); ``flags`` holds the command line's
    ``host``/``port``. Raises :class:`SettingsError` listing every bad setting.
    With ``make_key=False`` nothing is written: embedded mode's key is only read
    when it already exists.
    """
    r = _Reader(dict(os.environ if environ is None else environ), conf or {},
                {k: v for k, v in (flags or {}).items() if v is not None})
    for var in VARIABLES:  # every variable, one path; the rules below only fill in what nobody set
        r.read(var)
    values = r.values
    embedded = not r.given("MONGODB_URI")

    ttl, max_age = values.get("session_ttl"), values.get("session_max_age")
    if isinstance(ttl, int) and isinstance(max_age, int) and max_age < ttl:
        r.problem("SESSION_MAX_AGE", f"SESSION_MAX_AGE ({max_age}) must be at least SESSION_TTL ({ttl})")

    if embedded:
        sandbox = f"http://127.0.0.1:{values.get('sandbox_api_port') or 0}"
        if not r.given("SECURE_KEY"):
            try:
                r.fallback("SECURE_KEY", _embedded_key(str(values.get("data_dir") or "."), make_key))
            except SettingsError as exc:
                r.problems.extend(exc.problems)
        r.fallback("SOCIALOS_API_URL", f"{sandbox}/api")
        r.fallback("SOCIALOS_ADMIN_URL", f"{sandbox}/admin")
        r.fallback("SOCIALOS_ADMIN_USER", SANDBOX_ADMIN[0])
        r.fallback("SOCIALOS_ADMIN_PASSWORD", SANDBOX_ADMIN[1])
        # The sandbox takes the operator's Pusher app only when all three are given.
        for name, value in DEMO_PUSHER.items():
            r.fallback(name, value)
        if not r.given("PUSHER_HOST") and not r.given("PUSHER_CLUSTER"):
            r.fallback("PUSHER_HOST", "127.0.0.1")
            r.set("PUSHER_PORT", values.get("sandbox_pusher_port"), "embedded")
            r.set("PUSHER_SCHEME", "http", "embedded")
    else:
        for name in REQUIRED_OUTSIDE_EMBEDDED:
            if not r.given(name) and not r.has_problem(name):
                either = f"{name} (or {name}_FILE)" if _BY_NAME[name].secret else name
                r.problem(name, f"{either} is required when MONGODB_URI is set")

    if not values.get("pusher_host"):
        # Pusher's own API: PUSHER_PORT and PUSHER_SCHEME only mean something with PUSHER_HOST.
        r.set("PUSHER_PORT", 0, "default")
        r.set("PUSHER_SCHEME", "https", "default")
        if not values.get("pusher_ws_host") and values.get("pusher_cluster"):
            r.set("PUSHER_WS_HOST", f"ws-{values['pusher_cluster']}.pusher.com", "default")

    # Secure cookies outside embedded mode; embedded mode is a local run over
    # plain http on whatever address it listens on (a VM, WSL, a LAN address).
    r.fallback("COOKIE_SECURE", not embedded, "embedded" if embedded else "default")

    if r.problems:
        raise SettingsError(r.problems)
    # Each value was made by its field's own parser (or is its field's default).
    return Settings(**cast(dict[str, Any], values), origins=r.origins)


# -- showing them ---------------------------------------------------------------------
def report(settings: Settings) -> list[str]:
    """``--check-config``'s lines: each variable, its value (secrets masked) and where it came from."""
    lines = [f"embedded mode: {'on (no MONGODB_URI)' if settings.embedded else 'off'}"]
    shown = settings.masked()
    for var in VARIABLES:
        name, origin = settings.origins.get(var.field, (var.name, "default"))
        value = shown[var.field]
        if var.name == "SECURE_KEY" and origin == "embedded":
            where = Path(settings.data_dir) / "secure_key"
            value = "****" if value == "****" else "(made at first start)"
            origin = f"embedded: {where}"
        elif origin == "file":
            origin = f"file: {var.name}_FILE"
        elif origin == "conf":
            origin = f"conf: {var.conf}"
        elif isinstance(value, tuple):
            value = ", ".join(map(str, value)) or "(none)"
        if value in ("", None):
            value = "(unset)"
        lines.append(f"{var.name:<28} = {value}  [{origin}]")
    return lines


def _text_forms(value: object) -> list[str]:
    """A secret value as it may appear in text."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, bytes):
        if not value:
            return []
        b64 = base64.b64encode(value).decode()
        return [value.hex(), value.hex().upper(), b64, b64.rstrip("="),
                base64.urlsafe_b64encode(value).decode().rstrip("=")]
    if isinstance(value, tuple):
        return [text for item in value for text in _text_forms(item)]
    return []


def secret_literals(settings: Settings) -> list[str]:
    """Every configured secret as it may appear in text, for the log scrubber: never logged, even by accident.

    Embedded mode's demo credentials are published (the sandbox's), so they
    are not secrets; a key embedded mode made is.
    """
    out: list[str] = []
    for var in VARIABLES:
        if not var.secret:
            continue
        value = getattr(settings, var.field)
        if settings.origins.get(var.field, ("", ""))[1] == "embedded" and isinstance(value, str):
            continue
        if value:
            out += var.literals(value) if var.literals else _text_forms(value)
    return out


# Names of other programs that come close to ours: compose-only variables of
# .env.example (exported by `set -a; . ./.env`) and desktop sessions' own.
_NOT_OURS = frozenset({"DEV_PORT", "PROXY_PORT", "SANDBOX_API_HOST_PORT", "SANDBOX_PUSHER_HOST_PORT", "APP_TAG",
                       "APP_REPLICAS", "SESSION_MANAGER"})
_OUR_PREFIXES = ("SOCIALOS_", "PUSHER_", "SESSION_")


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Warnings for variables that look like this app's but that it doesn't read (a typo is otherwise
    silently ignored): any ``SOCIALOS_*``/``PUSHER_*``/``SESSION_*`` not in the table, and any name close
    to one of the table's (their ``_FILE`` forms included), each with its nearest name."""
    env = os.environ if environ is None else environ
    names = [v.name for v in VARIABLES if "." not in v.name]
    known = names + [f"{name}_FILE" for name in SECRETS]
    out = []
    for name in sorted(env):
        if name in known or name in _NOT_OURS:
            continue
        upper = name.upper()
        if upper.endswith("_FILE") and upper[:-5] in names:
            out.append(f"{name} is not read: only secrets ({', '.join(SECRETS)}) can come from a file; "
                       f"set {upper[:-5]} itself")
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        if close:
            out.append(f"{name} is not a setting of this app; did you mean {close[0]}?")
        elif upper.startswith(_OUR_PREFIXES):
            out.append(f"{name} is not a setting of this app (--check-config lists them all)")
    return out
