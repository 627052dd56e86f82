"""Sessions: a storage interface (store) with its MongoDB (mongo) and
in-memory (memory) backends, the per-instance cache (cache), and the policy
that ties them to cookies and crypto (engine)."""

from socialos_app.sessions.engine import Credentials, SessionEngine
from socialos_app.sessions.store import RecordExists, SessionRecord, SessionStore

__all__ = ["Credentials", "RecordExists", "SessionEngine", "SessionRecord", "SessionStore"]
