"""Jinja2 rendering: one environment, autoescape on, templates under ``templates/``.

Also the few words-and-times helpers every page shares: plurals ("1 user",
"2 users") and times as ``<time datetime>`` in UTC, which ``static/app.js``
re-labels in the viewer's own zone when scripts run.
"""

from datetime import UTC, datetime
from typing import Any

import cherrypy
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from socialos_app import resources

__all__ = ["TEMPLATES", "ago", "plural", "render", "when"]

TEMPLATES = resources.root() / "templates"  # the checkout's, or the copy inside the installed wheel

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    # Default (lenient) undefined: upstream objects may lack a field, and a page
    # must render what it has rather than fail.
    trim_blocks=True,
    lstrip_blocks=True,
)


def plural(count: object, word: str, many: str | None = None) -> str:
    """``plural(1, "user")`` is "1 user"; ``plural(2, "user")`` is "2 users"."""
    try:
        number = int(count) if isinstance(count, (int, float, str)) else 0
    except ValueError:
        number = 0
    return f"{number} {word if number == 1 else (many or word + 's')}"


def _utc(value: object) -> datetime | None:
    """A naive datetime (MongoDB's UTC) as an aware one; None for anything else."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(value: object) -> Markup | str:
    """``<time datetime="…Z">2024-05-01 13:45 UTC</time>``; app.js shows it in local time."""
    moment = _utc(value)
    if moment is None:
        return ""
    iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{}" data-local>{}</time>').format(
        iso, moment.strftime("%Y-%m-%d %H:%M UTC"))


def ago(value: object, now: datetime | None = None) -> Markup | str:
    """"just now", "5 minutes ago", "2 hours ago", "3 days ago" inside a ``<time>``."""
    moment = _utc(value)
    if moment is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    if seconds < 60:
        text = "just now"
    elif seconds < 3600:
        text = plural(seconds // 60, "minute") + " ago"
    elif seconds < 86400:
        text = plural(seconds // 3600, "hour") + " ago"
    else:
        text = plural(seconds // 86400, "day") + " ago"
    return Markup('<time datetime="{}">{}</time>').format(moment.strftime("%Y-%m-%dT%H:%M:%SZ"), escape(text))


_env.globals.update(plural=plural)
_env.filters.update(when=when, ago=ago)


def render(name: str, **context: Any) -> str:
    """Render a template with the request's signed-in user, CSRF token and path in scope."""
    request = cherrypy.serving.request
    context.setdefault("user", getattr(request, "signed_in", None))
    context.setdefault("csrf_token", getattr(request, "csrf_token", ""))
    context.setdefault("title", "")
    context.setdefault("path", request.path_info or "/")
    context.setdefault("security_notice", getattr(request, "security_notice", None))  # web.security
    return _env.get_template(name).render(**context)
