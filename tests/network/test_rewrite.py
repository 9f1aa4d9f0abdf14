"""One hidden layer compressed and the next layer rewritten (tropref.network.rewrite):
read_hidden gives compress_layer its arguments, write_hidden writes the result back."""

from __future__ import annotations

import numpy as np
import pytest

import tropref
from tests.network.networks import convnet
from tropref.network import BatchNorm, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from tropref.network.rewrite import HiddenRead, read_hidden, write_hidden
from tropref.network.structure import analyse

OPTIONS = dict(method="tropnnc", seed=0, data=None, max_patches=4096, options={})


def test_a_read_written_back_merges_duplicated_channels_exactly():
    rng = np.random.default_rng(38)
    net = convnet(rng, dup=True)  # conv1's channels 3..5 duplicate 0..2, BatchNorms with them
    part = analyse(net).parts[0]
    layers = list(part.chain.layers)
    read = read_hidden(part, 0, layers, 3, **OPTIONS)
    assert isinstance(read, HiddenRead)
    assert read.h == part.hidden[0]
    W, _, k = read.args
    assert (W.shape, k) == ((6, 2, 3, 3), 3)
    assert read.kwargs["W_next"].shape == (4, 6, 3, 3)  # the next convolution, read per unit
    assert layers == list(part.chain.layers)  # reading edits nothing
    cmax, vector, _info, width = write_hidden(layers, read, tropref.compress_layer(*read.args, **read.kwargs))
    assert width == 3
    assert layers[0].W.shape[0] == layers[2].channels == layers[4].W.shape[1] == 3
    assert cmax < 1e-9
    assert vector.shape == (4,)
    x = rng.normal(size=(4, 2, 8, 8))
    np.testing.assert_allclose(part.chain.replace_layers(layers)(x), net(x), atol=1e-10)


def test_channels_pinned_by_negative_scales_before_a_max_pool_are_set_aside():
    rng = np.random.default_rng(39)
    scales = np.array([1.0, -1.0, 0.5, -2.0])  # channels 1 and 3: max(s a) = s min(a) for s < 0
    net = Network(
        [
            Conv2d(rng.normal(size=(4, 2, 3, 3)), padding=1, name="c1"),
            ReLU(),
            BatchNorm(np.zeros(4), np.ones(4), scales, np.zeros(4)),
            MaxPool2d(2),
            Conv2d(rng.normal(size=(2, 4, 1, 1)), name="c2"),
            ReLU(),
            Flatten(),
            Dense(rng.normal(size=(2, 8))),
        ],
        input_shape=(2, 4, 4),
    )
    part = analyse(net).parts[0]
    layers = list(part.chain.layers)
    read = read_hidden(part, 0, layers, 3, **OPTIONS)
    assert read.fixed.tolist() == [1, 3]
    assert read.free.tolist() == [0, 2]
    W, _, k = read.args
    assert (W.shape[0], k) == (2, 1)  # the free channels merge to what the pinned leave
    *_, width = write_hidden(layers, read, tropref.compress_layer(*read.args, **read.kwargs))
    assert width == 3
    assert layers[0].W.shape[0] == 3
    # every channel pinned: nothing to merge, and writing back None changes nothing
    net = net.replace_layers([*net.layers[:2], BatchNorm(np.zeros(4), np.ones(4), -np.ones(4)), *net.layers[3:]])
    part = analyse(net).parts[0]
    layers = list(part.chain.layers)
    read = read_hidden(part, 0, layers, 3, **OPTIONS)
    assert read.args is None
    cmax, vector, _info, width = write_hidden(layers, read, None)
    assert (cmax, width) == (0.0, 4)  # nothing changed: exact
    np.testing.assert_array_equal(vector, np.zeros(2))
    assert all(a is b for a, b in zip(layers, part.chain.layers, strict=True))


def test_moments_implied_after_the_relu_go_to_tropnnc_only():
    """A BatchNorm after the ReLU implies pre-activation moments (tropref's model, for
    TropNNC's refit); Model Folding's repair reads only a BatchNorm before the ReLU, as its
    paper does, and gets none here."""
    rng = np.random.default_rng(41)
    bn = BatchNorm(rng.uniform(0.2, 1.0, 4), rng.uniform(0.1, 1.0, 4))  # a ReLU output's statistics
    net = Network([Conv2d(rng.normal(size=(4, 2, 3, 3))), ReLU(), bn, Conv2d(rng.normal(size=(3, 4, 1, 1)))])
    part = analyse(net, (2, 6, 6)).parts[0]
    assert part.implied == frozenset({0})
    layers = list(part.chain.layers)
    for method, given in (("tropnnc", True), ("model_folding_ar", False)):
        read = read_hidden(part, 0, layers, 2, **{**OPTIONS, "method": method})
        assert (read.kwargs["moments"] is not None) == given, method
    stored = Network([Conv2d(rng.normal(size=(4, 2, 3, 3))), bn, ReLU(), Conv2d(rng.normal(size=(3, 4, 1, 1)))])
    part = analyse(stored, (2, 6, 6)).parts[0]
    assert part.implied == frozenset()
    assert (
        read_hidden(part, 0, list(part.chain.layers), 2, **{**OPTIONS, "method": "model_folding_ar"}).kwargs["moments"]
        is not None
    )


@pytest.mark.parametrize("after_relu", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_the_refitted_certificate_holds_across_a_max_pooling(seed, after_relu):
    """TropNNC refits the next layer (a general fold) where BatchNorm statistics exist, stored
    before the ReLU or implied by a BatchNorm after it; with a max pooling between the layers
    its certificate is kept and still bounds the change of the next layer's pre-activations,
    by the largest ``‖(patch, 1)‖`` of the input."""
    rng = np.random.default_rng(50 + seed)
    C = 6
    conv1 = Conv2d(rng.normal(size=(C, 2, 3, 3)), rng.normal(size=C), padding=1)
    if after_relu:  # statistics a ReLU output can have; positive scales (none pinned)
        mean, var = rng.uniform(0.2, 1.0, C), rng.uniform(0.1, 1.0, C)
        middle = [ReLU(), BatchNorm(mean, var, rng.uniform(0.5, 1.5, C), rng.normal(size=C)), MaxPool2d(2)]
    else:
        bn = BatchNorm(rng.normal(size=C), rng.uniform(0.5, 2.0, C), rng.uniform(0.5, 1.5, C), rng.normal(size=C))
        middle = [bn, ReLU(), MaxPool2d(2)]
    net = Network([conv1, *middle, Conv2d(rng.normal(size=(3, C, 3, 3)), rng.normal(size=3))])
    part = analyse(net, (2, 8, 8)).parts[0]
    layers = list(part.chain.layers)
    read = read_hidden(part, 0, layers, 3, **OPTIONS)
    res = tropref.compress_layer(*read.args, **read.kwargs)
    assert res.scale is None  # the refit's general fold
    _cmax, vector, info, _width = write_hidden(layers, read, res)
    assert vector is not None, info.get("certificate_dropped")
    x = np.concatenate([rng.normal(size=(40, 2, 8, 8)), 3 * rng.choice([-1.0, 1.0], size=(40, 2, 8, 8))])
    change = np.abs(part.chain.replace_layers(layers)(x) - net(x))  # (N, 3, 2, 2)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # (N, 2, 8, 8, 3, 3)
    norms = np.sqrt(np.sum(patches**2, axis=(1, 4, 5)) + 1.0).reshape(len(x), -1).max(axis=1)
    bound = vector[None, :, None, None] * norms[:, None, None, None]
    assert np.all(change <= bound * (1 + 1e-9) + 1e-12)
