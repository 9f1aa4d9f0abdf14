"""ThiNet: data-driven greedy channel selection and least-squares rescaling.

Luo, Wu, Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural Network
Compression", ICCV 2017. Selected with ``method="thinet"``; needs sample inputs
(``compress_layer(..., data=X)``). Compared without fine-tuning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from .._array import asarray_like, check_int, device, to_numpy
from .base import LayerProblem, Merge, check_no_options

__all__ = ["thinet", "THINET"]


def thinet(
    problem: LayerProblem,
    k: int,
    *,
    rng: np.random.Generator,
    rescale: str = "full",
    max_samples: int | None = 10_000,
    **options: Any,
) -> Merge:
    """ThiNet: remove the units whose removal least changes the next layer, then refit.

    With sample inputs ``u_t`` (rows of ``problem.data``), activations
    ``a_j(t) = relu(w_j · u_t)`` and outgoing weights ``V[:, j, :]``, unit ``j`` contributes
    ``V[i, j, s] a_j(t)`` to coordinate ``(i, s)`` of the next layer's pre-activation. The
    error of removing a set ``T`` of units is

        E(T) = Σ_t Σ_{i,s} (Σ_{j∈T} V[i, j, s] a_j(t))² = Σ_{j,l∈T} M[j, l],
        M = (aᵀa) ∘ (V_flat V_flatᵀ),

    and, as in ThiNet, ``T`` is grown greedily: at each step the unit whose addition
    increases ``E`` the least is removed, until ``k`` units remain. ThiNet samples a few
    output locations per image; here every sample row is one input patch and its
    contribution is counted at every one of the ``s`` positions that read the unit, which is
    the same objective summed instead of sampled (tropref's reading for convolutions: the
    layer problem carries patches, not whole images).

    Rescaling (``rescale``):

    - ``"full"`` (default): the least-squares fold ``F = C[:, K] C[K, K]⁺`` with
      ``C = aᵀa``, so that ``a ≈ F ã`` on the samples. Because least squares commutes with
      the fixed linear read-out ``V``, ``V F`` is also the least-squares fit of the next
      layer's pre-activations from the kept units: exact when the kept activations span the
      removed ones on the samples. A general fold: ``single_fold=False``, no certificate.
    - ``"channel"`` (ThiNet-literal): one scalar per kept unit,
      ``λ = argmin Σ_t ‖Σ_j V_j a_j(t) − Σ_{c∈K} λ_c V_c a_c(t)‖²``, applied to that unit's
      outgoing weights. ``single_fold`` is True when every ``λ_c ≥ 0``.
    - ``"none"``: the kept units unchanged, the removed ones dropped.

    The steps, each a helper of this module: the samples checked and drawn (``_samples``);
    the products ``C`` and ``G`` (``_products``); the greedy removal (``_greedy_removal``);
    the fold refitted (``_rescale``); each unit's kept unit (``_assignment``).

    Parameters
    ----------
    problem : LayerProblem
        Must carry ``data`` of shape ``(N, p)``: sample inputs ``u = (x, 1)``.
    k : int
        Number of units kept, ``1 <= k <= n``.
    rng : numpy.random.Generator
        Draws the sample subset when ``N > max_samples``.
    rescale : {"full", "channel", "none"}
    max_samples : int or None, default 10000
        Use at most this many sample rows (drawn without replacement from ``rng``).

    Returns
    -------
    Merge
        ``info``: ``rescale``, ``samples``, ``kept``, ``removal_order`` (first removed
        first), ``objective`` (``E`` of the removed set, before rescaling),
        ``relative_residual`` (after rescaling, on the samples).

    Raises
    ------
    ValueError
        When ``problem.data`` is missing or its width is not ``p``; when ``k`` is outside
        ``[1, n]``, ``rescale`` is not one of the values above, or ``max_samples < 1``.
    TypeError
        When ``k`` is not an integer, or an unknown option is given.

    See Also
    --------
    tropref.methods.baselines.l1 : data-free magnitude pruning.
    tropref.compress_layer : runs it as ``method="thinet"`` with ``data=`` sample inputs.

    References
    ----------
    .. [1] J.-H. Luo, J. Wu, W. Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural
           Network Compression", ICCV 2017.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> from tropref.methods.thinet import thinet
    >>> rng = np.random.default_rng(0)
    >>> A = rng.normal(size=(4, 3))
    >>> A = np.concatenate([A, 2 * A[:1]])            # unit 4 is twice unit 0
    >>> U = np.concatenate([rng.normal(size=(50, 2)), np.ones((50, 1))], axis=1)   # samples (x, 1)
    >>> merge = thinet(LayerProblem(xp, A, rng.normal(size=(2, 5, 1)), U), 4, rng=np.random.default_rng(0))
    >>> merge.info["removal_order"], merge.assignment.tolist()
    ([0], [3, 0, 1, 2, 3])
    >>> bool(merge.info["relative_residual"] < 1e-12)   # unit 4 stands in for unit 0 exactly
    True
    """
    check_no_options("thinet", options)
    n = problem.n
    k = check_int("k", k, 1, n)
    if rescale not in ("full", "channel", "none"):
        raise ValueError(f"`rescale` must be 'full', 'channel' or 'none', got {rescale!r}")
    xp, A = problem.xp, problem.inputs
    U = _samples(problem, rng, max_samples)
    C, G = _products(problem, U)
    M = C * G
    total = float(np.sum(M))
    removed, order, objective = _greedy_removal(M, k)
    keep = np.flatnonzero(~removed).astype(np.int64)
    F = _rescale(C, M, keep, removed, rescale)

    # residual of the next layer's pre-activations on the samples: with S selecting the
    # kept units, a - F ã = (I - F S) a = P a
    P = np.eye(n)
    P[:, keep] -= F
    resid = _residual(C, G, P)
    assignment = _assignment(F, keep, removed, rescale)
    single = rescale == "none" or (rescale == "channel" and bool(np.all(F[keep, np.arange(k)] >= 0)))
    info = {
        "rescale": rescale,
        "samples": int(U.shape[0]),
        "kept": keep.tolist(),
        "removal_order": order,
        "objective": objective,
        "relative_residual": resid / total if total > 0 else 0.0,
    }
    assignment_dev = xp.asarray(assignment, dtype=xp.int64, device=device(A))
    inputs = xp.take(A, xp.asarray(keep, dtype=xp.int64, device=device(A)), axis=0)
    if rescale != "full":  # one entry per row (the kept unit's own λ or 1): no fold matrix needed
        scale = np.where(assignment < 0, 0.0, F[np.arange(n), np.maximum(assignment, 0)])
        if single:
            return Merge(assignment_dev, None, inputs, info=info, scale=asarray_like(scale, xp, A))
    return Merge(assignment_dev, asarray_like(F, xp, A), inputs, single_fold=single, info=info)


def _samples(problem: LayerProblem, rng: np.random.Generator, max_samples: int | None) -> Any:
    """Step 1: the sample inputs checked, and at most ``max_samples`` of them drawn from ``rng``."""
    xp, A, U = problem.xp, problem.inputs, problem.data
    if U is None:
        raise ValueError(
            "method 'thinet' is data-driven and needs `data`: sample inputs of the layer, "
            "e.g. compress_layer(W, b, k, W_next=..., data=X, method='thinet')"
        )
    if U.ndim != 2 or int(U.shape[1]) != int(A.shape[1]) or int(U.shape[0]) == 0:
        raise ValueError(
            f"`data` must have shape (N, {int(A.shape[1])}) with N >= 1 (sample inputs with a "
            f"trailing 1), got {tuple(U.shape)}"
        )
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) < 1):
        raise ValueError(f"`max_samples` must be a positive integer or None, got {max_samples!r}")
    N = int(U.shape[0])
    if max_samples is not None and N > int(max_samples):
        rows = np.sort(rng.choice(N, size=int(max_samples), replace=False))
        U = xp.take(U, xp.asarray(rows, dtype=xp.int64, device=device(U)), axis=0)
    return U


def _products(problem: LayerProblem, U: Any) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: ``C = aᵀa`` of the activations on the samples and ``G = V_flat V_flatᵀ`` (host float64)."""
    xp, A, V, n = problem.xp, problem.inputs, problem.outgoing, problem.n
    a = xp.maximum(xp.matmul(U, xp.permute_dims(A, (1, 0))), xp.asarray(0, dtype=A.dtype, device=device(A)))
    m, _, s = (int(d) for d in V.shape)
    Vt = xp.reshape(xp.permute_dims(V, (1, 0, 2)), (n, m * s))
    C = to_numpy(xp.matmul(xp.permute_dims(a, (1, 0)), a)).astype(np.float64)
    G = to_numpy(xp.matmul(Vt, xp.permute_dims(Vt, (1, 0)))).astype(np.float64)
    return C, G


def _greedy_removal(M: np.ndarray, k: int) -> tuple[np.ndarray, list[int], float]:
    """Step 3: the removed units (mask), their order and ``E`` of the removed set."""
    n = int(M.shape[0])
    # greedy removal: adding j to T raises E by M[j, j] + 2 Σ_{l∈T} M[j, l]
    removed = np.zeros(n, dtype=bool)
    cross = np.zeros(n, dtype=np.float64)
    diag = np.diag(M).copy()
    order: list[int] = []
    objective = 0.0
    for _ in range(n - k):
        score = np.where(removed, np.inf, diag + 2.0 * cross)
        j = int(np.argmin(score))
        objective += float(score[j])
        removed[j] = True
        order.append(j)
        cross += M[:, j]
    return removed, order, objective


def _rescale(C: np.ndarray, M: np.ndarray, keep: np.ndarray, removed: np.ndarray, rescale: str) -> np.ndarray:
    """Step 4: the ``(n, k)`` fold: the selection, refitted as ``rescale`` says."""
    n, k = int(C.shape[0]), int(keep.size)
    F = np.zeros((n, k), dtype=np.float64)
    F[keep, np.arange(k)] = 1.0
    if rescale == "full" and k < n:
        drop = np.flatnonzero(removed)
        # F[drop] = C[drop, K] C[K, K]^+ (minimum-norm least squares)
        sol = scipy.linalg.lstsq(C[np.ix_(keep, keep)], C[np.ix_(keep, drop)], lapack_driver="gelsd")[0]
        F[drop] = sol.T
    elif rescale == "channel":
        lam = scipy.linalg.lstsq(M[np.ix_(keep, keep)], M[:, keep].sum(axis=0), lapack_driver="gelsd")[0]
        F[keep, np.arange(k)] = lam
    return F


def _assignment(F: np.ndarray, keep: np.ndarray, removed: np.ndarray, rescale: str) -> np.ndarray:
    """Step 5: each unit's kept unit: its own, or for a removed one (``"full"``) the kept
    unit with the largest refit coefficient; ``-1`` where it has none."""
    n, k = F.shape
    assignment = np.full(n, -1, dtype=np.int64)
    assignment[keep] = np.arange(k)
    if rescale == "full":
        for j in np.flatnonzero(removed):
            nz = np.flatnonzero(F[j] != 0)
            if nz.size:
                assignment[j] = int(nz[np.argmax(np.abs(F[j, nz]))])
    return assignment


def _residual(C: np.ndarray, G: np.ndarray, P: np.ndarray) -> float:
    """``Σ_t ‖V (I − F S) a(t)‖²`` from ``C = aᵀa``, ``G = V_flat V_flatᵀ`` and ``P = I − F S``."""
    # Σ_t ‖V P a_t‖² = trace(Pᵀ G P C) = Σ_ij G_ij (P C Pᵀ)_ij  (G, C symmetric)
    return float(np.sum(G * (P @ C @ P.T)))


THINET = {"thinet": thinet}
"""The data-driven baseline, by the name ``method=`` selects it with."""
