"""Compression methods: each maps a layer in canonical form to a :class:`~.base.Merge`.

``METHODS`` maps the names accepted by ``compress_layer(method=...)`` to the functions.
The contract every method follows is in :mod:`tropref.methods.base`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from . import base, baselines, folding, thinet
from .base import LayerProblem, Merge
from .predecessor import neural_path_kmeans, zonotope_kmeans
from .tropnnc import tropnnc

# The families' registries are read through their modules: the face re-exports only METHODS.
METHODS: dict[str, base.MethodFn] = {
    "tropnnc": tropnnc,
    "zonotope_kmeans": zonotope_kmeans,
    "neural_path_kmeans": neural_path_kmeans,
    **baselines.BASELINES,
    **folding.FOLDING,
    **thinet.THINET,
}


def check_method(method: Any, options: Mapping[str, Any]) -> None:
    """Raise unless ``method`` names a method of :data:`METHODS` and ``options`` only its options.

    Called by every entry point before any work, so that a misspelt method or option is
    refused even where nothing needs compressing.

    Raises
    ------
    ValueError
        For an unknown ``method``, with the names there are.
    TypeError
        For an option the method does not take, with the options it takes.

    Examples
    --------
    >>> check_method("tropnnc", {"variant": "paper"})
    >>> check_method("tropnc", {})
    Traceback (most recent call last):
        ...
    ValueError: unknown `method` 'tropnc'; choose one of ['cup', 'l1', 'model_folding', 'model_folding_ar', 'neural_path_kmeans', 'neuron_merging', 'random', 'thinet', 'tropnnc', 'zonotope_kmeans']
    >>> check_method("l1", {"bogus": 1})
    Traceback (most recent call last):
        ...
    TypeError: method 'l1' got unknown option(s) ['bogus']; its options: ['include_bias']
    """  # noqa: E501
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown `method` {method!r}; choose one of {sorted(METHODS)}")
    fn = METHODS[method]
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params) and not fn.__module__.startswith(__name__):
        return  # a method registered from elsewhere that takes any option: it checks them itself
    known = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "rng"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"method {method!r} got unknown option(s) {unknown}; its options: {known}")


__all__ = ["check_method", "METHODS", "LayerProblem", "Merge", "tropnnc", "zonotope_kmeans", "neural_path_kmeans"]
