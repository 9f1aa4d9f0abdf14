"""What :func:`tropref.compress_network` can compress in a network, and BatchNorm folding.

The structure of a network for the walk, read once before anything is compressed:

1. **Segments.** The network is cut into chain segments (:mod:`tropref.network.segments`);
   a chain is one segment.
2. **Fold BatchNorm into its layer.** In each segment, a BatchNorm reached from a dense or
   convolutional layer through dropout, identity or max pooling only (so before the ReLU)
   is a per-channel affine map of the pre-activations: ``W <- s W``, ``b <- s b + t``.
   Exact at inference. Through a max pooling this needs ``s >= 0`` (``max`` commutes with
   non-negative scales). The folded segments are spliced back into one *work* graph.
3. **Find the hidden layers.** A dense or convolutional layer is a hidden ReLU layer
   (:class:`HiddenLayer`) when a ReLU follows it before the next dense/convolutional layer
   of its segment, with only dropout, identity, pooling, a flatten and at most one
   BatchNorm after the ReLU in between. Its units are its output channels. The last dense
   or convolutional layer of a segment has no such next layer: the classifier (at the end of
   the network) or a layer whose channels are coupled to other paths (it feeds an addition,
   a concatenation or a branch). Neither is compressed.

:func:`analyse` does the three steps and returns a :class:`Structure`;
:func:`compressible_layers` lists what it finds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from .._array import Array, namespace, to_numpy
from ..statistics import relu_input_moments
from .graph import Network
from .kinds import kind_of
from .layers import BatchNorm, Conv2d, Dense
from .segments import Segment, coupling, segment_network, segments, splice
from .shapes import output_shapes

__all__ = ["HiddenLayer", "Part", "Structure", "analyse", "hidden_layers", "compressible_layers", "fold_batchnorm"]


@dataclass(frozen=True)
class HiddenLayer:
    """A hidden ReLU layer ``i`` of a chain and what lies between it and the next layer ``j``.

    Attributes
    ----------
    i, j : int
        The layer and the next dense/conv layer (indices in the chain).
    path : tuple of int
        The layers strictly between them.
    bn : int or None
        A BatchNorm after the ReLU, if any.
    flatten : int or None
        A Flatten between them, if any.
    maxpool : bool
        A max pooling between them.
    padded_avg : bool
        A zero-padded average pooling counting the padding, after the ReLU.
    max_after_bn : bool
        A max pooling after the BatchNorm (negative scales pin channels).
    """

    i: int
    j: int
    path: tuple[int, ...]
    bn: int | None
    flatten: int | None
    maxpool: bool
    padded_avg: bool
    max_after_bn: bool = False


def _linear_indices(net: Network) -> list[int]:
    return [i for i, l in enumerate(net.layers) if kind_of(l).linear]


def _analyse(net: Network, i: int, j: int) -> HiddenLayer | str:
    """The hidden-layer structure between linear layers ``i`` and ``j``, or why there is none."""
    seen_relu = False
    bn = flatten = None
    maxpool = padded_avg = max_after_bn = False
    path = tuple(range(i + 1, j))
    for p in path:
        layer = net.layers[p]
        role = kind_of(layer).role  # what the layer does on the path, whatever its type
        if role == "passive":
            continue
        if role == "relu":
            if bn is not None:
                return f"a ReLU follows the BatchNorm {net.label(bn)}"
            seen_relu = True
        elif role == "max":
            maxpool = True
            max_after_bn = max_after_bn or bn is not None
        elif role == "avg":
            if not seen_relu:
                return f"average pooling {net.label(p)} before the ReLU"
            padded_avg = padded_avg or (layer.padded and layer.count_include_pad)
        elif role == "flatten":
            if not seen_relu:
                return f"Flatten {net.label(p)} before the ReLU"
            flatten = p
        elif role == "batchnorm":
            if not seen_relu:
                return f"BatchNorm {net.label(p)} before the ReLU could not be folded into the layer"
            if bn is not None:
                return f"two BatchNorms after the ReLU ({net.label(bn)}, {net.label(p)})"
            bn = p
        else:
            return f"{net.label(p)} between it and the next layer"
    if not seen_relu:
        return "no ReLU after it"
    if kind_of(net.layers[i]).images and not kind_of(net.layers[j]).images and flatten is None:
        return f"no Flatten between the convolution and {net.label(j)}"
    if bn is not None and padded_avg:
        # the shift would have to pass a padded average: not a per-channel constant any more
        return f"the BatchNorm {net.label(bn)} is followed by a zero-padded average pooling counting the padding"
    return HiddenLayer(i, j, path, bn, flatten, maxpool, padded_avg, max_after_bn)


def hidden_layers(net: Network) -> dict[int, HiddenLayer | str]:
    """For every dense/conv layer of a chain but the last: its :class:`HiddenLayer`, or why it is none.

    Layer ``i`` is hidden when a ReLU follows it before the next dense/conv layer ``j``,
    with only dropout, identity, pooling, a flatten and at most one BatchNorm after the ReLU
    in between (see the module notes); BatchNorms before the ReLU must have been folded
    (:func:`fold_batchnorm`).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Dropout
    >>> net = Network([Dense(np.ones((4, 3))), Dense(np.ones((4, 4))), ReLU(), Dense(np.ones((3, 4))), ReLU(),
    ...                Dropout(), Dense(np.ones((2, 3)))])
    >>> hidden = hidden_layers(net)
    >>> hidden[0]
    'no ReLU after it'
    >>> hidden[3]
    HiddenLayer(i=3, j=6, path=(4, 5), bn=None, flatten=None, maxpool=False, padded_avg=False, max_after_bn=False)
    >>> sorted(hidden)  # the classifier (layer 6) is not among them
    [0, 1, 3]
    """
    lin = _linear_indices(net)
    return {i: _analyse(net, i, j) for i, j in itertools.pairwise(lin)}


def fold_batchnorm(net: Network) -> tuple[Network, list[int]]:
    """Fold every BatchNorm that acts on a dense/conv layer's pre-activations into it.

    A BatchNorm ``y = s x + t`` reached from a dense or convolutional layer through dropout,
    identity or max pooling only becomes part of it: ``W <- s W`` (per output unit),
    ``b <- s b + t``; exact at inference. Through a max pooling only when ``s >= 0``
    (``max`` commutes with non-negative scales); other BatchNorms stay.

    Parameters
    ----------
    net : Network
        A chain.

    Returns
    -------
    folded : Network
        The chain without the folded BatchNorms.
    origin : list of int
        For each layer of ``folded``, its index in ``net``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, BatchNorm, ReLU
    >>> rng = np.random.default_rng(0)
    >>> bn = BatchNorm(rng.normal(size=4), rng.uniform(1, 2, size=4), rng.normal(size=4), rng.normal(size=4))
    >>> net = Network([Dense(rng.normal(size=(4, 3)), rng.normal(size=4)), bn, ReLU(), Dense(rng.normal(size=(2, 4)))])
    >>> folded, origin = fold_batchnorm(net)
    >>> [type(layer).__name__ for layer in folded], origin
    (['Dense', 'ReLU', 'Dense'], [0, 2, 3])
    >>> x = rng.normal(size=(5, 3))
    >>> bool(np.allclose(folded(x), net(x)))
    True

    A BatchNorm after the ReLU acts on activations, not pre-activations: it stays.

    >>> len(fold_batchnorm(Network([net.layers[0], ReLU(), bn, net.layers[3]]))[0])
    4
    """
    folded, origin, _, _ = _fold_batchnorm(net)
    return folded, origin


def _fold_batchnorm(
    net: Network,
) -> tuple[Network, list[int], dict[int, tuple[np.ndarray, np.ndarray]], frozenset[int]]:
    """:func:`fold_batchnorm`, the pre-activation moments each fold leaves behind, and the
    layers whose moments a BatchNorm after the ReLU implies instead.

    A BatchNorm ``γ (x − m) / √(v + ε) + β`` right after its layer (through dropout or
    identity only) normalises the pre-activations it was trained on: they then have mean
    ``β`` and spread ``|γ| √(v / (v + ε))``. A BatchNorm right after the layer's ReLU
    instead (through dropout or identity only) stays, and its running mean ``m`` and
    variance ``v`` are the ReLU output's: the Gaussian pre-activation they imply
    (:func:`tropref.statistics.relu_input_moments`) stands in where no BatchNorm precedes
    the ReLU. These are returned per folded layer (its index in the folded chain), as host
    float64 vectors, for the statistics correction and the refit, with the set of indices
    whose moments are implied (TropNNC reads them; baselines that read a BatchNorm's
    statistics, such as Model Folding's repair, take only those stored before the ReLU).
    """
    layers = list(net.layers)
    origin = list(range(len(layers)))
    moments: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    implied: set[int] = set()
    out: list = []
    out_origin: list[int] = []
    last_linear: int | None = None  # index in `out` of the layer BN can fold into
    fired: int | None = None  # index in `out` of the layer whose ReLU output a BN may read
    through_max = False
    for idx, layer in zip(origin, layers, strict=False):
        role = kind_of(layer).role
        if role == "batchnorm" and fired is not None and fired not in moments:
            after = _moments_after_relu(layer) if layer.channels == out[fired].units else None
            if after is not None:
                moments[fired] = after
                implied.add(fired)
        if role not in ("passive", "relu"):
            fired = None
        if role == "linear":
            last_linear, through_max = len(out), False
        elif role == "relu" and last_linear is not None and not through_max:
            fired, last_linear = last_linear, None
        elif role == "batchnorm" and last_linear is not None:
            lin = out[last_linear]
            scale, shift = layer.scale, layer.shift
            ok = layer.channels == lin.units and (not through_max or bool(np.all(to_numpy(scale) >= 0)))
            if ok:
                out[last_linear] = _scale_units(lin, scale, shift)
                if not through_max:  # the statistics are of the layer's own pre-activations
                    moments[last_linear] = _batchnorm_moments(layer)
                else:
                    moments.pop(last_linear, None)
                continue
            last_linear = None
        elif role == "max":
            through_max = True
        elif role != "passive":
            last_linear = None
        out.append(layer)
        out_origin.append(idx)
    return net.replace_layers(out), out_origin, moments, frozenset(implied)


def _batchnorm_moments(bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``β`` and spread ``|γ| √(v / (v + ε))`` of a BatchNorm's outputs on its training data."""
    var = to_numpy(bn.var).astype(np.float64)
    gamma = np.ones_like(var) if bn.weight is None else to_numpy(bn.weight).astype(np.float64)
    beta = np.zeros_like(var) if bn.bias is None else to_numpy(bn.bias).astype(np.float64)
    return beta, np.abs(gamma) * np.sqrt(np.maximum(var, 0.0) / (np.maximum(var, 0.0) + bn.eps))


def _moments_after_relu(bn: BatchNorm) -> tuple[np.ndarray, np.ndarray] | None:
    """The pre-activation ``μ, σ`` implied by a BatchNorm's running statistics of a ReLU's
    output; None when they cannot be a ReLU output's: a negative mean, or a zero mean with a
    variance (a ReLU output of mean 0 is 0), as in a BatchNorm never trained on it or one
    tropref wrote back with mean 0 and variance 1; or when no unit would fire."""
    mean, var = (to_numpy(a).astype(np.float64) for a in (bn.mean, bn.var))
    var = np.maximum(var, 0.0)
    if (
        not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)))
        or np.any(mean < 0)
        or np.any((mean == 0) & (var > 0))
    ):
        return None
    mu, sigma = relu_input_moments(mean, var)
    return (mu, sigma) if np.any(sigma > 0) else None


def _scale_units(layer: Dense | Conv2d, scale: Array, shift: Array) -> Dense | Conv2d:
    xp = namespace(W=layer.W)
    shape = (-1,) + (1,) * (layer.W.ndim - 1)
    b = shift if layer.b is None else layer.b * scale + shift
    return replace(layer, W=layer.W * xp.reshape(scale, shape), b=b)


@dataclass(frozen=True)
class Part:
    """One chain segment of the work graph: the type of :attr:`Structure.parts`.

    Attributes
    ----------
    segment : Segment
        The segment in the user's network.
    chain : Network
        Its layers with BatchNorms folded, as a chain of its own (local indices).
    origin : tuple of int
        For each layer of ``chain``: its index in the user's network.
    at : tuple of int
        For each layer of ``chain``: its index in the work graph.
    hidden : dict
        :func:`hidden_layers` of ``chain``.
    coupled : str or None
        Why the channels at the segment's end are shared with other paths (None: the
        segment ends the network).
    moments : dict
        For each layer of ``chain`` whose BatchNorm was folded into it: the mean and spread
        of its pre-activations that the BatchNorm stored (host float64 vectors); for a layer
        whose BatchNorm follows its ReLU, those its statistics imply.
    implied : frozenset of int
        The layers of ``moments`` whose statistics come from a BatchNorm after the ReLU.
    """

    segment: Segment
    chain: Network
    origin: tuple[int, ...]
    at: tuple[int, ...]
    hidden: dict[int, HiddenLayer | str] = field(default_factory=dict)
    coupled: str | None = None
    moments: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    implied: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Structure:
    """A network read for the walk (see the module notes): its work graph and segments.

    Attributes
    ----------
    net : Network
        The user's network.
    input_shape : tuple of int or None
        One sample's shape (the network's, else the data's), None when unknown.
    work : Network
        The graph with BatchNorms folded (every segment replaced by its folded chain).
    parts : tuple of Part
        The segments, in the graph's order.
    moved : mapping
        Index in the work graph of every junction and segment end of ``net``.
    shapes : list of tuple of int or None
        The output shape of every layer of ``net`` for ``input_shape`` (None when it is
        unknown), computed once, for the report's counts.
    """

    net: Network
    input_shape: tuple[int, ...] | None
    work: Network
    parts: tuple[Part, ...]
    moved: dict[int, int]
    shapes: list[tuple[int, ...]] | None = None

    @cached_property
    def _where(self) -> dict[int, tuple[int, int]]:
        return {g: (k, i) for k, part in enumerate(self.parts) for i, g in enumerate(part.at)}

    def index(self, g: int) -> tuple[int, int]:
        """The position of work layer ``g``: its part's index in ``parts`` and its index in
        that part's chain."""
        return self._where[g]

    def locate(self, g: int) -> tuple[Part, int]:
        """The part holding work layer ``g`` and its index in that part's chain."""
        k, i = self._where[g]
        return self.parts[k], i

    def origin(self, g: int) -> int:
        """The index in the user's network of work layer ``g``."""
        part, i = self.locate(g)
        return part.origin[i]

    def hidden(self, g: int) -> HiddenLayer:
        """The hidden layer at work index ``g`` (local indices in its part's chain)."""
        part, i = self.locate(g)
        h = part.hidden[i]
        if not isinstance(h, HiddenLayer):
            raise KeyError(g)
        return h

    def next_layer(self, g: int) -> int:
        """The work index of the layer that reads hidden layer ``g``."""
        part, _ = self.locate(g)
        return part.at[self.hidden(g).j]

    def with_layers(self, layers: Sequence[Any], shapes: Sequence[tuple[int, ...]] | None = None) -> Structure:
        """The same structure over other work layers of the same kinds in the same places
        (widths may differ, as after compressing a coupled group): every part's chain holds
        the new layers and its input shape follows. ``shapes`` are the new work graph's
        output shapes when the caller has them (the walk computes them once), else they are
        computed here."""
        work = self.work.replace_layers(layers)
        if shapes is None:
            shapes = None if work.input_shape is None else output_shapes(work)
        parts = []
        for part in self.parts:
            src = part.segment.source
            shape = None if shapes is None else (work.input_shape if src < 0 else shapes[self.moved[src]])
            parts.append(replace(part, chain=Network(tuple(layers[g] for g in part.at), shape)))
        return replace(self, work=work, parts=tuple(parts))

    @property
    def compressible(self) -> list[int]:
        """Work indices of every hidden layer, in order."""
        return sorted(p.at[i] for p in self.parts for i, h in p.hidden.items() if isinstance(h, HiddenLayer))


def analyse(net: Network, input_shape: Sequence[int] | None = None) -> Structure:
    """Cut ``net`` into segments, fold its BatchNorms and find its hidden layers.

    Parameters
    ----------
    net : Network
    input_shape : sequence of int, optional
        One sample's shape when ``net`` has none (segments then know their input shapes).

    Returns
    -------
    Structure

    Raises
    ------
    ValueError
        When the network does not accept inputs of ``input_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> net = Network([Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4)))])
    >>> s = analyse(net)
    >>> s.compressible, s.hidden(0).j
    ([0], 2)
    """
    shape = net.input_shape if input_shape is None else tuple(int(v) for v in input_shape)
    try:
        shapes = None if shape is None else output_shapes(net, shape)
    except ValueError as exc:
        raise ValueError(f"the network does not accept inputs of shape {shape}: {exc}") from None
    segs = segments(net)
    chains, origins, stats = [], [], []
    for seg in segs:
        src_shape = None if shapes is None else (shape if seg.source < 0 else shapes[seg.source])
        chain, local, moments, implied = _fold_batchnorm(segment_network(net, seg, src_shape))
        stats.append((moments, implied))
        chains.append(chain)
        origins.append(tuple(seg.nodes[o] for o in local))
    work, placed, moved = splice(net, segs, {k: chain.layers for k, chain in enumerate(chains)})
    parts = tuple(
        Part(seg, chain, origin, tuple(at), hidden_layers(chain), coupling(net, seg), *found)
        for seg, chain, origin, at, found in zip(segs, chains, origins, placed, stats, strict=True)
    )
    return Structure(net, shape, Network(work.layers, shape, work.inputs), parts, moved, shapes)


def compressible_layers(net: Network) -> list[int]:
    """The dense and convolutional layers whose units :func:`tropref.compress_network` can
    merge (indices in ``net``): the hidden ReLU layers of every chain segment (channels
    feeding an addition, a concatenation or a branch are not among them).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> compressible_layers(Network([Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4)))]))
    [0]
    """
    s = analyse(net)
    return sorted(s.origin(g) for g in s.compressible)
