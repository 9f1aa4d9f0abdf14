"""TropNNC (Fotopoulos, Maragos, Misiakos 2024): merge units whose zonotope generators are close.

Every unit ``w_j = α_j ŵ_j`` is read by the next layer with weights ``V[:, j]``; its *mass*
is ``m_j = α_j ‖V[:, j]‖`` and its *generator* ``g_j = m_j ŵ_j``. A cluster ``C`` becomes
one unit with

    direction  ŵ_C = Σ_{j∈C} m_j ŵ_j / Σ_{j∈C} m_j      (so that M_C ŵ_C = Σ_C g_j: the
                                                          summed generator is kept)
    scale      α̃_C = Σ_{j∈C} m_j / Σ_{j∈C} ‖V[:, j]‖
    input      w̃_C = α̃_C ŵ_C = Σ_{j∈C} ‖V[:, j]‖ w_j / Σ_{j∈C} ‖V[:, j]‖
    outgoing   Ṽ[:, C] = Σ_{j∈C} V[:, j] α_j / α̃_C       (fold[j, C] = α_j / α̃_C).

With one output this is the paper's algorithm: units split by the sign of their outgoing
weight, K-means on the generators of each sign group, each cluster replaced by the unit
with the ``|c|``-weighted mean input vector and output weight ``±Σ|c_j|``. With several
outputs the units share their direction across outputs, so TropNNC clusters directions,
weighted by mass. Certificates: Corollary D and Proposition F of ``docs/theory.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import Array, device, take_rows, to_numpy
from ..cluster import weiszfeld
from .base import LayerProblem, Merge
from .partition import Part, allocate, assemble, cluster_labels, distinct_rows, one_hot, unit_groups

__all__ = ["tropnnc", "outgoing_norm"]

_OBJECTIVES = ("generators", "directions")
_NORMS = ("l1", "l2", "linf")


def outgoing_norm(xp: Any, V: Array, kind: str = "l1") -> Array:
    """``‖V[:, j, :]‖`` over all outputs and positions, per unit ``j``; shape ``(n,)``.

    With ``"l1"`` the weighted unsquared clustering objective ``Σ_j m_j ‖ŵ_j − ŵ_C‖``
    equals the sum of the per-output certificates.
    """
    if kind == "l1":
        return xp.sum(xp.abs(V), axis=(0, 2))
    if kind == "l2":
        return xp.sqrt(xp.sum(V * V, axis=(0, 2)))
    if kind == "linf":
        return xp.max(xp.abs(V), axis=(0, 2))
    raise ValueError(f"unknown `out_norm` {kind!r}; choose one of {_NORMS}")


def tropnnc(
    problem: LayerProblem,
    k: int,
    *,
    rng: np.random.Generator,
    objective: str | None = None,
    refine: str | None = None,
    out_norm: str = "l1",
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: str = "k-means||",
) -> Merge:
    """Merge the units of ``problem`` into ``k`` units by clustering their generators.

    Parameters
    ----------
    problem : LayerProblem
        Units with no exactly removable member (``compress_layer`` removed those).
    k : int
        Units to keep.
    rng : numpy.random.Generator
        Host generator the clustering seeds are drawn from.
    objective : {"generators", "directions"}, optional
        ``"generators"``: plain K-means on ``g_j = m_j ŵ_j``; ``"directions"``: K-means on
        ``ŵ_j`` weighted by ``m_j``. Default: generators for one output (paper-literal),
        directions for several.
    refine : {None, "weiszfeld"}
        ``"weiszfeld"`` continues from the K-means partition with weighted geometric-median
        steps on the directions, which lowers the unsquared objective the certificate is
        made of; the merged unit then uses the median direction (Proposition F allows any
        representative).
    out_norm : {"l1", "l2", "linf"}
        Norm of the outgoing weights in the masses ``m_j``.
    n_init, max_iter, tol, init
        Passed to :func:`tropref.cluster.kmeans`.

    Returns
    -------
    Merge

    Examples
    --------
    >>> import numpy as np
    >>> import tropref
    >>> W = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])   # units 0 and 1 are parallel
    >>> V = np.array([[1.0, -3.0, 2.0], [0.5, 1.0, -1.0]])   # read with either sign
    >>> res = tropref.compress_layer(W, None, 2, W_next=V, seed=0)
    >>> res.assignment.tolist(), res.certificate.tolist()    # merging them is exact
    ([0, 0, 1], [0.0, 0.0])
    """
    if objective is not None and objective not in _OBJECTIVES:
        raise ValueError(f"unknown `objective` {objective!r}; choose one of {_OBJECTIVES}")
    if refine not in (None, "weiszfeld"):
        raise ValueError(f"unknown `refine` {refine!r}; choose None or 'weiszfeld'")
    xp, A, V = problem.xp, problem.inputs, problem.outgoing
    objective = objective or ("generators" if problem.single_output else "directions")
    kmeans_options = {"n_init": n_init, "max_iter": max_iter, "tol": tol, "init": init}

    alpha = xp.linalg.vector_norm(A, axis=1)
    vnorm = outgoing_norm(xp, V, out_norm)
    mass = alpha * vnorm
    _check_scale(xp, alpha, "W", A.dtype)
    _check_scale(xp, mass, "W_next", A.dtype)
    directions = A / alpha[:, None]

    groups = unit_groups(problem)
    masses = [float(xp.sum(take_rows(xp, mass, g))) for g in groups]
    points = mass[:, None] * directions if objective == "generators" else directions
    decimals = None if objective == "generators" else 9
    cap = problem.single_output and k < problem.n  # keeping every unit needs no cap
    sizes = [distinct_rows(take_rows(xp, points, g), decimals) if cap else g.size for g in groups]
    budget = allocate(k, sizes, masses)

    parts, bounds, runs = [], [], []
    for idx, k_g, mass_total in zip(groups, budget, masses):
        if k_g == 0:
            # The whole group is dropped: H(Z, {0}) <= Σ ‖g_j‖ (Lemma C with g̃_j = 0).
            parts.append(Part(None, None, None))
            bounds.append(mass_total)
            continue
        D, m, v, a = (take_rows(xp, t, idx) for t in (directions, mass, vnorm, alpha))
        weights = None if objective == "generators" else m
        labels, run = cluster_labels(take_rows(xp, points, idx), k_g, weights, rng, **kmeans_options)
        H = one_hot(xp, labels, k_g, A)
        rep = xp.matmul(H.T, m[:, None] * D) / xp.matmul(H.T, m)[:, None]
        if refine == "weiszfeld" and k_g < idx.size:
            run["certificate_objective_before_refine"] = float(xp.sum(_direction_residuals(xp, D, m, rep, labels, A)))
            refined = weiszfeld(D, xp.asarray(labels, device=device(A)), k_g, weights=m)
            labels, rep = to_numpy(refined.labels).astype(np.int64), refined.centers
            H = one_hot(xp, labels, k_g, A)
            run["refine_n_iter"] = refined.n_iter
        scale_tilde = xp.matmul(H.T, m) / xp.matmul(H.T, v)
        residual = _direction_residuals(xp, D, m, rep, labels, A)
        run["certificate_objective"] = float(xp.sum(residual))
        parts.append(Part(labels, scale_tilde[:, None] * rep, a / xp.matmul(H, scale_tilde)))
        if problem.single_output:
            median = refine == "weiszfeld" and k_g < idx.size
            bounds.append(_zonotope_bound(xp, H, m[:, None] * D, residual, median=median))
        runs.append(run)

    assignment, fold, inputs = assemble(xp, groups, parts, problem.n, A)
    zonotope_bound = None
    if problem.single_output:
        zonotope_bound = xp.asarray([float(bnd) for bnd in bounds], dtype=A.dtype, device=device(A))
    info = {
        "objective_kind": objective,
        "refine": refine,
        "out_norm": out_norm,
        "allocation": budget,
        "clustering": runs,
    }
    return Merge(assignment, fold, inputs, zonotope_bound=zonotope_bound, info=info)


def _check_scale(xp: Any, values: Array, name: str, dtype: Any) -> None:
    """Norms and masses must be finite and non-zero: the units are normalised by them."""
    if not bool(xp.all(xp.isfinite(values) & (values > 0))):
        raise ValueError(
            f"`{name}` has units whose norms over- or underflow in {dtype}; rescale the layer "
            "(ReLU layers are positively homogeneous) or use float64"
        )


def _direction_residuals(xp: Any, D: Array, m: Array, rep: Array, labels: np.ndarray, like: Array) -> Array:
    """``m_j ‖ŵ_j − ŵ_{C(j)}‖`` per unit: the terms of Proposition F and Corollary D."""
    target = take_rows(xp, rep, labels)
    return m * xp.linalg.vector_norm(D - target, axis=1)


def _zonotope_bound(xp: Any, H: Array, G: Array, residual: Array, *, median: bool) -> float:
    """Upper bound on ``H(Σ_j [0, g_j], Σ_C [0, g̃_C])`` for one sign group.

    Per cluster the smaller of two valid bounds (Corollary D): the direction residual
    ``Σ m_j ‖ŵ_j − ŵ_C‖`` and, when the merged generator is the cluster's sum, the plain
    residual ``Σ ‖g_j − μ_C‖`` around the mean generator.
    """
    direction = xp.matmul(H.T, residual)
    if median:
        return float(xp.sum(direction))
    counts = xp.sum(H, axis=0)
    mean = xp.matmul(H.T, G) / counts[:, None]
    plain = xp.matmul(H.T, xp.linalg.vector_norm(G - xp.matmul(H, mean), axis=1))
    return float(xp.sum(xp.minimum(direction, plain)))
