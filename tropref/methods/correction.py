"""The statistics correction of a merge: data-free, from the units' pre-activation moments.

Merging units changes the distribution of what the next layer reads: a merged unit's
pre-activation has a smaller spread than its members' (they are not perfectly correlated,
and a projection drops what is orthogonal to the representative), and its mean moves. Both
compound through depth. Given each unit's pre-activation mean and spread
(``LayerProblem.moments``, from a BatchNorm), the correction

1. estimates each merged unit's mean ``μ̃_c`` and spread ``σ̃_c``
   (:func:`tropref.statistics.merged_moments`);
2. ``"variance"``: rescales and shifts the merged unit, ``w̃_c ↦ g_c w̃_c + h_c e``, so that
   every member ``j``, read as ``f_j relu(z̃_c)``, sees as nearly as possible its own mean and
   spread (:func:`tropref.statistics.moment_match`; ``g_c > 0``, so the fold stays valid);
3. ``"mean"``: hands the kept units' moments to ``compress_layer``, which moves the next
   layer's bias by the change of the mean of what it reads.

``"full"`` does both. The certificate is computed afterwards on the corrected units and
bias (``docs/theory.md``, section 5), so it bounds the function returned.

The refit (TropNNC's ``refit="gaussian"``, :func:`gaussian_refit`) goes one step further,
a data-free ThiNet: under the same Gaussian model, now joint over all the units and the
merged units, it replaces the single fold by the least-squares fold
``F = Cov(a, ã) Cov(ã)⁻¹`` of the original activations on the kept ones (``docs/refit.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import Array, asarray_like, to_numpy
from .._blocks import outgoing_gram
from ..statistics import (
    kept_relu_covariances,
    merged_covariance,
    merged_moments,
    moment_match,
    relu_covariance,
    weight_correlation,
)
from .base import LayerProblem

__all__ = ["CORRECTIONS", "REFITS", "check_correct", "correct_merge", "gaussian_refit", "refit_correlation_matrix"]

CORRECTIONS = ("none", "mean", "variance", "full")
REFITS = ("none", "gaussian")
_CORRELATIONS = ("cosine", "centred", "auto")


def check_correct(correct: Any) -> str:
    """``correct`` validated: one of :data:`CORRECTIONS`.

    Raises
    ------
    ValueError
        For any other value, naming ``correct`` and the choices.

    Examples
    --------
    >>> check_correct("full")
    'full'
    """
    if correct not in CORRECTIONS:
        raise ValueError(f"unknown `correct` {correct!r}; choose one of {CORRECTIONS}")
    return correct


def correct_merge(
    problem: LayerProblem, assignment: Array, scale: Array, inputs: Array, weight: Array, correct: str
) -> tuple[Array, tuple[np.ndarray, np.ndarray] | None, dict[str, Any]]:
    """The kept units' inputs after the correction ``correct``, their moments for the next
    layer's bias (None unless ``correct`` is ``"mean"`` or ``"full"``), and a summary.

    ``weight`` ``(n,)`` is how much the next layer reads each unit (``ω_j``). Without
    ``problem.moments``, or with ``correct="none"``, the inputs come back unchanged.

    Examples
    --------
    Two unit-norm units 60° apart, merged onto their bisector and read through their
    projections (``f = cos 30°``): the variance correction scales the merged unit by
    ``1 / cos 30°``, so that each member sees its own spread again.

    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> A = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(0.75), 0.0]])
    >>> problem = LayerProblem(xp, A, np.ones((1, 2, 1)), moments=(np.zeros(2), np.ones(2)))
    >>> u = np.array([[np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0]])
    >>> f = np.full(2, np.cos(np.pi / 6))
    >>> kept, moments, info = correct_merge(problem, np.array([0, 0]), f, u, np.ones(2), "variance")
    >>> round(float(np.linalg.norm(kept[0]) * np.cos(np.pi / 6)), 6), moments is None
    (1.0, True)
    """
    if correct == "none" or problem.moments is None:
        return inputs, None, {}
    xp = problem.xp
    mean, std = problem.moments
    labels = to_numpy(assignment).astype(np.int64)
    A_host, kept = to_numpy(problem.inputs), to_numpy(inputs).astype(np.float64)
    mu, sigma = merged_moments(A_host, labels, kept, mean, std)
    info: dict[str, Any] = {"correct": correct}
    if correct in ("variance", "full"):
        gain, shift = moment_match(labels, to_numpy(scale), to_numpy(weight), mean, std, mu, sigma)
        kept = kept * gain[:, None]
        kept[:, -1] += shift
        mu, sigma = gain * mu + shift, gain * sigma
        inputs = asarray_like(kept, xp, inputs)
        info["gain"] = {"min": float(gain.min()), "median": float(np.median(gain)), "max": float(gain.max())}
    return inputs, ((mu, sigma) if correct in ("mean", "full") else None), info


def refit_correlation_matrix(problem: LayerProblem, correlation: str) -> tuple[np.ndarray, str]:
    """The correlation ``ρ`` the Gaussian refit (and its partition search) models the units with.

    Parameters
    ----------
    problem : LayerProblem
    correlation : {"auto", "cosine", "centred"}
        ``"auto"``: ``problem.correlation`` where the caller has one (``"propagated"``), else
        the weights' cosines; ``"cosine"`` / ``"centred"``: the (centred) cosines of the
        units' input vectors (``problem.inputs``, read on the host only then).

    Returns
    -------
    rho : numpy.ndarray of float64, shape (n, n)
    name : str
        ``"propagated"``, ``"cosine"`` or ``"centred"``: which one it is.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> A = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    >>> problem = LayerProblem(xp, A, np.ones((1, 2, 1)), moments=(np.zeros(2), np.ones(2)))
    >>> rho, name = refit_correlation_matrix(problem, "auto")
    >>> name, rho.round(4).tolist()
    ('cosine', [[1.0, 0.7071], [0.7071, 1.0]])
    """
    if correlation == "auto":
        correlation = "cosine" if problem.correlation is None else "propagated"
    if correlation == "propagated":
        return np.asarray(problem.correlation, dtype=np.float64), correlation
    return weight_correlation(to_numpy(problem.inputs), centre=correlation == "centred"), correlation


def gaussian_refit(
    problem: LayerProblem,
    assignment: Array,
    scale: Array,
    inputs: Array,
    *,
    ridge: float = 0.1,
    correlation: str = "auto",
    variance: bool = False,
) -> tuple[Array, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """The least-squares fold of the units on the kept units under a Gaussian model: a
    data-free ThiNet refit of the next layer.

    The units' pre-activations are modelled as jointly Gaussian, ``z ~ N(μ, Σ)`` with the
    moments of ``problem.moments`` and ``Σ_jk = σ_j σ_k ρ_jk``, ``ρ`` from the weights
    (:func:`tropref.statistics.weight_correlation`); the kept units' ``z̃_c = w̃_c · (x, 1)``
    are linear in them (:func:`tropref.statistics.merged_covariance`). With ``a = relu(z)``
    and ``ã = relu(z̃)`` the fold

        F = (Cov(a, ã) + r F₀ D) (Cov(ã) + r D)⁻¹,     D = diag(Cov(ã)),

    minimises ``E‖V (a − E a) − V F (ã − E ã)‖² + r ‖V (F − F₀) D^{1/2}‖²`` for every read-out
    ``V`` at once: the least-squares refit of the next layer, shrunk by the ridge ``r``
    towards the single fold ``F₀`` (``scale`` at ``assignment``). The second moments are
    the closed forms of :func:`tropref.statistics.relu_product_mean`. The kept units' moments
    come back for the next layer's bias, which then absorbs ``V E[a] − V F E[ã]``.

    Parameters
    ----------
    problem : LayerProblem
        Must carry ``moments``.
    assignment, scale : arrays, shape (n,)
        The single fold ``F₀``.
    inputs : array, shape (k, p)
        The kept units' input vectors (after any correction).
    ridge : float
        ``r >= 0``.
    correlation : {"cosine", "centred", "auto"}
        ``ρ``: the cosines of the weights, or of the weights centred over the fan-in;
        ``"auto"``: ``problem.correlation`` where the caller has one (a model propagated
        through the network, :func:`tropref.network.moments.propagated_correlations`),
        else the cosines (the default). ``info["refit_correlation"]`` says which was used.
    variance : bool
        Rescale ``F`` by one scalar so that the total variance the next layer reads under
        the model, ``tr(G Cov(a))`` with ``G = V_flat V_flatᵀ``, is the original's (least
        squares shrinks it; ``docs/refit.md``).

    Returns
    -------
    fold : array, shape (n, k)
        ``F``, in the namespace of ``inputs``.
    kept_moments : pair of numpy.ndarray, shape (k,)
        ``(μ̃, σ̃)`` of the kept units under the model.
    info : dict

    Raises
    ------
    ValueError
        When ``problem.moments`` is None, ``ridge`` is not a number >= 0,
        ``correlation`` is unknown or ``variance`` is not a bool.

    Examples
    --------
    Two identical units merged into one, read through ``f = 1/2`` each: the refit reads both
    through the kept unit with the same weights.

    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.methods.base import LayerProblem
    >>> A = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> problem = LayerProblem(xp, A, np.ones((1, 3, 1)), moments=(np.zeros(3), np.ones(3)))
    >>> F, _, _ = gaussian_refit(problem, np.array([0, 0, 1]), np.array([0.5, 0.5, 1.0]), 2 * A[[0, 2]], ridge=0.0)
    >>> F.round(6).tolist()
    [[0.5, 0.0], [0.5, 0.0], [0.0, 0.5]]
    """
    if problem.moments is None:
        raise ValueError("`refit='gaussian'` needs the units' pre-activation statistics (`moments`)")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"`refit_ridge` must be a number >= 0, got {ridge!r}")
    if not isinstance(variance, (bool, np.bool_)):
        raise ValueError(f"`refit_variance` must be True or False, got {variance!r}")
    if correlation not in _CORRELATIONS:
        raise ValueError(f"unknown `refit_correlation` {correlation!r}; choose one of {_CORRELATIONS}")
    mean, std = problem.moments
    labels = to_numpy(assignment).astype(np.int64)
    # the units' rows stay in their dtype: each consumer converts the rows it reads to float64
    A_host, kept = to_numpy(problem.inputs), to_numpy(inputs).astype(np.float64)
    n, k = int(A_host.shape[0]), int(kept.shape[0])
    rho, correlation = refit_correlation_matrix(problem, correlation)
    mu_k, cross, cov_k = merged_covariance(A_host, labels, kept, mean, std, rho)
    sd_k, C_ak, C_kk = kept_relu_covariances(mean, std, mu_k, cross, cov_k)
    F0 = np.zeros((n, k))
    members = labels >= 0
    F0[np.flatnonzero(members), labels[members]] = to_numpy(scale).astype(np.float64)[members]
    d = np.diag(C_kk).copy()
    # a kept unit that never fires under the model (zero variance) keeps its single fold
    d = np.where(d > 0, d, max(float(np.max(d)), 1.0) * 1e-12)
    lhs = C_kk + ridge * np.diag(d) + 1e-10 * float(np.max(d)) * np.eye(k)
    F = np.linalg.solve(lhs, (C_ak + ridge * F0 * d[None, :]).T).T
    info_extra = {}
    if variance:
        # least squares shrinks what the next layer reads (Var(F ã) <= Var(a)); rescale the
        # fold so that the total variance read, Σ_{i,s} Var((V a)_is), is the original's
        G = outgoing_gram(to_numpy(problem.outgoing))
        C_aa = relu_covariance(mean, std, rho)
        before, after = float(np.sum(G * C_aa)), float(np.sum(G * (F @ C_kk @ F.T)))
        gamma = math.sqrt(before / after) if after > 0 and before > 0 else 1.0
        F = gamma * F
        info_extra["refit_gain"] = gamma
    change = float(np.linalg.norm(F - F0) / max(np.linalg.norm(F0), 1e-300))
    info = {
        "refit": "gaussian",
        "refit_ridge": float(ridge),
        "refit_correlation": correlation,
        "refit_change": change,
        **info_extra,
    }
    return asarray_like(F, problem.xp, inputs), (mu_k, sd_k), info
