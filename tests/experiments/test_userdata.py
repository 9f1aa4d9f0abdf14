"""The user's own arrays and keep budgets read for the command line (tropref.experiments.userdata)."""

from __future__ import annotations

from tests.helpers import run_doctests
from tropref.experiments import userdata


def test_docstring_examples():
    run_doctests(userdata)
