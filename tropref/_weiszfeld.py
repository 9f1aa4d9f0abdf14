"""Weiszfeld iterations of :func:`tropref.cluster.weiszfeld`: the unsquared objective, lowered from a partition."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._array import to_numpy
from ._blocks import take_rows
from ._lloyd import repair
from ._points import Points

__all__ = ["cluster_sums", "iterate", "reassign", "refill", "start", "step"]


def cluster_sums(terms: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Correctly rounded per-cluster sums (``math.fsum``), so comparisons are exact."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    t = terms[order]
    return np.array([math.fsum(t[bounds[c] : bounds[c + 1]]) for c in range(k)])


def iterate(P: Points, L: np.ndarray, k: int, max_iter: int, tol: float) -> tuple[np.ndarray, Any, float, int]:
    """Weiszfeld steps and reassignments from the partition ``L`` (host labels in ``[0, k)``).

    Returns the labels, the centres, ψ (``math.fsum``) and the iterations run.
    """
    w = P.w
    L, C, d = start(P, L, k)
    # points closer than this to their centre count as coinciding with it (1/d overflows)
    tiny = float(np.finfo(np.float32 if P.itemsize == 4 else np.float64).eps) * max(
        float(np.sqrt(to_numpy(P.sqn).max())), 1.0
    )
    obj = math.fsum(w * d)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        C, d = step(P, L, C, d, k, tiny)
        L, d = reassign(P, L, C, d, k)
        L, C, d = refill(P, L, C, d, k)
        new_obj = math.fsum(w * d)
        done = obj - new_obj <= tol * obj
        obj = new_obj
        if done:
            break
    return L, C, obj, n_iter


def start(P: Points, L: np.ndarray, k: int) -> tuple[np.ndarray, Any, np.ndarray]:
    """The weighted means of ``L`` (its empty clusters first filled) and every point's distance."""
    C = P.mean_state(L, k)
    d = P.objective(L, C, squared=False)
    if np.bincount(L, minlength=k).min() == 0:
        L = repair(L, d, k)
        C = P.mean_state(L, k)
        d = P.objective(L, C, squared=False)
    return L, C, d


def step(P: Points, L: np.ndarray, C: Any, d: np.ndarray, k: int, tiny: float) -> tuple[Any, np.ndarray]:
    """One Weiszfeld step (Vardi-Zhang) per cluster, kept only where the cluster's sum falls."""
    xp, w = P.xp, P.w
    coinc = d <= tiny
    inv = np.where(coinc, 0.0, w / np.where(coinc, 1.0, d))
    s = np.bincount(L, weights=inv, minlength=k)
    eta = np.bincount(L, weights=np.where(coinc, w, 0.0), minlength=k)
    S = P.centres_of(L, inv, k)  # Σ_{i∈c} (w_i / d_i) x_i
    R = S - P.dev_array(s)[:, None] * C
    r = to_numpy(xp.sqrt(xp.sum(R * R, axis=1))).astype(np.float64)
    moving = (s > 0) & (r > eta)
    ratio = np.where(moving, eta / np.where(moving, r, 1.0), 0.0)
    alpha = np.where(moving, (1.0 - ratio) / np.where(s > 0, s, 1.0), 0.0)  # on S
    beta = np.where(moving, ratio, 1.0)  # on C
    C_new = P.dev_array(alpha)[:, None] * S + P.dev_array(beta)[:, None] * C
    d_new = P.objective(L, C_new, squared=False)
    keep = cluster_sums(w * d_new, L, k) < cluster_sums(w * d, L, k)
    C = xp.where(P.dev_array(keep, xp.bool)[:, None], C_new, C)
    return C, np.where(keep[L], d_new, d)


def reassign(P: Points, L: np.ndarray, C: Any, d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every point moved to its nearest centre, only where that one is strictly nearer."""
    cand, _, _ = P.assign(C, k)
    rows = np.flatnonzero(cand != L)  # usually few: exact distances for those only
    if rows.size:
        d_cand = P.objective(cand[rows], C, squared=False, rows=rows)
        better = d_cand < d[rows]
        L, d = L.copy(), d.copy()
        L[rows[better]], d[rows[better]] = cand[rows[better]], d_cand[better]
    return L, d


def refill(P: Points, L: np.ndarray, C: Any, d: np.ndarray, k: int) -> tuple[np.ndarray, Any, np.ndarray]:
    """Every empty cluster given the farthest point of a cluster with two or more, as its centre."""
    if np.bincount(L, minlength=k).min() > 0:
        return L, C, d
    xp = P.xp
    L2 = repair(L, d, k)
    moved = np.flatnonzero(L2 != L)
    src = np.arange(k)
    src[L2[moved]] = k + np.arange(moved.size)  # empty cluster c takes point j
    C = xp.take(xp.concat([C, take_rows(xp, P.X, moved)]), P.dev_array(src, xp.int64), axis=0)
    return L2, C, np.where(L2 != L, 0.0, d)
