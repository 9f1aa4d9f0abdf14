"""Interval bounds, patch norms and bounds carried along paths (tropref.network.bounds)."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest

from tests.network.networks import convnet
from tests.network.test_graph import residual_net
from tropref.network import Concat, Conv2d, Dense, Network, ReLU, forward
from tropref.network.bounds import carry_bound, interval_bounds, max_patch_norm, node_bounds, node_step
from tropref.network.forward import apply_layer, node_outputs
from tropref.network.graph import map_arrays
from tropref.network.shapes import output_shapes


def test_interval_bounds_contain_samples():
    net = convnet(np.random.default_rng(4))
    x = np.random.default_rng(5).uniform(-1, 1, size=(20, 2, 8, 8))
    boxes = interval_bounds(net, -np.ones((2, 8, 8)), np.ones((2, 8, 8)))
    assert len(boxes) == len(net.layers) + 1  # the input box, then one box after each layer
    y = x
    for layer, (lo, hi) in zip(net.layers, boxes[:-1], strict=True):
        assert np.all(y >= lo - 1e-9)
        assert np.all(y <= hi + 1e-9)
        y = apply_layer(layer, y)
    assert np.all(y >= boxes[-1][0] - 1e-9)
    assert np.all(y <= boxes[-1][1] + 1e-9)


def test_interval_bounds_keep_the_dtype_of_a_convolution_in_float32():
    """The host convolution of the certificates' float64 arithmetic is not applied to other
    dtypes: a float32 network's boxes stay float32 through its convolutions, as through its
    dense layers (found in review)."""
    rng = np.random.default_rng(0)
    net = Network([Conv2d(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), padding=1), ReLU()])
    lo = rng.normal(size=(2, 5, 5)).astype(np.float32)
    boxes = interval_bounds(net, lo, lo + np.float32(0.1))
    assert [b.dtype for box in boxes for b in box] == [np.float32] * 6
    wide = interval_bounds(map_arrays(net, lambda a: a.astype(np.float64)), lo.astype(np.float64), lo + 0.1)
    np.testing.assert_allclose(boxes[1][1], wide[1][1], rtol=1e-5, atol=1e-5)


def test_node_bounds_contain_every_output_of_a_graph_and_match_the_chain_bounds():
    net = residual_net(5, concat=True)
    lower, upper = -np.ones(net.input_shape), np.ones(net.input_shape)
    boxes = node_bounds(net, lower, upper)
    x = np.random.default_rng(6).uniform(-1, 1, size=(20, *net.input_shape))
    outs = node_outputs(net, x, keep=range(len(net.layers)))
    for i, (lo, hi) in enumerate(boxes):
        assert np.all(outs[i] >= lo - 1e-9), i
        assert np.all(outs[i] <= hi + 1e-9), i
    chain = convnet(np.random.default_rng(7))
    lower, upper = -np.ones(chain.input_shape), np.ones(chain.input_shape)
    for (lo, hi), (lo2, hi2) in zip(
        node_bounds(chain, lower, upper), interval_bounds(chain, lower, upper)[1:], strict=True
    ):
        np.testing.assert_array_equal(lo, lo2)
        np.testing.assert_array_equal(hi, hi2)


def test_node_step_maps_joins_and_adds_bounds():
    lo, hi = np.array([[-1.0, 0.0, 2.0]]), np.array([[1.0, 0.5, 3.0]])
    W = np.array([[1.0, -2.0, 0.5]])
    dlo, dhi = node_step(xp, Dense(W), [(lo, hi)])
    centre, radius = (lo + hi) / 2 @ W.T, (hi - lo) / 2 @ np.abs(W).T
    np.testing.assert_allclose(dlo, centre - radius)
    np.testing.assert_allclose(dhi, centre + radius)
    clo, chi = node_step(xp, Concat(), [(lo, hi), (dlo, dhi)])
    np.testing.assert_array_equal(clo, np.concatenate([lo, dlo], axis=1))
    np.testing.assert_array_equal(chi, np.concatenate([hi, dhi], axis=1))


def test_max_patch_norm_is_the_largest_patch_in_the_box():
    rng = np.random.default_rng(8)
    bound = rng.uniform(0, 2, size=(2, 5, 4))
    conv = Conv2d(np.ones((3, 2, 3, 2)), stride=(2, 1), padding=(1, 0, 1, 1))
    padded = np.pad(bound, ((0, 0), (1, 0), (1, 1)))  # padding holds zeros: it adds nothing
    squares = [
        (padded[:, r : r + 3, c : c + 2] ** 2).sum()
        for r in range(0, padded.shape[1] - 3 + 1, 2)
        for c in range(padded.shape[2] - 2 + 1)
    ]
    assert max_patch_norm(conv, bound) == pytest.approx(np.sqrt(max(squares) + 1))
    assert max_patch_norm(Dense(np.ones((2, 3))), np.array([1.0, 2.0, 2.0])) == pytest.approx(np.sqrt(10))


def test_carry_bound_holds_for_a_change_of_a_convolution_in_a_residual_graph():
    """A change of at most ``e_c`` in every entry of channel ``c`` of layer ``j``'s output (its
    bias moved): the outputs move by at most the carried bound."""
    net = residual_net(9, concat=True)
    j = 3  # "c1", inside the residual branch
    rng = np.random.default_rng(10)
    e = rng.uniform(0.01, 0.2, size=net.layers[j].units)
    bound = carry_bound(net, j, e, output_shapes(net), net.input_shape)
    x = rng.normal(size=(30, *net.input_shape))
    for _ in range(5):
        moved = list(net.layers)
        moved[j] = Conv2d(net.layers[j].W, net.layers[j].b + e * rng.choice([-1.0, 1.0], e.shape), padding=1, name="c1")
        change = np.abs(forward(net.replace_layers(moved), x) - forward(net, x)).max(axis=0)
        assert np.all(change <= bound + 1e-12)
    assert np.all(bound > 0)
