"""The chain segments of a network graph, and rebuilding a graph from them.

A :class:`~tropref.network.Network` with additions or concatenations is cut into
*segments*: maximal runs of layers ``n_1, ..., n_m`` in which each ``n_{t+1}`` reads
``n_t`` alone and ``n_t`` is read by ``n_{t+1}`` alone. An :class:`~tropref.network.Add`
or :class:`~tropref.network.Concat` belongs to no segment, and a layer whose output is
read by several layers ends its segment. A chain network is one segment. Inside a segment
the network is a chain, so :func:`tropref.compress_network` walks it as one: its hidden
ReLU layers (a dense or convolutional layer, its BatchNorm, a ReLU, optionally pooling and
a flatten, read by exactly one dense or convolutional layer) are the unit sets that can be
compressed. The last dense or convolutional layer of a segment that does not end the
network feeds a junction or a branch: its channels are *coupled* to other paths (the
residual stream of a ResNet) and are left unchanged (:func:`coupling` says why).

In a torchvision ``BasicBlock`` the segment ``conv1, bn1, relu, conv2, bn2`` gives one
compressible set (``conv1``'s channels) and ``conv2`` is coupled; a ``Bottleneck`` gives
two (``conv1``, ``conv2``); a pre-activation block ``bn1, relu, conv1, bn2, relu, conv2``
gives ``conv1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .graph import Network
from .kinds import kind_of
from .layers import Layer

__all__ = ["Segment", "segments", "segment_network", "splice", "drop_layers", "coupling"]

_JUNCTION_NAMES = {"add": "residual sum", "concat": "concatenation"}


@dataclass(frozen=True)
class Segment:
    """A maximal chain of layers of a graph.

    Attributes
    ----------
    nodes : tuple of int
        The layers, in order (indices in the network).
    source : int
        The layer the first one reads (``-1``: the network's input).
    """

    nodes: tuple[int, ...]
    source: int


def segments(net: Network) -> list[Segment]:
    """The chain segments of ``net`` (see the module notes), ordered by their first layer.

    A chain network is one segment.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.eye(2)), ReLU(), Dense(np.eye(2)), Add(), ReLU()],
    ...               inputs=[(-1,), (0,), (1,), (2, -1), (3,)])
    >>> [s.nodes for s in segments(net)]
    [(0, 1, 2), (4,)]
    """
    users = net.users()
    seg_of: dict[int, int] = {}
    out: list[list[int]] = []
    sources: list[int] = []
    for i, layer in enumerate(net.layers):
        if kind_of(layer).junction:
            continue
        (p,) = net.sources(i)
        if p >= 0 and p in seg_of and users[p] == [i]:
            seg_of[i] = seg_of[p]
            out[seg_of[i]].append(i)
        else:
            seg_of[i] = len(out)
            out.append([i])
            sources.append(p)
    return [Segment(tuple(nodes), src) for nodes, src in zip(out, sources, strict=False)]


def segment_network(net: Network, seg: Segment, input_shape: Sequence[int] | None) -> Network:
    """The chain of the segment's layers as a network of its own.

    Parameters
    ----------
    net : Network
    seg : Segment
        One of :func:`segments` of ``net``.
    input_shape : sequence of int or None
        One sample's shape at the segment's input (the output shape of ``seg.source``).

    Returns
    -------
    Network
        A chain holding the same layer objects.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.eye(2)), ReLU(), Dense(2 * np.eye(2)), Add(), ReLU()],
    ...               inputs=[(-1,), (0,), (1,), (2, -1), (3,)])
    >>> chain = segment_network(net, segments(net)[0], (2,))
    >>> chain.is_chain, len(chain), chain.input_shape, chain.layers[2] is net.layers[2]
    (True, 3, (2,), True)
    """
    return Network(tuple(net.layers[i] for i in seg.nodes), None if input_shape is None else tuple(input_shape))


def splice(
    net: Network, segs: Sequence[Segment], replacement: Mapping[int, Sequence[Layer]]
) -> tuple[Network, list[list[int]], dict[int, int]]:
    """``net`` with the layers of segment ``s`` replaced by the chain ``replacement[s]``.

    Segments not in ``replacement`` keep their layers. Returns the new network, per
    segment the indices of its layers in it (the segment's output is its last layer), and
    the new index of every junction and segment end of ``net`` (``-1`` stays ``-1``).

    A replacement chain may have more or fewer layers than the segment: its first layer
    reads what the segment's first read, and every reader of the segment's last layer
    reads the chain's last.

    Raises
    ------
    ValueError
        When a segment is replaced by no layers.

    Examples
    --------
    The residual block ``relu(x + 2 relu(x))`` with its branch replaced by one dense layer
    ``3 x``: the new network computes ``relu(3 x + x)``.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.eye(2)), ReLU(), Dense(2 * np.eye(2)), Add(), ReLU()],
    ...               inputs=[(-1,), (0,), (1,), (2, -1), (3,)])
    >>> new, placed, moved = splice(net, segments(net), {0: [Dense(3 * np.eye(2))]})
    >>> new.inputs, placed, moved
    (((-1,), (0, -1), (1,)), [[0], [2]], {-1: -1, 2: 0, 3: 1, 4: 2})
    >>> new(np.array([[1.0, -1.0]]))
    array([[4., 0.]])
    """
    new_index: dict[int, int] = {-1: -1}  # old segment end (or junction) -> new index
    seg_first = {s.nodes[0]: k for k, s in enumerate(segs)}
    layers: list[Layer] = []
    inputs: list[tuple[int, ...]] = []
    placed: list[list[int]] = [[] for _ in segs]
    for i, layer in enumerate(net.layers):
        if i in seg_first:
            k = seg_first[i]
            seg = segs[k]
            chain = list(replacement.get(k, [net.layers[j] for j in seg.nodes]))
            if not chain:
                raise ValueError(f"segment starting at {net.label(i)} was replaced by no layers")
            prev = new_index[seg.source]
            for layer_new in chain:
                inputs.append((prev,))
                layers.append(layer_new)
                prev = len(layers) - 1
                placed[k].append(prev)
            new_index[seg.nodes[-1]] = prev
        elif kind_of(layer).junction:
            inputs.append(tuple(new_index[p] for p in net.sources(i)))
            layers.append(layer)
            new_index[i] = len(layers) - 1
    return Network(tuple(layers), net.input_shape, tuple(inputs)), placed, new_index


def drop_layers(net: Network, drop: Sequence[int]) -> Network:
    """``net`` without the single-input layers in ``drop`` (each reader of a dropped layer
    reads that layer's input instead). Used to remove placeholders that act as identities.

    Raises
    ------
    ValueError
        When ``drop`` holds the output layer.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, Identity, ReLU, Add
    >>> net = Network([Dense(np.eye(2)), Identity(), ReLU(), Add()], inputs=[(-1,), (0,), (1,), (2, -1)])
    >>> short = drop_layers(net, [1])
    >>> short.inputs, [type(layer).__name__ for layer in short]
    (((-1,), (0,), (1, -1)), ['Dense', 'ReLU', 'Add'])
    >>> x = np.array([[1.0, -1.0]])
    >>> bool(np.allclose(short(x), net(x)))
    True
    """
    drop = set(drop)
    if len(net.layers) - 1 in drop:
        raise ValueError("the output layer cannot be dropped")
    new_index: dict[int, int] = {-1: -1}
    layers, inputs = [], []
    for i, layer in enumerate(net.layers):
        src = tuple(new_index[p] for p in net.sources(i))
        if i in drop:
            (new_index[i],) = src
            continue
        layers.append(layer)
        inputs.append(src)
        new_index[i] = len(layers) - 1
    return Network(tuple(layers), net.input_shape, tuple(inputs))


def coupling(net: Network, seg: Segment) -> str | None:
    """Why the channels at the end of a segment are shared with other paths (None when the
    segment ends the network).

    A segment's last layer is coupled when its output feeds a junction (an addition or a
    concatenation) or is read by several layers: merging its channels would have to change
    the other paths too, so :func:`tropref.compress_network` leaves them.

    Examples
    --------
    In a residual block, the branch's last dense layer feeds the addition; the final ReLU
    ends the network.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.eye(2)), ReLU(), Dense(2 * np.eye(2)), Add(name="sum"), ReLU()],
    ...               inputs=[(-1,), (0,), (1,), (2, -1), (3,)])
    >>> branch, tail = segments(net)
    >>> coupling(net, branch)
    "its channels feed 'sum' (layer 3, Add) (residual sum), shared with another path"
    >>> coupling(net, tail) is None
    True

    A layer read by two branches:

    >>> from tropref.network import Concat
    >>> fork = Network([Dense(np.eye(2)), ReLU(), Dense(np.eye(2)), Dense(np.eye(2)), Concat()],
    ...                inputs=[(-1,), (0,), (1,), (1,), (2, 3)])
    >>> coupling(fork, segments(fork)[0])
    'its channels are read by 2 layers (layer 2 (Dense), layer 3 (Dense))'
    """
    last = seg.nodes[-1]
    users = net.users()[last]
    if not users:
        return None
    if len(users) == 1:
        j = users[0]
        what = _JUNCTION_NAMES.get(kind_of(net.layers[j]).role, "junction")
        return f"its channels feed {net.label(j)} ({what}), shared with another path"
    return f"its channels are read by {len(users)} layers ({', '.join(net.label(u) for u in users)})"
