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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import Array, asarray_like, to_numpy
from ..statistics import merged_moments, moment_match
from .base import LayerProblem

__all__ = ["CORRECTIONS", "check_correct", "correct_merge"]

CORRECTIONS = ("none", "mean", "variance", "full")


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
