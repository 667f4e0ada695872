"""The Examples in the library's docstrings run, as librosa's do: a user who copies one gets what
it shows. (chorus.api's examples need a library's state: tests/test_library.py runs them there.)"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import chorus

SKIPPED = {"chorus.api"}


def test_every_docstring_example_in_the_library_runs():
    attempted, failures = 0, []
    for module_info in pkgutil.walk_packages(chorus.__path__, "chorus."):
        if module_info.name in SKIPPED:
            continue
        module = importlib.import_module(module_info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
        attempted += result.attempted
        if result.failed:
            failures.append(module_info.name)
    assert not failures, f"docstring examples failed in {failures}"
    assert attempted >= 30  # the families, progress, registry, search and feature examples at least
