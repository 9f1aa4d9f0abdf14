"""The one forward pass of tropref, on the array API: layers, junctions, whole graphs.

:func:`forward` runs a network (a chain or a graph) on a batch; everything else in tropref
that needs a network's values (measured errors, data-driven methods, the experiments'
accuracies) uses it or its parts (:func:`apply_layer`, :func:`apply_node`,
:func:`node_outputs`, and the window arithmetic of :mod:`~tropref.network.windows`). It is
written against the array API standard only, so the same code runs on every backend.

A convolution is one im2col matrix product: the input is viewed channels-last, the windows
shifted by each kernel offset are stacked into the patch matrix ``(N Ho Wo, C kh kw)``,
contiguous, and multiplied by ``W`` reshaped to ``(O, C kh kw)`` (a transposed view, never
copied). The patch matrix is built for slices of samples small enough to keep it under
32 MiB, and the batch is processed in chunks of at most ``chunk`` samples. A graph is run
in its layers' order, each output dropped once its last reader has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._array import Array, namespace
from .kinds import kind_of
from .layers import Layer

if TYPE_CHECKING:  # the graph module imports this one (Network.__call__): the annotation alone refers back
    from .graph import Network

# The module's public API. Names without an underscore that are not listed here are shared
# with the other modules of tropref.network (the walk's parts), not promised to users.
__all__ = ["forward", "node_outputs", "apply_node", "apply_layer"]


def apply_layer(layer: Layer, x: Array, xp: Any = None) -> Array:
    """Apply one layer to a batch ``x`` (``(N, d)`` or ``(N, C, H, W)``).

    The layer's map (see :mod:`tropref.network.layers`) on every sample: ``x W^T + b``, a
    convolution (:func:`~tropref.network.windows.conv2d`), ``scale x + shift`` per channel,
    ``max(x, 0)``, pooling, softmax, a flatten in its order; dropout and identity return ``x``.

    Parameters
    ----------
    layer : Layer
        Any layer but a junction (:func:`apply_node` applies those).
    x : array
        The batch.
    xp : namespace, optional
        ``x``'s array-API namespace (found from ``x`` when not given).

    Returns
    -------
    array

    Raises
    ------
    ValueError
        When ``x`` has the wrong number of axes for the layer (a dense layer or a softmax
        on images, a convolution on vectors).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense, ReLU, Flatten
    >>> apply_layer(Dense(np.array([[1.0, -1.0]]), np.array([0.5])), np.array([[3.0, 1.0]]))
    array([[2.5]])
    >>> apply_layer(ReLU(), np.array([[-1.0, 2.0]]))
    array([[0., 2.]])
    >>> x = np.arange(4.0).reshape(1, 2, 1, 2)  # two channels, two positions
    >>> apply_layer(Flatten(), x), apply_layer(Flatten("channels_last"), x)
    (array([[0., 1., 2., 3.]]), array([[0., 2., 1., 3.]]))
    """
    xp = xp or namespace(x=x)
    return kind_of(layer).forward(xp, layer, [x])


def apply_node(layer: Layer, xs: Sequence[Array], xp: Any = None) -> Array:
    """Apply one layer to the outputs ``xs`` of the layers it reads (one, or several for
    :class:`Add` and :class:`Concat`).

    An :class:`Add` returns ``Σ xs``, a :class:`Concat` joins ``xs`` along axis 1 (the
    channels or features); any other layer is :func:`apply_layer` on ``xs[0]``.

    Raises
    ------
    ValueError
        When an addition's inputs differ in shape, or a concatenation's in anything but
        axis 1.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Add, Concat
    >>> apply_node(Add(), [np.array([[1.0, 2.0]]), np.array([[10.0, 20.0]])])
    array([[11., 22.]])
    >>> apply_node(Concat(), [np.ones((1, 2, 4, 4)), np.zeros((1, 3, 4, 4))]).shape
    (1, 5, 4, 4)
    """
    xp = xp or namespace(x=xs[0])
    kind = kind_of(layer)
    return kind.forward(xp, layer, xs if kind.junction else xs[:1])


def node_outputs(
    net: Network, x: Array, keep: Sequence[int] = (), layers: Sequence[Layer] | None = None, stop: int | None = None
) -> dict[int, Array]:
    """Run ``net`` (or its structure with ``layers`` in place of its own) on ``x`` up to
    layer ``stop`` (default: the output), returning the outputs of the layers in ``keep``
    and of the last layer run. ``-1`` in ``keep`` is the input itself.

    Every intermediate output is dropped once the last layer reading it has run, so a
    residual network holds only the outputs still needed.

    Returns
    -------
    dict
        Layer index -> its output, for ``keep`` and ``stop``.

    Raises
    ------
    ValueError
        When a layer's input does not fit it (see :func:`apply_node`).

    Examples
    --------
    A residual block ``x + 2 relu(x)``: keep the ReLU's output beside the block's.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.eye(2)), ReLU(), Dense(2 * np.eye(2)), Add()], inputs=[(-1,), (0,), (1,), (2, -1)])
    >>> outs = node_outputs(net, np.array([[1.0, -1.0]]), keep=[1])
    >>> sorted(outs), outs[1], outs[3]
    ([1, 3], array([[1., 0.]]), array([[ 3., -1.]]))
    >>> node_outputs(net, np.array([[1.0, -1.0]]), stop=1)
    {1: array([[1., 0.]])}
    """
    xp = namespace(x=x)
    layers = net.layers if layers is None else layers
    stop = len(layers) - 1 if stop is None else stop
    last_use: dict[int, int] = {}
    for i in range(stop + 1):
        for p in net.sources(i):
            last_use[p] = i
    wanted = set(keep) | {stop}
    values: dict[int, Array] = {-1: x}
    for i in range(stop + 1):
        src = net.sources(i)
        values[i] = apply_node(layers[i], [values[p] for p in src], xp)
        for p in set(src):
            if last_use.get(p) == i and p not in wanted:
                del values[p]
    return {i: values[i] for i in wanted if i in values}


def forward(net: Network, x: Array, *, chunk: int = 1024) -> Array:
    """The network's output for a batch ``x`` (NCHW images or ``(N, d)`` vectors).

    Written in the array API standard only (see the module notes for the convolution).
    The batch is processed in chunks of ``chunk`` samples to bound the temporaries. A graph
    is run in its layers' order, each output kept until its last reader has run.

    Parameters
    ----------
    net : Network
        A chain or a graph.
    x : array
        The batch: ``(N, d)`` or ``(N, C, H, W)``, of any array-API library.
    chunk : int
        The most samples run at once.

    Returns
    -------
    array
        The output of the network's last layer, in ``x``'s library and device.

    Raises
    ------
    ValueError
        When a layer's input does not fit it (see :func:`apply_layer`, :func:`apply_node`).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, Dense, ReLU, Flatten, Add, forward
    >>> net = Network([Conv2d(np.ones((2, 1, 3, 3)), padding=1), ReLU(), Flatten()])
    >>> forward(net, np.ones((1, 1, 4, 4))).shape
    (1, 32)
    >>> res = Network([Dense(np.eye(2)), ReLU(), Add()], inputs=[(-1,), (0,), (1, -1)])
    >>> forward(res, np.array([[1.0, -1.0]]))
    array([[ 2., -1.]])
    """
    xp = namespace(x=x)
    outs = []
    N = int(x.shape[0])
    for start in range(0, max(N, 1), chunk):
        y = x if N <= chunk else x[start : min(start + chunk, N), ...]
        if net.is_chain:
            for layer in net.layers:
                y = apply_layer(layer, y, xp)
        elif net.layers:
            y = node_outputs(net, y)[len(net.layers) - 1]
        outs.append(y)
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
