"""The layer kinds: for each layer type, in one place, what the walk needs of it.

Every layer type of :mod:`tropref.network.layers` has one :class:`Kind` here, and the walk
(:mod:`~tropref.network.forward`, :mod:`~tropref.network.shapes`,
:mod:`~tropref.network.bounds`, :mod:`~tropref.network.structure`,
:mod:`~tropref.network.rewrite`, :mod:`~tropref.network.certificate`,
:mod:`~tropref.network.report`) asks :func:`kind_of` instead of testing the layer's type.
A kind says (its :data:`ENTRIES`):

- ``forward``: its output for the outputs of the layers it reads;
- ``out_shape``: one sample's output shape for its inputs' shapes;
- ``params`` and ``macs``: its parameters, and its multiply-accumulates for one sample;
- ``read_units``: how it reads the channels of the layer before it, per unit, so that the
  units merged there can be rewritten in its weights (None: it has no weights per input
  channel);
- ``interval``: its interval step (elementwise bounds on its output from bounds on its
  inputs);
- ``carry``: its certificate step (per-channel bounds on a change of its inputs carried to
  its output);
- ``zonotope`` and ``back``: its steps in the local certificate
  (:mod:`~tropref.network.local`): its output zonotope from its inputs' (exact for an
  affine map, a relaxation with new independent terms otherwise), and one back-substitution
  step of a linear bound (its adjoint, or the bounds' relaxation);
- ``passes_channels``: whether output channel ``c`` is input channel ``c``, mapped on its
  own without parameters (ReLU, pooling, dropout, identity), so that merged channels stay
  merged through it;
- ``role``: its part in a hidden layer's path (:mod:`tropref.network.structure`).

A dense or convolutional kind (``linear``) also says how to bound and sample what it reads
(``patch_norm``, ``patches``), whether it reads images (``images``) and whether it
zero-pads them (``pads_inputs``). :func:`check_kind` checks a kind, :func:`register_kind`
adds a layer type of the user's own (and :func:`unregister_kind` removes it);
``docs/architecture.md`` ("Adding a layer type") says what a new layer type adds where.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._array import Array, device, namespace, to_numpy
from .layers import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Identity,
    Layer,
    MaxPool2d,
    ReLU,
    Softmax,
)
from .windows import (
    avg_pool,
    channel_view,
    conv2d,
    conv_host,
    conv_patches,
    conv_rows,
    conv_transpose,
    max_pool,
    out_size,
    pool_scatter,
    pool_stack,
)

# What adding a layer type uses: the base class and the type names of its methods, the
# entries and roles it must provide, the table it joins. The kinds of the shipped layer types
# (and their shared bases) are private: the walk reaches each through `kind_of`, never by name.
__all__ = [
    "Kind",
    "KINDS",
    "ENTRIES",
    "LINEAR_ENTRIES",
    "ROLES",
    "Shape",
    "Bounds",
    "Zonotope",
    "kind_of",
    "check_kind",
    "register_kind",
    "unregister_kind",
]

Shape = tuple[int, ...]
"""One sample's shape, without the batch axis: ``(d,)`` or ``(C, H, W)``."""

Bounds = tuple[Array, Array]
"""Elementwise bounds ``(lo, hi)`` on a batch of values, one array of its shape each."""

Zonotope = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One sample's zonotope ``(G, c, r)``, the set ``c + Σ_k ε_k G[k] + [−r, r]`` over
``ε ∈ [−1, 1]^g``: ``G`` ``(g, *shape)``, ``c`` and ``r >= 0`` ``(1, *shape)`` (NumPy float64)."""

ENTRIES = ("forward", "out_shape", "params", "macs", "read_units", "interval", "carry", "zonotope", "back")
"""The methods every kind implements."""

LINEAR_ENTRIES = ("patch_norm", "patches", "pads_inputs")
"""The methods a ``linear`` kind (units, weights per input channel) implements as well."""

ROLES = ("linear", "relu", "max", "avg", "flatten", "batchnorm", "passive", "add", "concat", None)
"""A kind's ``role`` in the walk: in a hidden layer's path (see :mod:`tropref.network.structure`),
compressible, the activation, max or average pooling, a flatten, a BatchNorm, the identity
(dropout and identities: the walk skips it); a junction's, a sum (a residual stream's
junction, :mod:`tropref.network.coupled`) or a concatenation; or none of these (a hidden
layer's path stops there)."""


class Kind(ABC):
    """What the walk needs of one layer type (see the module notes).

    Attributes
    ----------
    layer_type : type
        The layer type of :mod:`tropref.network.layers`.
    linear : bool
        A dense or convolutional layer: it has units and weights per input channel.
    passes_channels : bool
        Output channel ``c`` is input channel ``c``, unparametrised.
    junction : bool
        It reads two or more layers.
    role : str or None
        One of :data:`ROLES`.
    """

    layer_type: type
    linear = False
    passes_channels = False
    junction = False
    role: str | None = None

    @abstractmethod
    def forward(self, xp: Any, layer: Layer, xs: Sequence[Array]) -> Array:
        """The output for the outputs ``xs`` of the layers it reads (batched on axis 0)."""

    @abstractmethod
    def out_shape(self, layer: Layer, ins: Sequence[Shape], label: str) -> Shape:
        """One sample's output shape for its inputs' shapes; errors name ``label``."""

    @abstractmethod
    def params(self, layer: Layer) -> int:
        """Its parameters (weights and biases; not buffers such as running statistics)."""

    @abstractmethod
    def macs(self, layer: Layer, out_shape: Shape | None) -> int | None:
        """Its multiply-accumulates for one sample (None: unknown without ``out_shape``)."""

    @abstractmethod
    def read_units(
        self, xp: Any, layer: Layer, n: int, order: str | None, label: str, source: str
    ) -> tuple[Array, Callable[[Array], Array]] | None:
        """Its weights with the ``n`` units of the layer before it (``source``) on axis 1, and
        the map back, or None when it has no weights per input channel. ``order`` is the
        order of a flatten in between (None: none)."""

    @abstractmethod
    def interval(self, xp: Any, layer: Layer, ins: Sequence[Bounds]) -> Bounds:
        """Elementwise ``(lo, hi)`` on its output from ``(lo, hi)`` on each input (batched)."""

    @abstractmethod
    def carry(self, layer: Layer, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        """Per-channel bounds on the change of its output from per-channel bounds ``es`` on
        the change of each input (host float64), whose shapes are ``in_shapes``."""

    @abstractmethod
    def zonotope(
        self, xp: Any, layer: Layer, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        """Its output zonotope from its inputs' (one sample; a junction's inputs over the same
        generators), where ``bounds`` bound each input, and the radius per output entry of
        the new independent term its relaxation adds (None: the step is exact)."""

    @abstractmethod
    def back(self, layer: Layer, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        """One back-substitution step: for rows ``lam`` ``(N, S, *out_shape)``, coefficients
        ``lam_p`` on each input and constants ``c`` ``(N, S)`` with ``lam · output <= Σ_p
        lam_p · input_p + c`` for all inputs within ``bounds`` (N samples, S rows each)."""


class _Weightless(Kind):
    """A layer without weights: no parameters, no multiply-accumulates, nothing to rewrite."""

    def params(self, layer: Layer) -> int:
        return 0

    def macs(self, layer: Layer, out_shape: Shape | None) -> int | None:
        return 0

    def read_units(
        self, xp: Any, layer: Layer, n: int, order: str | None, label: str, source: str
    ) -> tuple[Array, Callable[[Array], Array]] | None:
        return None


class _Monotone(_Weightless):
    """An elementwise non-decreasing map of one input (or the identity) that keeps the shape
    and the channels: its interval step maps both ends, its certificate step keeps the bounds."""

    def out_shape(self, layer: Layer, ins: Sequence[Shape], label: str) -> Shape:
        return ins[0]

    def interval(self, xp: Any, layer: Layer, ins: Sequence[Bounds]) -> Bounds:
        lo, hi = ins[0]
        return self.forward(xp, layer, [lo]), self.forward(xp, layer, [hi])

    def carry(self, layer: Layer, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        return es[0]

    def zonotope(
        self, xp: Any, layer: Layer, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        # exact for the linear ones (average pooling, flatten, identities): non-negative
        # weights and no bias keep the box's radii non-negative; ReLU and max-pooling relax
        G, c, r = ins[0]
        return (self.forward(xp, layer, [G]), self.forward(xp, layer, [c]), self.forward(xp, layer, [r])), None


def _no_constant(lam: np.ndarray) -> np.ndarray:
    return np.zeros((int(lam.shape[0]), int(lam.shape[1])))


def _identity(V: Array) -> Array:
    return V


class _Linear(Kind):
    """A dense or convolutional layer: units on axis 0 of ``W``, an optional bias."""

    linear = True
    role = "linear"
    images = False  # whether it reads (C, H, W) images

    def params(self, layer: Layer) -> int:
        return int(np.prod(layer.W.shape)) + (0 if layer.b is None else int(layer.b.shape[0]))

    @abstractmethod
    def patch_norm(self, layer: Layer, bound: Array) -> float:
        """The largest ``‖(patch, 1)‖`` it reads from inputs with ``|x| <= bound``."""

    @abstractmethod
    def patches(self, layer: Layer, x: Array, rng: np.random.Generator, max_patches: int) -> Array:
        """What it reads from the batch ``x``, as rows for a data-driven method."""

    @abstractmethod
    def pads_inputs(self, layer: Layer) -> bool:
        """Whether it zero-pads its input (a constant input is then not a bias)."""


class _DenseKind(_Linear):
    """``y = x W^T + b``."""

    layer_type = Dense

    def forward(self, xp: Any, layer: Dense, xs: Sequence[Array]) -> Array:
        x = xs[0]
        if x.ndim != 2:
            raise ValueError(
                f"Dense {layer.name!r} needs a 2-D input (N, d); got shape {tuple(x.shape)} (missing Flatten?)"
            )
        y = xp.matmul(x, xp.permute_dims(layer.W, (1, 0)))
        return y if layer.b is None else y + layer.b

    def out_shape(self, layer: Dense, ins: Sequence[Shape], label: str) -> Shape:
        shape = ins[0]
        if len(shape) != 1 or shape[0] != layer.W.shape[1]:
            raise ValueError(
                f"{label} expects ({layer.W.shape[1]},) inputs, gets {shape}: its input size does not match the data"
            )
        return (layer.units,)

    def macs(self, layer: Dense, out_shape: Shape | None) -> int | None:
        return int(np.prod(layer.W.shape))

    def read_units(
        self, xp: Any, layer: Dense, n: int, order: str | None, label: str, source: str
    ) -> tuple[Array, Callable[[Array], Array]] | None:
        # after a flatten each of the n channels is a block of s features, interleaved in
        # the flatten's order: the view puts the channel on axis 1 and the s features on axis 2
        W = layer.W
        if order is None:
            return W, _identity
        m, d = int(W.shape[0]), int(W.shape[1])
        if d % n:
            raise ValueError(f"{label} has {d} inputs, not a multiple of the {n} channels of {source}")
        s = d // n
        if order == "channels_first":
            return xp.reshape(W, (m, n, s)), lambda V: xp.reshape(V, (m, -1))
        # channels last: one C-ordered copy of the view, the values a channels-first flatten
        # would give in its layout, so that the rewrite's gathers and the certificate's
        # products read it as they read that one (on the strided view each of them copied it
        # element by element: seconds on VGG-16's fc1), and to the same round-off
        view = xp.reshape(xp.permute_dims(xp.reshape(W, (m, s, n)), (0, 2, 1)), (m, n, s), copy=True)
        return view, lambda V: xp.reshape(xp.permute_dims(V, (0, 2, 1)), (m, -1))

    def interval(self, xp: Any, layer: Dense, ins: Sequence[Bounds]) -> Bounds:
        lo, hi = ins[0]
        c, r = (lo + hi) / 2, (hi - lo) / 2
        c = self.forward(xp, layer, [c])
        r = xp.matmul(r, xp.permute_dims(xp.abs(layer.W), (1, 0)))
        return c - r, c + r

    def carry(self, layer: Dense, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        return np.abs(layer.W) @ es[0]

    def zonotope(
        self, xp: Any, layer: Dense, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        G, c, r = ins[0]
        return (G @ layer.W.T, self.forward(xp, layer, [c]), r @ np.abs(layer.W).T), None

    def back(self, layer: Dense, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        return [lam @ layer.W], _no_constant(lam) if layer.b is None else lam @ layer.b

    def patch_norm(self, layer: Dense, bound: Array) -> float:
        xp = namespace(bound=bound)
        return math.sqrt(float(to_numpy(xp.sum(bound * bound))) + 1.0)

    def patches(self, layer: Dense, x: Array, rng: np.random.Generator, max_patches: int) -> Array:
        return x

    def pads_inputs(self, layer: Dense) -> bool:
        return False


class _Conv2dKind(_Linear):
    """A 2-D cross-correlation (one im2col product, :func:`~tropref.network.windows.conv2d`)."""

    layer_type = Conv2d
    images = True

    def forward(self, xp: Any, layer: Conv2d, xs: Sequence[Array]) -> Array:
        x = xs[0]
        if x.ndim != 4:
            raise ValueError(f"Conv2d {layer.name!r} needs a 4-D input (N, C, H, W); got shape {tuple(x.shape)}")
        return conv2d(xp, x, layer.W, layer.b, layer.stride, layer.padding, layer.dilation)

    def out_shape(self, layer: Conv2d, ins: Sequence[Shape], label: str) -> Shape:
        shape = ins[0]
        if len(shape) != 3 or shape[0] != layer.W.shape[1]:
            raise ValueError(f"{label} expects ({layer.W.shape[1]}, H, W) inputs, gets {shape}")
        t, b, l, r = layer.padding
        kh, kw = int(layer.W.shape[2]), int(layer.W.shape[3])
        return (
            layer.units,
            out_size(shape[1], kh, layer.stride[0], t, b, layer.dilation[0]),
            out_size(shape[2], kw, layer.stride[1], l, r, layer.dilation[1]),
        )

    def macs(self, layer: Conv2d, out_shape: Shape | None) -> int | None:
        if out_shape is None:
            return None
        return int(np.prod(layer.W.shape)) * int(out_shape[1]) * int(out_shape[2])

    def read_units(
        self, xp: Any, layer: Conv2d, n: int, order: str | None, label: str, source: str
    ) -> tuple[Array, Callable[[Array], Array]] | None:
        return layer.W, _identity  # OIHW: the input channels are already on axis 1

    def interval(self, xp: Any, layer: Conv2d, ins: Sequence[Bounds]) -> Bounds:
        lo, hi = ins[0]
        c, r = (lo + hi) / 2, (hi - lo) / 2
        if isinstance(c, np.ndarray) and c.ndim == 4 and c.dtype == np.float64:  # the certificates' host arithmetic
            W = np.asarray(layer.W)
            c, r = conv_host(c, W, layer), conv_host(r, np.abs(W), layer)
            if layer.b is not None:
                c = c + np.asarray(layer.b).reshape(1, -1, 1, 1)
            return c - r, c + r
        c = self.forward(xp, layer, [c])
        r = conv2d(xp, r, xp.abs(layer.W), None, layer.stride, layer.padding, layer.dilation)
        return c - r, c + r

    def carry(self, layer: Conv2d, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        return np.abs(layer.W).sum(axis=(2, 3)) @ es[0]

    def zonotope(
        self, xp: Any, layer: Conv2d, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        G, c, r = ins[0]
        r = conv2d(xp, r, np.abs(layer.W), None, layer.stride, layer.padding, layer.dilation)
        return (conv_rows(G, layer), self.forward(xp, layer, [c]), r), None

    def back(self, layer: Conv2d, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        n, s = int(lam.shape[0]), int(lam.shape[1])
        c = _no_constant(lam) if layer.b is None else np.einsum("nsohw,o->ns", lam, layer.b)
        flat = lam.reshape((n * s, *lam.shape[2:]))
        back = conv_transpose(flat, layer, tuple(bounds[0][0].shape[2:]))
        return [back.reshape((n, s, *back.shape[1:]))], c

    def patch_norm(self, layer: Conv2d, bound: Array) -> float:
        # the squared norm of every window: a convolution of the per-pixel squared bounds
        # (summed over the channels) with a kernel of ones
        xp = namespace(bound=bound)
        per_pixel = xp.sum(bound * bound, axis=0)[None, None, ...]  # (1, 1, H, W)
        ones = xp.ones((1, 1, int(layer.W.shape[2]), int(layer.W.shape[3])), dtype=bound.dtype, device=device(bound))
        sums = conv2d(xp, per_pixel, ones, None, layer.stride, layer.padding, layer.dilation)
        return math.sqrt(float(to_numpy(xp.max(sums))) + 1.0)

    def patches(self, layer: Conv2d, x: Array, rng: np.random.Generator, max_patches: int) -> Array:
        t, b, l, r = layer.padding
        kh, kw = int(layer.W.shape[2]), int(layer.W.shape[3])
        Ho = out_size(int(x.shape[2]), kh, layer.stride[0], t, b, layer.dilation[0])
        Wo = out_size(int(x.shape[3]), kw, layer.stride[1], l, r, layer.dilation[1])
        total = int(x.shape[0]) * Ho * Wo
        index = None if total <= max_patches else np.sort(rng.choice(total, size=max_patches, replace=False))
        return conv_patches(layer, x, index)

    def pads_inputs(self, layer: Conv2d) -> bool:
        return layer.padded


class _BatchNormKind(Kind):
    """``y = scale x + shift`` per channel; its parameters are per channel, so merged channels
    rewrite it (:mod:`tropref.network.rewrite` folds it into the next layer or keeps it on
    the kept channels), and it has no weights across channels."""

    layer_type = BatchNorm
    role = "batchnorm"

    def forward(self, xp: Any, layer: BatchNorm, xs: Sequence[Array]) -> Array:
        x = xs[0]
        return x * channel_view(xp, layer.scale, x.ndim) + channel_view(xp, layer.shift, x.ndim)

    def out_shape(self, layer: BatchNorm, ins: Sequence[Shape], label: str) -> Shape:
        shape = ins[0]
        if shape[0] != layer.channels:
            raise ValueError(f"{label} has {layer.channels} channels, its input has {shape[0]}")
        return shape

    def params(self, layer: BatchNorm) -> int:
        return 2 * layer.channels  # weight and bias; the running statistics are buffers

    def macs(self, layer: BatchNorm, out_shape: Shape | None) -> int | None:
        return 0  # folds into a neighbour at deployment

    def read_units(
        self, xp: Any, layer: BatchNorm, n: int, order: str | None, label: str, source: str
    ) -> tuple[Array, Callable[[Array], Array]] | None:
        return None

    def interval(self, xp: Any, layer: BatchNorm, ins: Sequence[Bounds]) -> Bounds:
        lo, hi = ins[0]
        c, r = (lo + hi) / 2, (hi - lo) / 2
        c = self.forward(xp, layer, [c])
        r = r * channel_view(xp, xp.abs(layer.scale), r.ndim)
        return c - r, c + r

    def carry(self, layer: BatchNorm, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        return np.abs(layer.scale) * es[0]

    def zonotope(
        self, xp: Any, layer: BatchNorm, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        G, c, r = ins[0]
        scale = channel_view(xp, np.asarray(layer.scale), G.ndim)
        return (G * scale, self.forward(xp, layer, [c]), r * np.abs(scale)), None

    def back(self, layer: BatchNorm, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        n, s, c = int(lam.shape[0]), int(lam.shape[1]), int(lam.shape[2])
        scale, shift = np.asarray(layer.scale), np.asarray(layer.shift)
        view = (1, 1, -1) + (1,) * (lam.ndim - 3)
        # the constant from the sums per channel: no product as large as lam
        return [lam * scale.reshape(view)], lam.reshape(n, s, c, -1).sum(axis=3) @ shift


class _ReLUKind(_Monotone):
    """``max(x, 0)``."""

    layer_type = ReLU
    passes_channels = True
    role = "relu"

    def forward(self, xp: Any, layer: ReLU, xs: Sequence[Array]) -> Array:
        x = xs[0]
        return xp.maximum(x, xp.asarray(0, dtype=x.dtype, device=device(x)))

    def zonotope(
        self, xp: Any, layer: ReLU, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        # DeepZ: λ z <= relu(z) <= λ z + 2 μ on [l, u] where the sign is open (2 μ the chord's offset)
        (G, c, r), (lo, hi) = ins[0], bounds[0]
        _, lam, offset = _relu_chord(lo, hi)
        mu = offset / 2
        return (G * lam, c * lam + mu, r * lam), mu

    def back(self, layer: ReLU, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        # above by the chord, below by λ z (λ = 1 when u >= −l, else 0); exact where the sign is fixed
        lo, hi = bounds[0][0], bounds[0][1]
        open_, up_slope, up_const = _relu_chord(lo, hi)
        low_slope = ((lo >= 0) | (open_ & (hi >= -lo))).astype(np.float64)  # 1 or 0, without np.where
        n, s = int(lam.shape[0]), int(lam.shape[1])
        # lam is the largest array of the bound: its positive part takes the chord's slope,
        # its negative part the lower line's, by plain products (np.where with a mask costs
        # 3.5 ns an entry, a product 0.3), and the sum is exactly lam · slope since one of its
        # two terms is 0. The constants: n batched products of the positive parts with the
        # chord offsets
        pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
        c = (pos.reshape(n, s, -1) @ up_const.reshape(n, -1, 1))[..., 0]
        np.multiply(pos, up_slope[:, None], out=pos)
        np.multiply(neg, low_slope[:, None], out=neg)
        return [np.add(pos, neg, out=pos)], c


def _relu_chord(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the sign of ``z ∈ [l, u]`` is open, and the chord ``relu(z) <= s z + t`` over it:
    ``s = u / (u − l)``, ``t = −u l / (u − l)`` where open, ``(1, 0)`` where ``l >= 0``,
    ``(0, 0)`` where ``u <= 0`` (exact there). Both certificate steps of ReLU relax with it."""
    open_ = (lo < 0) & (hi > 0)
    width = np.where(open_, hi - lo, 1.0)
    slope = np.where(lo >= 0, 1.0, np.where(open_, hi / width, 0.0))
    return open_, slope, np.where(open_, -hi * lo / width, 0.0)


class _Pool(_Monotone):
    """A pooling window per channel: the channels pass, the positions shrink."""

    passes_channels = True

    def out_shape(self, layer: MaxPool2d, ins: Sequence[Shape], label: str) -> Shape:
        shape = ins[0]
        if len(shape) != 3:
            raise ValueError(f"{label} needs (C, H, W) inputs, gets {shape}")
        t, b, l, r = layer.padding
        return (
            shape[0],
            out_size(shape[1], layer.kernel[0], layer.stride[0], t, b),
            out_size(shape[2], layer.kernel[1], layer.stride[1], l, r),
        )


class _MaxPool2dKind(_Pool):
    """Max pooling (non-decreasing in every input)."""

    layer_type = MaxPool2d
    role = "max"

    def forward(self, xp: Any, layer: MaxPool2d, xs: Sequence[Array]) -> Array:
        return max_pool(xp, xs[0], layer.kernel, layer.stride, layer.padding)

    def zonotope(
        self, xp: Any, layer: MaxPool2d, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        # the winner's entry where it is certain (its lower bound is at least every other
        # entry's upper bound), the interval [max l, max u] elsewhere, as a new term (a
        # generator, not the box, where the cap allows; following the likeliest winner
        # instead, x_j + [0, u_other − l_j], is never narrower)
        j, l_max, uj, u_other = _pool_winner(layer, *bounds[0])
        j = j[None]  # (1, 1, C, Ho, Wo)
        sure, u_max = l_max >= u_other, np.maximum(uj, u_other)
        Gp, cp, rp = (
            np.take_along_axis(pool_stack(a, layer, 0.0), np.broadcast_to(j, (1, a.shape[0], *j.shape[2:])), axis=0)[0]
            for a in ins[0]
        )
        radius = np.where(sure, 0.0, (u_max - l_max) / 2)
        return (Gp * sure, np.where(sure, cp, (l_max + u_max) / 2), rp * sure), radius

    def back(self, layer: MaxPool2d, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        # below by the entry j of largest lower bound; above by x_j + max(0, u_other − l_j)
        # or by the constant max u, whichever is smaller at its worst
        lo = bounds[0][0]
        j, lj, uj, u_other = _pool_winner(layer, *bounds[0])  # j: (N, C, Ho, Wo)
        gap = np.maximum(u_other - lj, 0.0)
        u_max = np.maximum(uj, u_other)
        follow = uj + gap <= u_max  # the linear upper bound is no worse than the constant
        up_const = np.where(follow, gap, u_max)[:, None]
        pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
        coef = pos * follow[:, None] + neg  # on x_j
        n, s = int(lam.shape[0]), int(lam.shape[1])
        c = (pos * up_const).reshape(n, s, -1).sum(axis=2)
        flat = coef.reshape((n * s, *coef.shape[2:]))
        jj = np.broadcast_to(j[:, None], coef.shape).reshape(flat.shape)
        parts = [np.where(jj == k, flat, 0.0) for k in range(layer.kernel[0] * layer.kernel[1])]
        back = pool_scatter(layer, (n * s, *lo.shape[1:]), parts)
        return [back.reshape((n, s, *back.shape[1:]))], c


def _pool_winner(layer: MaxPool2d, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    """In each window of the max-pooling, the entry ``j`` of largest lower bound, its bounds
    ``l_j`` (the largest lower bound) and ``u_j``, and the largest upper bound of the other
    entries (−inf in a window of one entry). Both certificate steps relax around it."""
    lows, highs = pool_stack(lo, layer, -math.inf), pool_stack(hi, layer, -math.inf)
    j = np.argmax(lows, axis=0)
    lj = np.take_along_axis(lows, j[None], axis=0)[0]
    uj = np.take_along_axis(highs, j[None], axis=0)[0]
    others = highs.copy()
    np.put_along_axis(others, j[None], -math.inf, axis=0)
    u_other = others.max(axis=0) if others.shape[0] > 1 else np.full_like(uj, -math.inf)
    return j, lj, uj, u_other


class _AvgPool2dKind(_Pool):
    """Average pooling (non-negative weights: non-decreasing in every input)."""

    layer_type = AvgPool2d
    role = "avg"

    def forward(self, xp: Any, layer: AvgPool2d, xs: Sequence[Array]) -> Array:
        return avg_pool(xp, xs[0], layer.kernel, layer.stride, layer.padding, layer.count_include_pad)

    def back(self, layer: AvgPool2d, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        in_shape = bounds[0][0].shape
        n, s = int(lam.shape[0]), int(lam.shape[1])
        flat = lam.reshape((n * s, *lam.shape[2:]))
        if layer.count_include_pad or not layer.padded:
            count = np.full((1, 1, *tuple(flat.shape[2:])), float(layer.kernel[0] * layer.kernel[1]))
        else:
            count = pool_stack(np.ones((1, 1, *in_shape[2:])), layer, 0.0).sum(axis=0)
        part = flat / count
        back = pool_scatter(layer, (n * s, *in_shape[1:]), [part] * (layer.kernel[0] * layer.kernel[1]))
        return [back.reshape((n, s, *back.shape[1:]))], _no_constant(lam)


class _FlattenKind(_Monotone):
    """``(N, C, H, W)`` to ``(N, C H W)`` in its order; each channel becomes ``H W`` features."""

    layer_type = Flatten
    role = "flatten"

    def forward(self, xp: Any, layer: Flatten, xs: Sequence[Array]) -> Array:
        x = xs[0]
        if x.ndim == 2:
            return x
        if layer.order == "channels_last":
            x = xp.permute_dims(x, (0, 2, 3, 1))
        return xp.reshape(x, (x.shape[0], -1))

    def out_shape(self, layer: Flatten, ins: Sequence[Shape], label: str) -> Shape:
        return (int(np.prod(ins[0])),)

    def carry(self, layer: Flatten, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        # a channel's bound holds for each of its positions, which the flatten lays out
        # channel by channel (channels_first) or position by position (channels_last)
        x, shape_in = es[0], in_shapes[0]
        if len(shape_in) == 3:
            n = int(shape_in[1] * shape_in[2])
            x = np.repeat(x, n) if layer.order == "channels_first" else np.tile(x, n)
        return x

    def back(self, layer: Flatten, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        lo = bounds[0][0]
        n, s = int(lam.shape[0]), int(lam.shape[1])
        if lo.ndim == 2:
            return [lam], _no_constant(lam)
        C, H, W = (int(d) for d in lo.shape[1:])
        if layer.order == "channels_last":
            return [lam.reshape(n, s, H, W, C).transpose(0, 1, 4, 2, 3)], _no_constant(lam)
        return [lam.reshape(n, s, C, H, W)], _no_constant(lam)


class _Passive(_Monotone):
    """The identity at inference."""

    passes_channels = True
    role = "passive"

    def forward(self, xp: Any, layer: Layer, xs: Sequence[Array]) -> Array:
        return xs[0]

    def back(self, layer: Layer, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        return [lam], _no_constant(lam)


class _DropoutKind(_Passive):
    """Dropout: the identity at inference."""

    layer_type = Dropout


class _IdentityKind(_Passive):
    """The identity (also a BatchNorm folded during the walk, a subclass)."""

    layer_type = Identity


class _SoftmaxKind(_Weightless):
    """``softmax`` over the features of a 2-D input."""

    layer_type = Softmax

    def forward(self, xp: Any, layer: Softmax, xs: Sequence[Array]) -> Array:
        x = xs[0]
        if x.ndim != 2:
            raise ValueError(f"Softmax {layer.name!r} needs a 2-D input (N, d); got shape {tuple(x.shape)}")
        z = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        return z / xp.sum(z, axis=1, keepdims=True)

    def out_shape(self, layer: Softmax, ins: Sequence[Shape], label: str) -> Shape:
        return ins[0]

    def interval(self, xp: Any, layer: Softmax, ins: Sequence[Bounds]) -> Bounds:
        # p_i is increasing in z_i and decreasing in the other z_j: p_i >= 1 / (1 + Σ_{j≠i}
        # exp(hi_j - lo_i)), written with shifted exponents so that no 0/0 occurs
        lo, hi = ins[0]
        lo_p = 1.0 / (1.0 + _sum_others_exp(xp, lo, hi))
        hi_p = 1.0 / (1.0 + _sum_others_exp(xp, hi, lo))
        return lo_p, hi_p

    def carry(self, layer: Softmax, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        x = es[0]  # |Δp_i| <= 2 p_i (1 - p_i) max_j |Δz_j|, and p_i is in [0, 1]
        return np.full_like(x, min(np.max(x) / 2, 1.0))

    # the local certificate takes a final softmax as a bound on the logits' change (its own
    # rule, tropref.network.local) and refuses one inside the network: no step passes it
    def zonotope(
        self, xp: Any, layer: Softmax, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        raise ValueError("the local certificate cannot pass a Softmax layer")

    def back(self, layer: Softmax, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        raise ValueError("the local certificate cannot pass a Softmax layer")


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


class _AddKind(_Weightless):
    """The sum of its inputs, of one shape."""

    layer_type = Add
    junction = True
    role = "add"

    def forward(self, xp: Any, layer: Add, xs: Sequence[Array]) -> Array:
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"Add {layer.name!r} sums inputs of different shapes {sorted(shapes)}")
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def out_shape(self, layer: Add, ins: Sequence[Shape], label: str) -> Shape:
        if len(set(ins)) != 1:
            raise ValueError(f"{label} sums inputs of different shapes {list(ins)}")
        return ins[0]

    def interval(self, xp: Any, layer: Add, ins: Sequence[Bounds]) -> Bounds:
        lo, hi = ins[0]
        for a, b in ins[1:]:
            lo, hi = lo + a, hi + b
        return lo, hi

    def carry(self, layer: Add, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        return np.sum(es, axis=0)  # the paths that meet add up

    def zonotope(
        self, xp: Any, layer: Add, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        return _junction_zonotope(self, xp, layer, ins), None

    def back(self, layer: Add, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        return [lam] * len(bounds), _no_constant(lam)


class _ConcatKind(_Weightless):
    """Its inputs joined along the channels (axis 1 of a batch)."""

    layer_type = Concat
    junction = True
    role = "concat"

    def forward(self, xp: Any, layer: Concat, xs: Sequence[Array]) -> Array:
        if len({(x.ndim, *tuple(x.shape[2:])) for x in xs}) != 1:
            raise ValueError(
                f"Concat {layer.name!r} joins inputs of shapes {[tuple(x.shape) for x in xs]}: only the "
                "channel axis may differ"
            )
        return xp.concat(list(xs), axis=1)

    def out_shape(self, layer: Concat, ins: Sequence[Shape], label: str) -> Shape:
        if len({s[1:] for s in ins}) != 1 or len({len(s) for s in ins}) != 1:
            raise ValueError(f"{label} joins inputs of shapes {list(ins)}: only the channel axis may differ")
        return (sum(s[0] for s in ins), *ins[0][1:])

    def interval(self, xp: Any, layer: Concat, ins: Sequence[Bounds]) -> Bounds:
        return xp.concat([a for a, _ in ins], axis=1), xp.concat([b for _, b in ins], axis=1)

    def carry(self, layer: Concat, es: Sequence[np.ndarray], in_shapes: Sequence[Shape]) -> np.ndarray:
        return np.concatenate(es)

    def zonotope(
        self, xp: Any, layer: Concat, ins: Sequence[Zonotope], bounds: Sequence[Bounds]
    ) -> tuple[Zonotope, np.ndarray | None]:
        return _junction_zonotope(self, xp, layer, ins), None

    def back(self, layer: Concat, lam: np.ndarray, bounds: Sequence[Bounds]) -> tuple[list[np.ndarray], np.ndarray]:
        ends = np.cumsum([0] + [int(lo.shape[1]) for lo, _ in bounds])
        return [lam[:, :, a:b] for a, b in itertools.pairwise(ends)], _no_constant(lam)


def _junction_zonotope(kind: Kind, xp: Any, layer: Layer, ins: Sequence[Zonotope]) -> Zonotope:
    """A junction's output zonotope: its map on the generators, centres and radii alike (its
    inputs share the generators; adding or joining keeps the radii non-negative)."""
    G, c, r = ([z[k] for z in ins] for k in range(3))
    return kind.forward(xp, layer, G), kind.forward(xp, layer, c), kind.forward(xp, layer, r)


KINDS: dict[type, Kind] = {
    kind.layer_type: kind
    for kind in (
        _DenseKind(),
        _Conv2dKind(),
        _BatchNormKind(),
        _ReLUKind(),
        _MaxPool2dKind(),
        _AvgPool2dKind(),
        _FlattenKind(),
        _DropoutKind(),
        _IdentityKind(),
        _SoftmaxKind(),
        _AddKind(),
        _ConcatKind(),
    )
}
"""Layer type -> its kind, one for each of :data:`~tropref.network.layers.LAYER_TYPES`."""


def kind_of(layer: Layer) -> Kind:
    """The :class:`Kind` of a layer: of its type, or of the nearest base type that has one
    (a subclass such as the walk's folded BatchNorm, an :class:`Identity`, is its base's kind).

    Raises
    ------
    TypeError
        When no type of the layer has a kind.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense, ReLU, AvgPool2d
    >>> fc = Dense(np.ones((4, 3)), np.zeros(4))
    >>> kind = kind_of(fc)
    >>> kind.linear, kind.params(fc), kind.out_shape(fc, [(3,)], "fc")
    (True, 16, (4,))
    >>> kind_of(ReLU()).passes_channels, kind_of(AvgPool2d(2)).role
    (True, 'avg')
    """
    for cls in type(layer).__mro__:
        kind = KINDS.get(cls)
        if kind is not None:
            return kind
    raise TypeError(
        f"layer {layer!r} of type {type(layer).__name__} has no kind: add one to "
        "tropref.network.kinds.KINDS, or register one with tropref.network.register_kind "
        "(docs/architecture.md, 'Adding a layer type')"
    )


_SHIPPED = frozenset(KINDS)  # the shipped layer types: their kinds are the library's own


def check_kind(kind: Kind) -> None:
    """Check that ``kind`` is a complete :class:`Kind`: every entry of :data:`ENTRIES`
    implemented (and of :data:`LINEAR_ENTRIES` for a ``linear`` one), a ``role`` in
    :data:`ROLES`, boolean flags.

    Raises
    ------
    TypeError
        When ``kind`` is not a :class:`Kind`, leaves an entry unimplemented, or a flag is not a bool.
    ValueError
        For a ``role`` outside :data:`ROLES`; ``linear`` and ``role == "linear"`` disagreeing;
        a junction's role for another kind, or a junction with another role or passing channels.

    Examples
    --------
    >>> from tropref.network import ReLU
    >>> check_kind(kind_of(ReLU()))
    >>> check_kind("relu")
    Traceback (most recent call last):
        ...
    TypeError: `kind` must be a tropref.network.kinds.Kind, got str
    """
    if not isinstance(kind, Kind):
        raise TypeError(f"`kind` must be a tropref.network.kinds.Kind, got {type(kind).__name__}")
    name = type(kind).__name__
    for flag in ("linear", "passes_channels", "junction"):
        if not isinstance(getattr(kind, flag), bool):
            raise TypeError(f"`kind` {name}: `{flag}` must be a bool, got {getattr(kind, flag)!r}")
    if kind.role not in ROLES:
        raise ValueError(f"`kind` {name}: `role` must be one of {ROLES}, got {kind.role!r}")
    if kind.linear != (kind.role == "linear"):
        raise ValueError(f"`kind` {name}: a kind is `linear` exactly when its `role` is 'linear'")
    if kind.role in ("add", "concat") and not kind.junction:
        raise ValueError(f"`kind` {name}: the role {kind.role!r} is a junction's (set `junction = True`)")
    if kind.junction and (kind.passes_channels or kind.role not in ("add", "concat", None)):
        raise ValueError(f"`kind` {name}: a junction passes no channels and has the role 'add', 'concat' or None")
    for entry in ENTRIES + (LINEAR_ENTRIES if kind.linear else ()):
        method = getattr(type(kind), entry, None)
        if not callable(method) or getattr(method, "__isabstractmethod__", False):
            raise TypeError(f"`kind` {name} does not implement the entry `{entry}`")
    if kind.linear and not isinstance(getattr(kind, "images", None), bool):
        raise TypeError(f"`kind` {name}: a linear kind sets `images` (a bool)")


def register_kind(layer_type: type, kind: Kind, *, replace: bool = False) -> None:
    """Make ``layer_type`` a layer of :mod:`tropref.network`, its walk steps given by ``kind``.

    After it, :class:`~tropref.network.Network` accepts layers of ``layer_type`` (and of its
    subclasses), and the forward pass, the shapes and counts, the walk of
    :func:`~tropref.network.compress_network`, the network certificate and
    :func:`~tropref.network.certify` reach them through :func:`kind_of`. What the walk does
    with the layer follows from the kind's ``role`` (``docs/architecture.md``, "Adding a
    layer type"): a kind whose role is None stops a hidden layer's path (the layer before it
    is not compressed, which is always safe); ``"passive"`` promises the identity.
    ``passes_channels`` promises that output channel ``c`` is input channel ``c`` mapped on
    its own, commuting with non-negative per-channel scales and mapping 0 to 0 (merged
    channels of a coupled group then pass through it). The adapters know only the shipped
    layer types: they refuse a network with others.

    Parameters
    ----------
    layer_type : type
        A frozen dataclass, as the layer types of :mod:`tropref.network.layers` (the walk
        rewrites layers with :func:`dataclasses.replace`); not a shipped layer type.
    kind : Kind
        An instance of a :class:`Kind` subclass implementing every entry
        (:func:`check_kind`); its ``layer_type``, when set, is ``layer_type``.
    replace : bool
        Replace the kind of a type registered before (a shipped type's kind is never
        replaced: the library's results and the adapters rest on it).

    Raises
    ------
    TypeError
        When ``layer_type`` is not a dataclass type, or as :func:`check_kind`.
    ValueError
        For a shipped layer type; for a type registered before without ``replace=True``;
        when ``kind.layer_type`` is another type; as :func:`check_kind`.

    See Also
    --------
    unregister_kind : the registration undone.

    Examples
    --------
    A layer that halves its input, registered, run, and unregistered:

    >>> import numpy as np
    >>> from dataclasses import dataclass
    >>> from tropref.network import Network, Dense, ReLU
    >>> @dataclass(frozen=True)
    ... class Half:
    ...     name: str | None = None
    >>> class HalfKind(Kind):
    ...     layer_type, passes_channels = Half, True
    ...     def forward(self, xp, layer, xs): return xs[0] / 2
    ...     def out_shape(self, layer, ins, label): return ins[0]
    ...     def params(self, layer): return 0
    ...     def macs(self, layer, out_shape): return 0
    ...     def read_units(self, xp, layer, n, order, label, source): return None
    ...     def interval(self, xp, layer, ins): return ins[0][0] / 2, ins[0][1] / 2
    ...     def carry(self, layer, es, in_shapes): return es[0] / 2
    ...     def zonotope(self, xp, layer, ins, bounds): return tuple(a / 2 for a in ins[0]), None
    ...     def back(self, layer, lam, bounds): return [lam / 2], np.zeros(lam.shape[:2])
    >>> register_kind(Half, HalfKind())
    >>> net = Network([Dense(np.ones((2, 3))), ReLU(), Half()])
    >>> net(np.ones((1, 3))).tolist()
    [[1.5, 1.5]]
    >>> unregister_kind(Half)
    >>> register_kind(Dense, HalfKind())
    Traceback (most recent call last):
        ...
    ValueError: `layer_type` Dense is a shipped layer type: its kind cannot be replaced
    """
    if not isinstance(layer_type, type) or not dataclasses.is_dataclass(layer_type):
        raise TypeError(f"`layer_type` must be a dataclass type (a layer type), got {layer_type!r}")
    if layer_type in _SHIPPED:
        raise ValueError(f"`layer_type` {layer_type.__name__} is a shipped layer type: its kind cannot be replaced")
    if layer_type in KINDS and not replace:
        raise ValueError(
            f"`layer_type` {layer_type.__name__} already has a kind ({type(KINDS[layer_type]).__name__}); "
            "pass replace=True to replace it"
        )
    check_kind(kind)
    declared = getattr(kind, "layer_type", layer_type)
    if declared is not layer_type:
        raise ValueError(
            f"`kind` {type(kind).__name__} is the kind of {getattr(declared, '__name__', declared)!r}, "
            f"not of `layer_type` {layer_type.__name__}"
        )
    KINDS[layer_type] = kind


def unregister_kind(layer_type: type) -> None:
    """Undo :func:`register_kind`: ``layer_type`` has no kind any more.

    Raises
    ------
    ValueError
        For a shipped layer type, or one without a registered kind.

    Examples
    --------
    >>> from tropref.network import ReLU
    >>> unregister_kind(ReLU)
    Traceback (most recent call last):
        ...
    ValueError: `layer_type` ReLU is a shipped layer type: its kind cannot be removed
    """
    name = getattr(layer_type, "__name__", repr(layer_type))
    if layer_type in _SHIPPED:
        raise ValueError(f"`layer_type` {name} is a shipped layer type: its kind cannot be removed")
    if layer_type not in KINDS:
        raise ValueError(f"`layer_type` {name} has no registered kind")
    del KINDS[layer_type]
