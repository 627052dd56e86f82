"""Settings: read once at start-up from the environment, never per request.

Precedence is flags > environment > ``conf/`` files > built-in defaults.
With no ``MONGODB_URI`` the app runs in *embedded mode*: a local database
and the sandboxes on loopback, with a server secret kept under DATA_DIR.
Outside embedded mode every secret and upstream URL must be given, and a
missing or weak one stops the start with one line naming it.
"""

import base64
import binascii
import ipaddress
import os
import secrets
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["Settings", "SettingsError", "decode_key", "load"]

DEMO_PUSHER = ("demo", "demo-key", "demo-secret")
SANDBOX_ADMIN = ("admin", "admin")
SECRET_FIELDS = {"secure_key", "secure_key_previous", "admin_password", "pusher_secret", "mongodb_uri"}


class SettingsError(ValueError):
    """A setting is missing or unusable; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the app, resolved. Immutable: safe to share across threads."""

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
    # Where the browser's pusher-js connects (sandbox has no websocket: '' disables live updates).
    pusher_ws_host: str = ""
    data_dir: str = "./var"
    sandbox_api_port: int = 8081
    sandbox_pusher_port: int = 8082
    embedded_db_port: int = 27018
    log_level: str = "INFO"
    thread_pool: int = 16
    upstream_connect_timeout: float = 3.05
    upstream_read_timeout: float = 5.0
    # Behind a reverse proxy: trust X-Forwarded-Proto/Host/For for redirects and client addresses.
    trusted_proxy: bool = False
    db_timeout_ms: int = 2000
    max_body_bytes: int = 64 * 1024
    login_max_failures: int = 5

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
        """The settings as printable pairs, secrets shown only as set/unset."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                value = "****" if value else "(unset)"
            out[f.name] = value
        return out


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
            raise SettingsError(f"{name} must be hex or base64") from None
    if len(raw) < 32:
        raise SettingsError(f"{name} is too short: {len(raw)} bytes, need at least 32")
    if len(set(raw)) < 16:
        raise SettingsError(f"{name} is too weak: it does not look random")
    return raw


def _is_loopback(host):
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _flag(name, text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1/0 or true/false, not {text!r}")


def _int(name, text, low=None, high=None):
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {text!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _float(name, text, low, high):
    try:
        value = float(str(text).strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {text!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise SettingsError(f"{name} must be between {low} and {high} seconds, not {value}")
    return value


def _embedded_key(data_dir):
    """Embedded mode's secret: made once, kept under DATA_DIR (mode 0600)."""
    path = Path(data_dir) / "secure_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return decode_key(path.read_text(), f"SECURE_KEY in {path}")


def load(environ=None, conf=None, flags=None):
    """Resolve settings: ``flags`` over ``environ`` over ``conf`` over defaults.

    ``conf`` is the dict of the ``[global]`` section of ``conf/server.conf``
    (CherryPy names such as ``server.socket_port``); ``flags`` holds the
    command line's ``host``/``port`` when given.
    """
    env = dict(os.environ if environ is None else environ)
    conf = conf or {}
    flags = {k: v for k, v in (flags or {}).items() if v is not None}

    def get(name, default=""):
        value = env.get(name)
        return default if value is None or value == "" else value

    s = Settings(
        host=str(conf.get("server.socket_host", "127.0.0.1")),
        port=int(conf.get("server.socket_port", 8080)),
        thread_pool=int(conf.get("server.thread_pool", 16)),
        max_body_bytes=int(conf.get("server.max_request_body_size", 64 * 1024)),
    )
    host = flags.get("host") or get("HOST", s.host)
    port = _int("PORT", flags.get("port") or get("PORT", s.port), 0, 65535)
    uri = get("MONGODB_URI") or None
    data_dir = get("DATA_DIR", "./var")
    ttl = _int("SESSION_TTL", get("SESSION_TTL", "3600"), 60, 30 * 86400)
    max_age = _int("SESSION_MAX_AGE", get("SESSION_MAX_AGE", "86400"), 60, 365 * 86400)
    if max_age < ttl:
        raise SettingsError("SESSION_MAX_AGE must be at least SESSION_TTL")
    sandbox_api_port = _int("SANDBOX_API_PORT", get("SANDBOX_API_PORT", "8081"), 1, 65535)
    sandbox_pusher_port = _int("SANDBOX_PUSHER_PORT", get("SANDBOX_PUSHER_PORT", "8082"), 1, 65535)
    embedded = uri is None

    values = dict(
        host=host,
        port=port,
        mongodb_uri=uri,
        data_dir=data_dir,
        session_ttl=ttl,
        session_max_age=max_age,
        sandbox_api_port=sandbox_api_port,
        sandbox_pusher_port=sandbox_pusher_port,
        embedded_db_port=_int("EMBEDDED_DB_PORT", get("EMBEDDED_DB_PORT", "27018"), 1, 65535),
        pusher_channel=get("PUSHER_CHANNEL", "presence-lobby"),
        pusher_cluster=get("PUSHER_CLUSTER", "mt1"),
        pusher_js_url=get("PUSHER_JS_URL"),
        pusher_ws_host=get("PUSHER_WS_HOST"),
        log_level=get("LOG_LEVEL", "INFO").upper(),
        login_max_failures=_int("LOGIN_MAX_FAILURES", get("LOGIN_MAX_FAILURES", "5"), 1, 1000),
        upstream_connect_timeout=_float("UPSTREAM_CONNECT_TIMEOUT",
                                        get("UPSTREAM_CONNECT_TIMEOUT", s.upstream_connect_timeout), 0.1, 60),
        upstream_read_timeout=_float("UPSTREAM_READ_TIMEOUT",
                                     get("UPSTREAM_READ_TIMEOUT", s.upstream_read_timeout), 0.1, 300),
    )
    if values["log_level"] not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")

    sandbox = f"http://127.0.0.1:{sandbox_api_port}"
    if embedded:
        key_text = get("SECURE_KEY")
        values["secure_key"] = decode_key(key_text) if key_text else _embedded_key(data_dir)
        values["api_url"] = get("SOCIALOS_API_URL", f"{sandbox}/api")
        values["admin_url"] = get("SOCIALOS_ADMIN_URL", f"{sandbox}/admin")
        values["admin_user"] = get("SOCIALOS_ADMIN_USER", SANDBOX_ADMIN[0])
        values["admin_password"] = get("SOCIALOS_ADMIN_PASSWORD", SANDBOX_ADMIN[1])
        app_id, key, secret = (get("PUSHER_APP_ID"), get("PUSHER_KEY"), get("PUSHER_SECRET"))
        if not (app_id and key and secret):
            app_id, key, secret = DEMO_PUSHER
        values.update(pusher_app_id=app_id, pusher_key=key, pusher_secret=secret)
        if not get("PUSHER_HOST") and not get("PUSHER_CLUSTER"):
            values.update(pusher_host="127.0.0.1", pusher_port=sandbox_pusher_port, pusher_scheme="http")
    else:
        required = ["SECURE_KEY", "SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL", "SOCIALOS_ADMIN_USER",
                    "SOCIALOS_ADMIN_PASSWORD", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"]
        for name in required:
            if not get(name):
                raise SettingsError(f"{name} is required when MONGODB_URI is set")
        values["secure_key"] = decode_key(get("SECURE_KEY"))
        values.update(
            api_url=get("SOCIALOS_API_URL"),
            admin_url=get("SOCIALOS_ADMIN_URL"),
            admin_user=get("SOCIALOS_ADMIN_USER"),
            admin_password=get("SOCIALOS_ADMIN_PASSWORD"),
            pusher_app_id=get("PUSHER_APP_ID"),
            pusher_key=get("PUSHER_KEY"),
            pusher_secret=get("PUSHER_SECRET"),
        )
    for name in ("SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL"):
        url = values["api_url" if name == "SOCIALOS_API_URL" else "admin_url"]
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"{name} must be an http:// or https:// URL")

    if get("PUSHER_HOST"):
        values.update(
            pusher_host=get("PUSHER_HOST"),
            pusher_port=_int("PUSHER_PORT", get("PUSHER_PORT", "0"), 0, 65535),
            pusher_scheme=get("PUSHER_SCHEME", "https"),
        )
    if values.get("pusher_scheme", "https") not in ("http", "https"):
        raise SettingsError("PUSHER_SCHEME must be http or https")

    if not values.get("pusher_ws_host") and not values.get("pusher_host"):
        # Real Pusher: pusher-js connects to the cluster's websocket host.
        values["pusher_ws_host"] = f"ws-{values['pusher_cluster']}.pusher.com"

    previous = tuple(decode_key(part, "SECURE_KEY_PREVIOUS")
                     for part in get("SECURE_KEY_PREVIOUS").split(",") if part.strip())
    values["secure_key_previous"] = previous

    values["trusted_proxy"] = _flag("TRUSTED_PROXY", get("TRUSTED_PROXY", "0"))

    cookie_secure = get("COOKIE_SECURE")
    if cookie_secure:
        values["cookie_secure"] = _flag("COOKIE_SECURE", cookie_secure)
    else:
        values["cookie_secure"] = not (embedded and _is_loopback(host))

    return replace(s, **values)
