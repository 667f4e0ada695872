"""The code's shape, read from its imports (every import statement, lazy and type-only ones
included): no import cycle between files or between packages, and no stage module imports another
stage (stages read each other's outputs through ``chorus.stages.inputs``)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).parents[1]
PACKAGE_ROOTS = {"chorus": ROOT / "src/chorus", "chorus_ops": ROOT / "src/chorus_ops", "chorus_flows": ROOT / "flows",
                 "chorus_tasks": ROOT / "tasks", "chorus_bench": ROOT / "benchmarks"}
STAGE_SHARED = {"chorus.stages", "chorus.stages.context", "chorus.stages.inputs", "chorus.stages.model_card"}


def _modules(roots: dict[str, Path]) -> dict[str, Path]:
    modules = {}
    for name, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - (node.level - (path.name == "__init__.py"))]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_graph(roots: dict[str, Path] = PACKAGE_ROOTS) -> nx.DiGraph:
    """Module -> the project modules it imports (an imported name that is a module counts as it)."""
    modules = _modules(roots)
    graph = nx.DiGraph()
    for module, path in modules.items():
        graph.add_node(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _imported(module, path, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph.add_edge(module, target)
    return graph


def _package(module: str) -> str:
    """``chorus.<x>`` for the library's packages and top-level modules; the top-level name otherwise."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "chorus" and len(parts) > 1 else parts[0]


def test_no_import_cycle_between_files():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, f"import cycles between files: {cycles[:5]}"


def test_no_import_cycle_between_packages():
    packages = nx.DiGraph()
    for a, b in import_graph().edges:
        if _package(a) != _package(b) and _package(b) != "chorus":  # the root package holds constants only
            packages.add_edge(_package(a), _package(b))
    cycles = list(nx.simple_cycles(packages))
    assert not cycles, f"import cycles between packages: {cycles[:5]}"


def test_no_stage_module_imports_another_stage():
    graph = import_graph()
    stages = {m for m in graph if m.startswith("chorus.stages.") and m not in STAGE_SHARED}
    crossing = [(a, b) for a, b in graph.edges if a in stages and b in stages]
    assert not crossing, f"stage modules importing each other (read through chorus.stages.inputs): {crossing}"
    shared_to_stages = [(a, b) for a, b in graph.edges if a in STAGE_SHARED - {"chorus.stages"} and b in stages]
    assert not shared_to_stages, f"the shared stage modules import a stage: {shared_to_stages}"


def test_the_graph_sees_a_cycle_when_there_is_one(tmp_path):
    """The checks above can fail: two files importing each other (one lazily) are a cycle."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from .a import x\n")
    assert [sorted(c) for c in nx.simple_cycles(import_graph({"pkg": tmp_path / "pkg"}))] == [["pkg.a", "pkg.b"]]


def test_every_stage_the_tasks_and_flows_call_is_exported():
    """``stages.<name>`` in a task or flow names something chorus.stages exports (mypy reads src/ only)."""
    from chorus import stages

    used = set()
    for folder in ("tasks", "flows"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "stages":
                    used.add(node.attr)
    assert used and not {name for name in used if not hasattr(stages, name)}
