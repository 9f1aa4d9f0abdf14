"""The predecessor's methods (Misiakos et al., ICLR 2022), as reconstructed in theory.md.

Both are baselines for TropNNC and differ from it in what a merged unit keeps:

- *Zonotope K-means* (single output): the same sign split and K-means on generators
  ``g_j = |c_j| w_j``, but each cluster is replaced by its centre ``μ_C`` with output weight
  ``±1``; the cluster loses ``(N_C − 1) μ_C`` of its generator mass (Corollary E).
- *Neural Path K-means* (several outputs): K-means on the concatenated vectors
  ``(w_j, V[:, j])``; the kept unit takes the centre's input part and the centre's output
  part times the cluster size, i.e. ``Σ_{j∈C} V[:, j]``.
"""

from __future__ import annotations

import numpy as np

from .._array import asarray_like, device
from .._blocks import segment_sum, take_rows
from .base import LayerProblem, Merge
from .partition import GroupMerge, allocate, assemble, cluster_labels, distinct_rows, unit_groups

__all__ = ["zonotope_kmeans", "neural_path_kmeans"]


def zonotope_kmeans(
    problem: LayerProblem,
    k: int,
    *,
    rng: np.random.Generator,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: str = "k-means||",
) -> Merge:
    """Zonotope K-means: each sign group's generators clustered, clusters replaced by centres.

    The kept unit of cluster ``C`` has input vector ``μ_C = mean_{j∈C} g_j`` and output
    weight ``±1``, so ``fold[j, C] = 1 / (|c_j| N_C)``. Bound (Corollary E)::

        H(Σ_C Σ_{j∈C} [0, g_j], Σ_C [0, μ_C]) <= Σ_C (Σ_{j∈C} ‖g_j − μ_C‖ + (N_C − 1) ‖μ_C‖).

    Only for a single output (a next layer that reads the units with one weight each).

    Raises
    ------
    ValueError
        When the next layer reads the units with more than one weight each (use
        ``"neural_path_kmeans"`` or ``"tropnnc"``), or ``k``, ``n_init``, ``max_iter``,
        ``tol`` or ``init`` is out of range (named in the message).

    See Also
    --------
    tropref.methods.tropnnc.tropnnc : keeps each cluster's summed generator (no mass lost).
    neural_path_kmeans : the predecessor's method for several outputs.

    References
    ----------
    .. [1] P. Misiakos, G. Smyrnis, G. Retsinas, P. Maragos, "Neural Network Approximation
           based on Hausdorff distance of Tropical Zonotopes", ICLR 2022.
    .. [2] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> import tropref
    >>> W = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> res = tropref.compress_layer(W, None, 2, W_next=np.array([[1.0, 1.0, -1.0]]),
    ...                              method="zonotope_kmeans", seed=0)
    >>> float(res.W_next[0, 0]), float(res.zonotope_bound[0])   # the pair lost half its mass
    (1.0, 1.0)
    """
    if not problem.single_output:
        raise ValueError(
            "method 'zonotope_kmeans' is for a single output, but the next layer reads each unit "
            f"through {problem.outgoing.shape[0] * problem.outgoing.shape[2]} weights; "
            "use 'tropnnc' or 'neural_path_kmeans'"
        )
    xp, A = problem.xp, problem.inputs
    c = xp.abs(problem.outgoing[0, :, 0])
    G = c[:, None] * A
    norms = xp.linalg.vector_norm(G, axis=1)
    groups = unit_groups(problem)
    masses = [float(xp.sum(take_rows(xp, norms, g))) for g in groups]
    sizes = [distinct_rows(take_rows(xp, G, g)) if k < problem.n else g.size for g in groups]
    budget = allocate(k, sizes, masses)
    options = {"n_init": n_init, "max_iter": max_iter, "tol": tol, "init": init}

    parts, bounds, runs = [], [], []
    for idx, k_g, mass_total in zip(groups, budget, masses, strict=False):
        if k_g == 0:
            parts.append(GroupMerge(None, None, None))
            bounds.append(mass_total)
            continue
        G_g = take_rows(xp, G, idx)
        labels, run = cluster_labels(G_g, k_g, None, rng, **options)
        # cluster sums by segment sums over the members, not products with a one-hot matrix
        counts = asarray_like(np.bincount(labels, minlength=k_g), xp, A)
        centres = segment_sum(xp, G_g, labels, k_g, axis=0) / counts[:, None]
        spread = segment_sum(xp, xp.linalg.vector_norm(G_g - take_rows(xp, centres, labels), axis=1), labels, k_g)
        lost = (counts - 1) * xp.linalg.vector_norm(centres, axis=1)
        bounds.append(float(xp.sum(spread + lost)))
        parts.append(GroupMerge(labels, centres, 1 / (take_rows(xp, c, idx) * take_rows(xp, counts, labels))))
        runs.append(run)

    assignment, scale, inputs = assemble(xp, groups, parts, problem.n, A)
    bound = xp.asarray(bounds, dtype=A.dtype, device=device(A))
    return Merge(
        assignment, None, inputs, scale=scale, zonotope_bound=bound, info={"allocation": budget, "clustering": runs}
    )


def neural_path_kmeans(
    problem: LayerProblem,
    k: int,
    *,
    rng: np.random.Generator,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: str = "k-means||",
) -> Merge:
    """Neural Path K-means: K-means on ``(w_j, V[:, j])``, kept unit = centre, outputs summed.

    The kept unit of cluster ``C`` has input vector ``mean_{j∈C} w_j`` and outgoing weights
    ``N_C · mean_{j∈C} V[:, j] = Σ_{j∈C} V[:, j]`` (``fold[j, C] = 1``). Its certificate
    follows from ReLU being 1-Lipschitz: ``|Δ v_i| <= ‖u‖ Σ_j |V[i, j]| ‖w_j − mean_C w‖``.

    Raises
    ------
    ValueError
        When ``k``, ``n_init``, ``max_iter``, ``tol`` or ``init`` is out of range (named in
        the message).

    See Also
    --------
    tropref.methods.tropnnc.tropnnc : merges with the outgoing-weight masses instead.
    zonotope_kmeans : the predecessor's method for a single output.
    tropref.cluster.kmeans : the clustering both use.

    References
    ----------
    .. [1] P. Misiakos, G. Smyrnis, G. Retsinas, P. Maragos, "Neural Network Approximation
           based on Hausdorff distance of Tropical Zonotopes", ICLR 2022.
    .. [2] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> import tropref
    >>> W = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> res = tropref.compress_layer(W, None, 2, method="neural_path_kmeans", seed=0)
    >>> res.W.shape
    (2, 2)
    """
    xp, A, V = problem.xp, problem.inputs, problem.outgoing
    paths = xp.concat([A, xp.reshape(xp.permute_dims(V, (1, 0, 2)), (problem.n, -1))], axis=1)
    labels, run = cluster_labels(paths, k, None, rng, n_init=n_init, max_iter=max_iter, tol=tol, init=init)
    counts = asarray_like(np.bincount(labels, minlength=k), xp, A)
    centres = segment_sum(xp, A, labels, k, axis=0) / counts[:, None]
    everything = [np.arange(problem.n)]
    assignment, scale, inputs = assemble(
        xp, everything, [GroupMerge(labels, centres, xp.ones_like(A[:, 0]))], problem.n, A
    )
    return Merge(assignment, None, inputs, scale=scale, info={"clustering": [run]})
