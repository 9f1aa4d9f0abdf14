"""Seeding of :func:`tropref.cluster.kmeans`: k-means‖ (Bahmani et al. 2012) and greedy k-means++.

Randomness is drawn on the host from the generator passed in; only indices and
probabilities cross to the device, so a seed gives the same seeds on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._array import Array, to_numpy
from ._blocks import take_rows
from ._points import Points

__all__ = ["INITS", "OVERSAMPLING", "ROUNDS", "kmeans_parallel", "kmeanspp", "seed_indices"]

INITS = ("k-means||", "k-means++")
ROUNDS = 5  # k-means‖ rounds (Bahmani et al. use 5 with ℓ = 2k)
OVERSAMPLING = 2.0  # ℓ / k


def kmeanspp(
    xp: Any, sqdist: Callable[[np.ndarray], Array], wc: np.ndarray, k: int, rng: np.random.Generator, P: Points
) -> np.ndarray:
    """Greedy weighted D² sampling of ``k`` distinct points among ``m`` (local indices).

    Each step draws ``2 + ⌊ln k⌋`` trial points with probability ``∝ w_j D(x_j)²`` (``D``
    the distance to the nearest centre so far) and keeps the one that lowers
    ``Σ_j w_j D(x_j)²`` most, as scikit-learn does. ``sqdist(t)`` returns the
    ``(len(t), m)`` squared distances from the points ``t``.
    """
    m = wc.shape[0]
    n_trials = 2 + int(math.log(k))
    chosen = np.empty(k, np.int64)
    taken = np.zeros(m, bool)
    chosen[0] = rng.choice(m, p=wc / wc.sum())
    taken[chosen[0]] = True
    d2 = sqdist(chosen[:1])[0, :]
    wc_dev = P.dev_array(wc)
    for i in range(1, k):
        pot = wc * to_numpy(d2).astype(np.float64)
        pot[taken] = 0.0  # rounding may leave a chosen point a tiny distance from itself
        total = pot.sum()
        if total > 0:
            trials = rng.choice(m, size=n_trials, p=pot / total)
        else:  # every remaining point duplicates a centre: any one will do
            trials = rng.choice(np.flatnonzero(~taken), size=1)
        D = xp.minimum(d2[None, :], sqdist(trials))
        best = int(np.argmin(to_numpy(D @ wc_dev)))
        chosen[i] = trials[best]
        taken[chosen[i]] = True
        d2 = D[best, :]
    return chosen


def kmeans_parallel(P: Points, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means‖ seeding (Bahmani et al. 2012): indices of ``k`` distinct points."""
    n, w, xp = P.n, P.w, P.xp
    d2 = np.full(n, np.inf)
    near = np.zeros(n, np.int64)
    is_cand = np.zeros(n, bool)

    def add(new: np.ndarray) -> None:
        for s, e in P.chunks(3 * n, new.size):
            D = P.sqdist_cols(new[s:e])  # (n, chunk): reductions along contiguous rows
            arg = xp.argmin(D, axis=1)
            dmin = to_numpy(P.pick(D, to_numpy(arg))).astype(np.float64)
            arg = to_numpy(arg)
            better = dmin < d2
            d2[better], near[better] = dmin[better], new[s:e][arg[better]]
        is_cand[new], d2[new], near[new] = True, 0.0, new

    add(np.array([rng.choice(n, p=w / w.sum())]))
    ell = OVERSAMPLING * k
    for _ in range(ROUNDS):
        pot = w * d2
        phi = pot.sum()
        if not phi > 0:
            break
        new = np.flatnonzero(rng.random(n) < np.minimum(1.0, ell * pot / phi))
        if new.size:
            add(new)
    missing = k - int(is_cand.sum())
    if missing > 0:  # few distinct points (or bad luck): top up, still by D² where possible
        rest = np.flatnonzero(~is_cand)
        pot = w[rest] * d2[rest]
        p = pot / pot.sum() if np.count_nonzero(pot) >= missing else None
        add(np.sort(rng.choice(rest, size=missing, replace=False, p=p)))
    cand = np.flatnonzero(is_cand)
    if cand.size == k:
        return cand
    local = np.empty(n, np.int64)
    local[cand] = np.arange(cand.size)
    wc = np.bincount(local[near], weights=w, minlength=cand.size)  # weight each attracts
    cand_dev = P.dev_array(cand, xp.int64)
    sq_c = xp.take(P.sqn, cand_dev)
    if P.gram:

        def sqdist(t: np.ndarray) -> Array:
            ip = xp.take(take_rows(xp, P.G, cand[t]), cand_dev, axis=1)
            return xp.maximum(take_rows(xp, sq_c, t)[:, None] + sq_c[None, :] - 2.0 * ip, P.zero)
    else:
        Xc = xp.take(P.X, cand_dev, axis=0)
        Gc = Xc @ Xc.T
        del Xc

        def sqdist(t: np.ndarray) -> Array:
            ip = take_rows(xp, Gc, t)
            return xp.maximum(take_rows(xp, sq_c, t)[:, None] + sq_c[None, :] - 2.0 * ip, P.zero)

    return cand[kmeanspp(xp, sqdist, wc, k, rng, P)]


def seed_indices(P: Points, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    if init == "k-means||":
        return kmeans_parallel(P, k, rng)
    return kmeanspp(P.xp, P.sqdist_rows, P.w, k, rng, P)
