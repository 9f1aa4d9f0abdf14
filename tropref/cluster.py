"""Weighted K-means, its Weiszfeld refinement and weighted Ward, written once against the array API.

Public functions
----------------
kmeans(X, k, ...)
    Weighted K-means: k-means‖ (default) or k-means++ seeding, Lloyd iterations, restarts.
weiszfeld(X, labels, k, ...)
    Alternating minimisation of the *unsquared* weighted objective, from a partition.
ward(X, k, ...)
    Weighted Ward agglomerative clustering, cut at ``k`` clusters (deterministic, host).
KMeansResult
    What ``kmeans`` and ``weiszfeld`` return.

TropNNC clusters the directions of a layer's neurons, weighted by their masses: ``X`` is
``(n, d)`` with one neuron per row and ``n`` at most a few thousand, while ``d`` (the
fan-in) is often larger than ``n``. Two representations of the point set follow:

- *direct*: distances ``‖x_i − c‖² = ‖x_i‖² − 2 x_i·c + ‖c‖²`` from one ``(n × d)(d × k)``
  product per Lloyd iteration, computed in row chunks so that no ``n × k`` (let alone
  ``n × k × d``) temporary exceeds ``max_bytes``;
- *Gram*: with ``G = X Xᵀ`` computed once, every centre is ``c = Aᵀ X`` for a weight
  matrix ``A`` (``n × k``), and ``‖x_i − c‖² = G_ii − 2 (G A)_ic + (Aᵀ G A)_cc``: one
  ``(n × n)(n × k)`` product per iteration, distances between data points (all that
  seeding needs) are read from ``G`` without any product, and the centres are formed once.

Randomness is drawn on the host from ``numpy.random.default_rng(seed)``; only indices and
probabilities cross to the device, so a seed gives the same labels on every backend.
Host round trips are limited to ``(n,)``-sized vectors (labels, distances) and scalars.

The work is split by job into private modules: ``_points`` (validation, the two
representations), ``_seeding`` (k-means‖, k-means++), ``_lloyd`` (Lloyd iterations,
restarts, the mode choice), ``_weiszfeld`` and ``_ward``; this module validates the
arguments and calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._array import Array, check_int, namespace, to_numpy
from ._lloyd import choose_gram, restarts
from ._points import Points, check_points, check_tol
from ._seeding import INITS
from ._seeds import resolve_seed
from ._ward import cut, merges, ward_costs
from ._weiszfeld import iterate

__all__ = ["KMeansResult", "kmeans", "ward", "weiszfeld"]


@dataclass(frozen=True)
class KMeansResult:
    """Result of :func:`kmeans` or :func:`weiszfeld`.

    Attributes
    ----------
    labels : array, shape (n,), int64
        Cluster of every point, on the device of ``X``. When ``n >= k`` every cluster
        ``0 .. k-1`` is non-empty.
    centers : array, shape (k, d)
        Centres, in the dtype and on the device of ``X``: the weighted means of the
        clusters (``kmeans``) or their approximate weighted geometric medians
        (``weiszfeld``).
    objective : float
        ``Σ_i w_i ‖x_i − c_{l_i}‖²`` for ``kmeans``, ``Σ_i w_i ‖x_i − c_{l_i}‖`` (unsquared)
        for ``weiszfeld``, computed from the returned labels and centres.
    n_iter : int
        Iterations run (of the best restart for ``kmeans``).
    seed : int
        The seed used (drawn from OS entropy when ``seed=None`` was given); ``-1`` for
        ``weiszfeld``, which draws nothing.
    """

    labels: Array
    centers: Array
    objective: float
    n_iter: int
    seed: int


def kmeans(
    X: Array,
    k: int,
    *,
    weights: Array | None = None,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: str = "k-means||",
    seed: int | None = None,
    max_bytes: int = 64 * 2**20,
    _mode: str | None = None,
) -> KMeansResult:
    """Weighted K-means: k-means‖ or k-means++ seeding, Lloyd iterations, restarts.

    Minimises the weighted within-cluster sum of squares

        φ(l, C) = Σ_i w_i ‖x_i − c_{l_i}‖²

    by Lloyd's alternation: assign every point to its nearest centre, then move every centre
    to the weighted mean ``c = Σ_{i∈c} w_i x_i / Σ_{i∈c} w_i`` of its cluster. Neither step
    raises φ. Iterations stop when the labels repeat, when ``Σ_c ‖c_new − c_old‖²`` is at most
    ``tol`` times the mean per-feature variance of ``X`` (scikit-learn's rule), or after
    ``max_iter``; the returned centres are always the weighted means of the returned labels.
    An empty cluster receives the farthest point of a cluster with two or more, so every
    cluster is non-empty (duplicated points included).

    Seeding (``init``):

    - ``"k-means++"``: ``c_1`` drawn with probability ∝ ``w_i``, then each next centre by
      weighted D² sampling, ``P(x_i) ∝ w_i D(x_i)²`` with ``D`` the distance to the nearest
      chosen centre, keeping the best of ``2 + ⌊ln k⌋`` draws (greedy k-means++, as in
      scikit-learn).
    - ``"k-means||"`` (Bahmani et al. 2012): from one centre drawn ∝ ``w_i``, 5 rounds each
      keep every point independently with probability ``min(1, ℓ w_i D(x_i)² / Σ_j w_j D(x_j)²)``,
      ``ℓ = 2k``, each round's distances in one batched product; every candidate is weighted
      by the total weight of the points nearest to it, and greedy weighted k-means++ on the
      candidates picks the ``k`` seeds.

    Two representations of the same computation (results agree to rounding): *direct* (one
    ``X Cᵀ`` product per iteration, in row chunks) and *Gram*, with ``G = X Xᵀ`` formed once:
    a centre is ``c = Aᵀ X`` for a weight matrix ``A`` (``A_ic = w_i / W_c`` on the cluster), so

        ‖x_i − c‖² = G_ii − 2 (G A)_ic + (Aᵀ G A)_cc,

    one ``(n × n)(n × k)`` product per iteration, distances between points read from ``G``,
    centres formed once at the end. Gram mode is chosen when ``n <= d`` and a flop count
    predicts it cheaper (usually unless ``k`` is a small fraction of ``n``).

    Parameters
    ----------
    X : array, shape (n, d)
        Points, real floating (float32 or float64), finite. Not modified.
    k : int
        Number of clusters, ``1 <= k <= n``.
    weights : array, shape (n,), optional
        Positive finite weights ``w_i`` (all ones by default).
    n_init : int
        Restarts from independent seedings; the lowest objective wins.
    max_iter : int
        Lloyd iterations per restart, at most.
    tol : float
        Convergence threshold on the squared centre shift, relative to the mean per-feature
        variance of ``X``.
    init : {"k-means||", "k-means++"}
        Seeding.
    seed : int or None
        Seed of the host generator ``numpy.random.default_rng``; ``None`` draws one, reported
        in the result.
    max_bytes : int
        Size above which distance temporaries are computed in row chunks.

    Returns
    -------
    KMeansResult
        Labels, centres (weighted means of the clusters), φ, iterations of the best restart,
        seed.

    Raises
    ------
    TypeError
        When ``X`` or ``weights`` is not a real floating array, they come from different
        libraries, or ``k``, ``n_init``, ``max_iter`` or ``seed`` is not an integer.
    ValueError
        When ``X`` is not two-dimensional or holds NaN/inf, ``weights`` has the wrong shape or
        a non-positive or non-finite entry, ``k`` is outside ``[1, n]``, ``init`` is unknown,
        ``n_init`` or ``max_iter`` is below 1, ``tol`` or ``seed`` is negative, or the arrays
        live on different devices. Each message names the argument.

    See Also
    --------
    weiszfeld : lowers the unsquared objective (TropNNC's certificate) from these labels.
    tropref.methods.tropnnc.tropnnc : clusters unit directions with these weights.

    References
    ----------
    .. [1] S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
    .. [2] D. Arthur, S. Vassilvitskii, "k-means++: The Advantages of Careful Seeding",
           SODA 2007.
    .. [3] B. Bahmani, B. Moseley, A. Vattani, R. Kumar, S. Vassilvitskii, "Scalable
           K-Means++", PVLDB 5(7), 2012.
    .. [4] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.cluster import kmeans
    >>> X = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]])
    >>> res = kmeans(X, 2, seed=0)
    >>> bool(res.labels[0] == res.labels[1] != res.labels[2] == res.labels[3])
    True
    >>> round(res.objective, 6)
    0.01
    """
    xp = namespace(X=X, weights=weights)
    w = check_points(xp, X, weights)
    n, d = (int(s) for s in X.shape)
    k = check_int("k", k, 1, n)
    n_init = check_int("n_init", n_init, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    tol = check_tol("tol", tol)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}, got {init!r}")
    seed = resolve_seed(seed)
    rng = np.random.default_rng(seed)
    if _mode is None:
        gram = choose_gram(n, d, k, n_init, max_iter, init)
    elif _mode in ("gram", "direct"):
        gram = _mode == "gram"
    else:
        raise ValueError(f"`_mode` must be 'gram', 'direct' or None, got {_mode!r}")
    P = Points(xp, X, w, gram, max_bytes)
    C, labels, n_iter, objective = restarts(P, k, init, n_init, max_iter, tol, rng)
    return KMeansResult(P.dev_array(labels, xp.int64), C, objective, n_iter, seed)


def weiszfeld(
    X: Array,
    labels: Array,
    k: int,
    *,
    weights: Array | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
    max_bytes: int = 64 * 2**20,
) -> KMeansResult:
    """Lower the unsquared weighted objective from a partition by Weiszfeld steps.

    TropNNC's certificate is the unsquared residual

        ψ(l, C) = Σ_i w_i ‖x_i − c_{l_i}‖,

    which K-means (squared distances) does not minimise. Starting from the weighted means of
    the partition ``labels``, each iteration

    1. moves every centre by one weighted Weiszfeld step toward the weighted geometric median
       of its cluster,

           c ← (Σ_{i∈c} w_i x_i / ‖x_i − c‖) / (Σ_{i∈c} w_i / ‖x_i − c‖),

       with Vardi and Zhang's guard when ``c`` coincides with points of total weight η: with
       ``R = Σ_{x_i ≠ c} w_i (x_i − c) / ‖x_i − c‖``, ``c`` stays if ``‖R‖ <= η`` (it is the
       median), else ``c ← (1 − η/‖R‖) T + (η/‖R‖) c`` with ``T`` the step over the other
       points;
    2. reassigns every point to its nearest centre.

    Both steps can only lower ψ in exact arithmetic; to make that hold in floating point too,
    a centre's move is kept only if its cluster's (correctly rounded) sum strictly decreases,
    a point moves only to a strictly nearer centre, and ψ is summed with ``math.fsum``. Empty
    clusters take the farthest point of a cluster with two or more. Stops when ψ falls by at
    most ``tol`` times itself in an iteration, or after ``max_iter`` iterations.

    Parameters
    ----------
    X : array, shape (n, d)
        Points, real floating, finite. Not modified.
    labels : array, shape (n,), integer
        Starting partition (e.g. :func:`kmeans` labels), values in ``[0, k)``.
    k : int
        Number of clusters, ``1 <= k <= n``.
    weights : array, shape (n,), optional
        Positive finite weights (all ones by default).
    max_iter : int
        Iterations (one Weiszfeld step and one reassignment each), at most.
    tol : float
        Relative decrease of ψ under which the iterations stop.
    max_bytes : int
        Size above which temporaries are computed in row chunks.

    Returns
    -------
    KMeansResult
        Labels, centres (approximate weighted geometric medians), ψ (unsquared), iterations,
        and ``seed = -1``.

    Raises
    ------
    TypeError
        When ``X`` or ``weights`` is not a real floating array, ``labels`` is not an integer
        array, the arrays come from different libraries, or ``k``/``max_iter`` is not an integer.
    ValueError
        When ``labels`` has the wrong shape or values outside ``[0, k)``, ``k`` is outside
        ``[1, n]``, ``max_iter`` is below 1, ``tol`` is negative, ``X`` or ``weights`` is
        invalid as for :func:`kmeans`, or the arrays live on different devices.

    See Also
    --------
    kmeans : the squared objective, and the usual starting partition.

    References
    ----------
    .. [1] E. Weiszfeld, "Sur le point pour lequel la somme des distances de n points donnés
           est minimum", Tôhoku Math. J. 43, 1937.
    .. [2] Y. Vardi, C.-H. Zhang, "The multivariate L1-median and associated data depth",
           PNAS 97(4), 2000.
    .. [3] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.cluster import weiszfeld
    >>> X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    >>> w = np.array([3.0, 1.0, 1.0, 1.0])
    >>> res = weiszfeld(X, np.zeros(4, dtype=np.int64), 1, weights=w, max_iter=200, tol=0.0)
    >>> bool(np.allclose(res.centers, [[0.0, 0.0]], atol=1e-9))  # the weighted median, not the mean
    True
    >>> round(res.objective, 6)  # 1 + 1 + 10·√2
    16.142136
    """
    xp = namespace(X=X, labels=labels, weights=weights)
    w = check_points(xp, X, weights)
    n = int(X.shape[0])
    k = check_int("k", k, 1, n)
    max_iter = check_int("max_iter", max_iter, 1)
    tol = check_tol("tol", tol)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    if tuple(labels.shape) != (n,):
        raise ValueError(f"`labels` must have shape ({n},) to match `X`, got {tuple(labels.shape)}")
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"`labels` must have an integer dtype, got {labels.dtype}")
    L = to_numpy(labels).astype(np.int64)
    if L.min() < 0 or L.max() >= k:
        raise ValueError(f"`labels` must lie in [0, {k}), got values in [{L.min()}, {L.max()}]")
    P = Points(xp, X, w, False, max_bytes)
    L, C, obj, n_iter = iterate(P, L, k, max_iter, tol)
    return KMeansResult(P.dev_array(L, xp.int64), C, obj, n_iter, -1)


def ward(X: Array, k: int, *, weights: Array | None = None) -> np.ndarray:
    r"""Weighted Ward agglomerative clustering, cut at ``k`` clusters (host labels).

    Starting from singletons, repeatedly merge the two clusters whose union raises the
    weighted within-cluster sum of squares

    .. math:: \phi(l) = \sum_i w_i \lVert x_i - \mu_{l_i} \rVert^2, \qquad
              \mu_c = \sum_{i \in c} w_i x_i \Big/ \sum_{i \in c} w_i,

    the least; merging ``a`` and ``b`` raises it by
    :math:`\Delta(a, b) = \frac{W_a W_b}{W_a + W_b} \lVert \mu_a - \mu_b \rVert^2` with
    :math:`W_c = \sum_{i \in c} w_i`. The merge costs are updated by the Lance-Williams
    formula, which holds with weights in place of counts,

    .. math:: \Delta(a \cup b, c) = \frac{(W_a + W_c)\,\Delta(a, c) + (W_b + W_c)\,\Delta(b, c)
              - W_c\,\Delta(a, b)}{W_a + W_b + W_c},

    and the merges are found by the nearest-neighbour chain algorithm (Ward's cost is
    reducible, so the chain's merges, sorted by cost, are the greedy sequence). The
    partition is the state after the ``n - k`` cheapest merges.

    The algorithm is deterministic and draws no random numbers: the same points give the
    same partition, whatever the seed. It runs on the host with a float64 ``n × n`` cost
    matrix (``8 n²`` bytes: 134 MB for ``n = 4096``) in ``O(n² d)`` time for one Gram
    matrix, formed straight into the cost matrix (no float64 copy of ``X``, no second
    ``n × n`` temporary), and ``O(n²)`` for the merges. The Gram is computed in the dtype of ``X``: float32 points
    get a float32 Gram, with the pairs too close for float32 recomputed in float64, so every
    initial cost is within a relative ``2⁻¹⁰`` of the float64 one; merges whose costs are
    that close can come in another order than with float64 points (they are near-ties).

    Parameters
    ----------
    X : array, shape (n, d)
        Points, real floating, finite. Not modified.
    k : int
        Number of clusters, ``1 <= k <= n``.
    weights : array, shape (n,), optional
        Positive finite weights (all ones by default: plain Ward, as
        ``scipy.cluster.hierarchy.linkage(X, "ward")``).

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Cluster of every point, numbered ``0 .. k-1`` in the order of their smallest member.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or holds NaN/inf, if ``weights`` has the wrong shape or a
        non-positive entry, or if ``k`` is outside ``[1, n]``.
    TypeError
        If ``X`` or ``weights`` is not real floating.

    References
    ----------
    J. H. Ward, "Hierarchical grouping to optimize an objective function", JASA 58 (1963).
    F. Murtagh, P. Contreras, "Algorithms for hierarchical clustering: an overview",
    WIREs Data Mining Knowl. Discov. 2 (2012) (nearest-neighbour chain).

    See Also
    --------
    kmeans : the seeded alternative, for layers too large for an ``n × n`` matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.cluster import ward
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2], [9.0, 0.0]])
    >>> ward(X, 3).tolist()
    [0, 0, 1, 1, 2]
    >>> ward(X, 2, weights=np.array([1.0, 1.0, 1.0, 1.0, 100.0])).tolist()
    [0, 0, 0, 0, 1]
    """
    xp = namespace(X=X, weights=weights)
    w = check_points(xp, X, weights)
    n = int(X.shape[0])
    k = check_int("k", k, 1, n)
    if k == n:
        return np.arange(n, dtype=np.int64)
    # Host algorithm (sequential merges); only the (n, d) points and (n,) weights cross.
    cost = ward_costs(to_numpy(X), w)
    np.fill_diagonal(cost, np.inf)
    return cut(merges(cost, w), n, k)
