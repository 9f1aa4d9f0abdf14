"""The forward pass (tropref.network.forward)."""

from __future__ import annotations

import numpy as np

from tests.network.networks import convnet
from tropref.network import (
    forward,
)
from tropref.network.graph import map_arrays


def test_forward_same_on_every_backend(all_backends):
    net = convnet(np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(3, 2, 8, 8))
    ref = forward(net, x)
    for be in all_backends:
        got = forward(map_arrays(net, be.asarray), be.asarray(x), chunk=2)
        np.testing.assert_allclose(be.numpy(got), ref, atol=1e-10, err_msg=be.name)
