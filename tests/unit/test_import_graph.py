"""No import cycle among the modules of ``src/kiwipy`` (issue 12).

The graph is read statically with :mod:`ast`, so every import counts: at module level,
inside functions (a lazy import still couples the two modules) and under
``TYPE_CHECKING``. A cycle is broken with a small :class:`typing.Protocol` naming what one
side needs of the other, or by moving the shared piece into a module both import.

An edge goes to the module an import names: ``from . import x`` to the submodule ``x`` when
there is one, else to the package (``x`` is a name its ``__init__`` defines). The parent
packages Python also runs on the way are not edges: importing ``kiwipy.rmq.connection._amqp`` from
``kiwipy.rmq.connection._session`` does not make the session depend on everything ``kiwipy.rmq``
re-exports. ``importlib.import_module`` by name is not an edge either: that is how the URL
scheme registry (``kiwipy._connect``) loads a transport without depending on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kiwipy

SOURCE = Path(kiwipy.__file__).parent

#: Cycles that exist today, each as the set of modules that import each other (a strongly
#: connected component), with why it exists. Issue 12 removes them; the test fails on any
#: cycle not listed here, and on a listed one that is gone (then delete its entry).
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """:returns: the modules of *modules* that module *name* (at *path*) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif target in modules:
                    found.add(target)
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """:returns: each module of the package at *root* -> the modules of it that it imports."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    return {name: imports_of(name, path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """:returns: the strongly connected components of more than one module (Tarjan's
    algorithm, iterative so that a deep graph cannot exhaust the stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is not None:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                elif successor in on_stack:
                    low[node] = min(low[node], index[successor])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_no_new_import_cycle() -> None:
    found = cycles(import_graph(SOURCE))
    new = [sorted(cycle) for cycle in found - set(KNOWN_CYCLES)]
    assert not new, f"import cycles (break them with a Protocol or by moving code): {new}"
    gone = [sorted(cycle) for cycle in set(KNOWN_CYCLES) - found]
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph(SOURCE)
    assert "kiwipy.communications" in graph["kiwipy.core._tasks"]  # module level
    assert "kiwipy._connect" in graph["kiwipy.communications"]  # module level, relative
    assert "kiwipy.exceptions" in graph["kiwipy.rmq.connection._session"]  # ``from .. import x``


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_a_cycle_through_a_lazy_or_type_checking_import_is_found(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "def f():\n    from .sub import c\n",
            "sub/__init__.py": "",
            "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import X\n",
            "d.py": "import pkg.a\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == {frozenset({"pkg.a", "pkg.b", "pkg.sub.c"})}


def test_no_cycle_in_a_chain(tmp_path: Path) -> None:
    package = _write(tmp_path, {"__init__.py": "from .a import X\n", "a.py": "X = 1\n"})
    assert cycles(import_graph(package)) == set()
