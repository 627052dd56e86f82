"""Upstream key revocations in the background: a small queue per user, served in turn.

Ending sessions revokes their upstream keys, one upstream call each. One
shared first-in-first-out queue lets a user who ends a thousand sessions
hold up everyone else's sign-out behind those calls; here each user has a
queue of their own, at most ``per_user`` long, and the threads take one job
from each user with work in turn (round robin). So another user's one key
waits for at most about one call per user ahead of it, whatever anyone
queued. Keys beyond a user's bound are not queued: they lapse by their TTL
(the caller is told how many, to log it once).
"""

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future

__all__ = ["Revocations"]

Job = Callable[[], None]


class Revocations:
    """Jobs queued per user (at most ``per_user`` waiting each), run by up to ``threads``
    daemon threads (started on first use) taking the users in turn."""

    def __init__(self, threads: int = 4, per_user: int = 100, name: str = "revoke") -> None:
        self.threads = max(1, threads)
        self.per_user = max(1, per_user)
        self.name = name
        self.lapsed = 0  # jobs left out over the bound since start (their keys lapse by TTL)
        self._ready = threading.Condition()
        self._queues: dict[str, deque[tuple[Future[None], Job]]] = {}
        self._turns: deque[str] = deque()  # users with queued jobs, in the order they are served
        self._workers: list[threading.Thread] = []
        self._stopped = False

    def submit(self, user: str, jobs: Iterable[Job], lapsed: int = 0) -> tuple[list[Future[None]], int]:
        """Queue ``jobs`` for ``user``: the futures of those queued, and how many were left out
        (the user already had ``per_user`` waiting). ``lapsed``: jobs the caller left out itself,
        counted with them. Raises ``RuntimeError`` once stopped."""
        futures: list[Future[None]] = []
        left_out = 0
        with self._ready:
            if self._stopped:
                raise RuntimeError("revocations stopped")
            queue = self._queues.get(user)
            for job in jobs:
                if queue is not None and len(queue) >= self.per_user:
                    left_out += 1
                    continue
                if queue is None:
                    queue = self._queues[user] = deque()
                    self._turns.append(user)
                future: Future[None] = Future()
                queue.append((future, job))
                futures.append(future)
            self.lapsed += left_out + max(0, lapsed)
            if futures:
                self._start_workers()
                self._ready.notify(len(futures))
        return futures, left_out

    def pending(self) -> int:
        """Jobs queued and not yet started."""
        with self._ready:
            return sum(len(q) for q in self._queues.values())

    def stop(self) -> None:
        """Cancel every job not yet started (their keys lapse by TTL); running ones finish.
        The threads end; later ``submit`` calls raise ``RuntimeError``."""
        with self._ready:
            self._stopped = True
            queued = [future for queue in self._queues.values() for future, _job in queue]
            self._queues.clear()
            self._turns.clear()
            self._ready.notify_all()
        for future in queued:
            future.cancel()

    def _start_workers(self) -> None:
        # Called holding the lock: one more thread while there are fewer than ``threads``.
        self._workers = [t for t in self._workers if t.is_alive()]
        while len(self._workers) < self.threads:
            worker = threading.Thread(target=self._run, name=f"{self.name}-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _next(self) -> tuple[Future[None], Job] | None:
        """The next job in turn, waiting for one; None once stopped."""
        with self._ready:
            while not self._turns:
                if self._stopped:
                    return None
                self._ready.wait()
            if self._stopped:
                return None
            user = self._turns.popleft()
            queue = self._queues[user]
            item = queue.popleft()
            if queue:
                self._turns.append(user)  # back of the line: every other user's next job first
            else:
                del self._queues[user]
            return item

    def _run(self) -> None:
        while (item := self._next()) is not None:
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(None)
