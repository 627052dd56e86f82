"""Signing in and out: the one place that coordinates the throttle, the
Social OS API and the session engine.

Page handlers only map what these functions return or raise onto forms,
as CherryPy's ``SessionAuth`` and Django's ``authenticate``/``login`` split
the work.
"""

import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from socialos_app.accounts.activity import Activity, family_of, session_ref
from socialos_app.accounts.revocations import Revocations
from socialos_app.accounts.throttle import LoginThrottle
from socialos_app.accounts.useragent import describe
from socialos_app.ops import metrics
from socialos_app.ops.logs import security_event
from socialos_app.sessions import Credentials, SessionEngine, SessionRecord
from socialos_app.settings import Settings
from socialos_app.storage import StoreUnavailable
from socialos_app.upstream.errors import Unauthorized, UpstreamError
from socialos_app.upstream.socialos import SocialOS

__all__ = ["Notice", "SessionGone", "WrongCredentials", "Throttled", "confirm", "connections_end",
           "dismiss_notice", "end_devices", "end_user", "read_notice", "record_tampered", "sign_in", "sign_out",
           "stop"]

log = logging.getLogger("socialos")

MAX_USERNAME = 128
MAX_PASSWORD = 1024
USERNAME = re.compile(r"[\w.@+-]{1,128}")
# Revoking other devices' upstream keys: the page waits at most this long,
# then the rest finish in the background (keys also expire by their TTL).
REVOKE_WAIT = 2.0
# Revocations wait in a queue per user, served in turn, at most this many per user at once:
# one user's thousand ended sessions can't hold up another user's sign-out (the rest lapse by TTL).
REVOKE_PER_USER = 100
_revokers = Revocations(threads=4, per_user=REVOKE_PER_USER)


def stop() -> None:
    """At engine stop: drop revocations not yet started (their keys lapse by TTL) so
    the process exits at once."""
    _revokers.stop()


class Live(Protocol):
    """Ending a user's live connections and telling their open pages (``presence.connections.LiveConnections``)."""

    def user_ended(self, username: str) -> None: ...

    def notify(self, username: str, notice: str, href: str | None = None) -> None: ...


class Services(Protocol):
    """What signing in and out uses of the app's services (``web.services.Services`` has them)."""

    settings: Settings
    engine: SessionEngine
    socialos: SocialOS
    throttle: LoginThrottle
    activity: Activity

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


class SessionGone(Exception):
    """The session ended while its owner was confirming it: nothing to make fresh."""


@dataclass(frozen=True)
class Notice:
    """A new sign-in, as the user's other sessions are told of it."""

    device: str
    address: str
    at: datetime  # naive UTC

    @property
    def text(self) -> str:
        """The notice in words (the time in UTC; pages show it as a ``<time>``)."""
        return (f"New sign-in: {self.device} from {self.address or 'an unknown address'} at "
                f"{self.at.strftime('%H:%M')} UTC. Not you? Sign out everywhere else.")


def read_notice(record: SessionRecord) -> Notice | None:
    """The notice a session record holds (its ``notice`` field is tagged: ours), or None."""
    if not record.notice:
        return None
    try:
        data = json.loads(record.notice)
        return Notice(device=str(data["d"]), address=str(data["a"]),
                      at=datetime.fromisoformat(str(data["t"])).replace(tzinfo=None))
    except (ValueError, KeyError, TypeError):
        return None


def dismiss_notice(services: Services, record: SessionRecord) -> None:
    """The notice was shown: take it off every session of the user (once seen, gone everywhere)."""
    if record.notice:
        services.engine.clear_notice(record.username, record.notice)


def _notify(services: Services, username: str, text: str) -> None:
    """The new sign-in notice on the user's open pages now (issue 23), when Pusher is configured."""
    live = services.live
    if live is not None:
        live.notify(username, text, "/devices?everywhere=1")


def _history(services: Services, write: Callable[[Activity], None]) -> None:
    """A history line that must not change the answer (a wrong password stays a wrong password)."""
    try:
        write(services.activity)
    except StoreUnavailable:
        log.warning("a security history line was not written: the database is not answering")


def _history_lines(services: Services, lines: list[dict[str, Any]]) -> None:
    """Several history lines in one write, as ``_history`` writes one."""
    _history(services, lambda history: history.record_many(lines))


def _ended_lines(ended: Iterable[SessionRecord], by: str) -> list[dict[str, Any]]:
    return [{"username": r.username, "kind": "ended", "device": describe(r.user_agent), "address": r.address,
             "by": by, "sid": session_ref(r.id)} for r in ended]


def record_tampered(services: Services, record: SessionRecord) -> None:
    """The engine ended ``record`` for tampering: its owner's history says so (as the record
    was found), its browser is told why, its live pages are closed."""
    username = record.username
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        return
    agent = record.user_agent if isinstance(record.user_agent, str) else ""
    address = record.address if isinstance(record.address, str) else ""
    services.activity.record(username, "tampered", device=describe(agent), address=address[:64],
                             sid=session_ref(str(record.id)))
    connections_end(services, username)


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
    credentials = _check_password(services, username, password, address, "sign_in")
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
    family = family_of(user_agent)
    try:
        known = services.activity.seen(username, family, address)
    except StoreUnavailable:
        known = True  # no notice rather than no sign-in; starting the session tells if it is down
    token, record = services.engine.start(username, name, admin, credentials,
                                          user_agent=user_agent, address=address)
    try:
        services.activity.record(username, "signed_in", device=describe(user_agent), family=family,
                                 address=address, at=record.created)
    except StoreUnavailable:
        services.engine.end(token)  # no session without its line in the history
        raise
    metrics.sign_in("ok")
    log.info("signed in user=%s", username)
    limit = services.settings.max_sessions_per_user
    if limit or not known:
        _after_sign_in(services, record, credentials, limit, known)
    return token, record


def _check_password(services: Services, username: str, password: str, address: str, what: str) -> Credentials:
    """The password checked upstream as sign-in does it (a new API key), throttled and
    counted alike; the new key's credentials."""
    wait = services.throttle.reserve(username, address)
    if wait:
        metrics.sign_in("throttled")
        security_event(f"{what}_throttled", user=username, address=address, wait=wait)
        _history(services, lambda history: history.held(username, address))
        raise Throttled(wait)
    try:
        key = services.socialos.create_key(username, password, ttl=services.settings.session_ttl)
    except Unauthorized:
        metrics.sign_in("wrong")
        security_event(f"{what}_failed", user=username, address=address)
        _history(services, lambda history: history.failed(username, address))
        raise WrongCredentials() from None
    except UpstreamError:
        metrics.sign_in("upstream_error")
        raise
    services.throttle.succeeded(username, address)
    return Credentials(token=key["token"], password=key["password"])


def _after_sign_in(services: Services, record: SessionRecord, credentials: Credentials, limit: int,
                   known: bool) -> None:
    """The session limit (least recently used first), then the notice of a new device on the
    user's other sessions. Neither fails the sign-in: it has happened."""
    engine, username = services.engine, record.username
    try:
        if limit:
            others = [r for r in engine.devices(username, limit=min(limit + 50, 1000)) if r.id != record.id]
            ended: list[SessionRecord] = []
            key_tokens: list[str] = []
            for lru in sorted(others, key=lambda r: r.accessed)[:max(len(others) + 1 - limit, 0)]:
                for gone, key_token in engine.end_sessions(username, keep_id=record.id, handle=lru.handle):
                    ended.append(gone)
                    if key_token is not None:
                        key_tokens.append(key_token)
            if ended:
                security_event("devices_signed_out", user=username, count=len(ended), which="session_limit")
                lines = _ended_lines(ended, "limit")
                _history(services, lambda history: history.record_many(lines))
                connections_end(services, username)
                _revoke(services, username, credentials.password, key_tokens)
        if not known:
            notice = json.dumps({"d": describe(record.user_agent), "a": record.address,
                                 "t": record.created.replace(tzinfo=UTC).isoformat(), "n": secrets.token_hex(4)})
            told = read_notice(replace(record, notice=notice))
            if engine.set_notice(username, notice, keep_id=record.id) and told is not None:
                _notify(services, username, told.text)
    except StoreUnavailable:
        log.warning("after a sign-in: the session limit or a new sign-in notice was not applied "
                    "(the database is not answering)")


def confirm(services: Services, signed_in: SignedIn, password: object, *, user_agent: str = "",
            address: str = "") -> tuple[str, SessionRecord]:
    """"Confirm it's you": the password checked as at sign-in (throttled, counted alike); on
    success the session moves to a new token, fresh from now, holding a new upstream key (the
    old key revoked): ``(new token, record)``. Raises ``WrongCredentials`` (nothing changed),
    ``Throttled``, ``SessionGone``, the upstream errors or ``StoreUnavailable``.
    """
    username = signed_in.username
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
        raise WrongCredentials()
    credentials = _check_password(services, username, password, address, "confirm")
    old = signed_in.credentials
    rotated = services.engine.rotate(signed_in.token, signed_in.record, credentials)
    if rotated is None:
        _revoke(services, username, credentials.password, [credentials.token])
        raise SessionGone()
    if old is not None:
        _revoke(services, username, credentials.password, [old.token])
    security_event("identity_confirmed", user=username, address=address)
    _history(services, lambda history: history.record(username, "confirmed", device=describe(user_agent),
                                                      address=address))
    return rotated


def _revoke(services: Services, username: str, key_password: str, key_tokens: Iterable[str],
            lapsed: int = 0) -> None:
    """Revoke upstream keys with the caller's own key; wait at most ``REVOKE_WAIT``.

    Queued per user (``REVOKE_PER_USER`` at most waiting): keys beyond it, and ``lapsed`` more
    the caller left out already, are not revoked but lapse by their TTL, logged in one line."""
    def one(key_token: str) -> None:
        try:
            services.socialos.revoke_key(username, key_token, key_password)
        except UpstreamError as exc:
            log.warning("an ended device's upstream key was not revoked (%s); it expires by its TTL",
                        type(exc).__name__)
    try:
        futures, left_out = _revokers.submit(username, (partial(one, t) for t in key_tokens if t), lapsed)
    except RuntimeError:  # the server is stopping: the keys lapse by their TTL
        return
    if left_out + lapsed:
        log.warning("%d upstream keys of user=%s not revoked: at most %d wait per user at once; "
                    "they lapse by their TTL", left_out + lapsed, username, REVOKE_PER_USER)
    if futures:
        wait(futures, timeout=REVOKE_WAIT)


def sign_out(services: Services, signed_in: SignedIn) -> None:
    """Revoke this session's upstream key (best effort) and end the session."""
    credentials = signed_in.credentials
    if credentials is not None:
        _revoke(services, signed_in.username, credentials.password, [credentials.token])
    if services.engine.end(signed_in.token):
        record = signed_in.record
        _history(services, lambda history: history.record(
            signed_in.username, "signed_out", device=describe(record.user_agent), address=record.address))
    connections_end(services, signed_in.username)
    log.info("signed out user=%s", signed_in.username)


def end_devices(services: Services, signed_in: SignedIn, handle: str | None = None) -> int:
    """End one of the user's other devices (``handle``) or all of them; the count.

    Their upstream keys are revoked with this session's key, within a bounded
    wait: a slow upstream never holds the page.
    """
    count = lapsed = 0
    key_tokens: list[str] = []
    # In bounded steps, however many there are: each step's sessions are ended, then written to
    # the history; keys past what the revocation queue takes are only counted (they lapse by TTL).
    # A step failing (the database) leaves the steps before it done: those are still told of.
    try:
        for ended in services.engine.end_batches(signed_in.username, keep_id=signed_in.record.id, handle=handle):
            count += len(ended)
            keys = [key for _record, key in ended if key is not None]
            room = REVOKE_PER_USER - len(key_tokens)
            key_tokens += keys[:room]
            lapsed += len(keys[room:])
            lines = _ended_lines([record for record, _key in ended], "you" if handle else "others")
            _history_lines(services, lines)
    finally:
        if count:
            connections_end(services, signed_in.username)
            security_event("devices_signed_out", user=signed_in.username, count=count,
                           which="one" if handle else "all_others")
        credentials = signed_in.credentials
        if key_tokens and credentials is not None:
            _revoke(services, signed_in.username, credentials.password, key_tokens, lapsed=lapsed)
    return count


def end_user(services: Services, username: str, by: str = "") -> int:
    """An administrator ends every session of ``username``; the count.

    Their upstream keys can't be revoked from here (no key of theirs is at
    hand); they lapse by their TTL, and no session of ours uses them.
    """
    count = 0
    try:
        for ended in services.engine.end_batches(username):  # bounded steps, as ``end_devices``
            count += len(ended)
            lines = _ended_lines([record for record, _key in ended], "admin")
            _history_lines(services, lines)
    finally:
        if count:
            connections_end(services, username)
        security_event("user_signed_out_by_admin", user=username, admin=by, count=count)
    return count
