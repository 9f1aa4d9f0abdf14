"""Weighted K-means and its Weiszfeld refinement, written once against the array API.

Public functions
----------------
kmeans(X, k, ...)
    Weighted K-means: k-means‖ (default) or k-means++ seeding, Lloyd iterations, restarts.
weiszfeld(X, labels, k, ...)
    Alternating minimisation of the *unsquared* weighted objective, from a partition.
KMeansResult
    What both return.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._array import Array, check_finite, check_int, chunk_rows, device, namespace, resolve_seed, take_rows, to_numpy

__all__ = ["KMeansResult", "kmeans", "ward", "weiszfeld"]

_INITS = ("k-means||", "k-means++")
_ROUNDS = 5  # k-means‖ rounds (Bahmani et al. use 5 with ℓ = 2k)
_OVERSAMPLING = 2.0  # ℓ / k
_ASSUMED_ITERS = 20  # Lloyd iterations assumed when choosing the mode
_WARD_COLUMNS = 4096  # Ward's float64 Gram is summed over slices of this many input columns
_WARD_BLOCK = 16 * 2**20  # bytes of one block of rows of Ward's Gram (the only temporary)
# A float32 Gram entry is trusted where its probabilistic error bound (below) is at most this
# fraction of the squared distance it enters; closer pairs are recomputed in float64.
_WARD_RELATIVE = 2.0**-10


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


# --------------------------------------------------------------------------- validation


def _check_tol(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and non-negative, got {value}")
    return float(value)


def _check_points(xp: Any, X: Array, weights: Array | None) -> np.ndarray:
    """Validate ``X`` (and ``weights``); return the weights on the host as float64."""
    if X.ndim != 2:
        raise ValueError(f"`X` must be 2-D (n points × d features), got shape {tuple(X.shape)}")
    n, d = X.shape
    if n < 1 or d < 1:
        raise ValueError(f"`X` must have at least one row and one column, got shape {tuple(X.shape)}")
    if not xp.isdtype(X.dtype, "real floating"):
        raise TypeError(f"`X` must have a real floating dtype (float32 or float64), got {X.dtype}")
    check_finite(xp, X=X)
    if weights is None:
        return np.ones(n)
    if tuple(weights.shape) != (n,):
        raise ValueError(f"`weights` must have shape ({n},) to match `X`, got {tuple(weights.shape)}")
    if not xp.isdtype(weights.dtype, "real floating"):
        raise TypeError(f"`weights` must have a real floating dtype, got {weights.dtype}")
    w = to_numpy(weights).astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("`weights` contains NaN or infinite values")
    if not np.all(w > 0):
        raise ValueError("`weights` must be strictly positive")
    return w


# ------------------------------------------------------------------------- point sets


class _Points:
    """The weighted point set, in direct or Gram representation (see the module notes).

    A *state* (a set of ``k`` centres) is ``C`` (``k × d``) in direct mode and a pair of
    host arrays ``(owner, coef)`` in Gram mode, meaning ``A[i, owner[i]] = coef[i]``
    (every other entry zero) and centres ``Aᵀ X``. Both the seeds (one point per centre)
    and the weighted means of a partition have that form.
    """

    def __init__(self, xp: Any, X: Array, w: np.ndarray, gram: bool, max_bytes: int):
        self.xp, self.X, self.w, self.gram = xp, X, w, gram
        self.n, self.d = (int(s) for s in X.shape)
        self.dtype, self.dev = X.dtype, device(X)
        self.itemsize = 4 if X.dtype == xp.float32 else 8
        self.max_bytes = max_bytes
        # elementwise passes over n × k blocks run in small chunks: they stay in cache and
        # below malloc's mmap threshold (a fresh 32 MiB temporary costs ~8k page faults)
        self.small_bytes = min(max_bytes, 4 * 2**20)
        self.zero = xp.zeros((), dtype=X.dtype, device=self.dev)
        if gram:
            # X @ X.T lets NumPy use SYRK (half the flops of a general product).
            self.G = X @ X.T
            flat = xp.reshape(self.G, (-1,))
            diag = xp.arange(self.n, dtype=xp.int64, device=self.dev) * (self.n + 1)
            self.sqn = xp.take(flat, diag)  # G_ii, so that d(x_i, x_i) is exactly 0
        else:
            self.sqn = xp.concat([xp.sum(X[s:e, ...] * X[s:e, ...], axis=1) for s, e in self.chunks(self.d * 2)])

    # -- small helpers
    def chunks(self, row_elems: int, n_rows: int | None = None, small: bool = False):
        n_rows = self.n if n_rows is None else n_rows
        budget = self.small_bytes if small else self.max_bytes
        starts = chunk_rows(n_rows, row_elems * self.itemsize, budget)
        return [(s, min(s + starts.step, n_rows)) for s in starts]

    def dev_array(self, host: np.ndarray, dtype: Any = None) -> Array:
        return self.xp.asarray(host, dtype=self.dtype if dtype is None else dtype, device=self.dev)

    def onehot(self, labels: np.ndarray, k: int, coef: np.ndarray | None = None) -> Array:
        """``(len(labels), k)`` matrix with ``coef[j]`` (or 1) at ``(j, labels[j])``."""
        xp = self.xp
        lab = self.dev_array(labels, xp.int64)
        hit = lab[:, None] == xp.arange(k, dtype=xp.int64, device=self.dev)[None, :]
        if coef is None:
            return xp.astype(hit, self.dtype)
        return xp.where(hit, self.dev_array(coef)[:, None], self.zero)

    def mean_state(self, labels: np.ndarray, k: int) -> Any:
        """Weighted means of a partition: ``c = Σ_{i∈c} (w_i / W_c) x_i``.

        Normalising the weights before the product keeps a singleton's centre exactly
        equal to its point (coefficient 1.0), so ``k == n`` gives objective 0 exactly.
        """
        W = np.bincount(labels, weights=self.w, minlength=k)
        coef = self.w / W[labels]
        if self.gram:
            return (labels, coef)
        return self.centres_of(labels, coef, k)

    def centres_of(self, owner: np.ndarray, coef: np.ndarray, k: int) -> Array:
        C = None
        for s, e in self.chunks(k):
            part = self.onehot(owner[s:e], k, coef[s:e]).T @ self.X[s:e, ...]
            C = part if C is None else C + part
        return C

    def seed_state(self, idx: np.ndarray) -> Any:
        if not self.gram:
            return take_rows(self.xp, self.X, idx)
        owner, coef = np.zeros(self.n, np.int64), np.zeros(self.n)
        owner[idx], coef[idx] = np.arange(idx.size), 1.0
        return (owner, coef)

    def centres(self, state: Any, k: int) -> Array:
        return self.centres_of(*state, k) if self.gram else state

    # -- distances between data points (seeding)
    def sqdist_rows(self, idx: np.ndarray) -> Array:
        """``(len(idx), n)`` squared distances from the points ``idx`` to every point."""
        xp = self.xp
        ip = take_rows(xp, self.G, idx) if self.gram else take_rows(xp, self.X, idx) @ self.X.T
        sq = take_rows(xp, self.sqn, idx)
        return xp.maximum(sq[:, None] + self.sqn[None, :] - 2.0 * ip, self.zero)

    def sqdist_cols(self, idx: np.ndarray) -> Array:
        """``(n, len(idx))``: the transpose of ``sqdist_rows``, for reductions along rows."""
        xp = self.xp
        if self.gram:
            ip = take_rows(xp, self.G, idx, axis=1)  # G is symmetric
        else:
            ip = self.X @ take_rows(xp, self.X, idx).T
        sq = take_rows(xp, self.sqn, idx)
        return xp.maximum(self.sqn[:, None] + sq[None, :] - 2.0 * ip, self.zero)

    # -- Lloyd steps
    def _pick(self, M: Array, cols: np.ndarray) -> Array:
        """``M[i, cols[i]]`` for every row ``i`` of a C-contiguous ``M`` (a gather, O(n))."""
        rows, k = (int(s) for s in M.shape)
        flat = np.arange(rows, dtype=np.int64) * k + cols
        return self.xp.take(self.xp.reshape(M, (-1,)), self.dev_array(flat, self.xp.int64))

    def _gram_products(self, owner: np.ndarray, coef: np.ndarray, k: int):
        """``−2 G A`` and ``‖c‖² = a_cᵀ G a_c = Σ_{i∈c} a_i (G A)_ic`` (host)."""
        GA2 = self.G @ self.onehot(owner, k, -2.0 * coef)  # −2 folded into A: one pass less
        picked = to_numpy(self._pick(GA2, owner)).astype(np.float64)
        return GA2, -0.5 * np.bincount(owner, weights=coef * picked, minlength=k)

    def assign(self, state: Any, k: int) -> tuple[np.ndarray, np.ndarray, Any]:
        """Nearest centre of every point, its squared distance, and what ``shift`` needs."""
        xp = self.xp
        if self.gram:
            GA2, q_host = self._gram_products(*state, k)
            q = self.dev_array(q_host)
            blocks = ((GA2[s:e, ...], s, e) for s, e in self.chunks(k, small=True))
        else:
            C = state
            q, C2 = xp.sum(C * C, axis=1), -2.0 * C
            blocks = ((self.X[s:e, ...] @ C2.T, s, e) for s, e in self.chunks(2 * k))
        labels, dmin = [], []
        for P, s, e in blocks:
            # ‖x_i‖² is constant along the row: leave it out of the argmin
            score = P + q[None, :]
            lab = xp.argmin(score, axis=1)
            labels.append(to_numpy(lab))
            dmin.append(to_numpy(self.sqn[s:e, ...] + self._pick(score, to_numpy(lab))))
        aux = (GA2, q_host) if self.gram else None
        d2 = np.maximum(np.concatenate(dmin).astype(np.float64), 0.0)
        return np.concatenate(labels).astype(np.int64), d2, aux

    def shift(self, old: Any, old_aux: Any, new: Any, new_aux: Any, k: int) -> float:
        """``Σ_c ‖c_new − c_old‖²`` (Gram: ``q_new + q_old − 2 a_oldᵀ G a_new``)."""
        if not self.gram:
            return float(self.xp.sum((new - old) ** 2))
        owner, coef = old
        GA2_new, q_new = new_aux
        picked = to_numpy(self._pick(GA2_new, owner)).astype(np.float64)
        cross = -0.5 * np.bincount(owner, weights=coef * picked, minlength=k)
        return float(np.sum(q_new + old_aux[1] - 2.0 * cross))

    def objective(
        self, labels: np.ndarray, C: Array, squared: bool = True, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``‖x_i − c_{labels[i]}‖²`` (or unsquared) for every point, or for the points
        ``rows`` (then ``labels`` is theirs), from differences: no cancellation."""
        xp = self.xp
        out = []
        for s, e in self.chunks(2 * self.d, None if rows is None else rows.size, small=True):
            X = self.X[s:e, ...] if rows is None else take_rows(xp, self.X, rows[s:e])
            diff = take_rows(xp, C, labels[s:e]) - X
            out.append(to_numpy(xp.sum(diff * diff, axis=1)))
        d2 = np.concatenate(out).astype(np.float64)
        return d2 if squared else np.sqrt(d2)

    def gram_objective(self, state: Any, k: int) -> float:
        """``Σ_i w_i G_ii − Σ_c W_c ‖c‖²`` for a mean state (one product, no centres)."""
        owner, coef = state
        _, q = self._gram_products(owner, coef, k)
        W = np.bincount(owner, weights=self.w, minlength=k)
        return float(self.w @ to_numpy(self.sqn).astype(np.float64) - W @ q)


# -------------------------------------------------------------------------- seeding


def _kmeanspp(
    xp: Any, sqdist: Callable[[np.ndarray], Array], wc: np.ndarray, k: int, rng: np.random.Generator, P: _Points
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


def _kmeans_parallel(P: _Points, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means‖ seeding (Bahmani et al. 2012): indices of ``k`` distinct points."""
    n, w, xp = P.n, P.w, P.xp
    d2 = np.full(n, np.inf)
    near = np.zeros(n, np.int64)
    is_cand = np.zeros(n, bool)

    def add(new: np.ndarray) -> None:
        for s, e in P.chunks(3 * n, new.size):
            D = P.sqdist_cols(new[s:e])  # (n, chunk): reductions along contiguous rows
            arg = xp.argmin(D, axis=1)
            dmin = to_numpy(P._pick(D, to_numpy(arg))).astype(np.float64)
            arg = to_numpy(arg)
            better = dmin < d2
            d2[better], near[better] = dmin[better], new[s:e][arg[better]]
        is_cand[new], d2[new], near[new] = True, 0.0, new

    add(np.array([rng.choice(n, p=w / w.sum())]))
    ell = _OVERSAMPLING * k
    for _ in range(_ROUNDS):
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

    return cand[_kmeanspp(xp, sqdist, wc, k, rng, P)]


def _seed_indices(P: _Points, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    if init == "k-means||":
        return _kmeans_parallel(P, k, rng)
    return _kmeanspp(P.xp, P.sqdist_rows, P.w, k, rng, P)


# ---------------------------------------------------------------------------- Lloyd


def _repair(labels: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
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


def _lloyd(P: _Points, state: Any, k: int, max_iter: int, tol: float):
    """Lloyd iterations from ``state``; returns (final mean state, labels, n_iter)."""
    prev = prev_aux = prev_labels = None
    for it in range(1, max_iter + 1):
        labels, d2, aux = P.assign(state, k)
        labels = _repair(labels, d2, k)
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


def _choose_gram(n: int, d: int, k: int, n_init: int, max_iter: int, init: str) -> bool:
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
    T = min(max_iter, _ASSUMED_ITERS)
    if init == "k-means||":
        m = min(n, int(_ROUNDS * _OVERSAMPLING * k) + 1)
        seeding = _ROUNDS * _OVERSAMPLING * k * n * d + m * m * d
    else:
        seeding = (2 + math.log(k)) * k * n * d
    direct = n_init * (seeding + T * 2 * n * k * d)
    gram = n * n * d + n_init * T * n * n * k + k * n * d
    return gram < direct


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
    w = _check_points(xp, X, weights)
    n, d = (int(s) for s in X.shape)
    k = check_int("k", k, 1, n)
    n_init = check_int("n_init", n_init, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    tol = _check_tol("tol", tol)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    if init not in _INITS:
        raise ValueError(f"`init` must be one of {_INITS}, got {init!r}")
    seed = resolve_seed(seed)
    rng = np.random.default_rng(seed)
    if _mode is None:
        gram = _choose_gram(n, d, k, n_init, max_iter, init)
    elif _mode in ("gram", "direct"):
        gram = _mode == "gram"
    else:
        raise ValueError(f"`_mode` must be 'gram', 'direct' or None, got {_mode!r}")

    P = _Points(xp, X, w, gram, max_bytes)
    mean = xp.mean(X, axis=0)
    sqn_host = to_numpy(P.sqn).astype(np.float64)
    variance = max(float(sqn_host.mean()) - float(xp.sum(mean * mean)), 0.0) / d
    tol_abs = tol * variance

    best = None
    for _ in range(n_init):
        state = P.seed_state(_seed_indices(P, k, init, rng))
        state, labels, n_iter = _lloyd(P, state, k, max_iter, tol_abs)
        if n_init == 1:
            obj = 0.0
        elif gram:
            obj = P.gram_objective(state, k)
        else:
            obj = float(P.w @ P.objective(labels, state))
        if best is None or obj < best[0]:
            best = (obj, state, labels, n_iter)
    _, state, labels, n_iter = best
    C = P.centres(state, k)
    objective = math.fsum(P.w * P.objective(labels, C))
    return KMeansResult(P.dev_array(labels, xp.int64), C, objective, n_iter, seed)


# ------------------------------------------------------------------------ Weiszfeld


def _cluster_sums(terms: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Correctly rounded per-cluster sums (``math.fsum``), so comparisons are exact."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    t = terms[order]
    return np.array([math.fsum(t[bounds[c] : bounds[c + 1]]) for c in range(k)])


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
    w = _check_points(xp, X, weights)
    n = int(X.shape[0])
    k = check_int("k", k, 1, n)
    max_iter = check_int("max_iter", max_iter, 1)
    tol = _check_tol("tol", tol)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    if tuple(labels.shape) != (n,):
        raise ValueError(f"`labels` must have shape ({n},) to match `X`, got {tuple(labels.shape)}")
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"`labels` must have an integer dtype, got {labels.dtype}")
    L = to_numpy(labels).astype(np.int64)
    if L.min() < 0 or L.max() >= k:
        raise ValueError(f"`labels` must lie in [0, {k}), got values in [{L.min()}, {L.max()}]")

    P = _Points(xp, X, w, False, max_bytes)
    C = P.mean_state(L, k)
    d = P.objective(L, C, squared=False)
    if np.bincount(L, minlength=k).min() == 0:
        L = _repair(L, d, k)
        C = P.mean_state(L, k)
        d = P.objective(L, C, squared=False)
    # points closer than this to their centre count as coinciding with it (1/d overflows)
    tiny = float(np.finfo(np.float32 if P.itemsize == 4 else np.float64).eps) * max(
        float(np.sqrt(to_numpy(P.sqn).max())), 1.0
    )
    obj = math.fsum(w * d)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        # 1. Weiszfeld step (Vardi-Zhang), accepted per cluster only if it helps
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
        keep = _cluster_sums(w * d_new, L, k) < _cluster_sums(w * d, L, k)
        C = xp.where(P.dev_array(keep, xp.bool)[:, None], C_new, C)
        d = np.where(keep[L], d_new, d)
        # 2. reassignment, to strictly nearer centres only
        cand, _, _ = P.assign(C, k)
        rows = np.flatnonzero(cand != L)  # usually few: exact distances for those only
        if rows.size:
            d_cand = P.objective(cand[rows], C, squared=False, rows=rows)
            better = d_cand < d[rows]
            L, d = L.copy(), d.copy()
            L[rows[better]], d[rows[better]] = cand[rows[better]], d_cand[better]
        if np.bincount(L, minlength=k).min() == 0:
            L2 = _repair(L, d, k)
            moved = np.flatnonzero(L2 != L)
            src = np.arange(k)
            src[L2[moved]] = k + np.arange(moved.size)  # empty cluster c takes point j
            C = xp.take(xp.concat([C, take_rows(xp, X, moved)]), P.dev_array(src, xp.int64), axis=0)
            L, d = L2, np.where(L2 != L, 0.0, d)
        new_obj = math.fsum(w * d)
        done = obj - new_obj <= tol * obj
        obj = new_obj
        if done:
            break
    return KMeansResult(P.dev_array(L, xp.int64), C, obj, n_iter, -1)


# ------------------------------------------------------------------------------ Ward


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
    w = _check_points(xp, X, weights)
    n = int(X.shape[0])
    k = check_int("k", k, 1, n)
    if k == n:
        return np.arange(n, dtype=np.int64)
    # Host algorithm (sequential merges); only the (n, d) points and (n,) weights cross.
    cost = _ward_costs(to_numpy(X), w)
    np.fill_diagonal(cost, np.inf)
    size = w.copy()
    active = np.ones(n, dtype=bool)
    mask = np.zeros(n)  # +inf on merged-away clusters: they are masked, not erased
    row, new, tmp = np.empty(n), np.empty(n), np.empty(n)  # reused: no allocation per step
    merges: list[tuple[float, int, int]] = []
    chain: list[int] = []
    while len(merges) < n - 1:
        if not chain:
            chain.append(int(np.argmax(active)))
        a = chain[-1]
        np.add(cost[a], mask, out=row)
        b = int(np.argmin(row))
        if len(chain) > 1 and row[chain[-2]] <= row[b]:
            b = chain[-2]  # ties go back down the chain, so that it always ends
        if len(chain) == 1 or b != chain[-2]:
            chain.append(b)
            continue
        chain.pop()
        chain.pop()
        lo, hi = min(a, b), max(a, b)
        d_ab = float(cost[a, b])
        # Lance-Williams, ((W_a + W) Δ_a + (W_b + W) Δ_b − W Δ_ab) / (W_a + W_b + W), in place
        np.add(size, size[a], out=new)
        new *= cost[a]
        np.add(size, size[b], out=tmp)
        tmp *= cost[b]
        new += tmp
        np.multiply(size, d_ab, out=tmp)
        new -= tmp
        np.add(size, size[a] + size[b], out=tmp)
        new /= tmp
        new[lo] = np.inf
        cost[lo, :] = new
        cost[:, lo] = new  # the one strided write per merge
        size[lo] += size[hi]
        active[hi] = False
        mask[hi] = np.inf
        merges.append((d_ab, lo, hi))
    # The n - k cheapest merges (stable: a merge comes after the merges it builds on).
    order = np.argsort(np.array([m[0] for m in merges]), kind="stable")[: n - k]
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for t in order:
        _, lo, hi = merges[t]
        parent[root(hi)] = root(lo)
    roots = np.array([root(i) for i in range(n)])
    _, first = np.unique(roots, return_index=True)
    rank = {int(roots[f]): c for c, f in enumerate(np.sort(first))}
    return np.array([rank[int(r)] for r in roots], dtype=np.int64)


def _ward_costs(Y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Ward's initial merge costs ``Δ(i, j) = w_i w_j / (w_i + w_j) ‖y_i − y_j‖²`` (host, float64).

    ``‖y_i − y_j‖² = ‖y_i‖² + ‖y_j‖² − 2 G_ij`` from the Gram matrix ``G = Y Yᵀ``, the
    ``O(n² d)`` part, formed once straight into the ``n × n`` float64 cost matrix; the only
    temporary is one block (``_WARD_BLOCK``), so memory stays ``8 n²`` bytes plus a block.

    float64 points: the Gram is summed in float64 over slices of ``_WARD_COLUMNS`` columns,
    each in blocks of rows on and right of the diagonal (half the work, as a symmetric
    product does), the other triangle mirrored after. float32 points: the Gram is one
    float32 symmetric product (half the time of float64, and no float64 copy of ``Y``)
    written into the cost matrix's own memory and widened there (``_gram32_in_place``),
    with the squared norms ``‖y_i‖²`` in float64. A float32 product of length ``d``
    is off by ``|δG_ij| ≲ 4 √d u ‖y_i‖ ‖y_j‖`` (``u = 2⁻²⁴``; the probabilistic bound of
    Higham and Mary, 2019, with a margin; the worst case ``d u`` is not reached by blocked
    BLAS sums), which only matters where ``‖y_i − y_j‖²`` is small: the pairs where
    ``2 |δG_ij|`` may exceed ``_WARD_RELATIVE`` of their squared distance (nearly parallel
    units) are recomputed in float64. When those are more than an eighth of all pairs the
    whole Gram is formed in float64 instead. Every cost is then within a relative
    ``_WARD_RELATIVE`` of the float64 one; merges whose costs differ by less can come in
    another order (``docs/performance.md``, "Ward in float32").
    """
    n, d = (int(s) for s in Y.shape)
    cost = np.empty((n, n))
    if Y.dtype != np.float32:
        _distances(cost, _gram64(Y, cost), w)
        return cost
    sq = np.empty(n)
    rows_sq = max(1, 2**18 // (8 * d))  # small blocks: in cache, and no fresh pages to fault in
    for lo in range(0, n, rows_sq):  # float64 squared norms, one block of rows at a time
        part = Y[lo : lo + rows_sq].astype(np.float64)
        sq[lo : lo + rows_sq] = np.einsum("ij,ij->i", part, part)
    _gram32_in_place(Y, cost)
    # 2 |δG_ij| <= _WARD_RELATIVE ‖y_i − y_j‖² is trusted; the other pairs are recomputed
    i, j = _distances(cost, sq, w, 8.0 * math.sqrt(d) * 2.0**-24 / _WARD_RELATIVE)
    if 8 * i.size > n * (n - 1) // 2:  # mostly near-parallel units: float64 throughout
        _distances(cost, _gram64(Y, cost), w)
        return cost
    chunk = max(1, _WARD_BLOCK // (16 * d))
    for lo in range(0, i.size, chunk):
        a, b = i[lo : lo + chunk], j[lo : lo + chunk]
        g = np.einsum("ij,ij->i", Y[a].astype(np.float64), Y[b].astype(np.float64))
        cost[a, b] = cost[b, a] = np.maximum(sq[a] + sq[b] - 2.0 * g, 0.0) * (w[a] * w[b] / (w[a] + w[b]))
    return cost


def _gram32_in_place(Y: np.ndarray, cost: np.ndarray) -> None:
    """``cost = Y Yᵀ`` (float64 ``n × n``) from one float32 product written into ``cost``'s own memory.

    The float32 Gram (``X @ X.T``: NumPy calls SYRK, half the flops) fills the first half
    of ``cost``'s bytes, then is widened to float64 in place, from the last block of rows to
    the first: float64 rows ``[r, r + s)`` overwrite float32 rows ``[2r, 2r + 2s)``, which are
    already widened, so a copy of the block being widened is the only temporary.
    """
    n = int(Y.shape[0])
    flat = cost.reshape(-1)
    G32 = flat.view(np.float32)[: n * n].reshape(n, n)
    np.matmul(Y, Y.T, out=G32)
    step = max(1, _WARD_BLOCK // (4 * n))
    for r in range(((n - 1) // step) * step, -1, -step):
        block = G32[r : r + step].copy()
        cost[r : r + step] = block


def _distances(
    cost: np.ndarray, sq: np.ndarray, w: np.ndarray, close: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The Gram ``cost`` turned, in place and in row blocks (no ``n × n`` temporary), into
    ``Δ(i, j) = w_i w_j / (w_i + w_j) max(sq_i + sq_j − 2 G_ij, 0)``.

    With ``close`` also returns the pairs ``i < j`` whose squared distance is at most
    ``close · √(sq_i sq_j)`` (host index arrays), found in the same pass.
    """
    n = int(cost.shape[0])
    norms = np.sqrt(sq) if close is not None else None
    found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for lo in range(0, n, 256):
        rows = cost[lo : lo + 256]
        rows *= -2.0
        rows += sq[lo : lo + 256, None] + sq[None, :]
        if close is not None:
            i, j = np.nonzero(rows <= close * norms[lo : lo + 256, None] * norms[None, :])
            upper = i + lo < j  # each pair once, the diagonal never
            found_i.append(i[upper] + lo)
            found_j.append(j[upper])
        np.maximum(rows, 0.0, out=rows)
        rows *= w[lo : lo + 256, None] * w[None, :] / (w[lo : lo + 256, None] + w[None, :])
    return np.concatenate(found_i), np.concatenate(found_j)


def _gram64(Y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = Y Yᵀ`` in float64, summed over slices of columns, in blocks of rows; returns
    the squared norms of the rows, summed in the same slices."""
    n = int(Y.shape[0])
    out[...] = 0.0
    sq = np.zeros(n)
    # wide inputs in slices of columns, each slice's product added in blocks of rows on and
    # right of the diagonal: the temporaries stay at most 32 MiB and 16 MiB
    columns = max(256, min(_WARD_COLUMNS, (2 * _WARD_BLOCK) // (8 * n)))
    step = max(1, _WARD_BLOCK // (8 * n))
    for lo in range(0, int(Y.shape[1]), columns):
        part = Y[:, lo : lo + columns].astype(np.float64)
        for r in range(0, n, step):
            out[r : r + step, r:] += part[r : r + step] @ part[r:].T
        sq += np.einsum("ij,ij->i", part, part)
    _mirror(out, step)
    return sq


def _mirror(G: np.ndarray, step: int) -> None:
    """Copy the upper triangle of ``G`` (filled in blocks of ``step`` rows) onto the lower."""
    n = int(G.shape[0])
    for r in range(0, n, step):
        G[r + step :, r : r + step] = G[r : r + step, r + step :].T
