"""No import cycles in gateway/, between modules or between packages.

Every `import` and `from ... import` in a module counts, at the top or inside a function
(a lazy import is still a dependency); imports under `if TYPE_CHECKING:` do not (they
never run). A package is a node of its own: `gateway.oauth` -> `gateway.store` and
`gateway.store` -> `gateway.oauth` is a cycle even when no two modules import each other.
Top-level modules (`gateway/auth.py`, ...) are nodes next to the packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "gateway"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes that sit under `if TYPE_CHECKING:`."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def imported(path: Path, root: Path, known: Iterable[str]) -> set[str]:
    """The gateway modules `path` imports (a `from a import b` counts `a` and `a.b`)."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = _type_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package[: len(package) - node.level + 1]
                base = ".".join([*prefix, base] if base else prefix)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found & set(known)


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imported(path, root, paths) - {name} for name, path in paths.items()}


def unit(module: str) -> str:
    """The node a module belongs to in the package graph: `gateway.x` for a top-level
    module, `gateway.pkg` for everything in gateway/pkg/."""
    return ".".join(module.split(".")[:2])


def package_graph(modules: Mapping[str, set[str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, targets in modules.items():
        edges = graph.setdefault(unit(name), set())
        edges.update(unit(t) for t in targets if unit(t) != unit(name))
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _explain(modules: Mapping[str, set[str]], component: list[str], by_unit: bool) -> str:
    members = set(component)
    edges = sorted(
        f"{name} -> {target}"
        for name, targets in modules.items()
        for target in targets
        if (unit(name) if by_unit else name) in members
        and (unit(target) if by_unit else target) in members
        and (unit(target) != unit(name) if by_unit else True)
    )
    return f"cycle {component}:\n  " + "\n  ".join(edges)


def test_no_module_imports_itself_back() -> None:
    modules = module_graph()
    found = cycles(modules)
    assert not found, "\n".join(_explain(modules, c, by_unit=False) for c in found)


def test_no_package_imports_itself_back() -> None:
    modules = module_graph()
    found = cycles(package_graph(modules))
    assert not found, "\n".join(_explain(modules, c, by_unit=True) for c in found)


def test_the_check_sees_a_cycle(tmp_path: Path) -> None:
    """The check itself: a two-package cycle, one through a lazy import, is reported."""
    root = tmp_path / "gateway"
    for package in ("a", "b"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "a" / "one.py").write_text("from gateway.b.two import x\n")
    (root / "b" / "two.py").write_text("def f():\n    from ..a import one\n")
    (root / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway.a.one\n"
    )
    (root / "a" / "three.py").write_text("import gateway.c\n")
    modules = module_graph(root)
    assert modules["gateway.b.two"] == {"gateway.a", "gateway.a.one"}
    assert modules["gateway.c"] == set()
    assert cycles(package_graph(modules)) == [["gateway.a", "gateway.b"]]
    assert cycles(modules) == [["gateway.a.one", "gateway.b.two"]]
