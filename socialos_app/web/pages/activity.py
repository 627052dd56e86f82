"""``/activity``: the signed-in user's security history, newest first, a page at a time.

The lines come from ``accounts.activity`` in words; ``/admin/activity``
(``web.pages.admin``) shows the same for any user, to administrators.
"""

import cherrypy

from socialos_app.accounts.activity import PAGE_SIZE, Activity
from socialos_app.web.pages.base import page_number, url
from socialos_app.web.render import render
from socialos_app.web.services import Services
from socialos_app.web.toolbox import allow, expose
from socialos_app.web.tools import SignedIn

__all__ = ["ActivityPage", "history_page"]


def history_page(activity: Activity, subject: str, page: object, base: str, title: str, **keep: object) -> str:
    """One page of ``subject``'s history rendered, with links to the newer and older pages
    (``base`` with ``keep`` and the page number)."""
    number = page_number(page)
    events, more = activity.page(subject, number, PAGE_SIZE)
    newer = url(base, **keep, page=number - 1 if number > 2 else None) if number > 1 else ""
    older = url(base, **keep, page=number + 1) if more else ""
    return render("activity.html", title=title, subject=subject, events=events, page=number,
                  newer_url=newer, older_url=older)


class ActivityPage:
    """``GET /activity``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @expose
    @allow("GET")
    def index(self, page: object = "1", **_ignored: object) -> str:
        user: SignedIn = cherrypy.serving.request.signed_in
        return history_page(self.services.activity, user.username, page, "/activity", "Security activity")
