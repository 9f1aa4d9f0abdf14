"""Compression methods: each maps a layer in canonical form to a :class:`~.base.Merge`.

``METHODS`` maps the names accepted by ``compress_layer(method=...)`` to the functions.
The contract every method follows is in :mod:`tropref.methods.base`.
"""

from __future__ import annotations

from .base import LayerProblem, Merge, MethodFn
from .baselines import BASELINES
from .folding import FOLDING
from .predecessor import neural_path_kmeans, zonotope_kmeans
from .thinet import THINET
from .tropnnc import tropnnc

METHODS: dict[str, MethodFn] = {
    "tropnnc": tropnnc,
    "zonotope_kmeans": zonotope_kmeans,
    "neural_path_kmeans": neural_path_kmeans,
    **BASELINES,
    **FOLDING,
    **THINET,
}

__all__ = ["METHODS", "LayerProblem", "Merge", "tropnnc", "zonotope_kmeans", "neural_path_kmeans"]
