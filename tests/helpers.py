"""Helpers shared by the test modules (`from tests.helpers import ...`: tests/ is a package)."""

from __future__ import annotations

import doctest
import inspect
from types import ModuleType

DOCTEST_FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def run_doctests(module: ModuleType) -> dict[str, int]:
    """Run every docstring example of ``module``; return the examples tried per object.

    Fails (AssertionError with doctest's report) when an example does not print what it
    says, and when the module has no example at all: ``doctest.testmod`` alone passes
    silently on a module without examples.
    """
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    tried: dict[str, int] = {}
    for test in finder.find(module, module.__name__):
        result = runner.run(test, out=lambda _: None)
        assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} examples failed"
        tried[test.name] = result.attempted
    assert sum(tried.values()) > 0, f"{module.__name__} has no docstring example"
    return tried


def public_functions(module: ModuleType) -> list[str]:
    """Qualified names of the functions ``module`` exports (its ``__all__``, else its public names)."""
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return [
        f"{module.__name__}.{n}"
        for n in names
        if inspect.isfunction(getattr(module, n, None)) and getattr(module, n).__module__ == module.__name__
    ]
