"""The app's CherryPy tools in one table, registered by one call, and the walk over the page tree.

``register()`` (called by ``web.app.mount``) puts every tool of ``TOOLS`` on
``cherrypy.tools``; the table says where each runs and in which order, so
the order of the checks on a request is read in one place. Pages switch
tools on and off beside their handlers, as CherryPy does: ``_cp_config``
on a class, ``config({...})`` on a handler.

``routes(root, config)`` walks a page tree as CherryPy's dispatcher would
and yields every handler with the tool settings it runs under; the sign-in
page's ``next=`` and the tests read the tree through it, never a list.

``expose``, ``allow`` and ``config`` are CherryPy's own decorators with
types (CherryPy ships none), so handlers stay checked by mypy.
"""

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple, TypeVar, cast

import cherrypy

from socialos_app.ops import logs, metrics
from socialos_app.web import security, tools

__all__ = ["TOOLS", "Route", "ToolSpec", "allow", "config", "expose", "register", "routes"]

F = TypeVar("F", bound=Callable[..., Any])


class ToolSpec(NamedTuple):
    """One row of the table: ``tools.<name>`` runs ``function`` at ``hook`` with ``priority`` (lower first)."""

    name: str
    hook: str
    function: Callable[..., Any]
    priority: int


# Every tool of the app, in the order it runs within each hook.
TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("request_id", "on_start_resource", logs.assign_request_id, 1),  # and the start time
    # request_metrics (on_start_resource 10, on_end_request 50) is a two-hook tool of its own: see TWO_HOOK.
    ToolSpec("head_as_get", "before_handler", tools.head_as_get, 20),
    ToolSpec("socialos_session", "before_handler", tools.resolve_session, 40),
    # After the session tool, so a signed-in 404 page still offers the way back to the dashboard.
    ToolSpec("known_paths", "before_handler", tools.known_paths, 45),
    ToolSpec("csrf", "before_handler", tools.check_csrf, 60),
    # After CSRF, so the 403 page still carries the token its sign-out button needs.
    ToolSpec("admin_only", "before_handler", tools.admin_only, 65),
    # After the admin guard (a non-admin gets 403, not a password form); before the handler runs.
    ToolSpec("fresh_session", "before_handler", security.fresh_session, 67),
    ToolSpec("security_notice", "before_handler", security.security_notice, 68),
    ToolSpec("upstream_errors", "before_handler", tools.translate_errors, 70),
    ToolSpec("secure_headers", "before_finalize", tools.secure_headers, 60),
    ToolSpec("request_log", "on_end_request", logs.log_request, 50),
)
# Tools that attach more than one hook build themselves (their priorities are in their own _setup).
TWO_HOOK: Mapping[str, Callable[[], Any]] = {"request_metrics": metrics.RequestMetricsTool}


def register(toolbox: Any = None) -> None:
    """Put every tool of the table on ``toolbox`` (``cherrypy.tools``); calling it again changes nothing."""
    box = cherrypy.tools if toolbox is None else toolbox
    for spec in TOOLS:
        setattr(box, spec.name, cherrypy.Tool(spec.hook, spec.function, name=spec.name, priority=spec.priority))
    for name, make in TWO_HOOK.items():
        setattr(box, name, make())


# -- typed decorators ----------------------------------------------------------------------
def expose(handler: F) -> F:
    """``cherrypy.expose``: the handler answers at its attribute's name (``index`` at its object's)."""
    return cast(F, cherrypy.expose(handler))


def allow(*methods: str) -> Callable[[F], F]:
    """``tools.allow``: any other method is a 405 (GET allows HEAD)."""
    return cast(Callable[[F], F], cherrypy.tools.allow(methods=list(methods)))


def config(settings: Mapping[str, Any]) -> Callable[[F], F]:
    """``cherrypy.config`` as a decorator: ``settings`` go into the handler's ``_cp_config``."""
    return cast(Callable[[F], F], cherrypy.config(**settings))


# -- the tree ------------------------------------------------------------------------------
MAX_DEPTH = 8  # the app's tree is three deep; a cycle or a runaway object stops here


@dataclass(frozen=True)
class Route:
    """A handler of the tree: its path and the settings it runs under (tree and app config merged)."""

    path: str
    handler: Callable[..., Any]
    settings: Mapping[str, Any]

    def on(self, tool: str) -> bool:
        """Whether ``tools.<tool>`` runs for this handler."""
        return bool(self.settings.get(f"tools.{tool}.on", False))

    @cached_property
    def answers_get(self) -> bool:
        """GET is one of its methods (a handler without ``tools.allow`` takes any)."""
        return not self.on("allow") or "GET" in self.settings.get("tools.allow.methods", ("GET",))

    @cached_property
    def signed_in_page(self) -> bool:
        """A page for people signed in that a browser can GET: where a sign-in may return to."""
        return (self.answers_get and self.on("socialos_session")
                and bool(self.settings.get("tools.socialos_session.required", True)))


def routes(root: object, app_config: Mapping[str, Mapping[str, Any]]) -> Iterator[Route]:
    """Every exposed handler under ``root``, with its settings merged as CherryPy's dispatcher merges them.

    For each object on the way: its ``_cp_config``, then ``app_config``'s
    section for its path; the handler's own ``_cp_config`` last.
    """
    settings = {**getattr(root, "_cp_config", {}), **app_config.get("/", {})}
    yield from _walk(root, "", settings, app_config, set(), 0)


def _walk(node: object, path: str, settings: Mapping[str, Any], app_config: Mapping[str, Mapping[str, Any]],
          seen: set[int], depth: int) -> Iterator[Route]:
    if id(node) in seen or depth > MAX_DEPTH:
        return
    seen.add(id(node))
    if callable(node) and getattr(node, "exposed", False):  # an object that is its own handler (/metrics)
        yield Route(path or "/", node, settings)
    for name in sorted(dir(node)):
        static = inspect.getattr_static(node, name, None)
        if name.startswith("_") or isinstance(static, (property, cached_property)):
            continue  # reading a property could do work; CherryPy never routes to one anyway
        child = getattr(node, name, None)
        if child is None or inspect.isclass(child):
            continue
        here = path if name == "index" else f"{path}/{name}"
        merged = {**settings, **getattr(child, "_cp_config", {}), **app_config.get(here or "/", {})}
        if inspect.ismethod(child) or inspect.isfunction(child):
            if getattr(child, "exposed", False):
                yield Route(here or "/", child, merged)
        elif _has_pages(child):
            yield from _walk(child, here, merged, app_config, seen, depth + 1)


def _has_pages(obj: object) -> bool:
    """An object the dispatcher would find handlers in: exposed itself, or with exposed methods."""
    return bool(getattr(obj, "exposed", False)) or any(
        getattr(value, "exposed", False) for klass in type(obj).__mro__ for value in vars(klass).values())
