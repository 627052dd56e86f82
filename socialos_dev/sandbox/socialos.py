"""The Social OS API sandbox: the slice of the upstream API the app uses.

    POST   /api/key          form ttl; Basic user:password  -> {"token", "password", "expires"}
    DELETE /api/key/{token}  Basic user:key-password        -> {"deleted": true}
                             (any live key of the key's owner may revoke it, as
                             "sign out my other devices" needs)
    GET    /api/user/{name}  Basic user:key-password        -> the profile
    SEARCH /api/user?q=TEXT  Basic user:key-password        -> {"results": [...]}
    GET    /admin/user       Basic admin:password           -> {"users": [...]}

A known resource with a verb it does not support answers 501, an unknown
path 404; every answer is JSON, errors as ``{"error": "..."}``. Only API
keys work on ``/api`` (except to create a key); only real passwords work
on ``/admin``.

Sandbox-only routes, for tests:

    POST /_sandbox/expire-keys  {"username": "demo"}  expire all that user's keys now
    GET  /_sandbox/keys         {"active": N}         live (not revoked, not expired) keys
                                                      (?username=NAME: that user's alone)

Users: demo/demo, admin/admin (an admin), alice, bob, carol, dave, ada,
grace, linus (the password is the username). A key's TTL is idle time:
each use extends it, as the app's sessions do.
"""

import hmac
import json
import secrets
import threading
import time
from datetime import UTC, datetime
from urllib.parse import unquote

from socialos_dev.sandbox.base import JSONHandler, SandboxServer

__all__ = ["USERS", "KeyStore", "SocialOSHandler", "make_server"]

DEFAULT_TTL, MIN_TTL, MAX_TTL = 3600, 60, 86400

USERS = {
    "demo": {"password": "demo", "admin": False, "name": "Demo User", "joined": "2021-03-14",
             "bio": "Just trying things out.", "followers": 42, "following": 17, "posts": 8},
    "admin": {"password": "admin", "admin": True, "name": "Ada Admin", "joined": "2019-01-01",
              "bio": "Keeps the lights on.", "followers": 3, "following": 0, "posts": 1},
    "alice": {"password": "alice", "admin": False, "name": "Alice Liddell", "joined": "2020-05-04",
              "bio": "Curiouser and curiouser.", "followers": 128, "following": 64, "posts": 31},
    "bob": {"password": "bob", "admin": False, "name": "Bob Builder", "joined": "2020-07-21",
            "bio": "Can we fix it?", "followers": 77, "following": 12, "posts": 19},
    "carol": {"password": "carol", "admin": False, "name": "Carol Danvers", "joined": "2021-11-30",
              "bio": "Higher, further, faster.", "followers": 256, "following": 8, "posts": 44},
    "dave": {"password": "dave", "admin": False, "name": "Dave Bowman", "joined": "2022-02-02",
             "bio": "Open the pod bay doors.", "followers": 9, "following": 101, "posts": 2},
    # The Pusher sandbox's demo members, so /presence can show their names.
    "ada": {"password": "ada", "admin": False, "name": "Ada Lovelace", "joined": "2018-12-10",
            "bio": "Notes on the analytical engine.", "followers": 1815, "following": 1, "posts": 7},
    "grace": {"password": "grace", "admin": False, "name": "Grace Hopper", "joined": "2019-12-09",
              "bio": "It's easier to ask forgiveness.", "followers": 1906, "following": 2, "posts": 12},
    "linus": {"password": "linus", "admin": False, "name": "Linus Torvalds", "joined": "2020-12-28",
              "bio": "Talk is cheap.", "followers": 1969, "following": 0, "posts": 91},
}


def profile(username, with_admin=False):
    """The public profile of a known user."""
    user = USERS[username]
    out = {"username": username, "name": user["name"], "email": f"{username}@example.com",
           "joined": user["joined"], "bio": user["bio"], "followers": user["followers"],
           "following": user["following"], "posts": user["posts"]}
    if with_admin:
        out["admin"] = user["admin"]
    return out


def _same(a, b):
    """Constant-time string comparison (the sandbox models a real server's habits)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def check_password(username, password):
    """True when these are a known user's real credentials."""
    user = USERS.get(username or "")
    return bool(user and password is not None and _same(user["password"], password))


class KeyStore:
    """The API keys handed out: token -> owner, key password, expiry. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._keys = {}

    def create(self, username, ttl):
        now = time.time()
        key = {"username": username, "password": secrets.token_urlsafe(24),
               "ttl": ttl, "expires": now + ttl, "deleted": False}
        token = secrets.token_urlsafe(24)
        with self._lock:
            # Drop dead keys so a long benchmark does not grow the table forever.
            for dead in [t for t, k in self._keys.items() if k["deleted"] or k["expires"] <= now]:
                del self._keys[dead]
            self._keys[token] = key
        return token, key

    def _live(self, key, now):
        return not key["deleted"] and key["expires"] > now

    def authenticate(self, username, password):
        """True when ``password`` is a live key of ``username``."""
        if not username or password is None:
            return False
        now = time.time()
        with self._lock:
            keys = [k for k in self._keys.values() if k["username"] == username and self._live(k, now)]
        # Compare against every candidate so timing says nothing about which matched.
        matched = [k for k in keys if _same(k["password"], password)]
        with self._lock:
            for key in matched:  # the TTL is idle time: each use extends the key
                key["expires"] = max(key["expires"], now + key["ttl"])
        return bool(matched)

    def revoke(self, token, username, password):
        """Delete the key ``token`` when ``username`` owns it and ``password``
        is one of that user's live keys: the owner's authority, whichever key shows it."""
        if not self.authenticate(username, password):
            return False
        with self._lock:
            key = self._keys.get(token)
            if key is None or key["deleted"] or key["username"] != username:
                return False
            key["deleted"] = True
            return True

    def expire_user(self, username):
        now = time.time()
        with self._lock:
            keys = [k for k in self._keys.values() if k["username"] == username and self._live(k, now)]
            for key in keys:
                key["expires"] = now
        return len(keys)

    def active(self, username=None):
        now = time.time()
        with self._lock:
            return sum(1 for k in self._keys.values()
                       if self._live(k, now) and (username is None or k["username"] == username))


class SocialOSHandler(JSONHandler):
    """Routes of the Social OS sandbox; the key table lives on ``self.server.keys``."""

    server_version = "SocialOSSandbox/1.0"

    # -- answers -----------------------------------------------------------
    def unauthorized(self, realm="Social OS API"):
        self.send_json(401, {"error": "invalid credentials"},
                       {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'})

    def not_implemented(self):
        self.send_json(501, {"error": "not implemented"})

    def not_found(self, what="not found"):
        self.send_json(404, {"error": what})

    # -- dispatch ------------------------------------------------------------
    def route(self, method):
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True  # the unread body would corrupt the next request
            return self.send_json(413, {"error": "body too large"})
        # Split first, then unquote each segment: "user%2Fdemo" is one segment, not two.
        parts = [unquote(p) for p in self.url.path.split("/")[1:]]
        match parts:
            case ["api", "key"]:
                if method != "POST":
                    return self.not_implemented()
                return self.create_key(body)
            case ["api", "key", token]:
                if method != "DELETE":
                    return self.not_implemented()
                return self.revoke_key(token)
            case ["api", "user"]:
                if method != "SEARCH":
                    return self.not_implemented()
                return self.search_users()
            case ["api", "user", username]:
                if method not in ("GET", "HEAD"):
                    return self.not_implemented()
                return self.get_user(username)
            case ["admin", "user"]:
                if method not in ("GET", "HEAD"):
                    return self.not_implemented()
                return self.list_users()
            case ["_sandbox", "expire-keys"] if method == "POST":
                return self.expire_keys(body)
            case ["_sandbox", "keys"] if method == "GET":
                return self.send_json(200, {"active": self.server.keys.active(self.query.get("username"))})
        return self.not_found()

    # -- /api ------------------------------------------------------------------
    def key_user(self):
        """The username when the request carries a live API key, else None."""
        username, password = self.basic_auth()
        return username if self.server.keys.authenticate(username, password) else None

    def create_key(self, body):
        username, password = self.basic_auth()
        if not check_password(username, password):
            return self.unauthorized()
        text = self.form(body).get("ttl", "").strip()
        try:
            ttl = int(text) if text else DEFAULT_TTL
        except ValueError:
            return self.send_json(400, {"error": "ttl must be a whole number of seconds"})
        ttl = max(MIN_TTL, min(MAX_TTL, ttl))
        token, key = self.server.keys.create(username, ttl)
        expires = datetime.fromtimestamp(key["expires"], UTC).isoformat(timespec="seconds")
        self.send_json(200, {"token": token, "password": key["password"], "expires": expires})

    def revoke_key(self, token):
        username, password = self.basic_auth()
        if not self.server.keys.revoke(token, username, password):
            return self.unauthorized()
        self.send_json(200, {"deleted": True})

    def get_user(self, username):
        if not self.key_user():
            return self.unauthorized()
        if username not in USERS:
            return self.not_found("no such user")
        self.send_json(200, profile(username))

    def search_users(self):
        if not self.key_user():
            return self.unauthorized()
        q = self.query.get("q", "").casefold()
        results = [profile(name) for name, user in USERS.items()
                   if q in name.casefold() or q in user["name"].casefold()]
        self.send_json(200, {"results": results})

    # -- /admin ----------------------------------------------------------------
    def list_users(self):
        username, password = self.basic_auth()
        if not check_password(username, password):
            return self.unauthorized("Social OS admin API")
        if not USERS[username]["admin"]:
            return self.send_json(403, {"error": "admin only"})
        self.send_json(200, {"users": [profile(name, with_admin=True) for name in USERS]})

    # -- sandbox-only ------------------------------------------------------------
    def expire_keys(self, body):
        try:
            username = json.loads(body or b"{}").get("username")
        except (ValueError, AttributeError):
            username = None
        if not isinstance(username, str):
            return self.send_json(400, {"error": 'send {"username": "..."}'})
        self.send_json(200, {"expired": self.server.keys.expire_user(username)})


def make_server(host, port):
    """The Social OS sandbox bound to host:port, not yet serving.

    Run ``serve_forever()`` in a thread; ``shutdown()`` then ``server_close()`` to stop.
    """
    server = SandboxServer((host, port), SocialOSHandler)
    server.keys = KeyStore()
    return server
