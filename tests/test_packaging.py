"""Packaging: every package of the library is in the distribution (an install that is not
editable must hold all of them)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_every_library_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    assert on_disk <= listed, f"packages missing from pyproject.toml: {sorted(on_disk - listed)}"


def test_every_imported_distribution_is_declared_and_every_declared_one_imported():
    """What the code imports is a declared dependency (an install from the package index brings
    it), and no runtime dependency goes unused."""
    import ast
    import re
    import sys
    from importlib.metadata import packages_distributions

    distribution_of = packages_distributions()
    imported = set()
    for folder in ("src", "flows", "tasks", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and not m.startswith("chorus")}

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    # a module may ship in several distributions (mlflow's in mlflow, mlflow-skinny and mlflow-tracing):
    # it is declared when one of them is
    aliases = {"mlflow-skinny": "mlflow", "mlflow-tracing": "mlflow"}
    shipped_by = {m: {aliases.get(canonical(d), canonical(d)) for d in distribution_of[m]} for m in third_party}
    declared = {canonical(re.split(r"[<>=\[ ;]", d)[0])
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    undeclared = sorted(m for m, dists in shipped_by.items() if not dists & declared)
    assert undeclared == [], "imported but not declared in pyproject.toml"
    assert declared - set().union(*shipped_by.values()) == set(), "declared but never imported"
