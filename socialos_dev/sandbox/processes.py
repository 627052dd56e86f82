"""The local stand-ins as child processes: SecantusDB and the sandboxes.

One place for starting, waiting on and stopping them, used by embedded
mode (``socialos_app/embedded.py``), the tests and the benchmarks. Each
child runs in its own process group with its output in a log file.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from socialos_app.settings import DEMO_PUSHER, SANDBOX_ADMIN

__all__ = ["Proc", "ProcessExited", "Database", "Sandbox", "app_env", "free_port", "port_open",
           "wait_for", "secantus_command"]

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port():
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _listening_inodes(port):
    """Socket inodes listening on ``port`` (Linux /proc/net), or None when unknown."""
    found = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in list(f)[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        found.add(cols[9])
    except (OSError, IndexError, ValueError):
        return None
    return found


def _socket_inodes(pid):
    try:
        links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        return {link[8:-1] for link in links if link.startswith("socket:[")}
    except OSError:
        return None


def _die_with_parent():
    """In the child: SIGKILL when the process that started us dies (Linux), so no orphan keeps a port.

    Only an app that died without stopping its children triggers it (a clean
    stop ends them first, gracefully). A kill, not SIGTERM: a server whose
    parent is gone may hang in its own shutdown (waiting on a webhook to a
    dead app, a websocket close, a storage flush) and keep its port; the
    database's journal recovers from a kill as from a crash.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ProcessExited(RuntimeError):
    """A child we were waiting on has died: no point waiting any longer."""


def wait_for(check, timeout=20.0, what="service"):
    """Poll ``check`` until it returns something truthy; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except ProcessExited:
            raise
        except Exception as exc:  # noqa: BLE001 - polling a service that is coming up
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s: {last!r}")


def secantus_command():
    """``secantusd-py`` beside this Python, or on PATH (the ``embedded`` extra)."""
    exe = Path(sys.executable).parent / "secantusd-py"
    found = str(exe) if exe.exists() else shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("SecantusDB is not installed: pip install -e '.[embedded]' (or set MONGODB_URI)")
    return [found]


class Proc:
    """A child process in its own process group, its output appended to ``log_path``."""

    def __init__(self, name, args, env=None, log_path=None, die_with_parent=False):
        self.name, self.args, self.env = name, list(args), env
        self.die_with_parent = die_with_parent
        self.log_path = Path(log_path) if log_path else Path(
            tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False).name)
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent if self.die_with_parent else None)
        return self

    def listens_on(self, port):
        """True when this very process (not another one) listens on ``port``.

        Where /proc can't tell, a live process and an open port have to do.
        """
        self.alive()
        listening, mine = _listening_inodes(port), _socket_inodes(self.proc.pid)
        if listening is None or mine is None:
            return port_open(port)
        return bool(listening & mine)

    def alive(self):
        """True while running; RuntimeError with the log's tail once it has exited."""
        if self.proc.poll() is not None:
            raise ProcessExited(f"{self.name} exited (code {self.proc.returncode}):\n{self.output()[-3000:]}")
        return True

    def output(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self):
        """User + system CPU time used so far (Linux /proc), else 0."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal, wait, kill if it must; the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


class Database:
    """SecantusDB on loopback; ``stop()`` then ``start()`` keeps port and data."""

    def __init__(self, port=None, path=None, test_commands=False, log_path=None, die_with_parent=False):
        self.port = port or free_port()
        self.path = str(path or tempfile.mkdtemp(prefix="secantus-"))
        self.test_commands = test_commands
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.proc = None

    def uri_for(self, db):
        return f"mongodb://127.0.0.1:{self.port}/{db}?directConnection=true"

    def start(self, timeout=60):
        args = [*secantus_command(), "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", self.path, "--log-level", "WARNING"]
        if self.test_commands:
            args.append("--enable-test-commands")
        self.proc = Proc("secantusdb", args, log_path=self.log_path, die_with_parent=self.die_with_parent).start()
        wait_for(lambda: self.proc.listens_on(self.port), timeout, "SecantusDB")
        return self

    def stop(self):
        return self.proc.stop() if self.proc else None

    def cleanup(self):
        """Stop and delete the data."""
        self.stop()
        shutil.rmtree(self.path, ignore_errors=True)


class Sandbox:
    """``python -m socialos_dev.sandbox``: the Social OS API and Pusher sandboxes."""

    PUSHER = DEMO_PUSHER

    def __init__(self, api_port=None, pusher_port=None, channel=None, env=None, log_path=None,
                 die_with_parent=False):
        self.api_port = api_port or free_port()
        self.pusher_port = pusher_port or free_port()
        self.channel = channel
        self.env = env
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.proc = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_url(self):
        return f"{self.base}/api"

    @property
    def admin_url(self):
        return f"{self.base}/admin"

    @property
    def pusher_url(self):
        return f"http://127.0.0.1:{self.pusher_port}"

    def start(self, timeout=30):
        env = self.env if self.env is not None else {**os.environ, **self.PUSHER}
        args = [sys.executable, "-m", "socialos_dev.sandbox", "--host", "127.0.0.1",
                "--api-port", str(self.api_port), "--pusher-port", str(self.pusher_port)]
        if self.channel:
            args += ["--channel", self.channel]
        self.proc = Proc("sandbox", args, env=env, log_path=self.log_path,
                         die_with_parent=self.die_with_parent).start()
        wait_for(lambda: self.proc.listens_on(self.api_port) and self.proc.listens_on(self.pusher_port),
                 timeout, "sandbox")
        return self

    def stop(self):
        return self.proc.stop() if self.proc else None


def app_env(mongodb_uri, sandbox, secure_key_hex, **overrides):
    """The environment of ``python app.py`` in production mode against these stand-ins.

    Nothing of the caller's own Social OS, Pusher or session settings leaks in.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PUSHER_", "SOCIALOS_", "SESSION_", "SECURE_KEY", "MONGODB_"))}
    env.update({
        "MONGODB_URI": mongodb_uri,
        "SECURE_KEY": secure_key_hex,
        "SOCIALOS_API_URL": sandbox.api_url,
        "SOCIALOS_ADMIN_URL": sandbox.admin_url,
        "SOCIALOS_ADMIN_USER": SANDBOX_ADMIN[0],
        "SOCIALOS_ADMIN_PASSWORD": SANDBOX_ADMIN[1],
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": str(sandbox.pusher_port),
        "PUSHER_SCHEME": "http",
        "COOKIE_SECURE": "0",
        "LOG_LEVEL": "WARNING",
        **sandbox.PUSHER,
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env
