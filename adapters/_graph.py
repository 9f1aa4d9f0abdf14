"""Walks over a network's graph that both adapters make, reading a model and writing one.

A graph is given as its layers and, for layer ``i``, ``sources(i)``: the layers it reads
(``-1``: the model's input), as :meth:`tropref.network.Network.sources` gives them and as the
adapters' readers build them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tropref.network import Dropout, Identity, Network, ReLU

__all__ = ["reads_relu", "run_graph", "writer"]


def reads_relu(layers: Sequence[Any], sources: Callable[[int], Sequence[int]], p: int) -> bool:
    """Whether layer ``p`` reads a ReLU's output (so its input is ``>= 0``), looking through
    identities and dropout (an identity at inference).

    Zero padding before a max pooling then changes nothing (``max`` of non-negative values
    ignores zeros while every window holds an input value), which both the reader (folding a
    ``ZeroPad2d``/``ZeroPadding2D`` into the pooling) and the Keras writer (which has no
    ``-inf`` padding) rely on.

    Examples
    --------
    >>> from tropref.network import MaxPool2d
    >>> layers = [ReLU(), Dropout(0.5), MaxPool2d(2)]
    >>> reads_relu(layers, lambda i: (i - 1,), 2), reads_relu(layers, lambda i: (i - 1,), 0)
    (True, False)
    """
    q = sources(p)[0]
    while q >= 0 and isinstance(layers[q], (Identity, Dropout)):
        q = sources(q)[0]
    return q >= 0 and isinstance(layers[q], ReLU)


def run_graph(net: Network, x: Any, step: Callable[[int, list[Any]], Any]) -> Any:
    """The value of ``net``'s output when its input has the value ``x`` and layer ``i`` has
    the value ``step(i, values of the layers it reads)``, the layers taken in order.

    The adapters use it with symbolic values (a ``torch.fx`` graph node, a Keras tensor) to
    write a graph network as a framework model.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Add, Dense, Network
    >>> net = Network([Dense(np.ones((2, 2))), Dense(np.ones((2, 2))), Add()], (2,), [(-1,), (0,), (0, 1)])
    >>> run_graph(net, "x", lambda i, srcs: f"{type(net.layers[i]).__name__}({', '.join(srcs)})")
    'Add(Dense(x), Dense(Dense(x)))'
    """
    values: dict[int, Any] = {-1: x}
    for i in range(len(net.layers)):
        values[i] = step(i, [values[p] for p in net.sources(i)])
    return values[len(net.layers) - 1]


def writer(table: Mapping[type, Callable[..., Any]], layer: Any, framework: str) -> Callable[..., Any]:
    """The entry of an adapter's table of writers (tropref layer type -> the function that
    builds the framework's layers for it) for ``layer``: its type's, or its nearest base
    type's (a walk's folded BatchNorm is an Identity).

    Raises
    ------
    ValueError
        For a layer type the table does not hold (a type registered with
        ``tropref.network.register_kind``: the adapters write only the shipped ones).

    Examples
    --------
    >>> from tropref.network import AvgPool2d, MaxPool2d, ReLU
    >>> table = {ReLU: lambda layer: "relu", MaxPool2d: lambda layer: "pool"}
    >>> writer(table, AvgPool2d(2), "demo")(AvgPool2d(2))
    'pool'
    >>> writer(table, Identity(), "demo")
    Traceback (most recent call last):
        ...
    ValueError: the layer type Identity has no demo writer: the adapters write the shipped types only
    """
    for cls in type(layer).__mro__:
        if cls in table:
            return table[cls]
    raise ValueError(
        f"the layer type {type(layer).__name__} has no {framework} writer: the adapters write the shipped types only"
    )
