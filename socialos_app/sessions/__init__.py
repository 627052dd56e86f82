"""Sessions: a storage interface (store), its MongoDB backend (mongo) and
the policy that ties them to cookies and crypto (engine)."""

from .engine import Credentials, SessionEngine
from .store import SessionRecord, SessionStore, StoreUnavailable

__all__ = ["Credentials", "SessionEngine", "SessionRecord", "SessionStore", "StoreUnavailable"]
