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
``n k`` moves at ``O(n² + n k + k²)`` each, plus one ``k × k`` inverse per unit (the
bordered update of :func:`_bordered`). Every layer of the shipped ``resnet20`` fits."""


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
    nothing ends the search. Only the two clusters a move changes are recomputed, and every
    place ``j`` can go (its own cluster too) is scored from the state without ``j`` by one
    bordered update of ``C_kk``'s inverse (:func:`_bordered`), so that staying and moving are
    compared at the same round-off.

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
    kept = _KeptUnits(D, m, v, a)
    clusters = [np.flatnonzero(labels == c) for c in range(k)]
    state = _State(model, kept(clusters))
    R0 = state.R
    tol = 1e-12 * abs(model.total)
    moves, done = 0, 0
    for _ in range(passes):
        done += 1
        moved = 0
        for j in range(labels.size):
            c = int(labels[j])
            if clusters[c].size == 1:
                continue  # never empty a cluster
            rest = clusters[c][clusters[c] != j]
            # j's cluster without it, then j in every cluster (its own too: staying is a trial)
            cols = kept([rest] + [clusters[t] if t == c else np.append(clusters[t], j) for t in range(k)])
            base = state.replaced([c], cols[:, :1])  # j out of its cluster: shared by every move
            R = base.trials(list(range(k)), cols[:, 1:])
            stay, R[c] = R[c], np.inf
            best = int(np.argmin(R))
            if R[best] < stay - tol:
                labels[j] = best
                clusters[c], clusters[best] = rest, np.sort(np.append(clusters[best], j))
                state = base.replaced([best], cols[:, 1 + best : 2 + best])
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
        ``i`` at once: the new kept unit's closed-form terms (as in :meth:`replaced`, batched
        over the moves), then ``R`` by the bordered inverse of ``C_kk`` (:func:`_bordered`)
        instead of one solve per move."""
        md, n = self.model, int(self.model.mean.shape[0])
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
        return md.total - _bordered(self.C_kk, self.C_ak, self.GC, md.G, t, both[:n], both[n:])

    def _sd(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(self.cov_k), 0.0))


def _safe(sd: np.ndarray) -> np.ndarray:
    return np.where(sd > 0, sd, 1.0)


def _jitter(variances: np.ndarray) -> float:
    """The solve's regulariser: 1e-9 of the largest kept variance (1 when none fires, where
    every term of ``R`` is 0 anyway)."""
    top = float(np.max(variances))
    return 1e-9 * top if top > 0 else 1.0


def _bordered(
    C_kk: np.ndarray,
    C_ak: np.ndarray,
    GC: np.ndarray,
    G: np.ndarray,
    t: np.ndarray,
    C_new: np.ndarray,
    K_new: np.ndarray,
) -> np.ndarray:
    """``Q_i = tr(C_akᵀ G C_ak (C_kk + J_i I)⁻¹)`` with kept unit ``t[i]`` replaced: its
    column of ``C_ak`` by ``C_new[:, i]`` and its row and column of ``C_kk`` by ``K_new[:, i]``.

    The kept units but ``t`` are the same in every move, so ``Q`` is bordered: with ``K =
    C_kk + J I``, ``A = K₋ₜ₋ₜ``, ``b`` the new unit's covariances with the others, ``d`` its
    variance plus ``J``, ``M = C_akᵀ G C_ak``, ``q`` its row against the new column
    ``G c`` and ``r = cᵀ G c``, the block inverse gives, for ``h = A⁻¹ b`` and the Schur
    complement ``s = d − bᵀ h``,

        Q = tr(M₋ₜ₋ₜ A⁻¹) + (hᵀ M h − 2 qᵀ h + r) / s,

    and ``A⁻¹`` is ``K⁻¹ − K⁻¹eₜ eₜᵀK⁻¹ / (K⁻¹)ₜₜ`` (its row and column ``t`` zero). One
    inverse per distinct regulariser ``J_i`` (:func:`_jitter` of the move's variances,
    usually one value for every move), then ``O(k² + n k)`` per move, where a solve per move
    cost ``O(k³ + n k²)``: the same ``R`` as the solve, to round-off.
    """
    k, T = int(C_kk.shape[0]), int(t.size)
    at = np.arange(T)
    diag = np.repeat(np.diag(C_kk)[:, None], T, 1)
    diag[t, at] = K_new[t, at]
    jitter = np.array([_jitter(d) for d in diag.T])
    M = C_ak.T @ GC
    M = 0.5 * (M + M.T)
    GC_new = G @ C_new  # (n, T)
    q, r = C_ak.T @ GC_new, np.einsum("nt,nt->t", C_new, GC_new)
    b = K_new.copy()
    b[t, at] = 0.0
    Q = np.empty(T)
    for J in np.unique(jitter):
        i = np.flatnonzero(jitter == J)
        Kinv = np.linalg.inv(C_kk + J * np.eye(k))
        U, kappa = Kinv[:, t[i]], Kinv[t[i], t[i]]
        h = Kinv @ b[:, i] - U * (np.einsum("kt,kt->t", U, b[:, i]) / kappa)[None, :]
        h[t[i], np.arange(i.size)] = 0.0
        trace = float(np.sum(M * Kinv)) - np.einsum("kt,kl,lt->t", U, M, U) / kappa
        s = K_new[t[i], i] + J - np.einsum("kt,kt->t", b[:, i], h)
        Q[i] = trace + (np.einsum("kt,kl,lt->t", h, M, h) - 2.0 * np.einsum("kt,kt->t", q[:, i], h) + r[i]) / s
    return Q


class _KeptUnits:
    """``Λ[:, C]`` for clusters ``C``: each cluster's kept unit as a combination of its
    members' input vectors, from the directions' Gram ``ŵ_i · ŵ_j`` (formed once), so that
    a cluster of ``s`` members costs ``O(s²)`` and many clusters are one batched call."""

    def __init__(self, D: np.ndarray, m: np.ndarray, v: np.ndarray, a: np.ndarray):
        self.D, self.G, self.m, self.v, self.a, self.n = D, D @ D.T, m, v, a, int(D.shape[0])

    def __call__(self, clusters: list[np.ndarray]) -> np.ndarray:
        """One column per cluster (``(n, len(clusters))``), the principal representative
        with the projection fold (see :func:`search`); a cluster whose members cancel gives
        a zero column. Clusters are padded to the largest: a padded member has weight 0,
        so its rows and columns of the Gram below are 0 and no eigenvector uses it."""
        size = np.array([c.size for c in clusters])
        T, width = size.size, int(size.max())
        inside = np.arange(width)[None, :] < size[:, None]
        idx = np.zeros((T, width), dtype=np.int64)
        idx[inside] = np.concatenate(clusters)
        root = np.where(inside, np.sqrt(self.m[idx]), 0.0)
        cosines = self.G[idx[:, :, None], idx[:, None, :]]
        y = np.linalg.eigh(cosines * root[:, :, None] * root[:, None, :])[1][..., -1]  # Σ_C m_j ŵ_j ŵ_jᵀ's top
        agree = np.sum(root * y, axis=1)
        mass = np.where(inside, self.m[idx], 0.0)
        total = np.sum(mass, axis=1, keepdims=True)
        mean = np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)  # if the top direction misses them all
        w = np.where((agree != 0)[:, None], root * y * np.sign(agree)[:, None], mean)
        w[size == 1] = inside[size == 1]  # a single unit is its own direction
        Gw = np.einsum("tab,tb->ta", cosines, w)  # ŵ_j · u for u = Σ_C w_j ŵ_j
        norm = np.sqrt(np.maximum(np.sum(w * Gw, axis=1), 0.0))  # ‖u‖
        # ‖u‖² from the Gram is off by ~ε (Σ|w_j|)²: where ‖u‖ is that small, u itself decides
        # (from the directions, as TropNNC's merge does), and exactly 0 means the members cancel
        for t in np.flatnonzero(norm <= 1e-6 * np.sum(np.abs(w), axis=1)):
            members = idx[t, : size[t]]
            u = w[t, : size[t]] @ self.D[members]
            norm[t] = float(np.linalg.norm(u))
            Gw[t, : size[t]] = self.D[members] @ u
        live = norm > 0  # else the members cancel: a zero kept unit
        safe = np.where(live, norm, 1.0)
        coef = np.where(inside, np.maximum(Gw / safe[:, None], 0.0), 0.0)  # the projection fold
        vs, avs = np.where(inside, self.v[idx], 0.0), np.where(inside, self.a[idx], 1.0)
        stretch = np.sum(vs * avs * coef, axis=1) / np.sum(vs, axis=1)
        stretch = np.where(stretch > 0, stretch, 1.0)
        lam = np.zeros((self.n, T))
        cols = np.broadcast_to(np.arange(T)[:, None], idx.shape)
        values = np.where(live[:, None], stretch[:, None] * w / safe[:, None] / avs, 0.0)
        lam[idx[inside], cols[inside]] = values[inside]
        return lam
