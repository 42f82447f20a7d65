"""The house's rule, read off the import graph: packages import downward only, and nothing imports in a circle.

Every import counts, the ones inside functions too: a lazy import hides a
dependency from the reader, not from the graph.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Which layer may import which (memory_store is the store, below the app and the harnesses).
ALLOWED = {
    "engine": set(),
    "corpora": set(),
    "batched": {"engine"},
    "training": {"engine", "batched", "corpora"},
    "app": {"engine", "memory_store"},
    "eval": {"engine", "batched", "corpora", "training", "app", "memory_store"},
    "companion": {"engine", "app"},  # the package's own __init__ / __main__: re-exports
    "memory_store": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "memory_store":
        return "memory_store"
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "companion"


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every companion/memory_store module `path` imports, resolved to the module (not the names in it)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    files = [p for d in ("companion", "memory_store") for p in (ROOT / d).rglob("*.py")]
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


def test_the_graph_is_read():
    g = graph()
    assert "companion.engine.config" in g["companion.engine.cycle"]
    assert "companion.engine.recipes.writers" in g["companion.engine.recipes.catalog"]


def test_layers_import_only_downward():
    upward = sorted(f"{a} -> {b}" for a, deps in graph().items() for b in deps
                    if layer(b) != layer(a) and layer(b) not in ALLOWED[layer(a)])
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_circles():
    g = graph()
    circles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(g[node]):
            if state.get(dep) == "open":
                circles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)
