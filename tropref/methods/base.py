"""The contract between :func:`tropref.compress_layer` and a compression method.

A layer reaches a method already validated, in one canonical form, and with its exactly
removable units taken out (see ``compress.py``):

- ``inputs`` ``A``: ``(n, p)``, row ``j`` the input vector ``w_j = (W[j].ravel(), b[j])``
  of unit ``j`` (its pre-activation is ``w_j . (x, 1)``);
- ``outgoing`` ``V``: ``(m, n, s)``, ``V[:, j, :]`` the weights with which the next layer
  reads unit ``j`` (``s = 1`` for a dense next layer, the kernel positions for a next
  convolution, the spatial positions after a flatten).

A method returns a :class:`Merge`: which kept unit every unit folds into and how. With
``a_j = relu(w_j . u)`` the original activations and ``ã_c = relu(ã_c-input . u)`` the
kept ones, the method promises ``a_j ≈ Σ_c fold[j, c] ã_c``. ``compress_layer`` builds the
next layer from ``fold`` and the certificate from the same quantities the proofs use.

Adding a method means adding a module with one function of signature
``method(problem, k, *, rng, **options) -> Merge`` and registering it in
``tropref.methods.METHODS``; ``compress_layer`` itself never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from .._array import Array

__all__ = ["LayerProblem", "Merge", "Method"]


@dataclass(frozen=True)
class LayerProblem:
    """One layer in canonical form, as every method sees it.

    Attributes
    ----------
    xp : namespace
        The array namespace of ``inputs`` and ``outgoing``.
    inputs : array, shape (n, p)
        Input vectors of the units (weights, then bias).
    outgoing : array, shape (m, n, s)
        Outgoing weights of the units.
    data : array or None, shape (N, p)
        Optional sample inputs ``u = (x, 1)`` (or input patches) for data-driven baselines.
    block : int
        Weights per input channel in ``inputs[:, :-1]``: ``kh * kw`` for a convolution,
        the fan-in for a dense layer (contiguous blocks, the OIHW flattening).
    """

    xp: Any
    inputs: Array
    outgoing: Array
    data: Array | None = None
    block: int = 0

    def __post_init__(self) -> None:
        if self.block == 0:  # a dense layer unless told otherwise: one block of the fan-in
            object.__setattr__(self, "block", int(self.inputs.shape[1]) - 1)

    @property
    def n(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def single_output(self) -> bool:
        """True when the next layer reads each unit through one scalar weight."""
        return int(self.outgoing.shape[0]) * int(self.outgoing.shape[2]) == 1


@dataclass(frozen=True)
class Merge:
    """What a method decided: the kept units and how every unit folds into them.

    Attributes
    ----------
    assignment : array of int64, shape (n,)
        Kept unit that unit ``j`` folds into, or ``-1`` when it is dropped.
    fold : array, shape (n, k)
        ``a_j ≈ Σ_c fold[j, c] ã_c``. Row ``j`` is zero for dropped units.
    inputs : array, shape (k, p)
        Input vectors (weights, then bias) of the kept units.
    zonotope_bound : array, shape (2,), or None
        For single-output sign-split methods: upper bounds on ``H(P, P̃)`` and ``H(Q, Q̃)``.
    single_fold : bool
        True when every row of ``fold`` has at most one non-zero, non-negative entry, at
        ``assignment[j]``: then the Proposition F certificate applies.
    info : mapping
        Method-specific facts (clustering iterations, objective, ...), JSON-friendly values.
    """

    assignment: Array
    fold: Array
    inputs: Array
    zonotope_bound: Array | None = None
    single_fold: bool = True
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))


class Method(Protocol):
    def __call__(
        self, problem: LayerProblem, k: int, *, rng: np.random.Generator, **options: Any
    ) -> Merge: ...


MethodFn = Callable[..., Merge]
