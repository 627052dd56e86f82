"""Signed webhooks from the Pusher sandbox to the app, sent as Pusher sends them.

Pusher POSTs ``{"time_ms": N, "events": [...]}`` as JSON with two headers:
``X-Pusher-Key`` (the app key) and ``X-Pusher-Signature`` (hex
HMAC-SHA256 of the exact body, keyed with the app secret). Events queued
while a delivery is under way go out together in the next body; a failed
delivery (no answer, or not 2xx) is retried a few times, as Pusher retries.

Written out here rather than imported from ``socialos_app.upstream.pusher``: the
sandbox must not share the code it checks.
"""

import collections
import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.error
import urllib.request

__all__ = ["WebhookSender"]

MAX_EVENTS_PER_BODY = 50
RETRY_DELAYS = (0.5, 1.0, 2.0)
LOG_SIZE = 100


class WebhookSender:
    """A background thread that delivers queued webhook events to ``url``."""

    def __init__(self, url, key, secret, timeout=5.0):
        self.url, self.key, self._secret, self.timeout = url, key, secret.encode(), timeout
        self._queue = queue.Queue()
        self._log = collections.deque(maxlen=LOG_SIZE)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pusher-webhooks", daemon=True)
        self._thread.start()

    def post(self, events):
        """Queue events (never blocks: called while the sandbox holds its lock)."""
        self._queue.put(list(events))

    def deliveries(self):
        """The last deliveries: ``[{"time_ms", "events", "status", "error", "attempts"}]``, oldest first."""
        with self._lock:
            return list(self._log)

    def stop(self):
        self._stopped.set()
        self._queue.put(None)

    # -- the thread ----------------------------------------------------------
    def _run(self):
        while not self._stopped.is_set():
            first = self._queue.get()
            if first is None:
                return
            events = list(first)
            while len(events) < MAX_EVENTS_PER_BODY:  # whatever else is waiting rides along
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stopped.set()
                    break
                events.extend(more)
            for start in range(0, len(events), MAX_EVENTS_PER_BODY):
                self._deliver(events[start:start + MAX_EVENTS_PER_BODY])

    def _deliver(self, events):
        body = json.dumps({"time_ms": int(time.time() * 1000), "events": events},
                          separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Pusher-Key": self.key,
                   "X-Pusher-Signature": hmac.new(self._secret, body, hashlib.sha256).hexdigest()}
        status, error, attempts = None, None, 0
        for delay in (0.0, *RETRY_DELAYS):
            if delay and self._stopped.wait(delay):
                break
            attempts += 1
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    answer.read()
                    status, error = answer.status, None
                break
            except urllib.error.HTTPError as exc:
                status, error = exc.code, exc.read(300).decode("utf-8", "replace")
                if exc.code < 500 and exc.code not in (408, 429):
                    break  # refused for good: retrying the same body can't help
            except (OSError, ValueError) as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._log.append({"time_ms": json.loads(body)["time_ms"], "events": events, "status": status,
                              "error": error, "attempts": attempts})
