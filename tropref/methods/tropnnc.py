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

import math
from typing import Any

import numpy as np

from .._array import Array, asarray_like, device, to_numpy
from .._blocks import row_blocks, segment_sum, size_blocks, take_rows
from ..cluster import weiszfeld
from .base import LayerProblem, Merge
from .correction import REFITS, check_correct, correct_merge, gaussian_refit, refit_correlation_matrix
from .partition import (
    GroupMerge,
    allocate,
    assemble,
    cluster_labels,
    cluster_labels_ward,
    distinct_rows,
    unit_groups,
    unit_residuals,
)
from .refit_search import SEARCH_LIMIT, RefitModel, search

__all__ = ["tropnnc", "outgoing_norm"]

_NORMS = ("l1", "l2", "linf")
_CHOICES = {
    "cluster": ("ward", "kmeans"),
    "representative": ("principal", "mean"),
    "fold": ("projection", "norm"),
    "objective": ("generators", "directions"),
}
# The measured default (docs/results.md, section 0) and the paper-literal algorithm.
_VARIANTS = {
    "refined": {"cluster": "ward", "representative": "principal", "fold": "projection", "objective": "directions"},
    "paper": {"cluster": "kmeans", "representative": "mean", "fold": "norm", "objective": "directions"},
}


def outgoing_norm(xp: Any, V: Array, kind: str = "l1") -> Array:
    """``‖V[:, j, :]‖`` over all outputs and positions, per unit ``j``; shape ``(n,)``.

    With ``"l1"`` the weighted unsquared clustering objective ``Σ_j m_j ‖ŵ_j − ŵ_C‖``
    equals the sum of the per-output certificates.

    Raises
    ------
    ValueError
        For an unknown ``kind``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.methods.tropnnc import outgoing_norm
    >>> V = np.array([[[1.0], [-2.0]], [[3.0], [0.5]]])  # (m, n, s) = (2, 2, 1)
    >>> outgoing_norm(np, V).tolist(), outgoing_norm(np, V, "linf").tolist()
    ([4.0, 2.5], [3.0, 2.0])
    """
    if kind not in _NORMS:
        raise ValueError(f"unknown `out_norm` {kind!r}; choose one of {_NORMS}")
    # over blocks of outputs, so that |V| (or V²) never exists whole: a copy of fc6's view
    # (4096 × 512 × 49) cost 1.7 s of page faults, against one pass in cache here
    out = None
    for blk in row_blocks(V):
        if kind == "l1":
            part = xp.sum(xp.abs(blk), axis=(0, 2))
        elif kind == "l2":
            part = xp.sum(blk * blk, axis=(0, 2))
        else:
            part = xp.max(xp.abs(blk), axis=(0, 2))
        out = part if out is None else (xp.maximum(out, part) if kind == "linf" else out + part)
    return xp.sqrt(out) if kind == "l2" else out


def tropnnc(
    problem: LayerProblem,
    k: int,
    *,
    rng: np.random.Generator,
    variant: str = "refined",
    cluster: str | None = None,
    representative: str | None = None,
    fold: str | None = None,
    objective: str | None = None,
    refine: str | None = None,
    out_norm: str = "l1",
    input_ratio: float | None = None,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: str = "k-means||",
    correct: str | None = None,
    outgoing: float = 0.0,
    refit: str = "none",
    refit_ridge: float = 0.1,
    refit_correlation: str = "auto",
    refit_variance: bool = False,
    refit_search: int = 0,
) -> Merge:
    """Merge the units of ``problem`` into ``k`` units by clustering their generators.

    Each cluster ``C`` is replaced by one unit along a representative direction ``u_C``,
    and every member ``j`` is read through it with a coefficient ``φ_j ≥ 0``
    (``w_j ≈ φ_j u_C``, so ``relu(w_j · x) ≈ φ_j relu(u_C · x)``). The certificate terms
    are ``‖V[:, j]‖ ‖w_j − φ_j u_C‖`` (Proposition F), so the three choices below all aim
    at the objective ``Σ_j m_j ‖ŵ_j − (φ_j / α_j) u_C‖`` with masses ``m_j = α_j ‖V[:, j]‖``.

    The steps, each a helper of this module: the options resolved (``_options``); every
    unit's norm, mass and direction (``_units``); the points and each sign group's share of
    ``k`` (``_budget``); each group clustered (``_cluster``), its partition searched for the
    refit where asked (``_search``), and merged into representatives and fold coefficients
    (``_merge_group``); the groups assembled, then the statistics correction and the refit
    of the next layer (``_correct``).

    Parameters
    ----------
    problem : LayerProblem
        Units with no exactly removable member (``compress_layer`` removed those).
    k : int
        Units to keep.
    rng : numpy.random.Generator
        Host generator the K-means seeds are drawn from (unused by Ward).
    variant : {"refined", "paper"}
        Preset of the options below. ``"refined"`` (default): Ward clustering of the unit
        directions weighted by mass, principal direction, projection coefficients.
        ``"paper"``: the paper-literal algorithm: K-means (generators for one output,
        mass-weighted directions for several), mass-weighted mean, coefficients ``α_j``.
        Options given explicitly override the preset.
    cluster : {"ward", "kmeans"}, optional
        ``"ward"``: deterministic weighted Ward agglomeration (:func:`tropref.cluster.ward`;
        an ``n × n`` host matrix); ``"kmeans"``: seeded weighted K-means with restarts.
    representative : {"principal", "mean"}, optional
        ``"principal"``: ``u_C`` the leading eigenvector of ``Σ_C m_j ŵ_j ŵ_jᵀ`` (the
        direction that minimises ``Σ_C m_j sin²θ_j``), from the ``|C| × |C|`` Gram matrix;
        ``"mean"``: ``u_C = Σ_C m_j ŵ_j / Σ_C m_j`` (keeps the summed generator).
    fold : {"projection", "norm"}, optional
        ``"projection"``: ``φ_j = max(w_j · u_C, 0) / ‖u_C‖²``, the least-squares
        coefficient, which minimises each ``‖w_j − φ_j u_C‖``; ``"norm"``: ``φ_j = α_j``.
    objective : {"generators", "directions"}, optional
        Points clustered: ``g_j = m_j ŵ_j`` unweighted, or ``ŵ_j`` weighted by ``m_j``.
        Default: generators for one output with the paper variant, else directions.
    refine : {None, "weiszfeld"}
        ``"weiszfeld"`` continues from the partition with weighted geometric-median
        steps on the directions, which lowers the unsquared objective the certificate is
        made of; the median becomes the representative.
    out_norm : {"l1", "l2", "linf"}
        Norm of the outgoing weights in the masses ``m_j``.
    input_ratio : float, optional
        Cluster in a metric of the inputs instead of the Euclidean one (None, the default,
        for a single layer). Inputs whose coordinates within each block (one input
        channel's ``kh × kw`` window; the whole fan-in of a dense layer) have mean
        ``ρ σ`` and spread ``σ`` (``ρ = input_ratio``) give
        ``E[(r · x)²] = σ² (‖r‖² + b ρ² Σ_c (e_c · r)²)`` for an error ``r``, ``b`` the
        block size and ``e_c`` the unit all-ones vector of block ``c``: the weights are
        mapped by ``M^{1/2}`` before clustering and the kept units mapped back. Natural
        image patches have this structure (their leading principal component is the patch
        mean), so :func:`tropref.compress_network` uses ``ρ = 1`` for a first convolution
        reading the network's input; ``docs/results.md`` has the measurements. Certificates
        are unchanged (computed on the original weights); the zonotope bound is then not
        reported.
    n_init, max_iter, tol, init
        Passed to :func:`tropref.cluster.kmeans`.
    outgoing : float
        ``β >= 0``: cluster the points ``(ŵ_j, β V̂_j)``, each unit's direction beside its
        outgoing weights normalised, so that units the next layer reads alike merge (their
        errors cancel there, ``docs/theory.md`` section 5). Representatives, folds and
        certificates are those of the directions alone. Default 0 (directions only);
        :func:`tropref.compress_network` uses 0.5 in residual branches.
    correct : {"full", "variance", "mean", "none"}, optional
        The statistics correction (:mod:`tropref.methods.correction`), applied when the
        problem carries the units' pre-activation moments (a BatchNorm before the ReLU):
        ``"variance"`` rescales and shifts every merged unit so that its members see their
        own mean and spread again, ``"mean"`` corrects the next layer's bias for the change
        of the mean it reads, ``"full"`` both. Default: ``"full"`` for the refined variant,
        ``"none"`` for the paper's.
    refit : {"none", "gaussian"}
        ``"gaussian"``, applied when the problem carries the units' moments: after the
        merge (and ``correct``), the single fold is replaced by the least-squares fold of
        the units' activations on the kept ones under a Gaussian model of the
        pre-activations (:func:`tropref.methods.correction.gaussian_refit`), a data-free
        ThiNet refit; the next layer's bias absorbs the change of the mean it reads. The
        fold is then general (the kept units mixed); the certificate is Proposition F's on
        the single fold plus what the refit changed (``docs/refit.md``). Default
        ``"none"``.
    refit_ridge : float
        The refit's ridge ``r >= 0``, towards the single fold, relative to each kept unit's
        variance.
    refit_correlation : {"cosine", "centred", "auto"}
        The refit's model of the units' correlations: cosines of the weights, or of the
        weights centred over the fan-in; ``"auto"``: the correlation the caller gives
        (``moments=(μ, σ, ρ)``; :func:`tropref.compress_network` propagates one through
        convolutional networks, ``docs/refit.md``), else the cosines. Default ``"auto"``
        (measured: ``docs/results.md``, section 12).
    refit_variance : bool
        Rescale the refitted fold so that the total variance the next layer reads is the
        original's under the model (least squares shrinks it). Default False.
    refit_search : int
        With the refit: at most this many passes of single-unit moves between Ward's
        clusters, each kept when it lowers the refit's model residual of the next layer
        (:func:`tropref.methods.refit_search.search`: the partition that sees the refit).
        Runs where the refit does, on layers with several outputs (a single-output layer
        has two sign groups: it keeps Ward's partition), with the principal representative,
        the projection fold and no ``refine``, on layers with ``n k <= SEARCH_LIMIT`` (4096:
        the time stays bounded; larger layers keep Ward's partition); ``0`` (the default
        here; 1 in residual branches through :func:`tropref.compress_network`) keeps Ward's
        partition.
        ``info["clustering"][0]["refit_search"]`` has the residual before and after.

    Returns
    -------
    Merge

    Raises
    ------
    ValueError
        For an unknown option value, or units whose norms over- or underflow.

    References
    ----------
    K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network Compression
    Using Tropical Geometry", arXiv:2409.03945 (2024). ``docs/theory.md`` says which steps
    are the paper's and which are tropref's, with the measurements behind each default.

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
    cluster, representative, fold, objective, correct = _options(
        problem, variant, cluster, representative, fold, objective, correct, refit, refine
    )
    if isinstance(refit_search, bool) or not isinstance(refit_search, (int, np.integer)) or refit_search < 0:
        raise ValueError(f"`refit_search` must be an int >= 0 (passes of the search), got {refit_search!r}")
    xp, A, V = problem.xp, problem.inputs, problem.outgoing
    if input_ratio is not None:
        # cluster in the metric of the inputs (image patches); kept units are mapped back below,
        # and the certificate_objective recorded is then in that metric
        A = _input_metric(xp, A, input_ratio, problem.block)
    alpha, vnorm, mass, directions = _units(xp, A, V, out_norm)
    groups = unit_groups(problem)
    points, masses, budget = _budget(problem, k, groups, directions, mass, objective, outgoing)
    keeps_sum = representative == "mean" and fold == "norm" and refine is None
    kmeans_options = {"n_init": n_init, "max_iter": max_iter, "tol": tol, "init": init}

    parts, bounds, runs = [], [], []
    for idx, k_g, mass_total in zip(groups, budget, masses, strict=False):
        if k_g == 0:
            # The whole group is dropped: H(Z, {0}) <= Σ ‖g_j‖ (Lemma C with g̃_j = 0).
            parts.append(GroupMerge(None, None, None))
            bounds.append(mass_total)
            continue
        units = tuple(take_rows(xp, t, idx) for t in (points, directions, mass, vnorm, alpha))
        weights = None if objective == "generators" else units[2]
        labels, run = _cluster(xp, units[0], k_g, weights, cluster, rng, kmeans_options)
        if refit_search and _searchable(
            problem, refit, representative, fold, refine, input_ratio, len(groups), idx.size, k_g
        ):
            labels = _search(problem, units, labels, k_g, refit_search, refit_correlation, run)
        part, bound = _merge_group(xp, problem, units, labels, k_g, representative, fold, refine, keeps_sum, run)
        parts.append(part)
        if problem.single_output:
            bounds.append(bound)
        runs.append(run)

    assignment, scale, inputs = assemble(xp, groups, parts, problem.n, A)
    if input_ratio is not None:
        inputs = _input_metric(xp, inputs, input_ratio, problem.block, inverse=True)
    inputs, kept_moments, corrected, fold_matrix = _correct(
        problem, assignment, scale, inputs, vnorm, correct, refit, refit_ridge, refit_correlation, refit_variance
    )
    zonotope_bound = None
    if problem.single_output and input_ratio is None and not corrected:  # else not about the units returned
        zonotope_bound = xp.asarray([float(bnd) for bnd in bounds], dtype=A.dtype, device=device(A))
    info = {
        "variant": variant,
        "cluster": cluster,
        "representative": representative,
        "fold": fold,
        "objective_kind": objective,
        "refine": refine,
        "out_norm": out_norm,
        "input_ratio": input_ratio,
        "allocation": budget,
        "clustering": runs,
        "correction": corrected or None,
    }
    if fold_matrix is not None:  # a general fold (the kept units mixed), anchored on the single fold
        return Merge(
            assignment, fold_matrix, inputs, single_fold=False, info=info, kept_moments=kept_moments, anchor=scale
        )
    return Merge(
        assignment, None, inputs, scale=scale, zonotope_bound=zonotope_bound, info=info, kept_moments=kept_moments
    )


def _options(
    problem: LayerProblem,
    variant: str,
    cluster: str | None,
    representative: str | None,
    fold: str | None,
    objective: str | None,
    correct: str | None,
    refit: str,
    refine: str | None,
) -> tuple[str, str, str, str, str]:
    """Step 1: the preset and the options given, validated (``_resolve``, then the rest)."""
    cluster, representative, fold, objective = _resolve(problem, variant, cluster, representative, fold, objective)
    correct = check_correct(("full" if variant == "refined" else "none") if correct is None else correct)
    if refit not in REFITS:
        raise ValueError(f"unknown `refit` {refit!r}; choose one of {REFITS}")
    if refine not in (None, "weiszfeld"):
        raise ValueError(f"unknown `refine` {refine!r}; choose None or 'weiszfeld'")
    return cluster, representative, fold, objective, correct


def _units(xp: Any, A: Array, V: Array, out_norm: str) -> tuple[Array, Array, Array, Array]:
    """Step 2: every unit's norm ``α_j``, outgoing norm, mass ``m_j = α_j ‖V[:, j]‖`` and direction."""
    alpha = _row_norms(xp, A)
    vnorm = outgoing_norm(xp, V, out_norm)
    mass = alpha * vnorm
    _check_scale(xp, alpha, "W", A.dtype)
    _check_scale(xp, mass, "W_next", A.dtype)
    return alpha, vnorm, mass, A / alpha[:, None]


def _budget(
    problem: LayerProblem,
    k: int,
    groups: list[np.ndarray],
    directions: Array,
    mass: Array,
    objective: str,
    outgoing: Any,
) -> tuple[Array, list[float], list[int]]:
    """Step 3: the points clustered, each sign group's mass and its share of the ``k`` units."""
    xp = problem.xp
    masses = [float(np.sum(to_numpy(mass)[g])) for g in groups]
    points = mass[:, None] * directions if objective == "generators" else directions
    if outgoing:
        points = _with_outgoing(xp, points, problem.outgoing, outgoing)
    decimals = None if objective == "generators" else 9
    cap = problem.single_output and k < problem.n  # keeping every unit needs no cap
    sizes = [distinct_rows(take_rows(xp, points, g), decimals) if cap else g.size for g in groups]
    return points, masses, allocate(k, sizes, masses)


def _cluster(
    xp: Any,
    points: Array,
    k: int,
    weights: Array | None,
    cluster: str,
    rng: np.random.Generator,
    kmeans_options: dict[str, Any],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 4: one sign group's points partitioned into ``k`` clusters, and the run's record."""
    if cluster == "ward":
        return cluster_labels_ward(points, k, weights)
    return cluster_labels(points, k, weights, rng, **kmeans_options)


def _searchable(
    problem: LayerProblem,
    refit: str,
    representative: str,
    fold: str,
    refine: str | None,
    input_ratio: float | None,
    n_groups: int,
    n: int,
    k: int,
) -> bool:
    """Whether the refit's search runs: the refit on and the units' moments known, one sign
    group, the principal representative and projection fold (the kept units it models) with
    no Weiszfeld refinement (which would re-partition), no input metric, ``1 < k < n``, and
    ``n k <= SEARCH_LIMIT`` (each of its ``O(n k)`` moves per pass costs ``O(n² + n k + k²)``)."""
    modelled = representative == "principal" and fold == "projection" and refine is None and input_ratio is None
    fits = n_groups == 1 and 1 < k < n and n * k <= SEARCH_LIMIT
    return refit == "gaussian" and problem.moments is not None and modelled and fits


def _search(
    problem: LayerProblem,
    units: tuple[Array, ...],
    labels: np.ndarray,
    k: int,
    passes: int,
    correlation: str,
    run: dict[str, Any],
) -> np.ndarray:
    """Step 4b: Ward's partition moved unit by unit to lower the refit's model residual."""
    rho, _ = refit_correlation_matrix(problem, correlation)
    mean, std = (np.asarray(t, dtype=np.float64) for t in problem.moments)
    model = RefitModel(mean, std, rho, to_numpy(problem.outgoing))
    D, m, v, a = (to_numpy(t).astype(np.float64) for t in units[1:])
    labels, run["refit_search"] = search(model, D, m, v, a, labels, k, passes)
    return labels


def _merge_group(
    xp: Any,
    problem: LayerProblem,
    units: tuple[Array, ...],
    labels: np.ndarray,
    k: int,
    representative: str,
    fold: str,
    refine: str | None,
    keeps_sum: bool,
    run: dict[str, Any],
) -> tuple[GroupMerge, Any]:
    """Step 5: a clustered group's representatives (refined by Weiszfeld or principal) and
    its fold coefficients; ``run`` gets the certificate objective. Also returns the group's
    zonotope bound when the layer has one output (else None)."""
    _, D, m, v, a = units
    if refine == "weiszfeld" and k < int(D.shape[0]):
        rep = _weighted_mean(xp, D, m, labels, k)
        run["certificate_objective_before_refine"] = float(xp.sum(m * _fold(xp, D, rep, labels, projection=False)[1]))
        refined = weiszfeld(D, xp.asarray(labels, device=device(D)), k, weights=m)
        labels, rep = to_numpy(refined.labels).astype(np.int64), refined.centers
        run["refine_n_iter"] = refined.n_iter
    elif representative == "principal":
        rep = _principal(xp, labels, D, m, k)
    else:
        rep = _weighted_mean(xp, D, m, labels, k)
    # φ_j / α_j per unit (how much of the representative each member is read through)
    # and ‖ŵ_j − (φ_j / α_j) u_C‖, in one pass over the directions
    coef, residual = _fold(xp, D, rep, labels, projection=fold == "projection")
    scale_tilde = segment_sum(xp, v * a * coef, labels, k) / segment_sum(xp, v, labels, k)
    scale_tilde = xp.where(scale_tilde > 0, scale_tilde, xp.ones_like(scale_tilde))  # φ = 0 throughout
    residual = m * residual
    run["certificate_objective"] = float(xp.sum(residual))
    part = GroupMerge(labels, scale_tilde[:, None] * rep, a * coef / take_rows(xp, scale_tilde, labels))
    if not problem.single_output:
        return part, None
    return part, _zonotope_bound(xp, labels, k, m[:, None] * D, residual, keeps_sum=keeps_sum)


def _correct(
    problem: LayerProblem,
    assignment: Array,
    scale: Array,
    inputs: Array,
    vnorm: Array,
    correct: str,
    refit: str,
    ridge: float,
    correlation: str,
    variance: bool,
) -> tuple[Array, Any, dict[str, Any], Array | None]:
    """Step 6: the statistics correction of the merged units, then the Gaussian refit of the
    next layer (a general fold, None without it), where the units' statistics are known."""
    inputs, kept_moments, corrected = correct_merge(problem, assignment, scale, inputs, vnorm, correct)
    fold_matrix = None
    if refit == "gaussian" and problem.moments is not None:
        if _exact(problem, assignment, scale, inputs):
            corrected = {**corrected, "refit": "none: the single fold is exact"}
        else:
            fold_matrix, kept_moments, refitted = gaussian_refit(
                problem, assignment, scale, inputs, ridge=ridge, correlation=correlation, variance=variance
            )
            corrected = {**corrected, **refitted}
    return inputs, kept_moments, corrected, fold_matrix


def _exact(problem: LayerProblem, assignment: Array, scale: Array, inputs: Array) -> bool:
    """Whether the single fold reproduces every unit to round-off (``r_j <= 64 ε ‖w_j‖``):
    exact duplicates merged, which no refit can improve and its solve would only perturb."""
    xp, A = problem.xp, problem.inputs
    labels = to_numpy(assignment)
    r = unit_residuals(xp, A, scale, labels, inputs, exact=np.zeros(labels.shape, dtype=bool))
    tol = 64.0 * float(xp.finfo(A.dtype).eps)
    return bool(xp.all(r <= tol * _row_norms(xp, A)))


def _with_outgoing(xp: Any, points: Array, V: Array, weight: Any) -> Array:
    """``(p_j, β V̂_j)``: each unit's point beside its outgoing weights normalised, times ``β``."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"`outgoing` must be a number >= 0 (the weight of the outgoing columns), got {weight!r}")
    m, n, s = (int(d) for d in V.shape)
    columns = xp.reshape(xp.permute_dims(V, (1, 0, 2)), (n, m * s))
    columns = columns / xp.linalg.vector_norm(columns, axis=1)[:, None]  # no unit here is unread
    return xp.concat([points, float(weight) * columns], axis=1)


def _resolve(
    problem: LayerProblem,
    variant: str,
    cluster: str | None,
    representative: str | None,
    fold: str | None,
    objective: str | None,
) -> tuple[str, str, str, str]:
    """The preset ``variant`` with the explicitly given options on top, all validated."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown `variant` {variant!r}; choose one of {tuple(_VARIANTS)}")
    preset = dict(_VARIANTS[variant])
    if variant == "paper" and problem.single_output:
        preset["objective"] = "generators"
    chosen = {"cluster": cluster, "representative": representative, "fold": fold, "objective": objective}
    for name, value in chosen.items():
        if value is not None and value not in _CHOICES[name]:
            raise ValueError(f"unknown `{name}` {value!r}; choose one of {_CHOICES[name]}")
        preset[name] = value if value is not None else preset[name]
    return preset["cluster"], preset["representative"], preset["fold"], preset["objective"]


def _check_scale(xp: Any, values: Array, name: str, dtype: Any) -> None:
    """Norms and masses must be finite and non-zero: the units are normalised by them."""
    if not bool(xp.all(xp.isfinite(values) & (values > 0))):
        raise ValueError(
            f"`{name}` has units whose norms over- or underflow in {dtype}; rescale the layer "
            "(ReLU layers are positively homogeneous) or use float64"
        )


def _input_metric(xp: Any, A: Array, ratio: Any, block: int, *, inverse: bool = False) -> Array:
    """``M^{±1/2}`` applied to the weight part of every row: ``M = I + b ρ² Σ_c e_c e_cᵀ``.

    ``e_c`` is the unit all-ones vector over block ``c`` of ``block`` consecutive weights
    (one input channel's kernel window, or the whole fan-in of a dense layer). On each
    block ``M^{1/2}`` scales the block's mean by ``√(1 + b ρ²)`` and leaves the rest alone.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"`input_ratio` must be a positive number (mean / std of the inputs), got {ratio!r}")
    n, d = int(A.shape[0]), int(A.shape[1]) - 1
    gain = math.sqrt(1.0 + block * float(ratio) ** 2)
    factor = (1.0 / gain if inverse else gain) - 1.0
    weights = xp.reshape(A[:, :-1], (n, d // block, block))
    mean = xp.mean(weights, axis=2)  # (e_c · w) e_c = mean of block c, broadcast over it
    scaled = xp.reshape(weights + factor * mean[:, :, None], (n, d))
    return xp.concat([scaled, A[:, -1:]], axis=1)


def _row_norms(xp: Any, A: Array) -> Array:
    """``‖A[j]‖`` per row, in cache-sized blocks (the squares never exist whole)."""
    parts = [xp.linalg.vector_norm(blk, axis=1) for blk in row_blocks(A)]
    return parts[0] if len(parts) == 1 else xp.concat(parts)


def _fold(xp: Any, D: Array, rep: Array, labels: np.ndarray, *, projection: bool) -> tuple[Array, Array]:
    """Coefficients ``c_j`` and residuals ``‖ŵ_j − c_j u_{C(j)}‖`` (times ``m_j`` these are
    the Proposition F terms), in one pass over the rows of ``D``.

    ``projection``: ``c_j = max(ŵ_j · u, 0) / ‖u‖²``, the least-squares coefficient of each
    unit on its representative ``u = rep[labels[j]]``; else ``c_j = 1``. Each block of rows
    gathers its representatives (cache-sized): no ``n × p`` array of targets, products or
    differences exists, and ``‖u‖²`` is computed once per cluster.
    """
    sq = xp.sum(rep * rep, axis=1) if projection else None
    coefs, residuals, lo = [], [], 0
    for blk in row_blocks(D):
        hi = lo + int(blk.shape[0])
        target = take_rows(xp, rep, labels[lo:hi])
        if projection:
            dots = xp.sum(blk * target, axis=1)
            t_sq = take_rows(xp, sq, labels[lo:hi])
            positive = (dots > 0) & (t_sq > 0)  # a zero representative (members cancel) reads nothing
            coef = xp.where(positive, dots / xp.where(t_sq > 0, t_sq, xp.ones_like(t_sq)), xp.zeros_like(dots))
            residuals.append(xp.linalg.vector_norm(blk - coef[:, None] * target, axis=1))
        else:
            coef = xp.ones((hi - lo,), dtype=D.dtype, device=device(D))
            residuals.append(xp.linalg.vector_norm(blk - target, axis=1))
        coefs.append(coef)
        lo = hi
    if len(coefs) == 1:
        return coefs[0], residuals[0]
    return xp.concat(coefs), xp.concat(residuals)


def _weighted_mean(xp: Any, D: Array, m: Array, labels: np.ndarray, k: int) -> Array:
    """``Σ_C m_j ŵ_j / Σ_C m_j`` per cluster: the mean representative."""
    return segment_sum(xp, D, labels, k, weights=m) / segment_sum(xp, m, labels, k)[:, None]


def _principal(xp: Any, labels: np.ndarray, D: Array, m: Array, k: int) -> Array:
    """Leading eigenvector of ``S_C = Σ_C m_j ŵ_j ŵ_jᵀ`` per cluster, exactly.

    ``S_C = X_Cᵀ X_C`` with rows ``√m_j ŵ_j``, so its leading eigenvector is ``X_Cᵀ y``
    for ``y`` the leading eigenvector of the small ``|C| × |C|`` matrix ``X_C X_Cᵀ``
    (the leading right singular vector of ``X_C``). Those matrices are formed on the host
    in float64; for float32 directions as ``D_C D_Cᵀ`` in float32, then scaled in float64
    (the rows are not copied to float64: a kept unit's direction moves by float32
    round-off, and the certificate is computed from it afterwards). They are decomposed in
    float64, clusters of equal size together, in blocks of at most 64 MB (``O(Σ_C |C|² p)``
    work: small when most clusters are small); ``u = Σ_j
    √m_j y_j ŵ_j`` is then one segment sum on the device. The sign makes
    ``Σ_C m_j ŵ_j · u = λ Σ_C √m_j y_j`` positive; a cluster where that is zero keeps its
    mean (computed only then: one more pass over ``D``). A single unit is its own direction.
    """
    n = int(D.shape[0])
    Dh, root = to_numpy(D), np.sqrt(to_numpy(m).astype(np.float64))  # D stays in its dtype
    coef, fallback = np.zeros(n), np.zeros(k, dtype=bool)
    for clusters, block in size_blocks(labels, k, 8 * int(Dh.shape[1]), whole_singletons=True):
        if block.shape[1] == 1:
            coef[block[:, 0]] = 1.0
            continue
        r = root[block]
        if Dh.dtype == np.float64:
            X = Dh[block] * r[:, :, None]
            small = X @ np.swapaxes(X, 1, 2)
        else:  # D_C D_Cᵀ in float32 (no float64 copy of the rows), scaled by √m_i √m_j in float64
            X = Dh[block]
            small = (X @ np.swapaxes(X, 1, 2)).astype(np.float64) * (r[:, :, None] * r[:, None, :])
        y = np.linalg.eigh(small)[1][:, :, -1]
        agree = np.sum(root[block] * y, axis=1)
        coef[block] = root[block] * y * np.sign(agree)[:, None]
        fallback[clusters] = agree == 0
    u = segment_sum(xp, D, labels, k, weights=asarray_like(coef, xp, D))
    norm = xp.linalg.vector_norm(u, axis=1)
    u = u / xp.where(norm > 0, norm, xp.ones_like(norm))[:, None]  # u = 0 only where the mean replaces it
    if not fallback.any():
        return u
    mean = _weighted_mean(xp, D, m, labels, k)
    return xp.where(asarray_like(fallback, xp, D, dtype=xp.bool)[:, None], mean, u)


def _zonotope_bound(xp: Any, labels: np.ndarray, k: int, G: Array, residual: Array, *, keeps_sum: bool) -> float:
    """Upper bound on ``H(Σ_j [0, g_j], Σ_C [0, g̃_C])`` for one sign group.

    Per cluster the smaller of two valid bounds (Corollary D): the residual
    ``Σ_C m_j ‖ŵ_j − (φ_j/α_j) u_C‖`` and, when the merged generator is the cluster's sum
    (mean representative, ``φ_j = α_j``), the plain residual ``Σ ‖g_j − μ_C‖`` around
    the mean generator.
    """
    direction = segment_sum(xp, residual, labels, k)
    if not keeps_sum:
        return float(xp.sum(direction))
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    mean = segment_sum(xp, G, labels, k) / asarray_like(counts, xp, G)[:, None]
    plain = segment_sum(xp, xp.linalg.vector_norm(G - take_rows(xp, mean, labels), axis=1), labels, k)
    return float(xp.sum(xp.minimum(direction, plain)))
