"""The presence page, Pusher channel authorization and Pusher webhooks.

``/presence`` lists a presence channel's members by signed REST calls, so
it works fully server-rendered, and the presence channels that have
members now. Where live updates are available (``live_config``) the page
loads pusher-js (the pinned copy, with Subresource Integrity) and
``static/presence.js`` subscribes through ``/pusher/auth``, keeping the
list in step as members come and go.

Every wait is under the view's budget (``PAGE_BUDGET``): Pusher's calls
and the name lookups run on one small pool of threads whose queue is
bounded; when it is full, or when too many views are already waiting on
it (half the server's threads), a view is answered at once with who
webhooks last reported and a "busy" sentence, never queued behind a slow
Pusher while ``/livez`` and every other page wait for a thread. At most
``MAX_MEMBERS`` ids of one answer are listed (Pusher's own limit is 100
members a channel), so a huge answer can't make a huge query.

Names: Pusher gives ids only. The member directory knows the names of
those who authorized through us; other ids are looked up as Social OS
profiles, concurrently, a few per view, all under one deadline, so a slow
API costs a view a few seconds at most and the page says whose name it
could not get. A profile that doesn't exist (404) is remembered as such.

Webhooks are authentic (key + HMAC of the raw body), recent (``time_ms``
within 300 s, as Pusher's own libraries require), bounded (at most
``MAX_WEBHOOK_EVENTS`` events) and applied once (a redelivered body is
answered 200 and not applied again).
"""

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cherrypy

from socialos_app.ops.logs import security_event
from socialos_app.presence.members import MemberDirectory
from socialos_app.settings import Settings
from socialos_app.storage import StoreUnavailable
from socialos_app.upstream.errors import NotFound, UpstreamError, UpstreamUnavailable, explain
from socialos_app.upstream.pusher import (
    MAX_USER_ID,
    WebhookError,
    valid_presence_channel,
    valid_private_channel,
)
from socialos_app.upstream.socialos import Client
from socialos_app.web import assets
from socialos_app.web.pages.base import json_answer, pusher_caller
from socialos_app.web.pages.live import LiveEndpoints
from socialos_app.web.render import render
from socialos_app.web.request import read_body
from socialos_app.web.services import Services
from socialos_app.web.toolbox import config, expose
from socialos_app.web.tools import SignedIn

__all__ = ["MAX_MEMBERS", "MAX_PROFILE_LOOKUPS", "MAX_WEBHOOK_EVENTS", "PAGE_BUDGET", "WEBHOOK_WINDOW_MS", "Busy",
           "Live", "PresencePages", "PusherEndpoints", "live_config", "user_channel"]

MAX_PROFILE_LOOKUPS = 10     # names we don't know yet, fetched per page view at most
LOOKUP_DEADLINE = 4.0        # seconds all of one view's lookups may take together
PAGE_BUDGET = 6.0            # ... and the whole view, Pusher's calls included, give or take
MAX_CHANNELS_LISTED = 50
MAX_MEMBERS = 1000           # ids of one channel listed (and looked up in one query) at most
POOL_THREADS = 16
POOL_WAITING = 16            # jobs queued for a thread at most; more is "busy" at once
MAX_WEBHOOK_EVENTS = 100     # per webhook body; Pusher batches far fewer
WEBHOOK_WINDOW_MS = 300_000  # Pusher's libraries refuse webhooks older (or newer) than this
RETRY_AFTER = "5"
BUSY = ("Many people are opening presence pages right now, so Pusher was not asked for this one; "
        "reload in a few seconds.")


class Busy(Exception):
    """The lookup pool has no room: the view answers at once rather than queue."""


class _Lookups:
    """A small pool of daemon threads for the page's upstream calls, returning Futures.

    Not a ThreadPoolExecutor: its threads are not daemons, and CherryPy's exit
    waits for every non-daemon thread, so an idle pool would hold up every stop;
    and its queue has no bound. Here at most ``size + waiting`` jobs are taken
    (running, queued, or given up on but not yet skipped by a thread); one more
    raises ``Busy``. Each call is bounded by the upstream deadline, so the pool
    drains by itself however slow the upstream is.
    """

    def __init__(self, size: int, waiting: int) -> None:
        self.size, self.waiting = size, waiting
        self.jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.taken = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """``fn(*args)`` on a pool thread, as a Future; ``Busy`` when the pool is full."""
        with self.lock:
            if self.taken >= self.size + self.waiting:
                raise Busy()
            self.taken += 1
            if not self.threads:
                self.threads = [threading.Thread(target=self._work, name=f"presence-{i}", daemon=True)
                                for i in range(self.size)]
                for thread in self.threads:
                    thread.start()
        future: Future[Any] = Future()
        self.jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self.jobs.get()
            try:
                if not future.set_running_or_notify_cancel():
                    continue  # the view gave up on it before it started
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the view through the future
                    future.set_exception(exc)
            finally:
                with self.lock:
                    self.taken -= 1


_pool = _Lookups(POOL_THREADS, POOL_WAITING)


def user_channel(username: str) -> str | None:
    """``private-user-{username}``: the user's own notices (None for a name a channel can't hold)."""
    channel = f"private-user-{username}"
    return channel if valid_private_channel(channel) else None


# -- live updates: where the browser gets pusher-js and which websocket it opens ---------------
@dataclass(frozen=True)
class Live:
    """What the page tells pusher-js, and what the CSP must allow for it."""

    js_url: str
    integrity: str   # SRI of the pinned pusher-js ('' for an operator's own PUSHER_JS_URL)
    ws_host: str
    ws_port: int
    tls: bool

    @property
    def script_origin(self) -> str | None:
        """The script's origin when it isn't this site's own, else None."""
        parts = urlsplit(self.js_url)
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme else None

    @property
    def ws_origin(self) -> str:
        scheme = "wss" if self.tls else "ws"
        default = 443 if self.tls else 80
        host = f"[{self.ws_host}]" if ":" in self.ws_host else self.ws_host
        return f"{scheme}://{host}" + ("" if self.ws_port == default else f":{self.ws_port}")


def live_config(settings: Settings) -> tuple[Live | None, str]:
    """``(Live, "")`` when browsers can get live updates, else ``(None, how to get them)``.

    pusher-js: PUSHER_JS_URL when set; else, for Pusher's own service, its
    CDN copy of the pinned version; else (the sandbox or a self-hosted
    Pusher) the pinned copy ``make install`` fetched into static/vendor.
    The websocket: PUSHER_WS_HOST (host or host:port) when set, else the
    Pusher host itself on its port; TLS unless PUSHER_SCHEME is http.
    """
    if not settings.pusher_configured:
        return None, "Live updates need Pusher: set PUSHER_APP_ID, PUSHER_KEY and PUSHER_SECRET."
    pinned = assets.PUSHER_JS
    js_url: str | None
    if settings.pusher_js_url:
        js_url = settings.pusher_js_url
        integrity = pinned.sri if js_url in (pinned.cdn_url, assets.local_url(pinned)) else ""
    elif settings.pusher_host:
        js_url, integrity = assets.local_url(pinned), pinned.sri
        if js_url is None:
            return None, ("Live updates need the pinned pusher-js: run `make install` (it fetches it "
                          "with npm), or set PUSHER_JS_URL. Until then, reload to see who joined or left.")
    else:
        js_url, integrity = pinned.cdn_url, pinned.sri

    tls = settings.pusher_scheme != "http"
    ws = settings.pusher_ws_host or settings.pusher_host or f"ws-{settings.pusher_cluster}.pusher.com"
    host, port = ws, 0
    if ws.count(":") == 1:
        host, _, text = ws.partition(":")
        port = int(text)
    if not port:
        port = settings.pusher_port if host == settings.pusher_host and settings.pusher_port else (
            443 if tls else 80)
    return Live(js_url, integrity, host, port, tls), ""


# -- the page --------------------------------------------------------------------------------
def _profile_name(api: Client, directory: MemberDirectory, user_id: str) -> str | None:
    """One lookup: the profile's name, None without one; NotFound when there is no profile.

    Runs on the pool; a name found after the view gave up is still remembered for the next one.
    """
    profile = api.get("user", user_id)
    name = profile.get("name") if isinstance(profile, dict) else None
    if isinstance(name, str) and name:
        try:
            directory.remember(user_id, name)
        except StoreUnavailable:
            pass
        return name
    return None


class PresencePages:
    """``GET /presence?channel=presence-NAME``."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.live, self.no_live = live_config(services.settings)
        # Views waiting on Pusher at once: the other half of the server's threads stay free for
        # every other page (and /livez) however slow Pusher is.
        self.viewers = threading.BoundedSemaphore(max(1, services.settings.thread_pool // 2))

    def _names(self, user: SignedIn, ids: list[str], deadline: float) -> tuple[dict[str, str], list[str], int]:
        """``({id: name}, [ids whose name we couldn't get], count not looked up this time)``."""
        directory = self.services.members
        try:
            names, missing = directory.lookup(ids)
        except StoreUnavailable:
            names, missing = {}, set()
        unknown = [i for i in ids if i not in names and i not in missing]
        todo, later = unknown[:MAX_PROFILE_LOOKUPS], len(unknown[MAX_PROFILE_LOOKUPS:])
        if not todo:
            return names, [], later
        api = user.api  # built here, on the request's thread; the calls themselves run on the pool
        futures: dict[Future[Any], str] = {}
        for index, user_id in enumerate(todo):
            try:
                futures[_pool.submit(_profile_name, api, directory, user_id)] = user_id
            except Busy:
                later += len(todo) - index  # the pool is full: next time
                break
        if not futures:
            return names, [], later
        done, pending = wait_for_futures(futures, timeout=max(0.5, deadline - time.monotonic()))
        failed: list[str] = []
        absent: list[str] = []
        for future in pending:
            future.cancel()  # not started yet: never will be; running: finishes on its own
            failed.append(futures[future])
        for future in done:
            user_id = futures[future]
            try:
                name = future.result()
            except NotFound:
                absent.append(user_id)
                continue
            except ValueError:  # an id that can't be a username: shown as it is
                continue
            except UpstreamError:
                failed.append(user_id)
                continue
            if name:
                names[user_id] = name
        if absent:
            try:
                directory.remember_missing(absent)
            except StoreUnavailable:
                pass
        return names, sorted(failed), later

    @expose
    def index(self, channel: object = None, **_ignored: object) -> bytes | str:
        started = time.monotonic()
        settings = self.services.settings
        channel = settings.pusher_channel if channel is None else channel
        if not isinstance(channel, str) or not valid_presence_channel(channel):
            # The form again, with the mistake said beside the field (the hint shows the format).
            cherrypy.serving.response.status = 400
            typed = channel[:164] if isinstance(channel, str) else ""
            return render("presence.html", title="Presence", channel=typed, members=[], channels=[],
                          channel_error="A presence channel name starts with 'presence-' and uses only "
                                        "letters, digits and _ - = @ , . ; (at most 164).",
                          problem="", unnamed=[], later=0, last_known=False, live=None,
                          no_live="", pusher_key="", pusher_cluster="")
        user = cherrypy.serving.request.signed_in
        pusher = self.services.pusher
        members: list[dict[str, str]] = []
        channels: list[tuple[str, Any]] = []
        problem, status = "", 200
        unnamed: list[str] = []
        later, last_known = 0, False
        unlisted = 0
        if pusher is None:
            problem = "Pusher is not configured on this server (PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET)."
        elif not self.viewers.acquire(blocking=False):
            status, problem = 503, BUSY
        else:
            try:
                members, channels, unnamed, later, unlisted, status, problem = self._ask_pusher(
                    user, channel, started)
            finally:
                self.viewers.release()
        if problem and pusher is not None:
            members, last_known = self._last_known(channel), True
        response = cherrypy.serving.response
        response.status = status
        if status == 503:
            response.headers["Retry-After"] = RETRY_AFTER
        return render("presence.html", title="Presence", channel=channel, members=members,
                      channels=channels, problem=problem, unnamed=unnamed, later=later, unlisted=unlisted,
                      max_members=MAX_MEMBERS, last_known=last_known, live=self.live if pusher else None,
                      no_live=self.no_live, pusher_key=settings.pusher_key,
                      pusher_cluster=settings.pusher_cluster)

    def _ask_pusher(self, user: SignedIn, channel: str, started: float) -> tuple[
            list[dict[str, str]], list[tuple[str, Any]], list[str], int, int, int, str]:
        """``(members, channels, unnamed, later, unlisted, status, problem)``, all under the page's budget."""
        pusher = self.services.pusher
        assert pusher is not None
        members: list[dict[str, str]] = []
        unnamed: list[str] = []
        later = unlisted = 0
        status, problem = 200, ""
        # Both of Pusher's calls at once; each bounded by the upstream deadline, waited for under the page's.
        try:
            users_call = _pool.submit(pusher.channel_users, channel)
        except Busy:
            return [], [], [], 0, 0, 503, BUSY
        try:
            channels_call: Future[Any] | None = _pool.submit(pusher.channels, "presence-", ("user_count",))
        except Busy:
            channels_call = None  # the channel list is a nicety: not for a full pool
        try:
            raw = users_call.result(timeout=max(0.0, started + PAGE_BUDGET - 1.0 - time.monotonic()))
        except FutureTimeout:
            users_call.cancel()  # not started yet: never will be; running: ends by the upstream deadline
            status = 504
            problem = (f"Pusher did not answer within {PAGE_BUDGET - 1.0:.0f} seconds. The member list can't be "
                       "shown right now; reload in a moment.")
        except UpstreamError as exc:
            status = 504 if isinstance(exc, UpstreamUnavailable) else 502
            problem = f"{explain(exc)} The member list can't be shown right now; reload in a moment."
        else:
            # Pusher's ids, bounded here: a channel of a million can't make a query of a million.
            every = {i for i in raw if 0 < len(i) <= MAX_USER_ID}
            ids = sorted(every)[:MAX_MEMBERS]
            unlisted = len(every) - len(ids)
            names, unnamed, later = self._names(user, ids, started + min(LOOKUP_DEADLINE, PAGE_BUDGET - 1.0))
            members = [{"id": i, "name": names.get(i, "")} for i in ids]
        channels: list[tuple[str, Any]] = []
        if channels_call is not None:
            try:
                found = channels_call.result(timeout=max(0.1, started + PAGE_BUDGET - time.monotonic()))
                channels = sorted((name, (info or {}).get("user_count")) for name, info in found.items()
                                  if valid_presence_channel(name))[:MAX_CHANNELS_LISTED]
            except Exception:  # noqa: BLE001 - the channel list is a nicety: the page goes on without it
                channels_call.cancel()
        return members, channels, unnamed, later, unlisted, status, problem

    def _last_known(self, channel: str) -> list[dict[str, str]]:
        """Who Pusher's webhooks last said is in ``channel``: shown when Pusher can't be asked."""
        try:
            known = self.services.members.in_channel(channel)
        except StoreUnavailable:
            return []
        return [{"id": i, "name": known[i]} for i in sorted(known)]


# -- Pusher's calls to us ----------------------------------------------------------------------
class PusherEndpoints(LiveEndpoints):  # + /pusher/user-auth, /pusher/session
    """``POST /pusher/auth`` (pusher-js) and ``POST /pusher/webhook`` (Pusher)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @expose
    # pusher-js calls this; a signed-out call gets a 403 JSON answer, not a redirect.
    @config({"tools.socialos_session.required": False})
    def auth(self, socket_id: object = None, channel_name: object = None, **_ignored: object) -> bytes:
        """Authorize the signed-in user into a presence- channel, or their own ``private-user-{username}``."""
        checked = pusher_caller(self.services, socket_id)
        if isinstance(checked, bytes):
            return checked
        user, pusher = checked
        socket_id = str(socket_id)
        if not isinstance(channel_name, str):
            return json_answer(400, {"error": "bad channel_name"})
        try:
            if valid_presence_channel(channel_name):
                self.services.members.remember(user.username, user.name)
                body = pusher.authorize(socket_id, channel_name, user_id=user.username,
                                        user_info={"name": user.name})
            elif valid_private_channel(channel_name):
                # Only the app's own private channels, each for the one it is meant for.
                if channel_name != user_channel(user.username):
                    security_event("channel_refused", user=user.username, channel=channel_name[:164])
                    return json_answer(403, {"error": "not a channel of yours"})
                body = pusher.authorize(socket_id, channel_name)
            else:
                return json_answer(400, {"error": "only private- and presence- channels need authorization"})
        except ValueError as exc:  # e.g. private-encrypted-: we hold no encryption master key
            return json_answer(400, {"error": str(exc)})
        except StoreUnavailable:
            return json_answer(503, {"error": "the database is not answering; try again shortly"}, RETRY_AFTER)
        return json_answer(200, body)

    @expose
    @config({
        # Pusher calls this, not a browser: it is authenticated by its HMAC signature.
        "tools.socialos_session.on": False,
        "tools.csrf.on": False,
        # Keep the raw body whatever its Content-Type: the signature is over those exact bytes.
        "request.body.processors": {},
    })
    def webhook(self, **_ignored: object) -> bytes:
        """Pusher's webhooks: authentic, recent, bounded, applied once."""
        request = cherrypy.serving.request
        if request.method != "POST":
            cherrypy.serving.response.headers["Allow"] = "POST"
            return json_answer(405, {"error": "POST only"})
        pusher = self.services.pusher
        if pusher is None:
            return json_answer(503, {"error": "Pusher is not configured"})
        body = read_body(self.services.settings.max_body_bytes)
        try:
            payload = pusher.verify_webhook(request.headers.get("X-Pusher-Key"),
                                            request.headers.get("X-Pusher-Signature"), body)
        except WebhookError as exc:
            security_event("webhook_refused", reason=exc.message, status=exc.status, address=request.remote.ip)
            return json_answer(exc.status, {"error": exc.message})
        refused = _check_webhook(payload)
        if refused:
            status, reason = refused
            security_event("webhook_refused", reason=reason, status=status, address=request.remote.ip)
            return json_answer(status, {"error": reason})

        directory = self.services.members
        digest = hashlib.sha256(body).hexdigest()
        try:
            if not directory.claim_delivery(digest):
                return json_answer(200, {"ok": True, "handled": 0, "duplicate": True})  # a redelivery: done already
            handled = directory.apply(payload["events"])
            directory.delivery_applied(digest)
        except StoreUnavailable:
            # Pusher retries a webhook that fails; by then the database may be back.
            return json_answer(503, {"error": "the database is not answering; retry later"}, RETRY_AFTER)
        return json_answer(200, {"ok": True, "handled": handled})


def _check_webhook(payload: dict[str, Any]) -> tuple[int, str] | None:
    """``(status, reason)`` for an authentic body that must still be refused, else None."""
    time_ms = payload.get("time_ms")
    if isinstance(time_ms, bool) or not isinstance(time_ms, (int, float)):
        return 400, "time_ms missing or not a number"
    skew = time.time() * 1000 - time_ms
    if abs(skew) > WEBHOOK_WINDOW_MS:
        # Authentic but stale (or from the future): a replay, or a clock far off. Pusher's libraries refuse it too.
        return 401, f"time_ms is {abs(skew) / 1000:.0f} s from now; webhooks older than " \
                    f"{WEBHOOK_WINDOW_MS // 1000} s are refused"
    if len(payload["events"]) > MAX_WEBHOOK_EVENTS:
        return 413, f"{len(payload['events'])} events in one webhook; at most {MAX_WEBHOOK_EVENTS} are accepted"
    return None
