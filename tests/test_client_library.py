"""The upstream clients as a library of their own: importable with requests alone,
usable for a user-only script, and the README's example runs as written.

Each check runs in a fresh interpreter whose import system refuses the web
and database packages, as a machine with only requests installed would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from socialos_app.upstream import errors, pusher, socialos
from socialos_app.upstream.errors import UpstreamError
from socialos_app.upstream.socialos import AdminNotConfigured, SocialOS

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("cherrypy", "cheroot", "pymongo", "mongoengine", "bson", "jinja2", "prometheus_client")

# Prepended to every script: what a machine with requests alone can import.
BLOCKER = textwrap.dedent(f"""
    import importlib.abc
    import sys

    class _Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is not installed here")
            return None

    sys.meta_path.insert(0, _Blocked())
""")


def run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with the blocker installed first."""
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_the_clients_import_with_requests_alone():
    done = run(textwrap.dedent("""
        import socialos_app.upstream
        from socialos_app.upstream.socialos import SocialOS, Client, Unauthorized
        from socialos_app.upstream.pusher import Pusher, BadRequest
        from socialos_app.upstream.transport import Transport
        ours = sorted(m for m in sys.modules if m.startswith("socialos_app"))
        print(",".join(ours))
        blocked = sorted(m for m in sys.modules if m.partition(".")[0] in {blocked!r})
        print(",".join(blocked) or "-")
    """).format(blocked=BLOCKED))
    assert done.returncode == 0, done.stderr
    ours, blocked = done.stdout.split()
    # the settings table (for defaults) and the floor module its TRUSTED_PROXY parser uses: stdlib only
    assert set(ours.split(",")) == {"socialos_app", "socialos_app.settings", "socialos_app.addresses",
                                    "socialos_app.upstream",
                                    "socialos_app.upstream.errors", "socialos_app.upstream.transport",
                                    "socialos_app.upstream.socialos", "socialos_app.upstream.pusher"}
    assert blocked == "-"


def test_the_blocker_really_blocks():
    done = run("import cherrypy")
    assert done.returncode != 0 and "cherrypy is not installed here" in done.stderr


def readme_example() -> str:
    """The python block of the README's "Using the client in your own code"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using the client in your own code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section shows one example"
    return blocks[0]


def test_the_readme_example_runs_against_the_sandbox(sandbox):
    keys_before = sandbox.stats()
    done = run(readme_example(), env={"SOCIALOS_API_URL": sandbox.api_url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Alice Liddell", "['alice']", "not found: no such user"]
    assert sandbox.stats()["requests"] - keys_before["requests"] == 5  # key, profile, search, 404, revoke


def test_a_user_only_script_needs_no_admin_account(sandbox):
    api = SocialOS(sandbox.api_url)
    assert repr(api) == f"<SocialOS api={sandbox.api_url}>"
    key = api.create_key("demo", "demo", ttl=60)
    try:
        assert api.user("demo", key["password"]).get("user", "demo")["username"] == "demo"
        with pytest.raises(AdminNotConfigured) as caught:
            api.admin()
        assert "admin_url, admin_user, admin_password" in str(caught.value)
    finally:
        api.revoke_key("demo", key["token"], key["password"])
    # With the admin account, admin calls work.
    admin = SocialOS(sandbox.api_url, sandbox.admin_url, "admin", "admin").admin()
    assert any(u["username"] == "demo" for u in admin.get("user")["users"])


def raised_classes(module: ModuleType) -> set[str]:
    return {name for name in module.__all__ if isinstance(getattr(module, name), type)
            and issubclass(getattr(module, name), UpstreamError)}


def test_each_client_exports_the_errors_it_raises_and_no_others():
    shared = {"UpstreamError", "Unauthorized", "Forbidden", "NotFound", "UpstreamUnavailable", "AnswerTooLarge"}
    assert raised_classes(socialos) == shared | {"Unimplemented"}  # the contract's status mapping
    assert raised_classes(pusher) == shared | {"BadRequest", "PayloadTooLarge"}
    assert not {"BadRequest", "PayloadTooLarge"} & set(errors.__all__)  # no Social OS call raises them
