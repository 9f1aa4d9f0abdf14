"""compress_network, the walk (tropref.network.compress).

Exactness checks use networks built with duplicated (or positively scaled) units, whose
merging is exact by Proposition F (``tests/network/networks.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.network.networks import arrays_of, convnet, mlp
from tropref.network import (
    BatchNorm,
    Budget,
    compress_network,
)
from tropref.network.graph import map_arrays


def test_keep_one_is_exact(backend):
    net = map_arrays(convnet(np.random.default_rng(6), dup=False), backend.asarray)
    x = backend.asarray(np.random.default_rng(7).normal(size=(5, 2, 8, 8)))
    new, report = compress_network(net, keep=1.0, seed=0, inputs=x)
    np.testing.assert_allclose(backend.numpy(new(x)), backend.numpy(net(x)), atol=1e-10)
    assert report.measured_error <= 1e-10
    assert [r.width_after for r in report.layers] == [r.width_before for r in report.layers]
    assert not any(isinstance(l, BatchNorm) for l in new.layers[:2])  # the BatchNorm before the ReLU is folded


@pytest.mark.parametrize("order", ["channels_first", "channels_last"])
@pytest.mark.parametrize("next_padding", [0, 1])
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_duplicated_channels_merge_exactly(order, next_padding, pool):
    rng = np.random.default_rng(8)
    net = convnet(rng, order=order, next_padding=next_padding, pool=pool)
    x = rng.normal(size=(6, 2, 8, 8))
    new, report = compress_network(net, keep={"conv1": 3}, seed=0, inputs=x)
    assert new.layers[0].W.shape[0] == 3
    np.testing.assert_allclose(new(x), net(x), atol=1e-9)
    assert report.certificate is not None
    assert report.certificate <= 1e-8
    # the BatchNorm after the ReLU: folded into the next layer unless it is zero-padded
    kept_bn = any(isinstance(l, BatchNorm) for l in new.layers)
    assert kept_bn == bool(next_padding)


def test_duplicated_units_merge_exactly_on_every_backend(backend):
    net = map_arrays(mlp(np.random.default_rng(9), dup=True), backend.asarray)
    x = backend.asarray(np.random.default_rng(10).normal(size=(30, 5)))
    new, report = compress_network(net, keep={"fc1": 6}, seed=1, inputs=x)
    assert new.layers[0].W.shape == (6, 5)
    assert report.measured_error <= 1e-9
    assert report.layers[0].status == "compressed"
    assert report.layers[1].status == "kept"


def test_input_network_is_never_modified():
    net = convnet(np.random.default_rng(17))
    before = arrays_of(net)
    layers = net.layers
    compress_network(net, keep=0.5, seed=0, inputs=np.zeros((2, 2, 8, 8)))
    compress_network(net, keep=Budget(params=0.6), seed=0)
    assert net.layers is layers
    for a, b in zip(before, arrays_of(net), strict=True):
        np.testing.assert_array_equal(a, b)


def test_data_reaches_data_driven_methods():
    rng = np.random.default_rng(20)
    net = convnet(rng, dup=False)
    data = rng.normal(size=(8, 2, 8, 8))
    _new, report = compress_network(net, keep=0.5, method="thinet", seed=0, data=data, max_patches=64)
    assert report.measured_error is not None  # measured on `data` when no `inputs` are given
    assert [r.width_after for r in report.layers] == [2, 2, 3, 2]


def test_compress_network_on_strict_device(all_backends):
    be = all_backends[-1]
    net = map_arrays(convnet(np.random.default_rng(21)), be.asarray)
    x = be.asarray(np.random.default_rng(22).normal(size=(3, 2, 8, 8)))
    _new, report = compress_network(net, keep=0.5, seed=0, inputs=x)
    assert report.measured_error <= report.certificate


def test_first_convolution_is_clustered_in_the_image_patch_metric():
    """compress_network gives TropNNC input_ratio=1 on a first convolution only (it reads raw
    image patches); an explicit input_ratio, None included, applies to every layer."""
    net = convnet(np.random.default_rng(21), dup=False)
    _, report = compress_network(net, 0.5, seed=0)
    by_name = {lr.name: lr for lr in report.layers}
    assert by_name["conv1"].info["input_ratio"] == 1.0
    assert by_name["conv2"].info["input_ratio"] is None
    assert by_name["fc"].info["input_ratio"] is None
    _, plain = compress_network(net, 0.5, seed=0, input_ratio=None)
    assert all(lr.info.get("input_ratio") is None for lr in plain.layers)
    _, paper = compress_network(net, 0.5, seed=0, variant="paper")
    assert all(lr.info.get("input_ratio") is None for lr in paper.layers)
    _, everywhere = compress_network(net, 0.5, seed=0, input_ratio=2.0)
    assert {lr.info.get("input_ratio") for lr in everywhere.layers if lr.status == "compressed"} == {2.0}
