"""Shapes and counts: one sample's shape after every layer, parameters and multiply-accumulates.

:func:`~tropref.network.windows.out_size` is the one output-size formula of a convolution or
pooling window; the forward pass, shape inference and patch sampling all use it.

:func:`count_params` counts weights and biases of dense and convolutional layers and the
two affine parameters per channel of a BatchNorm (running statistics are buffers, not
parameters, as in PyTorch). :func:`count_macs` counts the multiply-accumulates of dense and
convolutional layers for one sample (``out * in`` and ``O * C * kh * kw * Ho * Wo``);
BatchNorm, ReLU and pooling are not counted (BatchNorm folds into a neighbour at deployment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .kinds import kind_of
from .layers import Layer

if TYPE_CHECKING:  # graph -> forward -> shapes: the annotation alone refers back
    from .graph import Network

__all__ = [
    "output_shapes",
    "layer_shapes",
    "node_output_shape",
    "layer_params",
    "layer_macs",
    "count_params",
    "count_macs",
]


def layer_shapes(net: Network, input_shape: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Per-sample shapes of a chain: entry ``i`` is the input shape of layer ``i``; the last
    is the output. (For a graph, see :func:`output_shapes`.)

    A convolution or pooling window maps ``(C, H, W)`` to ``(O, H', W')`` with
    :func:`~tropref.network.windows.out_size` per axis; a flatten gives ``(C H W,)``; the
    other layers keep the shape.

    Parameters
    ----------
    net : Network
        A chain.
    input_shape : sequence of int, optional
        One sample's shape, ``(d,)`` or ``(C, H, W)``; default ``net.input_shape``.

    Returns
    -------
    list of tuple of int
        ``len(net) + 1`` shapes: the input's, then every layer's output.

    Raises
    ------
    ValueError
        When ``net`` is not a chain, when no input shape is known, or naming the first
        layer whose input does not fit.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, MaxPool2d, Flatten, Dense
    >>> net = Network([Conv2d(np.ones((2, 1, 3, 3))), ReLU(), MaxPool2d(2), Flatten(), Dense(np.ones((3, 8)))],
    ...               input_shape=(1, 6, 6))
    >>> layer_shapes(net)
    [(1, 6, 6), (2, 4, 4), (2, 4, 4), (2, 2, 2), (8,), (3,)]
    >>> layer_shapes(net, (1, 5, 5))
    Traceback (most recent call last):
    ...
    ValueError: layer 4 (Dense) expects (8,) inputs, gets (2,): its input size does not match the data
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

    Each layer's shape follows from the shapes of the layers it reads
    (:func:`node_output_shape`), in the layers' order.

    Parameters
    ----------
    net : Network
        A chain or a graph.
    input_shape : sequence of int, optional
        One sample's shape; default ``net.input_shape``.
    stop : int, optional
        The last layer whose shape is wanted.

    Returns
    -------
    list of tuple of int
        Entry ``i``: the output shape of layer ``i``.

    Raises
    ------
    ValueError
        When no input shape is known, or naming the first layer whose input does not fit
        (a dense layer whose input size differs from its weights, additions of different
        shapes, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, Add, Concat
    >>> net = Network([Conv2d(np.ones((2, 1, 3, 3)), padding=1), ReLU(), Add(), Concat()],
    ...               input_shape=(1, 5, 5), inputs=[(-1,), (0,), (1, 0), (2, -1)])
    >>> output_shapes(net)
    [(2, 5, 5), (2, 5, 5), (2, 5, 5), (3, 5, 5)]
    >>> output_shapes(net, (1, 3, 3), stop=1)
    [(2, 3, 3), (2, 3, 3)]
    """
    first = _input_shape(net, input_shape)
    outs: list[tuple[int, ...]] = []
    for i, layer in enumerate(net.layers[: None if stop is None else stop + 1]):
        outs.append(node_output_shape(layer, [first if p < 0 else outs[p] for p in net.sources(i)], net.label(i)))
    return outs


def node_output_shape(layer: Layer, ins: Sequence[tuple[int, ...]], label: str | None = None) -> tuple[int, ...]:
    """One sample's output shape of ``layer`` given its inputs' shapes.

    An :class:`Add` keeps the (common) shape, a :class:`Concat` sums the channels (axis 0
    of one sample), any other layer reads ``ins[0]`` (see :func:`layer_shapes`).

    Parameters
    ----------
    layer : Layer
    ins : sequence of tuple of int
        The shapes of the layers it reads, in order.
    label : str, optional
        How errors name the layer (default: its type and name).

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        Naming the layer when its inputs do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Add, Concat, Dense
    >>> node_output_shape(Concat(), [(2, 4, 4), (3, 4, 4)]), node_output_shape(Dense(np.ones((5, 3))), [(3,)])
    ((5, 4, 4), (5,))
    >>> node_output_shape(Add(name="sum"), [(2, 4, 4), (3, 4, 4)])
    Traceback (most recent call last):
    ...
    ValueError: Add 'sum' sums inputs of different shapes [(2, 4, 4), (3, 4, 4)]
    """
    label = label or f"{type(layer).__name__} {getattr(layer, 'name', None)!r}"
    ins = [tuple(int(v) for v in s) for s in ins]
    return kind_of(layer).out_shape(layer, ins, label)


def layer_params(layer: Layer) -> int:
    """Parameters of one layer: weights and biases; ``2 C`` for a BatchNorm.

    A dense layer ``(out, in)`` has ``out in + out``, a convolution ``O C kh kw + O``
    (without a bias, no ``+ out``). A BatchNorm's ``C`` weights and ``C`` biases count, its
    running mean and variance do not (buffers, as in PyTorch); the other layers have none.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense, Conv2d, BatchNorm, ReLU
    >>> layer_params(Dense(np.ones((4, 3)), np.zeros(4))), layer_params(Conv2d(np.ones((2, 1, 3, 3))))
    (16, 18)
    >>> layer_params(BatchNorm(np.zeros(5), np.ones(5))), layer_params(ReLU())
    (10, 0)
    """
    return kind_of(layer).params(layer)


def layer_macs(layer: Layer, out_shape: tuple[int, ...] | None) -> int | None:
    """Multiply-accumulates of one layer for one sample (None: a conv without known shape).

    A dense layer ``(out, in)`` costs ``out in``; a convolution ``O C kh kw`` per output
    position, ``O C kh kw Ho Wo`` for its output shape ``(O, Ho, Wo)``; other layers 0.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense, Conv2d
    >>> conv = Conv2d(np.ones((2, 1, 3, 3)))
    >>> layer_macs(conv, (2, 4, 4)), layer_macs(conv, None), layer_macs(Dense(np.ones((4, 3))), (4,))
    (288, None, 12)
    """
    return kind_of(layer).macs(layer, out_shape)


def count_params(net: Network) -> int:
    """Total parameters of the network: the sum of :func:`layer_params` over its layers.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, MaxPool2d, Flatten, Dense
    >>> net = Network([Conv2d(np.ones((2, 1, 3, 3)), np.zeros(2)), ReLU(), MaxPool2d(2), Flatten(),
    ...                Dense(np.ones((3, 8)), np.zeros(3))])
    >>> count_params(net)  # (18 + 2) + (24 + 3)
    47
    """
    return sum(layer_params(layer) for layer in net.layers)


def count_macs(
    net: Network, input_shape: Sequence[int] | None = None, *, shapes: Sequence[tuple[int, ...]] | None = None
) -> int | None:
    """Total multiply-accumulates for one sample; None when a convolution's size is unknown.

    The sum of :func:`layer_macs` over the layers, at the shapes :func:`output_shapes`
    gives for ``input_shape`` (default ``net.input_shape``), or at ``shapes`` (those output
    shapes, when the caller has them: they are then not computed again). A network without
    convolutions needs no input shape.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, MaxPool2d, Flatten, Dense
    >>> net = Network([Conv2d(np.ones((2, 1, 3, 3))), ReLU(), MaxPool2d(2), Flatten(), Dense(np.ones((3, 8)))])
    >>> count_macs(net, (1, 6, 6))  # 18 * 4 * 4 + 3 * 8
    312
    >>> count_macs(net) is None  # no input shape: the convolution's output size is unknown
    True
    >>> count_macs(net, shapes=output_shapes(net, (1, 6, 6)))
    312
    >>> count_macs(Network([Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4)))]))
    20
    """
    try:
        shapes = output_shapes(net, input_shape) if shapes is None else shapes
    except ValueError:
        if any(kind_of(l).macs(l, None) is None for l in net.layers):  # a size only the shapes give
            return None
        shapes = [None] * len(net.layers)
    total = 0
    for i, layer in enumerate(net.layers):
        m = layer_macs(layer, shapes[i])
        if m is None:
            return None
        total += m
    return total
