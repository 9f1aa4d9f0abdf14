"""The one forward pass of tropref, on the array API: layers, junctions, whole graphs.

:func:`forward` runs a network (a chain or a graph) on a batch; everything else in tropref
that needs a network's values (measured errors, data-driven methods, the experiments'
accuracies) uses it or its parts (:func:`apply_layer`, :func:`apply_node`,
:func:`node_outputs`, :func:`conv_patches`). It is written against the array API standard
only, so the same code runs on every backend.

A convolution is one im2col matrix product: the input is viewed channels-last, the windows
shifted by each kernel offset are stacked into the patch matrix ``(N Ho Wo, C kh kw)``,
contiguous, and multiplied by ``W`` reshaped to ``(O, C kh kw)`` (a transposed view, never
copied). The patch matrix is built for slices of samples small enough to keep it under
32 MiB, and the batch is processed in chunks of at most ``chunk`` samples. A graph is run
in its layers' order, each output dropped once its last reader has run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._array import Array, device, namespace
from .layers import Add, AvgPool2d, BatchNorm, Concat, Conv2d, Dense, Flatten, Layer, MaxPool2d, ReLU, Softmax
from .shapes import out_size

if TYPE_CHECKING:  # the graph module imports this one (Network.__call__): the annotation alone refers back
    from .graph import Network

# The module's public API. Names without an underscore that are not listed here are shared
# with the other modules of tropref.network (the walk's parts), not promised to users.
__all__ = ["forward", "node_outputs", "apply_node", "apply_layer", "conv_patches", "conv2d"]


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
    size per axis is :func:`~tropref.network.shapes.out_size`.

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


def _pool(xp: Any, layer: MaxPool2d, x: Array) -> Array:
    if isinstance(layer, AvgPool2d):
        total = None
        for _, _, xs in _windows(_pad(xp, x, layer.padding, 0.0), layer.kernel, layer.stride, (1, 1)):
            total = xs if total is None else total + xs
        if layer.count_include_pad or not layer.padded:
            return total / float(layer.kernel[0] * layer.kernel[1])
        ones = xp.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype, device=device(x))
        count = None
        for _, _, xs in _windows(_pad(xp, ones, layer.padding, 0.0), layer.kernel, layer.stride, (1, 1)):
            count = xs if count is None else count + xs
        return total / count
    out = None
    for _, _, xs in _windows(_pad(xp, x, layer.padding, -math.inf), layer.kernel, layer.stride, (1, 1)):
        out = xs if out is None else xp.maximum(out, xs)
    return out


def channel_view(xp: Any, v: Array, ndim: int) -> Array:
    """A per-channel vector shaped to broadcast over a batch of ``ndim`` axes."""
    return xp.reshape(v, (1, -1, 1, 1)) if ndim == 4 else xp.reshape(v, (1, -1))


def apply_layer(layer: Layer, x: Array, xp: Any = None) -> Array:
    """Apply one layer to a batch ``x`` (``(N, d)`` or ``(N, C, H, W)``).

    The layer's map (see :mod:`tropref.network.layers`) on every sample: ``x W^T + b``, a
    convolution (:func:`conv2d`), ``scale x + shift`` per channel, ``max(x, 0)``, pooling,
    softmax, a flatten in its order; dropout and identity return ``x``.

    Parameters
    ----------
    layer : Layer
        Any layer but a junction (:func:`apply_node` applies those).
    x : array
        The batch.
    xp : namespace, optional
        ``x``'s array-API namespace (found from ``x`` when not given).

    Returns
    -------
    array

    Raises
    ------
    ValueError
        When ``x`` has the wrong number of axes for the layer (a dense layer or a softmax
        on images, a convolution on vectors).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense, ReLU, Flatten
    >>> apply_layer(Dense(np.array([[1.0, -1.0]]), np.array([0.5])), np.array([[3.0, 1.0]]))
    array([[2.5]])
    >>> apply_layer(ReLU(), np.array([[-1.0, 2.0]]))
    array([[0., 2.]])
    >>> x = np.arange(4.0).reshape(1, 2, 1, 2)  # two channels, two positions
    >>> apply_layer(Flatten(), x), apply_layer(Flatten("channels_last"), x)
    (array([[0., 1., 2., 3.]]), array([[0., 2., 1., 3.]]))
    """
    xp = xp or namespace(x=x)
    if isinstance(layer, Dense):
        if x.ndim != 2:
            raise ValueError(
                f"Dense {layer.name!r} needs a 2-D input (N, d); got shape {tuple(x.shape)} (missing Flatten?)"
            )
        y = xp.matmul(x, xp.permute_dims(layer.W, (1, 0)))
        return y if layer.b is None else y + layer.b
    if isinstance(layer, Conv2d):
        if x.ndim != 4:
            raise ValueError(f"Conv2d {layer.name!r} needs a 4-D input (N, C, H, W); got shape {tuple(x.shape)}")
        return conv2d(xp, x, layer.W, layer.b, layer.stride, layer.padding, layer.dilation)
    if isinstance(layer, BatchNorm):
        return x * channel_view(xp, layer.scale, x.ndim) + channel_view(xp, layer.shift, x.ndim)
    if isinstance(layer, ReLU):
        return xp.maximum(x, xp.asarray(0, dtype=x.dtype, device=device(x)))
    if isinstance(layer, MaxPool2d):  # also AvgPool2d
        return _pool(xp, layer, x)
    if isinstance(layer, Softmax):
        if x.ndim != 2:
            raise ValueError(f"Softmax {layer.name!r} needs a 2-D input (N, d); got shape {tuple(x.shape)}")
        z = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        return z / xp.sum(z, axis=1, keepdims=True)
    if isinstance(layer, Flatten):
        if x.ndim == 2:
            return x
        if layer.order == "channels_last":
            x = xp.permute_dims(x, (0, 2, 3, 1))
        return xp.reshape(x, (x.shape[0], -1))
    return x  # Dropout, Identity


def apply_node(layer: Layer, xs: Sequence[Array], xp: Any = None) -> Array:
    """Apply one layer to the outputs ``xs`` of the layers it reads (one, or several for
    :class:`Add` and :class:`Concat`).

    An :class:`Add` returns ``Σ xs``, a :class:`Concat` joins ``xs`` along axis 1 (the
    channels or features); any other layer is :func:`apply_layer` on ``xs[0]``.

    Raises
    ------
    ValueError
        When an addition's inputs differ in shape, or a concatenation's in anything but
        axis 1.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Add, Concat
    >>> apply_node(Add(), [np.array([[1.0, 2.0]]), np.array([[10.0, 20.0]])])
    array([[11., 22.]])
    >>> apply_node(Concat(), [np.ones((1, 2, 4, 4)), np.zeros((1, 3, 4, 4))]).shape
    (1, 5, 4, 4)
    """
    xp = xp or namespace(x=xs[0])
    if isinstance(layer, Add):
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"Add {layer.name!r} sums inputs of different shapes {sorted(shapes)}")
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
    if isinstance(layer, Concat):
        if len({(x.ndim, *tuple(x.shape[2:])) for x in xs}) != 1:
            raise ValueError(
                f"Concat {layer.name!r} joins inputs of shapes {[tuple(x.shape) for x in xs]}: only the "
                "channel axis may differ"
            )
        return xp.concat(list(xs), axis=1)
    return apply_layer(layer, xs[0], xp)


def node_outputs(
    net: Network, x: Array, keep: Sequence[int] = (), layers: Sequence[Layer] | None = None, stop: int | None = None
) -> dict[int, Array]:
    """Run ``net`` (or its structure with ``layers`` in place of its own) on ``x`` up to
    layer ``stop`` (default: the output), returning the outputs of the layers in ``keep``
    and of the last layer run. ``-1`` in ``keep`` is the input itself.

    Every intermediate output is dropped once the last layer reading it has run, so a
    residual network holds only the outputs still needed.

    Returns
    -------
    dict
        Layer index -> its output, for ``keep`` and ``stop``.

    Raises
    ------
    ValueError
        When a layer's input does not fit it (see :func:`apply_node`).

    Examples
    --------
    A residual block ``x + 2 relu(x)``: keep the ReLU's output beside the block's.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.eye(2)), ReLU(), Dense(2 * np.eye(2)), Add()], inputs=[(-1,), (0,), (1,), (2, -1)])
    >>> outs = node_outputs(net, np.array([[1.0, -1.0]]), keep=[1])
    >>> sorted(outs), outs[1], outs[3]
    ([1, 3], array([[1., 0.]]), array([[ 3., -1.]]))
    >>> node_outputs(net, np.array([[1.0, -1.0]]), stop=1)
    {1: array([[1., 0.]])}
    """
    xp = namespace(x=x)
    layers = net.layers if layers is None else layers
    stop = len(layers) - 1 if stop is None else stop
    last_use: dict[int, int] = {}
    for i in range(stop + 1):
        for p in net.sources(i):
            last_use[p] = i
    wanted = set(keep) | {stop}
    values: dict[int, Array] = {-1: x}
    for i in range(stop + 1):
        src = net.sources(i)
        values[i] = apply_node(layers[i], [values[p] for p in src], xp)
        for p in set(src):
            if last_use.get(p) == i and p not in wanted:
                del values[p]
    return {i: values[i] for i in wanted if i in values}


def forward(net: Network, x: Array, *, chunk: int = 1024) -> Array:
    """The network's output for a batch ``x`` (NCHW images or ``(N, d)`` vectors).

    Written in the array API standard only (see the module notes for the convolution).
    The batch is processed in chunks of ``chunk`` samples to bound the temporaries. A graph
    is run in its layers' order, each output kept until its last reader has run.

    Parameters
    ----------
    net : Network
        A chain or a graph.
    x : array
        The batch: ``(N, d)`` or ``(N, C, H, W)``, of any array-API library.
    chunk : int
        The most samples run at once.

    Returns
    -------
    array
        The output of the network's last layer, in ``x``'s library and device.

    Raises
    ------
    ValueError
        When a layer's input does not fit it (see :func:`apply_layer`, :func:`apply_node`).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, Dense, ReLU, Flatten, Add, forward
    >>> net = Network([Conv2d(np.ones((2, 1, 3, 3)), padding=1), ReLU(), Flatten()])
    >>> forward(net, np.ones((1, 1, 4, 4))).shape
    (1, 32)
    >>> res = Network([Dense(np.eye(2)), ReLU(), Add()], inputs=[(-1,), (0,), (1, -1)])
    >>> forward(res, np.array([[1.0, -1.0]]))
    array([[ 2., -1.]])
    """
    xp = namespace(x=x)
    outs = []
    N = int(x.shape[0])
    for start in range(0, max(N, 1), chunk):
        y = x if N <= chunk else x[start : min(start + chunk, N), ...]
        if net.is_chain:
            for layer in net.layers:
                y = apply_layer(layer, y, xp)
        elif net.layers:
            y = node_outputs(net, y)[len(net.layers) - 1]
        outs.append(y)
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)


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
