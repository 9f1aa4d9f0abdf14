"""Window arithmetic (tropref.network.windows): convolution against a naive reference, pooling."""

from __future__ import annotations

import itertools

import array_api_compat.numpy as xp
import numpy as np
import pytest

from tropref.network import AvgPool2d, Conv2d, Flatten, MaxPool2d
from tropref.network.forward import apply_layer
from tropref.network.windows import avg_pool, channel_view, conv2d, conv_patches, max_pool, out_size

RNG = np.random.default_rng(12345)


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


def test_out_size_counts_the_window_positions():
    """The formula against a count of the positions where a dilated window fits (below 1 when
    the window is wider than the padded input: its callers refuse those)."""
    for size, k, s, p0, p1, d in itertools.product([1, 5, 8], [1, 2, 3], [1, 2, 3], [0, 1], [0, 2], [1, 2]):
        span = d * (k - 1) + 1
        fits = [t for t in range(size + p0 + p1) if t % s == 0 and t + span <= size + p0 + p1]
        if fits:
            assert out_size(size, k, s, p0, p1, d) == len(fits), (size, k, s, p0, p1, d)
        else:
            assert out_size(size, k, s, p0, p1, d) < 1, (size, k, s, p0, p1, d)


def test_conv2d_matches_the_naive_reference():
    W, b, x = RNG.normal(size=(3, 2, 2, 3)), RNG.normal(size=3), RNG.normal(size=(2, 2, 6, 7))
    got = conv2d(xp, x, W, b, (2, 1), (1, 0, 2, 1), (1, 2))
    np.testing.assert_allclose(got, _naive_conv(x, W, b, (2, 1), (1, 0, 2, 1), (1, 2)), atol=1e-12)
    plain = conv2d(xp, x, W, None, (1, 1), (0, 0, 0, 0), (1, 1))
    np.testing.assert_allclose(plain, _naive_conv(x, W, 0.0, (1, 1), (0, 0, 0, 0), (1, 1)), atol=1e-12)
    with pytest.raises(ValueError, match="larger"):
        conv2d(xp, x[:, :, :1], W, b, (1, 1), (0, 0, 0, 0), (1, 1))


def test_max_and_avg_pool_over_their_padding():
    x = RNG.normal(size=(2, 3, 5, 4))
    top = np.pad(x, ((0, 0), (0, 0), (1, 0), (0, 1)), constant_values=-np.inf)
    windows = lambda a: np.stack([a[:, :, r : r + 2, c : c + 2] for r in (0, 2, 4) for c in (0, 2)], axis=-1)
    got = max_pool(xp, x, (2, 2), (2, 2), (1, 0, 0, 1))
    np.testing.assert_array_equal(got.reshape(2, 3, -1), windows(top).max(axis=(2, 3)))
    zero = np.pad(x, ((0, 0), (0, 0), (1, 0), (0, 1)))
    counted = avg_pool(xp, x, (2, 2), (2, 2), (1, 0, 0, 1))
    np.testing.assert_allclose(counted.reshape(2, 3, -1), windows(zero).mean(axis=(2, 3)))
    real = windows(np.pad(np.ones_like(x), ((0, 0), (0, 0), (1, 0), (0, 1)))).sum(axis=(2, 3))
    not_counted = avg_pool(xp, x, (2, 2), (2, 2), (1, 0, 0, 1), count_include_pad=False)
    np.testing.assert_allclose(not_counted.reshape(2, 3, -1), windows(zero).sum(axis=(2, 3)) / real)


def test_channel_view_broadcasts_over_the_channel_axis():
    v, images, vectors = np.array([1.0, 2.0, 3.0]), np.ones((2, 3, 4, 4)), np.ones((2, 3))
    np.testing.assert_array_equal((images * channel_view(xp, v, 4))[:, :, 1, 2], np.tile(v, (2, 1)))
    np.testing.assert_array_equal(vectors * channel_view(xp, v, 2), np.tile(v, (2, 1)))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_transpose_in_blocks_of_rows_is_the_adjoint(monkeypatch, stride):
    """``conv_transpose`` runs a few rows at a time (issue 21's speed-up): with one or two
    rows per block it gives the whole product's result, and ``<conv(x), λ> = <x, convᵀ(λ)>``
    row by row. At stride 1 (one product over every tap) it is the tap-by-tap sum to
    round-off."""
    from tropref.network import windows

    rng = np.random.default_rng(7)
    layer = Conv2d(rng.normal(size=(4, 3, 3, 3)), stride=stride, padding=1)
    lam, whole = _adjoint_checked(rng, layer, (5, 3, 9, 9))
    for rows in (1, 2):
        monkeypatch.setattr(windows, "_CACHE", rows * 11 * 11 * 4)
        monkeypatch.setattr(windows, "_PATCHES", rows * 9 * 4 * 9 * 9)
        assert np.array_equal(windows.conv_transpose(lam, layer, (9, 9)), whole)


@pytest.mark.parametrize(
    ("kernel", "padding", "dilation"),
    [(3, (0, 2, 1, 0), 1), (3, 2, 2), (3, (1, 1, 2, 2), (1, 2)), (2, (1, 0, 0, 1), 1), (3, (3, 0, 0, 0), 1)],
)
def test_conv_transpose_at_stride_one_is_the_adjoint(kernel, padding, dilation):
    """The product over every tap (stride 1) for uneven padding and a dilation along the
    columns, and the tap-by-tap path it leaves to for a dilation along the rows or padding
    past the kernel's reach."""

    rng = np.random.default_rng(3)
    layer = Conv2d(rng.normal(size=(3, 2, kernel, kernel)), padding=padding, dilation=dilation)
    _adjoint_checked(rng, layer, (4, 2, 8, 8))


def _adjoint_checked(rng, layer, shape):
    """``(λ, convᵀ(λ))`` for random ``x`` of ``shape`` and ``λ``, after checking
    ``<conv(x), λ> = <x, convᵀ(λ)>`` per row and that it is the tap-by-tap sum to round-off."""
    from tropref.network import windows

    x = rng.normal(size=shape)
    y = windows.conv_rows(x, layer)
    lam = rng.normal(size=y.shape)
    back = windows.conv_transpose(lam, layer, shape[2:])
    np.testing.assert_allclose(np.sum(y * lam, axis=(1, 2, 3)), np.sum(x * back, axis=(1, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(back, windows._conv_transpose_taps(lam, layer, shape[2:]), rtol=1e-13, atol=1e-13)
    return lam, back


@pytest.mark.parametrize(
    ("stride", "padding", "dilation"),
    [(1, 1, 1), (2, 1, 1), (2, (0, 2, 1, 0), 1), (1, 2, 2), ((1, 2), (1, 0, 0, 1), 1)],
)
def test_conv_host_is_conv2d_in_blocks_of_samples(monkeypatch, stride, padding, dilation):
    """The host convolution of the certificates' interval steps is :func:`conv2d` to
    round-off, and the same with one sample per block."""
    from tropref.network import windows

    rng = np.random.default_rng(11)
    layer = Conv2d(rng.normal(size=(4, 3, 3, 3)), stride=stride, padding=padding, dilation=dilation)
    x = rng.normal(size=(5, 3, 9, 8))
    want = conv2d(xp, x, layer.W, None, layer.stride, layer.padding, layer.dilation)
    got = windows.conv_host(x, layer.W, layer)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    monkeypatch.setattr(windows, "_PATCHES", 1)
    assert np.array_equal(windows.conv_host(x, layer.W, layer), got)
