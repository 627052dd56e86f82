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


def test_dockerfile_bases_are_pinned_slim_python_311():
    for stage in dockerfile_stages():
        image = instructions(stage, "FROM")[0].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_final_stage_runs_as_non_root():
    users = instructions(dockerfile_stages()[-1], "USER")
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_dockerfile_final_stage_has_a_healthcheck_on_healthz():
    checks = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    assert checks and "NONE" not in checks[-1].upper()
    assert "/healthz" in checks[-1] and "urllib" in checks[-1]


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


def test_dockerfile_installs_runtime_dependencies_only_under_constraints():
    runs = [args for stage in dockerfile_stages() for args in instructions(stage, "RUN")]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "no pip install"
    for command in installs:
        assert "-c constraints.txt" in command and "--no-cache-dir" in command, command
        assert "[" not in command, f"extras installed in the image: {command}"


def test_dockerfile_copies_the_app_files_that_exist():
    copies = " ".join(instructions(dockerfile_stages()[-1], "COPY"))
    for path in ("app.py", "conf/", "socialos_app/", "templates/", "static/"):
        assert path in copies.split(), path
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is missing"


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
                 ".hypothesis/examples/x"):
        assert dockerignored(path, patterns), f"{path} would be sent to the build"
    for path in ("app.py", "conf/server.conf", "socialos_app/settings.py",
                 "socialos_app/sandbox/__main__.py", "templates/base.html", "static/style.css",
                 "pyproject.toml", "constraints.txt"):
        assert not dockerignored(path, patterns), f"{path} is needed by the build but ignored"


# --- docker-compose.yml -------------------------------------------------------

@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_has_no_literal_secrets(path):
    for name, service in services(path).items():
        dev_only = service.get("profiles") == ["dev"]
        for key, value in environment(service).items():
            if key == "MONGODB_URI":
                assert not re.search(r"//[^/@]*:[^/@]*@", str(value)), f"{name}: credentials in {key}"
            if not SECRET_NAME.search(key):
                continue
            if dev_only and SANDBOX_DEMO.get(key) == value:
                continue
            m = REFERENCE.fullmatch(str(value))
            assert m and m["name"] == key, f"{name}: {key} must be ${{{key}...}}, not a literal"
            if key == "SECURE_KEY":
                assert m["op"] == ":?", f"{name}: SECURE_KEY must be required (${{SECURE_KEY:?...}})"
            elif m["op"] in (":-", "-"):
                assert m["arg"] == "", f"{name}: {key} must have no default value"
            else:
                assert m["op"] in (None, ":?", "?"), f"{name}: {key}: {value}"
    text = path.read_text()
    assert not re.search(r"\b[0-9a-fA-F]{32,}\b", text), "something like a literal key"


def test_compose_app_waits_for_a_healthy_mongo():
    for path in COMPOSE_FILES:
        app = services(path)["app"]
        assert app["depends_on"]["mongo"]["condition"] == "service_healthy", path.name


def test_compose_mongo_is_pinned_healthchecked_persistent_and_private():
    compose = load_yaml(COMPOSE)
    mongo = compose["services"]["mongo"]
    assert re.fullmatch(r"mongo:\d+\.\d+", mongo["image"]), mongo["image"]
    check = " ".join(mongo["healthcheck"]["test"])
    assert "mongosh" in check and "ping" in check
    volumes = [v.split(":") for v in mongo["volumes"]]
    assert any(target == "/data/db" and source in compose["volumes"] for source, target, *_ in volumes)
    assert "ports" not in mongo, "mongo must not be published to the host"


def test_compose_app_service():
    app = services(COMPOSE)["app"]
    assert "profiles" not in app, "`docker compose up` must start the app"
    assert app["build"] == "."
    assert app["restart"] == "unless-stopped"
    assert app["stop_grace_period"] == "10s"
    assert [interpolate(p) for p in app["ports"]] == ["8080:8080"]
    env = environment(app)
    assert env["MONGODB_URI"] == "mongodb://mongo:27017/socialos"
    missing = settings_read_by_code() - NOT_FOR_COMPOSE - set(env)
    assert not missing, f"settings the app reads that docker-compose.yml never passes: {sorted(missing)}"
    for name in ("SOCIALOS_API_URL", "SOCIALOS_ADMIN_URL", "SOCIALOS_ADMIN_USER",
                 "SOCIALOS_ADMIN_PASSWORD", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"):
        m = REFERENCE.fullmatch(str(env.get(name)))
        assert m and m["name"] == name, f"app: {name} must come from the environment/.env"


def test_compose_dev_profile_is_a_complete_local_stack():
    all_services = services(COMPOSE)
    sandbox, dev = all_services["sandbox"], all_services["app-dev"]
    assert sandbox["profiles"] == ["dev"] and dev["profiles"] == ["dev"]
    assert sandbox["command"] == ["python", "-m", "socialos_app.sandbox", "--host", "0.0.0.0",
                                  "--api-port", "8081", "--pusher-port", "8082"]
    assert "healthcheck" in sandbox, "the image's /healthz check does not fit the sandbox"
    assert dev["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert dev["depends_on"]["sandbox"]["condition"] == "service_healthy"
    env = environment(dev)
    expected = {
        "SOCIALOS_API_URL": "http://sandbox:8081/api", "SOCIALOS_ADMIN_URL": "http://sandbox:8081/admin",
        "SOCIALOS_ADMIN_USER": "admin", "SOCIALOS_ADMIN_PASSWORD": "admin",
        "PUSHER_HOST": "sandbox", "PUSHER_PORT": "8082", "PUSHER_SCHEME": "http",
        "PUSHER_APP_ID": "demo", "PUSHER_KEY": "demo-key", "PUSHER_SECRET": "demo-secret",
        "COOKIE_SECURE": "0",
    }
    assert {k: str(env.get(k)) for k in expected} == expected
    assert env["MONGODB_URI"].startswith("mongodb://mongo:27017/")
    # Nothing from outside is required: only SECURE_KEY (made locally) is `:?`.
    required = {m["name"] for m in references(COMPOSE) if m["op"] in (":?", "?")}
    assert required == {"SECURE_KEY"}, required


def test_compose_dev_profile_publishes_no_host_port_twice():
    """Services without a profile start under `--profile dev` too: no clash."""
    seen = {}
    for name, service in services(COMPOSE).items():
        if service.get("profiles") not in (None, ["dev"]):
            continue
        for port in host_ports(service):
            assert port not in seen, f"{name} and {seen[port]} both publish {port}"
            seen[port] = name
    assert seen.get("8080") == "app"


def test_scale_example_is_a_replica_set_behind_nginx():
    all_services = services(SCALE)
    app, mongo, proxy = all_services["app"], all_services["mongo"], all_services["proxy"]
    assert "ports" not in app, "replicas cannot all publish a host port"
    assert int(interpolate(app["deploy"]["replicas"])) >= 2
    uri = environment(app)["MONGODB_URI"]
    for part in ("replicaSet=rs0", "w=majority", "readPreference=primary"):
        assert part in uri, part
    assert mongo["command"][:2] == ["--replSet", "rs0"]
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])
    assert re.fullmatch(r"nginx:\d+\.\d+-alpine", proxy["image"]), proxy["image"]
    assert proxy["depends_on"]["app"]["condition"] == "service_healthy"
    mount = next(v for v in proxy["volumes"] if "nginx" in v).split(":")
    assert (SCALE.parent / mount[0]).resolve() == ROOT / "deploy" / "nginx.conf"
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    assert upstream and re.search(r"server\s+app:8080\b", upstream[2])
    assert f"proxy_pass http://{upstream[1]};" in conf
    # The same settings reach the app as in docker-compose.yml.
    base_env = set(environment(services(COMPOSE)["app"]))
    assert base_env <= set(environment(app)), base_env - set(environment(app))


# --- .env.example -------------------------------------------------------------

def env_example():
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            pairs[m[1]] = m[2]
    return pairs


def settings_read_by_code():
    source = (ROOT / "socialos_app" / "settings.py").read_text()
    return set(re.findall(r"""\bget\(\s*["']([A-Z][A-Z0-9_]+)["']""", source)) | \
        set(re.findall(r"""_int\(\s*["']([A-Z][A-Z0-9_]+)["']""", source))


def test_env_example_names_every_setting():
    named = set(env_example())
    compose_vars = {m["name"] for path in COMPOSE_FILES for m in references(path)}
    for source, names in (("the contract", CONTRACT_SETTINGS), ("settings.py", settings_read_by_code()),
                          ("the compose files", compose_vars)):
        missing = names - named
        assert not missing, f".env.example lacks {sorted(missing)} (used by {source})"


def test_env_example_holds_no_secret_values():
    for name, value in env_example().items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example gives a value for {name}"
    text = (ROOT / ".env.example").read_text()
    assert 'python -c "import secrets; print(secrets.token_hex(32))"' in text


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


def runtime_closure():
    """Canonical names of the distributions `pip install .` brings in."""
    todo, seen = list(runtime_requirements()), set()
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


def test_image_code_imports_only_runtime_dependencies():
    """The image has no embedded/test extras: what app.py and the package
    (sandbox included: the dev profile runs it) import must come with `pip install .`.
    embedded.py is left out: the image has no embedded mode (compose sets MONGODB_URI)."""
    owners = metadata.packages_distributions()
    closure = runtime_closure()
    stray = {}
    for path in [ROOT / "app.py", *sorted((ROOT / "socialos_app").rglob("*.py"))]:
        if path.name == "embedded.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "socialos_app":
                    continue
                dists = {canonical(d) for d in owners.get(top, [top])}
                if not dists & closure:
                    stray.setdefault(top, []).append(str(path.relative_to(ROOT)))
    assert not stray, f"imported by the image's code but not a runtime dependency: {stray}"
