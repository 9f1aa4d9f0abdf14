"""The network certificate: a bound on the change of a network's outputs, composed from its layers'.

Every layer certificate bounds the change of the next layer's pre-activations by
``β_l ‖(patch, 1)‖`` (:func:`tropref.compress_layer`). :func:`network_certificate` composes
them over the whole network, chain or graph (``docs/theory.md``, "Whole networks"), on an
input domain (the box spanned by sample inputs, or a radius).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .._array import Array, to_numpy
from .bounds import carry_bound, max_patch_norm, node_bounds
from .graph import Network, map_arrays
from .kinds import kind_of
from .shapes import output_shapes

__all__ = ["network_certificate", "input_box", "CAPPED"]

CAPPED = "; the composed bound exceeds the span of the interval output boxes, which is shown instead"
"""Appended to the domain when the network certificate is that span (the interval cap):
:attr:`~tropref.network.NetworkReport.input_domain` then ends with it, and a caller that
reads the report (the table, the sweeps' records) tells a bound from that cap by it."""


def input_box(
    net: Network, inputs: Array | None, input_radius: float | None
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The input domain as elementwise bounds ``(lower, upper)`` of one sample and its
    description: ``|x_i| <= input_radius``, else the box spanned by ``inputs``, else None.

    Raises
    ------
    ValueError
        For a negative ``input_radius``, or one without a known input shape.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense
    >>> lo, hi, domain = input_box(Network([Dense(np.ones((1, 2)))]), np.array([[0.0, 1.0], [2.0, -1.0]]), None)
    >>> lo.tolist(), hi.tolist(), domain
    ([0.0, -1.0], [2.0, 1.0], 'the box spanned by the 2 inputs given')
    """
    if input_radius is not None:
        r = float(input_radius)
        if not r >= 0:
            raise ValueError(f"`input_radius` must be a non-negative number, got {input_radius!r}")
        if net.input_shape is None and inputs is None:
            raise ValueError("`input_radius` needs the network's `input_shape` (or `inputs`)")
        shape = net.input_shape if net.input_shape is not None else tuple(inputs.shape[1:])
        return np.full(shape, -r), np.full(shape, r), f"the inputs with |x_i| <= {r:g} and ‖x‖ <= {r:g}"
    if inputs is None:
        return None
    x = to_numpy(inputs).astype(np.float64)
    return x.min(axis=0), x.max(axis=0), f"the box spanned by the {x.shape[0]} inputs given"


def network_certificate(
    work: Network,
    compressed: Network,
    layer_certificates: Mapping[int, np.ndarray | None],
    next_layer: Mapping[int, int],
    *,
    inputs: Array | None = None,
    input_radius: float | None = None,
    earlier: np.ndarray | None = None,
    original: Network | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
) -> tuple[np.ndarray | None, dict[int, float], str]:
    """Compose per-layer certificates into a bound on the change of the network's outputs.

    Telescoping over the compressed layers in the graph's order, ``f̃ − f = Σ_l (g_l −
    g_{l−1})`` where ``g_l`` has the layers up to ``l`` compressed and the rest original.
    ``g_l`` and ``g_{l−1}`` differ only in the pre-activations of the layer that reads layer
    ``l`` (``next_layer[l]``), by at most ``β_l ρ_l`` per channel, where ``ρ_l`` is the
    largest ``‖(patch, 1)‖`` of layer ``l``'s input in the *compressed* graph over the input
    domain (interval bounds, :func:`tropref.network.bounds.node_bounds`; an addition adds
    the bounds of its inputs). That change is carried to the outputs through the *original*
    remaining graph along every path (:func:`tropref.network.bounds.carry_bound`: ReLU,
    pooling and dropout keep the bounds, BatchNorm multiplies them by ``|scale|``, a dense
    layer by ``|W|``, a convolution by ``Σ_{kh,kw} |W|``, a final softmax gives ``1/2`` of
    the largest), and the bounds of paths that meet at an addition are added. The sum is
    capped by the span of the two networks' interval output boxes (which makes a final
    softmax's bound at most 1). Loose for deep networks (each ``|W|`` is an operator-norm-like
    worst case); the report shows the measured error beside it.

    Parameters
    ----------
    work : Network
        The network before compression (BatchNorms folded, as the walk compresses it).
    compressed : Network
        The same graph after compression (layer ``l`` of one is layer ``l`` of the other).
    layer_certificates : mapping
        ``β_l`` per compressed layer (a vector over the next layer's channels), or None
        when the method gives none.
    next_layer : mapping
        The layer reading each compressed layer.
    inputs, input_radius
        The input domain: the box spanned by ``inputs``, or ``|x_i| <= input_radius``
        (see :func:`input_box`).
    earlier : numpy.ndarray, optional
        Per output, a bound on the change that ``work`` itself carries from an earlier
        step (the coupled groups compressed before the hidden layers,
        :func:`tropref.network.coupled.groups_certificate`): added before the cap.
    original : Network, optional
        With ``earlier``: the network before that step, whose output box the cap spans.
    shapes : sequence of tuple of int, optional
        :func:`~tropref.network.shapes.output_shapes` of ``work`` for inputs of
        ``work.input_shape``, when the caller has them (the walk computes them once); used
        when the input domain has that shape, computed here otherwise.

    Returns
    -------
    bound : numpy.ndarray or None
        Per output; None when a layer has no certificate or when a bound is not finite (the
        interval bounds overflow in a deep network): never a number that does not hold.
    shares : dict
        Each layer's share (its largest entry).
    domain : str
        The input domain, in words.

    Raises
    ------
    ValueError
        For a negative ``input_radius``, or one without a known input shape
        (:func:`input_box`).

    References
    ----------
    ``docs/theory.md``, "Whole networks".

    Examples
    --------
    A hidden layer of 8 units compressed to 4 by :func:`tropref.compress_layer`; the
    certificate over the box spanned by 100 inputs holds on those inputs.

    >>> import numpy as np
    >>> import tropref
    >>> from tropref.network import Network, Dense, ReLU
    >>> rng = np.random.default_rng(0)
    >>> W, b, V = rng.normal(size=(8, 3)), rng.normal(size=8), rng.normal(size=(2, 8))
    >>> work = Network([Dense(W, b), ReLU(), Dense(V)], input_shape=(3,))
    >>> res = tropref.compress_layer(W, b, 4, W_next=V, seed=0)
    >>> small = Network([Dense(res.W, res.b), ReLU(), Dense(res.W_next, res.b_next)])
    >>> x = rng.uniform(-1, 1, size=(100, 3))
    >>> bound, shares, domain = network_certificate(work, small, {0: res.certificate}, {0: 2}, inputs=x)
    >>> np.round(bound, 2), domain
    (array([3.08, 6.98]), 'the box spanned by the 100 inputs given')
    >>> bool(np.all(np.abs(small(x) - work(x)) <= bound))
    True
    >>> network_certificate(work, small, {0: res.certificate}, {0: 2})
    (None, {}, 'no input domain (pass `inputs` or `input_radius`)')
    """
    box = input_box(work, inputs, input_radius)
    if box is None:
        return None, {}, "no input domain (pass `inputs` or `input_radius`)"
    lo, hi, domain = box
    host = map_arrays(work, lambda a: to_numpy(a).astype(np.float64))
    if shapes is None or work.input_shape is None or tuple(lo.shape) != tuple(work.input_shape):
        shapes = output_shapes(host, lo.shape)
    if not layer_certificates and earlier is None:
        return np.zeros(int(np.prod(shapes[-1]))), {}, domain
    if any(v is None for v in layer_certificates.values()):
        return None, {}, domain
    comp = map_arrays(compressed, lambda a: to_numpy(a).astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        boxes = node_bounds(comp, lo, hi)
        total = earlier
        shares = {}
        for g, beta in sorted(layer_certificates.items()):
            (src,) = comp.sources(g)
            b_lo, b_hi = (lo, hi) if src < 0 else boxes[src]
            rho = max_patch_norm(comp.layers[g], np.maximum(np.abs(b_lo), np.abs(b_hi)))
            if input_radius is not None and _reads_input(comp, g):
                rho = min(rho, math.sqrt(float(input_radius) ** 2 + 1.0))
            e = carry_bound(host, next_layer[g], beta * rho, shapes, tuple(lo.shape))
            shares[g] = float(np.max(e))
            total = e if total is None else total + e
        reference = host if original is None else map_arrays(original, lambda a: to_numpy(a).astype(np.float64))
        (lo_f, hi_f), (lo_c, hi_c) = node_bounds(reference, lo, hi)[-1], boxes[-1]
        span = (np.maximum(hi_f, hi_c) - np.minimum(lo_f, lo_c)).reshape(-1)
        bound = np.minimum(total, span)
        top = int(np.argmax(bound))
        if total[top] >= span[top]:
            domain += CAPPED
    if not np.all(np.isfinite(bound)):
        return None, {}, domain + " (certificate unavailable: the interval bounds overflow)"
    return bound, shares, domain


def _reads_input(net: Network, g: int) -> bool:
    """Whether layer ``g`` reads the network's input through dropout and identities only."""
    (p,) = net.sources(g)
    while p >= 0:
        if kind_of(net.layers[p]).role != "passive":  # a folded BatchNorm is an Identity here
            return False
        (p,) = net.sources(p)
    return True
