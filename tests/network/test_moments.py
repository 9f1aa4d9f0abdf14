"""The pre-activation correlations propagated without data (tropref.network.moments;
docs/refit.md): the window arithmetic exact, the model against sampled networks, the refit
reading it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from tropref import compress_network
from tropref.network import Add, BatchNorm, Conv2d, Network, ReLU, analyse
from tropref.network import moments as M
from tropref.network.forward import node_outputs
from tropref.statistics import weight_correlation


def _direct_conv_covariance(K0, W, pad, stride, delta):
    """Cov(y(p), y(p + δ)) for y = conv(x), x stationary with window K0: the double sum over
    taps, written out (the independent computation)."""
    r0 = K0.shape[-1] // 2
    o, _c, kh, kw = W.shape
    out = np.zeros((o, o))
    for i in range(kh):
        for j in range(kw):
            for a in range(kh):
                for b in range(kw):
                    # x(s p + t - pad) against x(s (p + δ) + t' - pad)
                    dy, dx = stride * delta[0] + a - i, stride * delta[1] + b - j
                    if abs(dy) <= r0 and abs(dx) <= r0:
                        out += W[:, :, i, j] @ K0[:, :, r0 + dy, r0 + dx] @ W[:, :, a, b].T
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_maps_the_window_exactly(stride):
    rng = np.random.default_rng(0)
    c, r0 = 3, 9
    y, x = np.meshgrid(np.arange(-r0, r0 + 1), np.arange(-r0, r0 + 1), indexing="ij")
    L = rng.normal(size=(c, c))
    K0 = (L @ L.T)[:, :, None, None] * (0.7 ** np.hypot(y, x))[None, None]
    W = rng.normal(size=(4, c, 3, 3))
    first = M._conv_first(K0, W, (1, 1), (1, 1))
    K = M._subsample(M._transpose(M._conv_first(M._transpose(first), W, (1, 1), (1, 1))), (stride, stride))
    r = K.shape[-1] // 2
    for delta in [(0, 0), (1, 0), (0, -2), (1, 1)]:
        expected = _direct_conv_covariance(K0, W, 1, stride, delta)
        np.testing.assert_allclose(K[:, :, r + delta[0], r + delta[1]], expected, rtol=1e-12, atol=1e-12)


def _calibrated_residual_net(seed=0, n=96, size=20):
    """conv-bn-relu [fork] -> conv-bn-relu-conv-bn + identity -> relu [fork] -> stride-2
    conv-bn-relu-conv-bn + 1x1 stride-2 conv-bn shortcut -> relu -> conv: every BatchNorm's
    statistics set to what it sees on white-noise images, and those images."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, size, size))

    def conv(o, c, k=3, s=1):
        return Conv2d(rng.normal(size=(o, c, k, k)) / np.sqrt(c * k * k), rng.normal(size=o) * 0.3, s, k // 2)

    layers = [conv(6, 3), None, ReLU(), conv(8, 6), None, ReLU(), conv(6, 8), None, Add(), ReLU()]
    layers += [conv(8, 6, s=2), None, ReLU(), conv(8, 8), None, conv(8, 6, k=1, s=2), None, Add(), ReLU(), conv(4, 8)]
    inputs = [(-1,), (0,), (1,), (2,), (3,), (4,), (5,), (6,), (7, 2), (8,)]
    inputs += [(9,), (10,), (11,), (12,), (13,), (9,), (15,), (14, 16), (17,), (18,)]
    for g, layer in enumerate(layers):  # every BatchNorm follows its convolution
        if layer is None:
            c = layers[g - 1].W.shape[0]
            layers[g] = BatchNorm(np.zeros(c), np.ones(c))
    for g, layer in enumerate(layers):  # each fitted to what it reads, in order
        if isinstance(layer, BatchNorm):
            z = np.asarray(node_outputs(Network(layers, (3, size, size), inputs), x, keep=[g - 1])[g - 1])
            c = z.shape[1]
            layers[g] = BatchNorm(z.mean((0, 2, 3)), z.var((0, 2, 3)), rng.uniform(0.5, 2, c), rng.normal(size=c))
    return Network(layers, (3, size, size), inputs), x


def test_propagated_correlations_match_sampled_networks():
    """Against the correlations measured on the images, the model is close everywhere and
    closer than the weights' cosines (what the refit takes without it)."""
    net, x = _calibrated_residual_net()
    structure = analyse(net)
    rho = M.propagated_correlations(structure)
    assert sorted(rho) == [0, 2, 4, 7, 9, 10]  # every convolution with a BatchNorm (work graph)
    values = node_outputs(structure.work, x, keep=list(rho))
    errors, cosine_errors = [], []
    for g, R in rho.items():
        z = np.asarray(values[g]).transpose(1, 0, 2, 3).reshape(len(R), -1)
        measured = np.corrcoef(z)
        np.testing.assert_allclose(R, R.T)
        np.testing.assert_allclose(np.diag(R), 1.0)
        off = ~np.eye(len(R), dtype=bool)
        errors.append(np.abs(R - measured)[off].max())
        W = np.asarray(structure.work.layers[g].W).reshape(len(R), -1)
        cosine_errors.append(np.abs(weight_correlation(np.column_stack([W, np.zeros(len(W))])) - measured)[off].max())
    # measured: largest 0.02-0.23 per layer (mean 0.12) against the cosines' 0.01-0.43 (mean 0.25)
    assert max(errors) < 0.3, errors
    assert np.mean(errors) < 0.6 * np.mean(cosine_errors), (errors, cosine_errors)


def test_no_model_without_a_first_convolution_with_statistics():
    rng = np.random.default_rng(1)
    net = Network([Conv2d(rng.normal(size=(4, 3, 3, 3))), ReLU(), Conv2d(rng.normal(size=(2, 4, 3, 3)))])
    assert M.propagated_correlations(analyse(net, (3, 8, 8))) == {}


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_radius_or_budget_is_refused_by_name(bad):
    net, _ = _calibrated_residual_net(n=2, size=8)
    for name in ("radius", "budget"):
        with pytest.raises(ValueError, match=f"`{name}`"):
            M.propagated_correlations(analyse(net), **{name: bad})


def test_a_small_budget_keeps_a_smaller_window_and_still_a_correlation():
    net, _ = _calibrated_residual_net(n=2, size=8)
    rho = M.propagated_correlations(analyse(net), budget=64)
    assert len(rho) == 6
    assert all(np.all(np.abs(R) <= 1) for R in rho.values())


def test_a_layer_wider_than_the_budget_ends_the_walk():
    """6 channels fit a budget of 40 entries at one offset, 8 do not: the walk keeps the first
    layer's correlation and stops at the first 8-channel layer (time and memory bounded)."""
    net, _ = _calibrated_residual_net(n=2, size=8)
    assert sorted(M.propagated_correlations(analyse(net), budget=40)) == [0]


def test_network_refit_reads_the_propagated_correlation_by_default():
    """The branch refits use the propagated ρ by default (``refit_correlation="auto"``, and
    say so); ``"cosine"`` gives the cosine refit back, and the certificate bounds the result."""
    net, x = _calibrated_residual_net(n=24, size=10)
    auto, report = compress_network(net, 0.5, seed=0, inputs=x[:8])
    explicit, _ = compress_network(net, 0.5, seed=0, certify=False, refit_correlation="auto")
    cosine, cosine_report = compress_network(net, 0.5, seed=0, certify=False, refit_correlation="cosine")
    used = {(l.info or {}).get("correction", {}).get("refit_correlation") for l in report.layers}
    assert "propagated" in used
    assert {(l.info or {}).get("correction", {}).get("refit_correlation") for l in cosine_report.layers} <= {
        "cosine",
        None,
    }
    for a, b in zip(auto.layers, explicit.layers, strict=True):
        for name in ("W", "b"):
            if getattr(a, name, None) is not None:
                np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
    assert any(
        not np.array_equal(np.asarray(a.W), np.asarray(b.W))
        for a, b in zip(auto.layers, cosine.layers, strict=True)
        if isinstance(a, Conv2d)
    )
    err = np.abs(np.asarray(auto(x[:8])) - np.asarray(net(x[:8]))).reshape(8, -1)
    assert np.all(err <= np.asarray(report.certificate_per_output).reshape(1, -1) * (1 + 1e-9) + 1e-9)


def test_relu_window_is_the_closed_form_on_the_symmetric_part():
    """The ReLU's window evaluates the closed form on one entry of each mirrored pair
    ``(a, b, δ)``, ``(b, a, −δ)`` (issue 19): every entry equals the elementwise closed form
    on the window's symmetric part ``(K(δ) + K(−δ)ᵀ)/2`` to round-off, and the result is
    exactly symmetric."""
    from tropref.statistics import relu_mean, relu_product_mean

    rng = np.random.default_rng(3)
    c, r = 5, 2
    y, x = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    L = rng.normal(size=(c, c))
    K = (L @ L.T)[:, :, None, None] * (0.6 ** np.hypot(y, x))[None, None]
    K = K + 0.05 * rng.normal(size=K.shape) * (np.hypot(y, x) > 0)  # an edge that is not symmetric
    m = rng.normal(size=c)
    mean, window, slope = M._relu(m, K)
    np.testing.assert_array_equal(slope, ndtr(m / np.sqrt(np.diagonal(K[:, :, r, r]))))
    sym = 0.5 * (K + np.transpose(K, (1, 0, 2, 3))[:, :, ::-1, ::-1])
    sd = np.sqrt(np.diagonal(K[:, :, r, r]))
    rho = np.clip(sym / sd[:, None, None, None] / sd[None, :, None, None], -1, 1)
    Ea = relu_mean(m, sd)
    want = (
        relu_product_mean(
            m[:, None, None, None], sd[:, None, None, None], m[None, :, None, None], sd[None, :, None, None], rho
        )
        - Ea[:, None, None, None] * Ea[None, :, None, None]
    )
    np.testing.assert_allclose(window, want, rtol=1e-12, atol=1e-14)
    assert np.array_equal(window, np.transpose(window, (1, 0, 2, 3))[:, :, ::-1, ::-1])
    np.testing.assert_array_equal(mean, Ea)


@pytest.mark.parametrize(("stride", "radius", "kernel"), [(1, 2, 3), (2, 3, 3), (2, 1, 7), (3, 0, 1)])
def test_convolution_at_the_output_offsets_is_the_full_window_subsampled(stride, radius, kernel):
    """``_conv_first`` computes only the offsets ``stride · k``, ``|k| <= radius``, with the
    taps as one stacked product (issue 19): the full window's product then subsampled and
    cropped, tap by tap and written out, to round-off (a depthwise window too)."""
    rng = np.random.default_rng(5)
    c, R = 3, 6
    C = rng.normal(size=(c, 4, 2 * R + 1, 2 * R + 1))
    W = rng.normal(size=(5, c, kernel, kernel))
    pad = (kernel // 2, kernel // 2)
    full = np.zeros((5, 4, 2 * R + 1, 2 * R + 1))
    for i in range(kernel):
        for j in range(kernel):
            dy, dx = i - pad[0], j - pad[1]
            for y in range(2 * R + 1):
                for x in range(2 * R + 1):
                    if 0 <= y - dy <= 2 * R and 0 <= x - dx <= 2 * R:
                        full[:, :, y, x] += W[:, :, i, j] @ C[:, :, y - dy, x - dx]
    want = M._crop(M._subsample(full, (stride, stride)), radius)
    got = M._conv_first(C, W, (1, 1), pad, radius, (stride, stride))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(M._conv_first(C, W, (1, 1), pad), full, rtol=1e-12, atol=1e-12)
    pool = np.full((kernel, kernel), 1.0 / kernel**2)
    want_pool = sum(
        pool[i, j]
        * np.roll(np.pad(C, ((0, 0), (0, 0), (kernel, kernel), (kernel, kernel))), (i - pad[0], j - pad[1]), (2, 3))
        for i in range(kernel)
        for j in range(kernel)
    )[..., kernel:-kernel, kernel:-kernel]
    np.testing.assert_allclose(M._conv_first(C, pool, (1, 1), pad), want_pool, rtol=1e-12, atol=1e-12)


def test_convolution_in_chunks_of_taps_is_the_same(monkeypatch):
    """Stacking the shifted windows a few taps at a time (memory bounded by ``_STACK``) gives
    the one-product result to round-off."""
    rng = np.random.default_rng(6)
    C, W = rng.normal(size=(4, 4, 9, 9)), rng.normal(size=(6, 4, 3, 3))
    whole = M._conv_first(C, W, (2, 2), (1, 1), 2, (2, 2))
    monkeypatch.setattr(M, "_STACK", 4 * 4 * 25 * 2)  # two taps per product
    np.testing.assert_allclose(M._conv_first(C, W, (2, 2), (1, 1), 2, (2, 2)), whole, rtol=1e-12, atol=1e-12)
