"""Shapes, parameter and MAC counts (tropref.network.shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.network.test_graph import residual_net
from tropref.network import (
    Add,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Network,
    ReLU,
    count_macs,
    count_params,
)
from tropref.network.forward import node_outputs
from tropref.network.shapes import layer_macs, layer_params, layer_shapes, node_output_shape, output_shapes


def test_counting_by_hand():
    net = Network(
        [
            Conv2d(np.zeros((4, 3, 3, 3)), np.zeros(4), padding=1),
            BatchNorm(np.zeros(4), np.ones(4)),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Dense(np.zeros((10, 4 * 4 * 4)), np.zeros(10)),
        ],
        input_shape=(3, 8, 8),
    )
    assert count_params(net) == (4 * 27 + 4) + 8 + (10 * 64 + 10)
    assert count_macs(net) == 4 * 27 * 64 + 640
    assert layer_shapes(net)[-1] == (10,)
    assert count_macs(Network(net.layers)) is None  # a convolution without an input size
    with pytest.raises(ValueError, match="'fc'"):
        layer_shapes(Network([Dense(np.zeros((2, 3)), name="fc")], input_shape=(4,)))


def test_output_shapes_are_the_shapes_the_forward_pass_gives():
    net = residual_net(3, concat=True)
    outs = node_outputs(net, np.zeros((2, *net.input_shape)), keep=range(len(net.layers)))
    assert output_shapes(net) == [tuple(outs[i].shape[1:]) for i in range(len(net.layers))]
    assert output_shapes(net, stop=4) == output_shapes(net)[:5]
    assert output_shapes(Network([Dense(np.ones((2, 3))), ReLU()]), input_shape=(3,)) == [(2,), (2,)]


def test_node_output_shape_of_junctions_and_misfits():
    assert node_output_shape(Concat(), [(3, 4, 4), (2, 4, 4)]) == (5, 4, 4)
    assert node_output_shape(Add(), [(3, 4, 4), (3, 4, 4)]) == (3, 4, 4)
    assert node_output_shape(Dense(np.ones((2, 3))), [(3,)]) == (2,)
    with pytest.raises(ValueError, match="'a'"):
        node_output_shape(Add(), [(3, 4, 4), (2, 4, 4)], label="'a'")


def test_layer_params_and_macs_count_weights_and_positions():
    conv = Conv2d(np.zeros((4, 3, 3, 2)), np.zeros(4))
    assert layer_params(conv) == 4 * 3 * 3 * 2 + 4
    assert layer_params(Dense(np.zeros((5, 7)))) == 35  # no bias
    assert layer_params(BatchNorm(np.zeros(6), np.ones(6))) == 12  # weight and bias; the statistics are buffers
    assert layer_params(ReLU()) == 0
    assert layer_macs(conv, (4, 5, 6)) == 4 * 3 * 3 * 2 * 5 * 6
    assert layer_macs(conv, None) is None  # a convolution's cost needs its output size
    assert layer_macs(Dense(np.zeros((5, 7))), None) == 35
    assert layer_macs(MaxPool2d(2), (3, 2, 2)) == 0
    net = residual_net(4)
    assert count_params(net) == sum(layer_params(l) for l in net.layers)
    assert count_macs(net) == sum(layer_macs(l, s) for l, s in zip(net.layers, output_shapes(net), strict=True))
