"""The package's import graph has no cycle, function-level imports included.

A cycle means two modules each need the other: the front (api) and the engine below it
stop being layers.  The graph is read with ``ast`` from every ``import`` statement in
``python/lmmscope`` (at module level or inside a function), relative imports resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "lmmscope"


def _module_name(path: Path, package: Path) -> str:
    parts = ("lmmscope",) + path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict:
    """{module: set of lmmscope modules it imports}."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                bases = [alias.name for alias in node.names]
                names = []
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    stem = here[:len(here) - node.level + 1]
                    bases = [".".join(stem + ([node.module] if node.module else []))]
                else:
                    bases = [node.module or ""]
                names = [alias.name for alias in node.names]
            else:
                continue
            for base in bases:
                if base != "lmmscope" and not base.startswith("lmmscope."):
                    continue
                # `from . import checks` imports the submodule; `from .api import lmm` the module
                subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in files]
                targets.update(subs or ([base] if base in files else []))
                if names and len(subs) < len(names) and base in files:
                    targets.add(base)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "lmmscope.api" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_walk_finds_a_function_level_cycle(tmp_path):
    """The detector itself: a cycle made only by an import inside a function is found."""
    pkg = tmp_path / "lmmscope"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "front.py").write_text("from .sub.core import run\n")
    (pkg / "sub" / "core.py").write_text("def run():\n    from .. import front\n")
    (pkg / "leaf.py").write_text("import lmmscope.sub.core\n")
    graph = import_graph(pkg)
    assert graph["lmmscope.leaf"] == {"lmmscope.sub.core"}
    assert cycles(graph) == [["lmmscope.front", "lmmscope.sub.core"]]


def test_architecture_lists_every_module_and_no_other():
    """docs/architecture.md's module table names every module of the package, and only
    those (the table drifted once: a cheap guard)."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    package = root / "python" / "lmmscope"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py")
               if "__pycache__" not in p.parts}
    text = (root / "docs" / "architecture.md").read_text()
    table = text[text.index("## Modules, one job each"):]
    table = table[:table.index("\n## ", 1)]
    listed = set(re.findall(r"^\| `([\w/]+\.py)`", table, flags=re.M))
    assert modules - listed == set(), "modules missing from docs/architecture.md"
    assert listed - modules == set(), "docs/architecture.md lists modules that do not exist"
