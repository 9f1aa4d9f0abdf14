"""The method contract (tropref.methods.base): LayerProblem, Merge, the Method signature."""

from __future__ import annotations

import collections.abc
import inspect
import typing

import array_api_compat.numpy as xp
import numpy as np
import pytest

from tests.methods.problems import layer
from tropref.methods import METHODS
from tropref.methods.base import LayerProblem, Merge, Method, MethodFn, check_no_options


def test_layer_problem_sizes():
    A, V = layer(np.random.default_rng(0), n=7, d=4, m=3, s=2)
    problem = LayerProblem(xp, A, V)
    assert problem.n == 7
    assert not problem.single_output
    assert LayerProblem(xp, A, V[:1, :, :1]).single_output


def test_merge_forms_its_fold_from_the_scales_only_when_read():
    assignment, scale = np.array([0, 1, 0, -1]), np.array([1.0, 2.0, 0.5, 0.0])
    merge = Merge(assignment, None, np.ones((2, 3)), scale=scale)
    assert merge.k == 2
    np.testing.assert_array_equal(merge.scale, scale)
    expected = np.zeros((4, 2))
    expected[[0, 1, 2], [0, 1, 0]] = [1.0, 2.0, 0.5]  # a dropped unit has a zero row
    np.testing.assert_array_equal(merge.fold, expected)
    with pytest.raises(AttributeError):
        merge.assignment = assignment


def test_every_registered_method_has_the_one_signature():
    """``Method.__call__``'s parameters (``problem, k, *, rng, **options``), and a Merge back
    (``MethodFn``)."""
    protocol = inspect.signature(Method.__call__).parameters
    assert list(protocol) == ["self", "problem", "k", "rng", "options"]
    assert typing.get_origin(MethodFn) is collections.abc.Callable
    assert typing.get_args(MethodFn)[-1] is Merge
    for name, fn in METHODS.items():
        params = inspect.signature(fn).parameters
        assert list(params)[:2] == ["problem", "k"], name
        assert params["rng"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert inspect.signature(fn).return_annotation in ("Merge", Merge), name


def test_check_no_options_names_the_method_and_the_options():
    check_no_options("l1", {})
    with pytest.raises(TypeError, match=r"method 'cup' got unknown option\(s\) \['a', 'b'\]"):
        check_no_options("cup", {"a": 1, "b": 2})
