"""The partition that sees the refit: single-unit moves that lower the refit's model residual.

TropNNC's Gaussian refit (:func:`tropref.methods.correction.gaussian_refit`) rewrites the
next layer by least squares under a Gaussian model of the units' pre-activations,
``z ~ N(μ, Σ)``, ``Σ = diag(σ) ρ diag(σ)``. For a partition, every kept unit is a linear
combination of its members, ``z̃ = Λᵀ z`` (``Λ`` from the representative and the fold of
:func:`tropref.methods.tropnnc.tropnnc`), and the next layer's residual after the
unregularised refit ``F = C_ak C_kk⁻¹`` is, under the model,

    R(P) = E‖V (a − E a) − V F (ã − E ã)‖² = tr(G C_aa) − tr(G C_ak C_kk⁻¹ C_ka),

``a = relu(z)``, ``ã = relu(z̃)``, ``C`` their covariances (``C_ka = C_akᵀ``) (the closed forms of
:func:`tropref.statistics.relu_product_mean`) and ``G = V_flat V_flatᵀ`` the next layer's
Gram over the units. Ward's partition ignores ``R``: it merges units whose generators are
close, not units whose loss the refit can recover. :func:`search` starts from it and moves
one unit at a time to the cluster that lowers ``R`` most, never emptying a cluster, for a
few passes over the units. ``docs/refit.md`` (section 7) has the measurements; the
certificate is untouched (it is computed afterwards, on the final weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._blocks import outgoing_gram
from ..statistics import kept_relu_covariances, relu_covariance, relu_mean, relu_product_mean

__all__ = ["RefitModel", "search", "SEARCH_LIMIT"]

SEARCH_LIMIT = 4096
"""Largest ``n · k`` (units times kept units) a default search runs on: each pass evaluates
``n (k − 1)`` moves at ``O(n² + n k² + k³)`` each. Every layer of the shipped ``resnet20`` fits."""


class RefitModel:
    """A layer's Gaussian model, as the refit reads it: ``μ, σ, Σ, E a, C_aa, G`` (host float64).

    Parameters
    ----------
    mean, std : numpy.ndarray, shape (n,)
        ``μ`` and ``σ`` of the pre-activations.
    rho : numpy.ndarray, shape (n, n)
        Their correlation.
    V : numpy.ndarray, shape (m, n, s)
        The next layer's weights read per unit.

    Examples
    --------
    Two independent standard units, each kept as itself: nothing is lost (``R = 0``, to the
    solve's regulariser); keeping only the first loses what the next layer read of the
    second.

    >>> import numpy as np
    >>> model = RefitModel(np.zeros(2), np.ones(2), np.eye(2), np.ones((1, 2, 1)))
    >>> [round(model.residual(L) / model.total, 6) for L in (np.eye(2), np.eye(2)[:, :1])]
    [0.0, 0.5]
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, rho: np.ndarray, V: np.ndarray):
        self.mean, self.std = mean, std
        self.Sigma = std[:, None] * rho * std[None, :]
        self.Ea = relu_mean(mean, std)
        self.G = outgoing_gram(V)
        self.total = float(np.sum(self.G * relu_covariance(mean, std, rho)))  # tr(G C_aa)

    def residual(self, Lam: np.ndarray) -> float:
        """``R`` for the kept units ``z̃ = Λᵀ z``: ``Lam`` is ``Λ``, shape ``(n, k)``."""
        C_ak, C_kk = self._covariances(Lam)[3:]
        return self._residual(C_ak, C_kk, self.G @ C_ak)

    def _covariances(self, Lam: np.ndarray) -> tuple[np.ndarray, ...]:
        """``Cov(z, z̃)``, ``E z̃``, ``Cov(z̃)``, then ``C_ak`` (n, k) and ``C_kk`` (k, k)."""
        cross = self.Sigma @ Lam  # Cov(z, z̃)
        mu_k, cov_k = Lam.T @ self.mean, Lam.T @ cross
        _, C_ak, C_kk = kept_relu_covariances(self.mean, self.std, mu_k, cross, cov_k)
        return cross, mu_k, cov_k, C_ak, C_kk

    def _residual(self, C_ak: np.ndarray, C_kk: np.ndarray, GC: np.ndarray) -> float:
        """``R`` from ``C_ak``, ``C_kk`` and ``G C_ak``."""
        k = int(C_kk.shape[0])
        jitter = _jitter(np.diag(C_kk))  # a kept unit that never fires
        X = np.linalg.solve(C_kk + jitter * np.eye(k), C_ak.T)  # C_kk⁻¹ C_ka
        return self.total - float(np.sum(GC * X.T))


def search(
    model: RefitModel,
    D: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    a: np.ndarray,
    labels: np.ndarray,
    k: int,
    passes: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Move units between clusters while ``R`` falls: the partition that sees the refit.

    Each pass visits the units in order; unit ``j`` moves to the cluster ``t`` whose
    partition has the lowest ``R`` if that is below the current one (ties by a relative
    ``1e-12``), unless ``j`` is alone in its cluster. The kept unit of a cluster ``C`` is
    TropNNC's principal representative with the projection fold: ``u_C`` the leading
    eigenvector of ``Σ_C m_j ŵ_j ŵ_jᵀ`` (signed to agree with the members), read through
    ``s̃_C = Σ_C v_j α_j max(ŵ_j · u_C, 0) / Σ_C v_j``, so ``z̃_C = s̃_C u_C · (x, 1)`` and
    ``Λ[j, C] = s̃_C y_j √m_j / (α_j ‖u‖)`` for ``u = Σ_C √m_j y_j ŵ_j``. A pass that moves
    nothing ends the search. Only the two clusters a move changes are recomputed.

    Parameters
    ----------
    model : RefitModel
    D, m, v, a : numpy.ndarray
        The units' directions ``ŵ_j`` (n, p), masses, outgoing norms and norms ``α_j``.
    labels : numpy.ndarray of int, shape (n,)
        The starting partition (Ward's), ``k`` clusters, none empty (else, or for ``k < 2``,
        it is returned as it is).
    k : int
        The number of clusters.
    passes : int
        At most this many passes over the units (``>= 1``).

    Returns
    -------
    labels : numpy.ndarray of int
        The partition after the moves (a new array).
    info : dict
        ``R`` before and after, relative to ``tr(G C_aa)``, the moves and the passes run.

    Examples
    --------
    Four units, two of them read by the next layer with opposite signs: the search keeps
    the model residual at or below Ward's.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A = rng.normal(size=(4, 3)); V = rng.normal(size=(2, 4, 1))
    >>> model = RefitModel(np.zeros(4), np.ones(4), np.eye(4), V)
    >>> alpha = np.linalg.norm(A, axis=1); vn = np.abs(V).sum(axis=(0, 2))
    >>> new, info = search(model, A / alpha[:, None], alpha * vn, vn, alpha, np.array([0, 0, 1, 1]), 2, 1)
    >>> bool(info["R_after"] <= info["R_before"]), sorted(set(new.tolist()))
    (True, [0, 1])
    """
    labels = np.array(labels, dtype=np.int64)
    if k < 2 or passes < 1 or sorted(set(labels.tolist())) != list(range(k)):
        return labels, {"R_before": None, "R_after": None, "moves": 0, "passes": 0}  # nothing to move
    state = _State(model, np.stack([_column(D, m, v, a, np.flatnonzero(labels == c)) for c in range(k)], axis=1))
    R0 = state.R
    tol = 1e-12 * abs(model.total)
    moves, done = 0, 0
    for _ in range(passes):
        done += 1
        moved = 0
        for j in range(labels.size):
            c = int(labels[j])
            rest = np.flatnonzero(labels == c)
            if rest.size == 1:
                continue  # never empty a cluster
            col_c = _column(D, m, v, a, rest[rest != j])
            targets = [t for t in range(k) if t != c]
            cols = np.stack([_column(D, m, v, a, np.append(np.flatnonzero(labels == t), j)) for t in targets], axis=1)
            base = state.replaced([c], col_c[:, None])  # j out of its cluster: shared by every move
            R = base.trials(targets, cols)
            best = int(np.argmin(R))
            if R[best] < state.R - tol:
                labels[j], state = targets[best], base.replaced([targets[best]], cols[:, best : best + 1])
                moved += 1
        moves += moved
        if moved == 0:
            break
    total = max(model.total, 1e-300)
    return labels, {"R_before": R0 / total, "R_after": state.R / total, "moves": moves, "passes": done}


class _State:
    """A partition's ``Λ`` and the model terms of ``R``, which a move updates in the columns it replaces."""

    def __init__(self, model: RefitModel, Lam: np.ndarray, parts: tuple | None = None):
        self.model, self.Lam = model, Lam
        if parts is None:
            terms = model._covariances(Lam)
            parts = (*terms, model.G @ terms[3])
        self.cross, self.mu_k, self.cov_k, self.C_ak, self.C_kk, self.GC = parts
        self.R = model._residual(self.C_ak, self.C_kk, self.GC)

    def replaced(self, cols: list[int], new: np.ndarray) -> _State:
        """The state with the columns ``cols`` of ``Λ`` replaced by ``new`` (the terms of
        :meth:`RefitModel._covariances`, recomputed for those kept units only)."""
        md, n = self.model, int(self.model.mean.shape[0])
        Lam, cross, mu_k, cov_k = self.Lam.copy(), self.cross.copy(), self.mu_k.copy(), self.cov_k.copy()
        Lam[:, cols] = new
        cross[:, cols] = md.Sigma @ new
        mu_k[cols] = new.T @ md.mean
        cov_k[:, cols] = Lam.T @ cross[:, cols]
        cov_k[cols, :] = cov_k[:, cols].T
        sd_k = np.sqrt(np.maximum(np.diag(cov_k), 0.0))
        safe_k = np.where(sd_k > 0, sd_k, 1.0)
        corr_x = cross[:, cols] / _safe(md.std)[:, None] / safe_k[None, cols]
        corr_k = cov_k[:, cols] / safe_k[:, None] / safe_k[None, cols]
        corr_k[cols, np.arange(len(cols))] = 1.0
        Ek = relu_mean(mu_k, sd_k)
        # the new kept units against every unit and every kept unit: one closed-form call
        both = relu_product_mean(
            np.concatenate([md.mean, mu_k])[:, None],
            np.concatenate([md.std, sd_k])[:, None],
            mu_k[None, cols],
            sd_k[None, cols],
            np.clip(np.concatenate([corr_x, corr_k]), -1.0, 1.0),
        ) - np.outer(np.concatenate([md.Ea, Ek]), Ek[cols])
        C_ak, C_kk, GC = self.C_ak.copy(), self.C_kk.copy(), self.GC.copy()
        C_ak[:, cols], pair = both[:n], both[n:]
        C_kk[:, cols], C_kk[cols, :] = pair, pair.T
        C_kk[np.ix_(cols, cols)] = 0.5 * (pair[cols] + pair[cols].T)  # symmetric, as in the full terms
        GC[:, cols] = md.G @ C_ak[:, cols]
        return _State(md, Lam, (cross, mu_k, cov_k, C_ak, C_kk, GC))

    def trials(self, targets: list[int], cols: np.ndarray) -> np.ndarray:
        """``R`` with column ``targets[i]`` of ``Λ`` replaced by ``cols[:, i]``, for every
        ``i`` at once (the same terms as :meth:`replaced`, batched over the moves)."""
        md, n, k = self.model, int(self.model.mean.shape[0]), int(self.C_kk.shape[0])
        T, at = len(targets), np.arange(len(targets))
        t = np.asarray(targets)
        cross = md.Sigma @ cols  # (n, T)
        mu_new = cols.T @ md.mean
        cov = self.Lam.T @ cross  # (k, T): the other kept units against each new one
        cov[t, at] = np.einsum("nt,nt->t", cols, cross)
        sd_new = np.sqrt(np.maximum(cov[t, at], 0.0))
        mu_rows, sd_rows = np.repeat(self.mu_k[:, None], T, 1), np.repeat(self._sd()[:, None], T, 1)
        mu_rows[t, at], sd_rows[t, at] = mu_new, sd_new
        corr_x = cross / _safe(md.std)[:, None] / _safe(sd_new)[None, :]
        corr_k = cov / _safe(sd_rows) / _safe(sd_new)[None, :]
        corr_k[t, at] = 1.0
        E_new = relu_mean(mu_new, sd_new)
        both = (
            relu_product_mean(
                np.concatenate([np.repeat(md.mean[:, None], T, 1), mu_rows]),
                np.concatenate([np.repeat(md.std[:, None], T, 1), sd_rows]),
                mu_new[None, :],
                sd_new[None, :],
                np.clip(np.concatenate([corr_x, corr_k]), -1.0, 1.0),
            )
            - np.concatenate([np.repeat(md.Ea[:, None], T, 1), relu_mean(mu_rows, sd_rows)]) * E_new[None, :]
        )
        C_kk = np.repeat(self.C_kk[None], T, 0)
        C_kk[at, :, t], C_kk[at, t, :] = both[n:].T, both[n:].T
        C_ak, GC = np.repeat(self.C_ak[None], T, 0), np.repeat(self.GC[None], T, 0)
        C_ak[at, :, t], GC[at, :, t] = both[:n].T, (md.G @ both[:n]).T
        jitter = np.array([_jitter(d) for d in np.diagonal(C_kk, axis1=1, axis2=2)])
        X = np.linalg.solve(C_kk + jitter[:, None, None] * np.eye(k), np.swapaxes(C_ak, 1, 2))  # (T, k, n)
        return md.total - np.einsum("tnk,tkn->t", GC, X)

    def _sd(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(self.cov_k), 0.0))


def _safe(sd: np.ndarray) -> np.ndarray:
    return np.where(sd > 0, sd, 1.0)


def _jitter(variances: np.ndarray) -> float:
    """The solve's regulariser: 1e-9 of the largest kept variance (1 when none fires, where
    every term of ``R`` is 0 anyway)."""
    top = float(np.max(variances))
    return 1e-9 * top if top > 0 else 1.0


def _column(D: np.ndarray, m: np.ndarray, v: np.ndarray, a: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``Λ[:, C]``: the kept unit of cluster ``C`` as a combination of its members' input vectors."""
    lam = np.zeros(D.shape[0])
    w = np.ones(1)  # u = Σ_C w_j ŵ_j; a single unit is its own direction
    if members.size > 1:
        root = np.sqrt(m[members])
        X = D[members] * root[:, None]
        y = np.linalg.eigh(X @ X.T)[1][:, -1]
        agree = float(np.sum(root * y))
        w = root * y * np.sign(agree) if agree != 0 else m[members] / np.sum(m[members])  # else the mean
    u = w @ D[members]
    norm = float(np.linalg.norm(u))
    if norm == 0:  # the members cancel: a zero kept unit
        return lam
    w, u = w / norm, u / norm
    coef = np.maximum(D[members] @ u, 0.0)  # the projection fold on a unit representative
    stretch = float(np.sum(v[members] * a[members] * coef) / np.sum(v[members]))
    lam[members] = (stretch if stretch > 0 else 1.0) * w / a[members]
    return lam
