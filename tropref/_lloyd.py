"""Lloyd iterations of :func:`tropref.cluster.kmeans`, the empty-cluster repair, the mode choice, restarts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._array import to_numpy
from ._points import Points
from ._seeding import OVERSAMPLING, ROUNDS, seed_indices

__all__ = ["ASSUMED_ITERS", "choose_gram", "lloyd", "repair", "restarts"]

ASSUMED_ITERS = 20  # Lloyd iterations assumed when choosing the mode


def repair(labels: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    """Give every empty cluster the farthest point of a cluster that has more than one.

    Moving a point out of a cluster of two or more and into an empty one (whose centre
    becomes that point) never raises the objective, and it works with duplicated points,
    where re-seeding at a far point alone would leave ties that empty the cluster again.
    """
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return labels
    labels = labels.copy()
    order = np.argsort(-dist, kind="stable")
    pos = 0
    for c in empty:
        while counts[labels[order[pos]]] <= 1:
            pos += 1
        j = order[pos]
        counts[labels[j]] -= 1
        labels[j], counts[c] = c, 1
    return labels


def lloyd(P: Points, state: Any, k: int, max_iter: int, tol: float):
    """Lloyd iterations from ``state``; returns (final mean state, labels, n_iter)."""
    prev = prev_aux = prev_labels = None
    for it in range(1, max_iter + 1):
        labels, d2, aux = P.assign(state, k)
        labels = repair(labels, d2, k)
        if prev_labels is not None:
            if np.array_equal(labels, prev_labels):
                return state, labels, it  # state already holds the means of `labels`
            if P.shift(prev, prev_aux, state, aux, k) <= tol:
                break
        prev, prev_aux, prev_labels = state, aux, labels
        state = P.mean_state(labels, k)
    else:
        return state, labels, max_iter
    return P.mean_state(labels, k), labels, it


def choose_gram(n: int, d: int, k: int, n_init: int, max_iter: int, init: str) -> bool:
    """Gram mode iff ``n <= d`` and a multiply-add count predicts it cheaper.

    ``n <= d`` keeps ``G`` (``n × n``) no larger than ``X`` and each Gram iteration
    (``n² k``) no dearer than a direct one (``n k d`` for distances, as much again for the
    centres). ``G`` itself costs ``n² d`` once for all restarts, against a direct seeding
    of about ``ℓ·rounds·n d + m² d`` (k-means‖, ``m`` candidates) or ``(2 + ln k) k n d``
    (k-means++) per restart. With ``T = min(max_iter, 20)`` assumed iterations, Gram wins
    unless ``k`` is a small fraction of ``n``.
    """
    if n > d:
        return False
    T = min(max_iter, ASSUMED_ITERS)
    if init == "k-means||":
        m = min(n, int(ROUNDS * OVERSAMPLING * k) + 1)
        seeding = ROUNDS * OVERSAMPLING * k * n * d + m * m * d
    else:
        seeding = (2 + math.log(k)) * k * n * d
    direct = n_init * (seeding + T * 2 * n * k * d)
    gram = n * n * d + n_init * T * n * n * k + k * n * d
    return gram < direct


def restarts(
    P: Points, k: int, init: str, n_init: int, max_iter: int, tol: float, rng: np.random.Generator
) -> tuple[Any, np.ndarray, int, float]:
    """The best of ``n_init`` seedings, each followed by Lloyd iterations.

    ``tol`` is relative to the mean per-feature variance of the points (scikit-learn's rule).
    Returns the centres, the labels, the iterations of the best restart and its objective
    ``Σ_i w_i ‖x_i − c_{l_i}‖²``, summed with ``math.fsum`` from the centres.
    """
    xp = P.xp
    mean = xp.mean(P.X, axis=0)
    sqn_host = to_numpy(P.sqn).astype(np.float64)
    variance = max(float(sqn_host.mean()) - float(xp.sum(mean * mean)), 0.0) / P.d
    tol_abs = tol * variance
    best = None
    for _ in range(n_init):
        state = P.seed_state(seed_indices(P, k, init, rng))
        state, labels, n_iter = lloyd(P, state, k, max_iter, tol_abs)
        if n_init == 1:
            obj = 0.0
        elif P.gram:
            obj = P.gram_objective(state, k)
        else:
            obj = float(P.w @ P.objective(labels, state))
        if best is None or obj < best[0]:
            best = (obj, state, labels, n_iter)
    _, state, labels, n_iter = best
    C = P.centres(state, k)
    return C, labels, n_iter, math.fsum(P.w * P.objective(labels, C))
