"""``compress_layer``: one ReLU layer compressed to ``k`` units, with an error certificate.

The call reads top to bottom:

1. validate the arrays (namespace, device, dtype, shapes, finiteness) and ``k`` (``_validate``);
2. put the layer in canonical form: unit input vectors ``A`` ``(n, p)`` and outgoing
   weights ``V`` ``(m, n, s)`` (:mod:`tropref.tropical`);
3. the exact pre-pass: dead units, constant units and units the next layer never reads are
   removed without error (constants folded into the next bias; ``_prepass``);
4. the method merges the remaining units into ``k`` (``_merge``, :mod:`tropref.methods`);
5. the next layer is rewritten from the fold (a gather and a segment sum over each kept
   unit's members when every unit folds into one kept unit, never a product with the
   ``n × k`` fold matrix; ``_rewrite``);
6. with the units' pre-activation statistics (``moments``), the next layer's bias is
   corrected for the change of the mean it reads (``docs/theory.md``, section 5;
   ``_mean_correction``);
7. the certificate is computed from the per-unit residuals the proofs use
   (``docs/theory.md``, Proposition F), plus the bias correction (``_certificate``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ._array import (
    Array,
    asarray_like,
    check_finite,
    check_floating,
    check_int,
    check_magnitude,
    device,
    max_abs,
    namespace,
    relu,
    to_numpy,
)
from ._blocks import row_blocks, scaled_one_hot, segment_sum, take_rows
from ._seeds import make_rng, resolve_seed
from .methods import METHODS, check_method
from .methods.base import LayerProblem, Merge
from .methods.partition import unit_residuals
from .statistics import relu_mean
from .tropical import neuron_vectors, outgoing_weights

__all__ = ["compress_layer", "LayerCompression"]


@dataclass(frozen=True)
class LayerCompression:
    """The result of :func:`compress_layer`. Immutable; arrays are in the input's namespace.

    Attributes
    ----------
    W, b : arrays
        The compressed layer, ``k'`` units on axis 0 (``k' <= k``; fewer when exactly
        removable units left fewer than ``k``). ``b`` is None when the input had no bias.
    W_next, b_next : arrays or None
        The next layer rewritten for the kept units (same layout as given), when ``W_next``
        was given. ``b_next`` is always returned then (zeros plus folded constants if the
        input had none).
    assignment : array of int64, shape (n,)
        Kept unit that each original unit folds into, ``-1`` when it folds into none
        (removed exactly, or dropped by a pruning method).
    fold : array, shape (n, k')
        Original activations ``a ≈ fold @ ã + offset``, ``ã`` the kept units' activations.
        Formed on first access from ``assignment`` and ``scale`` when the method folds every
        unit into one kept unit (all methods but ThiNet's ``rescale="full"``).
    scale : array, shape (n,), or None
        ``fold[j, assignment[j]]`` (0 where ``assignment[j] = -1``); None for a general fold.
    offset : array, shape (n,)
        ``relu(b_j)`` for constant units folded into the next bias, else 0.
    certificate : array or None
        ``|Δ v_i(x)| <= certificate[i] * ‖(x, 1)‖`` for every input ``x`` and every output
        ``i`` of the next layer's pre-activation (of every original unit when ``W_next`` is
        None). None for methods whose fold is not a single non-negative scale per unit,
        unless the fold refits one (TropNNC's ``refit="gaussian"``: Proposition F on that
        single fold plus the refit's change, ``docs/refit.md``).
    zonotope_bound : array, shape (2,), or None
        Single-output sign-split methods: upper bounds on ``H(P, P̃)`` and ``H(Q, Q̃)`` of the
        clustered units' zonotopes.
    method : str
    seed : int
        The concrete seed used (drawn from the OS when ``seed=None`` was given).
    info : mapping
        What the method and the pre-pass did (clustering iterations and objective, units
        removed exactly, ...), and ``time_s``: seconds spent in each step (``prepass``,
        ``method``, ``rewrite`` of the next layer, ``certificate``).
    """

    W: Array
    b: Array | None
    W_next: Array | None
    b_next: Array | None
    assignment: Array
    scale: Array | None
    offset: Array
    certificate: Array | None
    zonotope_bound: Array | None
    method: str
    seed: int
    info: Mapping[str, Any] = field(default_factory=dict)
    dense_fold: Array | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    @property
    def fold(self) -> Array:
        """The ``(n, k')`` fold matrix (formed from ``scale`` on first access)."""
        if self.dense_fold is None:
            xp = namespace(W=self.W)
            object.__setattr__(self, "dense_fold", scaled_one_hot(xp, self.assignment, self.scale, self.k))
        return self.dense_fold

    @property
    def k(self) -> int:
        """Number of units kept."""
        return int(self.W.shape[0])


def compress_layer(
    W: Array,
    b: Array | None,
    k: int,
    *,
    W_next: Array | None = None,
    b_next: Array | None = None,
    method: str = "tropnnc",
    seed: int | None = None,
    data: Array | None = None,
    fold_constants: bool = True,
    moments: tuple[Array, Array] | tuple[Array, Array, Array] | None = None,
    **options: Any,
) -> LayerCompression:
    """Compress a dense or convolutional ReLU layer to ``k`` units, data-free.

    The layer ``x ↦ relu(W x + b)`` is read by a next layer ``W_next``. Writing unit ``j``
    as ``w_j = (W[j], b[j])``, a method partitions the units into ``k`` clusters, replaces
    each cluster ``C`` by one unit ``w̃_C`` and reads every member through it with a scale
    ``f_j ≥ 0`` (``w_j ≈ f_j w̃_C``): the next layer's weights for the kept unit are
    ``Σ_{j∈C} f_j W_next[:, j]``. By positive homogeneity and the 1-Lipschitz ReLU, for
    every input ``x`` and output ``i`` (Proposition F in ``docs/theory.md``)::

        |Δ v_i(x)| <= ‖(x, 1)‖ · Σ_j |W_next[i, j]| ‖w_j − f_j w̃_{C(j)}‖ = ‖(x, 1)‖ · certificate[i].

    TropNNC (the default method) clusters the unit directions by weighted Ward, takes each
    cluster's principal direction and projects the members on it; ``variant="paper"``
    runs the paper-literal algorithm. With one output, clusters respect the sign of the
    outgoing weight and the certificate is capped by the zonotope bound
    ``H(P, P̃) + H(Q, Q̃)`` (Corollary D).

    Parameters
    ----------
    W : array, shape (n, d) or (n, C, kh, kw)
        Weights with the units on axis 0 (PyTorch layouts: ``Linear.weight``, ``Conv2d.weight``).
    b : array, shape (n,), or None
        Biases.
    k : int
        Units to keep, ``1 <= k <= n``.
    W_next : array, shape (m, n), (m, n, kh, kw) or (m, n, s), optional
        The next layer's weights, units on axis 1: dense, convolution, or the ``s`` columns
        each channel owns after a flatten. For a channels-first flatten,
        ``W_dense.reshape(m, n, s)``; for a channels-last flatten (h, w, c order),
        ``W_dense.reshape(m, s, n).transpose(0, 2, 1)`` (and the inverse reshapes to go
        back). ``None`` takes the next layer as the identity: the certificate is then per
        original unit.
    b_next : array, shape (m,), optional
        The next layer's bias.
    method : str
        ``"tropnnc"`` (default), ``"zonotope_kmeans"``, ``"neural_path_kmeans"`` or a
        baseline; ``tropref.methods.METHODS`` lists them all.
    seed : int, optional
        Seed of every random choice. The same seed gives the same result on every backend.
    data : array, shape (N, d) or (N, C, kh, kw), optional
        Sample inputs (input patches for a convolution), for data-driven methods only.
    fold_constants : bool
        Fold constant units (zero weights, non-zero bias) into ``b_next``. Pass False when
        the next layer is a zero-padded convolution, where that fold is not exact at the
        borders: constant units are then treated as ordinary units.
    moments : pair of arrays of shape (n,), or triple with an (n, n) array, optional
        ``(μ, σ)``: the mean and standard deviation of every unit's pre-activation
        ``w_j · (x, 1)`` on the data the network was trained on; a BatchNorm before the
        ReLU stores them (``μ_j = β_j``, ``σ_j = |γ_j| √(v_j / (v_j + ε))``). A third
        entry ``ρ`` is a model of the pre-activations' correlation (symmetric, unit
        diagonal, ``|ρ| <= 1``), which TropNNC's Gaussian refit reads
        (``refit_correlation="auto"``); :func:`tropref.compress_network` propagates one
        through convolutional networks (``docs/refit.md``).
        :func:`tropref.compress_network` passes them for every such layer. With them,
        TropNNC corrects the statistics its merge changes, with no data: each merged unit
        is rescaled so that its members see their own mean and spread, and the next
        layer's bias absorbs the change of the mean it reads (``correct`` option,
        ``docs/theory.md`` section 5). The certificate bounds the corrected layer.
    **options
        Method options, e.g. for ``"tropnnc"``: ``variant`` (``"refined"`` or
        ``"paper"``), ``cluster``, ``representative``, ``fold``, ``objective``, ``refine``,
        ``out_norm``, ``input_ratio``, ``n_init``, ``max_iter``, ``tol``, ``init``,
        ``correct``, ``outgoing``, ``refit`` (the data-free Gaussian least-squares refit
        of the next layer, with ``moments``; ``docs/refit.md``), ``refit_ridge``,
        ``refit_correlation``, ``refit_variance`` (:func:`tropref.methods.tropnnc`).

    Returns
    -------
    LayerCompression

    Notes
    -----
    The next bias absorbs ``Σ_s W_next[:, j, s] offset[j]``: exact for a dense next layer
    and after a flatten; for a next convolution only without zero padding.

    Raises
    ------
    TypeError
        When an argument is not an array, the arrays come from different libraries, a dtype
        is not float32 or float64 or differs between arrays, ``k`` or ``seed`` is not an
        integer, ``fold_constants`` is not a bool, an option is unknown to the method, or an
        array is a ``numpy.matrix`` or a masked array.
    ValueError
        When shapes do not match (the message names the argument and the shape expected),
        an array holds NaN or infinity, ``moments`` is not two finite vectors of length ``n``
        with ``σ >= 0`` (and, as a triple, a symmetric ``(n, n)`` correlation with unit
        diagonal and entries in ``[-1, 1]``), arrays live on different devices, ``k`` is outside
        ``[1, n]``, ``seed`` is negative, ``method`` is unknown, a method option is out of
        range, ``b_next`` comes without ``W_next``, a data-driven method gets no ``data``,
        unit norms over- or underflow in the dtype, or the products of ``W`` and ``W_next``
        the methods square and sum would overflow it (rescale, or use float64).

    See Also
    --------
    tropref.compress_network : whole networks, with budgets and a network certificate.
    tropref.methods.METHODS : the methods by name.
    tropref.tropical.zonotope_generators : the zonotopes the single-output bound is about.

    References
    ----------
    .. [1] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.
    .. [2] P. Misiakos, G. Smyrnis, G. Retsinas, P. Maragos, "Neural Network Approximation
           based on Hausdorff distance of Tropical Zonotopes", ICLR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> import tropref
    >>> rng = np.random.default_rng(0)
    >>> W, b, V = rng.normal(size=(8, 5)), rng.normal(size=8), rng.normal(size=(3, 8))
    >>> res = tropref.compress_layer(W, b, 4, W_next=V, seed=0)
    >>> res.W.shape, res.W_next.shape, res.certificate.shape
    ((4, 5), (3, 4), (3,))
    >>> x = rng.normal(size=5)
    >>> exact = V @ np.maximum(W @ x + b, 0)
    >>> approx = res.W_next @ np.maximum(res.W @ x + res.b, 0) + res.b_next
    >>> bool(np.all(np.abs(exact - approx) <= res.certificate * np.linalg.norm(np.append(x, 1))))
    True
    """
    xp = namespace(W=W, b=b, W_next=W_next, b_next=b_next, data=data)
    n, k, seed, stats = _validate(xp, W, b, k, W_next, b_next, data, fold_constants, moments, method, seed, options)

    clock = time.perf_counter()
    A = neuron_vectors(W, b)
    V = _identity_outgoing(xp, A) if W_next is None else outgoing_weights(W_next)
    kept, constant, removed = _prepass(xp, A, V, fold_constants)
    times = {"prepass": time.perf_counter() - clock}
    merge = _merge(xp, A, V, W, data, kept, stats, k, method, seed, options)

    times["method"] = time.perf_counter() - clock - times["prepass"]
    assignment, scale, fold = _embed(xp, merge, kept, n)
    labels = to_numpy(assignment)
    bias = A[:, -1]
    offset = xp.where(asarray_like(constant, xp, A, dtype=xp.bool), relu(bias), xp.zeros_like(bias))
    k_new = merge.inputs.shape[0]
    W_new = xp.reshape(merge.inputs[:, :-1], (k_new, *W.shape[1:]))
    b_new = None if b is None else merge.inputs[:, -1]
    V_new = W_next_new = b_next_new = None
    if W_next is not None:
        V_new, W_next_new, b_next_new = _rewrite(xp, A, V, W_next, b_next, labels, scale, fold, k_new, constant, offset)

    times["rewrite"] = time.perf_counter() - clock - sum(times.values())
    shift = None
    if W_next is not None and stats is not None and merge.kept_moments is not None:
        shift = _mean_correction(xp, V, V_new, stats, kept, merge.kept_moments, A)
        b_next_new = b_next_new + shift
    certificate = _certificate(xp, merge, A, V, V_new, labels, scale, fold, kept, removed, shift)

    times["certificate"] = time.perf_counter() - clock - sum(times.values())
    return LayerCompression(
        W=W_new,
        b=b_new,
        W_next=W_next_new,
        b_next=b_next_new,
        assignment=assignment,
        scale=scale,
        offset=offset,
        certificate=certificate,
        zonotope_bound=merge.zonotope_bound,
        method=method,
        seed=seed,
        info=_info(merge, times, removed, constant),
        dense_fold=fold,
    )


def _validate(
    xp: Any,
    W: Array,
    b: Array | None,
    k: Any,
    W_next: Array | None,
    b_next: Array | None,
    data: Array | None,
    fold_constants: Any,
    moments: Any,
    method: str,
    seed: Any,
    options: Mapping[str, Any],
) -> tuple[int, int, int, tuple[np.ndarray, np.ndarray] | None]:
    """Step 1: every argument checked, each error naming it; returns ``n``, ``k``, the
    concrete seed and the units' statistics on the host (None without ``moments``)."""
    check_floating(xp, W=W, b=b, W_next=W_next, b_next=b_next, data=data)
    n = _check_shapes(W, b, W_next, b_next, data)
    check_finite(xp, W=W, b=b, W_next=W_next, b_next=b_next, data=data)
    k = check_int("k", k, 1, n)
    if not isinstance(fold_constants, (bool, np.bool_)):
        raise TypeError(f"`fold_constants` must be True or False, got {fold_constants!r}")
    check_method(method, options)  # before compress_layer's exact pre-pass, which may leave no method to run
    seed = resolve_seed(seed)
    # products of a unit's weights and its outgoing weights, squared and summed over the
    # unit's features: refused here, before they overflow somewhere in the method
    scales = {"W": max(max_abs(xp, W), max_abs(xp, b))}
    if W_next is not None:
        scales["W_next"] = max_abs(xp, W_next)
    features = (math.prod(W.shape) // n + 1) * (1 if W_next is None else math.prod(W_next.shape) // n)
    check_magnitude(xp, W.dtype, n * features, **scales)
    return n, k, seed, _check_moments(moments, n)


def _merge(
    xp: Any,
    A: Array,
    V: Array,
    W: Array,
    data: Array | None,
    kept: np.ndarray,
    stats: tuple[np.ndarray, ...] | None,
    k: int,
    method: str,
    seed: int,
    options: Mapping[str, Any],
) -> Merge:
    """Step 4: the method merges the units the pre-pass kept into at most ``k``."""
    if not kept.size:  # every unit is removable exactly: keep one silent unit so that the layer exists
        return Merge(
            xp.zeros((0,), dtype=xp.int64, device=device(A)),
            None,
            xp.zeros((1, A.shape[1]), dtype=A.dtype, device=device(A)),
            scale=xp.zeros((0,), dtype=A.dtype, device=device(A)),
        )
    U = None if data is None else _with_ones(xp, xp.reshape(data, (data.shape[0], -1)))
    block = int(W.shape[2] * W.shape[3]) if W.ndim == 4 else int(W.shape[1])
    kept_stats = None if stats is None else (stats[0][kept], stats[1][kept])
    rho = None if stats is None or len(stats) < 3 else stats[2][np.ix_(kept, kept)]
    problem = LayerProblem(xp, take_rows(xp, A, kept), take_rows(xp, V, kept, axis=1), U, block, kept_stats, rho)
    return METHODS[method](problem, min(k, kept.size), rng=make_rng(seed), **options)


def _rewrite(
    xp: Any,
    A: Array,
    V: Array,
    W_next: Array,
    b_next: Array | None,
    labels: np.ndarray,
    scale: Array | None,
    fold: Array | None,
    k_new: int,
    constant: np.ndarray,
    offset: Array,
) -> tuple[Array, Array, Array]:
    """Step 5: the next layer read through the fold (``V_new`` ``(m, k, s)``, its weights in
    ``W_next``'s layout) and its bias with the folded constants."""
    V_new = _rewrite_next(xp, V, labels, scale, fold, k_new)
    W_next_new = xp.reshape(V_new, (W_next.shape[0], k_new, *W_next.shape[2:]))
    if b_next is None:
        b_next_new = xp.zeros((W_next.shape[0],), dtype=A.dtype, device=device(A))
    else:  # a copy: the result never aliases an input
        b_next_new = xp.asarray(b_next, copy=True)
    if constant.any():
        b_next_new = b_next_new + _abs_read(xp, V, offset, absolute=False)
    return V_new, W_next_new, b_next_new


def _certificate(
    xp: Any,
    merge: Merge,
    A: Array,
    V: Array,
    V_new: Array | None,
    labels: np.ndarray,
    scale: Array | None,
    fold: Array | None,
    kept: np.ndarray,
    removed: np.ndarray,
    shift: Array | None,
) -> Array | None:
    """Step 7: ``|V| @ r`` from the per-unit residuals (capped by the zonotope bound), or the
    refit's two terms, plus ``|δ|`` of the mean correction; None when the method gives none."""
    n, k_new = int(A.shape[0]), int(merge.inputs.shape[0])
    certificate = None
    if merge.single_fold:
        residual = unit_residuals(xp, A, scale, labels, merge.inputs, exact=removed)
        certificate = _abs_read(xp, V, residual)
        if merge.zonotope_bound is not None:
            certificate = xp.minimum(certificate, xp.sum(merge.zonotope_bound))
    elif merge.anchor is not None:
        # a general fold F refitting a single fold F0 (scale f_j): V a − Ṽ ã splits into
        # Σ_j V_j (a_j − f_j ã_c(j)) (Proposition F) and −Σ_c (Ṽ − V F0)_c ã_c, where
        # |ã_c| <= ‖w̃_c‖ ‖(x, 1)‖ (docs/refit.md)
        anchor = _embed_scale(xp, merge.anchor, kept, n)
        residual = unit_residuals(xp, A, anchor, labels, merge.inputs, exact=removed)
        refitted = V_new if V_new is not None else _rewrite_next(xp, V, labels, None, fold, k_new)
        change = refitted - _rewrite_next(xp, V, labels, anchor, None, k_new)
        certificate = _abs_read(xp, V, residual) + _abs_read(xp, change, xp.linalg.vector_norm(merge.inputs, axis=1))
    if certificate is not None and shift is not None:  # a constant change: |δ_i| <= |δ_i| ‖(x, 1)‖
        certificate = certificate + xp.abs(shift)
    return certificate


def _info(merge: Merge, times: dict[str, float], removed: np.ndarray, constant: np.ndarray) -> dict[str, Any]:
    """The method's info with the steps' times and the units the pre-pass removed."""
    info = dict(merge.info)
    info["time_s"] = times
    info["removed_exactly"] = {
        "dead_or_silent": int(np.count_nonzero(removed & ~constant)),
        "constant": int(np.count_nonzero(constant)),
    }
    return info


def _check_shapes(W: Array, b: Array | None, W_next: Array | None, b_next: Array | None, data: Array | None) -> int:
    if W.ndim not in (2, 4):
        raise ValueError(
            f"`W` must be (n, d) for a dense layer or (n, C, kh, kw) for a convolution, got shape {W.shape}"
        )
    n = int(W.shape[0])
    if n == 0 or any(int(s) == 0 for s in W.shape):
        raise ValueError(f"`W` must have at least one unit and one input, got shape {W.shape}")
    if b is not None and tuple(b.shape) != (n,):
        raise ValueError(f"`b` must have shape ({n},) to match `W` {tuple(W.shape)}, got {tuple(b.shape)}")
    if W_next is None and b_next is not None:
        raise ValueError("`b_next` was given without `W_next`")
    if W_next is not None:
        if W_next.ndim not in (2, 3, 4) or int(W_next.shape[1]) != n:
            raise ValueError(
                f"`W_next` must have the {n} units of `W` on axis 1: (m, {n}), (m, {n}, s) or "
                f"(m, {n}, kh, kw), got shape {tuple(W_next.shape)}"
            )
        if any(int(s) == 0 for s in W_next.shape):
            raise ValueError(f"`W_next` has an empty axis: {tuple(W_next.shape)}")
        if b_next is not None and tuple(b_next.shape) != (int(W_next.shape[0]),):
            raise ValueError(
                f"`b_next` must have shape ({W_next.shape[0]},) to match `W_next`, got {tuple(b_next.shape)}"
            )
    if data is not None and (data.ndim != W.ndim or tuple(data.shape[1:]) != tuple(W.shape[1:])):
        raise ValueError(
            f"`data` must hold sample inputs of shape (N, {', '.join(str(s) for s in W.shape[1:])}), "
            f"got {tuple(data.shape)}"
        )
    return n


def _check_moments(moments: Any, n: int) -> tuple[np.ndarray, ...] | None:
    """``moments`` as host float64 arrays ``(μ, σ)`` or ``(μ, σ, ρ)``, validated."""
    if moments is None:
        return None
    if not isinstance(moments, (tuple, list)) or len(moments) not in (2, 3):
        raise TypeError(
            "`moments` must be a pair (mean, std) of arrays of shape (n,), or a triple "
            "(mean, std, correlation) with an (n, n) correlation, or None"
        )
    mean, std = (to_numpy(v).astype(np.float64) for v in moments[:2])
    if mean.shape != (n,) or std.shape != (n,):
        raise ValueError(f"`moments` must be two vectors of shape ({n},), got {mean.shape} and {std.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
        raise ValueError("`moments` must be finite, with standard deviations >= 0")
    if len(moments) == 2:
        return mean, std
    rho = to_numpy(moments[2]).astype(np.float64)
    if rho.shape != (n, n):
        raise ValueError(f"`moments`: the correlation must have shape ({n}, {n}), got {rho.shape}")
    valid = np.all(np.isfinite(rho)) and np.all(np.abs(rho) <= 1 + 1e-12) and np.allclose(np.diag(rho), 1.0)
    if not (valid and np.allclose(rho, rho.T, rtol=0.0, atol=1e-12)):
        raise ValueError(
            "`moments`: the correlation must be finite and symmetric, with unit diagonal and entries in [-1, 1]"
        )
    return mean, std, rho


def _mean_correction(
    xp: Any,
    V: Array,
    V_new: Array,
    stats: tuple[np.ndarray, np.ndarray],
    kept: np.ndarray,
    kept_moments: tuple[np.ndarray, np.ndarray],
    like: Array,
) -> Array:
    """``δ_i = Σ_{j,s} V[i, j, s] E[a_j] − Σ_{c,s} Ṽ[i, c, s] E[ã_c]``: the change of the mean
    of the next layer's pre-activation, with ``E[relu(z)]`` of Gaussian pre-activations
    (:func:`tropref.statistics.relu_mean`). Units removed exactly change nothing."""
    mean_in = np.zeros(int(V.shape[1]))
    mean_in[kept] = relu_mean(stats[0][kept], stats[1][kept])
    mean_out = relu_mean(*kept_moments)
    before = _abs_read(xp, V, asarray_like(mean_in, xp, like), absolute=False)
    return before - _abs_read(xp, V_new, asarray_like(mean_out, xp, like), absolute=False)


def _identity_outgoing(xp: Any, A: Array) -> Array:
    n = A.shape[0]
    return xp.reshape(xp.eye(n, dtype=A.dtype, device=device(A)), (n, n, 1))


def _with_ones(xp: Any, X: Array) -> Array:
    return xp.concat([X, xp.ones((X.shape[0], 1), dtype=X.dtype, device=device(X))], axis=1)


def _prepass(xp: Any, A: Array, V: Array, fold_constants: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host decision of which units are removed exactly (``docs/theory.md``, section 3).

    Returns the indices of the units left to the method, and boolean masks of the constant
    units (folded into the next bias) and of every removed unit.
    """
    weights_zero = np.concatenate([to_numpy(xp.all(blk[:, :-1] == 0, axis=1)) for blk in row_blocks(A)])
    bias = to_numpy(A[:, -1])
    silent = np.logical_and.reduce([to_numpy(xp.all(blk == 0, axis=(0, 2))) for blk in row_blocks(V)])
    dead = weights_zero & (bias <= 0)  # relu(b) = 0 for every input: nothing to fold
    constant = weights_zero & (bias > 0) & ~silent & fold_constants
    removed = dead | constant | silent
    return np.flatnonzero(~removed), constant, removed


def _embed(xp: Any, merge: Merge, kept: np.ndarray, n: int) -> tuple[Array, Array | None, Array | None]:
    """Assignment, per-unit scale and (general folds only) fold matrix of all ``n`` units.

    Removed units point at an appended zero (row): a gather, not a scatter. The scale is
    None for a general fold, the fold matrix None for a single fold (formed only on request).
    """
    rows = np.full(n, kept.size, dtype=np.int64)
    rows[kept] = np.arange(kept.size)
    assignment = np.full(n, -1, dtype=np.int64)
    assignment[kept] = to_numpy(merge.assignment)
    assignment = xp.asarray(assignment, dtype=xp.int64, device=device(merge.inputs))
    scale = merge.scale
    if scale is not None:
        padded = xp.concat([scale, xp.zeros((1,), dtype=scale.dtype, device=device(scale))])
        return assignment, take_rows(xp, padded, rows), None
    fold_kept = merge.fold
    padded = xp.concat([fold_kept, xp.zeros((1, fold_kept.shape[1]), dtype=fold_kept.dtype, device=device(fold_kept))])
    return assignment, None, take_rows(xp, padded, rows)


def _embed_scale(xp: Any, scale: Array, kept: np.ndarray, n: int) -> Array:
    """A per-unit vector of the method's units embedded among all ``n`` (0 for removed units)."""
    rows = np.full(n, kept.size, dtype=np.int64)
    rows[kept] = np.arange(kept.size)
    padded = xp.concat([scale, xp.zeros((1,), dtype=scale.dtype, device=device(scale))])
    return take_rows(xp, padded, rows)


def _rewrite_next(xp: Any, V: Array, labels: np.ndarray, scale: Array | None, fold: Array | None, k: int) -> Array:
    """``V_new[:, c, :] = Σ_j V[:, j, :] fold[j, c]``, shape ``(m, k, s)``.

    A single fold is applied as ``Σ_{j∈C} scale_j V[:, j, :]``: one gather and a segment sum
    over each kept unit's members (``O(m n s)``; a pruning method's kept units are a plain
    gather), where the product with the fold matrix costs ``O(m n s k)``. A general fold
    (ThiNet's least-squares refit) is a product.
    """
    if fold is not None:
        if V.shape[2] == 1:
            return xp.matmul(V[:, :, 0], fold)[:, :, None]
        return xp.matmul(fold.T, V)  # batched over outputs: no transposed copy of V
    host_scale = to_numpy(scale)
    members = labels >= 0
    ones = bool(np.all(host_scale[members] == 1))  # pruning and CUP: no multiplication needed
    if ones:
        return segment_sum(xp, V, labels, k, axis=1)
    # by blocks of outputs: the gathered, weighted and summed temporaries stay a few MiB; each
    # block is written into the result, which is ours (no list of blocks and concatenated
    # copy of them: twice the result's memory, 205 MB more for VGG-16's fc6 read after conv13)
    blocks = row_blocks(V, 8 * 2**20)
    first = segment_sum(xp, next(blocks), labels, k, axis=1, weights=scale)
    if first.shape[0] == V.shape[0]:
        return first
    out = xp.empty((V.shape[0], k, V.shape[2]), dtype=V.dtype, device=device(V))
    lo = int(first.shape[0])
    out[:lo, ...] = first
    for blk in blocks:
        hi = lo + int(blk.shape[0])
        out[lo:hi, ...] = segment_sum(xp, blk, labels, k, axis=1, weights=scale)
        lo = hi
    return out


def _abs_read(xp: Any, V: Array, r: Array, *, absolute: bool = True) -> Array:
    """``Σ_{j,s} |V[i, j, s]| r_j`` per output ``i`` (``V`` itself when ``absolute=False``).

    Computed over blocks of outputs so that the ``|V|`` temporary stays small (in cache).
    """
    m, n, s = (int(d) for d in V.shape)
    r_rep = r if s == 1 else xp.reshape(xp.broadcast_to(r[:, None], (n, s)), (n * s,))
    parts = [xp.matmul(xp.abs(blk) if absolute else blk, r_rep) for blk in row_blocks(xp.reshape(V, (m, n * s)))]
    return parts[0] if len(parts) == 1 else xp.concat(parts)
