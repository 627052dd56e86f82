"""Settings: read once at start-up, never per request.

Precedence is flags > environment (or a secret's ``_FILE``) > ``conf/``
files > defaults. The defaults are written once, on :class:`Settings`; the
loader's table (:data:`VARIABLES`) only says which variable sets which field
and how its text is read. With no ``MONGODB_URI`` the app runs in *embedded
mode*: a local database and the sandboxes on loopback, with a server secret
kept under DATA_DIR. Outside it every secret and upstream URL must be given.

Every bad setting is collected and reported at once, by its variable name,
in one :class:`SettingsError`; nothing here writes a file unless asked to
(``make_key``), so ``--check-config`` changes nothing.
"""

import base64
import binascii
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["DEMO_PUSHER", "SANDBOX_ADMIN", "Settings", "SettingsError", "VARIABLES", "decode_key", "load",
           "mask_uri", "report"]

# Embedded mode's Pusher app, shared with the sandbox. The id is numeric because
# Pusher's own server libraries refuse anything else.
DEMO_PUSHER = {"PUSHER_APP_ID": "100001", "PUSHER_KEY": "demo-key", "PUSHER_SECRET": "demo-secret"}
SANDBOX_ADMIN = ("admin", "admin")
# Secrets: masked when shown, and each may be read from the file named by NAME_FILE.
SECRETS = ("SECURE_KEY", "SECURE_KEY_PREVIOUS", "SOCIALOS_ADMIN_PASSWORD", "PUSHER_SECRET", "MONGODB_URI")
REQUIRED_OUTSIDE_EMBEDDED = ("SECURE_KEY", "SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL", "SOCIALOS_ADMIN_USER",
                             "SOCIALOS_ADMIN_PASSWORD", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET")


class SettingsError(ValueError):
    """One or more settings are missing or unusable.

    ``problems`` is a list of ``(variable, message)``; each message names its
    variable, so ``str()`` is one line an operator can act on.
    """

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


@dataclass(frozen=True)
class Settings:
    """Every knob of the app, resolved, with its default. Immutable: safe to share across threads."""

    host: str = "127.0.0.1"
    port: int = 8080
    mongodb_uri: str | None = None
    secure_key: bytes = b""
    secure_key_previous: tuple = ()
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
    # Behind a reverse proxy: trust X-Forwarded-Proto/Host/For for redirects and client addresses.
    trusted_proxy: bool = False
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
    origins: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def embedded(self):
        """True when the app brings its own database and sandboxes."""
        return self.mongodb_uri is None

    @property
    def database_uri(self):
        """The MongoDB URI in force (embedded mode points at the local server)."""
        if self.mongodb_uri:
            return self.mongodb_uri
        return f"mongodb://127.0.0.1:{self.embedded_db_port}/socialos?directConnection=true"

    @property
    def cookie_name(self):
        """``__Host-session`` over HTTPS: no subdomain or path can plant or shadow it."""
        return "__Host-session" if self.cookie_secure else "session"

    @property
    def pusher_configured(self):
        return bool(self.pusher_app_id and self.pusher_key and self.pusher_secret)

    @property
    def pusher_base_url(self):
        """Pusher's HTTP API: ``api-CLUSTER.pusher.com`` unless a host is given."""
        if self.pusher_host:
            port = f":{self.pusher_port}" if self.pusher_port else ""
            return f"{self.pusher_scheme}://{self.pusher_host}{port}"
        return f"https://api-{self.pusher_cluster}.pusher.com"

    def masked(self):
        """The settings as printable ``{field: value}``, secrets shown only as set/unset
        (a MongoDB URI with only its password masked)."""
        out = {}
        for f in fields(self):
            if f.name == "origins":
                continue
            value = getattr(self, f.name)
            variable = self.origins.get(f.name, ("", ""))[0]
            if f.name == "mongodb_uri" and value:
                value = mask_uri(value)
            elif variable in SECRETS or f.name in ("secure_key", "secure_key_previous"):
                value = "****" if value else "(unset)"
            out[f.name] = value
        return out


# -- reading one value ----------------------------------------------------------------
def decode_key(text, name="SECURE_KEY"):
    """Decode a server secret given as hex or base64; at least 32 random bytes."""
    text = text.strip()
    raw = None
    if len(text) % 2 == 0:
        try:
            raw = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None:
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise SettingsError([(name, f"{name} must be hex or base64")]) from None
    if len(raw) < 32:
        raise SettingsError([(name, f"{name} is too short: {len(raw)} bytes, need at least 32")])
    if len(set(raw)) < 16:
        raise SettingsError([(name, f"{name} is too weak: it does not look random")])
    return raw


class _Bad(ValueError):
    """A value that can't be used; the message reads after the variable's name."""


def _flag(text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _Bad(f"must be 1/0 or true/false, not {text!r}")


def _int(low, high):
    def parse(text):
        try:
            value = int(str(text).strip())
        except ValueError:
            raise _Bad(f"must be a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise _Bad(f"must be between {low} and {high}, not {value}")
        return value
    return parse


def _seconds(low, high):
    def parse(text):
        try:
            value = float(str(text).strip())
        except ValueError:
            raise _Bad(f"must be a number of seconds, not {text!r}") from None
        if not low <= value <= high:  # also refuses nan
            raise _Bad(f"must be between {low} and {high} seconds, not {value}")
        return value
    return parse


def _choice(*allowed, upper=False):
    def parse(text):
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in allowed:
            raise _Bad(f"must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {text!r}")
        return value
    return parse


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _is_hostname(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _host(text):
    value = text.strip()
    if not _is_hostname(value):
        raise _Bad(f"must be a host name or IP address, not {text!r}")
    return value


def _host_port(text):
    """``host`` or ``host:port`` (a websocket host for the browser)."""
    value = text.strip()
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if not _is_hostname(host) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise _Bad(f"must be a host name, optionally with :port, not {text!r}")
    return value


def _url(text):
    value = text.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Bad(f"must be an absolute http:// or https:// URL, not {text!r}")
    return value


def _channel(text):
    # Pusher's channel-name alphabet and length; /presence shows presence channels only.
    value = text.strip()
    if not (value.startswith("presence-") and re.fullmatch(r"[A-Za-z0-9_\-=@,.;]{10,164}", value)):
        raise _Bad(f"must be a Pusher presence channel such as presence-lobby, not {text!r}")
    return value


def _text(text):
    return text.strip()


def _keys(text):
    return tuple(decode_key(part, "SECURE_KEY_PREVIOUS") for part in text.split(",") if part.strip())


def mask_uri(uri):
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


def _uri_password(uri):
    host_part = re.split(r"[/?]", uri.partition("://")[2], maxsplit=1)[0]
    return host_part.rpartition("@")[0].partition(":")[2] if "@" in host_part else ""


def _mongodb_uri(text):
    """Checked by the driver's own parser; its message never carries the password."""
    value = text.strip()
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri
    try:
        parse_uri(value, connect_timeout=5)
    except (PyMongoError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        password = _uri_password(value)
        for secret in {password, unquote(password)} - {""}:
            message = message.replace(secret, "****")
        raise _Bad(f"is not a usable MongoDB URI ({mask_uri(value)}): {message}") from None
    return value


@dataclass(frozen=True)
class Variable:
    """One setting as an operator writes it: its name, the field it sets, how its text is read."""

    name: str
    field: str
    parse: object = _text
    conf: str = ""      # the conf/server.conf key that may set it too
    flag: str = ""      # the command-line flag that may set it too


VARIABLES = (
    Variable("HOST", "host", _host, conf="server.socket_host", flag="host"),
    Variable("PORT", "port", _int(0, 65535), conf="server.socket_port", flag="port"),
    Variable("MONGODB_URI", "mongodb_uri", _mongodb_uri),
    Variable("SECURE_KEY", "secure_key", decode_key),
    Variable("SECURE_KEY_PREVIOUS", "secure_key_previous", _keys),
    Variable("SOCIALOS_API_URL", "api_url", _url),
    Variable("SOCIALOS_ADMIN_URL", "admin_url", _url),
    Variable("SOCIALOS_ADMIN_USER", "admin_user"),
    Variable("SOCIALOS_ADMIN_PASSWORD", "admin_password"),
    Variable("SESSION_TTL", "session_ttl", _int(60, 30 * 86400)),
    Variable("SESSION_MAX_AGE", "session_max_age", _int(60, 365 * 86400)),
    Variable("SESSION_CACHE_SIZE", "session_cache_size", _int(0, 10_000_000)),
    Variable("COOKIE_SECURE", "cookie_secure", _flag),
    Variable("PUSHER_APP_ID", "pusher_app_id"),
    Variable("PUSHER_KEY", "pusher_key"),
    Variable("PUSHER_SECRET", "pusher_secret"),
    Variable("PUSHER_CLUSTER", "pusher_cluster", _host),
    Variable("PUSHER_HOST", "pusher_host", _host),
    Variable("PUSHER_PORT", "pusher_port", _int(0, 65535)),
    Variable("PUSHER_SCHEME", "pusher_scheme", _choice("http", "https")),
    Variable("PUSHER_CHANNEL", "pusher_channel", _channel),
    Variable("PUSHER_JS_URL", "pusher_js_url", _url),
    Variable("PUSHER_WS_HOST", "pusher_ws_host", _host_port),
    Variable("DATA_DIR", "data_dir"),
    Variable("SANDBOX_API_PORT", "sandbox_api_port", _int(1, 65535)),
    Variable("SANDBOX_PUSHER_PORT", "sandbox_pusher_port", _int(1, 65535)),
    Variable("EMBEDDED_DB_PORT", "embedded_db_port", _int(1, 65535)),
    Variable("LOG_LEVEL", "log_level", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True)),
    Variable("LOG_FORMAT", "log_format", _choice("text", "json")),
    Variable("UPSTREAM_CONNECT_TIMEOUT", "upstream_connect_timeout", _seconds(0.1, 60)),
    Variable("UPSTREAM_READ_TIMEOUT", "upstream_read_timeout", _seconds(0.1, 300)),
    Variable("TRUSTED_PROXY", "trusted_proxy", _flag),
    Variable("LOGIN_MAX_FAILURES", "login_max_failures", _int(1, 1000)),
    Variable("SESSION_STORE", "session_store", _choice("mongodb", "memory")),
    Variable("SESSION_FRESH", "session_fresh", _int(1, 7 * 86400)),
    Variable("ACTIVITY_DAYS", "activity_days", _int(1, 3650)),
    Variable("MAX_SESSIONS_PER_USER", "max_sessions_per_user", _int(0, 100_000)),
    Variable("SHUTDOWN_DRAIN", "shutdown_drain", _seconds(0, 300)),
    Variable("UPSTREAM_MAX_BYTES", "upstream_max_bytes", _int(1024, 1 << 30)),
    # Server knobs that live in conf/server.conf only.
    Variable("server.thread_pool", "thread_pool", _int(1, 1024), conf="server.thread_pool"),
    Variable("server.max_request_body_size", "max_body_bytes", _int(1024, 1 << 30),
             conf="server.max_request_body_size"),
)
_BY_NAME = {v.name: v for v in VARIABLES}
_DEFAULTS = {f.name: f.default for f in fields(Settings) if f.name != "origins"}


# -- resolving all of them ------------------------------------------------------------
class _Reader:
    """Finds each variable's text and remembers where it came from and what was wrong."""

    def __init__(self, env, conf, flags):
        self.env, self.conf, self.flags = env, conf, flags
        self.problems = []
        self.values, self.origins = {}, {}
        self._raw = {}

    def problem(self, name, message):
        self.problems.append((name, message))

    def raw(self, var):
        """``(text, origin)`` of a variable, or ``(None, None)`` when nothing sets it (asked once)."""
        if var.name not in self._raw:
            self._raw[var.name] = self._find(var)
        return self._raw[var.name]

    def _find(self, var):
        if var.flag and self.flags.get(var.flag) is not None:
            return str(self.flags[var.flag]), "flag"
        if var.name in SECRETS:
            value, file_name = self.env.get(var.name) or "", self.env.get(var.name + "_FILE") or ""
            if value and file_name:
                self.problem(var.name, f"{var.name} and {var.name}_FILE are both set: keep one")
                return None, None
            if file_name:
                try:
                    text = Path(file_name).read_text(encoding="utf-8")
                except (OSError, UnicodeError) as exc:
                    self.problem(var.name, f"{var.name}_FILE can't be read: {getattr(exc, 'strerror', None) or exc}")
                    return None, None
                text = text.rstrip("\r\n")  # as editors and `echo` leave it
                if not text:
                    self.problem(var.name, f"{var.name}_FILE names an empty file")
                    return None, None
                return text, "file"
        value = self.env.get(var.name)
        if value:  # an empty variable counts as unset, as in Compose files
            return value, "env"
        if var.conf and self.conf.get(var.conf) is not None:
            return str(self.conf[var.conf]), "conf"
        return None, None

    def read(self, name, default=None, origin="default"):
        """Parse ``name`` into its field; ``default`` (else the field's default) when unset."""
        var = _BY_NAME[name]
        text, found = self.raw(var)
        if text is None:
            value = _DEFAULTS[var.field] if default is None else default
            self.set(var, value, origin)
            return value
        try:
            value = var.parse(text)
        except SettingsError as exc:
            self.problems.extend(exc.problems)
            return None
        except _Bad as exc:
            self.problem(name, f"{name} {exc}")
            return None
        self.set(var, value, found)
        return value

    def set(self, var, value, origin):
        self.values[var.field] = value
        self.origins[var.field] = (var.name, origin)

    def given(self, name):
        return self.raw(_BY_NAME[name])[0] is not None


def _embedded_key(data_dir, make):
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


def load(environ=None, conf=None, flags=None, *, make_key=True):
    """Resolve every setting: ``flags`` over ``environ`` (or ``NAME_FILE``) over ``conf`` over defaults.

    ``conf`` is the ``[global]`` section of ``conf/server.conf`` (CherryPy names
    such as ``server.socket_port``); ``flags`` holds the command line's
    ``host``/``port``. Raises :class:`SettingsError` listing every bad setting.
    With ``make_key=False`` nothing is written: embedded mode's key is only read
    when it already exists.
    """
    r = _Reader(dict(os.environ if environ is None else environ), conf or {},
                {k: v for k, v in (flags or {}).items() if v is not None})
    for var in VARIABLES:
        if var.name not in ("SECURE_KEY", "COOKIE_SECURE") and not var.name.startswith(("SOCIALOS_", "PUSHER_")):
            r.read(var.name)
    uri = r.values.get("mongodb_uri")
    embedded = uri is None and not r.given("MONGODB_URI")

    ttl, max_age = r.values.get("session_ttl"), r.values.get("session_max_age")
    if ttl and max_age and max_age < ttl:
        r.problem("SESSION_MAX_AGE", f"SESSION_MAX_AGE ({max_age}) must be at least SESSION_TTL ({ttl})")

    for name in ("PUSHER_CLUSTER", "PUSHER_PORT", "PUSHER_SCHEME", "PUSHER_CHANNEL", "PUSHER_JS_URL",
                 "PUSHER_WS_HOST"):
        r.read(name)
    if embedded:
        sandbox = f"http://127.0.0.1:{r.values.get('sandbox_api_port') or 0}"
        if r.given("SECURE_KEY"):
            r.read("SECURE_KEY")
        else:
            try:
                key = _embedded_key(r.values.get("data_dir") or ".", make_key)
                r.set(_BY_NAME["SECURE_KEY"], key, "embedded")
            except SettingsError as exc:
                r.problems.extend(exc.problems)
        r.read("SOCIALOS_API_URL", f"{sandbox}/api", "embedded")
        r.read("SOCIALOS_ADMIN_URL", f"{sandbox}/admin", "embedded")
        r.read("SOCIALOS_ADMIN_USER", SANDBOX_ADMIN[0], "embedded")
        r.read("SOCIALOS_ADMIN_PASSWORD", SANDBOX_ADMIN[1], "embedded")
        trio = ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET")
        # The sandbox takes the operator's Pusher app only when all three are given.
        own = all(r.given(name) for name in trio)
        for name in trio:
            r.read(name, None if own else DEMO_PUSHER[name], "env" if own else "embedded")
        if not r.given("PUSHER_HOST") and not r.given("PUSHER_CLUSTER"):
            r.read("PUSHER_HOST", "127.0.0.1", "embedded")
            r.set(_BY_NAME["PUSHER_PORT"], r.values.get("sandbox_pusher_port"), "embedded")
            r.set(_BY_NAME["PUSHER_SCHEME"], "http", "embedded")
        else:
            r.read("PUSHER_HOST")
    else:
        for name in REQUIRED_OUTSIDE_EMBEDDED:
            if not r.given(name) and not any(p[0] == name for p in r.problems):
                r.problem(name, f"{name} is required when MONGODB_URI is set")
        for name in ("SECURE_KEY", "SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL", "SOCIALOS_ADMIN_USER",
                     "SOCIALOS_ADMIN_PASSWORD", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", "PUSHER_HOST"):
            r.read(name)

    if not r.values.get("pusher_host"):
        # Pusher's own API: PUSHER_PORT and PUSHER_SCHEME only mean something with PUSHER_HOST.
        r.set(_BY_NAME["PUSHER_PORT"], 0, "default")
        r.set(_BY_NAME["PUSHER_SCHEME"], "https", "default")
        if not r.values.get("pusher_ws_host") and r.values.get("pusher_cluster"):
            r.set(_BY_NAME["PUSHER_WS_HOST"], f"ws-{r.values['pusher_cluster']}.pusher.com", "default")

    # Secure cookies outside embedded mode; embedded mode is a local run over
    # plain http on whatever address it listens on (a VM, WSL, a LAN address).
    r.read("COOKIE_SECURE", not embedded, "embedded" if embedded else "default")

    if r.problems:
        raise SettingsError(r.problems)
    return Settings(**r.values, origins=r.origins)


# -- showing them ---------------------------------------------------------------------
def report(settings):
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
