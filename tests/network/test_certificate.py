"""The network certificate (tropref.network.certificate): the measured error never exceeds it
on the inputs it is stated for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.network.networks import batchnorm, convnet, mlp
from tropref import compress_layer
from tropref.network import (
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Network,
    ReLU,
    Softmax,
    compress_network,
    forward,
)
from tropref.network.bounds import interval_bounds, node_bounds
from tropref.network.certificate import CAPPED, input_box, network_certificate


@pytest.mark.parametrize("method", ["tropnnc", "neural_path_kmeans"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_measured_error_within_network_certificate(method, kind):
    rng = np.random.default_rng(11)
    net = mlp(rng) if kind == "mlp" else convnet(rng, dup=False)
    x = rng.uniform(-1, 1, size=(40, *net.input_shape))
    new, report = compress_network(net, keep=0.5, method=method, seed=0, inputs=x)
    assert report.certificate is not None
    per_output_error = np.abs(new(x) - net(x)).max(axis=0)
    assert np.all(per_output_error <= report.certificate_per_output * (1 + 1e-9) + 1e-12)
    assert report.measured_error <= report.certificate
    shares = [r.bound for r in report.layers if r.status == "compressed"]
    assert sum(shares) >= report.certificate * (1 - 1e-9)  # per-output sums: the max of a sum <= the sum of maxes


def test_softmax_output_is_carried_by_the_certificate():
    rng = np.random.default_rng(23)
    net = mlp(rng)
    net = net.replace_layers([*net.layers, Softmax()])
    x = rng.uniform(-1, 1, size=(50, 5))
    np.testing.assert_allclose(net(x).sum(axis=1), 1.0)
    boxes = interval_bounds(net, -np.ones(5), np.ones(5))
    assert np.all(net(x) >= boxes[-1][0] - 1e-12)
    assert np.all(net(x) <= boxes[-1][1] + 1e-12)
    _new, report = compress_network(net, keep=0.5, seed=0, inputs=x)
    assert report.measured_error <= report.certificate <= 1.0  # probabilities move by at most 1


@st.composite
def architectures(draw: st.DrawFn) -> tuple[Network, str, float, int]:
    """A conv chain drawn part by part: widths, padding, pooling kind, BatchNorm position and
    signs, flatten order, method and keep fraction (weights from a drawn seed)."""
    C1, C2 = draw(st.integers(2, 5), label="C1"), draw(st.integers(2, 5), label="C2")
    pad2 = draw(st.sampled_from([0, 1]), label="padding of conv2")
    Pool = draw(st.sampled_from([MaxPool2d, AvgPool2d]), label="first pool")
    bn_first = draw(st.booleans(), label="BatchNorm before the pool")
    bn_signs = draw(st.sampled_from(["positive", "mixed"]), label="BatchNorm scale signs")
    order = draw(st.sampled_from(["channels_first", "channels_last"]), label="flatten order")
    method = draw(st.sampled_from(["tropnnc", "neural_path_kmeans", "l1"]), label="method")
    keep = draw(st.sampled_from([0.3, 0.5, 0.7, 0.9]), label="keep")
    seed = draw(st.integers(0, 2**16), label="weight seed")
    rng = np.random.default_rng(seed)
    bn = batchnorm(C1, rng, positive=bn_signs == "positive")
    side = 4 if pad2 else 2
    layers = [Conv2d(rng.normal(size=(C1, 2, 3, 3)), rng.normal(size=C1), padding=1, name="conv1"), ReLU()]
    layers += [bn, Pool(2)] if bn_first else [Pool(2), bn]
    layers += [
        Conv2d(rng.normal(size=(C2, C1, 3, 3)), rng.normal(size=C2), padding=pad2, name="conv2"),
        ReLU(),
        MaxPool2d(2),
        Flatten(order),
        Dense(rng.normal(size=(6, C2 * (side // 2) ** 2)), rng.normal(size=6), name="fc"),
        ReLU(),
        Dense(rng.normal(size=(3, 6)), rng.normal(size=3), name="out"),
    ]
    return Network(layers, input_shape=(2, 8, 8)), method, keep, seed


@settings(max_examples=12)
@given(arch=architectures())
def test_certificate_holds_on_drawn_architectures(arch):
    """Drawn chains (padding, pooling kinds, BatchNorm signs and places, flatten orders,
    methods): the measured error never exceeds the network certificate on the inputs' box."""
    net, method, keep, seed = arch
    rng = np.random.default_rng(seed + 1)
    # inside the box and on its corners (the box's extreme points, where errors grow most)
    x = np.concatenate([rng.uniform(-1, 1, size=(30, 2, 8, 8)), rng.choice([-1.0, 1.0], size=(30, 2, 8, 8))])
    new, report = compress_network(net, keep=keep, method=method, seed=seed, inputs=x)
    assert report.certificate is not None, method
    assert np.all(np.abs(new(x) - net(x)).max(axis=0) <= report.certificate_per_output * (1 + 1e-9) + 1e-12)


def test_certificate_over_an_input_radius():
    rng = np.random.default_rng(12)
    net = mlp(rng)
    x = rng.normal(size=(200, 5))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0, 2, size=(200, 1))  # in the ball of radius 2
    new, report = compress_network(net, keep=0.4, seed=0, inputs=x, input_radius=2.0)
    assert "2" in report.input_domain
    assert np.abs(new(x) - net(x)).max() <= report.certificate


def _one_layer_compressed(rng: np.random.Generator, scale: float = 1.0):
    """mlp with fc1 compressed by hand (compress_layer), its certificate times ``scale``."""
    net = mlp(rng)
    fc1, fc2 = net.layers[0], net.layers[3]
    res = compress_layer(fc1.W, fc1.b, 3, W_next=fc2.W, b_next=fc2.b, seed=0)
    layers = list(net.layers)
    layers[0], layers[3] = Dense(res.W, res.b, name="fc1"), Dense(res.W_next, res.b_next, name="fc2")
    return net, net.replace_layers(layers), {0: scale * np.asarray(res.certificate)}


def test_network_certificate_bounds_a_change_made_by_hand():
    rng = np.random.default_rng(34)
    net, small, certs = _one_layer_compressed(rng)
    x = rng.uniform(-1, 1, size=(300, 5))
    bound, shares, domain = network_certificate(net, small, certs, {0: 3}, inputs=x)
    assert np.all(np.abs(forward(small, x) - forward(net, x)).max(axis=0) <= bound + 1e-12)
    assert set(shares) == {0}
    assert domain.startswith("the box spanned by the 300 inputs given")
    if CAPPED in domain:  # one layer: its share is the whole bound, unless the span caps it
        assert shares[0] >= bound.max()
    else:
        assert shares[0] == pytest.approx(bound.max())
    assert network_certificate(net, small, {0: None}, {0: 3}, inputs=x)[0] is None  # no layer certificate
    radius, _, _ = network_certificate(net, small, certs, {0: 3}, input_radius=1.0)
    assert np.all(np.abs(forward(small, x) - forward(net, x)).max(axis=0) <= radius + 1e-12)  # x in |x_i| <= 1


def test_network_certificate_is_capped_by_the_span_of_the_output_boxes():
    rng = np.random.default_rng(35)
    net, small, certs = _one_layer_compressed(rng, scale=1e6)
    x = rng.uniform(-1, 1, size=(50, 5))
    bound, _, domain = network_certificate(net, small, certs, {0: 3}, inputs=x)
    assert domain.endswith(CAPPED)
    lo, hi = input_box(net, x, None)[:2]
    (a, b), (c, d) = node_bounds(net, lo, hi)[-1], node_bounds(small, lo, hi)[-1]
    np.testing.assert_allclose(bound, np.maximum(b, d) - np.minimum(a, c))


def test_input_box_from_a_radius_or_the_inputs():
    net = mlp(np.random.default_rng(36))
    lo, hi, domain = input_box(net, None, 2.0)
    np.testing.assert_array_equal(lo, -2 * np.ones(5))
    np.testing.assert_array_equal(hi, 2 * np.ones(5))
    assert "2" in domain
    x = np.random.default_rng(37).normal(size=(9, 5))
    lo, hi, _ = input_box(net, x, None)
    np.testing.assert_array_equal(lo, x.min(axis=0))
    np.testing.assert_array_equal(hi, x.max(axis=0))
    assert input_box(net, None, None) is None
    with pytest.raises(ValueError, match="input_radius"):
        input_box(net, None, -1.0)
