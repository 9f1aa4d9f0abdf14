"""The network description, its forward pass and counting, and compress_network.

Exactness checks use networks built with duplicated (or positively scaled) units, whose
merging is exact by Proposition F; certificate checks compare the measured error with the
network certificate on the inputs the certificate is stated for.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tropref._array import to_numpy
from tropref.network import (
    AvgPool2d,
    BatchNorm,
    Budget,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    MaxPool2d,
    Network,
    ReLU,
    Softmax,
    compress_network,
    count_macs,
    count_params,
    forward,
)
from tropref.network.bounds import interval_bounds
from tropref.network.flatten import with_flatten_order
from tropref.network.forward import apply_layer
from tropref.network.graph import map_arrays
from tropref.network.shapes import layer_shapes
from tropref.network.windows import conv_patches

RNG = np.random.default_rng(12345)


# --------------------------------------------------------------------------- builders


def _bn(C: int, rng: np.random.Generator, positive: bool = True) -> BatchNorm:
    w = rng.uniform(0.5, 1.5, size=C) if positive else rng.normal(size=C)
    return BatchNorm(rng.normal(size=C), rng.uniform(0.5, 2.0, size=C), w, rng.normal(size=C))


def _dup_bn(bn: BatchNorm) -> BatchNorm:
    return BatchNorm(*(np.concatenate([getattr(bn, f)] * 2) for f in ("mean", "var", "weight", "bias")), eps=bn.eps)


def mlp(rng: np.random.Generator, dup: bool = False) -> Network:
    W1, b1 = rng.normal(size=(6, 5)), rng.normal(size=6)
    if dup:  # units 6..11 are positive multiples of units 0..5: merging them is exact
        W1, b1 = np.concatenate([W1, 2.5 * W1]), np.concatenate([b1, 2.5 * b1])
    n1 = W1.shape[0]
    return Network(
        [
            Dense(W1, b1, name="fc1"),
            ReLU(),
            Dropout(0.3),
            Dense(rng.normal(size=(8, n1)), rng.normal(size=8), name="fc2"),
            ReLU(),
            Dense(rng.normal(size=(3, 8)), rng.normal(size=3), name="out"),
        ],
        input_shape=(5,),
    )


def convnet(
    rng: np.random.Generator, order: str = "channels_first", next_padding: int = 1, pool: str = "max", dup: bool = True
) -> Network:
    """Conv -> BN -> ReLU -> BN -> pool -> Conv -> ReLU -> pool -> Flatten -> Dense -> ReLU -> Dense.

    With ``dup`` the first convolution's channels 3..5 duplicate channels 0..2, and both
    BatchNorms are duplicated with them, so merging to 3 channels is exact.
    """
    C = 3
    F, b = rng.normal(size=(C, 2, 3, 3)), rng.normal(size=C)
    bn_pre, bn_post = _bn(C, rng), _bn(C, rng)
    if dup:
        F, b, bn_pre, bn_post = np.concatenate([F, F]), np.concatenate([b, b]), _dup_bn(bn_pre), _dup_bn(bn_post)
    n = F.shape[0]
    Pool = MaxPool2d if pool == "max" else AvgPool2d
    side = 4 if next_padding else 2  # 8x8 -> pool 4x4 -> conv (pad 1: 4x4, pad 0: 2x2)
    spatial = side // 2  # both pools halve the side
    return Network(
        [
            Conv2d(F, b, padding=1, name="conv1"),
            bn_pre,
            ReLU(),
            bn_post,
            Pool(2),
            Conv2d(rng.normal(size=(4, n, 3, 3)), rng.normal(size=4), padding=next_padding, name="conv2"),
            ReLU(),
            Pool(2),
            Dropout(0.1),
            Flatten(order),
            Dense(rng.normal(size=(5, 4 * spatial * spatial)), rng.normal(size=5), name="fc"),
            ReLU(),
            Dense(rng.normal(size=(2, 5)), rng.normal(size=2), name="out"),
        ],
        input_shape=(2, 8, 8),
    )


def _arrays(net: Network) -> list[np.ndarray]:
    return [
        np.array(to_numpy(getattr(l, f)))
        for l in net.layers
        for f in ("W", "b", "mean", "var", "weight", "bias")
        if getattr(l, f, None) is not None
    ]


# --------------------------------------------------------------------------- forward and counting


def _naive_conv(x, W, b, stride, pad, dil):
    t, bo, l, r = pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    N, _C, H, Wd = xp.shape
    O, _, kh, kw = W.shape
    Ho = (H - dil[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (Wd - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((N, O, Ho, Wo))
    for r_ in range(Ho):
        for c_ in range(Wo):
            patch = xp[
                :,
                :,
                r_ * stride[0] : r_ * stride[0] + dil[0] * (kh - 1) + 1 : dil[0],
                c_ * stride[1] : c_ * stride[1] + dil[1] * (kw - 1) + 1 : dil[1],
            ]
            out[:, :, r_, c_] = np.einsum("nchw,ochw->no", patch, W) + b
    return out


@pytest.mark.parametrize(
    ("stride", "pad", "dil"),
    [((1, 1), (0, 0, 0, 0), (1, 1)), ((2, 1), (1, 2, 0, 1), (1, 2)), ((1, 2), (2, 2, 2, 2), (2, 1))],
)
def test_conv_matches_naive_reference(backend, stride, pad, dil):
    W, b, x = RNG.normal(size=(3, 2, 3, 2)), RNG.normal(size=3), RNG.normal(size=(2, 2, 7, 6))
    layer = Conv2d(backend.asarray(W), backend.asarray(b), stride=stride, padding=pad, dilation=dil)
    got = backend.numpy(apply_layer(layer, backend.asarray(x)))
    np.testing.assert_allclose(got, _naive_conv(x, W, b, stride, pad, dil), atol=1e-12)
    # the patches reproduce the convolution as one matrix product
    p = backend.numpy(conv_patches(layer, backend.asarray(x)))
    flat = p.reshape(p.shape[0], -1) @ W.reshape(3, -1).T + b
    np.testing.assert_allclose(flat, got.transpose(0, 2, 3, 1).reshape(-1, 3), atol=1e-12)
    some = backend.numpy(conv_patches(layer, backend.asarray(x), np.array([0, 5, 7])))
    np.testing.assert_array_equal(some, p[[0, 5, 7]])


def test_pooling_and_flatten_orders():
    x = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4)
    np.testing.assert_array_equal(apply_layer(MaxPool2d(2), x), x.reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5)))
    np.testing.assert_allclose(apply_layer(AvgPool2d(2), x), x.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5)))
    # padded average pooling, counting or not the padding, on a constant image
    ones = np.ones((1, 1, 3, 3))
    assert apply_layer(AvgPool2d(3, 1, 1), ones)[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert apply_layer(AvgPool2d(3, 1, 1, count_include_pad=False), ones)[0, 0, 0, 0] == pytest.approx(1.0)
    assert apply_layer(MaxPool2d(3, 1, 1), -ones)[0, 0, 0, 0] == -1.0  # -inf padding never wins
    np.testing.assert_array_equal(apply_layer(Flatten(), x), x.reshape(2, -1))
    np.testing.assert_array_equal(apply_layer(Flatten("channels_last"), x), x.transpose(0, 2, 3, 1).reshape(2, -1))


def test_forward_same_on_every_backend(all_backends):
    net = convnet(np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(3, 2, 8, 8))
    ref = forward(net, x)
    for be in all_backends:
        got = forward(map_arrays(net, be.asarray), be.asarray(x), chunk=2)
        np.testing.assert_allclose(be.numpy(got), ref, atol=1e-10, err_msg=be.name)


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


@pytest.mark.parametrize("order", ["channels_first", "channels_last"])
def test_with_flatten_order_is_equivalent(order):
    net = convnet(np.random.default_rng(2), order=order)
    other = "channels_last" if order == "channels_first" else "channels_first"
    x = np.random.default_rng(3).normal(size=(4, 2, 8, 8))
    np.testing.assert_allclose(forward(with_flatten_order(net, other), x), forward(net, x), atol=1e-12)


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


def test_layers_validate_and_name_themselves():
    with pytest.raises(ValueError, match="'c1'"):
        Conv2d(np.zeros((2, 3)), name="c1")
    with pytest.raises(TypeError, match="layer 1"):
        Network([ReLU(), "relu"])
    with pytest.raises(ValueError, match=r"'fc'.*Flatten"):
        forward(Network([Dense(np.zeros((2, 3)), name="fc")]), np.zeros((1, 3, 2, 2)))


# --------------------------------------------------------------------------- compress_network


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


@pytest.mark.parametrize("order", ["channels_first", "channels_last"])
def test_batchnorm_after_flatten_folds_exactly(order):
    """Duplicated channels merge exactly through a per-feature BatchNorm after the flatten."""
    rng = np.random.default_rng(24)
    F = rng.normal(size=(2, 1, 3, 3))
    net = Network(
        [
            Conv2d(np.concatenate([F, F]), np.zeros(4), name="conv"),
            ReLU(),
            Flatten(order),
            _bn(4 * 4, rng),
            Dense(rng.normal(size=(3, 16)), rng.normal(size=3), name="out"),
        ],
        input_shape=(1, 4, 4),
    )
    x = rng.normal(size=(5, 1, 4, 4))
    new, _report = compress_network(net, keep={"conv": 2}, inputs=x)
    assert new.layers[0].W.shape[0] == 2
    assert not any(isinstance(l, BatchNorm) for l in new.layers)
    np.testing.assert_allclose(new(x), net(x), atol=1e-10)


def test_duplicated_units_merge_exactly_on_every_backend(backend):
    net = map_arrays(mlp(np.random.default_rng(9), dup=True), backend.asarray)
    x = backend.asarray(np.random.default_rng(10).normal(size=(30, 5)))
    new, report = compress_network(net, keep={"fc1": 6}, seed=1, inputs=x)
    assert new.layers[0].W.shape == (6, 5)
    assert report.measured_error <= 1e-9
    assert report.layers[0].status == "compressed"
    assert report.layers[1].status == "kept"


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
    bn = _bn(C1, rng, positive=bn_signs == "positive")
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


@pytest.mark.parametrize("budget", [Budget(params=0.5), Budget(macs=0.4), Budget(units=0.5)])
def test_budget_is_met(budget):
    rng = np.random.default_rng(13)
    net = convnet(rng, dup=False)
    new, report = compress_network(net, keep=budget, seed=0)
    if budget.kind == "params":
        assert count_params(new) <= 0.5 * count_params(net)
        assert report.params_after == count_params(new)
    elif budget.kind == "macs":
        assert count_macs(new) <= 0.4 * count_macs(net)
    else:
        before = sum(r.width_before for r in report.layers if r.status != "classifier")
        after = sum(r.width_after for r in report.layers if r.status != "classifier")
        assert after <= 0.5 * before
    assert any(r.width_after < r.width_before for r in report.layers if r.status == "compressed")


def test_budget_is_non_uniform_and_spares_sensitive_layers():
    """A layer whose units are duplicated (exact to merge) is compressed before the others."""
    rng = np.random.default_rng(14)
    net = mlp(rng, dup=True)
    _new, report = compress_network(net, keep=Budget(units=0.6), seed=0)
    fc1, fc2 = report.layers[0], report.layers[1]
    assert fc1.width_after / fc1.width_before < fc2.width_after / fc2.width_before
    assert fc1.width_after + fc2.width_after <= 0.6 * (12 + 8)


def test_budget_errors():
    net = mlp(np.random.default_rng(15))
    with pytest.raises(ValueError, match="cannot be met"):
        compress_network(net, keep=Budget(params=0.01))
    with pytest.raises(ValueError, match="exactly one"):
        Budget(params=0.5, macs=0.5)
    with pytest.raises(ValueError, match="fraction"):
        Budget(units=1.5)


def test_keep_arguments_and_errors():
    net = mlp(np.random.default_rng(16))
    _, report = compress_network(net, keep={0: 3, "fc2": 0.5}, seed=0)
    assert [r.width_after for r in report.layers] == [3, 4, 3]
    _, report = compress_network(net, keep=0.5, skip=["fc2"], seed=0)
    assert [r.status for r in report.layers] == ["compressed", "skipped", "classifier"]
    with pytest.raises(ValueError, match="'nope'"):
        compress_network(net, keep={"nope": 2})
    with pytest.raises(ValueError, match=r"'out'.*not a compressible"):
        compress_network(net, keep={"out": 2})
    with pytest.raises(ValueError, match=r"keep\['fc1'\]"):
        compress_network(net, keep={"fc1": 99})
    with pytest.raises(ValueError, match="fraction"):
        compress_network(net, keep=0.0)
    with pytest.raises(TypeError, match="Network"):
        compress_network([Dense(np.zeros((2, 2)))])
    with pytest.raises(ValueError, match="skip"):
        compress_network(net, skip=["nope"])


def test_input_network_is_never_modified():
    net = convnet(np.random.default_rng(17))
    before = _arrays(net)
    layers = net.layers
    compress_network(net, keep=0.5, seed=0, inputs=np.zeros((2, 2, 8, 8)))
    compress_network(net, keep=Budget(params=0.6), seed=0)
    assert net.layers is layers
    for a, b in zip(before, _arrays(net), strict=True):
        np.testing.assert_array_equal(a, b)


def test_report_and_progress(capsys):
    net = convnet(np.random.default_rng(18), dup=False)
    lines: list[str] = []
    new, report = compress_network(net, keep=0.5, seed=3, progress=lines.append)
    assert len(lines) == 3
    assert "conv1" in lines[0]
    assert capsys.readouterr().err == ""  # silent by default
    compress_network(net, keep=0.5, seed=3, progress=True)
    assert "[tropref]" in capsys.readouterr().err
    assert report.params_before == count_params(net)
    assert report.params_after == count_params(new)
    assert report.macs_after == count_macs(new)
    assert report.certificate is None
    assert "no input domain" in report.input_domain
    for r in report.layers:
        assert r.params_after == sum(
            int(np.prod(getattr(new.layers[k], f).shape))
            for k in [_find(new, r.name)]
            for f in ("W", "b")
            if getattr(new.layers[k], f) is not None
        )
    import json

    as_dict = json.loads(json.dumps(report.to_dict(), default=str))
    assert as_dict["layers"][0]["name"] == "conv1"
    assert as_dict["params_after"] == report.params_after
    table = report.table()
    assert "conv1" in table
    assert "parameters" in table
    assert str(report) == table
    # the same seed gives the same network
    again, _ = compress_network(net, keep=0.5, seed=3)
    for a, b in zip(_arrays(new), _arrays(again), strict=True):
        np.testing.assert_array_equal(a, b)


def _find(net: Network, name: str) -> int:
    return next(i for i, l in enumerate(net.layers) if getattr(l, "name", None) == name)


def test_layers_that_are_not_relu_layers_are_reported_not_compressed():
    rng = np.random.default_rng(19)
    # fc1 has no ReLU (a linear bottleneck)
    net = Network(
        [
            Dense(rng.normal(size=(4, 3)), name="fc1"),
            Dense(rng.normal(size=(6, 4)), name="fc2"),
            ReLU(),
            Dense(rng.normal(size=(2, 6)), name="out"),
        ],
        input_shape=(3,),
    )
    _new, report = compress_network(net, keep=0.5, seed=0)
    assert report.layers[0].status.startswith("not a ReLU layer")
    assert report.layers[1].status == "compressed"
    with pytest.raises(ValueError, match="'fc1'"):
        compress_network(net, keep={"fc1": 2})


@pytest.mark.parametrize("next_padding", [0, 1])
def test_negative_batchnorm_scales_before_max_pooling_pin_channels(next_padding):
    """``max(s a + t) = s min(a) + t`` for ``s < 0``: such channels stay, the others merge."""
    rng = np.random.default_rng(25)
    F, b = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    bn = _bn(3, rng)
    weight = np.array(bn.weight)
    weight[2] = -0.7
    bn = _dup_bn(BatchNorm(bn.mean, bn.var, weight, bn.bias))  # channels 2 and 5 have negative scales
    side = 4 if next_padding else 2
    net = Network(
        [
            Conv2d(np.concatenate([F, F]), np.concatenate([b, b]), padding=1, name="conv1"),
            ReLU(),
            bn,
            MaxPool2d(2),
            Conv2d(rng.normal(size=(4, 6, 3, 3)), rng.normal(size=4), padding=next_padding, name="conv2"),
            ReLU(),
            Flatten(),
            Dense(rng.normal(size=(2, 4 * side * side)), name="out"),
        ],
        input_shape=(2, 8, 8),
    )
    x = rng.normal(size=(5, 2, 8, 8))
    new, report = compress_network(net, keep={"conv1": 4}, seed=0, inputs=x)
    assert report.layers[0].width_after == 4
    assert report.layers[0].info["pinned_channels"] == 2
    np.testing.assert_allclose(new(x), net(x), atol=1e-9)
    assert isinstance(new.layers[2], BatchNorm)
    assert new.layers[2].channels == 4
    new, report = compress_network(net, keep=0.5, seed=0, inputs=x)
    assert report.layers[0].width_after == 3  # one merged channel and the two pinned ones
    assert report.measured_error <= report.certificate
    new, report = compress_network(net, keep=Budget(units=0.5), seed=0)
    assert report.layers[0].width_after >= 3
    assert sum(r.width_after for r in report.layers[:2]) <= 5
    with pytest.raises(ValueError, match="cannot be met"):
        compress_network(net, keep=Budget(units=0.3))


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


def test_budget_floor_keeps_every_layer_near_its_uniform_width():
    """No layer is cut below floor x its uniform width (the trust region of the allocation)."""
    rng = np.random.default_rng(21)
    net = mlp(rng, dup=True)
    for floor in (0.5, 0.9):
        _new, report = compress_network(net, keep=Budget(units=0.6, floor=floor), seed=0)
        for r in report.layers[:2]:
            uniform = round(0.6 * r.width_before)
            assert r.width_after >= np.ceil(floor * uniform) - 1  # q0 may sit just below 0.6
        assert sum(r.width_after for r in report.layers[:2]) <= 0.6 * (12 + 8)
    with pytest.raises(ValueError, match="floor"):
        Budget(units=0.5, floor=1.5)


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


def test_report_says_why_there_is_no_network_certificate():
    rng = np.random.default_rng(0)
    net = Network([Dense(rng.normal(size=(8, 3))), ReLU(), Dense(rng.normal(size=(2, 8)))])
    _, report = compress_network(net, 0.5, progress=False)
    assert report.certificate is None
    assert "network certificate: none: no input domain (pass `inputs` or `input_radius`)" in report.table()
    _, report = compress_network(net, 0.5, progress=False, inputs=rng.normal(size=(4, 3)), certify=False)
    assert "network certificate: none: not certified (certify=False)" in report.table()


@pytest.mark.parametrize("keep", [0.3, 0.5, {"fc1": 37}])
def test_round_to_gives_multiples_never_above_the_original(keep):
    rng = np.random.default_rng(0)
    fc1, fc2 = Dense(rng.normal(size=(70, 5)), name="fc1"), Dense(rng.normal(size=(20, 70)), name="fc2")
    net = Network([fc1, ReLU(), fc2, ReLU(), Dense(rng.normal(size=(3, 20)))])
    x = rng.normal(size=(30, 5))
    small, report = compress_network(net, keep, round_to=8, inputs=x, progress=False)
    widths = {r.name: r.width_after for r in report.layers}
    assert widths["fc1"] % 8 == 0
    assert widths["fc1"] <= 64
    assert widths["fc2"] % 8 == 0 or widths["fc2"] == 20
    assert np.all(np.abs(forward(small, x) - forward(net, x)) <= report.certificate_per_output * (1 + 1e-9) + 1e-9)


def test_round_to_applies_after_a_budget_and_to_coupled_groups():
    from tropref.experiments import load_model

    net, _ = load_model("resnet20")
    _, report = compress_network(net, Budget(params=0.5), round_to=8, certify=False, progress=False)
    assert all(r.width_after % 8 == 0 for r in report.layers if r.status == "compressed")
    _, report = compress_network(net, 0.4, coupled=True, round_to=8, certify=False, progress=False)
    assert {r.width_after for r in report.layers if r.status == "compressed"} <= {8, 16, 24, 32}


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8"])
def test_round_to_must_be_a_positive_integer(bad):
    net = Network([Dense(np.ones((4, 2))), ReLU(), Dense(np.ones((1, 4)))])
    with pytest.raises(ValueError, match="`round_to` must be a positive integer"):
        compress_network(net, 0.5, round_to=bad, progress=False)
