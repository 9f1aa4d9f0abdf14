"""The array plumbing split out of ``tropref._array``: its examples run, and ``_array`` still
offers every name it offered (the core's modules import them from there)."""

from __future__ import annotations

import importlib

import pytest

from tests.helpers import public_functions, run_doctests

MODULES = ["tropref._blocks", "tropref._seeds"]


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_has_an_example_that_runs(name):
    module = importlib.import_module(name)
    tried = run_doctests(module)
    functions = public_functions(module)
    assert functions, f"{name} has no public function"
    for qualname in functions:
        assert tried.get(qualname, 0) > 0, f"{qualname} has no docstring example"
