"""The package's folders are its layers, read from its own imports (no process, under a second).

Lowest first; a module may import its own layer and the layers below it, never above:

    floor      settings.py, crypto.py, storage.py, resources.py, addresses.py
    upstream/  the HTTP clients (requests and the standard library only)
    db/        the MongoDB connection and documents
    ops/       logging, metrics, health
    sessions/  the engine, its cache and its store backends
    accounts/, presence/
    web/       the CherryPy application
    cli.py     the entry point

Beside the order: the clients import nothing of the package but each other and the
settings table; only
``upstream/transport.py`` speaks HTTP; the session engine knows its store through
the ``SessionStore`` interface alone (only ``sessions/backends/`` touch a database);
no page reaches a store; the production package imports nothing of ``socialos_dev``
but embedded mode, from the entry point, when it is there; and there is no import cycle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "socialos_app"

LAYERS = [
    {"settings", "crypto", "storage", "resources", "addresses"},
    {"upstream"},
    {"db"},
    {"ops"},
    {"sessions"},
    {"accounts", "presence"},
    {"web"},
    {"cli"},
]
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def modules():
    """``{dotted name under socialos_app: path}``."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name, path):
    """``{(module, imported name or None)}`` of the package (or ``socialos_dev``, prefixed ``!dev``)
    that ``name`` imports at any depth of its code."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                out.add((target, alias.name) if node.module else (f"{target}.{alias.name}".strip("."), None))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("socialos_app"):
            target = node.module.removeprefix("socialos_app").lstrip(".")
            for alias in node.names:
                sub = f"{target}.{alias.name}".strip(".")
                out.add((sub, None) if sub in modules_cache() else (target, alias.name))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("socialos_dev"):
            out.add(("!dev." + node.module, None))
        elif isinstance(node, ast.Import):
            out.update((a.name.removeprefix("socialos_app").lstrip("."), None) for a in node.names
                       if a.name.startswith("socialos_app"))
    return out


_CACHE = {}


def modules_cache():
    if not _CACHE:
        _CACHE.update(modules())
    return _CACHE


def room(module):
    return module.split(".")[0]


def test_every_module_lives_in_a_layer():
    assert {room(name) for name in modules() if name} <= set(RANK), "a new folder: give it a layer in LAYERS"


def test_no_module_imports_a_layer_above_its_own():
    reaching_up = sorted(f"{name} -> {target}" for name, path in modules().items() if name
                         for target, _ in imports(name, path)
                         if not target.startswith("!dev") and target and RANK[room(target)] > RANK[room(name)])
    assert not reaching_up, reaching_up


def test_the_clients_import_nothing_of_the_package_but_each_other():
    # and the settings table, for its defaults (it imports the standard library alone)
    outside = sorted(f"{name} -> {target}" for name, path in modules().items() if room(name) == "upstream"
                     for target, _ in imports(name, path) if room(target) not in ("upstream", "settings"))
    assert not outside, outside


def test_the_engine_knows_its_store_only_through_the_interface():
    for name, path in modules().items():
        if room(name) == "sessions" and not name.startswith("sessions.backends"):
            taken = {t for t, _ in imports(name, path)}
            assert not {t for t in taken if room(t) == "db"}, (name, taken)
            if name != "sessions":  # the package's face may name the backends' factory
                assert not {t for t in taken if t.startswith("sessions.backends")}, (name, taken)


def test_no_page_imports_a_store():
    for name, path in modules().items():
        if name.startswith("web.pages"):
            taken = imports(name, path)
            assert not {t for t, _ in taken if room(t) == "db" or t.startswith("sessions.backends")}, (name, taken)
            assert ".store" not in path.read_text(), f"{name} reaches past the engine into its store"


def test_only_the_entry_point_names_the_dev_package():
    naming = sorted(name for name, path in modules().items()
                    if any(t.startswith("!dev") for t, _ in imports(name, path)))
    assert naming == ["cli"], naming


def test_one_module_sends_http_to_the_upstreams():
    senders = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] in ("requests", "urllib3") or n in ("urllib.request", "http.client")
                   for n in names):
                senders.add(name)
    assert senders == {"upstream.transport"}, senders


def test_the_imports_have_no_cycle():
    found = modules()
    graph = {name: {t if t in found else ".".join(t.split(".")[:-1]) for t, _ in imports(name, path)} & set(found)
             for name, path in found.items()}
    # A package's face (sessions/__init__) hands names on: the modules behind it are what import.
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph[node] - {node}:
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_the_import_reader_sees_the_real_edges():
    """The checks above are only as good as the reader: it must see these known imports."""
    found = modules()
    seen = {name: {t for t, _ in imports(name, path)} for name, path in found.items()}
    assert {"web.pages.signin", "web.pages.presence", "ops.health", "sessions"} <= seen["web.app"]
    assert {"crypto", "sessions.cache", "sessions.store"} <= seen["sessions.engine"]
    assert "upstream.errors" in seen["upstream.transport"] and "upstream.transport" in seen["upstream.socialos"]
    assert any(t.startswith("!dev") for t in seen["cli"])


@pytest.mark.parametrize("layer", sorted(RANK))
def test_each_layer_is_a_folder_or_a_module(layer):
    assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file(), layer
