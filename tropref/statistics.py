"""Data-free statistics of a layer's units: Gaussian ReLU moments and merged units' moments.

A BatchNorm before a ReLU stores what its layer's pre-activations look like on the data it
was trained on: after its affine, unit ``j``'s pre-activation ``z_j`` has mean ``β_j`` and
standard deviation ``|γ_j| √(v_j / (v_j + ε))`` (``v_j`` the running variance). These
functions turn such statistics into the quantities the statistics correction of
``docs/theory.md`` (section 5) needs, with no data:

- :func:`relu_mean`: ``E[relu(z)]`` for ``z ~ N(μ, σ²)``, in closed form;
- :func:`relu_input_moments`: its inverse, the ``μ, σ`` a ReLU's output mean and variance
  imply (what a BatchNorm *after* the ReLU stores);
- :func:`merged_moments`: the mean and standard deviation of a merged unit's
  pre-activation ``z̃_c = w̃_c · (x, 1)``, from the members' statistics and the correlation
  ``ρ_jk = cos(w_j, w_k)`` of their weights (what the statistics imply for isotropic inputs);
- :func:`moment_match`: the gain and shift of each merged unit that best match the
  members' means and spreads through their fold scales;
- :func:`weight_correlation` and :func:`merged_covariance`: the joint Gaussian model of a
  layer's units and its merged units (correlations from the weights);
- :func:`relu_product_mean`: ``E[relu(z) relu(z')]`` for jointly Gaussian ``z, z'``, in
  closed form (the second moments of the data-free least-squares refit).

All work on the host in float64 on per-unit vectors and per-cluster blocks; the caller
moves the few resulting ``(k,)`` vectors back to its array namespace.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr, owens_t

from ._blocks import size_blocks

__all__ = [
    "relu_mean",
    "relu_input_moments",
    "merged_moments",
    "moment_match",
    "relu_product_mean",
    "relu_covariance",
    "kept_relu_covariances",
    "weight_correlation",
    "merged_covariance",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def relu_mean(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``E[relu(z)]`` for ``z ~ N(μ, σ²)``, elementwise: ``μ Φ(μ/σ) + σ φ(μ/σ)``.

    ``σ = 0`` gives ``relu(μ)``, the limit.

    Parameters
    ----------
    mean, std : numpy.ndarray
        ``μ`` and ``σ >= 0``, of one shape.

    Returns
    -------
    numpy.ndarray of float64

    References
    ----------
    .. [1] M. Nagel, M. van Baalen, T. Blankevoort, M. Welling, "Data-Free Quantization
           Through Weight Equalization and Bias Correction", ICCV 2019 (section 4.2).

    Examples
    --------
    >>> import numpy as np
    >>> relu_mean(np.array([0.0, 3.0, -1.0]), np.array([1.0, 0.0, 0.0])).round(4).tolist()
    [0.3989, 3.0, 0.0]
    """
    mu, sigma = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    safe = np.where(sigma > 0, sigma, 1.0)
    t = mu / safe
    value = mu * ndtr(t) + sigma * np.exp(-0.5 * t * t) / _SQRT_2PI
    return np.where(sigma > 0, value, np.maximum(mu, 0.0))


def relu_input_moments(mean: np.ndarray, var: np.ndarray, *, steps: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """The ``μ, σ`` of ``z ~ N(μ, σ²)`` whose ReLU has mean ``m`` and variance ``v``, elementwise.

    With ``t = μ/σ``, ``E[relu z] = σ A(t)`` and ``E[(relu z)²] = σ² B(t)``, where
    ``A(t) = φ(t) + t Φ(t)`` and ``B(t) = (1 + t²) Φ(t) + t φ(t)``. The ratio
    ``A(t)²/B(t)`` increases from 0 to 1 with ``t``, so ``m² / (m² + v) = A(t)²/B(t)`` has one
    root, found by bisection; then ``σ = m / A(t)`` and ``μ = t σ``. A unit that never fires
    (``m <= 0``) gives ``μ = σ = 0``; a constant one (``v <= 0 < m``) gives ``μ = m``, ``σ = 0``.

    Parameters
    ----------
    mean, var : numpy.ndarray
        ``m`` and ``v`` of the ReLU's output, of one shape (e.g. the running statistics of a
        BatchNorm that reads it).
    steps : int
        Bisection steps on ``t`` (80 halve the bracket to below 1e-20 of its width).

    Returns
    -------
    mean, std : numpy.ndarray of float64
        ``μ`` and ``σ >= 0``.

    Examples
    --------
    The moments of two ReLUs, from :func:`relu_mean` and :func:`relu_product_mean`, give
    back their inputs' ``μ`` and ``σ``:

    >>> import numpy as np
    >>> mu, sigma = np.array([1.0, -0.5]), np.array([2.0, 1.0])
    >>> m = relu_mean(mu, sigma)
    >>> v = relu_product_mean(mu, sigma, mu, sigma, np.ones(2)) - m * m
    >>> [a.round(9).tolist() for a in relu_input_moments(m, v)]
    [[1.0, -0.5], [2.0, 1.0]]
    """
    m, v = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    fires, spread = m > 0, (m > 0) & (v > 0)
    target = np.where(spread, m * m / np.where(spread, m * m + v, 1.0), 0.5)
    # the root lies in [−9, t₁]: the ratio is below 1e-17 at −9 and above the target at
    # t₁ = 2 m/√v + 9, since A(t)²/B(t) >= t²/(1 + t²) for t >= 0
    lo = np.full(m.shape, -9.0)
    hi = np.where(spread, 2.0 * m / np.sqrt(np.where(spread, v, 1.0)), 0.0) + 9.0
    for _ in range(steps):
        t = 0.5 * (lo + hi)
        phi, Phi = np.exp(-0.5 * t * t) / _SQRT_2PI, ndtr(t)
        A, B = phi + t * Phi, (1.0 + t * t) * Phi + t * phi
        below = A * A < target * B
        lo, hi = np.where(below, t, lo), np.where(below, hi, t)
    t = 0.5 * (lo + hi)
    A = np.exp(-0.5 * t * t) / _SQRT_2PI + t * ndtr(t)
    sigma = np.where(spread, m / np.where(spread, A, 1.0), 0.0)
    mu = np.where(spread, t * sigma, np.where(fires, m, 0.0))
    return mu, sigma


def merged_moments(
    A: np.ndarray, labels: np.ndarray, kept: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each merged unit's pre-activation.

    Unit ``j`` has input vector ``A[j] = (w_j, b_j)`` and pre-activation ``z_j = w_j · x + b_j``
    of mean ``μ_j`` and spread ``σ_j``; kept unit ``c`` has ``kept[c] = (ũ_c, b̃_c)`` and
    members ``C = {j : labels[j] = c}``. Writing ``ũ_c = Σ_{j∈C} λ_j w_j`` (least squares,
    minimum norm; exact when ``ũ_c`` lies in the members' span, as every representative of
    tropref's methods does), and taking the correlation of ``w_j · x`` and ``w_k · x`` to be
    ``ρ_jk = cos(w_j, w_k)`` (exact for isotropic inputs)::

        μ̃_c = b̃_c + Σ_j λ_j (μ_j − b_j),     σ̃_c² = Σ_jk λ_j λ_k σ_j σ_k ρ_jk.

    Parameters
    ----------
    A : numpy.ndarray, shape (n, p)
        The units' input vectors (weights, then bias).
    labels : numpy.ndarray of int, shape (n,)
        Kept unit of each unit, ``-1`` for none.
    kept : numpy.ndarray, shape (k, p)
        The kept units' input vectors.
    mean, std : numpy.ndarray, shape (n,)
        ``μ_j`` and ``σ_j``.

    Returns
    -------
    mean, std : numpy.ndarray of float64, shape (k,)
        ``μ̃_c`` and ``σ̃_c``; a kept unit without members has ``(b̃_c, 0)``.

    Examples
    --------
    Two units with correlation 1/2 and spread 1, averaged: the spread falls to ``√(3/4)``.

    >>> import numpy as np
    >>> A = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(0.75), 0.0]])
    >>> kept = A.mean(axis=0, keepdims=True)
    >>> mu, sigma = merged_moments(A, np.array([0, 0]), kept, np.zeros(2), np.ones(2))
    >>> round(float(sigma[0]) ** 2, 6)
    0.75
    """
    k = int(kept.shape[0])
    mu_out = kept[:, -1].astype(np.float64).copy()
    sd_out = np.zeros(k)
    for cl, block in size_blocks(labels, k, 8 * max(1, int(A.shape[1]))):
        Wc = A[block, :-1].astype(np.float64)  # (B, size, d)
        G = Wc @ np.swapaxes(Wc, 1, 2)
        rhs = Wc @ kept[cl, :-1].astype(np.float64)[:, :, None]
        lam = (_pinv_psd(G) @ rhs)[:, :, 0]  # (B, size)
        shift = mean[block] - A[block, -1].astype(np.float64)  # E[w_j · x]
        mu_out[cl] += np.sum(lam * shift, axis=1)
        norms = np.sqrt(np.maximum(np.einsum("bii->bi", G), 0.0))
        v = lam * std[block] / np.where(norms > 0, norms, 1.0)
        var = np.einsum("bi,bij,bj->b", v, G, v)
        sd_out[cl] = np.sqrt(np.maximum(var, 0.0))
    return mu_out, sd_out


def _pinv_psd(G: np.ndarray) -> np.ndarray:
    """Pseudo-inverses of a stack of symmetric positive semi-definite matrices."""
    values, vectors = np.linalg.eigh(G)
    cutoff = 1e-10 * np.max(np.abs(values), axis=-1, keepdims=True)
    inv = np.where(values > cutoff, 1.0 / np.where(values > cutoff, values, 1.0), 0.0)
    return (vectors * inv[..., None, :]) @ np.swapaxes(vectors, -1, -2)


def moment_match(
    labels: np.ndarray,
    scale: np.ndarray,
    weight: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    merged_mean: np.ndarray,
    merged_std: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Gain ``g_c > 0`` and shift ``h_c`` of each merged unit: ``z̃_c ↦ g_c z̃_c + h_c``.

    Member ``j`` is read as ``f_j relu(z̃_c)`` (``f_j = scale[j]``), so it sees the
    distribution of ``f_j z̃_c`` where it had that of ``z_j``. The corrected unit's mean
    ``μ'_c`` and spread ``σ'_c`` minimise ``Σ_{j∈C} ω_j (f_j μ' − μ_j)²`` and
    ``Σ_{j∈C} ω_j (f_j σ' − σ_j)²`` (``ω_j = weight[j]``, how much the next layer reads
    ``j``)::

        σ'_c = Σ ω_j f_j σ_j / Σ ω_j f_j²,   μ'_c = Σ ω_j f_j μ_j / Σ ω_j f_j²,
        g_c = σ'_c / σ̃_c,                    h_c = μ'_c − g_c μ̃_c.

    A unit whose members are all read with ``f_j = 0``, or whose merged spread is zero, keeps
    ``g_c = 1`` (and ``h_c = 0``, resp. the mean shift alone).

    Returns
    -------
    gain, shift : numpy.ndarray of float64, shape (k,)

    References
    ----------
    .. [1] K. Jordan, H. Sedghi, O. Saukh, R. Entezari, B. Neyshabur, "REPAIR:
           REnormalizing Permuted Activations for Interpolation Repair", ICLR 2023.

    Examples
    --------
    Two members read with ``f = 1`` whose merged spread fell from 1 to 0.8:

    >>> import numpy as np
    >>> g, h = moment_match(np.array([0, 0]), np.ones(2), np.ones(2), np.zeros(2), np.ones(2),
    ...                     np.zeros(1), np.array([0.8]))
    >>> g.tolist(), h.tolist()
    ([1.25], [0.0])
    """
    k = int(merged_mean.shape[0])
    members = labels >= 0
    lab, f, w = labels[members], scale[members].astype(np.float64), weight[members].astype(np.float64)
    denom = np.bincount(lab, weights=w * f * f, minlength=k)
    target_sd = np.bincount(lab, weights=w * f * std[members], minlength=k)
    target_mu = np.bincount(lab, weights=w * f * mean[members], minlength=k)
    read = denom > 0
    safe = np.where(read, denom, 1.0)
    sd, mu = target_sd / safe, target_mu / safe
    spread = read & (merged_std > 0) & (sd > 0)
    gain = np.where(spread, sd / np.where(merged_std > 0, merged_std, 1.0), 1.0)
    shift = np.where(read, mu - gain * merged_mean, 0.0)
    return gain, shift


def relu_product_mean(
    mean1: np.ndarray, std1: np.ndarray, mean2: np.ndarray, std2: np.ndarray, corr: np.ndarray
) -> np.ndarray:
    """``E[relu(z) relu(z')]`` for jointly Gaussian ``z ~ N(μ, σ²)``, ``z' ~ N(μ', σ'²)`` of
    correlation ``ρ``, elementwise (all arguments broadcast).

    With ``a = μ/σ``, ``b = μ'/σ'``, ``s = √(1 − ρ²)`` and standard ``(u, v)`` of correlation
    ``ρ``, ``relu(z) relu(z') = σσ' (a + u)(b + v)`` on the quadrant ``u > −a, v > −b``, whose
    moments are Rosenbaum's (1961)::

        L      = Φ₂(a, b; ρ)
        E[u;·] = φ(a) Φ((b − ρa)/s) + ρ φ(b) Φ((a − ρb)/s)        (and E[v;·] likewise)
        E[uv;·] = ρ L − ρ a φ(a) Φ((b − ρa)/s) − ρ b φ(b) Φ((a − ρb)/s) + s φ(a) φ((b − ρa)/s)

    and ``E = σσ' (ab L + a E[v;·] + b E[u;·] + E[uv;·])``. The bivariate normal CDF ``Φ₂``
    is Owen's formula with his ``T`` function (``scipy.special.owens_t``), vectorised.
    ``|ρ| = 1`` is the limit (``z'`` an affine function of ``z``); a zero spread makes that
    factor the constant ``relu(μ)``.

    Parameters
    ----------
    mean1, std1, mean2, std2 : numpy.ndarray
        ``μ, σ >= 0, μ', σ' >= 0``.
    corr : numpy.ndarray
        ``ρ`` in ``[−1, 1]`` (clipped there).

    Returns
    -------
    numpy.ndarray of float64

    References
    ----------
    .. [1] S. Rosenbaum, "Moments of a Truncated Bivariate Normal Distribution", Journal of
           the Royal Statistical Society B 23 (1961).
    .. [2] D. B. Owen, "Tables for Computing Bivariate Normal Probabilities", Annals of
           Mathematical Statistics 27 (1956).

    Examples
    --------
    ``E[relu(z)²] = 1/2`` for a standard ``z``; independent factors give the product of the
    means, ``(1/√(2π))²``:

    >>> import numpy as np
    >>> relu_product_mean(np.zeros(2), np.ones(2), np.zeros(2), np.ones(2), np.array([1.0, 0.0])).round(6).tolist()
    [0.5, 0.159155]
    """
    mu1, s1, mu2, s2, rho = (np.asarray(v, dtype=np.float64) for v in (mean1, std1, mean2, std2, corr))
    shape = np.broadcast_shapes(mu1.shape, s1.shape, mu2.shape, s2.shape, rho.shape)
    rho = np.clip(rho, -1.0, 1.0)
    # each factor's own terms at its own shape (in the walk and the refit, one per unit):
    # only ρ and what depends on it are evaluated per pair
    a = mu1 / np.where(s1 > 0, s1, 1.0)
    b = mu2 / np.where(s2 > 0, s2, 1.0)
    # |ρ| near 1: the quadrant formulas divide by s; nudge ρ inside, where they are accurate
    # to O(1 - |ρ|) (the self-products E[relu(z)²] are handled exactly below)
    r = np.clip(rho, -1.0 + 1e-9, 1.0 - 1e-9)
    s = np.sqrt(1.0 - r * r)
    pa, pb = np.exp(-0.5 * a * a) / _SQRT_2PI, np.exp(-0.5 * b * b) / _SQRT_2PI
    ta, tb = (b - r * a) / s, (a - r * b) / s
    L = _bivariate_cdf(a, b, r, s, 0.5 * (ndtr(a) + ndtr(b)))
    # ab L + a E[v;·] + b E[u;·] + E[uv;·], its terms collected
    value = (a * b + r) * L + b * pa * ndtr(ta) + a * pb * ndtr(tb) + s * pa * np.exp(-0.5 * ta * ta) / _SQRT_2PI
    value = s1 * s2 * value
    # ρ = ±1 exactly: z' = μ' ± (σ'/σ)(z − μ); ρ = 1 with a = b is E[relu(z)²] σ'/σ
    same = rho == 1.0
    if same.any() and (same := same & np.isclose(a, b, rtol=0.0, atol=1e-12)).any():
        value = np.where(same, s1 * s2 * ((a * a + 1.0) * ndtr(a) + a * pa), value)
    value = np.broadcast_to(np.maximum(value, 0.0), shape)
    if np.all(s1 > 0) and np.all(s2 > 0):  # the constants below are read nowhere (the usual case)
        return np.array(value)
    # a factor without spread is the constant relu(μ)
    const = np.where(s1 > 0, relu_mean(mu1, s1) * np.maximum(mu2, 0.0), 0.0)
    const = np.where(s2 > 0, np.maximum(mu1, 0.0) * relu_mean(mu2, s2), const)
    const = np.where((s1 > 0) | (s2 > 0), const, np.maximum(mu1, 0.0) * np.maximum(mu2, 0.0))
    return np.where((s1 > 0) & (s2 > 0), value, const)


def relu_covariance(mean: np.ndarray, std: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """``Cov(relu(z))`` for ``z ~ N(μ, diag(σ) ρ diag(σ))``: the closed form of
    :func:`relu_product_mean` on the upper triangle (``ρ`` read symmetrised), mirrored.

    Exactly symmetric, at half the cost of the full product.

    Parameters
    ----------
    mean, std : numpy.ndarray, shape (n,)
    corr : numpy.ndarray, shape (n, n)

    Returns
    -------
    numpy.ndarray of float64, shape (n, n)

    Examples
    --------
    Two standard units, uncorrelated and identical: ``Var(relu(z)) = 1/2 − 1/(2π)``.

    >>> import numpy as np
    >>> relu_covariance(np.zeros(2), np.ones(2), np.eye(2)).round(6).tolist()
    [[0.340845, 0.0], [0.0, 0.340845]]
    """
    Ea = relu_mean(mean, std)
    i, j = np.triu_indices(int(mean.shape[0]))
    rho = 0.5 * (corr[i, j] + corr[j, i])
    C = np.empty(corr.shape)
    C[i, j] = relu_product_mean(mean[i], std[i], mean[j], std[j], rho) - Ea[i] * Ea[j]
    C[j, i] = C[i, j]
    return C


def kept_relu_covariances(
    mean: np.ndarray, std: np.ndarray, kept_mean: np.ndarray, cross: np.ndarray, kept_cov: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ReLU covariances of units and kept units from their pre-activations' moments.

    For ``z ~ N(μ, Σ)`` and kept units ``z̃`` jointly Gaussian with it (``E z̃ = μ̃``,
    ``Cov(z, z̃)``, ``Cov(z̃)``, e.g. from :func:`merged_covariance`): ``σ̃``,
    ``C_ak = Cov(relu(z), relu(z̃))`` and ``C_kk = Cov(relu(z̃))`` in closed form
    (:func:`relu_product_mean`, :func:`relu_covariance`). A kept unit without spread reads
    correlation 0 with the others (its products are then the constants).

    Parameters
    ----------
    mean, std : numpy.ndarray, shape (n,)
        ``μ, σ`` of the units.
    kept_mean : numpy.ndarray, shape (k,)
    cross : numpy.ndarray, shape (n, k)
        ``Cov(z, z̃)``.
    kept_cov : numpy.ndarray, shape (k, k)
        ``Cov(z̃)``.

    Returns
    -------
    kept_std : numpy.ndarray, shape (k,)
    C_ak : numpy.ndarray, shape (n, k)
    C_kk : numpy.ndarray, shape (k, k)

    Examples
    --------
    One standard unit kept as itself: every covariance is ``Var(relu(z))``.

    >>> import numpy as np
    >>> sd, C_ak, C_kk = kept_relu_covariances(np.zeros(1), np.ones(1), np.zeros(1), np.ones((1, 1)), np.ones((1, 1)))
    >>> sd.tolist(), C_ak.round(6).tolist(), C_kk.round(6).tolist()
    ([1.0], [[0.340845]], [[0.340845]])
    """
    kept_std = np.sqrt(np.maximum(np.diag(kept_cov), 0.0))
    safe, safe_k = np.where(std > 0, std, 1.0), np.where(kept_std > 0, kept_std, 1.0)
    corr_x = cross / safe[:, None] / safe_k[None, :]
    corr_k = kept_cov / safe_k[:, None] / safe_k[None, :]
    np.fill_diagonal(corr_k, 1.0)
    Ea, Ek = relu_mean(mean, std), relu_mean(kept_mean, kept_std)
    C_ak = relu_product_mean(mean[:, None], std[:, None], kept_mean[None, :], kept_std[None, :], corr_x)
    return kept_std, C_ak - np.outer(Ea, Ek), relu_covariance(kept_mean, kept_std, corr_k)


def _bivariate_cdf(a: np.ndarray, b: np.ndarray, r: np.ndarray, s: np.ndarray, half: np.ndarray) -> np.ndarray:
    """``Φ₂(a, b; ρ) = P(u < a, v < b)`` for ``|ρ| < 1``, by Owen's formula::

        Φ₂ = (Φ(a) + Φ(b))/2 − T(a, (b − ρa)/(a s)) − T(b, (a − ρb)/(b s)) − β,

    ``β = 1/2`` when ``a b < 0`` (or one is 0 and ``a + b < 0``), else 0; ``half`` is the
    caller's ``(Φ(a) + Φ(b))/2`` (at the factors' own shapes), ``s = √(1 − ρ²)``."""
    tiny = 1e-300
    # T(0, ±∞) = ±1/4: a = 0 is taken as a tiny number of the sign that keeps the formula's limit
    a0, b0 = a, b  # (at their own shapes unless one is 0 somewhere)
    if np.any(a == 0):
        a0 = np.where(a == 0, np.where(b >= 0, tiny, -tiny), a)
    if np.any(b == 0):
        b0 = np.where(b == 0, np.where(a0 >= 0, tiny, -tiny), b)
    with np.errstate(over="ignore", divide="ignore"):
        ha = (b0 - r * a0) / (a0 * s)
        hb = (a0 - r * b0) / (b0 * s)
    ha, hb = np.nan_to_num(ha, posinf=1e300, neginf=-1e300), np.nan_to_num(hb, posinf=1e300, neginf=-1e300)
    # by the signs, not the product: a0 b0 of two tiny numbers underflows to ±0 and loses it
    beta = np.where(np.signbit(a0) != np.signbit(b0), 0.5, 0.0)
    # Φ(±tiny) = Φ(0) = 1/2 exactly: the caller's Φ(a), Φ(b) are those of a0, b0
    return half - owens_t(a0, ha) - owens_t(b0, hb) - beta


def weight_correlation(A: np.ndarray, *, centre: bool = False) -> np.ndarray:
    """The correlation model of the units' pre-activations: ``ρ_jk = cos(w_j, w_k)``.

    Exact for isotropic inputs (the model of :func:`merged_moments`). With ``centre=True``
    each weight vector is first centred (its mean over the fan-in subtracted): the
    correlation for inputs whose common mode, every coordinate moving together, carries no
    variance. Units with zero (centred) weights get correlation 0 with the others, 1 with
    themselves.

    Parameters
    ----------
    A : numpy.ndarray, shape (n, p)
        The units' input vectors (weights, then bias; the bias is ignored).

    Returns
    -------
    numpy.ndarray of float64, shape (n, n)
        Symmetric positive semi-definite, unit diagonal.

    Examples
    --------
    >>> import numpy as np
    >>> weight_correlation(np.array([[1.0, 0.0, 5.0], [1.0, 1.0, -2.0]])).round(4).tolist()
    [[1.0, 0.7071], [0.7071, 1.0]]
    """
    W = np.asarray(A, dtype=np.float64)[:, :-1]
    if centre:
        W = W - W.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(W, axis=1)
    U = W / np.where(norms > 0, norms, 1.0)[:, None]
    rho = np.clip(U @ U.T, -1.0, 1.0)
    np.fill_diagonal(rho, 1.0)
    return rho


def merged_covariance(
    A: np.ndarray, labels: np.ndarray, kept: np.ndarray, mean: np.ndarray, std: np.ndarray, corr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The joint Gaussian model of the units' and the merged units' pre-activations.

    The units' pre-activations ``z`` have means ``μ``, spreads ``σ`` and correlations
    ``corr``: ``Σ = diag(σ) ρ diag(σ)``. Kept unit ``c`` is written, as in
    :func:`merged_moments`, as ``ũ_c = Σ_{j∈C} λ_j w_j`` (least squares over its members'
    weights), so ``z̃_c − b̃_c = Σ_j λ_j (z_j − b_j)``: with ``Λ`` the ``(n, k)`` matrix of
    these coefficients, ``Cov(z, z̃) = Σ Λ`` and ``Cov(z̃) = Λᵀ Σ Λ``. With ``corr`` the
    cosines of the weights the merged spreads are those of :func:`merged_moments`.

    Parameters
    ----------
    A, labels, kept, mean, std
        As in :func:`merged_moments`.
    corr : numpy.ndarray, shape (n, n)
        ``ρ``, e.g. :func:`weight_correlation`.

    Returns
    -------
    merged_mean : numpy.ndarray, shape (k,)
        ``μ̃``.
    cross : numpy.ndarray, shape (n, k)
        ``Cov(z_j, z̃_c)``.
    merged_cov : numpy.ndarray, shape (k, k)
        ``Cov(z̃_c, z̃_d)``.

    Examples
    --------
    Two units of spread 1 and correlation 1/2, averaged:

    >>> import numpy as np
    >>> A = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(0.75), 0.0]])
    >>> mu, cross, cov = merged_covariance(A, np.array([0, 0]), A.mean(axis=0, keepdims=True),
    ...                                    np.zeros(2), np.ones(2), weight_correlation(A))
    >>> cross.round(4).tolist(), round(float(cov[0, 0]), 6)
    ([[0.75], [0.75]], 0.75)
    """
    n, k = int(A.shape[0]), int(kept.shape[0])
    lam = np.zeros((n, k))
    for cl, block in size_blocks(labels, k, 8 * max(1, int(A.shape[1]))):
        Wc = A[block, :-1].astype(np.float64)  # (B, size, d)
        G = Wc @ np.swapaxes(Wc, 1, 2)
        rhs = Wc @ kept[cl, :-1].astype(np.float64)[:, :, None]
        lam[block, np.broadcast_to(cl[:, None], block.shape)] = (_pinv_psd(G) @ rhs)[:, :, 0]
    sd = np.asarray(std, dtype=np.float64)
    cov = sd[:, None] * np.asarray(corr, dtype=np.float64) * sd[None, :]
    shift = np.asarray(mean, dtype=np.float64) - A[:, -1].astype(np.float64)
    cross = cov @ lam
    return kept[:, -1].astype(np.float64) + lam.T @ shift, cross, lam.T @ cross
