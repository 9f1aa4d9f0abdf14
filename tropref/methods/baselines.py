"""Data-free baselines: magnitude pruning, random selection, CUP and Neuron Merging.

Each function has the signature of every tropref method,
``method(problem, k, *, rng, **options) -> Merge`` (see :mod:`tropref.methods.base`), and
is selected with ``method="l1"``, ``"random"``, ``"cup"`` or ``"neuron_merging"``.

All four keep ``k`` of the layer's units, each kept unit with its *original* input vector
except CUP's averaged representative, and fold every unit into at most one kept unit with a
non-negative coefficient. So the Proposition F certificate of ``compress_layer`` applies to
all of them (``Merge.single_fold`` is True): unit ``j`` folded with coefficient ``f_j`` into
kept unit ``c`` costs ``‖w_j − f_j w̃_c‖ · Σ_s |V[i, j, s]|`` on output ``i``, and a dropped
unit costs its whole norm.

Selections are decided on the host from small arrays (norms, similarities, linkages) and
applied on the device by gathers; no array is modified in place.

Provenance: the papers' ideas are followed; where a paper leaves a choice open (which norm,
which features, which representative, how the kept unit's outgoing weights change), the
choice made here is stated in the function's docstring and in ``docs/baselines.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import Array, asarray_like, check_int, device, to_numpy
from .._blocks import row_blocks, segment_sum, take_rows
from .base import LayerProblem, Merge, check_no_options
from .partition import canonical_labels

__all__ = ["l1", "random", "cup", "neuron_merging", "BASELINES"]


# ----------------------------------------------------------------------------- helpers


def _row_norms(xp: Any, X: Array, order: int) -> np.ndarray:
    """Host float64 ``ord``-norms of the rows of ``X`` (1 or 2)."""
    # block by block (cache-sized temporaries), and in float64 on the host
    return np.concatenate(
        [to_numpy(xp.linalg.vector_norm(blk, ord=order, axis=1)).astype(np.float64) for blk in row_blocks(X)]
    )


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, ascending; ties go to the lower index."""
    order = np.argsort(-scores, kind="stable")[:k]
    return np.sort(order)


def _build(
    problem: LayerProblem,
    keep: np.ndarray,
    assign: np.ndarray,
    scale: np.ndarray,
    info: dict[str, Any],
    inputs: Array | None = None,
) -> Merge:
    """A :class:`Merge` from host decisions.

    ``keep`` (k,) are the kept units (in the order of the new layer), ``assign`` (n,) the
    position in ``keep`` each unit folds into (-1: dropped), ``scale`` (n,) its coefficient.
    """
    xp, A = problem.xp, problem.inputs
    assign = np.asarray(assign, dtype=np.int64)
    scale = np.where(assign < 0, 0.0, np.asarray(scale, dtype=np.float64))
    if inputs is None:
        inputs = take_rows(xp, A, keep)
    assignment = xp.asarray(assign, dtype=xp.int64, device=device(A))
    if np.all(scale >= 0):  # one non-negative entry per row: the fold is (assignment, scale)
        return Merge(assignment, None, inputs, info=info, scale=asarray_like(scale, xp, A))
    dense_fold = np.zeros((assign.size, int(keep.size)), dtype=np.float64)
    rows = np.flatnonzero(assign >= 0)
    dense_fold[rows, assign[rows]] = scale[rows]
    return Merge(assignment, asarray_like(dense_fold, xp, A), inputs, single_fold=False, info=info)


def _prune(problem: LayerProblem, keep: np.ndarray, info: dict[str, Any]) -> Merge:
    """Keep ``keep`` unchanged and drop every other unit without compensation."""
    n = problem.n
    assign = np.full(n, -1, dtype=np.int64)
    assign[keep] = np.arange(keep.size)
    return _build(problem, keep, assign, np.ones(n), info)


# ----------------------------------------------------------------------------- methods


def l1(problem: LayerProblem, k: int, *, rng: np.random.Generator, include_bias: bool = False, **options: Any) -> Merge:
    """Magnitude pruning: keep the ``k`` units whose incoming weights have the largest L1 norm.

    Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017.
    The kept units and their outgoing weights are unchanged; the others are dropped without
    compensation (their fold rows are zero).

    Parameters
    ----------
    problem : LayerProblem
        The layer in canonical form.
    k : int
        Number of units kept, ``1 <= k <= n``.
    rng : numpy.random.Generator
        Unused (the method is deterministic; ties go to the lower unit index).
    include_bias : bool, default False
        Rank by the L1 norm of ``(W[j], b[j])`` instead of the filter weights ``W[j]`` alone
        (Li et al. rank the kernel weights; Neuron Merging's code ranks weights and bias).

    Returns
    -------
    Merge
        ``info``: ``criterion``, ``kept`` (unit indices).

    Raises
    ------
    TypeError
        When ``k`` is not an integer, or an unknown option is given (named in the message).
    ValueError
        When ``k`` is outside ``[1, n]``.

    See Also
    --------
    random : the unstructured floor.
    neuron_merging : the same ranking, with pruned units folded into kept ones.
    tropref.compress_layer : runs it as ``method="l1"`` and certifies the result.

    References
    ----------
    .. [1] H. Li, A. Kadav, I. Durdanovic, H. Samet, H. P. Graf, "Pruning Filters for
           Efficient ConvNets", ICLR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> from tropref.methods.baselines import l1
    >>> A = np.array([[3.0, 0.0, 1.0], [0.5, 0.5, 0.0], [-2.0, 2.0, 0.0]])  # rows (W[j], b[j])
    >>> V = np.ones((1, 3, 1))                                             # one dense output
    >>> merge = l1(LayerProblem(xp, A, V), 2, rng=np.random.default_rng(0))
    >>> merge.info["kept"], merge.assignment.tolist()   # L1 norms of W[j]: 3, 1, 4
    ([0, 2], [0, -1, 1])
    >>> merge.fold.tolist()                             # unit 1 is dropped: a zero row
    [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]

    """
    check_no_options("l1", options)
    k = check_int("k", k, 1, problem.n)
    A = problem.inputs
    X = A if include_bias else A[:, :-1]
    keep = _top_k(_row_norms(problem.xp, X, 1), k)
    return _prune(problem, keep, {"criterion": "l1", "include_bias": bool(include_bias), "kept": keep.tolist()})


def random(problem: LayerProblem, k: int, *, rng: np.random.Generator, **options: Any) -> Merge:
    """Random selection: keep ``k`` units drawn uniformly without replacement from ``rng``.

    The floor every structured method should beat. Dropped units are not compensated.

    Parameters
    ----------
    problem : LayerProblem
    k : int
        Number of units kept, ``1 <= k <= n``.
    rng : numpy.random.Generator
        Host generator (``compress_layer`` makes it from ``seed``).

    Returns
    -------
    Merge
        ``info``: ``kept``.

    Raises
    ------
    TypeError
        When ``k`` is not an integer, or an unknown option is given (named in the message).
    ValueError
        When ``k`` is outside ``[1, n]``.

    See Also
    --------
    l1 : magnitude pruning, deterministic.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> from tropref.methods.baselines import random
    >>> problem = LayerProblem(xp, np.eye(4), np.ones((1, 4, 1)))
    >>> a = random(problem, 2, rng=np.random.default_rng(7))
    >>> b = random(problem, 2, rng=np.random.default_rng(7))
    >>> a.info["kept"] == b.info["kept"], len(a.info["kept"])   # same seed, same units
    (True, 2)

    """
    check_no_options("random", options)
    k = check_int("k", k, 1, problem.n)
    keep = np.sort(rng.choice(problem.n, size=k, replace=False)).astype(np.int64)
    return _prune(problem, keep, {"kept": keep.tolist()})


def _cut(Z: np.ndarray, n: int, k: int) -> np.ndarray:
    """Labels ``0..k-1`` of the ``k`` clusters after the first ``n - k`` merges of ``Z``.

    Replaying the merges with a union-find always gives exactly ``k`` clusters, also with
    tied or non-monotone merge heights, where ``fcluster(..., "maxclust")`` may give fewer.
    """
    parent = np.arange(2 * n - 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for step in range(n - k):
        a, b = int(Z[step, 0]), int(Z[step, 1])
        parent[root(a)] = n + step
        parent[root(b)] = n + step
    roots = np.array([root(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)  # host, on a small integer array
    # number clusters by their smallest member, so that the result reads in unit order
    return canonical_labels(labels.astype(np.int64), k)


def cup(
    problem: LayerProblem,
    k: int,
    *,
    rng: np.random.Generator,
    linkage: str = "ward",
    features: str = "in+out",
    representative: str = "auto",
    **options: Any,
) -> Merge:
    """CUP: hierarchical clustering of the units on incoming and outgoing weights.

    Duggal, Xiao, Vuduc, Sun, "CUP: Cluster Pruning for Compressing Deep Neural
    Networks", 2019 (arXiv 1911.08630). The units are clustered agglomeratively
    (``scipy.cluster.hierarchy.linkage``) and the tree is cut at exactly ``k`` clusters (the
    fixed-count variant; CUP's global threshold is a budget rule, left to the network level).
    Each cluster becomes one unit, its representative, and every member folds into it with
    coefficient 1: its activation is replaced by the representative's, so the next layer
    reads the representative through the sum of the members' outgoing weights.

    Reconstructed choices (tropref's reading; the paper leaves them open or is not at hand):

    - features of unit ``j``: its input vector ``w_j = (W[j], b[j])`` and its flattened
      outgoing weights ``V[:, j, :]``, each block divided by the root-mean-square row norm
      of that block over the layer so that the two blocks weigh alike;
    - representative: the member with the largest ``‖w_j‖`` for a unit read at several
      positions (``s > 1``: a convolution followed by a convolution or a flatten), the
      members' mean input vector for a dense unit (``s = 1``), following CUP's conv / dense
      rule; ``representative="max_norm"`` or ``"mean"`` forces one.

    Parameters
    ----------
    problem : LayerProblem
    k : int
        Number of clusters (kept units), ``1 <= k <= n``. ``k = n`` returns the layer unchanged.
    rng : numpy.random.Generator
        Unused (deterministic).
    linkage : str, default "ward"
        Any method of ``scipy.cluster.hierarchy.linkage`` (Euclidean metric).
    features : {"in+out", "in"}
        Cluster on incoming and outgoing weights (CUP) or incoming weights only.
    representative : {"auto", "max_norm", "mean"}

    Returns
    -------
    Merge
        ``info``: ``linkage``, ``features``, ``representative``, ``cluster_sizes``.

    Raises
    ------
    TypeError
        When ``k`` is not an integer, or an unknown option is given (named in the message).
    ValueError
        When ``k`` is outside ``[1, n]``; or ``linkage``, ``features`` or ``representative``
        is not one of the values listed above.

    See Also
    --------
    neural_path_kmeans : K-means on the same kind of features (the predecessor's method).
    tropref.compress_layer : runs it as ``method="cup"`` and certifies the result.

    References
    ----------
    .. [1] R. Duggal, C. Xiao, R. Vuduc, J. Sun, "CUP: Cluster Pruning for Compressing Deep
           Neural Networks", arXiv:1911.08630, 2019 (IEEE BigData 2021).

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> from tropref.methods.baselines import cup
    >>> A = np.array([[1.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.0]])
    >>> merge = cup(LayerProblem(xp, A, np.ones((1, 4, 1))), 2, rng=np.random.default_rng(0))
    >>> merge.assignment.tolist(), merge.info["cluster_sizes"]
    ([0, 0, 1, 1], [2, 2])
    >>> merge.inputs                       # dense units: each cluster's mean input vector
    array([[1.05, 0.  , 0.  ],
           [0.  , 0.95, 0.  ]])

    """
    from scipy.cluster import hierarchy

    check_no_options("cup", options)
    n = problem.n
    k = check_int("k", k, 1, n)
    if linkage not in ("single", "complete", "average", "weighted", "centroid", "median", "ward"):
        raise ValueError(f"`linkage` must be a scipy.cluster.hierarchy method, got {linkage!r}")
    if features not in ("in+out", "in"):
        raise ValueError(f"`features` must be 'in+out' or 'in', got {features!r}")
    if representative not in ("auto", "max_norm", "mean"):
        raise ValueError(f"`representative` must be 'auto', 'max_norm' or 'mean', got {representative!r}")
    xp, A, V = problem.xp, problem.inputs, problem.outgoing
    if representative == "auto":
        representative = "max_norm" if int(V.shape[2]) > 1 else "mean"

    if k == n:
        labels = np.arange(n, dtype=np.int64)
    else:
        blocks = [to_numpy(A).astype(np.float64)]
        if features == "in+out":
            m, _, s = (int(d) for d in V.shape)
            Vt = xp.reshape(xp.permute_dims(V, (1, 0, 2)), (n, m * s))
            blocks.append(to_numpy(Vt).astype(np.float64))
        feats = []
        for blk in blocks:
            rms = float(np.sqrt(np.mean(np.sum(blk * blk, axis=1))))
            feats.append(blk / rms if rms > 0 else blk)
        Z = hierarchy.linkage(np.concatenate(feats, axis=1), method=linkage, metric="euclidean")
        labels = _cut(Z, n, k)

    sizes = np.bincount(labels, minlength=k)
    info = {
        "linkage": linkage,
        "features": features,
        "representative": representative,
        "cluster_sizes": sizes.tolist(),
    }
    if representative == "max_norm":
        norms = _row_norms(xp, A, 2)
        keep = np.empty(k, dtype=np.int64)
        for c in range(k):
            members = np.flatnonzero(labels == c)
            keep[c] = members[np.argmax(norms[members])]
        info["kept"] = keep.tolist()
        return _build(problem, keep, labels, np.ones(n), info)
    # mean representative: the members' input vectors summed per cluster (a segment sum on
    # the device, not a (k, n) averaging product), divided by the cluster's size
    inputs = segment_sum(xp, A, labels, k, axis=0) / asarray_like(sizes, xp, A)[:, None]
    keep = np.array([np.flatnonzero(labels == c)[0] for c in range(k)], dtype=np.int64)
    return _build(problem, keep, labels, np.ones(n), info, inputs=inputs)


def neuron_merging(
    problem: LayerProblem,
    k: int,
    *,
    rng: np.random.Generator,
    criterion: str = "l1",
    threshold: float | None = 0.45,
    **options: Any,
) -> Merge:
    """Neuron Merging: fold every pruned unit into its most cosine-similar kept unit.

    Kim, Kim, Park, Jeon, "Neuron Merging: Compensating for Pruned Neurons", NeurIPS 2020.
    Data-free. The ``k`` kept units are the ones with the largest norm of their input vector
    ``w_j = (W[j], b[j])`` (weights and bias together, as the authors' code does for dense
    layers). A pruned unit ``j`` is compared with every kept unit ``c`` by the cosine of
    ``w_j`` and ``w̃_c``; if the best cosine reaches ``threshold`` it is folded into that unit
    with the norm ratio ``‖w_j‖ / ‖w̃_c‖``: its activation is replaced by
    ``(‖w_j‖ / ‖w̃_c‖) relu(w̃_c · u)``, which is exact when ``w_j`` is a positive multiple of
    ``w̃_c``. Below the threshold the unit is dropped. The authors' LeNet-300-100 /
    Fashion-MNIST script uses ``threshold=0.45`` and the L1 criterion, the defaults here.

    For convolutions the authors add a BatchNorm-dependent bias term to the similarity; in
    tropref BatchNorm is folded into ``(W, b)`` first, so the cosine on the full input
    vector (filter and bias) plays that part. This is tropref's reading.

    Parameters
    ----------
    problem : LayerProblem
    k : int
        Number of units kept, ``1 <= k <= n``.
    rng : numpy.random.Generator
        Unused (deterministic).
    criterion : {"l1", "l2"}
        Norm of ``w_j`` that ranks the units.
    threshold : float in [-1, 1] or None
        Smallest cosine similarity at which a pruned unit is merged; ``None`` merges every
        pruned unit (even at a negative cosine, as the authors' code does for a threshold of 0).

    Returns
    -------
    Merge
        ``info``: ``criterion``, ``threshold``, ``kept``, ``merged`` (number of pruned units
        folded into a kept one), ``dropped``.

    Raises
    ------
    TypeError
        When ``k`` is not an integer, or an unknown option is given (named in the message).
    ValueError
        When ``k`` is outside ``[1, n]``; or ``criterion`` is not ``"l1"`` or ``"l2"``, or
        ``threshold`` is outside ``[-1, 1]``.

    See Also
    --------
    l1 : the same selection, without compensation.
    tropref.compress_layer : runs it as ``method="neuron_merging"`` and certifies the result.

    References
    ----------
    .. [1] W. Kim, S. Kim, M. Park, G. Jeon, "Neuron Merging: Compensating for Pruned
           Neurons", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> from tropref.methods.baselines import neuron_merging
    >>> A = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.5]])  # unit 2 = unit 0 / 2
    >>> merge = neuron_merging(LayerProblem(xp, A, np.ones((1, 3, 1))), 2, rng=np.random.default_rng(0))
    >>> merge.assignment.tolist(), merge.fold.tolist()    # folded with ‖w_2‖ / ‖w_0‖ = 0.5: exact
    ([0, 1, 0], [[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]])

    """
    check_no_options("neuron_merging", options)
    n = problem.n
    k = check_int("k", k, 1, n)
    if criterion not in ("l1", "l2"):
        raise ValueError(f"`criterion` must be 'l1' or 'l2', got {criterion!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
            raise TypeError(f"`threshold` must be a number or None, got {type(threshold).__name__}")
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"`threshold` must lie in [-1, 1], got {threshold}")
    xp, A = problem.xp, problem.inputs
    keep = _top_k(_row_norms(xp, A, 1 if criterion == "l1" else 2), k)
    norms = _row_norms(xp, A, 2)
    # cosines of every unit with the kept ones: (n, k) on the device, then on the host
    dots = to_numpy(xp.matmul(A, xp.permute_dims(take_rows(xp, A, keep), (1, 0)))).astype(np.float64)
    kept_norms = norms[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dots / (norms[:, None] * kept_norms[None, :])
    cos = np.nan_to_num(cos, nan=-np.inf)
    best = np.argmax(cos, axis=1)
    best_cos = cos[np.arange(n), best]

    assign = np.full(n, -1, dtype=np.int64)
    scale = np.zeros(n, dtype=np.float64)
    assign[keep] = np.arange(k)
    scale[keep] = 1.0
    is_kept = np.zeros(n, dtype=bool)
    is_kept[keep] = True
    ok = ~is_kept & (kept_norms[best] > 0) & np.isfinite(best_cos)
    if threshold is not None:
        ok &= best_cos >= float(threshold)
    assign[ok] = best[ok]
    scale[ok] = norms[ok] / kept_norms[best[ok]]
    info = {
        "criterion": criterion,
        "threshold": None if threshold is None else float(threshold),
        "kept": keep.tolist(),
        "merged": int(np.count_nonzero(ok)),
        "dropped": int(n - k - np.count_nonzero(ok)),
    }
    return _build(problem, keep, assign, scale, info)


BASELINES = {
    "l1": l1,
    "random": random,
    "cup": cup,
    "neuron_merging": neuron_merging,
}
"""The data-free baselines, by the name ``method=`` selects them with."""
