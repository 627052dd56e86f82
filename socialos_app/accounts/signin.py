"""Signing in and out: the one place that coordinates the throttle, the
Social OS API and the session engine.

Page handlers only map what these functions return or raise onto forms,
as CherryPy's ``SessionAuth`` and Django's ``authenticate``/``login`` split
the work.
"""

import logging
import re
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Protocol

from socialos_app.accounts.throttle import LoginThrottle
from socialos_app.ops import metrics
from socialos_app.ops.logs import security_event
from socialos_app.sessions import Credentials, SessionEngine, SessionRecord
from socialos_app.settings import Settings
from socialos_app.upstream.errors import Unauthorized, UpstreamError
from socialos_app.upstream.socialos import SocialOS

__all__ = ["WrongCredentials", "Throttled", "sign_in", "sign_out", "end_devices", "end_user", "stop",
           "connections_end"]

log = logging.getLogger("socialos")

MAX_USERNAME = 128
MAX_PASSWORD = 1024
USERNAME = re.compile(r"[\w.@+-]{1,128}")
# Revoking other devices' upstream keys: the page waits at most this long,
# then the rest finish in the background (keys also expire by their TTL).
REVOKE_WAIT = 2.0
_revokers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="revoke")


def stop() -> None:
    """At engine stop: drop revocations not yet started (their keys lapse by TTL) so
    the process exits at once."""
    _revokers.shutdown(wait=False, cancel_futures=True)


class Live(Protocol):
    """Ending a user's live connections (``presence.connections.LiveConnections`` does)."""

    def user_ended(self, username: str) -> None: ...


class Services(Protocol):
    """What signing in and out uses of the app's services (``web.services.Services`` has them)."""

    settings: Settings
    engine: SessionEngine
    socialos: SocialOS
    throttle: LoginThrottle

    @property
    def live(self) -> Live | None: ...


def connections_end(services: Services, username: str) -> None:
    """A session of ``username`` ended: their live pages leave Pusher now (in the background;
    the ones whose session is still live reconnect by themselves). Call it wherever a session ends."""
    if services.live is not None:
        services.live.user_ended(username)


class SignedIn(Protocol):
    """What signing out uses of a signed-in request (``web.tools.SignedIn`` is one)."""

    username: str
    token: str
    record: SessionRecord

    @property
    def credentials(self) -> Credentials | None: ...


class WrongCredentials(Exception):
    """The username and password don't sign anyone in (or aren't a username and password)."""


class Throttled(Exception):
    """Too many attempts lately: try again in ``wait`` seconds."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"try again in {wait} s")
        self.wait = wait


def sign_in(services: Services, username: object, password: object, *, user_agent: str = "", address: str = "",
            old_token: str | None = None) -> tuple[str, SessionRecord]:
    """Check the password upstream and start a fresh session: ``(token, record)``.

    A token the browser offered (``old_token``) never survives sign-in, so a
    cookie planted before it can't ride the new session. Raises
    ``WrongCredentials``, ``Throttled``, the upstream errors or
    ``StoreUnavailable``.
    """
    username = username.strip() if isinstance(username, str) else ""
    if (not USERNAME.fullmatch(username) or not isinstance(password, str)
            or not password or len(password) > MAX_PASSWORD):
        raise WrongCredentials()
    wait = services.throttle.reserve(username, address)
    if wait:
        metrics.sign_in("throttled")
        security_event("sign_in_throttled", user=username, address=address, wait=wait)
        raise Throttled(wait)
    try:
        key = services.socialos.create_key(username, password, ttl=services.settings.session_ttl)
    except Unauthorized:
        metrics.sign_in("wrong")
        security_event("sign_in_failed", user=username, address=address)
        raise WrongCredentials() from None
    except UpstreamError:
        metrics.sign_in("upstream_error")
        raise
    services.throttle.succeeded(username, address)

    credentials = Credentials(token=key["token"], password=key["password"])
    try:
        profile = services.socialos.user(username, credentials.password).get("user", username)
    except UpstreamError:
        profile = {}
    profile = profile if isinstance(profile, dict) else {}
    # Filed under the upstream's own spelling of the name: against an upstream that
    # matches usernames case-insensitively, a session opened as CAROL would otherwise
    # miss carol's device list and survive her "sign out everywhere else".
    canonical = profile.get("username")
    if isinstance(canonical, str) and USERNAME.fullmatch(canonical):
        username = canonical
    name = str(profile.get("name") or username)[:200]
    admin = profile.get("admin") is True or username == services.settings.admin_user

    if old_token:
        services.engine.end(old_token)
    token, record = services.engine.start(username, name, admin, credentials,
                                          user_agent=user_agent, address=address)
    metrics.sign_in("ok")
    log.info("signed in user=%s", username)
    return token, record


def _revoke(services: Services, username: str, key_password: str, key_tokens: Iterable[str]) -> None:
    """Revoke upstream keys with the caller's own key; wait at most ``REVOKE_WAIT``."""
    def one(key_token: str) -> None:
        try:
            services.socialos.revoke_key(username, key_token, key_password)
        except UpstreamError as exc:
            log.warning("an ended device's upstream key was not revoked (%s); it expires by its TTL",
                        type(exc).__name__)
    try:
        futures: list[Future[None]] = [_revokers.submit(one, t) for t in key_tokens if t]
    except RuntimeError:  # the server is stopping: the keys lapse by their TTL
        return
    if futures:
        wait(futures, timeout=REVOKE_WAIT)


def sign_out(services: Services, signed_in: SignedIn) -> None:
    """Revoke this session's upstream key (best effort) and end the session."""
    credentials = signed_in.credentials
    if credentials is not None:
        _revoke(services, signed_in.username, credentials.password, [credentials.token])
    services.engine.end(signed_in.token)
    connections_end(services, signed_in.username)
    log.info("signed out user=%s", signed_in.username)


def end_devices(services: Services, signed_in: SignedIn, handle: str | None = None) -> int:
    """End one of the user's other devices (``handle``) or all of them; the count.

    Their upstream keys are revoked with this session's key, within a bounded
    wait: a slow upstream never holds the page.
    """
    key_tokens = services.engine.end_devices(signed_in.username, keep_id=signed_in.record.id,
                                             handle=handle)
    if key_tokens:
        connections_end(services, signed_in.username)
        security_event("devices_signed_out", user=signed_in.username, count=len(key_tokens),
                       which="one" if handle else "all_others")
        credentials = signed_in.credentials
        if credentials is not None:
            _revoke(services, signed_in.username, credentials.password, key_tokens)
    return len(key_tokens)


def end_user(services: Services, username: str, by: str = "") -> int:
    """An administrator ends every session of ``username``; the count.

    Their upstream keys can't be revoked from here (no key of theirs is at
    hand); they lapse by their TTL, and no session of ours uses them.
    """
    ended = len(services.engine.end_devices(username))
    if ended:
        connections_end(services, username)
    security_event("user_signed_out_by_admin", user=username, admin=by, count=ended)
    return ended
