"""The deployment files, checked without a Docker engine.

Dockerfile, .dockerignore, docker-compose.yml, deploy/ and .env.example are
linted (hadolint, check-jsonschema's bundled compose-spec schema) and read for
the properties the README promises: non-root image with a health check, no
literal secrets, the app waiting for a healthy MongoDB, a dev profile that
needs no outside account, every setting documented, every dependency pinned.
"""

import ast
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
SCALE = ROOT / "deploy" / "docker-compose.scale.yml"
COMPOSE_FILES = [COMPOSE, SCALE]

# The settings table of the contract (docs: /work/shared/CONTRACT.md), plus
# the ones settings.py reads beyond it (found from its source below).
CONTRACT_SETTINGS = {
    "HOST", "PORT", "MONGODB_URI", "SECURE_KEY", "SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL",
    "SOCIALOS_ADMIN_USER", "SOCIALOS_ADMIN_PASSWORD", "SESSION_TTL", "SESSION_MAX_AGE",
    "COOKIE_SECURE", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", "PUSHER_CLUSTER",
    "PUSHER_HOST", "PUSHER_PORT", "PUSHER_SCHEME", "PUSHER_CHANNEL", "DATA_DIR",
    "SANDBOX_API_PORT", "SANDBOX_PUSHER_PORT", "EMBEDDED_DB_PORT",
}
# Read only in embedded mode, or fixed by the image (HOST, PORT) / by compose.
NOT_FOR_COMPOSE = {"HOST", "PORT", "DATA_DIR", "SANDBOX_API_PORT", "SANDBOX_PUSHER_PORT",
                   "EMBEDDED_DB_PORT"}
SECRET_NAME = re.compile(r"SECURE_KEY|PASSWORD|SECRET")
# The sandbox's published demo credentials: the only literal ones allowed, and
# only in services that run under the dev profile alone.
SANDBOX_DEMO = {"SOCIALOS_ADMIN_PASSWORD": "admin", "PUSHER_SECRET": "demo-secret"}
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
# Environment for the linters: any attempt to reach the network fails at once.
OFFLINE = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}


def tool(name):
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable} (make install)")
    return str(path)


def run(*args, cwd=ROOT):
    return subprocess.run(args, cwd=cwd, env=OFFLINE, capture_output=True, text=True, timeout=60)


def load_yaml(path):
    return YAML(typ="safe", pure=True).load(path.read_text())


def services(path):
    return load_yaml(path)["services"]


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def interpolate(text, env=None):
    """Compose-style ${...} substitution with the defaults (no .env)."""
    env = env or {}

    def sub(m):
        value = env.get(m["name"])
        op, arg = m["op"], m["arg"] or ""
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?"):
            return value if value else "<required>"
        return value or ""

    return REFERENCE.sub(sub, str(text))


def references(path):
    """Every ${...} in a compose file's values (comments do not count)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            found.extend(REFERENCE.finditer(node))

    walk(load_yaml(path))
    return found


def host_ports(service):
    """Host ports a service publishes (short syntax, defaults interpolated)."""
    out = []
    for spec in service.get("ports") or []:
        parts = interpolate(spec).split(":")
        if len(parts) >= 2:
            out.append(parts[-2])
    return out


# --- linters ------------------------------------------------------------------

@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec(path):
    answer = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_compose_spec_check_rejects_a_broken_file(tmp_path):
    """The schema is bundled and really checked, offline: a bad file fails."""
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  app:\n    image: x\n    portz: ['8080:8080']\n")
    answer = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad))
    assert answer.returncode == 1, answer.stdout + answer.stderr
    assert "portz" in answer.stdout + answer.stderr


def test_hadolint_is_silent():
    answer = run(tool("hadolint"), "Dockerfile")
    assert answer.returncode == 0 and answer.stdout == "" and answer.stderr == "", \
        answer.stdout + answer.stderr


def test_hadolint_flags_a_sloppy_dockerfile(tmp_path):
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD python app.py\n")
    answer = run(tool("hadolint"), str(sloppy))
    assert answer.returncode != 0 and "DL3007" in answer.stdout, answer.stdout + answer.stderr


# --- Dockerfile ---------------------------------------------------------------

DIGEST = r"@sha256:[0-9a-f]{64}"


def dockerfile_stages():
    """[[(INSTRUCTION, arguments), ...] per stage], continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append((instruction, " ".join(args.split())))
    return stages


def instructions(stage, name):
    return [args for instruction, args in stage if instruction == name]


def stage_named(name):
    for stage in dockerfile_stages():
        if instructions(stage, "FROM")[0].split()[-1] == name:
            return stage
    pytest.fail(f"no stage {name!r} in the Dockerfile")


def test_dockerfile_bases_are_slim_python_311_pinned_by_digest_with_the_tag_beside():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    names = set()
    for i, line in enumerate(lines):
        if not line.startswith("FROM "):
            continue
        image, _as, name = line.split()[1:4]
        if image not in names:  # an external image, not an earlier stage
            m = re.fullmatch(r"(python:3\.11\.\d+-slim-bookworm)" + DIGEST, image)
            assert m, image
            assert lines[i - 1] == f"# {m[1]}", f"the tag belongs in a comment above: {line}"
        names.add(name)


def test_dockerfile_production_is_the_last_stage_and_runs_as_non_root():
    final = dockerfile_stages()[-1]
    assert instructions(final, "FROM")[0].endswith(" AS production")
    for stage in (final, stage_named("dev")):
        user = instructions(stage, "USER")[-1].split(":")[0]
        assert user not in ("root", "0"), user


def test_dockerfile_healthcheck_is_liveness():
    for stage in (dockerfile_stages()[-1], stage_named("dev")):
        check = instructions(stage, "HEALTHCHECK")[-1]
        assert "/livez" in check and "urllib" in check, check
        assert "/healthz" not in check and "/readyz" not in check


def test_dockerfile_final_stage_exposes_8080_and_runs_exec_form():
    stage = dockerfile_stages()[-1]
    assert "8080" in " ".join(instructions(stage, "EXPOSE")).split()
    cmd = instructions(stage, "CMD")
    assert cmd, "no CMD"
    argv = json.loads(cmd[-1])  # exec form is a JSON array; shell form is not JSON
    assert argv == ["python", "app.py"], argv
    assert instructions(stage, "STOPSIGNAL") == ["SIGTERM"]
    assert not instructions(stage, "ENTRYPOINT"), "an ENTRYPOINT would wrap CMD"


def test_dockerfile_final_stage_environment():
    env = " ".join(instructions(dockerfile_stages()[-1], "ENV"))
    for pair in ("HOST=0.0.0.0", "PORT=8080", "PYTHONUNBUFFERED=1"):
        assert pair in env.split(), pair


def test_dockerfile_has_oci_labels():
    labels = " ".join(instructions(dockerfile_stages()[-1], "LABEL"))
    for key in ("title", "description", "version", "revision", "created", "base.name", "base.digest"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    base = instructions(dockerfile_stages()[-1], "FROM")[0].split()[0]
    assert f'base.digest="{base.split("@")[1]}"' in labels, "base.digest is not the FROM digest"


def test_dockerfile_dependencies_are_a_layer_before_the_code():
    deps = stage_named("deps")
    copies = instructions(deps, "COPY")
    assert copies == ["pyproject.toml constraints.txt ./"], copies
    steps = [instruction for instruction, _ in deps]
    assert steps.index("RUN") > steps.index("COPY"), "install after copying the dependency lists"
    # The code arrives in later stages only.
    for stage in (stage_named("dev"), dockerfile_stages()[-1]):
        steps = [(i, a) for i, a in stage]
        first_code = next(n for n, (i, a) in enumerate(steps) if i == "COPY" and "socialos_app" in a)
        venv = next(n for n, (i, a) in enumerate(steps) if i == "COPY" and "/opt/venv" in a)
        assert venv < first_code


def pip_requirement_commands():
    """The Python one-liners that write the requirements files pip installs."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return re.findall(r'python -c "([^"]+)" > (\S+)', text)


def test_dockerfile_installs_runtime_and_metrics_in_production_and_embedded_only_in_dev():
    made = {}
    for code, target in pip_requirement_commands():
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        made[target] = {canonical(Requirement(line).name) for line in done.stdout.split()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {key: {canonical(Requirement(r).name) for r in reqs}
             for key, reqs in [("runtime", project["dependencies"]), *project["optional-dependencies"].items()]}
    assert made["requirements.txt"] == names["runtime"] | names["metrics"]
    assert made["requirements-dev.txt"] == names["embedded"]
    assert "secantusdb" not in made["requirements.txt"]
    runs = [args for stage in dockerfile_stages() for args in instructions(stage, "RUN")]
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 2
    for command in installs:
        assert "-c constraints.txt" in command and "--no-cache-dir" in command, command
        assert re.search(r"pip install --no-cache-dir -c constraints.txt -r requirements(-dev)?\.txt$", command)
    # Production's venv is the deps stage's: runtime + metrics only.
    final_copies = instructions(dockerfile_stages()[-1], "COPY")
    assert "--from=deps /opt/venv /opt/venv" in final_copies


def test_dockerfile_production_leaves_the_sandboxes_out():
    """The production stage copies the production package alone: socialos_dev/ (the
    sandboxes, embedded mode) never enters it, so nothing has to be deleted."""
    final = dockerfile_stages()[-1]
    copies = instructions(final, "COPY")
    copied = " ".join(c for c in copies if not c.startswith("--from=")).split()
    for path in ("app.py", "conf/", "socialos_app/", "templates/", "static/"):
        assert path in copied, path
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is missing"
    assert not any("socialos_dev" in c for c in copies), copies
    assert not any("rm -rf" in run for run in instructions(final, "RUN"))
    assert "socialos_dev" not in " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())
                                          ["tool"]["setuptools"]["packages"]), "the wheel holds no dev code"


def test_dockerfile_dev_stage_has_the_sandboxes_and_fetches_browser_assets():
    dev = stage_named("dev")
    copies = " ".join(instructions(dev, "COPY")).split()
    assert "socialos_app/" in copies and "socialos_dev/" in copies
    # The assets are fetched (npm) and checked (fetch_assets.py) in a stage of their own;
    # the dev image takes only the checked files, so no Node ships in it.
    assets = stage_named("assets")
    assert any("fetch_assets.py" in run for run in instructions(assets, "RUN"))
    assert any("npm" in run for run in instructions(assets, "RUN"))
    assert any(c.startswith("--from=assets") and "static/vendor" in c for c in instructions(dev, "COPY"))


def test_fetch_assets_script_is_there():
    if not (ROOT / "scripts" / "fetch_assets.py").exists():
        pytest.skip("scripts/fetch_assets.py (the presence engineer's asset script, "
                    "run by the dev image's build) is not in the tree yet")


# --- .dockerignore ------------------------------------------------------------

def dockerignored(path, patterns):
    """Docker's rule: the last matching pattern wins; a match on a parent counts."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = re.sub(r"\\\[(.*?)\\\]", lambda m: "[" + m.group(1).replace("\\", "") + "]", regex)
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_local_state_and_secrets_out():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    for path in (".venv/bin/python", ".git/HEAD", "var/secure_key", "var/db/x", ".env",
                 ".env.local", "tests/screenshots/login.png", "bench/results.png",
                 "socialos_app/__pycache__/app.cpython-311.pyc", ".pytest_cache/v/x",
                 ".hypothesis/examples/x", "deploy/secrets/secure_key", "deploy/secrets/mongodb_uri",
                 "secrets/pusher_secret", "var/assets/pusher.min.js", "node_modules/x/index.js"):
        assert dockerignored(path, patterns), f"{path} would be sent to the build"
    for path in ("app.py", "conf/server.conf", "socialos_app/settings.py",
                 "socialos_dev/sandbox/__main__.py", "templates/base.html", "static/style.css",
                 "pyproject.toml", "constraints.txt", "scripts/fetch_assets.py"):
        assert not dockerignored(path, patterns), f"{path} is needed by the build but ignored"


# --- the nginx template -------------------------------------------------------

TEMPLATE = ROOT / "deploy" / "nginx" / "default.conf.template"


def test_nginx_template_uses_exactly_the_two_variables():
    text = TEMPLATE.read_text()
    placeholders = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text))
    assert placeholders == {"NGINX_PORT", "APP_UPSTREAM"}, placeholders
    assert "$$" not in text, "string.Template (and the tests) would turn $$ into $"


def test_nginx_template_renders_like_envsubst():
    text = TEMPLATE.read_text()
    values = {"NGINX_PORT": "8080", "APP_UPSTREAM": "app:8080"}
    rendered = string.Template(text).safe_substitute(values)
    assert "listen 8080 default_server;" in rendered and "server app:8080 " in rendered
    assert not re.search(r"\$\{?[A-Z]", rendered.replace("${%s}", ""))
    # nginx's own variables are left for nginx.
    for var in ("$remote_addr", "$binary_remote_addr", "$scheme", "$http_host", "$request_id"):
        assert var in rendered, var
    # The same with the envsubst binary the image uses, when it is here.
    if shutil.which("envsubst"):
        done = subprocess.run(["envsubst", "${NGINX_PORT} ${APP_UPSTREAM}"], input=text, text=True,
                              capture_output=True, env={"PATH": os.environ["PATH"], **values}, check=True)
        assert done.stdout == rendered


def test_nginx_template_overwrites_forwarded_headers_and_states_its_limits():
    text = TEMPLATE.read_text()
    directives = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    directives = [d for d in directives if d]
    for line in ("proxy_set_header X-Forwarded-For   $remote_addr;", "proxy_set_header X-Forwarded-Proto $scheme;",
                 "proxy_set_header X-Forwarded-Host  $http_host;", "server_tokens off;",
                 "proxy_request_buffering on;", "proxy_buffering         on;"):
        assert line in directives, line
    assert not any("proxy_add_x_forwarded_for" in d for d in directives), "appending lets clients choose"
    for name in ("client_header_timeout", "client_body_timeout", "limit_conn_zone", "limit_req_zone",
                 "limit_conn ", "limit_req "):
        assert any(d.startswith(name) for d in directives), name
    # HSTS only through the map that is empty on plain http.
    hsts = [d for d in directives if "Strict-Transport-Security" in d]
    assert hsts == ["add_header Strict-Transport-Security $socialos_hsts always;"], hsts


# --- docker-compose.yml and the scale example ---------------------------------

def compose_secrets(path):
    return load_yaml(path).get("secrets") or {}


def mounted_secrets(service):
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_has_no_literal_secrets(path):
    declared = compose_secrets(path)
    for name, spec in declared.items():
        assert set(spec) == {"file"}, f"secret {name}: a file, never a value in the compose file"
        source = (path.parent / spec["file"]).resolve()
        assert source.parent == ROOT / "deploy" / "secrets", f"secret {name} outside deploy/secrets"
    ignore = (ROOT / "deploy" / "secrets" / ".gitignore").read_text().split()
    assert ignore[ignore.index("*"):] == ["*", "!.gitignore", "!init.sh"], "deploy/secrets/ is kept out of git"
    for name, service in services(path).items():
        dev_only = service.get("profiles") == ["dev"]
        for key, value in environment(service).items():
            if key in ("MONGODB_URI", "MONGODB_URI_FILE"):
                assert not re.search(r"//[^/@]*:[^/@]*@", str(value)), f"{name}: credentials in {key}"
            if key.endswith("_FILE"):
                m = re.fullmatch(r"/run/secrets/([a-z_]+)", str(value))
                assert m and m[1] in declared and m[1] in mounted_secrets(service), f"{name}: {key}={value}"
                continue
            if not (SECRET_NAME.search(key) or key == "MONGODB_URI"):
                continue
            if key == "MONGODB_URI" or (dev_only and SANDBOX_DEMO.get(key) == value):
                continue
            # Only an optional pass-through (rotation's SECURE_KEY_PREVIOUS) may come as a variable.
            m = REFERENCE.fullmatch(str(value))
            assert m and m["name"] == key and m["op"] == ":-" and m["arg"] == "", \
                f"{name}: {key} must come from a secret file (or an empty-default ${{{key}:-}})"
            assert f"{key}_FILE" not in environment(service), f"{name}: {key} and {key}_FILE both set"
    text = path.read_text()
    assert not re.search(r"\b[0-9a-fA-F]{32,}\b", re.sub(r"sha256:[0-9a-f]{64}", "", text)), \
        "something like a literal key"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_images_are_pinned_by_digest_with_the_tag_in_a_comment(path):
    for line in path.read_text().splitlines():
        m = re.match(r"\s*image:\s*(\S+)(?:\s*#\s*(\S+))?", line)
        if not m or m[1].startswith("socialos-app"):
            continue
        image, comment = m[1], m[2]
        pinned = re.fullmatch(r"((?:nginx|mongo):[0-9][\w.-]*)" + DIGEST, image)
        assert pinned, f"{path.name}: {image} is not pinned by digest"
        assert comment == pinned[1], f"{path.name}: the tag {pinned[1]} belongs in a comment beside {image}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_proxy_renders_the_one_template_in_front_of_an_unpublished_app(path):
    all_services = services(path)
    proxy, app = all_services["proxy"], all_services["app"]
    mount = next(v for v in proxy["volumes"] if "nginx" in v).split(":")
    assert (path.parent / mount[0]).resolve() == TEMPLATE
    assert mount[1:] == ["/etc/nginx/templates/default.conf.template", "ro"]
    env = environment(proxy)
    assert env["APP_UPSTREAM"] == "app:8080"
    assert re.fullmatch(r"\^\(NGINX_PORT\|APP_UPSTREAM\)\$?", env["NGINX_ENVSUBST_FILTER"])
    assert [interpolate(p).split(":")[-1] for p in proxy["ports"]] == [env["NGINX_PORT"]]
    assert proxy["depends_on"]["app"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(proxy["healthcheck"]["test"]), "the proxy's check is readiness"
    assert "ports" not in app, "only nginx is published: cheroot must never face the internet"
    assert environment(app)["TRUSTED_PROXY"] == "1"
    for name, service in all_services.items():
        if service.get("profiles") is None and name != "proxy":
            assert "ports" not in service, f"{name} is published; only the proxy may be"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_mongo_is_an_authenticated_replica_set_initiated_by_its_health_check(path):
    all_services = services(path)
    mongo, app = all_services["mongo"], all_services["app"]
    assert app["depends_on"]["mongo"]["condition"] == "service_healthy"
    command = mongo["command"]
    assert command[:3] == ["mongod", "--replSet", "rs0"]
    assert command[command.index("--keyFile") + 1] == "/tmp/socialos/keyfile"
    env = environment(mongo)
    assert env["MONGO_INITDB_ROOT_USERNAME"] == "root"
    assert env["MONGO_INITDB_ROOT_PASSWORD_FILE"] == "/run/secrets/mongo_root_password"
    assert mounted_secrets(mongo) == {"mongo_root_password", "mongo_keyfile", "mongodb_uri"}
    assert mongo["entrypoint"] == ["bash", "/etc/socialos/mongo/entrypoint.sh"]
    mounts = {v.split(":")[1]: (path.parent / v.split(":")[0]).resolve() for v in mongo["volumes"]
              if v.startswith(".")}
    assert mounts["/etc/socialos/mongo"] == ROOT / "deploy" / "mongo"
    assert mounts["/docker-entrypoint-initdb.d"] == ROOT / "deploy" / "mongo" / "initdb.d"
    volumes = {v.split(":")[1]: v.split(":")[0] for v in mongo["volumes"] if not v.startswith(".")}
    assert volumes["/data/db"] in load_yaml(path)["volumes"]
    assert "ports" not in mongo
    check = mongo["healthcheck"]["test"]
    assert check[:2] == ["CMD", "mongosh"] and check[-1] == "/etc/socialos/mongo/healthcheck.js"
    js = (ROOT / "deploy" / "mongo" / "healthcheck.js").read_text()
    for part in ("/run/secrets/mongo_root_password", "rs.initiate(", "host: 'mongo:27017'", "isWritablePrimary"):
        assert part in js, part
    entry = (ROOT / "deploy" / "mongo" / "entrypoint.sh").read_text()
    assert "/run/secrets/mongo_keyfile" in entry and "-m 400 -o mongodb" in entry
    assert entry.rstrip().endswith('exec docker-entrypoint.sh "$@"')
    # The app connects as its own user, from a secret.
    assert environment(app)["MONGODB_URI_FILE"] == "/run/secrets/mongodb_uri"
    assert "MONGODB_URI" not in environment(app)


def run_secrets_init(tmp_path):
    script = tmp_path / "init.sh"
    script.write_text((ROOT / "deploy" / "secrets" / "init.sh").read_text())
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def js_regex(source, name):
    """A JavaScript regex literal from deploy/mongo, as a Python pattern (same syntax here)."""
    m = re.search(rf"const {name} = /(.*)/;", source)
    return re.compile(m[1].replace(r"\/", "/"))


def test_secrets_init_makes_what_compose_reads_and_the_app_user_comes_from_the_uri(tmp_path):
    out = run_secrets_init(tmp_path)
    made = {p.name: p for p in tmp_path.iterdir() if p.name != "init.sh"}
    assert set(made) == {"secure_key", "mongo_root_password", "mongo_keyfile", "mongodb_uri"}, out
    for path in made.values():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    from socialos_app.settings import decode_key
    assert len(decode_key(made["secure_key"].read_text().strip())) == 32
    keyfile = made["mongo_keyfile"].read_text().strip()
    assert 6 <= len(keyfile) <= 1024 and re.fullmatch(r"[A-Za-z0-9+/=]+", keyfile)
    uri = made["mongodb_uri"].read_text().strip()
    for part in ("@mongo:27017/socialos?", "replicaSet=rs0", "w=majority", "readPreference=primary"):
        assert part in uri, part
    # The init script reads the user, password and database out of that URI.
    init = (ROOT / "deploy" / "mongo" / "initdb.d" / "10-app-user.js").read_text()
    user, password, database = js_regex(init, "URI_SHAPE").match(uri).groups()
    assert (user, database) == ("socialos", "socialos") and len(password) == 48
    assert "roles: [{role: 'readWrite', db: dbName}]" in init
    assert "print(" in init and "pwd" not in init.split("print(", 1)[1], "the password is never printed"
    # A second run keeps every file as it is.
    before = {name: path.read_text() for name, path in made.items()}
    assert "kept" in run_secrets_init(tmp_path)
    assert before == {name: path.read_text() for name, path in made.items()}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_restart_rotation_limits_and_read_only(path):
    for name, service in services(path).items():
        dev_only = service.get("profiles") == ["dev"]
        options = service["logging"]["options"]
        assert service["logging"]["driver"] == "json-file" and options["max-size"] and options["max-file"], name
        if dev_only:
            assert service["restart"] == "no", f"{name}: a dev service should not come back by itself"
            continue
        limits = service["deploy"]["resources"]["limits"]
        assert limits["cpus"] and limits["memory"], name
        assert service["read_only"] is True, f"{name}: read_only"
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["cap_drop"] == ["ALL"], name
        if name == "app":
            assert service["restart"] == "on-failure:3", "a bad setting must not restart forever"
        else:
            assert service["restart"] == "unless-stopped", name


def settings_read_by_code():
    from socialos_app.settings import SECRETS, VARIABLES
    names = {v.name for v in VARIABLES if "." not in v.name}
    return names | {f"{name}_FILE" for name in SECRETS}


def test_compose_app_service():
    app = services(COMPOSE)["app"]
    assert "profiles" not in app, "`docker compose up` must start the app"
    assert app["build"] == {"context": ".", "target": "production"}
    # Drain (3 s) + in-flight (server.shutdown_timeout, 8 s) + exit (~1 s) fit before SIGKILL.
    assert app["stop_grace_period"] == "15s"
    env = environment(app)
    for name in ("SECURE_KEY", "SOCIALOS_ADMIN_PASSWORD", "PUSHER_SECRET", "MONGODB_URI"):
        assert env[f"{name}_FILE"] == f"/run/secrets/{name.lower()}" and name not in env, name
    passed = set(env) | {name[:-5] for name in env if name.endswith("_FILE")}
    missing = settings_read_by_code() - NOT_FOR_COMPOSE - {"SECURE_KEY_PREVIOUS_FILE"} - passed
    missing = {name for name in missing if not (name.endswith("_FILE") and name[:-5] in env)}
    assert not missing, f"settings the app reads that docker-compose.yml never passes: {sorted(missing)}"
    for name in ("SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL", "SOCIALOS_ADMIN_USER", "PUSHER_APP_ID", "PUSHER_KEY"):
        m = REFERENCE.fullmatch(str(env.get(name)))
        assert m and m["name"] == name, f"app: {name} must come from the environment/.env"


def test_compose_dev_profile_is_a_complete_local_stack():
    all_services = services(COMPOSE)
    sandbox, dev, mongo_dev = all_services["sandbox"], all_services["app-dev"], all_services["mongo-dev"]
    for service in (sandbox, dev, mongo_dev):
        assert service["profiles"] == ["dev"]
    assert sandbox["build"]["target"] == dev["build"]["target"] == "dev"
    assert sandbox["command"] == ["python", "-m", "socialos_dev.sandbox", "--host", "0.0.0.0",
                                  "--api-port", "8081", "--pusher-port", "8082",
                                  "--webhook-url", "http://app-dev:8080/pusher/webhook"]
    assert "healthcheck" in sandbox, "the image's /livez check does not fit the sandbox"
    assert dev["depends_on"]["mongo-dev"]["condition"] == "service_healthy"
    assert dev["depends_on"]["sandbox"]["condition"] == "service_healthy"
    assert "rs.initiate" in " ".join(mongo_dev["healthcheck"]["test"])
    env = environment(dev)
    expected = {
        "SOCIALOS_API_URL": "http://sandbox:8081/api", "SOCIALOS_ADMIN_URL": "http://sandbox:8081/admin",
        "SOCIALOS_ADMIN_USER": "admin", "SOCIALOS_ADMIN_PASSWORD": "admin",
        "PUSHER_HOST": "sandbox", "PUSHER_PORT": "8082", "PUSHER_SCHEME": "http",
        "PUSHER_APP_ID": "100001", "PUSHER_KEY": "demo-key", "PUSHER_SECRET": "demo-secret",
        "COOKIE_SECURE": "0", "MONGODB_URI": "mongodb://mongo-dev:27017/socialos_dev?replicaSet=rs0",
        "SECURE_KEY_FILE": "/run/secrets/secure_key",
    }
    assert {k: str(env.get(k)) for k in expected} == expected
    assert interpolate(env["PUSHER_WS_HOST"]) == "localhost:8082", "the browser reaches the sandbox on the host"
    # The sandbox's Pusher app is the one app-dev signs for.
    sandbox_env = environment(sandbox)
    assert {k: sandbox_env[k] for k in ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET")} == \
        {k: env[k] for k in ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET")}
    # Nothing from outside is required by interpolation.
    assert not [m["name"] for m in references(COMPOSE) if m["op"] in (":?", "?")]


def test_compose_dev_profile_publishes_no_host_port_twice():
    """Services without a profile start under `--profile dev` too: no clash."""
    seen = {}
    for name, service in services(COMPOSE).items():
        if service.get("profiles") not in (None, ["dev"]):
            continue
        for port in host_ports(service):
            assert port not in seen, f"{name} and {seen[port]} both publish {port}"
            seen[port] = name
    assert seen.get("8080") == "proxy"
    sandbox_ports = services(COMPOSE)["sandbox"]["ports"]
    assert all(interpolate(p).startswith("127.0.0.1:") for p in sandbox_ports), "sandbox on loopback only"


@pytest.mark.parametrize("name", ["app", "app-dev"])
def test_compose_app_environment_passes_the_apps_own_check(tmp_path, name):
    """What compose hands the app (secrets as files, .env values, empty defaults)
    is accepted by `python app.py --check-config`, each secret read from its file."""
    run_secrets_init(tmp_path)
    (tmp_path / "socialos_admin_password").write_text("an admin password\n")
    (tmp_path / "pusher_secret").write_text("a pusher secret\n")
    dotenv = {"SOCIALOS_API_URL": "https://socialos.example/api", "SOCIALOS_ADMIN_URL": "https://socialos.example/admin",
              "SOCIALOS_ADMIN_USER": "admin", "PUSHER_APP_ID": "4242", "PUSHER_KEY": "key"}
    env = {"PATH": os.environ["PATH"]}
    for key, value in environment(services(COMPOSE)[name]).items():
        value = interpolate(value, dotenv)
        env[key] = str(tmp_path / value.rsplit("/", 1)[1]) if key.endswith("_FILE") else value
    done = subprocess.run([sys.executable, "app.py", "--check-config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for key in env:
        if key.endswith("_FILE"):
            assert re.search(rf"^{key[:-5]} +=.*\[file: {key}\]$", done.stdout, re.MULTILINE), key
    assert "embedded mode: off" in done.stdout


def test_scale_example_runs_replicas():
    app = services(SCALE)["app"]
    assert int(interpolate(app["deploy"]["replicas"])) >= 2
    assert app["build"] == {"context": "..", "target": "production"}
    # The same settings reach the app as in docker-compose.yml.
    base_env = set(environment(services(COMPOSE)["app"]))
    assert base_env <= set(environment(app)), base_env - set(environment(app))
    assert mounted_secrets(app) == mounted_secrets(services(COMPOSE)["app"])


# --- .env.example and the README ----------------------------------------------

def env_example():
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            pairs[m[1]] = m[2]
    return pairs


def test_env_example_names_every_setting():
    named = set(env_example())
    compose_vars = {m["name"] for path in COMPOSE_FILES for m in references(path)}
    for source, names in (("the contract", CONTRACT_SETTINGS), ("settings.py", settings_read_by_code()),
                          ("the compose files", compose_vars)):
        missing = names - named
        assert not missing, f".env.example lacks {sorted(missing)} (used by {source})"


def test_env_example_holds_no_secret_values_and_shows_both_ways():
    from socialos_app.settings import SECRETS
    pairs = env_example()
    for name, value in pairs.items():
        if SECRET_NAME.search(name) or name.startswith("MONGODB_URI"):
            assert value == "", f".env.example gives a value for {name}"
    for name in SECRETS:
        assert name in pairs and f"{name}_FILE" in pairs, f"{name}: show the variable and its _FILE"
    text = (ROOT / ".env.example").read_text()
    assert 'python -c "import secrets; print(secrets.token_hex(32))"' in text


def readme_section(title):
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_deploy_says_cheroot_stays_behind_nginx_and_shows_both_secret_ways():
    deploy = readme_section("Deploy")
    assert "must never face the internet" in deploy
    for word in ("SECURE_KEY_FILE", "deploy/secrets/init.sh", "/livez", "/readyz", "on-failure:3",
                 "deploy/nginx/default.conf.template"):
        assert word in deploy, word
    assert re.search(r"SECURE_KEY=", deploy), "the plain variable way, too"


# --- dependencies -------------------------------------------------------------

def constraints():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"not a pin: {line}"
            pins[canonical(req.name)] = specs[0].version
    return pins


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_runtime_dependencies_are_pinned_in_constraints():
    pins = constraints()
    for req in runtime_requirements():
        name = canonical(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{req.name}: pyproject says {req.specifier}, constraints.txt pins {pins[name]}"


# Build tooling the venv itself brings (python -m venv seeds pip, and setuptools
# on 3.11); zc.lockfile asks for setuptools without a version.
SEEDED = {"pip", "setuptools"}


def test_runtime_dependency_tree_is_pinned_in_constraints():
    """What `pip install -c constraints.txt .` pulls into the image is all pinned."""
    pins = constraints()
    todo = [r for r in runtime_requirements()]
    seen = set()
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen or name in SEEDED:
            continue
        seen.add(name)
        assert name in pins, f"{req.name} (a runtime dependency) is not pinned in constraints.txt"
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed; run make install")
        for text in dist.requires or []:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                todo.append(child)


def closure(requirements):
    """Canonical names of the distributions these requirements bring in."""
    todo, seen = list(requirements), set()
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        todo.extend(child for child in map(Requirement, dist.requires or [])
                    if child.marker is None or child.marker.evaluate({"extra": ""}))
    return seen


def test_image_code_imports_only_what_the_image_installs():
    """The production image has the runtime dependencies and the metrics extra, and
    neither the sandboxes nor embedded mode (socialos_dev/ is not copied): what the
    rest of app.py and the package import must come with those."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = closure([*runtime_requirements(), *map(Requirement, extras["metrics"])])
    owners = metadata.packages_distributions()
    stray = {}
    package = ROOT / "socialos_app"
    for path in [ROOT / "app.py", *sorted(package.rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "socialos_dev" and path.name == "cli.py":
                    continue  # embedded mode, imported only when it is there (an ImportError says to set MONGODB_URI)
                if top in sys.stdlib_module_names or top == "socialos_app":
                    continue
                dists = {canonical(d) for d in owners.get(top, [top])}
                if not dists & installed:
                    stray.setdefault(top, []).append(str(path.relative_to(ROOT)))
    assert not stray, f"imported by the image's code but not in the image: {stray}"
