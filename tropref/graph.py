"""The structure of a network graph: its chain segments, and rebuilding a graph from them.

A :class:`tropref.network.Network` with additions or concatenations is cut into
*segments*: maximal runs of layers ``n_1, ..., n_m`` in which each ``n_{t+1}`` reads
``n_t`` alone and ``n_t`` is read by ``n_{t+1}`` alone. An :class:`~tropref.network.Add`
or :class:`~tropref.network.Concat` belongs to no segment, and a layer whose output is
read by several layers ends its segment. Inside a segment the network is a chain, so the
chain walk of :func:`tropref.compress_network` applies to it unchanged: its hidden ReLU
layers (a dense or convolutional layer, its BatchNorm, a ReLU, optionally pooling and a
flatten, read by exactly one dense or convolutional layer) are the unit sets that can be
compressed. The last dense or convolutional layer of a segment that does not end the
network feeds a junction or a branch: its channels are *coupled* to other paths (the
residual stream of a ResNet) and are left unchanged.

In a torchvision ``BasicBlock`` the segment ``conv1, bn1, relu, conv2, bn2`` gives one
compressible set (``conv1``'s channels) and ``conv2`` is coupled; a ``Bottleneck`` gives
two (``conv1``, ``conv2``); a pre-activation block ``bn1, relu, conv1, bn2, relu, conv2``
gives ``conv1``.

The module also carries a per-channel error bound from one layer to the network's output
through a graph (:func:`carry_bound`): it is what keeps the network certificate valid
through additions, where the bounds of the paths that meet are added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .network import (
    JUNCTIONS,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Layer,
    Network,
    Softmax,
    output_shapes,
    with_flatten_order,
)

__all__ = [
    "Segment",
    "segments",
    "segment_network",
    "splice",
    "drop_layers",
    "carry_bound",
    "coupling",
    "with_flatten_order_everywhere",
]


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
        if isinstance(layer, JUNCTIONS):
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
    """The chain of the segment's layers as a network of its own."""
    return Network(tuple(net.layers[i] for i in seg.nodes), None if input_shape is None else tuple(input_shape))


def splice(
    net: Network, segs: Sequence[Segment], replacement: Mapping[int, Sequence[Layer]]
) -> tuple[Network, list[list[int]], dict[int, int]]:
    """``net`` with the layers of segment ``s`` replaced by the chain ``replacement[s]``.

    Segments not in ``replacement`` keep their layers. Returns the new network, per
    segment the indices of its layers in it (the segment's output is its last layer), and
    the new index of every junction and segment end of ``net`` (``-1`` stays ``-1``).
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
        elif isinstance(layer, JUNCTIONS):
            inputs.append(tuple(new_index[p] for p in net.sources(i)))
            layers.append(layer)
            new_index[i] = len(layers) - 1
    return Network(tuple(layers), net.input_shape, tuple(inputs)), placed, new_index


def drop_layers(net: Network, drop: Sequence[int]) -> Network:
    """``net`` without the single-input layers in ``drop`` (each reader of a dropped layer
    reads that layer's input instead). Used to remove placeholders that act as identities."""
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
    segment ends the network)."""
    last = seg.nodes[-1]
    users = net.users()[last]
    if not users:
        return None
    if len(users) == 1:
        j = users[0]
        kind = "residual sum" if not isinstance(net.layers[j], Concat) else "concatenation"
        return f"its channels feed {net.label(j)} ({kind}), shared with another path"
    return f"its channels are read by {len(users)} layers ({', '.join(net.label(u) for u in users)})"


def carry_bound(
    net: Network, j: int, e: np.ndarray, shapes: Sequence[tuple[int, ...]], input_shape: tuple[int, ...]
) -> np.ndarray:
    """Bound on the change of the network's outputs from a per-channel bound ``e`` on the
    change of layer ``j``'s output (NumPy float64 host network).

    Every path from ``j`` to the output is followed with per-channel bounds: ReLU, pooling
    and dropout keep them, a BatchNorm multiplies them by ``|scale|``, a dense layer applies
    ``|W|``, a convolution ``Σ_{kh,kw} |W|``, a softmax turns them into ``max e / 2``
    (at most 1); an :class:`~tropref.network.Add` adds the bounds of its inputs (the paths
    that meet) and a :class:`~tropref.network.Concat` joins them, zero for inputs the
    change does not reach. ``shapes`` are the layers' output shapes.
    """
    bounds: dict[int, np.ndarray] = {j: np.asarray(e, dtype=np.float64)}
    for p in range(j + 1, len(net.layers)):
        src = net.sources(p)
        if not any(s in bounds for s in src):
            continue
        layer = net.layers[p]
        if isinstance(layer, JUNCTIONS):
            parts = [bounds.get(s, np.zeros(_channels(shapes, s, input_shape))) for s in src]
            bounds[p] = np.concatenate(parts) if isinstance(layer, Concat) else np.sum(parts, axis=0)
            continue
        (s,) = src
        x = bounds[s]
        if isinstance(layer, Dense):
            x = np.abs(layer.W) @ x
        elif isinstance(layer, Conv2d):
            x = np.abs(layer.W).sum(axis=(2, 3)) @ x
        elif isinstance(layer, BatchNorm):
            x = np.abs(layer.scale) * x
        elif isinstance(layer, Softmax):  # |Δp_i| <= 2 p_i (1 - p_i) max_j |Δz_j|, and p_i is in [0, 1]
            x = np.full_like(x, min(np.max(x) / 2, 1.0))
        elif isinstance(layer, Flatten):
            shape_in = input_shape if s < 0 else shapes[s]
            if len(shape_in) == 3:
                n = int(shape_in[1] * shape_in[2])
                x = np.repeat(x, n) if layer.order == "channels_first" else np.tile(x, n)
        bounds[p] = x
    last = len(net.layers) - 1
    out = bounds.get(last, np.zeros(_channels(shapes, last, input_shape)))
    if len(shapes[last]) == 3:  # a convolutional output: every position has the channel's bound
        out = np.repeat(out, int(shapes[last][1] * shapes[last][2]))
    return out


def _channels(shapes: Sequence[tuple[int, ...]], i: int, input_shape: tuple[int, ...]) -> int:
    return int((input_shape if i < 0 else shapes[i])[0])


def with_flatten_order_everywhere(net: Network, order: str) -> Network:
    """:func:`tropref.network.with_flatten_order` on a chain, or on each chain segment of a
    graph that holds a flatten of the other order (a graph needs its ``input_shape``)."""
    if not any(isinstance(l, Flatten) and l.order != order for l in net.layers):
        return net
    if net.is_chain:
        return with_flatten_order(net, order)
    if net.input_shape is None:
        raise ValueError("changing the order of a Flatten in a graph needs the network's `input_shape`")
    shapes = output_shapes(net)
    segs = segments(net)
    repl = {}
    for k, seg in enumerate(segs):
        if any(isinstance(net.layers[i], Flatten) and net.layers[i].order != order for i in seg.nodes):
            shape = net.input_shape if seg.source < 0 else shapes[seg.source]
            repl[k] = with_flatten_order(segment_network(net, seg, shape), order).layers
    return splice(net, segs, repl)[0]
