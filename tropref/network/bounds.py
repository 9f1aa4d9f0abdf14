"""Interval bounds through a network, and per-channel error bounds carried to its output.

These are the pieces of the network certificate (:mod:`tropref.network.certificate`):

- :func:`node_bounds` (and :func:`interval_bounds` for a chain): elementwise bounds on
  every layer's output over an input box, by interval arithmetic;
- :func:`max_patch_norm`: the largest ``‖(patch, 1)‖`` a dense or convolutional layer reads
  from inputs within such bounds;
- :func:`carry_bound`: a per-channel bound on a change of one layer's output, carried along
  every path to the network's output.

They run on NumPy ``float64`` host copies of the networks (the certificate's arithmetic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import Array, namespace
from .graph import Network
from .kinds import kind_of
from .layers import Conv2d, Dense, Layer

__all__ = ["node_bounds", "interval_bounds", "node_step", "max_patch_norm", "carry_bound"]


def max_patch_norm(layer: Dense | Conv2d, bound: Array) -> float:
    """Largest ``‖(patch, 1)‖`` over the inputs of ``layer`` whose entries satisfy
    ``|x| <= bound`` elementwise (``bound`` of one sample's shape); a dense layer's
    "patch" is its whole input.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense
    >>> max_patch_norm(Dense(np.ones((2, 3))), np.array([1.0, 1.0, 1.0]))  # sqrt(3 + 1)
    2.0
    """
    return kind_of(layer).patch_norm(layer, bound)


def interval_bounds(net: Network, lower: Array, upper: Array) -> list[tuple[Array, Array]]:
    """Elementwise bounds on every layer's input over the box ``lower <= x <= upper``.

    Interval arithmetic in centre-radius form: an affine layer maps centre ``c`` and radius
    ``r`` to ``A c + b`` and ``|A| r``; ReLU, pooling and flatten are monotone. Entry ``i``
    bounds the input of layer ``i``; the last entry bounds the output. ``lower``/``upper``
    have one sample's shape.

    Returns
    -------
    list of (lower, upper)
        ``len(net) + 1`` pairs of arrays of one sample's shape at each point.

    Raises
    ------
    ValueError
        When ``net`` is not a chain (:func:`node_bounds` takes graphs).

    Examples
    --------
    ``x_1 − x_2`` over the square ``[−1, 1]^2``, then its ReLU:

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> net = Network([Dense(np.array([[1.0, -1.0]])), ReLU()])
    >>> [(lo.tolist(), hi.tolist()) for lo, hi in interval_bounds(net, -np.ones(2), np.ones(2))]
    [([-1.0, -1.0], [1.0, 1.0]), ([-2.0], [2.0]), ([0.0], [2.0])]
    """
    if not net.is_chain:
        raise ValueError(
            "interval_bounds describes a chain; use node_bounds for a network with additions or concatenations"
        )
    return [(lower, upper), *node_bounds(net, lower, upper)]


def node_step(xp: Any, layer: Layer, ins: Sequence[tuple[Array, Array]]) -> tuple[Array, Array]:
    """Bounds on one node's output from elementwise bounds ``(lo, hi)`` on each of its inputs
    (batched along axis 0): an :class:`Add` adds them, a :class:`Concat` joins them, any
    other layer maps its one input's bounds (its kind's interval step,
    :mod:`tropref.network.kinds`). The step of :func:`node_bounds`, for a walk of its own
    (:func:`tropref.network.certify` bounds every sample's ball at once).

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref.network import Add, ReLU
    >>> lo, hi = np.array([[-1.0, 2.0]]), np.array([[1.0, 3.0]])
    >>> [b.tolist() for b in node_step(xp, ReLU(), [(lo, hi)])]
    [[[0.0, 2.0]], [[1.0, 3.0]]]
    >>> [b.tolist() for b in node_step(xp, Add(), [(lo, hi), (lo, hi)])]
    [[[-2.0, 4.0]], [[2.0, 6.0]]]
    """
    kind = kind_of(layer)
    return kind.interval(xp, layer, ins if kind.junction else ins[:1])


def node_bounds(net: Network, lower: Array, upper: Array) -> list[tuple[Array, Array]]:
    """Elementwise bounds on every layer's output over the box ``lower <= x <= upper``
    (chain or graph): interval arithmetic as in :func:`interval_bounds`, and an
    :class:`Add` adds the bounds of its inputs, a :class:`Concat` joins them.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.array([[1.0, -1.0]])), ReLU(), Dense(np.ones((2, 1))), Add()],
    ...               inputs=[(-1,), (0,), (1,), (2, -1)])
    >>> [(lo.tolist(), hi.tolist()) for lo, hi in node_bounds(net, -np.ones(2), np.ones(2))]
    [([-2.0], [2.0]), ([0.0], [2.0]), ([0.0, 0.0], [2.0, 2.0]), ([-1.0, -1.0], [3.0, 3.0])]
    """
    xp = namespace(lower=lower, upper=upper)
    vals: dict[int, tuple[Array, Array]] = {-1: (lower[None, ...], upper[None, ...])}
    out = []
    for i, layer in enumerate(net.layers):
        lo, hi = node_step(xp, layer, [vals[p] for p in net.sources(i)])
        vals[i] = (lo, hi)
        out.append((lo[0, ...], hi[0, ...]))
    return out


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

    Parameters
    ----------
    net : Network
        A NumPy ``float64`` network (chain or graph).
    j : int
        The layer whose output changes.
    e : numpy.ndarray
        Per channel of layer ``j``'s output, a bound on the change of every entry.
    shapes : sequence of tuple of int
        :func:`~tropref.network.shapes.output_shapes` of ``net``.
    input_shape : tuple of int
        One sample's input shape.

    Returns
    -------
    numpy.ndarray
        Per output entry (a convolutional output's per-channel bound repeated over its
        positions), a bound on its change; zero when the change does not reach the output.

    Examples
    --------
    In the residual block ``h + 2 relu(h)`` a change of ``h`` (layer 0) reaches the
    addition along two paths: ``2 e`` through the ReLU and the dense layer ``2 I``, and
    ``e`` through the skip; the addition adds them. A change of layer 2 takes one path.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> from tropref.network.shapes import output_shapes
    >>> net = Network([Dense(np.eye(2)), ReLU(), Dense(2 * np.eye(2)), Add()], inputs=[(-1,), (0,), (1,), (2, 0)])
    >>> shapes = output_shapes(net, (2,))
    >>> carry_bound(net, 0, np.array([1.0, 0.5]), shapes, (2,))
    array([3. , 1.5])
    >>> carry_bound(net, 2, np.array([1.0, 0.5]), shapes, (2,))
    array([1. , 0.5])
    """
    bounds: dict[int, np.ndarray] = {j: np.asarray(e, dtype=np.float64)}
    for p in range(j + 1, len(net.layers)):
        src = net.sources(p)
        if not any(s in bounds for s in src):
            continue
        # a path the change does not reach adds nothing: zero on that input's channels
        es = [bounds.get(s, np.zeros(_channels(shapes, s, input_shape))) for s in src]
        in_shapes = [input_shape if s < 0 else shapes[s] for s in src]
        bounds[p] = kind_of(net.layers[p]).carry(net.layers[p], es, in_shapes)
    last = len(net.layers) - 1
    out = bounds.get(last, np.zeros(_channels(shapes, last, input_shape)))
    if len(shapes[last]) == 3:  # a convolutional output: every position has the channel's bound
        out = np.repeat(out, int(shapes[last][1] * shapes[last][2]))
    return out


def _channels(shapes: Sequence[tuple[int, ...]], i: int, input_shape: tuple[int, ...]) -> int:
    return int((input_shape if i < 0 else shapes[i])[0])
