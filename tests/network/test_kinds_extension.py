"""A layer type of the user's own (tropref.network.register_kind): a network holding it is run,
counted, compressed and certified like any other, each checked against an independent
computation; and what register_kind refuses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from tropref.network import (
    Add,
    BatchNorm,
    Dense,
    Network,
    ReLU,
    certify,
    compress_network,
    count_macs,
    count_params,
    register_kind,
    unregister_kind,
)
from tropref.network.kinds import KINDS, Kind, kind_of
from tropref.network.shapes import output_shapes


@dataclass(frozen=True)
class Scale:
    """``y = factor x``, the same positive factor on every channel: nothing to compress, and
    each channel mapped on its own (merged channels pass through it)."""

    factor: float
    name: str | None = None


class ScaleKind(Kind):
    # role None: the walk compresses nothing through it (a hidden layer's path stops there);
    # passes_channels: it commutes with non-negative per-channel scales and maps 0 to 0
    layer_type = Scale
    passes_channels = True

    def forward(self, xp, layer, xs):
        return xs[0] * layer.factor

    def out_shape(self, layer, ins, label):
        return ins[0]

    def params(self, layer):
        return 0

    def macs(self, layer, out_shape):
        return 0

    def read_units(self, xp, layer, n, order, label, source):
        return None

    def interval(self, xp, layer, ins):
        lo, hi = ins[0]
        return lo * layer.factor, hi * layer.factor

    def carry(self, layer, es, in_shapes):
        return es[0] * layer.factor

    def zonotope(self, xp, layer, ins, bounds):
        return tuple(a * layer.factor for a in ins[0]), None

    def back(self, layer, lam, bounds):
        return [lam * layer.factor], np.zeros(lam.shape[:2])


@pytest.fixture
def scale():
    before = dict(KINDS)
    register_kind(Scale, ScaleKind())
    try:
        yield Scale
    finally:
        unregister_kind(Scale)
        assert KINDS == before


RNG = np.random.default_rng(0)
FACTOR = 2.5  # above 1: a certificate that ignored the layer would be too small


def _pairs(r: np.random.Generator, n: int, d: int) -> Dense:
    """A dense layer of ``n`` units in near-duplicate pairs: merged to ``n / 2``, it changes
    little, so that the network certificate is the composed bound, not the interval cap."""
    W, b = r.normal(size=(n // 2, d)), r.normal(size=n // 2)
    return Dense(np.repeat(W, 2, axis=0) + 1e-3 * r.normal(size=(n, d)), np.repeat(b, 2) + 1e-3 * r.normal(size=n))


def _chain(factor: float = FACTOR) -> Network:
    """Dense 3 -> 8 (near-duplicate pairs), ReLU, Dense 8 -> 6, Scale, ReLU, Dense 6 -> 2."""
    r = np.random.default_rng(1)
    return Network(
        [
            _pairs(r, 8, 3),
            ReLU(),
            Dense(r.normal(size=(6, 8)), r.normal(size=6)),
            Scale(factor),
            ReLU(),
            Dense(r.normal(size=(2, 6)), r.normal(size=2)),
        ],
        input_shape=(3,),
    )


def _numpy_forward(net: Network, x: np.ndarray) -> np.ndarray:
    """The chain's output, by hand: affine maps, ReLUs and the factor."""
    for layer in net.layers:
        if isinstance(layer, Dense):
            x = x @ layer.W.T + layer.b
        elif isinstance(layer, ReLU):
            x = np.maximum(x, 0.0)
        else:
            assert isinstance(layer, Scale)
            x = layer.factor * x
    return x


def _residual() -> Network:
    """A residual stream of 4 channels through a Scale: Dense, ReLU, Dense, ReLU, Dense, Add,
    Scale, ReLU, Dense (the stream's producers are layers 0 and 4)."""
    r = np.random.default_rng(2)
    return Network(
        [
            _pairs(r, 4, 3),
            ReLU(),
            Dense(r.normal(size=(6, 4)), r.normal(size=6)),
            ReLU(),
            _pairs(r, 4, 6),
            Add(),
            Scale(FACTOR),
            ReLU(),
            Dense(r.normal(size=(2, 4)), r.normal(size=2)),
        ],
        input_shape=(3,),
        inputs=[(-1,), (0,), (1,), (2,), (3,), (4, 1), (5,), (6,), (7,)],
    )


def test_a_network_with_it_runs_and_counts(scale):
    net = _chain()
    x = RNG.normal(size=(7, 3))
    np.testing.assert_allclose(net(x), _numpy_forward(net, x), rtol=1e-12)
    assert output_shapes(net) == [(8,), (8,), (6,), (6,), (6,), (2,)]
    weights = [l for l in net.layers if isinstance(l, Dense)]
    assert count_params(net) == sum(l.W.size + l.b.size for l in weights)
    assert count_macs(net) == sum(l.W.size for l in weights)


def test_compress_network_stops_at_it_and_certifies_through_it(scale):
    net = _chain()
    x = RNG.uniform(-1, 1, size=(200, 3))
    small, report = compress_network(net, keep=0.5, inputs=x, seed=0, progress=False)
    status = {r.name: r.status for r in report.layers}
    assert status["0:Dense"] == "compressed"  # its path (a ReLU) reaches the next dense layer
    assert status["2:Dense"] != "compressed"  # the Scale is on its path: left as it is
    assert small.layers[0].units == 4
    assert small.layers[2].units == 6
    assert isinstance(small.layers[3], Scale)
    err = np.abs(_numpy_forward(small, x) - _numpy_forward(net, x))
    assert report.measured_error == pytest.approx(err.max())
    assert "exceeds" not in report.input_domain  # the composed bound, not the interval cap
    assert np.all(err <= report.certificate_per_output[None, :])
    # the same network with the factor folded into the dense layer before it: the same
    # compression, and the same certificate (the Scale's carry step multiplies by the factor)
    layers = list(net.layers)
    layers[2] = Dense(FACTOR * layers[2].W, FACTOR * layers[2].b)
    folded = Network([*layers[:3], *layers[4:]], input_shape=(3,))
    small_f, report_f = compress_network(folded, keep={0: 4}, inputs=x, seed=0, progress=False)
    np.testing.assert_allclose(small(x), small_f(x), rtol=1e-10)
    np.testing.assert_allclose(report.certificate_per_output, report_f.certificate_per_output, rtol=1e-10)


def test_merged_channels_pass_through_it_in_a_residual_stream(scale):
    net = _residual()
    x = RNG.uniform(-1, 1, size=(200, 3))
    small, report = compress_network(net, keep=0.5, inputs=x, coupled=True, seed=0, progress=False)
    # the stream's producers (layers 0 and 4) merged to one partition of 2 channels; the
    # Scale now carries the 2 merged channels, the reader takes 2 inputs
    assert small.layers[0].units == 2
    assert small.layers[4].units == 2
    assert isinstance(small.layers[6], Scale)
    assert output_shapes(small)[6] == (2,)
    assert small.layers[8].W.shape == (2, 2)
    err = np.abs(small(x) - net(x))
    assert report.certificate is not None
    assert np.all(err <= report.certificate_per_output[None, :] + 1e-9)


@pytest.mark.parametrize("generators", [-1, 10**6])
def test_local_certificate_passes_it(scale, generators):
    net = _chain()
    small = compress_network(net, keep=0.5, seed=0, progress=False)[0]
    x, eps = RNG.uniform(-1, 1, size=(4, 3)), 0.05
    B = certify(net, small, x, eps, generators=generators)
    for _ in range(50):
        xs = x + RNG.uniform(-eps, eps, size=x.shape)
        assert np.all(np.abs(_numpy_forward(net, xs) - _numpy_forward(small, xs)) <= B)
    exact = np.abs(_numpy_forward(net, x) - _numpy_forward(small, x))
    np.testing.assert_allclose(certify(net, small, x, 0.0), exact, atol=1e-7)


def test_unregistered_it_is_no_layer():
    with pytest.raises(TypeError, match=r"layer 0 is a Scale, not a tropref\.network layer"):
        Network([Scale(2.0)])
    with pytest.raises(TypeError, match="has no kind"):
        kind_of(Scale(2.0))


def test_register_kind_refuses_what_is_no_layer_type():
    with pytest.raises(TypeError, match="`layer_type` must be a dataclass type"):
        register_kind(Scale(2.0), ScaleKind())
    with pytest.raises(TypeError, match="`layer_type` must be a dataclass type"):
        register_kind(int, ScaleKind())
    with pytest.raises(ValueError, match="`layer_type` BatchNorm is a shipped layer type"):
        register_kind(BatchNorm, ScaleKind())
    assert Scale not in KINDS


def test_register_kind_refuses_incomplete_or_inconsistent_kinds():
    class NoBack(ScaleKind):
        back = None

    class BadRole(ScaleKind):
        role = "scale"

    class LinearWithoutPatches(ScaleKind):
        linear, role = True, "linear"

    class NotAJunction(ScaleKind):
        passes_channels, role = False, "add"

    class OtherType(ScaleKind):
        layer_type = Dense

    cases = [
        ("relu", TypeError, "`kind` must be a tropref.network.kinds.Kind"),
        (NoBack(), TypeError, "does not implement the entry `back`"),
        (BadRole(), ValueError, "`role` must be one of"),
        (LinearWithoutPatches(), TypeError, "does not implement the entry `patch_norm`"),
        (NotAJunction(), ValueError, "is a junction's"),
        (OtherType(), ValueError, "is the kind of 'Dense', not of `layer_type` Scale"),
    ]
    for kind, error, message in cases:
        with pytest.raises(error, match=message):
            register_kind(Scale, kind)
    assert Scale not in KINDS


def test_registering_twice_needs_replace(scale):
    first = KINDS[Scale]
    with pytest.raises(ValueError, match=r"already has a kind .*replace=True"):
        register_kind(Scale, ScaleKind())
    assert KINDS[Scale] is first
    other = ScaleKind()
    register_kind(Scale, other, replace=True)
    assert kind_of(Scale(2.0)) is other


def test_unregister_kind_refuses_shipped_and_unknown_types():
    with pytest.raises(ValueError, match="ReLU is a shipped layer type"):
        unregister_kind(ReLU)
    with pytest.raises(ValueError, match="Scale has no registered kind"):
        unregister_kind(Scale)
