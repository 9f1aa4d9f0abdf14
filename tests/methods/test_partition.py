"""Shared bookkeeping of the clustering methods (tropref.methods.partition): sign groups,
budget split, cluster labels and the merge assembled from the groups."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np

from tests.methods.problems import layer
from tropref.methods.base import LayerProblem
from tropref.methods.partition import (
    GroupMerge,
    allocate,
    assemble,
    canonical_labels,
    cluster_labels,
    cluster_labels_ward,
    distinct_rows,
    unit_groups,
)


def test_unit_groups_split_a_single_output_by_sign():
    A, V = layer(np.random.default_rng(0), n=6, m=1)
    V[0, :, 0] = [1.0, -2.0, 3.0, -0.5, 0.0, 2.0]  # unit 4 is read by nothing: in no group
    positive, negative = unit_groups(LayerProblem(xp, A, V))
    assert positive.tolist() == [0, 2, 5]
    assert negative.tolist() == [1, 3]
    (every,) = unit_groups(LayerProblem(xp, *layer(np.random.default_rng(1), n=6, m=3)))
    assert every.tolist() == list(range(6))


def test_distinct_rows_exactly_or_rounded():
    X = np.array([[1.0, 2.0], [1.0, 2.0 + 1e-12], [1.0, 2.0], [0.0, 1.0]])
    assert distinct_rows(X) == 3
    assert distinct_rows(X, decimals=9) == 2


def test_allocate_splits_k_by_mass_and_never_above_a_group_size():
    for k in range(1, 12):
        alloc = allocate(k, [3, 5, 0, 4], [1.0, 4.0, 9.0, 2.0])
        assert sum(alloc) == min(k, 12)
        assert all(a <= s for a, s in zip(alloc, [3, 5, 0, 4], strict=True))
        assert alloc[2] == 0  # an empty group gets nothing, however heavy
        if k >= 3:
            assert min(alloc[0], alloc[1], alloc[3]) >= 1  # every non-empty group gets one first
    assert allocate(1, [3, 5], [1.0, 4.0]) == [0, 1]  # fewer units than groups: the heaviest
    assert allocate(5, [5, 5], [3.0, 1.0]) == [4, 1]  # one each, then 3/2, 3/3, 3/4 beat 1/2


def test_canonical_labels_number_clusters_by_their_smallest_member():
    assert canonical_labels(np.array([2, 2, 0, 1, 0]), 3).tolist() == [0, 0, 1, 2, 1]
    labels = np.random.default_rng(2).integers(0, 4, size=20)
    canon = canonical_labels(labels, 4)
    first = [int(np.flatnonzero(canon == c)[0]) for c in np.unique(canon)]
    assert first == sorted(first)
    assert (canon[:, None] == canon[None, :]).tolist() == (labels[:, None] == labels[None, :]).tolist()


def test_cluster_labels_put_duplicated_rows_together():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(4, 3)) * 10
    X = np.concatenate([base, base])  # rows 4..7 duplicate rows 0..3
    for labels, _ in (cluster_labels(X, 4, None, rng), cluster_labels_ward(X, 4, None)):
        np.testing.assert_array_equal(labels[:4], labels[4:])
        assert labels[:4].tolist() == [0, 1, 2, 3]  # canonical numbering
    labels, info = cluster_labels(X, 8, None, rng)
    assert labels.tolist() == list(range(8))
    assert info["objective"] == 0.0


def test_assemble_puts_the_groups_back_in_unit_order():
    groups = [np.array([0, 3]), np.array([1, 2, 4])]
    kept = [np.array([[1.0, 1.0]]), np.array([[2.0, 0.0], [0.0, 2.0]])]
    parts = [
        GroupMerge(np.array([0, 0]), kept[0], np.array([0.5, 2.0])),
        GroupMerge(np.array([1, 0, 1]), kept[1], np.array([1.0, 3.0, 4.0])),
    ]
    assignment, scale, inputs = assemble(xp, groups, parts, 5, np.zeros(1))
    assert assignment.tolist() == [0, 2, 1, 0, 2]  # the second group's kept units come after the first's
    assert scale.tolist() == [0.5, 1.0, 3.0, 2.0, 4.0]
    np.testing.assert_array_equal(inputs, np.concatenate(kept))
    dropped = [GroupMerge(None, None, None), parts[1]]  # a group with no kept unit
    assignment, scale, inputs = assemble(xp, groups, dropped, 5, np.zeros(1))
    assert assignment.tolist() == [-1, 1, 0, -1, 1]
    assert scale.tolist() == [0.0, 1.0, 3.0, 0.0, 4.0]
    assert inputs.shape == (2, 2)
