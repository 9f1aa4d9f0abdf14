"""Zonotope K-means and Neural Path K-means (tropref.methods.predecessor): the method
contract, exact merges of duplicated units, and what each clusters."""

from __future__ import annotations

import numpy as np
import pytest

from tests.methods.problems import check_contract, layer, problem
from tropref.methods.predecessor import neural_path_kmeans, zonotope_kmeans


def test_neural_path_kmeans_merges_duplicated_paths_exactly(backend):
    rng = np.random.default_rng(0)
    A, V = layer(rng, n=4, d=3, m=2, s=1)
    A2, V2 = np.concatenate([A, A]), np.concatenate([V, V], axis=1)  # units 4..7 copy 0..3, weights too
    merge = neural_path_kmeans(problem(backend, A2, V2), 4, rng=rng)
    assignment, fold, inputs = check_contract(backend, merge, 8, 4)
    np.testing.assert_array_equal(assignment[:4], assignment[4:])
    np.testing.assert_allclose(inputs[assignment[:4]], A, atol=1e-12)  # the centre of two copies is the unit
    np.testing.assert_allclose(np.einsum("mns,nc->mcs", V2, fold)[:, assignment[:4]], 2 * V, atol=1e-12)


def test_zonotope_kmeans_clusters_each_sign_group_on_its_own(backend):
    rng = np.random.default_rng(1)
    A, V = layer(rng, n=10, m=1)
    V[0, :, 0] = np.where(np.arange(10) < 5, 1.0, -1.0) * rng.uniform(0.5, 2, 10)
    merge = zonotope_kmeans(problem(backend, A, V), 4, rng=rng)
    assignment, _, _ = check_contract(backend, merge, 10, 4)
    positive, negative = set(assignment[:5]), set(assignment[5:])
    assert not positive & negative  # a cluster never mixes the zonotopes P and Q
    assert merge.zonotope_bound is not None
    with pytest.raises(ValueError, match="single"):
        zonotope_kmeans(problem(backend, *layer(rng, n=10, m=3)), 4, rng=rng)
