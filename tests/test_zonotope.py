"""Zonotope geometry: support functions on every backend, and the Hausdorff oracles on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tropref.zonotope import hausdorff_exact, hausdorff_vertex_sets, subset_sums, support_function


def test_support_function_of_a_box(backend):
    G = backend.asarray([[1.0, 0.0], [0.0, 2.0]])
    U = backend.asarray([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(backend.numpy(support_function(G, U)), [3.0, 2.0, 0.0])


def test_support_function_batches_leading_axes(backend):
    rng = np.random.default_rng(0)
    G, U = rng.normal(size=(3, 4, 5)), rng.normal(size=(7, 5))
    out = backend.numpy(support_function(backend.asarray(G), backend.asarray(U)))
    expected = np.stack([np.maximum(U @ g.T, 0).sum(axis=1) for g in G])
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 6), p=st.integers(1, 3))
def test_support_function_is_max_over_subset_sums(seed, n, p):
    """h_Z(u) = max_{S} Σ_{j∈S} g_j · u: the vertices are among the subset sums."""
    rng = np.random.default_rng(seed)
    G, U = rng.normal(size=(n, p)), rng.normal(size=(10, p))
    np.testing.assert_allclose(support_function(G, U), np.max(subset_sums(G) @ U.T, axis=0), atol=1e-12)


def test_hausdorff_known_values():
    e1, e2 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert hausdorff_exact(e1, e2) == pytest.approx(1.0)  # two unit segments at 90°
    assert hausdorff_exact(e1, np.zeros((0, 2))) == pytest.approx(1.0)  # segment vs {0}
    assert hausdorff_exact(np.array([[3.0, 4.0]]), np.zeros((0, 2))) == pytest.approx(5.0)
    assert hausdorff_exact(np.vstack([e1, e1]), np.array([[2.0, 0.0]])) == pytest.approx(0.0, abs=1e-12)
    # unit square vs its diagonal segment: the corners (1, 0), (0, 1) are 1/√2 away
    assert hausdorff_exact(np.vstack([e1, e2]), np.array([[1.0, 1.0]])) == pytest.approx(np.sqrt(0.5))


@pytest.mark.slow
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), p=st.integers(1, 3))
def test_hausdorff_is_a_metric_on_samples(seed, n, p):
    rng = np.random.default_rng(seed)
    A, B, C = (rng.normal(size=(n, p)) for _ in range(3))
    ab, ba = hausdorff_exact(A, B), hausdorff_exact(B, A)
    assert ab == pytest.approx(ba, abs=1e-9)
    assert hausdorff_exact(A, A) == pytest.approx(0.0, abs=1e-9)
    assert ab <= hausdorff_exact(A, C) + hausdorff_exact(C, B) + 1e-9


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), p=st.integers(1, 3))
def test_lemma_c_matched_generators(seed, n, p):
    """H(Σ [0, g_j], Σ [0, g̃_j]) <= Σ ‖g_j − g̃_j‖."""
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, p))
    G2 = G + 0.3 * rng.normal(size=(n, p))
    assert hausdorff_exact(G, G2) <= np.linalg.norm(G - G2, axis=1).sum() + 1e-9


def test_vertex_set_distance_handles_degenerate_sets():
    # collinear generators: a segment, whose vertex set has two points
    assert hausdorff_vertex_sets(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([[3.0, 0.0]])) == pytest.approx(0.0)
    # one generator against none: vertex sets {0, g} and {0}
    assert hausdorff_vertex_sets(np.array([[0.0, 2.0]]), np.zeros((0, 2))) == pytest.approx(2.0)


def test_oracle_refuses_large_inputs():
    with pytest.raises(ValueError, match="oracle for small zonotopes"):
        hausdorff_exact(np.ones((15, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="must be"):
        hausdorff_exact(np.ones((2, 2)), np.ones((2, 3)))
