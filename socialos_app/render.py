"""Jinja2 rendering: one environment, autoescape on, templates under ``templates/``."""

from pathlib import Path

import cherrypy
from jinja2 import Environment, FileSystemLoader, select_autoescape

__all__ = ["render", "TEMPLATES"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    # Default (lenient) undefined: upstream objects may lack a field, and a page
    # must render what it has rather than fail.
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name, **context):
    """Render a template with the request's signed-in user and CSRF token in scope."""
    request = cherrypy.serving.request
    context.setdefault("user", getattr(request, "signed_in", None))
    context.setdefault("csrf_token", getattr(request, "csrf_token", ""))
    context.setdefault("title", "")
    return _env.get_template(name).render(**context)
