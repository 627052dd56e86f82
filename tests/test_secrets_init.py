"""deploy/secrets/init.sh sets owner and mode on every secret file, each time it runs.

Run on a copy of the script in a temporary directory (it works in its own
folder), as root and, where setpriv is there, as an ordinary user, on files
made before it ran and after (as the README's order has the operator write
the admin password and Pusher secret after the first run), under a careless
umask.
"""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "secrets" / "init.sh"
APP_FILES = ("secure_key", "mongodb_uri", "socialos_admin_password", "pusher_secret")
ALL_FILES = (*APP_FILES, "mongo_root_password", "mongo_keyfile")
NOBODY = 65534


def copy_script(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    shutil.copy(SCRIPT, folder / "init.sh")
    return folder


def run(folder, user=None):
    prefix = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    return subprocess.run([*prefix, "sh", "-c", "umask 022; sh ./init.sh"], cwd=folder, capture_output=True,
                          text=True, timeout=30, check=True).stdout


def write_carelessly(path, text, user=None):
    """As the README's `printf ... > file` would under umask 022: world-readable."""
    path.write_text(text)
    path.chmod(0o644)
    if user is not None:
        os.chown(path, user, user)


def modes(folder):
    return {name: stat.S_IMODE((folder / name).stat().st_mode) for name in ALL_FILES if (folder / name).exists()}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_as_root_every_file_is_0600_and_the_apps_are_uid_10001(tmp_path):
    folder = copy_script(tmp_path)
    write_carelessly(folder / "socialos_admin_password", "admin-pw")  # made before
    out = run(folder)
    assert "missing deploy/secrets/pusher_secret" in out
    write_carelessly(folder / "pusher_secret", "pusher-secret")  # made after, as the README says
    out = run(folder)
    assert "missing" not in out and "kept    deploy/secrets/secure_key" in out
    assert modes(folder) == {name: 0o600 for name in ALL_FILES}
    for name in APP_FILES:
        assert (folder / name).stat().st_uid == 10001 and (folder / name).stat().st_gid == 10001, name
    # Loosened again by hand: the next run puts it back.
    (folder / "secure_key").chmod(0o644)
    run(folder)
    assert modes(folder)["secure_key"] == 0o600


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_as_another_user_every_file_is_0600_and_it_says_what_to_run_as_root():
    # Under /tmp itself: pytest's own tmp_path is not reachable by another user.
    top = Path(tempfile.mkdtemp(prefix="socialos-secrets-"))
    try:
        folder = copy_script(top)
        for path in (top, folder, folder / "init.sh"):
            os.chown(path, NOBODY, NOBODY)
        write_carelessly(folder / "socialos_admin_password", "admin-pw", NOBODY)
        run(folder, NOBODY)
        write_carelessly(folder / "pusher_secret", "pusher-secret", NOBODY)
        out = run(folder, NOBODY)
        assert modes(folder) == {name: 0o600 for name in ALL_FILES}
        assert all((folder / name).stat().st_uid == NOBODY for name in ALL_FILES)
        assert "as root, run:" in out and "chown 10001:10001" in out
    finally:
        shutil.rmtree(top, ignore_errors=True)
