"""What is compressible (tropref.network.structure): BatchNorm folding, hidden layers, and the
BatchNorm after a ReLU (its private helper, ``_after_relu``): pinned channels, kept or folded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.network.networks import batchnorm, convnet, duplicated
from tests.network.test_graph import residual_net
from tropref.network import (
    BatchNorm,
    Budget,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Network,
    ReLU,
    compress_network,
    forward,
)
from tropref.network.segments import segments
from tropref.network.structure import (
    HiddenLayer,
    Part,
    Structure,
    analyse,
    compressible_layers,
    fold_batchnorm,
    hidden_layers,
)


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
            batchnorm(4 * 4, rng),
            Dense(rng.normal(size=(3, 16)), rng.normal(size=3), name="out"),
        ],
        input_shape=(1, 4, 4),
    )
    x = rng.normal(size=(5, 1, 4, 4))
    new, _report = compress_network(net, keep={"conv": 2}, inputs=x)
    assert new.layers[0].W.shape[0] == 2
    assert not any(isinstance(l, BatchNorm) for l in new.layers)
    np.testing.assert_allclose(new(x), net(x), atol=1e-10)


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
    bn = batchnorm(3, rng)
    weight = np.array(bn.weight)
    weight[2] = -0.7
    bn = duplicated(BatchNorm(bn.mean, bn.var, weight, bn.bias))  # channels 2 and 5 have negative scales
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


def test_fold_batchnorm_folds_what_reads_pre_activations_and_keeps_the_rest():
    net = convnet(np.random.default_rng(26))  # conv1, BatchNorm, ReLU, BatchNorm, pool, ...
    folded, origin = fold_batchnorm(net)
    assert len(folded) == len(net) - 1  # the BatchNorm before the ReLU is folded into conv1
    assert origin == [0, *range(2, len(net))]
    assert [type(l) for l in folded.layers] == [type(net.layers[o]) for o in origin]
    x = np.random.default_rng(27).normal(size=(4, 2, 8, 8))
    np.testing.assert_allclose(folded(x), net(x), atol=1e-10)


def test_a_batchnorm_after_the_relu_gives_the_pre_activations_it_implies():
    """Gaussian inputs make each channel's pre-activation exactly Gaussian (no padding: every
    position reads the same): the statistics a BatchNorm after the ReLU would store give
    back its measured mean and spread."""
    rng = np.random.default_rng(31)
    conv = Conv2d(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4))
    x = rng.normal(size=(4000, 2, 5, 5))
    z = forward(Network([conv]), x).transpose(1, 0, 2, 3).reshape(4, -1)
    a = np.maximum(z, 0.0)
    bn = BatchNorm(a.mean(1), a.var(1), rng.uniform(0.5, 1.5, 4), rng.normal(size=4))
    after = Conv2d(rng.normal(size=(3, 4, 1, 1)))
    part = analyse(Network([conv, ReLU(), bn, after]), (2, 5, 5)).parts[0]
    mean, spread = part.moments[0]
    np.testing.assert_allclose(mean, z.mean(1), atol=0.02 * z.std(1).max())
    np.testing.assert_allclose(spread, z.std(1), rtol=0.02)
    # a BatchNorm before the ReLU is read first; through a max pooling, or from statistics no
    # ReLU output has (a negative mean), nothing is implied
    pre = batchnorm(4, rng)
    assert np.array_equal(analyse(Network([conv, pre, ReLU(), bn, after]), (2, 5, 5)).parts[0].moments[0][0], pre.bias)
    pooled = Network([conv, ReLU(), MaxPool2d(2), bn, Conv2d(rng.normal(size=(3, 4, 1, 1)))])
    assert analyse(pooled, (2, 5, 5)).parts[0].moments == {}
    negative = BatchNorm(-a.mean(1), a.var(1))
    assert analyse(Network([conv, ReLU(), negative, after]), (2, 5, 5)).parts[0].moments == {}
    written = BatchNorm(np.zeros(4), np.ones(4), eps=0.0)  # what tropref writes back after a merge
    assert analyse(Network([conv, ReLU(), written, after]), (2, 5, 5)).parts[0].moments == {}


def test_hidden_layers_say_what_lies_before_the_next_layer():
    net = convnet(np.random.default_rng(28))
    assert "BatchNorm" in hidden_layers(net)[0]  # a BatchNorm before the ReLU, not folded yet
    folded, _ = fold_batchnorm(net)
    hidden = hidden_layers(folded)
    assert sorted(hidden) == [0, 4, 9]  # every dense/conv layer but the classifier
    for i, h in hidden.items():
        assert isinstance(h, HiddenLayer)
        assert (h.i, h.path) == (i, tuple(range(i + 1, h.j)))
        between = [folded.layers[p] for p in h.path]
        assert isinstance(folded.layers[h.j], Dense | Conv2d)
        assert h.maxpool == any(type(l) is MaxPool2d for l in between)
        assert h.flatten == next((p for p in h.path if isinstance(folded.layers[p], Flatten)), None)
        assert h.bn == next((p for p in h.path if isinstance(folded.layers[p], BatchNorm)), None)
    assert hidden[0].max_after_bn  # conv1's BatchNorm after the ReLU comes before a max pooling


def test_analyse_cuts_folds_and_places_every_layer_of_a_graph():
    net = residual_net(29, concat=True)
    s = analyse(net)
    assert isinstance(s, Structure)
    x = np.random.default_rng(30).normal(size=(3, *net.input_shape))
    np.testing.assert_allclose(forward(s.work, x), forward(net, x), atol=1e-10)
    assert [p.segment for p in s.parts] == segments(net)
    for k, part in enumerate(s.parts):
        assert isinstance(part, Part)
        assert part.origin[0] == part.segment.nodes[0]
        assert set(part.origin) <= set(part.segment.nodes)
        for i, g in enumerate(part.at):
            assert s.work.layers[g] is part.chain.layers[i]
            assert s.index(g) == (k, i)
            assert s.origin(g) == part.origin[i]
        assert (part.coupled is None) == (k == len(s.parts) - 1)  # only the last segment ends the network
        for i, (mean, spread) in part.moments.items():  # from the BatchNorm folded into layer i
            bn = net.layers[part.origin[i] + 1]
            np.testing.assert_allclose(mean, bn.bias)
            np.testing.assert_allclose(spread, np.abs(bn.weight) * np.sqrt(bn.var / (bn.var + bn.eps)))
    assert sum(len(p.moments) for p in s.parts) == 3  # stem, c1, c2 have a BatchNorm before the ReLU
    assert compressible_layers(net) == [s.origin(g) for g in s.compressible] == [3]  # c1; the rest feed junctions
    (g,) = s.compressible
    assert s.origin(s.next_layer(g)) == 6
    assert s.hidden(g).j == 2
    with pytest.raises(KeyError):
        s.hidden(s.next_layer(g))
