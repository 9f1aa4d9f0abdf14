"""Shapes and counts: one sample's shape after every layer, parameters and multiply-accumulates.

:func:`out_size` is the one output-size formula of a convolution or pooling window; the
forward pass, shape inference and patch sampling all use it.

:func:`count_params` counts weights and biases of dense and convolutional layers and the
two affine parameters per channel of a BatchNorm (running statistics are buffers, not
parameters, as in PyTorch). :func:`count_macs` counts the multiply-accumulates of dense and
convolutional layers for one sample (``out * in`` and ``O * C * kh * kw * Ho * Wo``);
BatchNorm, ReLU and pooling are not counted (BatchNorm folds into a neighbour at deployment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .layers import Add, BatchNorm, Concat, Conv2d, Dense, Flatten, Layer, MaxPool2d

if TYPE_CHECKING:  # graph -> forward -> shapes: the annotation alone refers back
    from .graph import Network

__all__ = [
    "out_size",
    "output_shapes",
    "layer_shapes",
    "node_output_shape",
    "layer_params",
    "layer_macs",
    "count_params",
    "count_macs",
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
            out_size(shape[1], kh, layer.stride[0], t, b, layer.dilation[0]),
            out_size(shape[2], kw, layer.stride[1], l, r, layer.dilation[1]),
        )
    if isinstance(layer, MaxPool2d):
        if len(shape) != 3:
            raise ValueError(f"{label} needs (C, H, W) inputs, gets {shape}")
        t, b, l, r = layer.padding
        return (
            shape[0],
            out_size(shape[1], layer.kernel[0], layer.stride[0], t, b),
            out_size(shape[2], layer.kernel[1], layer.stride[1], l, r),
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
