"""Settings as an operator meets them: server secrets that must be random, precedence,
`--check-config`, `_FILE` secrets, every bad setting at once by its variable name,
nothing written, and the exit statuses."""

import base64
import logging
import os
import secrets
import subprocess
from dataclasses import fields

import pytest

from socialos_app import cli
from socialos_app.ops.logs import ScrubFilter
from socialos_app.settings import (
    DEMO_PUSHER,
    VARIABLES,
    Settings,
    SettingsError,
    decode_key,
    load,
    mask_uri,
    report,
    secret_literals,
    unknown_variables,
)
from socialos_app.settings import SECRETS as SECRET_VARIABLES
from support import PYTHON, ROOT

SCRUB = tuple(v.name for v in VARIABLES if "." not in v.name)  # every variable of the table (and its _FILE)
DB_PASSWORD = "db-" + secrets.token_hex(8)
SECRETS = {
    "SECURE_KEY": secrets.token_hex(32),
    "SOCIALOS_ADMIN_PASSWORD": "adm-" + secrets.token_hex(8),
    "PUSHER_SECRET": "psh-" + secrets.token_hex(8),
    "MONGODB_URI": f"mongodb://ops:{DB_PASSWORD}@127.0.0.1:1/prod",
}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def production(**overrides):
    """A complete production environment; None removes a variable."""
    env = clean_env(**SECRETS, SOCIALOS_API_URL="https://api.example.test/api",
                    SOCIALOS_ADMIN_URL="https://api.example.test/admin", SOCIALOS_ADMIN_USER="ops",
                    PUSHER_APP_ID="123", PUSHER_KEY="public-key")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def run_app(env, *args, timeout=30):
    return subprocess.run([PYTHON, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def no_secret_in(text):
    for value in SECRETS.values():
        assert value not in text
    assert DB_PASSWORD not in text


# -- server secrets -------------------------------------------------------------------
def test_decode_key_accepts_hex_and_base64():
    raw = secrets.token_bytes(32)
    assert decode_key(raw.hex()) == raw
    assert decode_key(raw.hex().upper()) == raw
    assert decode_key(base64.b64encode(raw).decode()) == raw
    assert decode_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert decode_key("  " + raw.hex() + "\n") == raw


@pytest.mark.parametrize("text,words", [
    (secrets.token_hex(16), "too short"),
    (base64.b64encode(secrets.token_bytes(20)).decode(), "too short"),
    ("00" * 32, "too weak"),
    ("ab" * 40, "too weak"),
    ("not a key at all!!", "hex or base64"),
    ("", "too short"),
])
def test_decode_key_refuses_short_weak_and_malformed(text, words):
    with pytest.raises(SettingsError) as caught:
        decode_key(text, "SECURE_KEY")
    assert "SECURE_KEY" in str(caught.value)
    assert words in str(caught.value)


def test_production_mode_refuses_a_weak_or_short_key_by_name():
    for bad in ("00" * 32, secrets.token_hex(8)):
        with pytest.raises(SettingsError, match="SECURE_KEY"):
            load(production(SECURE_KEY=bad))
    with pytest.raises(SettingsError, match="SECURE_KEY_PREVIOUS"):
        load(production(SECURE_KEY_PREVIOUS="abcd"))


def test_previous_keys_are_read_in_order():
    k1, k3 = secrets.token_bytes(32), secrets.token_bytes(32)
    s = load(production(SECURE_KEY_PREVIOUS=f"{k1.hex()}, {base64.b64encode(k3).decode()}"))
    assert s.secure_key_previous == (k1, k3)


def test_embedded_mode_makes_a_private_key_once_and_keeps_it(tmp_path):
    data = tmp_path / "data"
    first = load({"DATA_DIR": str(data)})
    assert first.embedded and len(first.secure_key) >= 32
    key_file = data / "secure_key"
    assert key_file.exists()
    assert (os.stat(key_file).st_mode & 0o777) == 0o600
    assert load({"DATA_DIR": str(data)}).secure_key == first.secure_key
    assert load({"DATA_DIR": str(tmp_path / "other")}).secure_key != first.secure_key
    # Embedded mode defaults to the sandboxes on its loopback ports.
    assert first.api_url == "http://127.0.0.1:8081/api"


# -- where each value comes from ------------------------------------------------------
def test_load_precedence_flags_over_env_over_conf():
    conf = {"server.socket_host": "10.9.9.9", "server.socket_port": 7000}
    s = load(production(), conf=conf)
    assert (s.host, s.port) == ("10.9.9.9", 7000)
    s = load(production(HOST="127.0.0.2", PORT="7001"), conf=conf)
    assert (s.host, s.port) == ("127.0.0.2", 7001)
    s = load(production(HOST="127.0.0.2", PORT="7001"), conf=conf, flags={"host": "127.0.0.3", "port": 7002})
    assert (s.host, s.port) == ("127.0.0.3", 7002)
    s = load(production(HOST="127.0.0.2", PORT="7001"), conf=conf, flags={"host": None, "port": None})
    assert (s.host, s.port) == ("127.0.0.2", 7001)
    s = load(production(), conf={})
    assert (s.host, s.port) == ("127.0.0.1", 8080)


def test_load_production_mode_reads_every_setting():
    s = load(production(SESSION_TTL="120", SESSION_MAX_AGE="600"))
    assert not s.embedded
    assert s.secure_key == bytes.fromhex(SECRETS["SECURE_KEY"])
    assert s.api_url == "https://api.example.test/api" and s.admin_user == "ops"
    assert (s.session_ttl, s.session_max_age) == (120, 600)
    assert s.database_uri == SECRETS["MONGODB_URI"]


@pytest.mark.parametrize("name", ["SECURE_KEY", "SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL", "SOCIALOS_ADMIN_USER",
                                  "SOCIALOS_ADMIN_PASSWORD", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"])
@pytest.mark.parametrize("missing", [None, ""])
def test_production_mode_requires_each_secret_and_names_it(name, missing):
    with pytest.raises(SettingsError) as caught:
        load(production(**{name: missing}))
    assert name in str(caught.value)


def test_load_reads_the_process_environment(monkeypatch, tmp_path):
    """load() with no argument reads os.environ (the app's path)."""
    for name in list(os.environ):
        if name.startswith(SCRUB):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SESSION_TTL", "61")
    s = load()
    assert s.embedded and s.session_ttl == 61


def test_masked_settings_show_no_secret():
    s = load(production())
    shown = repr(s.masked())
    no_secret_in(shown)
    assert s.masked()["secure_key"] == "****"
    assert s.masked()["secure_key_previous"] == "(unset)"
    assert s.masked()["admin_user"] == "ops"


# -- --check-config -------------------------------------------------------------------
BAD = {
    "HOST": "not a host!!",
    "PUSHER_CHANNEL": "lobby",
    "PUSHER_JS_URL": "cdn.example.com/pusher.js",
    "SESSION_TTL": "soon",
    "COOKIE_SECURE": "maybe",
    "LOG_FORMAT": "xml",
    "SECURE_KEY": secrets.token_hex(8),
    "SOCIALOS_API_URL": None,
    "PUSHER_SECRET": None,
}


def test_check_config_reports_every_bad_setting_at_once_by_variable_name():
    result = run_app(production(**BAD), "--check-config")
    assert result.returncode == cli.EXIT_BAD_SETTINGS == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == len(BAD), result.stderr
    for name in BAD:
        assert sum(f" {name} " in line for line in lines) == 1, (name, lines)
    assert "not a host!!" in result.stderr and "'lobby'" in result.stderr  # says what was wrong
    no_secret_in(result.stdout + result.stderr)


def test_check_config_shows_values_sources_and_mode_with_secrets_masked(tmp_path):
    key_file = tmp_path / "pusher_secret"
    key_file.write_text(SECRETS["PUSHER_SECRET"] + "\n")
    env = production(SESSION_TTL="1800", PUSHER_SECRET=None, PUSHER_SECRET_FILE=key_file)
    result = run_app(env, "--check-config", "--port", "9123")
    assert result.returncode == 0, result.stderr
    rows = {line.split("=", 1)[0].strip(): line for line in result.stdout.splitlines() if " = " in line}
    assert "embedded mode: off" in result.stdout
    assert rows["SESSION_TTL"].endswith("= 1800  [env]")
    assert rows["PORT"].endswith("= 9123  [flag]")
    assert rows["HOST"].endswith("= 127.0.0.1  [conf: server.socket_host]")
    assert rows["SESSION_MAX_AGE"].endswith("= 86400  [default]")
    assert rows["PUSHER_SECRET"].endswith("= ****  [file: PUSHER_SECRET_FILE]")
    assert rows["SECURE_KEY"].endswith("= ****  [env]")
    assert rows["SOCIALOS_API_URL"].endswith("= https://api.example.test/api  [env]")
    # The URI as given, its password alone masked.
    assert rows["MONGODB_URI"].endswith("= mongodb://ops:****@127.0.0.1:1/prod  [env]")
    no_secret_in(result.stdout + result.stderr)


def test_check_config_in_embedded_mode_writes_nothing(tmp_path):
    data = tmp_path / "data"
    result = run_app(clean_env(DATA_DIR=data, HOST="0.0.0.0"), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "embedded mode: on" in result.stdout
    assert not data.exists(), "--check-config wrote under DATA_DIR"
    rows = {line.split("=", 1)[0].strip(): line for line in result.stdout.splitlines() if " = " in line}
    assert "(made at first start)" in rows["SECURE_KEY"] and "[embedded:" in rows["SECURE_KEY"]
    assert rows["PUSHER_APP_ID"].endswith(f"= {DEMO_PUSHER['PUSHER_APP_ID']}  [embedded]")
    assert rows["COOKIE_SECURE"].endswith("= False  [embedded]")  # plain http from a LAN address works


@pytest.mark.parametrize("uri,words", [
    ("http://localhost:27017/x", "Invalid URI scheme"),
    ("mongodb://", "at least one hostname"),
    ("mongodb://h:notaport/x", "Port"),
    (f"mongodb://ops:{DB_PASSWORD}@h:notaport/x", "Port"),
    (f"mongodb://ops:{DB_PASSWORD}%@h/db", "must be escaped"),
    (f"mongodb://ops:{DB_PASSWORD}@h/db?tls=maybe", "tls"),
], ids=["http", "no-host", "bad-port", "bad-port-with-password", "unescaped-password", "bad-option"])
def test_mongodb_uri_is_checked_by_the_driver_and_named(uri, words):
    with pytest.raises(SettingsError) as caught:
        load(production(MONGODB_URI=uri))
    problems = dict(caught.value.problems)
    assert "MONGODB_URI" in problems and words in problems["MONGODB_URI"]
    assert problems["MONGODB_URI"].startswith("MONGODB_URI ")
    assert DB_PASSWORD not in str(caught.value)


def test_mask_uri_hides_only_the_password():
    assert mask_uri(f"mongodb://ops:{DB_PASSWORD}@h1:27017,h2/db?replicaSet=rs0") == \
        "mongodb://ops:****@h1:27017,h2/db?replicaSet=rs0"
    assert mask_uri("mongodb+srv://ops:p%40ss@cluster.example.net/db") == "mongodb+srv://ops:****@cluster.example.net/db"
    assert mask_uri("mongodb://h/db") == "mongodb://h/db"
    assert mask_uri("mongodb://onlyuser@h/db") == "mongodb://onlyuser@h/db"
    shown = load(production()).masked()["mongodb_uri"]
    assert shown == "mongodb://ops:****@127.0.0.1:1/prod" and shown != SECRETS["MONGODB_URI"]


@pytest.mark.parametrize("name,value", [
    ("HOST", "not a host!!"), ("HOST", "-bad-.example"), ("PUSHER_CHANNEL", "lobby"),
    ("PUSHER_CHANNEL", "presence-bad channel"), ("PUSHER_CHANNEL", "private-lobby"),
    ("PUSHER_JS_URL", "cdn.example.com/pusher.js"), ("PUSHER_JS_URL", "ftp://cdn.example.com/p.js"),
    ("SOCIALOS_API_URL", "https://"), ("PUSHER_WS_HOST", "ws.example.com:notaport"),
    ("SESSION_MAX_AGE", "120"),  # below SESSION_TTL
    ("SESSION_TTL", "abc"), ("SESSION_TTL", "5"), ("PORT", "99999"), ("COOKIE_SECURE", "maybe"),
    ("SOCIALOS_API_URL", "ftp://x"), ("LOG_LEVEL", "LOUD"),
])
def test_unusable_values_are_refused_by_name(name, value):
    with pytest.raises(SettingsError) as caught:
        load(production(**{name: value}))
    assert [n for n, _ in caught.value.problems] == [name]


@pytest.mark.parametrize("name,value", [
    ("HOST", "0.0.0.0"), ("HOST", "::"), ("HOST", "app.internal"), ("HOST", "localhost"),
    ("PUSHER_CHANNEL", "presence-team_1"), ("PUSHER_JS_URL", "https://js.pusher.com/8.4.0/pusher.min.js"),
    ("PUSHER_WS_HOST", "127.0.0.1:8082"),
])
def test_usable_values_pass(name, value):
    load(production(**{name: value}))


# -- one table: every field reachable, every secret from its file, masked and scrubbed -----------
BY_NAME = {v.name: v for v in VARIABLES}
BASE = {"PUSHER_HOST": "pusher.example.test"}  # so that PUSHER_PORT and PUSHER_SCHEME mean something
URI_PASSWORD = "Pw-Sample-7x"
TEXTS = ("Sample-Secret-4u", secrets.token_hex(32), f"mongodb://sample:{URI_PASSWORD}@127.0.0.1:2/sample",
         "https://sample.example.test/x", "presence-sample", "0", "1")


def candidates(var, before):
    """Texts to try for ``var``, derived from its parser where it says what it takes."""
    yield from getattr(var.parse, "allowed", ())
    if hasattr(var.parse, "low"):
        for number in (before + 1, before - 1, var.parse.low, var.parse.high):
            yield str(number)
    yield from TEXTS


def sample(var):
    """A text its parser takes that moves ``var``'s field off its value in production: (text, settings)."""
    before = getattr(load(production(**BASE)), var.field)
    for text in candidates(var, before):
        try:
            s = load(production(**{**BASE, var.name: text}))
        except SettingsError:
            continue
        if getattr(s, var.field) != before:
            return text, s
    pytest.fail(f"no text changes {var.name}: add one its parser takes to TEXTS")


def test_every_settings_field_has_one_variable():
    assert sorted(v.field for v in VARIABLES) == sorted(f.name for f in fields(Settings) if f.name != "origins")


@pytest.mark.parametrize("var", VARIABLES, ids=lambda v: v.name)
def test_every_field_is_reachable_from_the_environment(var):
    text, s = sample(var)
    assert s.origins[var.field] == (var.name, "env")
    if var.conf:  # and from conf/server.conf, under the environment
        from_conf = load(production(**BASE), conf={var.conf: text})
        assert getattr(from_conf, var.field) == getattr(s, var.field)
        assert from_conf.origins[var.field] == (var.name, "conf")


@pytest.mark.parametrize("name", SECRET_VARIABLES)
def test_every_secret_is_masked_and_scrubbed(name):
    text, s = sample(BY_NAME[name])
    literals = secret_literals(s)
    assert literals and all(len(literal) >= 8 for literal in literals), literals  # ScrubFilter's floor
    if name == "MONGODB_URI":
        assert URI_PASSWORD in literals and text not in literals  # only the password is secret
    else:
        assert text in literals
    shown = repr(s.masked()) + "\n".join(report(s))
    record = logging.LogRecord("socialos.test", logging.WARNING, __file__, 1, "got %s then %s",
                               (text, " ".join(literals)), None)
    ScrubFilter(literals).filter(record)
    logged = record.getMessage()
    for secret in (text, *literals):
        assert secret not in shown, (name, secret)
        assert secret not in logged, (name, logged)


def test_embedded_demo_credentials_are_not_scrubbed_but_the_made_key_is(tmp_path):
    s = load(clean_env(DATA_DIR=tmp_path))
    literals = secret_literals(s)
    assert DEMO_PUSHER["PUSHER_SECRET"] not in literals
    assert s.secure_key.hex() in literals


@pytest.mark.parametrize("name", SECRET_VARIABLES)
def test_each_secret_can_come_from_a_file_with_its_newline_stripped(tmp_path, name):
    var = BY_NAME[name]
    text, from_env = sample(var)
    path = tmp_path / "secret"
    path.write_text(text + "\n")
    s = load(production(**{**BASE, name: None, f"{name}_FILE": path}))
    assert getattr(s, var.field) == getattr(from_env, var.field)
    assert s.origins[var.field] == (name, "file")


@pytest.mark.parametrize("name", SECRET_VARIABLES)
def test_a_secret_and_its_file_both_set_is_an_error(tmp_path, name):
    text, _ = sample(BY_NAME[name])
    path = tmp_path / "secret"
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load(production(**{**BASE, name: text, f"{name}_FILE": path}))
    problems = dict(caught.value.problems)
    assert f"{name} and {name}_FILE are both set" in problems[name]
    assert text not in str(caught.value)


def test_a_missing_or_empty_secret_file_is_named(tmp_path):
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError) as caught:
        load(production(SECURE_KEY=None, SECURE_KEY_FILE=tmp_path / "nope",
                        PUSHER_SECRET=None, PUSHER_SECRET_FILE=tmp_path / "empty"))
    problems = dict(caught.value.problems)
    assert "SECURE_KEY_FILE can't be read" in problems["SECURE_KEY"]
    assert "PUSHER_SECRET_FILE names an empty file" in problems["PUSHER_SECRET"]


def test_mongodb_uri_from_a_file_leaves_embedded_mode(tmp_path):
    path = tmp_path / "uri"
    path.write_text(SECRETS["MONGODB_URI"] + "\n")
    s = load(production(MONGODB_URI=None, MONGODB_URI_FILE=path))
    assert not s.embedded and s.database_uri == SECRETS["MONGODB_URI"]


# -- one source of defaults, one demo app, cookies by mode ----------------------------------
def test_defaults_come_from_the_settings_class_and_the_demo_app_is_numeric(tmp_path):
    s = load(clean_env(DATA_DIR=tmp_path), make_key=False)
    assert s.embedded and (s.port, s.session_ttl, s.pusher_channel) == (8080, 3600, "presence-lobby")
    assert s.origins["session_ttl"] == ("SESSION_TTL", "default")
    assert (s.pusher_app_id, s.pusher_key, s.pusher_secret) == tuple(DEMO_PUSHER.values())
    assert s.pusher_app_id.isdigit()
    assert not (tmp_path / "secure_key").exists()
    assert any("SESSION_TTL" in line and "[default]" in line for line in report(s))


def test_cookie_secure_is_off_in_embedded_mode_on_any_address_and_on_outside(tmp_path):
    for host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        s = load(clean_env(DATA_DIR=tmp_path, HOST=host), make_key=False)
        assert s.embedded and not s.cookie_secure and s.cookie_name == "session", host
    for host in ("0.0.0.0", "127.0.0.1"):  # production is Secure even on loopback (behind a proxy)
        prod = load(production(HOST=host))
        assert prod.cookie_secure and prod.cookie_name == "__Host-session", host
    for value in ("1", "true"):
        assert load(clean_env(DATA_DIR=tmp_path, COOKIE_SECURE=value), make_key=False).cookie_secure
    for value in ("0", "false"):
        assert not load(production(COOKIE_SECURE=value)).cookie_secure


# -- a failed start: one line, its own exit status ------------------------------------------
def test_a_start_with_bad_settings_is_one_line_and_exit_2(tmp_path):
    result = run_app(production(**BAD), "--port", "0")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("socialos-app: bad settings")
    for name in BAD:
        assert name in lines[0]
    no_secret_in(result.stderr)


def test_a_bad_flag_is_exit_2_naming_the_setting():
    result = run_app(production(), "--port", "eighty")
    assert result.returncode == 2
    assert "PORT must be a whole number" in result.stderr and "Traceback" not in result.stderr


# -- --check-config says what it read and where ---------------------------------------------
def test_a_passphrase_is_refused_saying_how_it_was_read():
    passphrase = "CorrectHorseBatteryStapleIsMyPassword12345"  # 42 characters, valid base64
    with pytest.raises(SettingsError) as caught:
        decode_key(passphrase)
    message = str(caught.value)
    assert "SECURE_KEY is too short: its 42 characters read as base64 give 31 bytes" in message
    assert "secrets.token_hex(32)" in message  # and how to make a real one
    with pytest.raises(SettingsError, match="its 32 characters read as hex give 16 bytes"):
        decode_key(secrets.token_hex(16))
    with pytest.raises(SettingsError, match="SECURE_KEY_PREVIOUS key 2 of 2 is too short"):
        load(production(SECURE_KEY_PREVIOUS=f"{secrets.token_hex(32)},{secrets.token_hex(8)}"))


def test_a_bad_secret_in_a_file_names_the_file(tmp_path):
    key, uri = tmp_path / "key", tmp_path / "uri"
    key.write_text(secrets.token_hex(8) + "\n")
    uri.write_text(f"mongodb://ops:{DB_PASSWORD}@h:notaport/x\n")
    with pytest.raises(SettingsError) as caught:
        load(production(SECURE_KEY=None, SECURE_KEY_FILE=key, MONGODB_URI=None, MONGODB_URI_FILE=uri))
    problems = dict(caught.value.problems)
    assert problems["SECURE_KEY"].startswith(f"SECURE_KEY_FILE ({key}) is too short: its 16 characters read as hex")
    assert problems["MONGODB_URI"].startswith(f"MONGODB_URI_FILE ({uri}) is not a usable MongoDB URI")
    assert DB_PASSWORD not in str(caught.value)


def test_a_missing_secret_mentions_its_file():
    with pytest.raises(SettingsError) as caught:
        load(production(SOCIALOS_ADMIN_PASSWORD=None, SOCIALOS_API_URL=None))
    problems = dict(caught.value.problems)
    assert problems["SOCIALOS_ADMIN_PASSWORD"] == ("SOCIALOS_ADMIN_PASSWORD (or SOCIALOS_ADMIN_PASSWORD_FILE) "
                                                   "is required when MONGODB_URI is set")
    assert problems["SOCIALOS_API_URL"] == "SOCIALOS_API_URL is required when MONGODB_URI is set"


def test_pymongos_pointer_to_its_docstring_is_dropped():
    with pytest.raises(SettingsError) as caught:
        load(production(MONGODB_URI="mongodb://h/db?retryWritess=true"))
    message = dict(caught.value.problems)["MONGODB_URI"]
    assert "Unknown option: retrywritess. Did you mean one of (retrywrites" in message
    assert message.endswith(")?") and "docstring" not in message and "camelCase" not in message


def test_variables_that_look_like_ours_get_a_hint():
    env = {"SECURE_KEY_FIEL": "/run/secrets/secure_key", "SESION_TTL": "60", "session_ttl": "60",
           "PUSHER_APPID": "1", "SOCIALOS_WHATEVER": "1", "SOCIALOS_API_URL_FILE": "/x",
           # ours, or other programs' (not hinted at)
           "SECURE_KEY_FILE": "/x", "SESSION_TTL": "60", "PATH": "/bin", "HOSTNAME": "h", "LOGNAME": "u",
           "SESSION_MANAGER": "local/h:@/tmp/.ICE-unix/1", "SANDBOX_API_HOST_PORT": "8081", "XDG_DATA_DIRS": "/x"}
    warnings = {line.split()[0]: line for line in unknown_variables(env)}
    assert set(warnings) == {"SECURE_KEY_FIEL", "SESION_TTL", "session_ttl", "PUSHER_APPID", "SOCIALOS_WHATEVER",
                             "SOCIALOS_API_URL_FILE"}
    assert warnings["SECURE_KEY_FIEL"].endswith("did you mean SECURE_KEY_FILE?")
    assert warnings["SESION_TTL"].endswith("did you mean SESSION_TTL?")
    assert warnings["session_ttl"].endswith("did you mean SESSION_TTL?")
    assert warnings["PUSHER_APPID"].endswith("did you mean PUSHER_APP_ID?")
    assert "is not a setting of this app" in warnings["SOCIALOS_WHATEVER"]
    assert "only secrets" in warnings["SOCIALOS_API_URL_FILE"] and "set SOCIALOS_API_URL itself" in \
        warnings["SOCIALOS_API_URL_FILE"]


def test_check_config_hints_at_a_misspelt_file_variable(tmp_path):
    key = tmp_path / "secure_key"
    key.write_text(SECRETS["SECURE_KEY"])
    result = run_app(production(SECURE_KEY=None, SECURE_KEY_FIEL=key), "--check-config")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == ("socialos-app: warning: SECURE_KEY_FIEL is not a setting of this app; "
                        "did you mean SECURE_KEY_FILE?")
    assert lines[1:] == ["socialos-app: bad setting: SECURE_KEY (or SECURE_KEY_FILE) is required when "
                         "MONGODB_URI is set"]
    no_secret_in(result.stdout + result.stderr)
