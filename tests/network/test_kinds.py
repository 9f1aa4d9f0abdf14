"""The layer kinds (tropref.network.kinds): every layer type has one, every kind implements
every entry, and each entry agrees with the forward pass on a small input."""

from __future__ import annotations

import inspect
import typing

import array_api_compat.numpy as xp
import numpy as np
import pytest

from tropref.network import layers
from tropref.network.kinds import ENTRIES, KINDS, LINEAR_ENTRIES, ROLES, Bounds, Kind, Shape, check_kind, kind_of

RNG = np.random.default_rng(0)


def _example(cls: type):
    """One small layer of type ``cls`` and one sample's input shapes for it."""
    r = np.random.default_rng(1)
    if cls is layers.Dense:
        return layers.Dense(r.normal(size=(4, 6)), r.normal(size=4), name="fc"), [(6,)]
    if cls is layers.Conv2d:
        return layers.Conv2d(r.normal(size=(3, 2, 3, 3)), r.normal(size=3), stride=2, padding=(1, 0, 1, 1)), [(2, 5, 6)]
    if cls is layers.BatchNorm:
        c = 2
        return layers.BatchNorm(r.normal(size=c), r.uniform(1, 2, c), r.normal(size=c), r.normal(size=c)), [(c, 3, 3)]
    if cls is layers.MaxPool2d:
        return layers.MaxPool2d(2, padding=(0, 1, 1, 0)), [(2, 5, 5)]
    if cls is layers.AvgPool2d:
        return layers.AvgPool2d(2, padding=1, count_include_pad=False), [(2, 5, 5)]
    if cls is layers.Flatten:
        return layers.Flatten("channels_last"), [(3, 2, 2)]
    if cls is layers.Softmax:
        return layers.Softmax(), [(5,)]
    if cls is layers.Add:
        return layers.Add(), [(2, 3, 3), (2, 3, 3)]
    if cls is layers.Concat:
        return layers.Concat(), [(2, 3, 3), (1, 3, 3)]
    return cls(), [(2, 3, 3)]  # ReLU, Dropout, Identity


TYPES = list(layers.LAYER_TYPES)


def test_every_layer_type_has_its_own_kind():
    assert set(KINDS) == set(TYPES)
    for cls in TYPES:
        assert KINDS[cls].layer_type is cls
        assert kind_of(_example(cls)[0]) is KINDS[cls]


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_every_kind_implements_every_entry(cls):
    kind = KINDS[cls]
    check_kind(kind)  # the library's own check, and the independent one below
    assert not getattr(type(kind), "__abstractmethods__", ()), f"{cls.__name__}'s kind leaves entries unimplemented"
    for entry in ENTRIES + (LINEAR_ENTRIES if kind.linear else ()):
        method = getattr(type(kind), entry)
        assert method is not getattr(Kind, entry, None), entry
        assert not getattr(method, "__isabstractmethod__", False), entry
    assert isinstance(kind.passes_channels, bool)
    assert isinstance(kind.junction, bool)
    assert kind.role in ROLES
    assert kind.junction == issubclass(cls, layers.JUNCTIONS)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_shape_params_and_macs_agree_with_the_forward_pass(cls):
    layer, ins = _example(cls)
    kind = kind_of(layer)
    xs = [RNG.normal(size=(2, *s)) for s in ins]
    y = kind.forward(xp, layer, xs)
    out = kind.out_shape(layer, ins, "layer")
    assert tuple(y.shape) == (2, *out)
    weights = [getattr(layer, f) for f in ("W", "b", "weight", "bias") if getattr(layer, f, None) is not None]
    n_params = kind.params(layer)
    if isinstance(layer, layers.BatchNorm):  # the running statistics are buffers, not parameters
        assert n_params == 2 * layer.channels
    else:
        assert n_params == sum(int(np.prod(w.shape)) for w in weights)
    macs = kind.macs(layer, out)
    if kind.linear:  # one multiply-accumulate per weight and output position
        positions = int(np.prod(out[1:])) if len(out) == 3 else 1
        assert macs == int(np.prod(layer.W.shape)) * positions
    else:
        assert macs == 0


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_interval_step_bounds_the_forward_pass(cls):
    layer, ins = _example(cls)
    kind = kind_of(layer)
    boxes = [(c - r, c + r) for c, r in ((RNG.normal(size=(1, *s)), RNG.uniform(0, 1, (1, *s))) for s in ins)]
    lo, hi = kind.interval(xp, layer, boxes)
    for _ in range(20):
        xs = [a + RNG.uniform(0, 1, a.shape) * (b - a) for a, b in boxes]
        y = kind.forward(xp, layer, xs)
        assert np.all(y >= lo - 1e-12)
        assert np.all(y <= hi + 1e-12)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_carry_step_bounds_the_change_of_the_output(cls):
    layer, ins = _example(cls)
    kind = kind_of(layer)
    es = [RNG.uniform(0.1, 1, s[0]) for s in ins]  # per input channel
    e_out = kind.carry(layer, es, ins)
    xs = [RNG.normal(size=(1, *s)) for s in ins]
    y = kind.forward(xp, layer, xs)
    per_channel = tuple(int(np.prod(s[1:])) for s in ins)
    for _ in range(20):
        # a change of at most e_c on every entry of channel c (channels on axis 1)
        dx = [
            RNG.uniform(-1, 1, x.shape) * np.repeat(e, n).reshape(x.shape[1:])[None, ...]
            for x, e, n in zip(xs, es, per_channel, strict=True)
        ]
        dy = np.abs(kind.forward(xp, layer, [x + d for x, d in zip(xs, dx, strict=True)]) - y)[0]
        bound = e_out.reshape((-1,) + (1,) * (dy.ndim - 1)) if e_out.size != dy.size else e_out.reshape(dy.shape)
        assert np.all(dy <= bound + 1e-12)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_passing_channels_keeps_each_channel_on_its_own(cls):
    layer, ins = _example(cls)
    kind = kind_of(layer)
    if kind.junction:
        assert not kind.passes_channels
        return
    xs = [RNG.normal(size=(2, *s)) for s in ins]
    y = kind.forward(xp, layer, xs)
    x2 = xs[0].copy()
    x2[:, 0] += 1.0  # change channel 0 only
    y2 = kind.forward(xp, layer, [x2])
    others_same = y.ndim == xs[0].ndim and y.shape[1] == xs[0].shape[1] and np.array_equal(y[:, 1:], y2[:, 1:])
    if kind.passes_channels:
        assert others_same
        assert kind.params(layer) == 0  # no parameter of its own that merged channels would rewrite
        # the channel itself maps without parameters: the same map on a shuffled batch of channels
        perm = RNG.permutation(xs[0].shape[1])
        assert np.allclose(kind.forward(xp, layer, [xs[0][:, perm]]), y[:, perm])


@pytest.mark.parametrize("cls", [c for c in TYPES if KINDS[c].linear], ids=lambda c: c.__name__)
def test_read_units_round_trips_and_reads_the_units_on_axis_1(cls):
    layer, _ = _example(cls)
    kind = kind_of(layer)
    n = int(layer.W.shape[1]) if cls is layers.Conv2d else 2
    order = None if cls is layers.Conv2d else "channels_last"
    W_view, back = kind.read_units(xp, layer, n, order, "next", "prev")
    assert int(W_view.shape[1]) == n
    np.testing.assert_array_equal(back(W_view), layer.W)
    if cls is layers.Dense:  # channels_last: feature f belongs to channel f % n
        np.testing.assert_array_equal(W_view[:, 1, 0], layer.W[:, 1])
        with pytest.raises(ValueError, match="not a multiple of the 4 channels of prev"):
            kind.read_units(xp, layer, 4, order, "next", "prev")


@pytest.mark.parametrize("cls", [c for c in TYPES if not KINDS[c].linear], ids=lambda c: c.__name__)
def test_other_kinds_have_no_weights_per_input_channel(cls):
    layer, _ = _example(cls)
    assert kind_of(layer).read_units(xp, layer, 2, None, "next", "prev") is None


@pytest.mark.parametrize("cls", [c for c in TYPES if KINDS[c].linear], ids=lambda c: c.__name__)
def test_linear_kinds_bound_and_sample_what_they_read(cls):
    layer, ins = _example(cls)
    kind = kind_of(layer)
    x = RNG.normal(size=(3, *ins[0]))
    rows = kind.patches(layer, x, np.random.default_rng(0), 10**6)
    flat = np.reshape(rows, (rows.shape[0], -1))
    y = kind.forward(xp, layer, [x])
    # every output entry is W . row + b for one row of what the layer reads
    pre = flat @ np.reshape(layer.W, (layer.W.shape[0], -1)).T + layer.b
    assert np.allclose(np.sort(pre.ravel()), np.sort(np.asarray(y).ravel()))
    bound = np.max(np.abs(x), axis=0)
    rho = kind.patch_norm(layer, bound)
    assert np.max(np.linalg.norm(np.hstack([flat, np.ones((flat.shape[0], 1))]), axis=1)) <= rho + 1e-12
    assert kind.pads_inputs(layer) == (cls is layers.Conv2d)  # the example convolution is padded
    assert kind.images == (cls is layers.Conv2d)


def test_a_subclass_takes_its_base_kind_and_an_unknown_type_is_refused():
    class Marker(layers.Identity):
        pass

    assert kind_of(Marker()) is KINDS[layers.Identity]
    with pytest.raises(TypeError, match=r"no kind: add one to tropref\.network\.kinds\.KINDS"):
        kind_of(object())


def test_each_kind_is_defined_in_one_place():
    # every entry of a kind is a method of its class or of one of the module's shared bases
    import tropref.network.kinds as kinds

    for kind in KINDS.values():
        for entry in ENTRIES:
            assert inspect.getmodule(getattr(type(kind), entry)) is kinds


def test_out_shape_gives_a_shape_and_interval_gives_bounds():
    """``Shape`` is one sample's shape (ints, no batch axis); ``Bounds`` a pair ``(lo, hi)`` of
    arrays of the batch's output shape, ``lo <= hi``."""
    assert typing.get_args(Shape) == (int, ...)
    assert typing.get_origin(Bounds) is tuple
    assert len(typing.get_args(Bounds)) == 2
    for cls in TYPES:
        layer, ins = _example(cls)
        out = kind_of(layer).out_shape(layer, ins, "layer")
        assert isinstance(out, tuple)
        assert all(type(d) is int for d in out), cls
        box = kind_of(layer).interval(xp, layer, [(-np.ones((3, *s)), np.ones((3, *s))) for s in ins])
        assert isinstance(box, tuple)
        assert len(box) == 2
        assert box[0].shape == box[1].shape == (3, *out), cls
        assert np.all(box[0] <= box[1])


@pytest.mark.parametrize("method", ["tropnnc", "l1"])
def test_a_channels_last_flatten_compresses_as_its_channels_first_twin(method):
    # Dense.read_units gives the core the same values in the same layout for both orders of
    # a flatten, so the convolution compressed, the two rewritten networks are the same
    # network to the last bit (fc itself is left: its rows' sums run in the columns' order)
    from tropref.network import Conv2d, Dense, Flatten, Network, ReLU, compress_network

    r = np.random.default_rng(4)
    C, H, W_ = 6, 3, 4
    F, b = r.normal(size=(C, 2, 3, 3)), r.normal(size=C)
    W1 = r.normal(size=(5, C * H * W_))  # columns in channels-first order: c * s + p

    def perm(n: int) -> np.ndarray:  # column q of a channels-last flatten of n channels: p n + c
        c, p = np.meshgrid(np.arange(n), np.arange(H * W_), indexing="ij")
        out = np.empty(n * H * W_, dtype=np.int64)
        out[(p * n + c).ravel()] = (c * H * W_ + p).ravel()  # ... is column c s + p of channels first
        return out

    def net(order, W):
        return Network(
            [
                Conv2d(F, b, padding=1, name="conv"),
                ReLU(),
                Flatten(order),
                Dense(W, r_b, name="fc"),
                ReLU(),
                Dense(V, name="out"),
            ],
            input_shape=(2, H, W_),
        )

    r_b, V = r.normal(size=5), r.normal(size=(2, 5))
    args = dict(method=method, seed=0, skip=["fc"], progress=False)
    first, _ = compress_network(net("channels_first", W1), 0.5, **args)
    last, _ = compress_network(net("channels_last", W1[:, perm(C)]), 0.5, **args)
    assert first.layers[0].units == 3
    for a, z in zip(first.layers, last.layers, strict=True):
        if isinstance(a, layers.Dense) and a.name == "fc":
            assert np.array_equal(a.W[:, perm(a.W.shape[1] // (H * W_))], z.W)
            assert np.array_equal(a.b, z.b)
        elif isinstance(a, (layers.Dense, layers.Conv2d)):
            assert np.array_equal(a.W, z.W)
            assert np.array_equal(a.b, z.b)
    x = r.normal(size=(3, 2, H, W_))
    np.testing.assert_allclose(first(x), last(x), rtol=1e-12)  # fc's sums, in two orders
