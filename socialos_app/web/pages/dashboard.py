"""The signed-in user's own pages: ``/dashboard`` (profile, search, devices, recent security
activity) and ``/devices`` (sign out one other device, or all of them)."""

import re
from typing import Any

import cherrypy

from socialos_app.accounts import signin as accounts
from socialos_app.web.pages.base import as_dict, device_row, notice_text, text, with_notice
from socialos_app.web.render import render
from socialos_app.web.services import Services
from socialos_app.web.toolbox import allow, config, expose
from socialos_app.web.tools import SignedIn

__all__ = ["DashboardPages"]

_HANDLE_RE = re.compile(r"[0-9a-f]{12}")
RECENT_EVENTS = 10  # lines of the security history on the dashboard (the rest on /activity)


class DashboardPages:
    """``/dashboard`` and ``/devices``, mixed into the tree's top object."""

    services: Services

    def _devices(self, user: SignedIn) -> list[dict[str, Any]]:
        rows = [device_row(r, user.record.id) for r in self.services.engine.devices(user.username)]
        rows.sort(key=lambda d: not d["current"])  # this device first, then newest
        return rows

    @expose
    @allow("GET")
    def dashboard(self, q: object = None, notice: object = "", n: object = None, **_ignored: object) -> str:
        user: SignedIn = cherrypy.serving.request.signed_in
        profile = as_dict(user.api.get("user", user.username))
        query = text(q)
        results = None
        if query:
            found = as_dict(user.api.search("user", params={"q": query})).get("results")
            results = [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []
        devices = self._devices(user)
        history = self.services.activity.recent(user.username, RECENT_EVENTS)
        return render("dashboard.html", title="Dashboard", profile=profile, query=query,
                      results=results, devices=devices, notice=notice_text(notice, n), history=history)

    @expose
    @allow("GET", "POST")
    # Ending other sessions takes a fresh session: a borrowed cookie can't sign the owner out elsewhere.
    @config({"tools.fresh_session.on": True})
    def devices(self, handle: object = "", everywhere: object = "", **_ignored: object) -> str:
        """Sign out one of my other devices, or all of them.

        GET asks (a page with a POST form, so it works without scripts);
        POST, with the form's CSRF token, does it. Both need a fresh session
        (``web.security``): a stale one confirms first, then comes back to the GET page.
        """
        request = cherrypy.serving.request
        user: SignedIn = request.signed_in
        chosen = handle if isinstance(handle, str) and _HANDLE_RE.fullmatch(handle) else ""
        all_others = bool(everywhere) and not chosen
        if request.method == "POST":
            if all_others:
                ended = accounts.end_devices(self.services, user)
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "others-ended", ended), 303)
            if chosen:
                ended = accounts.end_devices(self.services, user, handle=chosen)
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "device-ended", ended), 303)
            raise cherrypy.HTTPRedirect("/dashboard#devices", 303)
        others = [d for d in self._devices(user) if not d["current"]]
        if chosen:
            targets = [d for d in others if d["handle"] == chosen]
            if not targets:
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "device-ended", 0), 303)
        elif all_others:
            targets = others
            if not targets:
                raise cherrypy.HTTPRedirect(with_notice("/dashboard", "others-ended", 0), 303)
        else:
            raise cherrypy.HTTPRedirect("/dashboard#devices", 303)
        return render("confirm_devices.html", title="Sign out devices", targets=targets,
                      handle=chosen, everywhere=all_others)
