"""The weighted point set of :mod:`tropref.cluster`: its validation and its two representations.

*direct*: distances ``‖x_i − c‖² = ‖x_i‖² − 2 x_i·c + ‖c‖²`` from one ``(n × d)(d × k)``
product per Lloyd iteration, in row chunks so that no ``n × k`` temporary exceeds
``max_bytes``; *Gram*: with ``G = X Xᵀ`` computed once, every centre is ``c = Aᵀ X`` for a
weight matrix ``A`` (``n × k``), and ``‖x_i − c‖² = G_ii − 2 (G A)_ic + (Aᵀ G A)_cc``.
Shared by the seeding, Lloyd and Weiszfeld modules; not promised to users.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._array import Array, check_finite, device, to_numpy
from ._blocks import chunk_rows, take_rows

__all__ = ["Points", "check_points", "check_tol"]


def check_tol(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and non-negative, got {value}")
    return float(value)


def check_points(xp: Any, X: Array, weights: Array | None) -> np.ndarray:
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


class Points:
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
    def pick(self, M: Array, cols: np.ndarray) -> Array:
        """``M[i, cols[i]]`` for every row ``i`` of a C-contiguous ``M`` (a gather, O(n))."""
        rows, k = (int(s) for s in M.shape)
        flat = np.arange(rows, dtype=np.int64) * k + cols
        return self.xp.take(self.xp.reshape(M, (-1,)), self.dev_array(flat, self.xp.int64))

    def gram_products(self, owner: np.ndarray, coef: np.ndarray, k: int):
        """``−2 G A`` and ``‖c‖² = a_cᵀ G a_c = Σ_{i∈c} a_i (G A)_ic`` (host)."""
        GA2 = self.G @ self.onehot(owner, k, -2.0 * coef)  # −2 folded into A: one pass less
        picked = to_numpy(self.pick(GA2, owner)).astype(np.float64)
        return GA2, -0.5 * np.bincount(owner, weights=coef * picked, minlength=k)

    def assign(self, state: Any, k: int) -> tuple[np.ndarray, np.ndarray, Any]:
        """Nearest centre of every point, its squared distance, and what ``shift`` needs."""
        xp = self.xp
        if self.gram:
            GA2, q_host = self.gram_products(*state, k)
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
            dmin.append(to_numpy(self.sqn[s:e, ...] + self.pick(score, to_numpy(lab))))
        aux = (GA2, q_host) if self.gram else None
        d2 = np.maximum(np.concatenate(dmin).astype(np.float64), 0.0)
        return np.concatenate(labels).astype(np.int64), d2, aux

    def shift(self, old: Any, old_aux: Any, new: Any, new_aux: Any, k: int) -> float:
        """``Σ_c ‖c_new − c_old‖²`` (Gram: ``q_new + q_old − 2 a_oldᵀ G a_new``)."""
        if not self.gram:
            return float(self.xp.sum((new - old) ** 2))
        owner, coef = old
        GA2_new, q_new = new_aux
        picked = to_numpy(self.pick(GA2_new, owner)).astype(np.float64)
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
        _, q = self.gram_products(owner, coef, k)
        W = np.bincount(owner, weights=self.w, minlength=k)
        return float(self.w @ to_numpy(self.sqn).astype(np.float64) - W @ q)
