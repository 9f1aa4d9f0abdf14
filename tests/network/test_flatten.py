"""One flatten order for another (tropref.network.flatten)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.network.networks import convnet
from tropref.network import Add, Conv2d, Dense, Flatten, Network, ReLU, forward
from tropref.network.flatten import with_flatten_order, with_flatten_order_everywhere


@pytest.mark.parametrize("order", ["channels_first", "channels_last"])
def test_with_flatten_order_is_equivalent(order):
    net = convnet(np.random.default_rng(2), order=order)
    other = "channels_last" if order == "channels_first" else "channels_first"
    x = np.random.default_rng(3).normal(size=(4, 2, 8, 8))
    np.testing.assert_allclose(forward(with_flatten_order(net, other), x), forward(net, x), atol=1e-12)


def _residual_then_flatten(rng: np.random.Generator, order: str = "channels_first", **kw) -> Network:
    return Network(
        [
            Conv2d(rng.normal(size=(2, 2, 3, 3)), padding=1),
            ReLU(),
            Add(),
            Flatten(order),
            Dense(rng.normal(size=(3, 32))),
        ],
        inputs=[(-1,), (0,), (1, -1), (2,), (3,)],
        **kw,
    )


def test_with_flatten_order_everywhere_rewrites_a_graph_equivalently():
    rng = np.random.default_rng(4)
    net = _residual_then_flatten(rng, input_shape=(2, 4, 4))
    x = rng.normal(size=(5, 2, 4, 4))
    keras_order = with_flatten_order_everywhere(net, "channels_last")
    assert not keras_order.is_chain
    assert [l.order for l in keras_order.layers if isinstance(l, Flatten)] == ["channels_last"]
    np.testing.assert_allclose(forward(keras_order, x), forward(net, x), atol=1e-12)
    assert with_flatten_order_everywhere(net, "channels_first") is net  # nothing of the other order
    chain, images = convnet(np.random.default_rng(5)), rng.normal(size=(3, 2, 8, 8))
    np.testing.assert_allclose(
        forward(with_flatten_order_everywhere(chain, "channels_last"), images), forward(chain, images), atol=1e-12
    )
    with pytest.raises(ValueError, match="input_shape"):
        with_flatten_order_everywhere(_residual_then_flatten(rng), "channels_last")
