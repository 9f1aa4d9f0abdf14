"""Model Folding, plain and with Fold-AR (tropref.methods.folding), checked independently.

The certificate must bound the function returned: the sampled errors here are plain NumPy
forward passes of the original and the returned weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tropref
from tests.methods.problems import moments_of
from tests.strategies import dense_layers, scale_of
from tests.test_theory import dense_forward, probe_inputs, result_forward, sampled_ratio
from tropref.methods import METHODS
from tropref.methods.folding import FOLDING, model_folding, model_folding_ar


@pytest.mark.parametrize("method", ["model_folding", "model_folding_ar"])
@given(layer=dense_layers(8, 3, 2), k=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_model_folding_certificate_holds(method, layer, k, seed):
    W, b, V, b_next = layer
    rng = np.random.default_rng(seed)
    res = tropref.compress_layer(W, b, k, W_next=V, b_next=b_next, seed=0, method=method, moments=moments_of(rng, 8))
    X = probe_inputs(rng, 3, 600)
    ratio = sampled_ratio(dense_forward(W, b, V, b_next, X), result_forward(res, X), X)
    assert np.all(ratio <= np.asarray(res.certificate) + 1e-9 * scale_of(np.column_stack([W, b]), V))


def test_model_folding_averages_rows_and_sums_columns():
    W = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    V = np.array([[1.0, 2.0, 3.0]])
    res = tropref.compress_layer(W, None, 2, W_next=V, method="model_folding", seed=0)
    assert res.assignment.tolist() == [0, 0, 1]
    np.testing.assert_allclose(res.W, [[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(res.W_next, [[3.0, 3.0]])


def test_fold_ar_factor_for_correlated_members():
    """|C| members of pairwise correlation ρ: the averaged, normalised unit is scaled by
    √(|C| / (1 + (|C| − 1) ρ)) times the members' mean spread."""
    rho, size = 0.5, 3
    # three unit vectors of pairwise cosine 1/2, no bias; one consumer reading all with weight 1
    G = np.full((size, size), rho) + (1 - rho) * np.eye(size)
    W = np.linalg.cholesky(G)
    V = np.ones((1, size))
    # concatenated features [w_j, 0, v_j]: the cosine of two members is (ρ + 1) / 2
    rho_bar = (rho + 1.0) / 2.0
    res = tropref.compress_layer(W, None, 1, W_next=V, method="model_folding_ar", moments=(np.zeros(3), 2 * np.ones(3)))
    expected = 2.0 * np.sqrt(size / (1 + (size - 1) * rho_bar)) * W.mean(axis=0) / 2.0
    np.testing.assert_allclose(res.W[0], expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["model_folding", "model_folding_ar"])
def test_model_folding_refuses_unknown_options(method):
    with pytest.raises(TypeError, match="bogus"):
        tropref.compress_layer(np.eye(4), None, 2, W_next=np.ones((1, 4)), method=method, bogus=1)


def test_folding_registers_both_methods():
    assert FOLDING == {"model_folding": model_folding, "model_folding_ar": model_folding_ar}
    assert FOLDING.items() <= METHODS.items()
