"""The BatchNorm after a hidden layer's ReLU: the channels it pins, whether it stays, and its
placeholder once it is folded into the next layer.

What compressing a hidden layer (:class:`~tropref.network.structure.HiddenLayer`) keeps,
shared by the widths' cost prediction (:mod:`~tropref.network.widths`), the rewrite of the
next layer (:mod:`~tropref.network.rewrite`) and the walk (:mod:`~tropref.network.compress`),
which drops the placeholders at the end. ``docs/networks.md`` says why channels are pinned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._array import to_numpy
from .graph import Network
from .kinds import kind_of
from .layers import Identity
from .structure import HiddenLayer

__all__ = ["Folded", "pinned", "min_width", "keeps_batchnorm"]


@dataclass(frozen=True)
class Folded(Identity):
    """Placeholder for a BatchNorm folded into the next layer during the walk (removed at the end)."""


def pinned(net: Network, h: HiddenLayer) -> np.ndarray:
    """Channels that must stay as they are: a negative BatchNorm scale before a max pooling.

    ``max(s a + t) = s min(a) + t`` for ``s < 0``: such a channel cannot be merged with
    others (nor its scale moved across the pooling), so it is kept intact.

    Examples
    --------
    A BatchNorm of scales ``(1, −1, 2, −3)`` after the ReLU, then a max pooling:

    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, BatchNorm, MaxPool2d
    >>> from tropref.network.structure import hidden_layers
    >>> bn = BatchNorm(np.zeros(4), np.ones(4), np.array([1.0, -1.0, 2.0, -3.0]), np.zeros(4), eps=0.0)
    >>> net = Network([Conv2d(np.ones((4, 1, 3, 3))), ReLU(), bn, MaxPool2d(2), Conv2d(np.ones((2, 4, 3, 3)))])
    >>> pinned(net, hidden_layers(net)[0]).tolist()
    [False, True, False, True]
    """
    n = net.layers[h.i].units
    if h.bn is None or not h.max_after_bn:
        return np.zeros(n, dtype=bool)
    return to_numpy(net.layers[h.bn].scale) < 0


def min_width(net: Network, h: HiddenLayer) -> int:
    """The fewest units layer ``h.i`` can be compressed to (pinned channels plus one).

    Examples
    --------
    Two of four channels pinned (the network of :func:`pinned`):

    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, BatchNorm, MaxPool2d
    >>> from tropref.network.structure import hidden_layers
    >>> bn = BatchNorm(np.zeros(4), np.ones(4), np.array([1.0, -1.0, 2.0, -3.0]), np.zeros(4), eps=0.0)
    >>> net = Network([Conv2d(np.ones((4, 1, 3, 3))), ReLU(), bn, MaxPool2d(2), Conv2d(np.ones((2, 4, 3, 3)))])
    >>> min_width(net, hidden_layers(net)[0])
    3
    """
    fixed = pinned(net, h)
    free = int(np.count_nonzero(~fixed))
    return net.layers[h.i].units if free <= 1 else int(np.count_nonzero(fixed)) + 1


def keeps_batchnorm(net: Network, h: HiddenLayer) -> bool:
    """Whether the BatchNorm after the ReLU stays (scale 1, refitted shifts) once ``h`` is
    compressed: its shift is not a bias of a zero-padded next convolution.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, BatchNorm
    >>> from tropref.network.structure import hidden_layers
    >>> bn = BatchNorm(np.zeros(4), np.ones(4), np.ones(4), np.zeros(4))
    >>> def net(padding):
    ...     return Network([Conv2d(np.ones((4, 1, 3, 3))), ReLU(), bn, Conv2d(np.ones((2, 4, 3, 3)), padding=padding)])
    >>> [keeps_batchnorm(net(p), hidden_layers(net(p))[0]) for p in (0, 1)]
    [False, True]
    """
    nxt = net.layers[h.j]
    return h.bn is not None and kind_of(nxt).pads_inputs(nxt)
