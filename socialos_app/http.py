"""The process-wide pooled HTTP session every upstream client rides on.

One ``requests.Session`` per process: its adapter keeps up to
``pool_size`` keep-alive connections per host, so calls from all server
threads share a few warm HTTPS connections instead of paying a TLS
handshake each. It holds no credentials (it serves every user at once):
clients pass auth per call.
"""

import http.cookiejar
import threading

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

__all__ = ["IDEMPOTENT", "pooled_session", "reset"]

# Retried on connection errors and 502/503/504: safe because repeating them
# changes nothing. POST and PATCH are never retried once sent.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "SEARCH"})

_lock = threading.Lock()
_session = None


def _retry():
    return Retry(
        total=2,
        connect=2,
        read=0,  # a read timeout is not retried: the page must answer within one timeout
        status=2,
        backoff_factor=0.1,
        status_forcelist=(502, 503, 504),
        allowed_methods=IDEMPOTENT,
        raise_on_status=False,  # the last 5xx answer reaches the client, which types it
        respect_retry_after_header=False,
    )


def pooled_session(pool_size=16, verify=True):
    """The shared session, made on first use with ``pool_size`` connections per host.

    ``verify`` is requests' TLS setting: True, or a CA bundle path (a private CA).
    """
    global _session
    if _session is None:
        with _lock:
            if _session is None:
                s = requests.Session()
                s.trust_env = False  # no proxy or netrc surprises: auth is always explicit
                s.verify = verify
                # Shared by every user: never keep a cookie one user's call received.
                s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
                adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size,
                                      max_retries=_retry(), pool_block=False)
                s.mount("http://", adapter)
                s.mount("https://", adapter)
                _session = s
    return _session


def reset():
    """Close the shared session (engine stop; benchmarks comparing fresh connections)."""
    global _session
    with _lock:
        if _session is not None:
            _session.close()
        _session = None
