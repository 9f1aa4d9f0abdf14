"""Adaptive pooling read as the fixed pooling it is for one input size.

PyTorch's ``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` (and their functional forms) choose
their windows from the size of their input; the core's poolings have fixed windows. When the
layer's input (``H``, ``W``) is a multiple of its output (``oh``, ``ow``), the adaptive
pooling is exactly the fixed pooling of kernel and stride ``(H / oh, W / ow)``, so the
adapter reads it as :class:`AdaptivePool` and resolves it once the model's input size is
known (:func:`resolve_adaptive`); otherwise the refusal names the model input sizes for
which it would fit.

PyTorch's ``MaxPool2d(ceil_mode=True)`` is the same kind of layer: how many windows it has,
and so how much extra padding after the input the core's floor-mode pooling needs, depends
on its input size. It is read as :class:`CeilPool` and resolved alongside, to a
:class:`~tropref.network.MaxPool2d` whose extra bottom and right padding is ``-inf``.
"""

from __future__ import annotations

from typing import Any

from tropref.adapters._padding import ceil_padding
from tropref.network import AvgPool2d, MaxPool2d
from tropref.network.shapes import node_output_shape

__all__ = ["AdaptivePool", "CeilPool", "resolve_adaptive"]


class AdaptivePool:
    """An adaptive pooling (average or max) of ``output_size`` (an int, a pair, None keeping
    that size), read from the layer ``name``: resolved to a fixed one once the input size is
    known.

    Examples
    --------
    >>> AdaptivePool(True, (2, 2), "pool").resolve((3, 8, 6))
    AvgPool2d(kernel=(4, 3), stride=(4, 3), padding=(0, 0, 0, 0), name='pool', count_include_pad=True)
    """

    def __init__(self, average: bool, output_size: Any, name: str) -> None:
        self.average, self.output_size, self.name = average, output_size, name

    @property
    def kind(self) -> str:
        return "AdaptiveAvgPool2d" if self.average else "AdaptiveMaxPool2d"

    def sizes(self, H: int, W: int) -> tuple[int, int]:
        out = self.output_size
        oh, ow = (out, out) if isinstance(out, int) else tuple(out)
        return oh or H, ow or W  # None keeps that size

    def fits(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != 3:
            return False
        oh, ow = self.sizes(shape[1], shape[2])
        return shape[1] % oh == 0 and shape[2] % ow == 0

    def resolve(self, shape: tuple[int, ...] | None, hint: str = "") -> MaxPool2d:
        if shape is None or len(shape) != 3:
            raise ValueError(
                f"layer {self.name!r} ({self.kind}) needs the model's input size: pass `input_shape=(C, H, W)` "
                "(or `inputs=`), an input size for which this layer's input is a multiple of its output size"
            )
        H, W = shape[1], shape[2]
        oh, ow = self.sizes(H, W)
        if H % oh or W % ow:
            raise ValueError(
                f"layer {self.name!r} ({self.kind}): its input is {H}x{W}, not a multiple of the output {oh}x{ow}; "
                f"tropref reads adaptive pooling as a fixed pooling, so the layer's input must be a multiple of "
                f"{oh}x{ow}{hint}"
            )
        k = (H // oh, W // ow)
        return (AvgPool2d if self.average else MaxPool2d)(k, k, 0, name=self.name)


class CeilPool:
    """A max pooling read with ``ceil_mode=True`` (kernel, stride, symmetric padding
    ``(ph, pw)``) from the layer ``name``: resolved to a floor-mode
    :class:`~tropref.network.MaxPool2d` once its input size is known, the windows that
    ``ceil_mode`` adds kept by extra ``-inf`` padding after the input
    (:func:`~tropref.adapters._padding.ceil_padding`).

    Examples
    --------
    >>> CeilPool((3, 3), (2, 2), (0, 0), "pool").resolve((4, 8, 7))
    MaxPool2d(kernel=(3, 3), stride=(2, 2), padding=(0, 1, 0, 0), name='pool')
    """

    kind = "MaxPool2d with ceil_mode=True"

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int], name: str) -> None:
        self.kernel, self.stride, self.padding, self.name = kernel, stride, padding, name

    def fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 3

    def resolve(self, shape: tuple[int, ...] | None, hint: str = "") -> MaxPool2d:
        if shape is None or len(shape) != 3:
            raise ValueError(
                f"layer {self.name!r} ({self.kind}) needs its input size, (C, H, W): pass the model's "
                "`input_shape=(C, H, W)` (or `inputs=`)"
            )
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        extra_h, extra_w = ceil_padding(shape[1], kh, sh, ph), ceil_padding(shape[2], kw, sw, pw)
        return MaxPool2d(self.kernel, self.stride, (ph, ph + extra_h, pw, pw + extra_w), name=self.name)


_SIZED = (AdaptivePool, CeilPool)  # the layers resolved once the input size is known


def resolve_adaptive(shape: tuple[int, ...] | None, layers: list, inputs: list, problems: list[str]) -> None:
    """Every :class:`AdaptivePool` and :class:`CeilPool` of ``layers`` (reading ``inputs``) as
    the fixed pooling it is for a model input of one sample's ``shape`` (None: unknown), in
    place; what cannot be resolved is added to ``problems``, with the model input sizes that
    would fit.

    Examples
    --------
    >>> layers, problems = [AdaptivePool(False, 7, "pool")], []
    >>> resolve_adaptive((3, 10, 10), layers, [(-1,)], problems)
    >>> print(problems[0])  # doctest: +ELLIPSIS
    layer 'pool' (AdaptiveMaxPool2d): its input is 10x10, not a multiple of the output 7x7; ... e.g. input_shape=(3, 14, 14) ...
    """  # noqa: E501
    for p, layer in enumerate(layers):
        if not isinstance(layer, _SIZED):
            continue
        if shape is None:
            problems.append(
                f"layer {layer.name!r} ({layer.kind}) needs the model's input size: pass `input_shape=(C, H, W)` "
                "(or `inputs=`)"
            )
            continue
        try:
            here = _shape_at(layers, inputs, shape, p)
            layers[p] = layer.resolve(here, "" if layer.fits(here) else _working_sizes(layers, inputs, shape, p, layer))
        except ValueError as exc:
            problems.append(str(exc))
            return  # the shapes after it are unknown


def _shape_at(layers: list, inputs: list, shape: tuple[int, ...], p: int) -> tuple[int, ...]:
    """One sample's input shape of layer ``p`` (the poolings before ``p`` resolved)."""
    outs: list[tuple[int, ...]] = []
    for i in range(p):
        ins = [shape if q < 0 else outs[q] for q in inputs[i]]
        layer = layers[i]
        if isinstance(layer, _SIZED):
            layer = layer.resolve(ins[0])
        outs.append(node_output_shape(layer, ins))
    (q,) = inputs[p]
    return shape if q < 0 else outs[q]


def _working_sizes(layers: list, inputs: list, shape: tuple[int, ...], p: int, layer: AdaptivePool) -> str:
    """A hint naming model input sizes (same channels) for which layer ``p`` fits."""
    if len(shape) != 3:
        return ""
    C, H, W = shape
    first: dict[tuple[int, ...], int] = {}  # layer input -> the smallest square model input giving it
    for size in range(8, 1025):
        try:
            here = _shape_at(layers, inputs, (C, size, size), p)
        except ValueError:
            continue
        oh, ow = layer.sizes(here[1], here[2]) if len(here) == 3 else (0, 0)
        if layer.fits(here) and here[1] >= oh > 0 and here[2] >= ow > 0:
            first.setdefault(here, size)
    if not first:
        return ""
    best = sorted(sorted(first.items(), key=lambda kv: abs(kv[1] - max(H, W)))[:3], key=lambda kv: kv[1])
    sizes = ", ".join(f"input_shape=({C}, {s}, {s}) (the layer then reads {h[1]}x{h[2]})" for h, s in best)
    return f"; the model's input is {H}x{W}: pass an input size that fits, e.g. {sizes}"
