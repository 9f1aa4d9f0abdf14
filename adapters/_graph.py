"""Walks over a network's graph that both adapters make, reading a model and writing one.

A graph is given as its layers and, for layer ``i``, ``sources(i)``: the layers it reads
(``-1``: the model's input), as :meth:`tropref.network.Network.sources` gives them and as the
adapters' readers build them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tropref.network import Dropout, Identity, Network, ReLU

__all__ = ["reads_relu", "run_graph"]


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
