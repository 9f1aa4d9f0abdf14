"""What the PyTorch and Keras adapters share when they read a model as a graph.

A framework's model is read into a list of core layers with, for each, the indices of the
layers it reads (``-1``: the model's input). Explicit padding layers (PyTorch's
``ZeroPad2d``/``ConstantPad2d``, Keras's ``ZeroPadding2D``) have no core layer: they are read
as :class:`Pad` and folded into the one convolution or pooling that reads them
(:func:`fold_pads`). Every problem found on the way is collected, so that one error lists
every obstacle of a model (:func:`finish_reading`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tropref._array import to_numpy
from tropref.adapters._graph import reads_relu
from tropref.adapters._refusals import refuse
from tropref.network import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    Identity,
    MaxPool2d,
    Network,
)
from tropref.network.layers import ARRAY_FIELDS
from tropref.network.shapes import output_shapes

__all__ = ["Pad", "append", "fold_pads", "prune", "finish_reading", "shared_layers"]


class Pad:
    """An explicit padding ``(top, bottom, left, right)`` with a constant ``value``."""

    def __init__(self, pads: tuple[int, int, int, int], value: float, name: str) -> None:
        self.pads, self.value, self.name = tuple(int(p) for p in pads), float(value), name


def append(layers: list, inputs: list, converted: Sequence[Any], srcs: Sequence[int]) -> int:
    """Append the core layers ``converted`` of one framework operation that reads the layers
    ``srcs``: the first reads ``srcs``, each next one the layer before it. Returns the index
    of the operation's output (``srcs[0]`` when it has no core layer, as an identity).

    Examples
    --------
    >>> layers, inputs = ["conv"], [(-1,)]  # strings stand for core layers here
    >>> append(layers, inputs, ["bn", "relu"], (0,)), inputs
    (2, [(-1,), (0,), (1,)])
    """
    srcs = tuple(srcs)
    for layer in converted:
        layers.append(layer)
        inputs.append(srcs)
        srcs = (len(layers) - 1,)
    return srcs[0]


def fold_pads(layers: list, inputs: list, problems: list[str]) -> list:
    """The layers with every :class:`Pad` folded into its reader (the pad becomes an
    ``Identity``): zero padding into a convolution or an average pooling that counts its
    padding, ``-inf`` padding into a max pooling, and zero padding into a max pooling when
    the padded tensor is a ReLU's output (``max`` of non-negative values ignores zeros as
    long as every window holds an input value, which a padding smaller than the kernel
    ensures). Other pads are added to ``problems``."""
    users: dict[int, list[int]] = {}
    for i, srcs in enumerate(inputs):
        for p in srcs:
            users.setdefault(p, []).append(i)
    layers = list(layers)
    for p, layer in enumerate(layers):
        if not isinstance(layer, Pad):
            continue
        us = users.get(p, [])
        target = layers[us[0]] if len(us) == 1 else None
        t, b, l, r = layer.pads
        if min(layer.pads) < 0:
            problems.append(f"layer {layer.name!r}: negative padding (cropping) is not supported")
            continue
        ok = False
        if isinstance(target, Conv2d) and layer.value == 0.0:
            ok = True
        elif isinstance(target, AvgPool2d) and layer.value == 0.0 and (target.count_include_pad or not target.padded):
            target = replace(target, count_include_pad=True)
            ok = True
        elif type(target) is MaxPool2d and (
            layer.value == -math.inf or (layer.value == 0.0 and reads_relu(layers, inputs.__getitem__, p))
        ):
            ok = (
                max(t + target.padding[0], b + target.padding[1]) < target.kernel[0]
                and max(l + target.padding[2], r + target.padding[3]) < target.kernel[1]
            )
        if ok:
            pt, pb, pl, pr = target.padding
            layers[us[0]] = replace(target, padding=(pt + t, pb + b, pl + l, pr + r))
            layers[p] = Identity(name=layer.name)
        else:
            problems.append(
                f"layer {layer.name!r} (padding {layer.pads}, value {layer.value:g}): "
                "tropref reads explicit padding only as the zero padding of the one convolution or average "
                "pooling that reads it (or before a max pooling of non-negative values)"
            )
    return layers


def prune(layers: list, inputs: list, out: int, shape: tuple[int, ...] | None) -> Network:
    """The network of the layers that the output ``out`` depends on (the output last)."""
    keep = set()
    stack = [out]
    while stack:
        i = stack.pop()
        if i < 0 or i in keep:
            continue
        keep.add(i)
        stack.extend(inputs[i])
    new_index: dict[int, int] = {-1: -1}
    new_layers, new_inputs = [], []
    for i in sorted(keep):
        new_layers.append(layers[i])
        new_inputs.append(tuple(new_index[q] for q in inputs[i]))
        new_index[i] = len(new_layers) - 1
    return Network(tuple(new_layers), shape, tuple(new_inputs))


def finish_reading(
    layers: list,
    inputs: list,
    out: int | None,
    shape: tuple[int, ...] | None,
    problems: list[str],
    resolve: Callable[[list, list, list[str]], None] | None = None,
) -> Network:
    """The network read from a model whose output is layer ``out``: explicit padding folded
    (:func:`fold_pads`), then ``resolve(layers, inputs, problems)`` (an adapter's last step
    on the layers, in place), every problem raised at once, and the network of the layers
    the output depends on, for one sample of ``shape`` (None: unknown).

    Raises
    ------
    ValueError
        Listing every problem, collected while the model was read and here; or naming the
        dense layer whose input size does not match ``shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense, ReLU
    >>> layers, inputs = [Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4)))], [(-1,), (0,), (1,)]
    >>> [type(l).__name__ for l in finish_reading(layers, inputs, 1, (3,), [])]
    ['Dense', 'ReLU']
    >>> finish_reading(layers, inputs, 2, (5,), [])
    Traceback (most recent call last):
    ...
    ValueError: layer 0 (Dense) expects (3,) inputs, gets (5,)...
    """
    if out is not None and not problems:
        layers = fold_pads(layers, inputs, problems)
    if out is not None and not problems and resolve is not None:
        resolve(layers, inputs, problems)
    refuse(problems)
    net = prune(layers, inputs, out, shape)
    if shape is not None:
        output_shapes(net)  # a dense layer whose input size does not match is named here
    shared = shared_layers(net)
    if shared:
        calls = ", ".join(f"{name!r} ({n} calls)" for name, n in shared.items())
        warnings.warn(
            f"tropref reads every call of a layer used several times as a layer of its own: {calls}. A compressed "
            "model gets one copy per call (their weights are no longer shared) and its report counts every copy's "
            "parameters; give each call its own layer to compress them separately on purpose.",
            UserWarning,
            stacklevel=3,
        )
    return net


def shared_layers(net: Network) -> dict[str, int]:
    """The layers with weights that the model calls several times (shared weights), by
    name, with the number of calls: layers of ``net`` of one name and equal arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import ReLU
    >>> W = np.ones((2, 2))
    >>> shared_layers(Network([Dense(W, name="fc"), ReLU(), Dense(W.copy(), name="fc"), Dense(W, name="out")]))
    {'fc': 2}
    """
    by_name: dict[str, list] = {}
    for layer in net.layers:
        if isinstance(layer, (Dense, Conv2d, BatchNorm)) and layer.name:
            by_name.setdefault(layer.name, []).append(layer)
    return {name: len(group) for name, group in by_name.items() if len(group) > 1 and _same_arrays(group)}


def _same_arrays(group: Sequence[Any]) -> bool:
    def arrays(layer: Any) -> list:
        return [to_numpy(getattr(layer, f)) for f in ARRAY_FIELDS if getattr(layer, f, None) is not None]

    first = arrays(group[0])
    return all(
        len(a) == len(first) and all(x.shape == y.shape and bool((x == y).all()) for x, y in zip(a, first, strict=True))
        for a in map(arrays, group[1:])
    )
