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
next layer from ``fold`` (by segment sums when each unit folds into one kept unit with a
scale, ``Merge.scale``) and the certificate from the same quantities the proofs use.

Adding a method means adding a module with one function of signature
``method(problem, k, *, rng, **options) -> Merge`` and registering it in
``tropref.methods.METHODS``; ``compress_layer`` itself never changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
from array_api_compat import array_namespace

from .._array import Array, device
from .._blocks import scaled_one_hot

__all__ = ["LayerProblem", "Merge", "Method", "MethodFn", "check_no_options"]


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
    moments : tuple of numpy.ndarray, or None
        Host float64 vectors ``(μ, σ)``, shape ``(n,)`` each: the mean and standard
        deviation of every unit's pre-activation on the data the network was trained on
        (from a BatchNorm, :mod:`tropref.statistics`), for the statistics correction;
        None when no statistics exist.
    correlation : numpy.ndarray or None
        Host float64 ``(n, n)``: the correlation of the units' pre-activations, when the
        caller has a model of it (:func:`tropref.network.moments.propagated_correlations`),
        for the Gaussian refit; None: the refit takes the weights' cosines.
    """

    xp: Any
    inputs: Array
    outgoing: Array
    data: Array | None = None
    block: int = 0
    moments: tuple[np.ndarray, np.ndarray] | None = None
    correlation: np.ndarray | None = None

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


class Merge:
    """What a method decided: the kept units and how every unit folds into them.

    Built as ``Merge(assignment, fold, inputs, zonotope_bound=None, single_fold=True,
    info={})`` with a dense fold, or with ``fold=None`` and ``scale=`` when every unit folds
    into at most one kept unit (the fold's structure, which ``compress_layer`` uses to rewrite
    the next layer by gathers and segment sums instead of a product with an ``n × k`` matrix).
    Immutable.

    Attributes
    ----------
    assignment : array of int64, shape (n,)
        Kept unit that unit ``j`` folds into, or ``-1`` when it is dropped.
    fold : array, shape (n, k)
        ``a_j ≈ Σ_c fold[j, c] ã_c``. Row ``j`` is zero for dropped units. Formed on first
        access when the merge was given by ``scale``.
    scale : array, shape (n,), or None
        ``fold[j, assignment[j]]`` (0 for dropped units) when every row of ``fold`` has at
        most one non-zero, at ``assignment[j]``; None for a general fold. Read from ``fold``
        when only ``fold`` was given and ``single_fold`` is True.
    inputs : array, shape (k, p)
        Input vectors (weights, then bias) of the kept units.
    zonotope_bound : array, shape (2,), or None
        For single-output sign-split methods: upper bounds on ``H(P, P̃)`` and ``H(Q, Q̃)``.
    single_fold : bool
        True when every row of ``fold`` has at most one non-zero, non-negative entry, at
        ``assignment[j]``: then the Proposition F certificate applies.
    info : mapping
        Method-specific facts (clustering iterations, objective, ...), JSON-friendly values.
    kept_moments : tuple of numpy.ndarray, or None
        Host float64 ``(μ̃, σ̃)``, shape ``(k,)`` each: the kept units' pre-activation mean
        and spread as the method estimates them from ``LayerProblem.moments``. When given,
        ``compress_layer`` corrects the next layer's bias for the change of the mean of
        what it reads (``docs/theory.md``, section 5).
    anchor : array, shape (n,), or None
        For a general fold that refits a single fold (TropNNC's ``refit="gaussian"``): the
        per-unit scales ``f_j`` of that single fold, at ``assignment[j]``. The certificate is
        then Proposition F's on the single fold plus what the refit changed in the next
        layer, ``Σ_c |Ṽ − V F₀|_{ic} ‖w̃_c‖`` (``docs/refit.md``), so it holds for the refitted
        layer. None otherwise.

    Raises
    ------
    ValueError
        When neither ``fold`` nor ``scale`` is given, or ``scale`` with ``single_fold=False``
        is given without ``fold``.

    Examples
    --------
    >>> import numpy as np
    >>> m = Merge(np.array([1, -1, 0]), None, np.eye(2), scale=np.array([2.0, 0.0, 1.0]))
    >>> m.fold
    array([[0., 2.],
           [0., 0.],
           [1., 0.]])
    """

    __slots__ = (
        "_fold",
        "_scale",
        "anchor",
        "assignment",
        "info",
        "inputs",
        "kept_moments",
        "single_fold",
        "zonotope_bound",
    )

    def __init__(
        self,
        assignment: Array,
        fold: Array | None = None,
        inputs: Array | None = None,
        zonotope_bound: Array | None = None,
        single_fold: bool = True,
        info: Mapping[str, Any] | None = None,
        *,
        scale: Array | None = None,
        kept_moments: tuple[np.ndarray, np.ndarray] | None = None,
        anchor: Array | None = None,
    ) -> None:
        if inputs is None:
            raise ValueError("Merge needs `inputs`, the kept units' input vectors")
        if fold is None and (scale is None or not single_fold):
            raise ValueError("Merge needs `fold`, or `scale` for a fold with one non-negative entry per row")
        for name, value in (
            ("assignment", assignment),
            ("_fold", fold),
            ("_scale", scale),
            ("inputs", inputs),
            ("zonotope_bound", zonotope_bound),
            ("single_fold", bool(single_fold)),
            ("info", MappingProxyType(dict(info or {}))),
            ("kept_moments", kept_moments),
            ("anchor", anchor),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Merge is immutable: cannot set {name!r}")

    @property
    def k(self) -> int:
        """Number of kept units."""
        return int(self.inputs.shape[0])

    @property
    def fold(self) -> Array:
        if self._fold is None:
            object.__setattr__(
                self, "_fold", scaled_one_hot(array_namespace(self.inputs), self.assignment, self._scale, self.k)
            )
        return self._fold

    @property
    def scale(self) -> Array | None:
        if self._scale is None and self.single_fold:
            object.__setattr__(self, "_scale", _row_scale(self._fold, self.assignment))
        return self._scale

    def __repr__(self) -> str:
        return (
            f"Merge(n={int(self.assignment.shape[0])}, k={self.k}, single_fold={self.single_fold}, "
            f"zonotope_bound={self.zonotope_bound!r}, info={dict(self.info)!r})"
        )


def _row_scale(fold: Array, assignment: Array) -> Array:
    """``fold[j, assignment[j]]`` (0 where ``assignment[j] = -1``): one gather from the flat fold."""
    xp = array_namespace(fold)
    n, k = int(fold.shape[0]), int(fold.shape[1])
    if k == 0:
        return xp.zeros((n,), dtype=fold.dtype, device=device(fold))
    col = xp.where(assignment < 0, xp.zeros_like(assignment), assignment)
    flat = xp.arange(n, dtype=assignment.dtype, device=device(fold)) * k + col
    values = xp.take(xp.reshape(fold, (-1,)), flat, axis=0)
    return xp.where(assignment < 0, xp.zeros_like(values), values)


class Method(Protocol):
    def __call__(self, problem: LayerProblem, k: int, *, rng: np.random.Generator, **options: Any) -> Merge: ...


MethodFn = Callable[..., Merge]


def check_no_options(name: str, options: dict[str, Any]) -> None:
    """Refuse the options of a method that takes none (after its own were taken out).

    Raises
    ------
    TypeError
        Naming the method and the options it does not know.

    Examples
    --------
    >>> check_no_options("l1", {})
    >>> check_no_options("l1", {"refine": 3})
    Traceback (most recent call last):
    ...
    TypeError: method 'l1' got unknown option(s) ['refine']
    """
    if options:
        raise TypeError(f"method {name!r} got unknown option(s) {sorted(options)}")
