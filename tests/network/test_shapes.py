"""Shapes, parameter and MAC counts (tropref.network.shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from tropref.network import (
    BatchNorm,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Network,
    ReLU,
    count_macs,
    count_params,
)
from tropref.network.shapes import layer_shapes


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
