"""The local certificate: never below the worst error a search finds in the ball, exact at eps = 0."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tropref
from tropref import compress_network
from tropref.network import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Network,
    ReLU,
    Softmax,
    certify,
)

torch = pytest.importorskip("torch")
from tropref.adapters.torch import to_torch  # noqa: E402


def dense_chain(rng, d, h1, h2, k):
    return Network(
        [
            Dense(rng.normal(size=(h1, d)), rng.normal(size=h1) * 0.3),
            ReLU(),
            Dense(rng.normal(size=(h2, h1)) / np.sqrt(h1), rng.normal(size=h2) * 0.3),
            ReLU(),
            Dense(rng.normal(size=(k, h2)), rng.normal(size=k)),
        ],
        input_shape=(d,),
    )


def conv_chain(rng, c):
    bn = BatchNorm(rng.normal(size=c) * 0.1, rng.uniform(0.5, 2, size=c), rng.normal(size=c), rng.normal(size=c))
    return Network(
        [
            Conv2d(rng.normal(size=(c, 1, 3, 3)), rng.normal(size=c) * 0.3, padding=1),
            bn,
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Dense(rng.normal(size=(6, c * 4)) / np.sqrt(c * 4), rng.normal(size=6) * 0.3),
            ReLU(),
            Dense(rng.normal(size=(3, 6)), rng.normal(size=3)),
        ],
        input_shape=(1, 4, 4),
    )


def residual_graph(rng, h):
    """``relu(W3 relu(W2 h) + h)`` with ``h = relu(W1 x)``, then a dense output."""
    layers = [
        Dense(rng.normal(size=(4, 3)), rng.normal(size=4) * 0.3),
        ReLU(),
        Dense(rng.normal(size=(h, 4)) / 2, rng.normal(size=h) * 0.3),
        ReLU(),
        Dense(rng.normal(size=(4, h)) / np.sqrt(h), rng.normal(size=4) * 0.3),
        Add(),
        ReLU(),
        Dense(rng.normal(size=(2, 4)), rng.normal(size=2)),
    ]
    inputs = [(-1,), (0,), (1,), (2,), (3,), (4, 1), (5,), (6,)]
    return Network(layers, input_shape=(3,), inputs=inputs)


def concat_graph(rng, c):
    """Two convolutions whose outputs are joined, average-pooled and read by a dense layer."""
    layers = [
        Conv2d(rng.normal(size=(c, 1, 3, 3)), rng.normal(size=c) * 0.3, padding=1),
        ReLU(),
        Conv2d(rng.normal(size=(3, c, 3, 3)) / np.sqrt(9 * c), rng.normal(size=3) * 0.3, padding=1),
        ReLU(),
        Concat(),
        AvgPool2d(2, padding=1, count_include_pad=False),
        Flatten("channels_last"),
        Dense(rng.normal(size=(2, (c + 3) * 9)) / 3, rng.normal(size=2)),
    ]
    inputs = [(-1,), (0,), (1,), (2,), (1, 3), (4,), (5,), (6,)]
    return Network(layers, input_shape=(1, 4, 4), inputs=inputs)


def worst_found(f: Network, g: Network, x: np.ndarray, eps: float, seed: int, steps: int = 10) -> np.ndarray:
    """The largest ``|f_i − g_i|`` per sample and output found by random points of the ball
    (corners among them) and projected gradient ascent on ``±(f_i − g_i)`` from them."""
    tf, tg = to_torch(f, dtype=torch.float64), to_torch(g, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    n, k = x.shape[0], int(f(x[:1]).shape[1])
    best = np.abs(f(x) - g(x))
    # every (sample, output, sign) is one ascent, started from a random corner
    reps = np.repeat(x, 2 * k, axis=0)
    out = np.tile(np.arange(2 * k) % k, n)
    sign = np.tile(np.where(np.arange(2 * k) < k, 1.0, -1.0), n)
    corner = eps * rng.choice([-1.0, 1.0], size=reps.shape)
    X = torch.tensor(reps)
    delta = torch.tensor(corner, requires_grad=True)
    rows = torch.arange(len(out))
    for _ in range(steps):
        with torch.enable_grad():  # another test may have left autograd off
            diff = tf(X + delta) - tg(X + delta)
            obj = (torch.tensor(sign) * diff[rows, torch.tensor(out)]).sum()
            (grad,) = torch.autograd.grad(obj, delta)
        err = torch.abs(diff).detach().numpy().reshape(n, 2 * k, k).max(axis=1)
        best = np.maximum(best, err)
        delta = torch.clamp(delta.detach() + eps / 4 * torch.sign(grad), -eps, eps).requires_grad_(True)
    xs = np.repeat(x, 64, axis=0) + rng.uniform(-eps, eps, size=(64 * n, *x.shape[1:]))
    sampled = np.abs(f(xs) - g(xs)).reshape(n, 64, k).max(axis=1)
    return np.maximum(best, sampled)


def _check(net: Network, seed: int, eps: float, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed + 1)
    small = compress_network(net, 0.5, seed=seed, progress=False)[0]
    x = rng.uniform(-1, 1, size=(3, *shape))
    B = certify(net, small, x, eps)
    zono = certify(net, small, x, eps, refine=0, generators=2)  # the zonotope, some generators boxed
    full = certify(net, small, x, eps, refine=0, generators=10**6)  # every new term its own generator
    found = worst_found(net, small, x, eps, seed)
    assert np.all(found <= B), (found, B)
    assert np.all(found <= zono), (found, zono)
    assert np.all(found <= full), (found, full)
    exact, at_zero = np.abs(net(x) - small(x)), certify(net, small, x, 0.0)
    assert np.all(at_zero >= exact)  # the rounding margin (1e-9 of the outputs' size) is added
    np.testing.assert_allclose(at_zero, exact, rtol=1e-8, atol=1e-8 * (1 + np.abs(net(x)).max()))


common = dict(seed=st.integers(0, 10_000), eps=st.sampled_from([0.0, 1e-3, 0.02, 0.1, 0.5]))


@settings(max_examples=12, deadline=None)
@given(h1=st.integers(2, 8), h2=st.integers(2, 6), **common)
def test_dense_chain_bound_holds(h1, h2, seed, eps):
    _check(dense_chain(np.random.default_rng(seed), 3, h1, h2, 2), seed, eps, (3,))


@settings(max_examples=4, deadline=None)
@given(c=st.integers(2, 5), **common)
def test_conv_chain_with_batchnorm_and_maxpool_holds(c, seed, eps):
    _check(conv_chain(np.random.default_rng(seed), c), seed, eps, (1, 4, 4))


@settings(max_examples=8, deadline=None)
@given(h=st.integers(2, 8), **common)
def test_residual_graph_bound_holds(h, seed, eps):
    _check(residual_graph(np.random.default_rng(seed), h), seed, eps, (3,))


@settings(max_examples=4, deadline=None)
@given(c=st.integers(2, 5), **common)
def test_concat_graph_with_avgpool_holds(c, seed, eps):
    _check(concat_graph(np.random.default_rng(seed), c), seed, eps, (1, 4, 4))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_equals_the_exact_maximum_where_the_ball_is_one_linear_region(seed):
    """Where no ReLU changes sign in the ball, both networks are affine there and the exact
    maximum of ``|f − g|`` is attained at a corner: enumerated, it equals the bound."""
    rng = np.random.default_rng(seed)
    net = dense_chain(rng, 3, 6, 4, 2)
    small = compress_network(net, 0.5, seed=seed, progress=False)[0]
    x, eps = rng.uniform(-1, 1, size=(1, 3)), 1e-6
    corners = x + eps * np.array(list(itertools.product([-1.0, 1.0], repeat=3)))
    exact = np.abs(net(corners) - small(corners)).max(axis=0)
    np.testing.assert_allclose(certify(net, small, x, eps)[0], exact, rtol=1e-7, atol=1e-8)


def test_tighter_than_intervals_and_reduces_to_the_error_at_zero():
    rng = np.random.default_rng(0)
    net = dense_chain(rng, 3, 8, 6, 2)
    small = compress_network(net, 0.5, seed=0, progress=False)[0]
    x = rng.uniform(-1, 1, size=(4, 3))
    loose = certify(net, small, x, 0.1, refine=0, generators=-1)
    tight = certify(net, small, x, 0.1)
    assert np.all(tight <= loose + 1e-12)
    assert np.allclose(certify(net, small, x, 0.0, refine=0, generators=-1), np.abs(net(x) - small(x)), rtol=1e-8)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kernel=st.sampled_from([2, 3]), stride=st.sampled_from([1, 2]), pad=st.booleans())
def test_zonotope_max_pooling_contains_every_point(seed, kernel, stride, pad):
    """The max-pooling step of the zonotope, checked on its own: for random generator values
    (and box values) the pooled point lies in the output zonotope, entry by entry."""
    from tropref.network.local import _Zonotope

    rng = np.random.default_rng(seed)
    layer = MaxPool2d(kernel, stride=stride, padding=1 if pad and kernel == 3 else 0)
    g, shape = 5, (1, 2, 5, 5)
    G = rng.normal(size=(g, *shape[1:])) * rng.uniform(0, 1, size=(g, 1, 1, 1))
    c = rng.normal(size=shape) * rng.choice([0.5, 2.0, 5.0])  # from overlapping entries to a clear winner
    r = rng.uniform(0, 0.2, size=shape)
    spread = np.abs(G).sum(axis=0, keepdims=True) + r
    lo, hi = c - spread, c + spread
    net = Network([layer], input_shape=shape[1:])
    zono = _Zonotope(net, np.zeros(shape), 1.0, 10**6, rows=[g])
    Go, co, ro = zono._node(layer, [(G, c, r)], [(lo, hi)])
    eps = rng.uniform(-1, 1, size=(200, g))
    box = rng.uniform(-1, 1, size=(200, *shape[1:])) * r
    points = np.einsum("sg,g...->s...", eps, G) + c + box
    pooled = net(points)
    # each pooled point is the zonotope at the same ε for the old generators, some values of
    # the new ones and of the box: its distance to the centre part is at most their reach
    old = np.einsum("sg,g...->s...", eps, Go[:g]) + co
    reach = np.abs(Go[g:]).sum(axis=0) + ro
    assert np.all(np.abs(pooled - old) <= reach + 1e-12)


def test_final_softmax_is_bounded_by_half_the_logits_change():
    rng = np.random.default_rng(1)
    net = dense_chain(rng, 3, 6, 4, 3)
    small = compress_network(net, 0.5, seed=0, progress=False)[0]
    soft, soft_small = (Network([*n.layers, Softmax()], input_shape=(3,)) for n in (net, small))
    x = rng.uniform(-1, 1, size=(5, 3))
    B, Bz = certify(soft, soft_small, x, 0.05), certify(net, small, x, 0.05)
    np.testing.assert_allclose(B, np.minimum(Bz.max(axis=1, keepdims=True) / 2, 1.0) * np.ones((1, 3)))
    xs = x + rng.uniform(-0.05, 0.05, size=x.shape)
    assert np.all(np.abs(soft(xs) - soft_small(xs)) <= B)


def test_is_exported_and_checks_its_arguments():
    assert tropref.certify is certify
    net = dense_chain(np.random.default_rng(0), 3, 4, 3, 2)
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="eps"):
        certify(net, net, x, -0.1)
    with pytest.raises(ValueError, match="eps"):
        certify(net, net, x, float("nan"))
    with pytest.raises(ValueError, match="shape"):
        certify(net, net, np.zeros((2, 4)), 0.1)
    with pytest.raises(TypeError, match="compressed"):
        certify(net, object(), x, 0.1)
    other = dense_chain(np.random.default_rng(0), 3, 4, 3, 5)
    with pytest.raises(ValueError, match="outputs differ"):
        certify(net, other, x, 0.1)
    inner = Network([Dense(np.ones((2, 3))), Softmax(), Dense(np.ones((2, 2)))], input_shape=(3,))
    with pytest.raises(ValueError, match="softmax inside"):
        certify(inner, inner, x, 0.1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            certify(net, net, x, 0.1, workers=bad)
        with pytest.raises(ValueError, match="chunk"):
            certify(net, net, x, 0.1, chunk=bad)
    before = x.copy()
    certify(net, net, x, 0.1)
    assert np.array_equal(x, before)


def test_the_bounds_do_not_depend_on_the_workers_or_the_chunks():
    """Chunks bounded side by side in threads give every sample the same bound, to the bit,
    as one chunk after another; other chunks, the same to round-off (a product's sums may
    depend on its batch size)."""
    rng = np.random.default_rng(3)
    net = residual_graph(rng, 5)
    small = compress_network(net, 0.5, seed=0, progress=False)[0]
    x = rng.uniform(-1, 1, size=(7, 3))
    for chunk in (1, 2, 25):
        serial = certify(net, small, x, 0.05, workers=1, chunk=chunk)
        for workers in (2, 3, 8):
            assert np.array_equal(certify(net, small, x, 0.05, workers=workers, chunk=chunk), serial)
        np.testing.assert_allclose(serial, certify(net, small, x, 0.05, workers=1), rtol=1e-12)


def test_strides_dilation_padding_and_pools_are_passed_exactly():
    """At eps = 0 the back-substitution is the chain rule: equality checks every adjoint
    (strided, dilated, asymmetrically padded convolution; padded pools; channels-last
    flatten); above 0 the bound still holds against the search."""
    rng = np.random.default_rng(5)
    net = Network(
        [
            Conv2d(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 0.3, stride=2, padding=(1, 0, 2, 1), dilation=2),
            ReLU(),
            MaxPool2d(3, stride=2, padding=1),
            Conv2d(rng.normal(size=(5, 4, 1, 1)), rng.normal(size=5) * 0.3),
            ReLU(),
            AvgPool2d(2, stride=1, padding=1),
            Flatten("channels_last"),
            Dense(rng.normal(size=(3, 5 * 3 * 3)) / 4, rng.normal(size=3)),
        ],
        input_shape=(2, 9, 9),
    )
    small = compress_network(net, 0.5, seed=0, progress=False)[0]
    x = rng.uniform(-1, 1, size=(3, 2, 9, 9))
    np.testing.assert_allclose(certify(net, small, x, 0.0), np.abs(net(x) - small(x)), rtol=1e-8, atol=1e-7)
    for kw in ({}, {"generators": 4, "refine": 0}):
        assert np.all(worst_found(net, small, x, 0.05, 0) <= certify(net, small, x, 0.05, **kw))


def test_report_says_when_the_network_certificate_is_the_interval_cap():
    from tropref.experiments.data import load_test_subset
    from tropref.experiments.models import keep_rule, load_model

    net = load_model("lenet300")[0]
    x = load_test_subset()[0][:50, None].astype(np.float32) / 255
    rep = compress_network(net, keep_rule(net, 0.5), seed=0, inputs=x, progress=False)[1]
    assert "only the interval cap" in rep.table()
    assert f"{rep.certificate:.4g}" not in rep.table()
    rng = np.random.default_rng(0)
    one = Network([Dense(rng.normal(size=(8, 3)), rng.normal(size=8)), ReLU(), Dense(rng.normal(size=(2, 8)))])
    rep = compress_network(one, 0.5, seed=0, inputs=rng.uniform(-1, 1, size=(20, 3)), progress=False)[1]
    assert "interval cap" not in rep.table()
    assert f"max|Δf| <= {rep.certificate:.4g}" in rep.table()
