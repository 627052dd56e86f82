"""The shape of the package, read from its own imports (no process, under a second).

Data flows one way: request -> tool -> session engine -> store -> crypto;
handler -> accounts / clients -> the one transport. So nothing low imports
anything high, no page reaches a store, only ``http.py`` speaks HTTP to the
upstreams (the sandboxes are test doubles with their own), and the
package's imports have no cycle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "socialos_app"

# The web layer: what assembles and serves pages. Nothing below may import it.
WEB = {"web", "cli", "pages", "presence", "health", "tools", "accounts", "errorpages", "request", "embedded"}
LOW = {"sessions", "crypto", "db", "http", "client", "pusher", "errors", "settings", "logs", "metrics",
       "throttle", "directory", "devices", "render", "resources", "assets"}
PAGES = {"pages", "presence", "health"}
STORES = {"sessions.store", "sessions.mongo", "sessions.memory", "throttle", "directory"}


def modules():
    """``{dotted name: path}`` of the package's modules, the sandboxes left out."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] == "sandbox":
            continue
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name, path):
    """``{(module, imported name or None)}`` of the package that ``name`` imports at any depth of its code."""
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
            out.update((target, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update((a.name.removeprefix("socialos_app").lstrip("."), None) for a in node.names
                       if a.name.startswith("socialos_app"))
    return out


def top(module):
    return module.split(".")[0]


def test_nothing_low_imports_the_web_layer():
    found = modules()
    reaching_up = sorted(f"{name} -> {target}" for name, path in found.items() if top(name) in LOW
                         for target, _ in imports(name, path) if top(target) in WEB)
    assert not reaching_up, reaching_up
    assert {top(name) for name in found} <= WEB | LOW | {""}, "a new module: file it under WEB or LOW above"


def test_no_page_imports_a_store_or_reaches_into_the_engine():
    for name in PAGES:
        path = PACKAGE / f"{name}.py"
        taken = imports(name, path)
        assert not {t for t, _ in taken if t in STORES}, (name, taken)
        assert {n for t, n in taken if t == "db"} <= {"StoreUnavailable"}, (name, taken)
        assert ".store" not in path.read_text(), f"{name} reaches past the engine into its store"


def test_one_module_sends_http_to_the_upstreams():
    senders = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] in ("requests", "urllib3") or n in ("urllib.request", "http.client")
                   for n in names):
                senders.add(name)
    assert senders == {"http"}, senders


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
    assert {"pages", "presence", "health", "sessions", "sessions.mongo", "http"} <= seen["web"]
    assert {"crypto", "db", "sessions.cache", "sessions.store", "logs"} <= seen["sessions.engine"]
    assert {"sessions.engine", "sessions.store"} <= seen["sessions"]
    assert "errors" in seen["http"] and "http" in seen["client"] and "accounts" in seen["pages"]
    assert ("db", "StoreUnavailable") in imports("presence", found["presence"])
