"""Pieces shared by the clustering methods: sign groups, budget split, one-hot sums, assembly.

Kept apart so that ``tropnnc.py`` and ``predecessor.py`` read as the mathematics they
implement, not as bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import Array, asarray_like, device, to_numpy
from .._blocks import row_blocks, take_rows
from ..cluster import kmeans, ward
from .base import LayerProblem

__all__ = [
    "GroupMerge",
    "unit_groups",
    "distinct_rows",
    "allocate",
    "cluster_labels",
    "cluster_labels_ward",
    "canonical_labels",
    "assemble",
    "unit_residuals",
]


@dataclass(frozen=True)
class GroupMerge:
    """A group's share of the merge: local labels (host), kept inputs and per-unit scales.

    ``labels`` is None for a group that gets no kept unit (all its units dropped).
    """

    labels: np.ndarray | None
    inputs: Array | None
    scale: Array | None


def unit_groups(problem: LayerProblem) -> list[np.ndarray]:
    """Host index arrays of the groups clustered separately.

    Single output: the units read with a positive weight, then those with a negative one
    (the zonotopes ``P`` and ``Q``). Several outputs: one group of all units.
    """
    if not problem.single_output:
        return [np.arange(problem.n)]
    c = to_numpy(problem.outgoing[0, :, 0])
    return [np.flatnonzero(c > 0), np.flatnonzero(c < 0)]


def distinct_rows(X: Array, decimals: int | None = None) -> int:
    """Number of distinct rows of ``X`` (on the host), compared exactly or rounded.

    Used for single-output layers only, to never give a sign group more clusters than it
    has distinct points: the surplus goes to the other group, where it still helps.
    Positively parallel units normalised to one direction differ in their last bits, so
    unit directions are compared at ``decimals=9``; generators are compared exactly.
    """
    host = to_numpy(X)
    if decimals is not None:
        host = np.round(host, decimals)
    return int(np.unique(host, axis=0).shape[0])


def allocate(k: int, sizes: list[int], masses: list[float]) -> list[int]:
    """Split ``k`` kept units among groups, proportionally to their masses (D'Hondt).

    Every non-empty group gets at least one unit while ``k`` allows; when ``k`` is smaller
    than the number of non-empty groups, the heaviest groups get one each and the others
    none. A group never gets more units than it has. This rule is a tropref choice
    (``docs/theory.md``, "Budget split between P and Q").
    """
    order = sorted((g for g in range(len(sizes)) if sizes[g] > 0), key=lambda g: -masses[g])
    alloc = [0] * len(sizes)
    for g in order[:k]:
        alloc[g] = 1
    for _ in range(k - sum(alloc)):
        open_groups = [g for g in order if alloc[g] < sizes[g]]
        if not open_groups:
            break
        g = max(open_groups, key=lambda g: masses[g] / (alloc[g] + 1))
        alloc[g] += 1
    return alloc


def cluster_labels(
    X: Array, k: int, weights: Array | None, rng: np.random.Generator, **kmeans_options: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """Host labels of a K-means partition of the rows of ``X`` into ``k`` clusters.

    ``k = n`` needs no clustering: each unit is its own cluster, which makes keeping all
    units exact by construction. The seed of the run is drawn from ``rng``.
    """
    n = int(X.shape[0])
    if k == n:
        return np.arange(n), {"n_iter": 0, "objective": 0.0}
    res = kmeans(X, k, weights=weights, seed=int(rng.integers(2**31 - 1)), **kmeans_options)
    return canonical_labels(to_numpy(res.labels).astype(np.int64), k), {
        "n_iter": res.n_iter,
        "objective": float(res.objective),
        "seed": res.seed,
    }


def cluster_labels_ward(X: Array, k: int, weights: Array | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Host labels of the weighted Ward partition of the rows of ``X`` into ``k`` clusters.

    Deterministic: no seed is drawn. ``ward`` already numbers clusters by smallest member.
    """
    labels = ward(X, k, weights=weights)
    return labels, {"n_iter": 0}


def canonical_labels(labels: np.ndarray, k: int) -> np.ndarray:
    """Clusters renumbered in the order of their smallest member.

    The partition is what a method decides; the numbering K-means happens to produce can
    differ between backends whose arithmetic differs in the last bit. Numbering by the
    smallest member makes the kept units' order a function of the partition alone.
    """
    first = np.full(k, labels.size, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(labels.size))
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(k)
    return rank[labels]


def assemble(
    xp: Any, groups: list[np.ndarray], parts: list[GroupMerge], n: int, like: Array
) -> tuple[Array, Array, Array]:
    """Assignment ``(n,)``, per-unit fold scale ``(n,)`` and kept inputs ``(k, p)`` from the
    groups' parts (``Merge(assignment, None, inputs, scale=scale)``: no ``n × k`` fold).

    Kept units are numbered group after group; the units' rows go back to their original
    order through one gather.
    """
    labels = np.full(n, -1, dtype=np.int64)
    scales, inputs, start = [], [], 0
    for idx, part in zip(groups, parts, strict=False):
        if part.labels is None:
            scales.append(xp.zeros((idx.size,), dtype=like.dtype, device=device(like)))
            continue
        labels[idx] = part.labels + start
        start += int(part.inputs.shape[0])
        scales.append(part.scale)
        inputs.append(part.inputs)
    order = np.concatenate(groups)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    scale = take_rows(xp, xp.concat(scales), inverse)
    kept = inputs[0] if len(inputs) == 1 else xp.concat(inputs, axis=0)  # one group: no copy
    return xp.asarray(labels, dtype=xp.int64, device=device(like)), scale, kept


def unit_residuals(xp: Any, A: Array, scale: Array, labels: np.ndarray, inputs: Array, exact: np.ndarray) -> Array:
    """``r_j = ‖w_j − f_j w̃_{c(j)}‖``, the per-unit error of Proposition F (``labels`` the
    assignment on the host, ``exact`` the units removed exactly, boolean ``(n,)``).

    ``|relu(w_j · u) − f_j relu(w̃ · u)| <= r_j ‖u‖`` for ``f_j >= 0``. Units removed
    exactly (dead, constant) have ``r_j = 0``; dropped units (``f_j = 0``) have ``‖w_j‖``.
    Units kept unchanged (``w̃_{c(j)}`` is ``w_j`` itself, ``f_j = 1``, as in pruning) give
    exactly 0 either way.
    """
    index = np.where(labels < 0, 0, labels)
    parts, lo = [], 0
    for block in row_blocks(A):  # in cache-sized blocks: the gathered targets and differences stay small
        hi = lo + int(block.shape[0])
        target = take_rows(xp, inputs, index[lo:hi])
        parts.append(xp.linalg.vector_norm(block - scale[lo:hi, None] * target, axis=1))
        lo = hi
    r = parts[0] if len(parts) == 1 else xp.concat(parts)
    return xp.where(asarray_like(exact, xp, A, dtype=xp.bool), xp.zeros_like(r), r)
