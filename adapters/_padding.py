"""Padding rules shared by the PyTorch and Keras adapters.

The core stores a convolution's or pooling's padding as explicit amounts
``(top, bottom, left, right)``. The frameworks write it otherwise: PyTorch as a symmetric
``(ph, pw)`` or ``"same"``/``"valid"``, its ``ZeroPad2d`` as ``(left, right, top, bottom)``;
Keras as ``"same"``/``"valid"`` (amounts that depend on the input size) and its
``ZeroPadding2D`` as ``((top, bottom), (left, right))``. This module converts between them,
once, so that both adapters agree on every rule (a Keras stride-2 ``"same"`` convolution
written to PyTorch as ``ZeroPad2d`` + ``Conv2d`` reads back as the same padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "Padding",
    "pair",
    "same_padding",
    "ceil_padding",
    "explicit_padding",
    "padding_keyword",
    "symmetric",
    "to_lrtb",
    "from_lrtb",
    "to_pairs",
    "from_pairs",
]

Padding = tuple[int, int, int, int]
"""``(top, bottom, left, right)``: the core's padding of a convolution or pooling."""


def pair(v: Any) -> tuple[int, int]:
    """``(v, v)`` for an int, ``(v[0], v[1])`` for a pair: a framework's 2-D size argument.

    Examples
    --------
    >>> pair(3), pair((2, 1))
    ((3, 3), (2, 1))
    """
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def same_padding(size: int | None, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """``"same"`` padding ``(before, after)`` of one spatial axis.

    The output has ``ceil(size / stride)`` positions, so the padding totals
    ``max((out − 1)·stride + (kernel − 1)·dilation + 1 − size, 0)``; an odd total puts the
    extra pixel after (TensorFlow and Keras at every stride; PyTorch, which has ``"same"`` at
    stride 1 only, agrees there). At stride 1 the total is ``(kernel − 1)·dilation`` whatever
    the size, so ``size`` may then be None.

    Raises
    ------
    ValueError
        When ``size`` is None at a stride above 1 (the padding depends on it).

    Examples
    --------
    >>> same_padding(28, 3, 2), same_padding(None, 5), same_padding(7, 3, 1, 2)
    ((0, 1), (2, 2), (2, 2))
    """
    if size is None:
        if stride != 1:
            raise ValueError(f"'same' padding at stride {stride} depends on the input size, which is not known")
        total = (kernel - 1) * dilation
    else:
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def ceil_padding(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """The extra padding after one spatial axis that makes a floor-mode pooling compute
    PyTorch's ``ceil_mode=True`` one (of symmetric padding ``pad``).

    ``ceil_mode`` rounds the number of windows up, ``ceil((size + 2 pad − kernel) / stride) + 1``,
    except that the last window must start inside the input or its leading padding
    (PyTorch drops it otherwise). The extra positions are padded after the axis, with
    ``-inf`` for a max pooling: they never win a maximum, and every window keeps an input
    value.

    Examples
    --------
    >>> ceil_padding(7, 3, 2), ceil_padding(8, 3, 2), ceil_padding(8, 3, 2, 1), ceil_padding(6, 2, 2)
    (0, 1, 1, 0)
    """
    span = size + 2 * pad - kernel
    out = -(-span // stride) + 1  # ceil
    if (out - 1) * stride >= size + pad:
        out -= 1
    return max((out - 1) * stride + kernel - (size + 2 * pad), 0)


def explicit_padding(
    padding: str,
    hw: Sequence[int] | None,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    name: str,
) -> Padding:
    """The amounts ``(top, bottom, left, right)`` of ``padding="valid"`` or ``"same"`` on an
    input of spatial size ``hw`` (None: unknown, enough at stride 1).

    Raises
    ------
    ValueError
        Naming the layer ``name`` when ``padding`` is another word.

    Examples
    --------
    >>> explicit_padding("same", (28, 28), (3, 3), (2, 2), (1, 1), "conv")
    (0, 1, 0, 1)
    >>> explicit_padding("valid", None, (3, 3), (1, 1), (1, 1), "conv")
    (0, 0, 0, 0)
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        h, w = (None, None) if hw is None else hw
        return same_padding(h, kernel[0], stride[0], dilation[0]) + same_padding(w, kernel[1], stride[1], dilation[1])
    raise ValueError(f"layer {name!r}: padding={padding!r} is not supported")


def padding_keyword(
    pad: Padding, hw: Sequence[int] | None, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> str | None:
    """``"valid"`` or ``"same"`` when the amounts ``pad`` are that keyword's on an input of
    spatial size ``hw``; None when they are neither (an explicit padding layer is needed).

    Examples
    --------
    >>> padding_keyword((0, 1, 0, 1), (28, 28), (3, 3), (2, 2), (1, 1))
    'same'
    >>> padding_keyword((1, 0, 1, 0), (28, 28), (3, 3), (2, 2), (1, 1)) is None
    True
    """
    if not any(pad):
        return "valid"
    if hw is not None and tuple(pad) == explicit_padding("same", hw, kernel, stride, dilation, ""):
        return "same"
    return None


def symmetric(pad: Padding) -> tuple[int, int] | None:
    """``(ph, pw)`` when ``pad`` pads both sides of each axis alike (PyTorch's layer
    padding), else None.

    Examples
    --------
    >>> symmetric((1, 1, 2, 2)), symmetric((0, 1, 0, 1))
    ((1, 2), None)
    """
    top, bottom, left, right = pad
    return (top, left) if top == bottom and left == right else None


def to_lrtb(pad: Padding) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)``: PyTorch's ``ZeroPad2d``/``ConstantPad2d`` order.

    Examples
    --------
    >>> to_lrtb((1, 2, 3, 4))
    (3, 4, 1, 2)
    """
    top, bottom, left, right = pad
    return (left, right, top, bottom)


def from_lrtb(lrtb: Sequence[int]) -> Padding:
    """The core's ``(top, bottom, left, right)`` of PyTorch's ``(left, right, top, bottom)``.

    Examples
    --------
    >>> from_lrtb((3, 4, 1, 2))
    (1, 2, 3, 4)
    """
    left, right, top, bottom = (int(v) for v in lrtb)
    return (top, bottom, left, right)


def to_pairs(pad: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))``: Keras's ``ZeroPadding2D`` form.

    Examples
    --------
    >>> to_pairs((1, 2, 3, 4))
    ((1, 2), (3, 4))
    """
    top, bottom, left, right = pad
    return ((top, bottom), (left, right))


def from_pairs(pairs: Sequence[Sequence[int]]) -> Padding:
    """The core's ``(top, bottom, left, right)`` of Keras's ``((top, bottom), (left, right))``.

    Examples
    --------
    >>> from_pairs(((1, 2), (3, 4)))
    (1, 2, 3, 4)
    """
    (top, bottom), (left, right) = pairs
    return (int(top), int(bottom), int(left), int(right))
