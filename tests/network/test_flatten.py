"""One flatten order for another (tropref.network.flatten)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.network.networks import convnet
from tropref.network import (
    forward,
)
from tropref.network.flatten import with_flatten_order


@pytest.mark.parametrize("order", ["channels_first", "channels_last"])
def test_with_flatten_order_is_equivalent(order):
    net = convnet(np.random.default_rng(2), order=order)
    other = "channels_last" if order == "channels_first" else "channels_first"
    x = np.random.default_rng(3).normal(size=(4, 2, 8, 8))
    np.testing.assert_allclose(forward(with_flatten_order(net, other), x), forward(net, x), atol=1e-12)
