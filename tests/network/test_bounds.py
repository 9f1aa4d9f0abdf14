"""Interval bounds, patch norms and bounds carried along paths (tropref.network.bounds)."""

from __future__ import annotations

import numpy as np

from tests.network.networks import convnet
from tropref.network.bounds import interval_bounds
from tropref.network.forward import apply_layer


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
