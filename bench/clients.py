"""Pooled vs fresh HTTPS connections, through the project's own clients.

Pooled: ``socialos_app.upstream.transport.Transport(pool_size, verify=CA)``, the
transport the app builds once and shares, so every call after the first rides a
warm keep-alive TLS connection. Fresh: the same client class with a new
``requests.Session`` per call (a TCP connect and a TLS handshake each time),
which is what code without the pool would do. The sandbox's own count of
accepted connections confirms which is which.
"""

import statistics
import time

import requests

from socialos_app.upstream.pusher import Pusher
from socialos_app.upstream.socialos import SocialOS
from socialos_app.upstream.transport import Transport

from .procs import PUSHER_APP

__all__ = ["compare_api", "compare_pusher"]


def _fresh_session(ca_path):
    s = requests.Session()
    s.trust_env = False
    s.verify = ca_path
    return s


def _rate(call, seconds):
    """(calls per second, calls made) of ``call()`` one after another for ``seconds``."""
    call()  # not timed: the first call of a pooled client opens its connection
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        call()
        n += 1
    return n / (time.perf_counter() - t0), n + 1


def _compare(pooled_call, fresh_call, seconds, rounds, stats):
    pooled, fresh = [], []
    conns = {"pooled": 0, "fresh": 0, "pooled_calls": 0, "fresh_calls": 0}
    for r in range(rounds):
        pair = [("pooled", pooled_call, pooled), ("fresh", fresh_call, fresh)]
        for kind, call, rates in pair if r % 2 == 0 else pair[::-1]:  # neither always goes first
            before = stats()
            rate, calls = _rate(call, seconds)
            conns[kind] += stats() - before - 1  # less the stats call's own connection
            conns[f"{kind}_calls"] += calls
            rates.append(rate)
    # Each round's pooled ÷ fresh, then the median: a pair shares the machine's mood of the moment.
    return {"pooled_per_s": statistics.median(pooled), "fresh_per_s": statistics.median(fresh),
            "ratio": statistics.median(p / f for p, f in zip(pooled, fresh)),
            "pooled_runs": pooled, "fresh_runs": fresh, "connections": conns}


def compare_api(tls, seconds=2.5, rounds=3):
    """``GET /api/user/demo`` as demo with an API key, pooled vs fresh."""
    transport = Transport(4, verify=tls.ca_path)
    api, admin = f"{tls.api_base}/api", f"{tls.api_base}/admin"
    pooled = SocialOS(api, admin, "admin", "admin", transport=transport)
    key = pooled.create_key("demo", "demo", ttl=3600)
    client = pooled.user("demo", key["password"])

    def pooled_call():
        assert client.get("user", "demo")["username"] == "demo"

    def fresh_call():
        with _fresh_session(tls.ca_path) as s:
            c = SocialOS(api, admin, "admin", "admin",
                         transport=Transport(session=s)).user("demo", key["password"])
            assert c.get("user", "demo")["username"] == "demo"

    try:
        return _compare(pooled_call, fresh_call, seconds, rounds,
                        lambda: _stats(transport.session, tls.api_base))
    finally:
        transport.close()


def compare_pusher(tls, seconds=2.5, rounds=3):
    """``GET /apps/demo/channels/presence-lobby`` (signed), pooled vs fresh."""
    transport = Transport(4, verify=tls.ca_path)
    app = (PUSHER_APP["PUSHER_APP_ID"], PUSHER_APP["PUSHER_KEY"], PUSHER_APP["PUSHER_SECRET"])
    pooled = Pusher(*app, tls.pusher_base, transport=transport)

    def pooled_call():
        assert "occupied" in pooled.channel_info("presence-lobby")

    def fresh_call():
        with _fresh_session(tls.ca_path) as s:
            fresh = Pusher(*app, tls.pusher_base, transport=Transport(session=s))
            assert "occupied" in fresh.channel_info("presence-lobby")

    try:
        return _compare(pooled_call, fresh_call, seconds, rounds,
                        lambda: _stats(transport.session, tls.pusher_base))
    finally:
        transport.close()


def _stats(session, base):
    """Connections the sandbox has accepted so far (asked on a connection of its own)."""
    with _fresh_session(session.verify) as s:
        return s.get(f"{base}/_sandbox/stats", timeout=5).json()["connections"]
