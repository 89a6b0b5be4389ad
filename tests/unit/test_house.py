"""Guards on the house: one door to Redis, an import graph without cycles, services that never import each other.

The graph is read from the source (``ast``), function-level imports included and ``if TYPE_CHECKING:`` blocks left
out (they never run). Plug-in discovery is an import too: a module that builds a family's union at import
(``SOURCES.union()``) imports every plug-in module of that family, so those edges are added; a plug-in module that
imported the config back would be a cycle, and is found here rather than as an ImportError at someone's start.
"""

from __future__ import annotations

import ast
import graphlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

from common import plugins
from tests.conftest import ROOT

PACKAGES = ("common", "ingest", "detector", "sink")
SERVICES = ("ingest", "detector", "sink")
DOOR = "common.redis_io"


def module_files(roots: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages (a package as its ``__init__``)."""
    out = {}
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for each runtime import in a module: project modules resolved to the module named
    (``from a.b import c`` is ``a.b.c`` when that is a module), outside ones by their dotted name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in known else base), node.lineno


def discovery_edges(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The plug-in modules a module imports by building a family's union at import time."""
    families = {n: f for n, f in vars(plugins).items() if isinstance(f, plugins.Family)}
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("union", "kinds", "discover")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in families
        ):
            for family in _with_included(families[node.func.value.id]):
                yield from _plugin_modules(family, known)


def _with_included(family: plugins.Family[object]) -> Iterator[plugins.Family[object]]:
    yield family
    for other in family.includes:
        yield from _with_included(other)


def _plugin_modules(family: plugins.Family[object], known: set[str]) -> Iterator[str]:
    folder = ROOT / family.package.replace(".", "/")
    yield family.package
    for info in pkgutil.iter_modules([str(folder)], family.package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_") and (info.ispkg or not family.packages_only):
            assert info.name in known
            yield info.name


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        found = {m for m, _ in imports(name, path, known) if m in known}
        found |= set(discovery_edges(name, path, known))
        edges[name] = found - {name}
    return edges


def test_only_the_redis_door_imports_redis() -> None:
    files = module_files((*PACKAGES, "bench"))
    known = set(files)
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for name, path in files.items()
        if name != DOOR and not name.startswith(DOOR + ".")
        for module, line in imports(name, path, known)
        if module == "redis" or module.startswith("redis.")
    ]
    assert not offenders, "only common/redis_io reaches Redis; go through it:\n" + "\n".join(offenders)


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """An import cycle in ``edges`` ("a imports b imports ... a"), or [] when there is none."""
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return []


def test_the_import_graph_has_no_cycle() -> None:
    found = cycle(graph())
    assert found == [], f"import cycle: {' imports '.join(found)}"


def test_the_services_never_import_each_other_and_common_imports_none() -> None:
    offenders = [
        f"{name} imports {other}"
        for name, imported in graph().items()
        for other in imported
        if (top := name.split(".")[0]) in (*SERVICES, "common")
        and (other_top := other.split(".")[0]) in SERVICES
        and other_top != top
        and not (top == "common" and other in _discovered_by_config())
    ]
    assert not offenders, "\n".join(sorted(offenders))


def _discovered_by_config() -> set[str]:
    """Plug-in modules the config imports by discovery (named by a string, never by an import statement)."""
    known = set(module_files())
    return set(discovery_edges("common.config", ROOT / "common/config.py", known))


def test_the_checker_sees_a_cycle_and_a_door_crossing(tmp_path: Path) -> None:
    """The two guards above can fail: a made-up pair of modules importing each other is a cycle, and a made-up
    module importing redis outside the door is named."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("from a import x\nif True:\n    import redis.exceptions\n")
    known = {"a", "b"}
    edges = {n: {m for m, _ in imports(n, tmp_path / f"{n}.py", known) if m in known} for n in known}
    assert set(cycle(edges)) == {"a", "b"}
    assert ("redis.exceptions", 3) in list(imports("b", tmp_path / "b.py", known))
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n")
    assert [m for m, _ in imports("c", tmp_path / "c.py", known)] == ["typing"]
