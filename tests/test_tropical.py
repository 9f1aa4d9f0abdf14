"""Canonical forms of a layer: unit input vectors, outgoing weights, zonotope pairs."""

from __future__ import annotations

import numpy as np
import pytest

from tropref.tropical import neuron_vectors, outgoing_weights, relu_block, tropical_block, zonotope_generators


def test_neuron_vectors_dense_and_conv(backend):
    W, b = np.arange(6.0).reshape(2, 3), np.array([7.0, 8.0])
    A = backend.numpy(neuron_vectors(backend.asarray(W), backend.asarray(b)))
    np.testing.assert_array_equal(A, [[0, 1, 2, 7], [3, 4, 5, 8]])
    K = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    A = backend.numpy(neuron_vectors(backend.asarray(K)))
    np.testing.assert_array_equal(A, np.column_stack([K.reshape(2, -1), np.zeros(2)]))


def test_outgoing_weights_layouts(backend):
    V = np.arange(24.0).reshape(2, 3, 2, 2)
    out = backend.numpy(outgoing_weights(backend.asarray(V)))
    np.testing.assert_array_equal(out, V.reshape(2, 3, 4))
    assert outgoing_weights(backend.asarray(np.ones((5, 3)))).shape == (5, 3, 1)


def test_zonotope_generators_split_by_sign(backend):
    A = np.array([[1.0, 2.0], [3.0, 4.0]])
    V = np.array([[2.0, -1.0]])
    P, Q = (backend.numpy(t) for t in zonotope_generators(backend.asarray(A), backend.asarray(V)))
    np.testing.assert_array_equal(P[0], [[2, 4], [0, 0]])
    np.testing.assert_array_equal(Q[0], [[0, 0], [3, 4]])


def test_zonotope_pairs_need_a_dense_next_layer():
    with pytest.raises(ValueError, match="dense next layer"):
        zonotope_generators(np.ones((2, 3)), np.ones((1, 2, 4)))


def test_tropical_block_on_every_backend(backend):
    rng = np.random.default_rng(1)
    A, V, U = rng.normal(size=(6, 4)), rng.normal(size=(3, 6)), rng.normal(size=(9, 4))
    direct = backend.numpy(relu_block(*(backend.asarray(t) for t in (A, V, U))))
    tropical = backend.numpy(tropical_block(*(backend.asarray(t) for t in (A, V, U))))
    np.testing.assert_allclose(direct, V @ np.maximum(A @ U.T, 0), rtol=1e-12)
    np.testing.assert_allclose(tropical, direct, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_keep_namespace_device_and_dtype(backend, dtype):
    """Every function returns arrays of the input's library, on its device, in its dtype."""
    rng = np.random.default_rng(2)
    W, b, V, U = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=(2, 5)), rng.normal(size=(4, 4))
    W, b, V, U = (backend.asarray(t, dtype) for t in (W, b, V, U))
    A = neuron_vectors(W, b)
    backend.check(A, dtype)
    backend.check(neuron_vectors(W), dtype)
    backend.check(outgoing_weights(V), dtype)
    for generators in zonotope_generators(A, V):
        backend.check(generators, dtype)
    backend.check(relu_block(A, V, U), dtype)
    backend.check(tropical_block(A, V, U), dtype)
