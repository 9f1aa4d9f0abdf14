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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import Array, device, namespace, to_numpy
from .forward import apply_layer, channel_view, conv2d
from .graph import Network
from .layers import JUNCTIONS, Add, BatchNorm, Concat, Conv2d, Dense, Flatten, Layer, Softmax

__all__ = ["node_bounds", "interval_bounds", "max_patch_norm", "carry_bound"]


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
    xp = namespace(bound=bound)
    sq = bound * bound
    if isinstance(layer, Dense):
        return math.sqrt(float(to_numpy(xp.sum(sq))) + 1.0)
    per_pixel = xp.sum(sq, axis=0)[None, None, ...]  # (1, 1, H, W)
    ones = xp.ones((1, 1, int(layer.W.shape[2]), int(layer.W.shape[3])), dtype=bound.dtype, device=device(bound))
    sums = conv2d(xp, per_pixel, ones, None, layer.stride, layer.padding, layer.dilation)
    return math.sqrt(float(to_numpy(xp.max(sums))) + 1.0)


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
    other layer maps its one input's bounds (:func:`_interval_step`)."""
    if isinstance(layer, Add):
        lo, hi = ins[0]
        for a, b in ins[1:]:
            lo, hi = lo + a, hi + b
        return lo, hi
    if isinstance(layer, Concat):
        return xp.concat([a for a, _ in ins], axis=1), xp.concat([b for _, b in ins], axis=1)
    return _interval_step(xp, layer, *ins[0])


def _interval_step(xp: Any, layer: Layer, lo: Array, hi: Array) -> tuple[Array, Array]:
    """Bounds on one layer's output from elementwise bounds on its input (batch of one)."""
    if isinstance(layer, (Dense, Conv2d, BatchNorm)):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        c = apply_layer(layer, c, xp)
        if isinstance(layer, Dense):
            r = xp.matmul(r, xp.permute_dims(xp.abs(layer.W), (1, 0)))
        elif isinstance(layer, Conv2d):
            r = conv2d(xp, r, xp.abs(layer.W), None, layer.stride, layer.padding, layer.dilation)
        else:
            r = r * channel_view(xp, xp.abs(layer.scale), r.ndim)
        return c - r, c + r
    if isinstance(layer, Softmax):
        # p_i is increasing in z_i and decreasing in the other z_j: p_i >= 1 / (1 + Σ_{j≠i}
        # exp(hi_j - lo_i)), written with shifted exponents so that no 0/0 occurs
        lo_p = 1.0 / (1.0 + _sum_others_exp(xp, lo, hi))
        hi_p = 1.0 / (1.0 + _sum_others_exp(xp, hi, lo))
        return lo_p, hi_p
    return apply_layer(layer, lo, xp), apply_layer(layer, hi, xp)


def _sum_others_exp(xp: Any, own: Array, others: Array) -> Array:
    """``Σ_{j≠i} exp(others_j − own_i)`` for every ``i`` (inputs ``(1, d)``), computed
    without overflow to NaN: an infinite sum is fine (the bound is then 0 or 1)."""
    d = int(own.shape[1])
    diff = others[:, None, :] - own[:, :, None]  # (1, d, d): entry (i, j) = others_j - own_i
    eye = xp.eye(d, dtype=own.dtype, device=device(own))[None, ...]
    big = xp.asarray(-math.inf, dtype=own.dtype, device=device(own))
    diff = xp.where(eye > 0, big, diff)
    m = xp.max(diff, axis=2)
    m_safe = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    total = xp.sum(xp.exp(diff - m_safe[..., None]), axis=2)
    return xp.where(xp.isfinite(m), xp.exp(m) * total, xp.where(m > 0, xp.full_like(m, math.inf), xp.zeros_like(m)))


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
