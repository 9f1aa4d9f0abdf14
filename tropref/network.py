"""A framework-agnostic description of a feed-forward network of layers, and its forward pass.

A :class:`Network` is an immutable graph of layers holding array-API arrays (NumPy, CuPy,
array-api-strict, ...): layer ``i`` reads the outputs of the layers listed in
``inputs[i]`` (``-1`` is the network's input), :class:`Add` sums its inputs (residual
connections) and :class:`Concat` joins them along the channels; the last layer is the
output. Without ``inputs`` the network is a chain, each layer reading the previous one.
It is what :func:`tropref.compress_network` reads and writes, and
what the adapters (``tropref.adapters.torch``, ``tropref.adapters.keras``) translate to and
from a framework's model. The core never imports a framework.

Conventions
-----------
- Images are ``NCHW`` inside the core (PyTorch's layout). Adapters for channels-last
  frameworks transpose inputs and kernels on the way in and out.
- :class:`Dense` weights are ``(out, in)``; :class:`Conv2d` weights are ``OIHW``; units are
  on axis 0, as :func:`tropref.compress_layer` expects.
- Padding is explicit and may be asymmetric: ``(top, bottom, left, right)``. Keras
  ``padding="same"`` becomes the explicit amounts for the layer's input size.
- :class:`Flatten` records the order of the flattened features: ``"channels_first"``
  (``c, h, w``, PyTorch) or ``"channels_last"`` (``h, w, c``, Keras on channels-last data).

The forward pass
----------------
:func:`forward` is the one forward pass of tropref (the experiments use it too), written
against the array API standard only, so the same code runs on every backend. A convolution
is one im2col matrix product: the input is viewed channels-last, the windows shifted by
each kernel offset are stacked into the patch matrix ``(N Ho Wo, C kh kw)``, contiguous,
and multiplied by ``W`` reshaped to ``(O, C kh kw)`` (a transposed view, never copied). The
patch matrix is built for slices of samples small enough to keep it under 32 MiB, and the
batch is processed in chunks of at most ``chunk`` samples. A graph
is run in its layers' order, each output dropped once its last reader has run.

Counting
--------
:func:`count_params` counts weights and biases of dense and convolutional layers and the
two affine parameters per channel of a BatchNorm (running statistics are buffers, not
parameters, as in PyTorch). :func:`count_macs` counts the multiply-accumulates of dense and
convolutional layers for one sample (``out * in`` and ``O * C * kh * kw * Ho * Wo``);
BatchNorm, ReLU and pooling are not counted (BatchNorm folds into a neighbour at deployment).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._array import Array, device, namespace, to_numpy

__all__ = [
    "Dense",
    "Conv2d",
    "BatchNorm",
    "ReLU",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
    "Dropout",
    "Identity",
    "Softmax",
    "Add",
    "Concat",
    "Layer",
    "Network",
    "forward",
    "apply_layer",
    "layer_shapes",
    "output_shapes",
    "node_output_shape",
    "node_bounds",
    "count_params",
    "count_macs",
    "layer_params",
    "layer_macs",
    "conv_patches",
    "max_patch_norm",
    "with_flatten_order",
    "interval_bounds",
]


def _pair(value: Any, what: str, layer: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: `{what}` must be an int or a pair of ints, got {value!r}") from None


def _padding4(value: Any, layer: str) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from an int, ``(ph, pw)`` or the four amounts."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        p = int(value)
        return p, p, p, p
    value = tuple(int(v) for v in value)
    if len(value) == 2:
        return value[0], value[0], value[1], value[1]
    if len(value) == 4:
        return value  # type: ignore[return-value]
    raise ValueError(f"{layer}: `padding` must be an int, (ph, pw) or (top, bottom, left, right), got {value!r}")


def _set(obj: Any, **values: Any) -> None:
    for k, v in values.items():
        object.__setattr__(obj, k, v)


@dataclass(frozen=True, eq=False)
class Dense:
    """``y = x W^T + b`` with ``W`` of shape ``(out, in)`` (PyTorch layout)."""

    W: Array
    b: Array | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.W.ndim != 2:
            raise ValueError(f"Dense {self.name!r}: `W` must be (out, in), got shape {tuple(self.W.shape)}")
        if self.b is not None and tuple(self.b.shape) != (self.W.shape[0],):
            raise ValueError(
                f"Dense {self.name!r}: `b` must have shape ({self.W.shape[0]},), got {tuple(self.b.shape)}"
            )

    @property
    def units(self) -> int:
        return int(self.W.shape[0])


@dataclass(frozen=True, eq=False)
class Conv2d:
    """2-D cross-correlation, ``W`` of shape ``(out, in, kh, kw)`` (OIHW), zero padding.

    ``padding`` is ``(top, bottom, left, right)``; an int or ``(ph, pw)`` is expanded.
    Only ``groups = 1`` is described: grouped and depthwise convolutions couple channels in
    a way channel merging does not handle, so adapters refuse them.
    """

    W: Array
    b: Array | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    name: str | None = None

    def __post_init__(self) -> None:
        label = f"Conv2d {self.name!r}"
        if self.W.ndim != 4:
            raise ValueError(f"{label}: `W` must be (out, in, kh, kw), got shape {tuple(self.W.shape)}")
        if self.b is not None and tuple(self.b.shape) != (self.W.shape[0],):
            raise ValueError(f"{label}: `b` must have shape ({self.W.shape[0]},), got {tuple(self.b.shape)}")
        _set(
            self,
            stride=_pair(self.stride, "stride", label),
            padding=_padding4(self.padding, label),
            dilation=_pair(self.dilation, "dilation", label),
        )
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(f"{label}: stride and dilation must be >= 1 and padding >= 0")

    @property
    def units(self) -> int:
        return int(self.W.shape[0])

    @property
    def padded(self) -> bool:
        return any(p > 0 for p in self.padding)


@dataclass(frozen=True, eq=False)
class BatchNorm:
    """Batch normalisation at inference, per channel (axis 1): ``y = scale * x + shift``.

    ``scale = weight / sqrt(var + eps)`` and ``shift = bias - mean * scale``; ``weight`` and
    ``bias`` default to ones and zeros (no affine part).
    """

    mean: Array
    var: Array
    weight: Array | None = None
    bias: Array | None = None
    eps: float = 1e-5
    name: str | None = None

    def __post_init__(self) -> None:
        c = tuple(self.mean.shape)
        for what in ("var", "weight", "bias"):
            a = getattr(self, what)
            if a is not None and tuple(a.shape) != c:
                raise ValueError(f"BatchNorm {self.name!r}: `{what}` has shape {tuple(a.shape)}, `mean` has {c}")
        _set(self, eps=float(self.eps))

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    @property
    def scale(self) -> Array:
        xp = namespace(mean=self.mean)
        s = 1.0 / xp.sqrt(self.var + self.eps)
        return s if self.weight is None else self.weight * s

    @property
    def shift(self) -> Array:
        return (0.0 if self.bias is None else self.bias) - self.mean * self.scale


@dataclass(frozen=True)
class ReLU:
    """``max(x, 0)``."""

    name: str | None = None


@dataclass(frozen=True)
class MaxPool2d:
    """Max pooling per channel; padded positions hold ``-inf`` (never selected)."""

    kernel: tuple[int, int]
    stride: tuple[int, int] | None = None
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    name: str | None = None

    def __post_init__(self) -> None:
        label = f"{type(self).__name__} {self.name!r}"
        kernel = _pair(self.kernel, "kernel", label)
        stride = kernel if self.stride is None else _pair(self.stride, "stride", label)
        _set(self, kernel=kernel, stride=stride, padding=_padding4(self.padding, label))

    @property
    def padded(self) -> bool:
        return any(p > 0 for p in self.padding)


@dataclass(frozen=True)
class AvgPool2d(MaxPool2d):
    """Average pooling per channel; zero padding, counted in the divisor when
    ``count_include_pad`` (PyTorch's default) and not counted otherwise (Keras ``"same"``)."""

    count_include_pad: bool = True


@dataclass(frozen=True)
class Flatten:
    """Flatten ``(N, C, H, W)`` to ``(N, C H W)``, in ``c, h, w`` order (``"channels_first"``)
    or ``h, w, c`` order (``"channels_last"``). The identity on 2-D inputs."""

    order: str = "channels_first"
    name: str | None = None

    def __post_init__(self) -> None:
        if self.order not in ("channels_first", "channels_last"):
            raise ValueError(
                f"Flatten {self.name!r}: `order` must be 'channels_first' or 'channels_last', got {self.order!r}"
            )


@dataclass(frozen=True)
class Dropout:
    """The identity at inference (the rate is kept for the round trip to a framework)."""

    rate: float = 0.0
    name: str | None = None


@dataclass(frozen=True)
class Identity:
    """The identity."""

    name: str | None = None


@dataclass(frozen=True)
class Softmax:
    """``softmax`` over the features of a 2-D input (a classifier's output activation).

    Nothing is compressed through it; the network certificate passes it with
    ``|Δp_i| <= 2 p_i (1 - p_i) max_j |Δz_j| <= max_j |Δz_j| / 2`` (and at most 1).
    """

    name: str | None = None


@dataclass(frozen=True)
class Add:
    """The sum of its inputs (of one shape): a residual connection's junction."""

    name: str | None = None


@dataclass(frozen=True)
class Concat:
    """Its inputs joined along the channel (feature) axis 1, in the order of ``inputs``."""

    name: str | None = None


Layer = (
    Dense | Conv2d | BatchNorm | ReLU | MaxPool2d | AvgPool2d | Flatten | Dropout | Identity | Softmax | Add | Concat
)
LAYER_TYPES = (Dense, Conv2d, BatchNorm, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, Identity, Softmax, Add, Concat)
JUNCTIONS = (Add, Concat)


@dataclass(frozen=True)
class Network:
    """A feed-forward network of layers: a chain, or a graph with additions and concatenations.

    Parameters
    ----------
    layers : sequence of layers
        :class:`Dense`, :class:`Conv2d`, :class:`BatchNorm`, :class:`ReLU`,
        :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`Flatten`, :class:`Dropout`,
        :class:`Identity`, :class:`Softmax`, :class:`Add`, :class:`Concat`, in a
        topological order (every layer after the layers it reads).
    input_shape : tuple of int, optional
        Shape of one input sample: ``(d,)`` or ``(C, H, W)``. Needed to count the MACs of
        convolutions and for the network certificate; adapters fill it in when they can.
    inputs : sequence of sequences of int, optional
        ``inputs[i]``: the layers whose outputs layer ``i`` reads (``-1``: the network's
        input), each earlier than ``i``; one for every layer but :class:`Add` and
        :class:`Concat`, which read two or more. The last layer is the output. ``None`` (the
        default) is the chain ``inputs[i] = (i - 1,)``; a graph that is a chain is stored
        as ``None``, so equal structures compare equal.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(4, 3)), np.zeros(4)), ReLU(), Dense(rng.normal(size=(2, 4)))])
    >>> net(np.ones((5, 3))).shape
    (5, 2)
    >>> count_params(net)
    24
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] | None = None
    inputs: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, LAYER_TYPES):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a tropref.network layer")
        shape = None if self.input_shape is None else tuple(int(s) for s in self.input_shape)
        if shape is not None and len(shape) not in (1, 3):
            raise ValueError(f"`input_shape` must be (d,) or (C, H, W), got {shape}")
        inputs = None if self.inputs is None else _check_inputs(layers, self.inputs)
        if inputs is not None and all(ins == (i - 1,) for i, ins in enumerate(inputs)):
            inputs = None  # a chain
        if inputs is None and any(isinstance(l, JUNCTIONS) for l in layers):
            raise ValueError("an Add or Concat layer needs `inputs`: it reads two or more layers")
        _set(self, layers=layers, input_shape=shape, inputs=inputs)

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads the previous one (no ``inputs`` graph)."""
        return self.inputs is None

    def sources(self, i: int) -> tuple[int, ...]:
        """The layers read by layer ``i`` (``-1``: the network's input)."""
        return (i - 1,) if self.inputs is None else self.inputs[i]

    def users(self) -> list[list[int]]:
        """For every layer, the layers that read its output (``[]`` for the output layer)."""
        out: list[list[int]] = [[] for _ in self.layers]
        for i in range(len(self.layers)):
            for p in self.sources(i):
                if p >= 0:
                    out[p].append(i)
        return out

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __call__(self, x: Array) -> Array:
        return forward(self, x)

    def label(self, i: int) -> str:
        """How errors and reports name layer ``i``: its name, else ``"<i>:<Type>"``."""
        layer = self.layers[i]
        name = getattr(layer, "name", None)
        return f"{name!r} (layer {i}, {type(layer).__name__})" if name else f"layer {i} ({type(layer).__name__})"

    def replace_layers(self, layers: Sequence[Layer]) -> Network:
        """The same structure (input shape, graph) with other layers in the same places."""
        return Network(tuple(layers), self.input_shape, self.inputs)

    def to_numpy(self, dtype: Any = None) -> Network:
        """The same network with every array copied to a NumPy host array (optionally cast)."""
        return map_arrays(self, lambda a: to_numpy(a).astype(dtype or to_numpy(a).dtype, copy=True))


def _check_inputs(layers: tuple, inputs: Any) -> tuple[tuple[int, ...], ...]:
    try:
        inputs = tuple(tuple(int(p) for p in ins) for ins in inputs)
    except TypeError:
        raise ValueError("`inputs` must hold one sequence of layer indices per layer") from None
    if len(inputs) != len(layers):
        raise ValueError(f"`inputs` has {len(inputs)} entries for {len(layers)} layers")
    used = {p for ins in inputs for p in ins}
    for i, (layer, ins) in enumerate(zip(layers, inputs, strict=False)):
        name = getattr(layer, "name", None)
        label = f"layer {i} ({type(layer).__name__}{'' if name is None else ' ' + repr(name)})"
        if any(not -1 <= p < i for p in ins):
            raise ValueError(f"{label} reads {ins}: inputs must be earlier layers or -1 (the network's input)")
        if isinstance(layer, JUNCTIONS) and len(ins) < 2:
            raise ValueError(f"{label} must read two or more layers, reads {ins}")
        if not isinstance(layer, JUNCTIONS) and len(ins) != 1:
            raise ValueError(f"{label} must read exactly one layer, reads {ins}")
        if i < len(layers) - 1 and i not in used:
            raise ValueError(f"{label} is read by no layer and is not the output (the last layer)")
    return inputs


ARRAY_FIELDS = ("W", "b", "mean", "var", "weight", "bias")


def map_arrays(net: Network, fn: Any) -> Network:
    """A new network with ``fn`` applied to every array of every layer."""
    layers = []
    for layer in net.layers:
        changes = {f: fn(getattr(layer, f)) for f in ARRAY_FIELDS if getattr(layer, f, None) is not None}
        layers.append(replace(layer, **changes) if changes else layer)
    return net.replace_layers(layers)


def network_namespace(net: Network) -> Any:
    """The common array namespace of a network's arrays (NumPy when it has none)."""
    arrays = {
        f"{i}.{f}": getattr(l, f)
        for i, l in enumerate(net.layers)
        for f in ARRAY_FIELDS
        if getattr(l, f, None) is not None
    }
    if not arrays:
        import array_api_compat.numpy as xp_np

        return xp_np
    return namespace(**arrays)


# --------------------------------------------------------------------------- forward pass


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


def _out_size(size: int, k: int, s: int, p0: int, p1: int, d: int = 1) -> int:
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def _windows(
    x: Array, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> Iterator[tuple[int, int, Array]]:
    """Yield ``(i, j, x[:, :, window positions shifted by kernel offset (i, j)])``, each
    of shape ``(N, C, Ho, Wo)``, for an already padded ``x``."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    Ho = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    Wo = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"the window {kernel} (dilation {dilation}) is larger than the padded input {tuple(x.shape[2:])}"
        )
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, :, i * dh : i * dh + sh * (Ho - 1) + 1 : sh, j * dw : j * dw + sw * (Wo - 1) + 1 : sw]


_IM2COL_BYTES = 1 << 25  # largest patch matrix built at once by the convolution (32 MiB)


def _conv(xp: Any, x: Array, W: Array, b: Array | None, stride: Any, padding: Any, dilation: Any) -> Array:
    O, C, kh, kw = (int(s) for s in W.shape)
    N, H, Wd = int(x.shape[0]), int(x.shape[2]), int(x.shape[3])
    t, btm, l, r = padding
    (sh, sw), (dh, dw) = stride, dilation
    Ho, Wo = _out_size(H, kh, sh, t, btm, dh), _out_size(Wd, kw, sw, l, r, dw)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"the window {(kh, kw)} (dilation {dilation}) is larger than the padded input {(H + t + btm, Wd + l + r)}"
        )
    sub = max(1, _IM2COL_BYTES // max(1, C * kh * kw * Ho * Wo * 8))  # samples per patch matrix
    if N > sub:
        return xp.concat(
            [_conv(xp, x[s : min(s + sub, N), ...], W, b, stride, padding, dilation) for s in range(0, N, sub)], axis=0
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


def _channel_view(xp: Any, v: Array, ndim: int) -> Array:
    return xp.reshape(v, (1, -1, 1, 1)) if ndim == 4 else xp.reshape(v, (1, -1))


def apply_layer(layer: Layer, x: Array, xp: Any = None) -> Array:
    """Apply one layer to a batch ``x`` (``(N, d)`` or ``(N, C, H, W)``)."""
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
        return _conv(xp, x, layer.W, layer.b, layer.stride, layer.padding, layer.dilation)
    if isinstance(layer, BatchNorm):
        return x * _channel_view(xp, layer.scale, x.ndim) + _channel_view(xp, layer.shift, x.ndim)
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
    :class:`Add` and :class:`Concat`)."""
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


# --------------------------------------------------------------------------- shapes and counting


def _layer_out_shape(layer: Layer, label: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(layer, Dense):
        if len(shape) != 1 or shape[0] != layer.W.shape[1]:
            raise ValueError(
                f"{label} expects ({layer.W.shape[1]},) inputs, gets {shape}: its input size does not match the data"
            )
        return (layer.units,)
    if isinstance(layer, Conv2d):
        if len(shape) != 3 or shape[0] != layer.W.shape[1]:
            raise ValueError(f"{label} expects ({layer.W.shape[1]}, H, W) inputs, gets {shape}")
        t, b, l, r = layer.padding
        kh, kw = int(layer.W.shape[2]), int(layer.W.shape[3])
        return (
            layer.units,
            _out_size(shape[1], kh, layer.stride[0], t, b, layer.dilation[0]),
            _out_size(shape[2], kw, layer.stride[1], l, r, layer.dilation[1]),
        )
    if isinstance(layer, MaxPool2d):
        if len(shape) != 3:
            raise ValueError(f"{label} needs (C, H, W) inputs, gets {shape}")
        t, b, l, r = layer.padding
        return (
            shape[0],
            _out_size(shape[1], layer.kernel[0], layer.stride[0], t, b),
            _out_size(shape[2], layer.kernel[1], layer.stride[1], l, r),
        )
    if isinstance(layer, Flatten):
        return (int(np.prod(shape)),)
    if isinstance(layer, BatchNorm) and shape[0] != layer.channels:
        raise ValueError(f"{label} has {layer.channels} channels, its input has {shape[0]}")
    return shape


def layer_shapes(net: Network, input_shape: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Per-sample shapes of a chain: entry ``i`` is the input shape of layer ``i``; the last
    is the output. (For a graph, see :func:`output_shapes`.)

    Raises ``ValueError`` naming the first layer whose input does not fit.
    """
    if not net.is_chain:
        raise ValueError(
            "layer_shapes describes a chain; use output_shapes for a network with additions or concatenations"
        )
    return [_input_shape(net, input_shape), *output_shapes(net, input_shape)]


def _input_shape(net: Network, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = net.input_shape if input_shape is None else tuple(int(s) for s in input_shape)
    if shape is None:
        raise ValueError("the network has no `input_shape`; pass `input_shape=`")
    return tuple(shape)


def output_shapes(
    net: Network, input_shape: Sequence[int] | None = None, stop: int | None = None
) -> list[tuple[int, ...]]:
    """Per-sample output shape of every layer (chain or graph), up to layer ``stop``
    (default: all).

    Raises ``ValueError`` naming the first layer whose input does not fit (a dense layer
    whose input size differs from its weights, additions of different shapes, ...).
    """
    first = _input_shape(net, input_shape)
    outs: list[tuple[int, ...]] = []
    for i, layer in enumerate(net.layers[: None if stop is None else stop + 1]):
        outs.append(node_output_shape(layer, [first if p < 0 else outs[p] for p in net.sources(i)], net.label(i)))
    return outs


def node_output_shape(layer: Layer, ins: Sequence[tuple[int, ...]], label: str | None = None) -> tuple[int, ...]:
    """One sample's output shape of ``layer`` given its inputs' shapes (``ValueError``
    naming the layer, as ``label``, when they do not fit)."""
    label = label or f"{type(layer).__name__} {getattr(layer, 'name', None)!r}"
    ins = [tuple(int(v) for v in s) for s in ins]
    if isinstance(layer, Add):
        if len(set(ins)) != 1:
            raise ValueError(f"{label} sums inputs of different shapes {ins}")
        return ins[0]
    if isinstance(layer, Concat):
        if len({s[1:] for s in ins}) != 1 or len({len(s) for s in ins}) != 1:
            raise ValueError(f"{label} joins inputs of shapes {ins}: only the channel axis may differ")
        return (sum(s[0] for s in ins), *ins[0][1:])
    return _layer_out_shape(layer, label, ins[0])


def layer_params(layer: Layer) -> int:
    """Parameters of one layer: weights and biases; ``2 C`` for a BatchNorm."""
    if isinstance(layer, (Dense, Conv2d)):
        return int(np.prod(layer.W.shape)) + (0 if layer.b is None else int(layer.b.shape[0]))
    if isinstance(layer, BatchNorm):
        return 2 * layer.channels
    return 0


def layer_macs(layer: Layer, out_shape: tuple[int, ...] | None) -> int | None:
    """Multiply-accumulates of one layer for one sample (None: a conv without known shape)."""
    if isinstance(layer, Dense):
        return int(np.prod(layer.W.shape))
    if isinstance(layer, Conv2d):
        if out_shape is None:
            return None
        return int(np.prod(layer.W.shape)) * int(out_shape[1]) * int(out_shape[2])
    return 0


def count_params(net: Network) -> int:
    """Total parameters of the network (see :func:`layer_params`)."""
    return sum(layer_params(layer) for layer in net.layers)


def count_macs(net: Network, input_shape: Sequence[int] | None = None) -> int | None:
    """Total multiply-accumulates for one sample; None when a convolution's size is unknown."""
    try:
        shapes = output_shapes(net, input_shape)
    except ValueError:
        if any(isinstance(l, Conv2d) for l in net.layers):
            return None
        shapes = [None] * len(net.layers)
    total = 0
    for i, layer in enumerate(net.layers):
        m = layer_macs(layer, shapes[i])
        if m is None:
            return None
        total += m
    return total


# --------------------------------------------------------------------------- patches and bounds


def conv_patches(layer: Conv2d, x: Array, index: Sequence[int] | np.ndarray | None = None) -> Array:
    """Input patches of a convolution, ``(N Ho Wo, C, kh, kw)``, in the order the outputs
    are produced (sample, row, column): ``layer(x)[n, :, r, c] = W . patch + b``.

    ``index`` (host integers into that order) keeps only those patches, gathered one kernel
    offset at a time so that the full patch matrix is never built.
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


def max_patch_norm(layer: Dense | Conv2d, bound: Array) -> float:
    """Largest ``‖(patch, 1)‖`` over the inputs of ``layer`` whose entries satisfy
    ``|x| <= bound`` elementwise (``bound`` of one sample's shape); a dense layer's
    "patch" is its whole input."""
    xp = namespace(bound=bound)
    sq = bound * bound
    if isinstance(layer, Dense):
        return math.sqrt(float(to_numpy(xp.sum(sq))) + 1.0)
    per_pixel = xp.sum(sq, axis=0)[None, None, ...]  # (1, 1, H, W)
    ones = xp.ones((1, 1, int(layer.W.shape[2]), int(layer.W.shape[3])), dtype=bound.dtype, device=device(bound))
    sums = _conv(xp, per_pixel, ones, None, layer.stride, layer.padding, layer.dilation)
    return math.sqrt(float(to_numpy(xp.max(sums))) + 1.0)


def interval_bounds(net: Network, lower: Array, upper: Array) -> list[tuple[Array, Array]]:
    """Elementwise bounds on every layer's input over the box ``lower <= x <= upper``.

    Interval arithmetic in centre-radius form: an affine layer maps centre ``c`` and radius
    ``r`` to ``A c + b`` and ``|A| r``; ReLU, pooling and flatten are monotone. Entry ``i``
    bounds the input of layer ``i``; the last entry bounds the output. ``lower``/``upper``
    have one sample's shape.
    """
    if not net.is_chain:
        raise ValueError(
            "interval_bounds describes a chain; use node_bounds for a network with additions or concatenations"
        )
    return [(lower, upper), *node_bounds(net, lower, upper)]


def _interval_step(xp: Any, layer: Layer, lo: Array, hi: Array) -> tuple[Array, Array]:
    """Bounds on one layer's output from elementwise bounds on its input (batch of one)."""
    if isinstance(layer, (Dense, Conv2d, BatchNorm)):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        c = apply_layer(layer, c, xp)
        if isinstance(layer, Dense):
            r = xp.matmul(r, xp.permute_dims(xp.abs(layer.W), (1, 0)))
        elif isinstance(layer, Conv2d):
            r = _conv(xp, r, xp.abs(layer.W), None, layer.stride, layer.padding, layer.dilation)
        else:
            r = r * _channel_view(xp, xp.abs(layer.scale), r.ndim)
        return c - r, c + r
    if isinstance(layer, Softmax):
        # p_i is increasing in z_i and decreasing in the other z_j: p_i >= 1 / (1 + Σ_{j≠i}
        # exp(hi_j - lo_i)), written with shifted exponents so that no 0/0 occurs
        lo_p = 1.0 / (1.0 + _sum_others_exp(xp, lo, hi))
        hi_p = 1.0 / (1.0 + _sum_others_exp(xp, hi, lo))
        return lo_p, hi_p
    return apply_layer(layer, lo, xp), apply_layer(layer, hi, xp)


def _sum_others_exp(xp: Any, own: Array, others: Array) -> Array:
    """``Σ_{j≠i} exp(others_j − own_i)`` for every ``i`` (inputs ``(1, d)``), computed
    without overflow to NaN: an infinite sum is fine (the bound is then 0 or 1)."""
    d = int(own.shape[1])
    diff = others[:, None, :] - own[:, :, None]  # (1, d, d): entry (i, j) = others_j - own_i
    eye = xp.eye(d, dtype=own.dtype, device=device(own))[None, ...]
    big = xp.asarray(-math.inf, dtype=own.dtype, device=device(own))
    diff = xp.where(eye > 0, big, diff)
    m = xp.max(diff, axis=2)
    m_safe = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    total = xp.sum(xp.exp(diff - m_safe[..., None]), axis=2)
    return xp.where(xp.isfinite(m), xp.exp(m) * total, xp.where(m > 0, xp.full_like(m, math.inf), xp.zeros_like(m)))


def node_bounds(net: Network, lower: Array, upper: Array) -> list[tuple[Array, Array]]:
    """Elementwise bounds on every layer's output over the box ``lower <= x <= upper``
    (chain or graph): interval arithmetic as in :func:`interval_bounds`, and an
    :class:`Add` adds the bounds of its inputs, a :class:`Concat` joins them."""
    xp = namespace(lower=lower, upper=upper)
    vals: dict[int, tuple[Array, Array]] = {-1: (lower[None, ...], upper[None, ...])}
    out = []
    for i, layer in enumerate(net.layers):
        ins = [vals[p] for p in net.sources(i)]
        if isinstance(layer, Add):
            lo, hi = ins[0]
            for a, b in ins[1:]:
                lo, hi = lo + a, hi + b
        elif isinstance(layer, Concat):
            lo, hi = xp.concat([a for a, _ in ins], axis=1), xp.concat([b for _, b in ins], axis=1)
        else:
            lo, hi = _interval_step(xp, layer, *ins[0])
        vals[i] = (lo, hi)
        out.append((lo[0, ...], hi[0, ...]))
    return out


# --------------------------------------------------------------------------- flatten order


def with_flatten_order(net: Network, order: str) -> Network:
    """An equivalent network whose every :class:`Flatten` (of a 4-D tensor) uses ``order``.

    The features after the flatten are permuted, so the next :class:`Dense` layer's columns
    (and any BatchNorm, Dropout or ReLU between them) are permuted the same way: for ``C``
    channels and ``s`` positions, feature ``c s + p`` in ``c, h, w`` order is feature
    ``p C + c`` in ``h, w, c`` order. Needs the channel count before the flatten, taken from
    the last convolution or BatchNorm before it (or ``input_shape``).
    """
    if order not in ("channels_first", "channels_last"):
        raise ValueError(f"`order` must be 'channels_first' or 'channels_last', got {order!r}")
    layers = list(net.layers)
    channels = net.input_shape[0] if net.input_shape and len(net.input_shape) == 3 else None
    rank4 = net.input_shape is not None and len(net.input_shape) == 3
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv2d):
            channels, rank4 = layer.units, True
        elif isinstance(layer, BatchNorm) and rank4:
            channels = layer.channels
        elif isinstance(layer, Flatten) and layer.order != order and (rank4 or channels is not None):
            if channels is None:
                raise ValueError(f"{net.label(i)}: the number of channels before it is unknown")
            layers[i] = replace(layer, order=order)
            rank4 = False
            _permute_after_flatten(net, layers, i, channels, src=layer.order)
        elif isinstance(layer, Flatten):
            rank4 = False
    return net.replace_layers(layers)


def _permute_after_flatten(net: Network, layers: list, i: int, C: int, src: str) -> None:
    """Permute the feature axis of the layers after the flatten at ``i`` up to the next Dense."""
    for j in range(i + 1, len(layers)):
        layer = layers[j]
        if isinstance(layer, Dense):
            d = int(layer.W.shape[1])
            perm = _flatten_permutation(C, d // C, src)
            layers[j] = replace(layer, W=_take(layer.W, perm, axis=1))
            return
        if isinstance(layer, BatchNorm):
            d = layer.channels
            perm = _flatten_permutation(C, d // C, src)
            layers[j] = replace(
                layer,
                **{
                    f: _take(getattr(layer, f), perm, 0)
                    for f in ("mean", "var", "weight", "bias")
                    if getattr(layer, f) is not None
                },
            )
        elif not isinstance(layer, (Dropout, Identity, ReLU)):
            raise ValueError(f"{net.label(j)} after a Flatten: cannot reorder the flattened features through it")
    # A flatten at the end of the network: the output order itself would change.
    raise ValueError(f"{net.label(i)} is not followed by a Dense layer; its feature order cannot be changed")


def _flatten_permutation(C: int, s: int, src: str) -> np.ndarray:
    """Index array ``perm`` with ``new_features = old_features[perm]`` when the flatten order
    changes away from ``src``."""
    cf = np.arange(C * s).reshape(C, s)  # cf[c, p]: index of (c, p) in channels-first order
    cl = np.arange(C * s).reshape(s, C).T  # cl[c, p]: index of (c, p) in channels-last order
    if src == "channels_first":  # new order is channels-last: new index p C + c holds old c s + p
        return cf.T.reshape(-1)
    return cl.reshape(-1)


def _take(a: Array, perm: np.ndarray, axis: int) -> Array:
    xp = namespace(a=a)
    return xp.take(a, xp.asarray(perm, dtype=xp.int64, device=device(a)), axis=axis)
