"""The forward pass (tropref.network.forward)."""

from __future__ import annotations

import numpy as np

from tests.network.networks import convnet
from tests.network.test_graph import residual_net
from tropref.network import Dense, Flatten, ReLU, forward
from tropref.network.forward import apply_layer, apply_node, node_outputs
from tropref.network.graph import map_arrays


def test_forward_same_on_every_backend(all_backends):
    net = convnet(np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(3, 2, 8, 8))
    ref = forward(net, x)
    for be in all_backends:
        got = forward(map_arrays(net, be.asarray), be.asarray(x), chunk=2)
        np.testing.assert_allclose(be.numpy(got), ref, atol=1e-10, err_msg=be.name)


def test_node_outputs_keep_what_is_asked_and_stop_where_asked():
    net = residual_net(11, concat=True)
    x = np.random.default_rng(12).normal(size=(3, *net.input_shape))
    every = node_outputs(net, x, keep=[-1, *range(len(net.layers))])
    np.testing.assert_array_equal(every[-1], x)
    for i in range(len(net.layers)):  # each output is its layer applied to what it reads
        np.testing.assert_allclose(every[i], apply_node(net.layers[i], [every[p] for p in net.sources(i)]))
    np.testing.assert_allclose(every[len(net.layers) - 1], forward(net, x))
    some = node_outputs(net, x, keep=[2], stop=8)
    assert sorted(some) == [2, 8]
    np.testing.assert_allclose(some[8], every[8])
    # the structure with other layers in place: the last layer doubled
    doubled = [*net.layers[:-1], Dense(2 * net.layers[-1].W, 2 * net.layers[-1].b)]
    np.testing.assert_allclose(node_outputs(net, x, layers=doubled)[len(doubled) - 1], 2 * forward(net, x))


def test_apply_layer_is_the_layer_on_a_batch():
    rng = np.random.default_rng(13)
    W, b, x = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=(5, 4))
    np.testing.assert_allclose(apply_layer(Dense(W, b), x), x @ W.T + b)
    np.testing.assert_array_equal(apply_layer(ReLU(), x), np.maximum(x, 0))
    images = rng.normal(size=(2, 3, 4, 4))
    np.testing.assert_array_equal(apply_layer(Flatten(), images), images.reshape(2, -1))
