"""The flatten order of a network: one equivalent network in the other feature order.

PyTorch flattens ``(C, H, W)`` feature maps channels first, Keras (channels-last data)
flattens them ``(H, W, C)``; the adapters use these functions to write a network in the
order of the framework they build.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .._array import Array, device, namespace
from .graph import Network
from .kinds import kind_of
from .layers import Layer
from .segments import segment_network, segments, splice
from .shapes import output_shapes

__all__ = ["with_flatten_order", "with_flatten_order_everywhere"]


def with_flatten_order(net: Network, order: str) -> Network:
    """An equivalent network whose every :class:`Flatten` (of a 4-D tensor) uses ``order``.

    The features after the flatten are permuted, so the next :class:`Dense` layer's columns
    (and any BatchNorm, Dropout or ReLU between them) are permuted the same way: for ``C``
    channels and ``s`` positions, feature ``c s + p`` in ``c, h, w`` order is feature
    ``p C + c`` in ``h, w, c`` order. Needs the channel count before the flatten, taken from
    the last convolution or BatchNorm before it (or ``input_shape``).

    Raises
    ------
    ValueError
        For an unknown ``order``; when the channel count before a flatten is unknown; when
        the flattened features reach a layer other than BatchNorm, dropout, identity or
        ReLU before a dense layer, or no dense layer at all (the output order would change).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, Flatten, Dense
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Conv2d(rng.normal(size=(2, 1, 3, 3))), ReLU(), Flatten(), Dense(rng.normal(size=(3, 8)))],
    ...               input_shape=(1, 4, 4))
    >>> keras_order = with_flatten_order(net, "channels_last")
    >>> x = rng.normal(size=(5, 1, 4, 4))
    >>> bool(np.allclose(net(x), keras_order(x)))
    True
    """
    if order not in ("channels_first", "channels_last"):
        raise ValueError(f"`order` must be 'channels_first' or 'channels_last', got {order!r}")
    layers = list(net.layers)
    channels = net.input_shape[0] if net.input_shape and len(net.input_shape) == 3 else None
    rank4 = net.input_shape is not None and len(net.input_shape) == 3
    for i, layer in enumerate(layers):
        kind = kind_of(layer)
        role = kind.role
        if kind.linear and kind.images:
            channels, rank4 = layer.units, True
        elif role == "batchnorm" and rank4:
            channels = layer.channels
        elif role == "flatten" and layer.order != order and (rank4 or channels is not None):
            if channels is None:
                raise ValueError(f"{net.label(i)}: the number of channels before it is unknown")
            layers[i] = replace(layer, order=order)
            rank4 = False
            _permute_after_flatten(net, layers, i, channels, src=layer.order)
        elif role == "flatten":
            rank4 = False
    return net.replace_layers(layers)


def _permute_after_flatten(net: Network, layers: list, i: int, C: int, src: str) -> None:
    """Permute the feature axis of the layers after the flatten at ``i`` up to the next Dense."""
    for j in range(i + 1, len(layers)):
        layer = layers[j]
        kind = kind_of(layer)
        if kind.linear and not kind.images:
            d = int(layer.W.shape[1])
            perm = _flatten_permutation(C, d // C, src)
            layers[j] = replace(layer, W=_take(layer.W, perm, axis=1))
            return
        if kind.role == "batchnorm":
            d = layer.channels
            perm = _flatten_permutation(C, d // C, src)
            layers[j] = replace(
                layer,
                **{
                    f: _take(getattr(layer, f), perm, 0)
                    for f in ("mean", "var", "weight", "bias")
                    if getattr(layer, f) is not None
                },
            )
        elif kind.role not in ("passive", "relu"):
            raise ValueError(f"{net.label(j)} after a Flatten: cannot reorder the flattened features through it")
    # A flatten at the end of the network: the output order itself would change.
    raise ValueError(f"{net.label(i)} is not followed by a Dense layer; its feature order cannot be changed")


def _reorders(layer: Layer, order: str) -> bool:
    """Whether ``layer`` is a flatten of the other order."""
    return kind_of(layer).role == "flatten" and layer.order != order


def _flatten_permutation(C: int, s: int, src: str) -> np.ndarray:
    """Index array ``perm`` with ``new_features = old_features[perm]`` when the flatten order
    changes away from ``src``."""
    cf = np.arange(C * s).reshape(C, s)  # cf[c, p]: index of (c, p) in channels-first order
    cl = np.arange(C * s).reshape(s, C).T  # cl[c, p]: index of (c, p) in channels-last order
    if src == "channels_first":  # new order is channels-last: new index p C + c holds old c s + p
        return cf.T.reshape(-1)
    return cl.reshape(-1)


def _take(a: Array, perm: np.ndarray, axis: int) -> Array:
    xp = namespace(a=a)
    return xp.take(a, xp.asarray(perm, dtype=xp.int64, device=device(a)), axis=axis)


def with_flatten_order_everywhere(net: Network, order: str) -> Network:
    """:func:`with_flatten_order` on a chain, or on each chain segment of a
    graph that holds a flatten of the other order (a graph needs its ``input_shape``).

    Each such segment is rewritten as a chain of its own (its input shape taken from the
    graph's shapes) and spliced back (:func:`~tropref.network.segments.splice`): the
    result computes the same outputs. ``net`` itself is returned when no flatten has the
    other order.

    Raises
    ------
    ValueError
        When a graph to rewrite has no ``input_shape``, or as :func:`with_flatten_order`.

    Examples
    --------
    A residual block before a flatten, rewritten for Keras's channels-last order:

    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, Add, Flatten, Dense
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Conv2d(rng.normal(size=(2, 2, 3, 3)), padding=1), ReLU(), Add(), Flatten(),
    ...                Dense(rng.normal(size=(3, 32)))],
    ...               input_shape=(2, 4, 4), inputs=[(-1,), (0,), (1, -1), (2,), (3,)])
    >>> keras_order = with_flatten_order_everywhere(net, "channels_last")
    >>> x = rng.normal(size=(5, 2, 4, 4))
    >>> keras_order.layers[3].order, bool(np.allclose(net(x), keras_order(x)))
    ('channels_last', True)
    >>> with_flatten_order_everywhere(net, "channels_first") is net
    True
    """
    if not any(_reorders(l, order) for l in net.layers):
        return net
    if net.is_chain:
        return with_flatten_order(net, order)
    if net.input_shape is None:
        raise ValueError("changing the order of a Flatten in a graph needs the network's `input_shape`")
    shapes = output_shapes(net)
    segs = segments(net)
    repl = {}
    for k, seg in enumerate(segs):
        if any(_reorders(net.layers[i], order) for i in seg.nodes):
            shape = net.input_shape if seg.source < 0 else shapes[seg.source]
            repl[k] = with_flatten_order(segment_network(net, seg, shape), order).layers
    return splice(net, segs, repl)[0]
