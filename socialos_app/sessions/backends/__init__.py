"""Session store backends: ``SESSION_STORE`` picks one by name from ``BACKENDS``.

A new backend is a module here with a ``SessionStore`` subclass (its
``from_settings`` makes it) and one line in ``BACKENDS``; nothing else in the
app names a backend. ``mongodb`` is shared by every instance and durable;
``memory`` holds sessions in one process and loses them with it (the sign-in
throttle and the presence directory still use MongoDB either way).
"""

from socialos_app.sessions.backends.memory import MemorySessionStore
from socialos_app.sessions.backends.mongo import MongoSessionStore
from socialos_app.sessions.store import SessionStore
from socialos_app.settings import Settings

__all__ = ["BACKENDS", "get_store"]

BACKENDS: dict[str, type[SessionStore]] = {
    "mongodb": MongoSessionStore,
    "memory": MemorySessionStore,
}


def get_store(settings: Settings) -> SessionStore:
    """The session store ``settings.session_store`` names (no I/O: the connection is lazy)."""
    try:
        backend = BACKENDS[settings.session_store]
    except KeyError:
        raise ValueError(f"SESSION_STORE must be one of {', '.join(sorted(BACKENDS))}, "
                         f"not {settings.session_store!r}") from None
    return backend.from_settings(settings)
