"""Zonotope geometry: support functions on every backend, and the Hausdorff oracles on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import scale_of, weights
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


@given(n=st.integers(0, 6), p=st.integers(1, 3), data=st.data())
def test_support_function_is_max_over_subset_sums(n, p, data):
    """h_Z(u) = max_{S} Σ_{j∈S} g_j · u: the vertices are among the subset sums."""
    G, U = data.draw(weights((n, p)), label="G"), data.draw(weights((6, p)), label="U")
    expected = np.max(subset_sums(G) @ U.T, axis=0)
    np.testing.assert_allclose(support_function(G, U), expected, rtol=1e-12, atol=1e-12 * scale_of(G, U))


def test_hausdorff_known_values():
    e1, e2 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert hausdorff_exact(e1, e2) == pytest.approx(1.0)  # two unit segments at 90°
    assert hausdorff_exact(e1, np.zeros((0, 2))) == pytest.approx(1.0)  # segment vs {0}
    assert hausdorff_exact(np.array([[3.0, 4.0]]), np.zeros((0, 2))) == pytest.approx(5.0)
    assert hausdorff_exact(np.vstack([e1, e1]), np.array([[2.0, 0.0]])) == pytest.approx(0.0, abs=1e-12)
    # unit square vs its diagonal segment: the corners (1, 0), (0, 1) are 1/√2 away
    assert hausdorff_exact(np.vstack([e1, e2]), np.array([[1.0, 1.0]])) == pytest.approx(np.sqrt(0.5))


@pytest.mark.slow
@given(n=st.integers(1, 4), p=st.integers(1, 3), data=st.data())
def test_hausdorff_is_a_metric_on_samples(n, p, data):
    A, B, C = (data.draw(weights((n, p)), label=name) for name in "ABC")
    # the oracle may overestimate by ~1e-6 relative on ill-conditioned sets (its docstring)
    tol = 1e-9 * scale_of(A) * scale_of(B) * scale_of(C)
    ab, ba = hausdorff_exact(A, B), hausdorff_exact(B, A)
    assert ab == pytest.approx(ba, rel=1e-6, abs=tol)
    assert hausdorff_exact(A, A) == pytest.approx(0.0, abs=tol)
    assert ab <= (hausdorff_exact(A, C) + hausdorff_exact(C, B)) * (1 + 1e-6) + tol


@pytest.mark.slow
@given(n=st.integers(1, 5), p=st.integers(1, 3), data=st.data())
def test_lemma_c_matched_generators(n, p, data):
    """H(Σ [0, g_j], Σ [0, g̃_j]) <= Σ ‖g_j − g̃_j‖."""
    G = data.draw(weights((n, p)), label="G")
    G2 = G + data.draw(weights((n, p)), label="perturbation")
    bound = np.linalg.norm(G - G2, axis=1).sum()
    assert hausdorff_exact(G, G2) <= bound * (1 + 1e-6) + 1e-9 * scale_of(G, G2)


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_support_function_keeps_namespace_device_and_dtype(backend, dtype):
    rng = np.random.default_rng(1)
    G, U = (backend.asarray(rng.normal(size=s), dtype) for s in ((2, 3, 4), (5, 4)))
    h = support_function(G, U)
    backend.check(h, dtype)
    assert h.shape == (2, 5)
