"""The layer types of a network: dense, convolution, BatchNorm, ReLU, pooling, flatten, junctions.

Every layer is an immutable dataclass holding array-API arrays (NumPy, CuPy,
array-api-strict, ...); :class:`~tropref.network.graph.Network` strings them together.

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
- :class:`Add` (residual sums) and :class:`Concat` (along the channels) read two or more
  layers: they are the graph's junctions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import Array, namespace

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
    "LAYER_TYPES",
    "JUNCTIONS",
    "ARRAY_FIELDS",
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
    """``y = x W^T + b`` with ``W`` of shape ``(out, in)`` (PyTorch layout).

    Examples
    --------
    >>> import numpy as np
    >>> Dense(np.ones((4, 3)), np.zeros(4), name="fc").units
    4
    """

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
ARRAY_FIELDS = ("W", "b", "mean", "var", "weight", "bias")
"""The fields of a layer that hold arrays."""
