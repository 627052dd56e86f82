"""Live connections follow sessions: an ended session's pages leave Pusher at once.

``LiveConnections`` is the background side. When a session ends (signed out,
a device ended, "sign out everywhere else", an administrator, a tampered
record), ``user_ended(username)`` asks Pusher to terminate that user's
connections (``terminate_user_connections``: every socket signed in as them
through ``pusher:signin``). Pusher has no call for one socket, so all of the
user's pages are closed; those whose session is still live reconnect and
sign in again by themselves (``static/presence.js``), the ended one can't.
``notify(username, notice)`` triggers a ``notice`` event on the user's own
``private-user-{username}`` channel, which only they may subscribe to.

Neither ever holds the page that asked: the jobs go on a bounded queue
(``MAX_PENDING``; a user already waiting to be terminated is not queued
twice; beyond the bound a job is dropped and counted), one worker thread
sends them, each call bounded by the transport's timeouts, and a failed call
is tried again after ``RETRY_AFTER`` seconds, up to ``ATTEMPTS`` times in
all. Outcomes go to the injected ``observe(action, outcome)`` (the metrics).

``session_left(engine, token)`` is the pages' cheap check: seconds until the
session a cookie names expires (idle or absolute), or None when it is gone,
read without touching it, so a page left open does not keep its session alive.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

from socialos_app.crypto import looks_like_token
from socialos_app.sessions import SessionEngine
from socialos_app.storage import utcnow
from socialos_app.upstream.errors import UpstreamError
from socialos_app.upstream.transport import JSON

__all__ = ["ATTEMPTS", "MAX_PENDING", "RETRY_AFTER", "LiveConnections", "Observer", "notice_channel",
           "session_left"]

log = logging.getLogger("socialos")

MAX_PENDING: Final = 1000              # jobs waiting at most; beyond it they are dropped (and counted)
ATTEMPTS: Final = 4                    # tries per job in all
RETRY_AFTER: Final = (1.0, 5.0, 30.0)  # seconds before the 2nd, 3rd, 4th try
NOTICE_EVENT: Final = "notice"
MAX_NOTICE_TEXT: Final = 500

Observer = Callable[[str, str], None]  # (action "terminate" | "notify", outcome "ok" | "retry" | ...)


class _Pusher(Protocol):
    """What is used of ``upstream.pusher.Pusher``."""

    def terminate_user_connections(self, user_id: str) -> JSON: ...

    def trigger(self, channels: str, name: str, data: JSON, socket_id: str | None = None) -> JSON: ...


def notice_channel(username: str) -> str:
    """The private channel only ``username`` may subscribe to, where their live notices arrive."""
    return f"private-user-{username}"


class LiveConnections:
    """Terminates users' Pusher connections and sends them notices, in the background."""

    def __init__(self, pusher: _Pusher, observe: Observer | None = None, *, max_pending: int = MAX_PENDING,
                 retry_after: tuple[float, ...] = RETRY_AFTER) -> None:
        self.pusher = pusher
        self.observe = observe
        self.max_pending = max_pending
        self.retry_after = retry_after
        self._lock = threading.Condition()
        # (due, sequence, action, username, payload, attempt): a heap ordered by when each is due
        self._jobs: list[tuple[float, int, str, str, JSON, int]] = []
        self._terminating: set[str] = set()  # users with a terminate job waiting (not queued twice)
        self._sequence = 0
        self._busy = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- what the rest of the app calls --------------------------------------------------
    def user_ended(self, username: str) -> None:
        """A session of ``username`` ended: close their connections soon (never blocks)."""
        with self._lock:
            if username in self._terminating:
                return
            if self._add("terminate", username, None, 1, time.monotonic()):
                self._terminating.add(username)

    def notify(self, username: str, notice: str, href: str | None = None) -> None:
        """Show ``notice`` on ``username``'s open pages now (never blocks); ``href``: a link
        of this site's own (a path) the notice offers."""
        data: dict[str, JSON] = {"text": notice[:MAX_NOTICE_TEXT]}
        if href is not None and href.startswith("/") and not href.startswith("//"):
            data["href"] = href[:200]
        with self._lock:
            self._add("notify", username, data, 1, time.monotonic())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being sent (tests); False if still busy at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._jobs or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the worker; jobs not yet sent are dropped (connections then end by themselves:
        the pages' own session checks)."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- the worker ------------------------------------------------------------------------
    def _add(self, action: str, username: str, payload: JSON, attempt: int, due: float) -> bool:
        """Queue one job (call with the lock held); False when dropped."""
        if self._stopped or len(self._jobs) >= self.max_pending:
            self._report(action, "dropped")
            return False
        self._sequence += 1
        heapq.heappush(self._jobs, (due, self._sequence, action, username, payload, attempt))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="live-connections", daemon=True)
            self._thread.start()
        self._lock.notify_all()
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and (not self._jobs or self._jobs[0][0] > time.monotonic()):
                    self._lock.wait(self._jobs[0][0] - time.monotonic() if self._jobs else None)
                if self._stopped:
                    return
                _due, _seq, action, username, payload, attempt = heapq.heappop(self._jobs)
                if action == "terminate":
                    # From here on a new end of this user's session queues a new call: this one
                    # may already be past the moment that session's page reconnected.
                    self._terminating.discard(username)
                self._busy += 1
            try:
                outcome = self._send(action, username, payload)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._lock.notify_all()
            if outcome == "failed" and attempt < ATTEMPTS and attempt - 1 < len(self.retry_after):
                with self._lock:
                    queued = self._add(action, username, payload, attempt + 1,
                                       time.monotonic() + self.retry_after[attempt - 1])
                self._report(action, "retry" if queued else "failed")
            else:
                self._report(action, outcome)

    def _send(self, action: str, username: str, payload: JSON) -> str:
        try:
            if action == "terminate":
                self.pusher.terminate_user_connections(username)
            else:
                self.pusher.trigger(notice_channel(username), NOTICE_EVENT, payload)
        except ValueError:  # a name Pusher can't carry (outside a channel name's alphabet)
            return "invalid"
        except UpstreamError as exc:
            log.warning("live %s call to Pusher failed (%s)", action, type(exc).__name__)
            return "failed"
        return "ok"

    def _report(self, action: str, outcome: str) -> None:
        if self.observe is not None:
            try:
                self.observe(action, outcome)
            except Exception:  # noqa: BLE001 - a report must never stop the worker
                log.exception("live connections observer failed")


def session_left(engine: SessionEngine, token: str | None) -> tuple[str, float] | None:
    """``(username, seconds until it expires)`` for the live session ``token`` names, else None.

    Unlike ``engine.resume`` this never touches the session: a page's periodic
    check must not keep its session from idling out. Two reads: the record the
    token names, then the user's live, authentic sessions (``engine.devices``,
    which checks every record's tag) that must include it.
    """
    if not token or not looks_like_token(token):
        return None
    found = engine.store.load(engine.keyring.record_ids(token))
    if found is None or not isinstance(found.username, str):
        return None
    record = next((r for r in engine.devices(found.username) if r.id == found.id), None)
    if record is None:
        return None
    now = utcnow()
    ends = min(record.accessed + engine.idle, record.expires)
    return record.username, max(0.0, (ends - now).total_seconds())
