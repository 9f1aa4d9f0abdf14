"""Sliding windows on the array API: the output-size formula, padding, convolution, pooling.

The arithmetic that the layer kinds (:mod:`tropref.network.kinds`) are built from, below
them so that every kind can use it: :func:`out_size` is the one output-size formula of a
convolution or pooling window (the forward pass, shape inference and patch sampling all use
it); :func:`conv2d` is one im2col matrix product (see :mod:`tropref.network.forward`);
:func:`max_pool` and :func:`avg_pool` reduce the shifted windows; :func:`conv_patches`
gathers a convolution's input patches. The local certificate's steps (NumPy ``float64`` host
arrays) use :func:`conv_rows` and :func:`conv_transpose` (a convolution of many rows, and its
adjoint), :func:`conv_host` (a convolution of host images in cache-sized blocks, for the
interval steps), :func:`pool_stack` and :func:`pool_scatter` (a pooling's windows stacked,
and parts added back onto its input).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._array import Array, device, namespace

if TYPE_CHECKING:
    from .layers import Conv2d, MaxPool2d

__all__ = [
    "out_size",
    "conv2d",
    "max_pool",
    "avg_pool",
    "channel_view",
    "conv_patches",
    "conv_rows",
    "conv_host",
    "conv_transpose",
    "pool_stack",
    "pool_scatter",
]


def out_size(size: int, k: int, s: int, p0: int = 0, p1: int = 0, d: int = 1) -> int:
    """Output length of a window ``k`` (stride ``s``, dilation ``d``) sliding over ``size``
    inputs padded by ``p0`` before and ``p1`` after: ``⌊(size + p0 + p1 − d (k − 1) − 1) / s⌋ + 1``.

    Examples
    --------
    >>> out_size(28, 5, 1), out_size(28, 3, 2, 1, 1), out_size(7, 3, 1, d=2)
    (24, 14, 3)
    """
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def _pad(xp: Any, x: Array, pads: tuple[int, int, int, int], value: float) -> Array:
    """Pad the two spatial axes of ``(N, C, H, W)`` with a constant (the standard has no pad)."""
    top, bottom, left, right = pads
    N, C, _H, W = x.shape
    kw = dict(dtype=x.dtype, device=device(x))
    if top or bottom:
        parts = [xp.full((N, C, top, W), value, **kw)] if top else []
        parts += [x] + ([xp.full((N, C, bottom, W), value, **kw)] if bottom else [])
        x = xp.concat(parts, axis=2)
    if left or right:
        Hp = x.shape[2]
        parts = [xp.full((N, C, Hp, left), value, **kw)] if left else []
        parts += [x] + ([xp.full((N, C, Hp, right), value, **kw)] if right else [])
        x = xp.concat(parts, axis=3)
    return x


def _windows(
    x: Array, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> Iterator[tuple[int, int, Array]]:
    """Yield ``(i, j, x[:, :, window positions shifted by kernel offset (i, j)])``, each
    of shape ``(N, C, Ho, Wo)``, for an already padded ``x``."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    Ho, Wo = out_size(int(x.shape[2]), kh, sh, d=dh), out_size(int(x.shape[3]), kw, sw, d=dw)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"the window {kernel} (dilation {dilation}) is larger than the padded input {tuple(x.shape[2:])}"
        )
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, :, i * dh : i * dh + sh * (Ho - 1) + 1 : sh, j * dw : j * dw + sw * (Wo - 1) + 1 : sw]


_IM2COL_BYTES = 1 << 25  # largest patch matrix built at once by the convolution (32 MiB)


def conv2d(xp: Any, x: Array, W: Array, b: Array | None, stride: Any, padding: Any, dilation: Any) -> Array:
    """``(N, C, H, W)`` images convolved with ``OIHW`` kernels ``W`` (zero padding
    ``(top, bottom, left, right)``, pairs ``stride`` and ``dilation``), as one im2col GEMM.

    The cross-correlation ``y[n, o, r, c] = b[o] + Σ_{ch, i, j} W[o, ch, i, j]
    x̂[n, ch, s_h r + d_h i, s_w c + d_w j]`` on the zero-padded input ``x̂``; the output
    size per axis is :func:`out_size`.

    Parameters
    ----------
    xp : namespace
        The array-API namespace of ``x`` and ``W``.
    x : array, shape (N, C, H, W)
    W : array, shape (O, C, kh, kw)
    b : array, shape (O,), or None
    stride, dilation : pair of int
    padding : four ints
        ``(top, bottom, left, right)``.

    Returns
    -------
    array, shape (N, O, Ho, Wo)

    Raises
    ------
    ValueError
        When the (dilated) window is larger than the padded input.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> x, W = np.arange(9.0).reshape(1, 1, 3, 3), np.arange(4.0).reshape(1, 1, 2, 2)
    >>> conv2d(xp, x, W, None, (1, 1), (0, 0, 0, 0), (1, 1))[0, 0]  # 0*0 + 1*1 + 2*3 + 3*4 = 19
    array([[19., 25.],
           [37., 43.]])
    >>> conv2d(xp, x, W, np.array([1.0]), (2, 2), (1, 1, 1, 1), (1, 1))[0, 0]  # padded, stride 2, bias 1
    array([[ 1.,  9.],
           [22., 44.]])
    >>> conv2d(xp, x, W, None, (1, 1), (0, 0, 0, 0), (2, 2))[0, 0]  # dilation 2 reads the corners
    array([[38.]])
    """
    O, C, kh, kw = (int(s) for s in W.shape)
    N, H, Wd = int(x.shape[0]), int(x.shape[2]), int(x.shape[3])
    t, btm, l, r = padding
    (sh, sw), (dh, dw) = stride, dilation
    Ho, Wo = out_size(H, kh, sh, t, btm, dh), out_size(Wd, kw, sw, l, r, dw)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"the window {(kh, kw)} (dilation {dilation}) is larger than the padded input {(H + t + btm, Wd + l + r)}"
        )
    sub = max(1, _IM2COL_BYTES // max(1, C * kh * kw * Ho * Wo * 8))  # samples per patch matrix
    if N > sub:
        return xp.concat(
            [conv2d(xp, x[s : min(s + sub, N), ...], W, b, stride, padding, dilation) for s in range(0, N, sub)], axis=0
        )
    # channels last, so that the patch matrix is built contiguous and read by one GEMM as is
    xh = _pad_nhwc(xp, xp.permute_dims(x, (0, 2, 3, 1)), padding)
    windows = [
        xh[:, i * dh : i * dh + sh * (Ho - 1) + 1 : sh, j * dw : j * dw + sw * (Wo - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    cols = xp.reshape(xp.stack(windows, axis=-1), (N * Ho * Wo, C * kh * kw))  # rows (n, r, c), columns (c, i, j)
    # the weights are read through a transposed view, never copied
    out = xp.matmul(cols, xp.permute_dims(xp.reshape(W, (O, C * kh * kw)), (1, 0)))
    out = xp.permute_dims(xp.reshape(out, (N, Ho, Wo, O)), (0, 3, 1, 2))
    if b is not None:
        out = out + xp.reshape(b, (1, -1, 1, 1))
    return out


def _pad_nhwc(xp: Any, x: Array, pads: tuple[int, int, int, int]) -> Array:
    """Zero-pad the two spatial axes of ``(N, H, W, C)``."""
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    N, H, W, C = (int(s) for s in x.shape)
    kw = dict(dtype=x.dtype, device=device(x))
    x = xp.concat([xp.zeros((N, top, W, C), **kw), x, xp.zeros((N, bottom, W, C), **kw)], axis=1)
    return xp.concat(
        [xp.zeros((N, H + top + bottom, left, C), **kw), x, xp.zeros((N, H + top + bottom, right, C), **kw)], axis=2
    )


def max_pool(xp: Any, x: Array, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, ...]) -> Array:
    """Max pooling of ``(N, C, H, W)`` per channel; padded positions hold ``-inf`` (never selected).

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> max_pool(xp, np.arange(16.0).reshape(1, 1, 4, 4), (2, 2), (2, 2), (0, 0, 0, 0))[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    out = None
    for _, _, xs in _windows(_pad(xp, x, padding, -math.inf), kernel, stride, (1, 1)):
        out = xs if out is None else xp.maximum(out, xs)
    return out


def avg_pool(
    xp: Any,
    x: Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, ...],
    count_include_pad: bool = True,
) -> Array:
    """Average pooling of ``(N, C, H, W)`` per channel over zero padding, the padding counted
    in the divisor when ``count_include_pad`` and not counted otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> x = np.ones((1, 1, 2, 2))
    >>> avg_pool(xp, x, (2, 2), (2, 2), (1, 1, 1, 1))[0, 0]  # each corner window holds one 1
    array([[0.25, 0.25],
           [0.25, 0.25]])
    >>> avg_pool(xp, x, (2, 2), (2, 2), (1, 1, 1, 1), count_include_pad=False)[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    total = None
    for _, _, xs in _windows(_pad(xp, x, padding, 0.0), kernel, stride, (1, 1)):
        total = xs if total is None else total + xs
    if count_include_pad or not any(p > 0 for p in padding):
        return total / float(kernel[0] * kernel[1])
    ones = xp.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype, device=device(x))
    count = None
    for _, _, xs in _windows(_pad(xp, ones, padding, 0.0), kernel, stride, (1, 1)):
        count = xs if count is None else count + xs
    return total / count


def channel_view(xp: Any, v: Array, ndim: int) -> Array:
    """A per-channel vector shaped to broadcast over a batch of ``ndim`` axes.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> channel_view(xp, np.arange(3.0), 4).shape, channel_view(xp, np.arange(3.0), 2).shape
    ((1, 3, 1, 1), (1, 3))
    """
    return xp.reshape(v, (1, -1, 1, 1)) if ndim == 4 else xp.reshape(v, (1, -1))


def conv_patches(layer: Conv2d, x: Array, index: Sequence[int] | np.ndarray | None = None) -> Array:
    """Input patches of a convolution, ``(N Ho Wo, C, kh, kw)``, in the order the outputs
    are produced (sample, row, column): ``layer(x)[n, :, r, c] = W . patch + b``.

    ``index`` (host integers into that order) keeps only those patches, gathered one kernel
    offset at a time so that the full patch matrix is never built.

    Patch ``(n Ho + r) Wo + c`` is the zero-padded input window that output position
    ``(r, c)`` of sample ``n`` reads (stride and dilation applied). These are the inputs of
    a convolution as :func:`tropref.compress_layer` reads them (``data`` of data-driven
    methods, and the ``‖(patch, 1)‖`` of its certificate).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Conv2d
    >>> from tropref.network.forward import apply_layer
    >>> rng = np.random.default_rng(0)
    >>> layer = Conv2d(rng.normal(size=(3, 2, 2, 2)), np.array([0.1, 0.2, 0.3]), stride=2, padding=1)
    >>> x = rng.normal(size=(2, 2, 5, 5))
    >>> y, P = apply_layer(layer, x), conv_patches(layer, x)
    >>> y.shape, P.shape  # 2 samples of 3 x 3 positions: 18 patches
    ((2, 3, 3, 3), (18, 2, 2, 2))
    >>> n, r, c = 1, 2, 0
    >>> patch = P[(n * 3 + r) * 3 + c]
    >>> bool(np.allclose(np.tensordot(layer.W, patch, axes=3) + layer.b, y[n, :, r, c]))
    True
    >>> bool(np.allclose(conv_patches(layer, x, index=[(n * 3 + r) * 3 + c])[0], patch))
    True
    """
    xp = namespace(x=x)
    kh, kw = int(layer.W.shape[2]), int(layer.W.shape[3])
    idx = None if index is None else xp.asarray(np.asarray(index, dtype=np.int64), device=device(x))
    cols = []
    for _, _, xs in _windows(_pad(xp, x, layer.padding, 0.0), (kh, kw), layer.stride, layer.dilation):
        N, C, Ho, Wo = xs.shape
        flat = xp.reshape(xp.permute_dims(xs, (0, 2, 3, 1)), (N * Ho * Wo, C))
        cols.append(flat if idx is None else xp.take(flat, idx, axis=0))
    p = xp.stack(cols, axis=-1)  # (P, C, kh*kw)
    return xp.reshape(p, (int(p.shape[0]), int(p.shape[1]), kh, kw))


def _offsets(layer: Conv2d, Ho: int, Wo: int) -> Iterator[tuple[int, int, slice, slice]]:
    """Per kernel offset ``(i, j)``: the rows and columns of the padded input it reads for
    an ``Ho x Wo`` output (stride and dilation applied)."""
    (sh, sw), (dh, dw) = layer.stride, layer.dilation
    for i in range(int(layer.W.shape[2])):
        for j in range(int(layer.W.shape[3])):
            yield i, j, slice(i * dh, i * dh + sh * (Ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (Wo - 1) + 1, sw)


def conv_rows(a: np.ndarray, layer: Conv2d) -> np.ndarray:
    """The convolution (without bias) of many rows ``(M, C, H, W)`` (a zonotope's
    generators): one GEMM over the channels per kernel offset, channels last, which for
    thousands of rows is about twice as fast as building their patch matrices (NumPy).

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.network import Conv2d
    >>> rng = np.random.default_rng(0)
    >>> layer = Conv2d(rng.normal(size=(3, 2, 3, 3)), stride=2, padding=1)
    >>> a = rng.normal(size=(4, 2, 5, 5))
    >>> bool(np.allclose(conv_rows(a, layer), conv2d(xp, a, layer.W, None, layer.stride, layer.padding, (1, 1))))
    True
    """
    W = np.asarray(layer.W)
    O, C = W.shape[:2]
    t, b, l, r = layer.padding
    M, _, H, Wd = a.shape
    Ho, Wo = _out_hw(layer, H, Wd)
    padded = np.zeros((M, H + t + b, Wd + l + r, C))
    padded[:, t : t + H, l : l + Wd] = a.transpose(0, 2, 3, 1)
    out = np.zeros((M, Ho, Wo, O))
    for i, j, rows, cols in _offsets(layer, Ho, Wo):
        out += padded[:, rows, cols] @ W[:, :, i, j].T
    return out.transpose(0, 3, 1, 2)


def conv_host(x: np.ndarray, W: np.ndarray, layer: Conv2d) -> np.ndarray:
    """The convolution (without bias) of NumPy host images ``(N, C, H, W)`` by kernels ``W``
    of ``layer``'s shape, with its stride, padding and dilation: per output row, one product
    of the weights ``(O, (C, kh, kw))`` with the row's patches ``((C, kh, kw), Wo)``, a few
    samples at a time (``_PATCHES``, in cache). :func:`conv2d`'s sums in other blocks: the
    same to round-off, and on 16 channels of 28 x 28 about 2.5 times as fast for 25 images
    (its patch matrix of every image leaves the cache).

    Examples
    --------
    A dilated convolution, against the per-offset sums of :func:`conv_rows`:

    >>> import numpy as np
    >>> from tropref.network import Conv2d
    >>> rng = np.random.default_rng(0)
    >>> layer = Conv2d(rng.normal(size=(4, 3, 3, 3)), padding=2, dilation=2)
    >>> x = rng.normal(size=(2, 3, 6, 7))
    >>> bool(np.allclose(conv_host(x, layer.W, layer), conv_rows(x, layer)))
    True
    """
    O, C, kh, kw = (int(d) for d in W.shape)
    t, b, l, r = layer.padding
    N, _, H, Wd = x.shape
    Ho, Wo = _out_hw(layer, H, Wd)
    weights = np.reshape(W, (O, C * kh * kw))
    step = min(N, max(1, _PATCHES // (C * kh * kw * Ho * Wo)))
    padded = np.zeros((step, C, H + t + b, Wd + l + r))  # its borders stay zero
    patches = np.empty((step, Ho, C, kh, kw, Wo))
    out = np.empty((step, Ho, O, Wo))
    result = np.empty((N, O, Ho, Wo))
    for lo in range(0, N, step):
        m = min(step, N - lo)
        padded[:m, :, t : t + H, l : l + Wd] = x[lo : lo + m]
        for i, j, rows, cols in _offsets(layer, Ho, Wo):
            patches[:m, :, :, i, j] = padded[:m, :, rows, cols].transpose(0, 2, 1, 3)
        np.matmul(weights, patches[:m].reshape(m, Ho, C * kh * kw, Wo), out=out[:m])
        result[lo : lo + m] = out[:m].transpose(0, 2, 1, 3)
    return result


def _out_hw(layer: Conv2d, H: int, Wd: int) -> tuple[int, int]:
    """A convolution's output height and width for an ``H x Wd`` input (:func:`out_size`)."""
    t, b, l, r = layer.padding
    kh, kw = int(layer.W.shape[2]), int(layer.W.shape[3])
    return (
        out_size(H, kh, layer.stride[0], t, b, layer.dilation[0]),
        out_size(Wd, kw, layer.stride[1], l, r, layer.dilation[1]),
    )


def conv_transpose(lam: np.ndarray, layer: Conv2d, in_hw: tuple[int, int]) -> np.ndarray:
    """The adjoint of the convolution (without bias) for inputs of size ``in_hw``:
    ``(M, O, Ho, Wo)`` -> ``(M, C, H, W)``, with ``<conv(x), lam> = <x, conv_transpose(lam)>`` (NumPy).

    A convolution of stride 1 (no dilation along the rows, padding at most the kernel's
    reach) has for adjoint a convolution of the zero-padded ``lam`` with the kernel turned
    round, computed per row of the input as one product whose contraction runs over every
    tap and output channel at once (``kh kw O``: 144 on 16 channels, 9 times the per-tap
    contraction of the other path). Strided ones add each tap's product back onto the input
    positions it read.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Conv2d
    >>> rng = np.random.default_rng(0)
    >>> layer = Conv2d(rng.normal(size=(3, 2, 3, 3)), stride=2, padding=1)
    >>> x, lam = rng.normal(size=(1, 2, 5, 5)), rng.normal(size=(1, 3, 3, 3))
    >>> bool(np.isclose(np.sum(conv_rows(x, layer) * lam), np.sum(x * conv_transpose(lam, layer, (5, 5)))))
    True
    >>> layer = Conv2d(rng.normal(size=(3, 2, 3, 3)), padding=1)
    >>> x, lam = rng.normal(size=(1, 2, 5, 5)), rng.normal(size=(1, 3, 5, 5))
    >>> bool(np.isclose(np.sum(conv_rows(x, layer) * lam), np.sum(x * conv_transpose(lam, layer, (5, 5)))))
    True
    """
    W = np.asarray(layer.W)
    kh, kw = int(W.shape[2]), int(W.shape[3])
    t, b, l, r = layer.padding
    dw = layer.dilation[1]
    # the zero rows and columns around lam that the turned kernel reads past its edges
    pads = (kh - 1 - t, kh - 1 - b, (kw - 1) * dw - l, (kw - 1) * dw - r)
    if tuple(layer.stride) != (1, 1) or layer.dilation[0] != 1 or min(pads) < 0:
        return _conv_transpose_taps(lam, layer, in_hw)
    O, C = int(W.shape[0]), int(W.shape[1])
    M, _, Ho, Wo = lam.shape
    H, Wd = in_hw
    pt, _, pl, _ = pads
    K = kh * kw * O
    # input position (y, x) reads the output (y + t − i, x + l − j dw) through tap (i, j): the
    # padded lam's (y + kh − 1 − i, x + (kw − 1 − j) dw). Laid out q[m, row, j, o, x] (the
    # kw column shifts copied), the patches of input row y, ((kh − 1 − i, j, o), x), are the
    # rows y .. y + kh − 1 of q read as one matrix: a view, no copy. The weights multiply
    # each input row's (a product small enough for OpenBLAS to keep on one thread: with two
    # threads on a busy machine, products of whole blocks took 30 to 130 times as long)
    weights = np.ascontiguousarray(W[:, :, ::-1, :].transpose(1, 2, 3, 0).reshape(C, K))
    step = min(M, max(1, _PATCHES // (K * H * Wd)))  # rows of lam at a time, in cache
    padded = np.zeros((step, O, H + kh - 1, Wd + (kw - 1) * dw))  # its borders stay zero
    q = np.empty((step, H + kh - 1, kw, O, Wd))
    patches = np.lib.stride_tricks.as_strided(
        q, shape=(step, H, K, Wd), strides=(q.strides[0], q.strides[1], q.strides[3], q.strides[4]), writeable=False
    )
    out = np.empty((step, H, C, Wd))
    result = np.empty((M, C, H, Wd))
    for lo in range(0, M, step):
        m = min(step, M - lo)
        padded[:m, :, pt : pt + Ho, pl : pl + Wo] = lam[lo : lo + m]
        for j in range(kw):
            c = (kw - 1 - j) * dw
            q[:m, :, j] = padded[:m, :, :, c : c + Wd].transpose(0, 2, 1, 3)
        np.matmul(weights, patches[:m], out=out[:m])
        result[lo : lo + m] = out[:m].transpose(0, 2, 1, 3)
    return result


_PATCHES = 2**18
"""Entries of one block of rows of :func:`conv_transpose`'s patches (2 MB, in cache)."""


def _conv_transpose_taps(lam: np.ndarray, layer: Conv2d, in_hw: tuple[int, int]) -> np.ndarray:
    """:func:`conv_transpose` tap by tap: every tap's product (channels last) at once, each
    added back onto the padded input positions it read, a few rows at a time (any stride)."""
    W = np.asarray(layer.W)
    O, C, kh, kw = (int(d) for d in W.shape)
    t, b, l, r = layer.padding
    M, _, Ho, Wo = lam.shape
    H, Wd = in_hw
    weights = np.ascontiguousarray(W.transpose(0, 2, 3, 1).reshape(O, kh * kw * C))  # o -> (i, j, c)
    result = np.empty((M, C, H, Wd))
    # a few rows at a time, so that each tap's product adds into memory still in cache (the
    # taps' sums run over the whole map of every row: memory-bound on the whole array)
    step = max(1, _CACHE // ((H + t + b) * (Wd + l + r) * max(C, O)))
    for lo in range(0, M, step):
        lt = np.ascontiguousarray(lam[lo : lo + step].transpose(0, 2, 3, 1))  # (m, Ho, Wo, O)
        m = int(lt.shape[0])
        # one product per output row (the stacked matmul), small enough for one thread; the
        # same sums as a product per tap (bit-identical), 1.3-2.4 times as fast at stride 2
        prod = (lt @ weights).reshape(m, Ho, Wo, kh, kw, C)
        out = np.zeros((m, H + t + b, Wd + l + r, C))
        for i, j, rows, cols in _offsets(layer, Ho, Wo):
            out[:, rows, cols] += prod[:, :, :, i, j]
        result[lo : lo + step] = out[:, t : t + H, l : l + Wd].transpose(0, 3, 1, 2)
    return result


_CACHE = 2**17
"""Entries of one block of rows of :func:`_conv_transpose_taps`' padded output (1 MB)."""


def pool_stack(a: np.ndarray, layer: MaxPool2d, fill: float) -> np.ndarray:
    """The values of every pooling window of ``a`` ``(N, C, H, W)`` padded with ``fill``,
    stacked over the kernel offsets: ``(K, N, C, Ho, Wo)`` (NumPy).

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.network import MaxPool2d
    >>> layer = MaxPool2d(2, padding=(0, 1, 0, 1))
    >>> a = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> stack = pool_stack(a, layer, -np.inf)
    >>> stack.shape, bool(np.array_equal(stack.max(axis=0), max_pool(xp, a, layer.kernel, layer.stride, layer.padding)))
    ((4, 1, 1, 2, 2), True)
    """
    t, b, l, r = layer.padding
    padded = np.pad(a, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=fill)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    Ho, Wo = (padded.shape[2] - kh) // sh + 1, (padded.shape[3] - kw) // sw + 1
    cuts = [
        (slice(i, i + sh * (Ho - 1) + 1, sh), slice(j, j + sw * (Wo - 1) + 1, sw)) for i in range(kh) for j in range(kw)
    ]
    return np.stack([padded[:, :, a_, b_] for a_, b_ in cuts])


def pool_scatter(layer: MaxPool2d, shape: tuple[int, ...], parts: Sequence[np.ndarray]) -> np.ndarray:
    """Each kernel offset's ``(M, C, Ho, Wo)`` part (in :func:`pool_stack`'s order) added
    back onto the input positions it came from, for an input of ``shape`` (NumPy).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import AvgPool2d
    >>> layer = AvgPool2d(2)
    >>> ones = np.ones((1, 1, 2, 2))
    >>> pool_scatter(layer, (1, 1, 4, 4), [ones] * 4)[0, 0].tolist()  # every input read once
    [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """
    t, b, l, r = layer.padding
    M, C, H, W = shape
    out = np.zeros((M, C, H + t + b, W + l + r))
    (_kh, kw), (sh, sw) = layer.kernel, layer.stride
    Ho, Wo = parts[0].shape[2], parts[0].shape[3]
    for k, part in enumerate(parts):
        i, j = divmod(k, kw)
        out[:, :, i : i + sh * (Ho - 1) + 1 : sh, j : j + sw * (Wo - 1) + 1 : sw] += part
    return out[:, :, t : t + H, l : l + W]
