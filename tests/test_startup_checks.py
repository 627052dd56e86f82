"""First-deploy mistakes stop the start with one line and exit status 5.

SecantusDB with authentication (``--auth``, users made before it is turned
on) and as what it always is, a single-node replica set named ``secantus``.
Each mistake (a wrong password, a wrong replica-set name, a user without the
privilege to write, a database that is not there) gets one line naming the
variable that holds the URI (MONGODB_URI, or MONGODB_URI_FILE when it came
from a file) and the cause in words, and no password. ``--check-config
--connect`` says the same without starting.
"""

import subprocess
import sys
import tempfile
import time

import pytest
import requests
from pymongo import MongoClient

from socialos_app.cli import EXIT_DATABASE, wait_for_database
from socialos_app.db.checks import DatabaseCheckFailed
from socialos_app.settings import Settings
from socialos_dev.sandbox import processes
from support import ROOT, App, Proc, app_env, free_port, wait_for

PASSWORD = "s3cret-app-pw-27"
WRONG = "wrong-password-31"


@pytest.fixture(scope="module")
def authdb():
    """SecantusDB with --auth: `app` may read and write `appdb`, `reader` may only read it."""
    db = processes.Database()
    db.start()
    client = MongoClient(f"mongodb://127.0.0.1:{db.port}/?directConnection=true")
    client.appdb.command("createUser", "app", pwd=PASSWORD, roles=[{"role": "readWrite", "db": "appdb"}])
    client.appdb.command("createUser", "reader", pwd=PASSWORD, roles=[{"role": "read", "db": "appdb"}])
    client.close()
    db.stop()
    db.proc = Proc("secantusdb", [*processes.secantus_command(), "--host", "127.0.0.1", "--port", str(db.port),
                                  "--storage-path", db.path, "--log-level", "WARNING", "--auth"]).start()
    wait_for(lambda: db.proc.listens_on(db.port), 60, "SecantusDB --auth")
    yield db
    db.cleanup()


def uri(db, user="app", password=PASSWORD, options="directConnection=true"):
    return f"mongodb://{user}:{password}@127.0.0.1:{db.port}/appdb?{options}"


def run(env, *args, timeout=60):
    """``python app.py`` to its end: (exit status, output)."""
    done = subprocess.run([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(free_port()), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def one_line(output, *words):
    """The one line saying why, with each of ``words``; no password anywhere."""
    lines = [line for line in output.splitlines() if line.startswith("socialos-app: ")]
    assert len(lines) == 1, output[-2000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert PASSWORD not in output and WRONG not in output
    assert "Traceback" not in output
    return lines[0]


def test_the_right_credentials_start(authdb, sandbox):
    app = App(app_env(authdb, sandbox, MONGODB_URI=uri(authdb), LOG_LEVEL="INFO")).start()
    try:
        wait_for(lambda: app.proc.output().count("listening on"), 20, "start line")
        line, = [x for x in app.proc.output().splitlines() if "listening on" in x]
        assert "replica set 'secantus'" in line and "app:****@" in line and PASSWORD not in line
    finally:
        assert app.stop() == 0


def test_a_wrong_password_stops_the_start(authdb, sandbox):
    code, output = run(app_env(authdb, sandbox, MONGODB_URI=uri(authdb, password=WRONG)))
    assert code == EXIT_DATABASE, output
    one_line(output, "MONGODB_URI:", "authentication failed", "'app'")


def test_a_wrong_password_in_a_file_names_the_file_variable(authdb, sandbox, tmp_path):
    secret = tmp_path / "mongodb_uri"
    secret.write_text(uri(authdb, password=WRONG) + "\n")
    env = app_env(authdb, sandbox, MONGODB_URI_FILE=str(secret))
    del env["MONGODB_URI"]
    code, output = run(env)
    assert code == EXIT_DATABASE, output
    one_line(output, "MONGODB_URI_FILE:", "authentication failed")


def test_a_wrong_replica_set_name_stops_the_start(authdb, sandbox):
    for options in ("replicaSet=rs0", "replicaSet=rs0&directConnection=true"):
        started = time.monotonic()
        code, output = run(app_env(authdb, sandbox, MONGODB_URI=uri(authdb, options=options)))
        assert code == EXIT_DATABASE, output
        one_line(output, "MONGODB_URI:", "replica set name mismatch", "rs0", "secantus")
        assert time.monotonic() - started < 20, "a wrong name is not waited on"


def test_a_user_without_write_privilege_stops_the_start(authdb, sandbox):
    code, output = run(app_env(authdb, sandbox, MONGODB_URI=uri(authdb, user="reader")))
    assert code == EXIT_DATABASE, output
    one_line(output, "MONGODB_URI:", "'reader'", "readWrite")


def test_check_config_connect_checks_without_starting(authdb, sandbox):
    env = app_env(authdb, sandbox, MONGODB_URI=uri(authdb, password=WRONG))
    done = subprocess.run([sys.executable, "app.py", "--check-config", "--connect"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_DATABASE, done.stderr
    one_line(done.stderr, "MONGODB_URI:", "authentication failed")
    env["MONGODB_URI"] = uri(authdb)
    done = subprocess.run([sys.executable, "app.py", "--check-config", "--connect"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "database: ok: replica set 'secantus'" in done.stdout and PASSWORD not in done.stdout


def test_a_database_that_is_down_is_waited_for_with_a_line_per_attempt(sandbox):
    """Not there at first: a line per attempt, then the app starts once the database answers."""
    db = processes.Database(path=tempfile.mkdtemp(prefix="secantus-late-"))
    app = App(app_env(db, sandbox, DB_TIMEOUT_MS="500")).start(wait=False)
    try:
        wait_for(lambda: app.proc.alive() and app.proc.output().count("database not ready") >= 2, 30,
                 "two attempts logged")
        attempt, = [x for x in app.proc.output().splitlines() if "attempt 1" in x]
        assert "MONGODB_URI" in attempt and "no answer from 127.0.0.1" in attempt and "refused" in attempt, attempt
        db.start()
        wait_for(lambda: app.proc.alive() and requests.get(app.url("/readyz"), timeout=2).status_code == 200, 40,
                 "ready once the database is up")
    finally:
        app.stop()
        db.cleanup()


def test_the_wait_for_a_database_that_never_answers_is_bounded():
    s = Settings(mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/x?directConnection=true", db_timeout_ms=200)
    started = time.monotonic()
    with pytest.raises(DatabaseCheckFailed) as failed:
        wait_for_database(s, services=None, wait=1.5)
    assert 1.5 <= time.monotonic() - started < 6
    assert failed.value.retry and "refused" in failed.value.cause and "attempts in 2 s" in failed.value.cause
