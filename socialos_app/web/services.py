"""``Services``: everything the pages use, made once per process by ``web.app.build_services``.

Its own module so that the pages can name its type without importing the
assembly that imports them.
"""

from dataclasses import dataclass

from socialos_app.accounts.activity import Activity
from socialos_app.accounts.throttle import LoginThrottle
from socialos_app.crypto import Keyring
from socialos_app.presence.connections import LiveConnections
from socialos_app.presence.members import MemberDirectory
from socialos_app.sessions import SessionEngine
from socialos_app.settings import Settings
from socialos_app.upstream.pusher import Pusher
from socialos_app.upstream.socialos import SocialOS

__all__ = ["Services"]


@dataclass
class Services:
    """Everything the pages use, made once per process."""

    settings: Settings
    keyring: Keyring
    engine: SessionEngine
    socialos: SocialOS
    throttle: LoginThrottle
    members: MemberDirectory      # who is known in presence channels
    activity: Activity            # each user's security history
    pusher: Pusher | None = None  # None when Pusher is not configured
    live: LiveConnections | None = None  # ends users' live connections with their sessions (with Pusher)

    @property
    def cookie_name(self) -> str:
        """The session cookie's name."""
        return self.settings.cookie_name

    @property
    def presession_cookie_name(self) -> str:
        """The sign-in form's pre-session cookie, which its CSRF token is bound to."""
        return "__Host-csrf" if self.settings.cookie_secure else "csrf"
