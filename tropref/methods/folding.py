"""Model Folding (Wang, Šikić, Thiele, Saukh, ICLR 2025): cluster channels, average them, repair.

Data-free. Each unit ``j`` is described by everything that shares its channel axis: its
input vector ``A[j]`` (BatchNorm folded in) and the next layer's columns ``V[:, j, :]``.
The units are clustered by K-means on those concatenated features, every cluster ``C``
becomes one unit with the *average* input vector ``w̃_C = Σ_{j∈C} w_j / |C|``, and the next
layer reads it with the *sum* of the members' columns (fold ``f_j = 1``).

Fold-AR ("approximate repair") corrects the variance an average of imperfectly correlated
units loses, with no data: with every member's pre-activation normalised to unit spread
(``n_j = (z_j − μ_j) / σ_j``, the BatchNorm's statistics fused into the layer), the average
``Σ_C n_j / |C|`` of ``|C|`` units of mean pairwise correlation ``ρ̄`` has spread
``√((1 + (|C| − 1) ρ̄) / |C|)``; the merged unit is ``σ̄_C · r_C · Σ_C n_j / |C| + μ̄_C``
with the members' mean spread ``σ̄_C``, mean ``μ̄_C`` and
``r_C = √(|C| / (1 + (|C| − 1) ρ̄))``. ``ρ̄`` is the mean pairwise cosine of the members'
concatenated features, as in the authors' code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import asarray_like, check_int, device, to_numpy
from .._blocks import segment_sum
from .base import LayerProblem, Merge
from .partition import cluster_labels

__all__ = ["model_folding", "model_folding_ar", "FOLDING"]


def model_folding(
    problem: LayerProblem, k: int, *, rng: np.random.Generator, n_init: int = 10, max_iter: int = 20, **options: Any
) -> Merge:
    """Model Folding's merge without repair: K-means on producer rows and consumer columns,
    average the rows, sum the columns.

    Parameters
    ----------
    problem : LayerProblem
    k : int
        Units to keep, ``1 <= k <= n``.
    rng : numpy.random.Generator
        The K-means seeds are drawn from it.
    n_init, max_iter : int
        K-means restarts and iterations (the authors' code: 10 and 20).

    Returns
    -------
    Merge
        One kept unit per cluster, every unit folded into it with scale 1 (the certificate
        of :func:`tropref.compress_layer` applies). ``info``: the K-means run.

    Raises
    ------
    TypeError
        For an unknown option (named) or a ``k`` that is not an integer.
    ValueError
        When ``k`` is outside ``[1, n]``.

    Notes
    -----
    tropref's reading of the paper: the BatchNorm before the ReLU is folded into the layer
    before the features are formed (the authors concatenate the unfused convolution, the
    BatchNorm's affine parameters and the consumers), and K-means is Lloyd's with k-means‖
    seeding on the raw features (the authors run Hartigan's K-means after a full-rank PCA,
    which is a rotation). Coupled channels of a residual stream are folded by
    ``compress_network(coupled=True)``.

    References
    ----------
    .. [1] D. Wang, L. Šikić, L. Thiele, O. Saukh, "Forget the Data and Fine-Tuning! Just
           Fold the Network to Compress", ICLR 2025.

    Examples
    --------
    >>> import numpy as np
    >>> import tropref
    >>> W = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    >>> res = tropref.compress_layer(W, None, 2, W_next=np.ones((1, 3)), method="model_folding", seed=0)
    >>> res.assignment.tolist(), res.W.tolist()
    ([0, 0, 1], [[1.0, 0.05], [0.0, 1.0]])
    """
    return _fold(problem, k, rng, n_init, max_iter, repair=False, options=options, name="model_folding")


def model_folding_ar(
    problem: LayerProblem, k: int, *, rng: np.random.Generator, n_init: int = 10, max_iter: int = 20, **options: Any
) -> Merge:
    """Model Folding with Fold-AR, its data-free repair of the merged units' variance.

    The units are clustered on their normalised input vectors ``(w_j − μ_j e) / σ_j``
    (robust-scaled per feature, as the authors' code does), then every cluster becomes
    ``σ̄_C r_C Σ_C (w_j − μ_j e) / (σ_j |C|) + μ̄_C e`` (module notes; ``e`` the bias
    coordinate) and the next layer reads it with the sum of the members' columns. Without
    statistics (no BatchNorm before the ReLU) every unit counts as ``μ_j = 0``, ``σ_j = 1``.

    Parameters, Returns, Raises
        As :func:`model_folding`.

    References
    ----------
    .. [1] D. Wang, L. Šikić, L. Thiele, O. Saukh, "Forget the Data and Fine-Tuning! Just
           Fold the Network to Compress", ICLR 2025 (Fold-AR, section 4).

    Examples
    --------
    Two orthogonal units read by one consumer: their features (rows and columns) have cosine
    ``ρ̄ = 1/2``, so the average is rescaled by ``√(2 / (1 + ρ̄)) = 1.1547``.

    >>> import numpy as np
    >>> import tropref
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> res = tropref.compress_layer(W, None, 1, W_next=np.ones((1, 2)), method="model_folding_ar", seed=0)
    >>> np.round(res.W, 4).tolist()
    [[0.5774, 0.5774]]
    """
    return _fold(problem, k, rng, n_init, max_iter, repair=True, options=options, name="model_folding_ar")


def _fold(
    problem: LayerProblem,
    k: int,
    rng: np.random.Generator,
    n_init: int,
    max_iter: int,
    *,
    repair: bool,
    options: dict[str, Any],
    name: str,
) -> Merge:
    if options:
        raise TypeError(f"method {name!r} got unknown option(s) {sorted(options)}")
    n = problem.n
    k = check_int("k", k, 1, n)
    n_init = check_int("n_init", n_init, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    xp = problem.xp
    A = to_numpy(problem.inputs).astype(np.float64)
    V = to_numpy(problem.outgoing).astype(np.float64)
    # everything that shares the unit's channel axis: its input vector and the consumers' columns
    described = np.concatenate([A, np.moveaxis(V, 1, 0).reshape(n, -1)], axis=1)
    if repair:
        mean, std = problem.moments if problem.moments is not None else (np.zeros(n), np.ones(n))
        spread = np.where(std > 0, std, 1.0)
        normalised = A.copy()
        normalised[:, -1] -= mean
        normalised /= spread[:, None]
    features = _robust_scale(normalised) if repair else described
    labels, run = cluster_labels(
        asarray_like(features, xp, problem.inputs), k, None, rng, n_init=n_init, max_iter=max_iter
    )
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    if repair:
        rho = _mean_pairwise_cosine(described, labels, k)
        # 1 + (|C| − 1) ρ̄ = ‖Σ_C u_j‖² / |C| >= 0; where the members cancel, the average is
        # (nearly) zero and there is no spread to give back
        denom = 1.0 + (sizes - 1.0) * rho
        gain = np.where(denom > 1e-9 * sizes, np.sqrt(sizes / np.where(denom > 0, denom, 1.0)), 1.0)
        sigma_bar = np.bincount(labels, weights=spread, minlength=k) / sizes
        mu_bar = np.bincount(labels, weights=mean, minlength=k) / sizes
        kept = _segment_mean(normalised, labels, k) * (sigma_bar * gain)[:, None]
        kept[:, -1] += mu_bar
    else:
        kept = _segment_mean(A, labels, k)
    inputs = asarray_like(kept, xp, problem.inputs)
    scale = asarray_like(np.ones(n), xp, problem.inputs)
    assignment = xp.asarray(labels, dtype=xp.int64, device=device(inputs))
    return Merge(assignment, None, inputs, scale=scale, info={"repair": repair, "clustering": run})


def _segment_mean(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return segment_sum(np, X, labels, k) / np.bincount(labels, minlength=k)[:, None]


def _robust_scale(X: np.ndarray) -> np.ndarray:
    """``(x − median) / IQR`` per feature (scikit-learn's ``RobustScaler``; a zero IQR scales by 1)."""
    q1, median, q3 = np.percentile(X, [25, 50, 75], axis=0)
    iqr = q3 - q1
    return (X - median) / np.where(iqr > 0, iqr, 1.0)


def _mean_pairwise_cosine(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``ρ̄_C``: the mean cosine over ordered pairs of distinct members (0 for a single unit)."""
    norms = np.linalg.norm(X, axis=1)
    U = X / np.where(norms > 0, norms, 1.0)[:, None]
    total = segment_sum(np, U, labels, k)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    # Σ_{j≠l} u_j · u_l = ‖Σ u_j‖² − Σ ‖u_j‖²
    squares = np.bincount(labels, weights=np.sum(U * U, axis=1), minlength=k)
    pairs = sizes * (sizes - 1.0)
    return np.where(pairs > 0, (np.sum(total * total, axis=1) - squares) / np.where(pairs > 0, pairs, 1.0), 0.0)


FOLDING = {"model_folding": model_folding, "model_folding_ar": model_folding_ar}
