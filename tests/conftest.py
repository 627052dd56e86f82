"""Shared fixtures: one SecantusDB and one sandbox process for the whole run,
and an app process per test module (each with its own database name)."""

import re

import pytest
import requests

from support import LOGS, SECRETS, Database, Sandbox, remember_secret, started_app


@pytest.fixture(scope="session")
def db():
    database = Database().start()
    yield database
    database.cleanup()


@pytest.fixture(scope="module")
def mydb():
    """A database of the module's own, for tests that stop it or fail its commands."""
    database = Database().start()
    yield database
    database.cleanup()


@pytest.fixture(scope="session")
def sandbox():
    box = Sandbox().start()
    yield box
    box.stop()


@pytest.fixture(autouse=True)
def _clear_faults(request):
    """A fault armed by one test never leaks into the next."""
    yield
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").clear_faults()


@pytest.fixture(scope="module")
def app(db, sandbox):
    with started_app(db, sandbox) as server:
        yield server


@pytest.fixture(scope="module")
def quick_app(db, sandbox):
    """An app that gives up on the upstreams after half a second."""
    with started_app(db, sandbox, UPSTREAM_READ_TIMEOUT="0.5") as server:
        yield server


@pytest.fixture
def start_app(db, sandbox):
    """Start an extra app process with settings of the test's own."""
    started = []

    def start(**overrides):
        server = started_app(db, sandbox, **overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html):
    match = CSRF_RE.search(html)
    assert match, "no csrf_token in the page"
    return match.group(1)


def sign_in(app, username="demo", password="demo", session=None, next_path=None):
    """Sign in like a browser would: fetch the form, post it with its CSRF token."""
    s = session or requests.Session()
    page = s.get(app.url("/login"), timeout=10)
    data = {"username": username, "password": password, "csrf_token": csrf_from(page.text)}
    if next_path is not None:
        data["next"] = next_path
    answer = s.post(app.url("/login"), data=data, allow_redirects=False, timeout=10)
    remember_secret(data["csrf_token"])
    if password != username:
        remember_secret(password, minimum=6)
    for cookie in s.cookies:
        if cookie.name.endswith("session"):
            remember_secret(cookie.value)
    return s, answer


@pytest.fixture(scope="session", autouse=True)
def _logs_hold_no_secret():
    """When the run ends: no app log holds a token, password or key the tests used."""
    yield
    found = []
    for path in LOGS:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found += [f"{path.name}: {secret[:6]}…" for secret in SECRETS if secret in text]
    assert not found, f"secrets in the app logs: {found[:10]}"


@pytest.fixture
def signed_in(app):
    s, answer = sign_in(app)
    assert answer.status_code == 303, answer.text
    return s
