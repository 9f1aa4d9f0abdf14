"""Data-free statistics of a layer's units: Gaussian ReLU moments and merged units' moments.

A BatchNorm before a ReLU stores what its layer's pre-activations look like on the data it
was trained on: after its affine, unit ``j``'s pre-activation ``z_j`` has mean ``β_j`` and
standard deviation ``|γ_j| √(v_j / (v_j + ε))`` (``v_j`` the running variance). These
functions turn such statistics into the quantities the statistics correction of
``docs/theory.md`` (section 5) needs, with no data:

- :func:`relu_mean`: ``E[relu(z)]`` for ``z ~ N(μ, σ²)``, in closed form;
- :func:`merged_moments`: the mean and standard deviation of a merged unit's
  pre-activation ``z̃_c = w̃_c · (x, 1)``, from the members' statistics and the correlation
  ``ρ_jk = cos(w_j, w_k)`` of their weights (what the statistics imply for isotropic inputs);
- :func:`moment_match`: the gain and shift of each merged unit that best match the
  members' means and spreads through their fold scales.

All work on the host in float64 on per-unit vectors and per-cluster blocks; the caller
moves the few resulting ``(k,)`` vectors back to its array namespace.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from ._array import size_blocks

__all__ = ["relu_mean", "merged_moments", "moment_match"]

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
