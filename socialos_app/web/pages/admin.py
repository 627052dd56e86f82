"""``/admin`` (users and session statistics), ``/admin/sessions`` (end a user's sessions)
and ``/admin/activity`` (a user's security history).

Administrators only, with a fresh session: the ``admin_only`` and
``fresh_session`` tools in the class's ``_cp_config`` guard every handler
under ``/admin``, those added later included.
"""

from typing import Any, ClassVar

import cherrypy

from socialos_app.accounts import signin as accounts
from socialos_app.upstream.errors import Unauthorized, UpstreamError, explain
from socialos_app.web.pages.activity import history_page
from socialos_app.web.pages.base import as_dict, device_row, notice_text, page_number, text, url, with_notice
from socialos_app.web.render import render
from socialos_app.web.services import Services
from socialos_app.web.toolbox import allow, expose
from socialos_app.web.tools import SignedIn

__all__ = ["ADMIN_PAGE_SIZE", "AdminPages"]

ADMIN_PAGE_SIZE = 20
STATS_LATE_SECONDS = 10  # older counts say when they were made


class AdminPages:
    """``/admin`` and ``/admin/sessions``: administrators only."""

    # Every admin page shows every user's email, every admin action ends sessions: a fresh session only.
    _cp_config: ClassVar[dict[str, Any]] = {"tools.admin_only.on": True, "tools.fresh_session.on": True}

    def __init__(self, services: Services) -> None:
        self.services = services

    @expose
    @allow("GET")
    def index(self, q: object = "", page: object = "1", per: object = "", notice: object = "", n: object = None,
              **_ignored: object) -> str:
        """Users (searched, a page at a time) and session statistics."""
        problem, users = "", []
        try:
            listed = as_dict(self.services.socialos.admin().get("user")).get("users")
            users = [u for u in listed if isinstance(u, dict)] if isinstance(listed, list) else []
        except UpstreamError as exc:
            problem = f"The list of users can't be shown: {explain(exc)}"
            if isinstance(exc, Unauthorized):
                problem += " Check SOCIALOS_ADMIN_USER and SOCIALOS_ADMIN_PASSWORD."
        query = text(q)
        if query:
            needle = query.casefold()
            users = [u for u in users if any(needle in str(u.get(k) or "").casefold()
                                             for k in ("username", "name", "email"))]
        size = min(max(page_number(per or ADMIN_PAGE_SIZE), 5), 100)
        pages = max(1, -(-len(users) // size))
        number = min(page_number(page), pages)
        shown = users[(number - 1) * size:number * size]
        keep: dict[str, object] = {"q": query, "per": size if per else ""}
        prev_url = url("/admin", **keep, page=number - 1) if number > 1 else ""
        next_url = url("/admin", **keep, page=number + 1) if number < pages else ""
        stats: Any = self.services.engine.stats()
        by_hour = {h: int(stats.get("by_hour", {}).get(h, 0)) for h in range(24)}
        counted_late = (stats.get("age") or 0) > STATS_LATE_SECONDS
        peak = max(by_hour.values()) or 1
        return render("admin.html", title="Admin", users=shown, total=len(users), query=query,
                      page=number, pages=pages, page_size=size, per=per and size,
                      prev_url=prev_url, next_url=next_url, stats=stats,
                      by_hour=by_hour, peak=peak, counted_late=counted_late,
                      problem=problem, notice=notice_text(notice, n),
                      admin_user=self.services.settings.admin_user)

    @expose
    @allow("GET", "POST")
    def sessions(self, username: object = "", **_ignored: object) -> str:
        """Confirm (GET), then end (POST, with the form's CSRF token) every session of one user."""
        request = cherrypy.serving.request
        admin: SignedIn = request.signed_in
        name = text(username, accounts.MAX_USERNAME)
        if not accounts.USERNAME.fullmatch(name):
            raise cherrypy.HTTPRedirect("/admin", 303)
        if request.method == "POST":
            ended = accounts.end_user(self.services, name, by=admin.username)
            raise cherrypy.HTTPRedirect(with_notice("/admin", "user-ended", ended, q=name), 303)
        sessions = [device_row(r, admin.record.id) for r in self.services.engine.devices(name)]
        return render("confirm_user.html", title="End sessions", username=name, sessions=sessions)

    @expose
    @allow("GET")
    def activity(self, username: object = "", page: object = "1", **_ignored: object) -> str:
        """One user's security history, a page at a time."""
        name = text(username, accounts.MAX_USERNAME)
        if not accounts.USERNAME.fullmatch(name):
            raise cherrypy.HTTPRedirect("/admin", 303)
        return history_page(self.services.activity, name, page, "/admin/activity", f"Activity of {name}",
                            username=name)
