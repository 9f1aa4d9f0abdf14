"""How many units each hidden layer keeps: keep rules, global budgets and their allocation.

``keep`` in :func:`tropref.compress_network` is a fraction (every hidden layer keeps
``max(1, round(q n))`` units), a mapping from layers to widths (:func:`keep_widths`), or a
:class:`Budget` allocated non-uniformly across the layers (the paper's non-uniform
variant, :func:`budget_widths`).

A :class:`Budget` asks for a whole compressed network of at most a fraction of the
original's units, parameters or MACs. :func:`allocate_budget` turns it into a width per
hidden layer.

The rule (a tropref choice, documented in ``docs/networks.md``):

1. ``q0``: the largest uniform keep fraction that meets the budget.
2. Probe: compress each hidden layer alone to ``k0_l = round(q0 n_l)`` units (TropNNC
   without its Gaussian refit: the single fold's certificate) and take its
   certificate ``β_l`` (largest over the next layer's pre-activations), times the
   amplification ``A_l`` of a unit change there to the network's outputs through the later
   layers' ``|W|`` (see :func:`tropref.network.certificate.network_certificate`).
   ``a_l = β_l A_l`` estimates the output error of that layer at ``k0_l``.
3. Model the error of removing ``r`` units from layer ``l`` as ``a_l (r / r0_l)^2``
   (``r0_l = n_l − k0_l``): convex, so the allocation is spread rather than all-or-nothing.
4. With ``c_l`` the cost saved by removing one unit of layer ``l`` (at the uniform point),
   minimising the summed model error under the budget gives, by a Lagrange multiplier
   ``λ``, ``r_l = clip(λ c_l r0_l^2 / a_l, 0, n_l − 1)``. The smallest ``λ`` whose widths
   meet the budget (bisection, with the exact cost of the integer widths) is used.

Layers whose probe certificate is zero (exact merges) are given a small floor
``a_l >= 10^-6 max a`` so that they are compressed first but not to one unit for free.

5. Trust region: no layer gets fewer than ``ceil(floor · k0_l)`` units (``Budget.floor``,
   default 0.5). The model of step 3 is fitted at the uniform point and stays bounded as
   a layer shrinks to one unit, where the real damage does not: without the floor, the
   last hidden layer of LeNet-300-100 (whose errors later layers amplify least) was cut to
   a single unit at ``Budget(units=0.5)`` and the accuracy fell to chance
   (``docs/results.md``). The uniform widths meet the budget, so the floor never makes it
   infeasible.
The cost is predicted exactly from the widths; the compressed network can only be smaller
(methods may remove exactly removable units beyond ``k``), so the budget is always met.

With ``coupled=True`` the coupled groups (:mod:`~tropref.network.coupled`) share the
budget: each is one more "layer" of the rule, of as many units as its channels, probed by
compressing its producers together (their summed largest errors, carried to the outputs
from the producers' outputs), and the cost is counted over the whole graph
(:func:`graph_cost`), since a group's width changes layers in several segments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import to_numpy
from ._after_relu import keeps_batchnorm, min_width, pinned
from ._keep import fraction, k_of, units_kept
from .bounds import carry_bound
from .graph import Network, map_arrays
from .kinds import kind_of
from .shapes import count_macs, count_params, output_shapes
from .structure import Structure

__all__ = [
    "Budget",
    "keep_widths",
    "budget_widths",
    "allocate_budget",
    "predict_cost",
    "graph_cost",
    "folded_batchnorms",
    "amplifications",
    "rounded_width",
]


@dataclass(frozen=True)
class Budget:
    """A global budget: the compressed network keeps at most this fraction of the original's
    hidden ``units``, ``params`` (parameters) or ``macs`` (multiply-accumulates per sample).

    Exactly one of the three is given, as a fraction in (0, 1]. ``floor`` bounds the
    non-uniform allocation from below: no layer keeps fewer than ``floor`` times the width
    the uniform fraction meeting the budget would give it (``floor=0`` lets a layer go
    down to one unit).

    Raises
    ------
    ValueError
        When not exactly one of ``units``, ``params`` and ``macs`` is given, when it is not
        a fraction in (0, 1], or when ``floor`` is not in [0, 1].

    Examples
    --------
    >>> Budget(params=0.5)
    Budget(units=None, params=0.5, macs=None, floor=0.5)
    """

    units: float | None = None
    params: float | None = None
    macs: float | None = None
    floor: float = 0.5

    def __post_init__(self) -> None:
        given = {
            k: v for k, v in (("units", self.units), ("params", self.params), ("macs", self.macs)) if v is not None
        }
        if len(given) != 1:
            raise ValueError(f"Budget takes exactly one of units=, params=, macs=; got {sorted(given) or 'none'}")
        ((kind, value),) = given.items()
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not 0 < float(value) <= 1
        ):
            raise ValueError(f"Budget({kind}=...) must be a fraction in (0, 1], got {value!r}")
        if (
            isinstance(self.floor, bool)
            or not isinstance(self.floor, (int, float, np.integer, np.floating))
            or not 0 <= float(self.floor) <= 1
        ):
            raise ValueError(f"Budget(floor=...) must be a fraction in [0, 1], got {self.floor!r}")

    @property
    def kind(self) -> str:
        return "units" if self.units is not None else "params" if self.params is not None else "macs"

    @property
    def fraction(self) -> float:
        return float(getattr(self, self.kind))


def allocate_budget(
    budget: Budget,
    widths: Mapping[Any, int],
    *,
    total: int,
    cost: Callable[[Mapping[Any, int]], int],
    probe: Callable[[Any, int], np.ndarray | None],
    amplification: Mapping[Any, float] | None = None,
    min_width: Mapping[Any, int] | None = None,
) -> dict[Any, int]:
    """Widths per hidden layer meeting ``budget`` (see the module notes for the rule).

    Parameters
    ----------
    budget : Budget
    widths : mapping
        The compressible hidden layers (any hashable keys: work indices, and
        ``("group", t)`` for coupled groups) and their widths ``n_l`` before compression.
    total : int
        The units, parameters or MACs the budget is a fraction of (the user's network's).
    cost : callable
        ``cost(widths)``: the units, parameters or MACs of the compressed network when
        layer ``l`` keeps ``widths[l]`` units (see :func:`predict_cost`).
    probe : callable
        ``probe(l, k)``: the certificate vector of layer ``l`` compressed alone to ``k``.
    amplification : mapping, optional
        ``A_l`` per layer (1 when missing).
    min_width : mapping, optional
        The fewest units each layer can be compressed to (1 when missing).

    Returns
    -------
    dict
        ``k`` for every layer in ``widths``.

    Raises
    ------
    ValueError
        When the budget cannot be met even with the smallest widths.

    Examples
    --------
    Two layers of 4 units, a budget of half the units, and a probe saying that the second
    layer's merges cost ten times the first's: the first gives up more units.

    >>> import numpy as np
    >>> allocate_budget(Budget(units=0.5), {0: 4, 1: 4}, total=8, cost=lambda w: sum(w.values()),
    ...                 probe=lambda l, k: np.array([1.0 if l == 0 else 10.0]))
    {0: 1, 1: 3}
    """
    kind = budget.kind
    limit = budget.fraction * total
    n = dict(widths)
    low = {i: max(1, min(n[i], int((min_width or {}).get(i, 1)))) for i in n}

    smallest = cost(low)
    if smallest > limit:
        raise ValueError(
            f"the budget {budget} cannot be met: even the smallest widths (one unit per hidden layer, plus "
            "pinned channels) leave "
            f"{smallest} of {total} {kind} ({smallest / max(total, 1):.1%})"
        )
    if cost(n) <= limit:
        return dict(n)

    def uniform(q: float) -> dict[int, int]:
        return {i: max(low[i], units_kept(q, m)) for i, m in n.items()}

    lo, hi = 0.0, 1.0  # cost(uniform(lo)) <= limit < cost(uniform(hi))
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost(uniform(mid)) <= limit:
            lo = mid
        else:
            hi = mid
    k0 = uniform(lo)
    low = {i: max(low[i], min(k0[i], math.ceil(budget.floor * k0[i]))) for i in n}

    a, r0, c = {}, {}, {}
    base = cost(k0)
    for i, m in n.items():
        if low[i] >= m:
            continue
        k_probe = min(k0[i], m - 1)
        cert = probe(i, k_probe)
        if cert is None:  # no certificate from this method: fall back to the uniform widths
            return k0
        a[i] = float(np.max(to_numpy(cert))) * float((amplification or {}).get(i, 1.0))
        r0[i] = m - k_probe
        less = dict(k0)
        less[i] = max(low[i], k0[i] - 1)
        saved = base - cost(less) if less[i] < k0[i] else cost({**k0, i: k0[i] + 1}) - base
        c[i] = max(float(saved), 1e-12)
    if not a:
        return k0
    floor = max(max(a.values()) * 1e-6, 1e-300)
    g = {i: c[i] * r0[i] ** 2 / max(a[i], floor) for i in a}

    def widths(lam: float) -> dict[int, int]:
        out = dict(n)
        for i in a:
            r = min(lam * g[i], n[i] - low[i])
            out[i] = n[i] - math.floor(r)
        return out

    lam_lo, lam_hi = 0.0, 1.0
    while cost(widths(lam_hi)) > limit:
        lam_hi *= 2.0
        if lam_hi > 1e300:  # pragma: no cover - smallest widths were checked feasible above
            return dict(low)
    for _ in range(100):
        mid = (lam_lo + lam_hi) / 2
        if cost(widths(mid)) <= limit:
            lam_hi = mid
        else:
            lam_lo = mid
    return widths(lam_hi)


def predict_cost(
    chain: Network, widths: Mapping[int, int], *, kind: str, shapes: list | None, vanishing_bn: Mapping[int, int]
) -> int:
    """Parameters or MACs of the chain ``chain`` once layer ``i`` has ``widths[i]`` units
    (layers not in ``widths`` keep theirs), as :func:`tropref.compress_network` builds it:
    :func:`graph_cost` on a chain, every compressed layer writing constants into its reader.

    ``vanishing_bn[i]`` is the BatchNorm (after the ReLU of layer ``i``) folded into the
    next layer once layer ``i`` is compressed; ``shapes`` are
    :func:`~tropref.network.shapes.layer_shapes` of
    ``chain`` (needed for MACs).

    A dense or convolutional layer with ``k_out`` units reading ``k_in`` of its original
    ``n_in`` input channels has ``w = k_out (fan_in k_in / n_in) kh kw`` weights (``kh kw =
    1`` for a dense layer) and ``k_out`` biases when it had a bias or its inputs were
    compressed (the merge writes a bias into it); its MACs are ``w`` for a dense layer and
    ``w Ho Wo`` for a convolution. A BatchNorm that stays has two parameters per channel.

    Raises
    ------
    ValueError
        When ``kind`` is neither ``"params"`` nor ``"macs"``.

    Examples
    --------
    The prediction is what :func:`tropref.compress_network` builds:

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, compress_network, count_params
    >>> from tropref.network.shapes import layer_shapes
    >>> rng = np.random.default_rng(0)
    >>> chain = Network([Dense(rng.normal(size=(8, 3)), np.zeros(8)), ReLU(), Dense(rng.normal(size=(6, 8))), ReLU(),
    ...                  Dense(rng.normal(size=(2, 6)))])
    >>> predict_cost(chain, {}, kind="params", shapes=None, vanishing_bn={}), count_params(chain)
    (92, 92)
    >>> predict_cost(chain, {0: 4, 2: 3}, kind="params", shapes=None, vanishing_bn={})  # 16 + (12 + 3) + (6 + 2)
    39
    >>> predict_cost(chain, {0: 4, 2: 3}, kind="macs", shapes=layer_shapes(chain, (3,)), vanishing_bn={})
    30
    >>> count_params(compress_network(chain, {0: 4, 2: 3}, seed=0)[0])
    39
    """
    # a chain is a graph whose layers read the one before; layer_shapes lead with the input's
    out_shapes = None if shapes is None else shapes[1:]
    return graph_cost(chain, widths, kind=kind, shapes=out_shapes, vanishing_bn=vanishing_bn, merged=set(widths))


def graph_cost(
    work: Network,
    widths: Mapping[int, int],
    *,
    kind: str,
    shapes: Sequence[tuple[int, ...]] | None,
    vanishing_bn: Mapping[int, int],
    merged: set[int] | frozenset[int] = frozenset(),
) -> int:
    """Parameters or MACs of the graph ``work`` once its dense or convolutional layer ``i``
    has ``widths[i]`` output channels (layers not in ``widths`` keep theirs): what
    :func:`predict_cost` counts for a chain, over a graph whose additions and coupled
    groups change the width of channels that several layers write and read.

    Each node's output channels are followed through the graph, before and after: a
    dense/conv layer sets them, an addition takes its first input's, a concatenation sums
    its inputs', and every other node (ReLU, pooling, BatchNorm, flatten) passes its
    input's on. A dense or convolutional layer then counts as in :func:`predict_cost`, its
    fan-in scaled by the change of its input's channels, with a bias where it had one or
    where its input carries the merged channels of a layer in ``merged`` (a hidden layer's
    merge writes constants into its reader; a coupled group's does not). A BatchNorm has
    two parameters per channel it keeps, none when it is ``vanishing_bn[i]`` for a
    compressed ``i`` (folded into the next layer). ``shapes`` are
    :func:`~tropref.network.shapes.output_shapes` of ``work`` (needed for MACs).

    Raises
    ------
    ValueError
        When ``kind`` is neither ``"params"`` nor ``"macs"``.

    Examples
    --------
    A residual stream of 4 channels written by ``stem`` and ``conv`` and read by ``out``:
    at 2 channels, ``stem`` keeps 2 × 3, ``conv`` 2 × 2 (+ 2 biases), ``out`` 2 × 2.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> net = Network([Dense(np.ones((4, 3)), name="stem"), ReLU(), Dense(np.ones((4, 4)), np.zeros(4), name="conv"),
    ...                Add(), ReLU(), Dense(np.ones((2, 4)), name="out")],
    ...               inputs=[(-1,), (0,), (1,), (2, 1), (3,), (4,)])
    >>> graph_cost(net, {}, kind="params", shapes=None, vanishing_bn={}), graph_cost(
    ...     net, {0: 2, 2: 2}, kind="params", shapes=None, vanishing_bn={})
    (40, 16)
    """
    if kind not in ("params", "macs"):
        raise ValueError(f"`kind` must be 'params' or 'macs', got {kind!r}")
    compressed = {i for i in widths if widths[i] < work.layers[i].units}
    gone_bn = {vanishing_bn[i] for i in compressed if i in vanishing_bn}
    channels: dict[int, tuple[int, int]] = {}  # node -> its output channels, before and after
    constants: dict[int, bool] = {}  # node -> whether it carries a merged hidden layer's channels
    total = 0
    for p, layer in enumerate(work.layers):
        srcs = [s for s in work.sources(p) if s >= 0]
        before, after = channels.get(srcs[0], (0, 0)) if srcs else (0, 0)
        if kind_of(layer).linear:
            out = int(widths.get(p, layer.units))
            fan_in = int(layer.W.shape[1])
            if before and after != before:
                fan_in = fan_in // before * after
            ksize = int(np.prod(layer.W.shape[2:])) if layer.W.ndim == 4 else 1
            if kind == "params":
                biased = layer.b is not None or any(constants.get(s, False) for s in srcs)
                total += out * fan_in * ksize + (out if biased else 0)
            else:
                spatial = int(shapes[p][1] * shapes[p][2]) if kind_of(layer).images else 1
                total += out * fan_in * ksize * spatial
            channels[p], constants[p] = (layer.units, out), p in compressed and p in merged
            continue
        role = kind_of(layer).role
        if role == "concat":
            before, after = (sum(channels[s][t] for s in srcs) for t in (0, 1))
        elif role == "batchnorm" and kind == "params" and p not in gone_bn:
            ratio = layer.channels // before if before else 1  # per-feature after a flatten
            total += 2 * (after * ratio if before else layer.channels)
        channels[p], constants[p] = (before, after), any(constants.get(s, False) for s in srcs)
    return total


def budget_widths(
    structure: Structure,
    budget: Budget,
    targets: Sequence[int],
    probe: Callable[[Any, int], np.ndarray | None],
    *,
    shapes: Sequence[tuple[int, ...]] | None = None,
    groups: Sequence[Any] = (),  # coupled.Group (its module sits above this one): producers, units, why
) -> dict[Any, int]:
    """:func:`allocate_budget` over the hidden layers ``targets`` (work indices) of a
    network, and over its coupled ``groups``: the cost counted over the whole graph
    (:func:`graph_cost`), the amplification of each layer's error carried to the output
    along every path (:func:`carry_bound`), the smallest widths that pinned channels allow.

    A group ``t`` is allocated as one more layer, under the key ``("group", t)``: its
    width is the channels all its producers keep, its probe ``probe(("group", t), k)`` the
    summed largest errors of its producers compressed together to ``k`` channels
    (:func:`~tropref.network.coupled.compress_group`), and its amplification the largest of
    its producers' (from their outputs). A units budget counts a group's channels once,
    however many producers write them. Groups that cannot be compressed (``why``) are
    left out.

    Parameters
    ----------
    structure : Structure
        :func:`~tropref.network.structure.analyse` of the network.
    budget : Budget
        A fraction of the network's units, parameters or MACs.
    targets : sequence of int
        The hidden layers to compress (work indices, ``structure.compressible`` or part of it).
    probe : callable
        ``probe(g, k)``: the certificate vector of layer ``g`` compressed alone to ``k``
        units (None when the method gives none: the uniform widths are then used), and of
        group ``("group", t)``.
    shapes : sequence of tuple of int, optional
        :func:`~tropref.network.shapes.output_shapes` of ``structure.work``, when the caller
        has them (the walk computes them once); computed here otherwise.
    groups : sequence of Group, optional
        :func:`~tropref.network.coupled.coupled_groups` of ``structure.work`` that share
        the budget.

    Returns
    -------
    dict
        Work index -> units kept, and ``("group", t)`` -> channels kept.

    Raises
    ------
    ValueError
        For a MACs budget on a network whose input shape is unknown, or a budget that
        cannot be met.

    Examples
    --------
    Half the 14 hidden units of a network, with a probe saying that merging units of the
    first hidden layer costs a tenth of the second's: the first gives up more.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, analyse
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(8, 3))), ReLU(), Dense(rng.normal(size=(6, 8))), ReLU(),
    ...                Dense(rng.normal(size=(2, 6)))], input_shape=(3,))
    >>> s = analyse(net)
    >>> budget_widths(s, Budget(units=0.5), s.compressible, lambda g, k: np.array([1.0 if g == 0 else 10.0]))
    {0: 3, 2: 4}
    >>> budget_widths(analyse(Network(net.layers)), Budget(macs=0.5), s.compressible, lambda g, k: None)
    Traceback (most recent call last):
    ...
    ValueError: a MACs budget needs the network's `input_shape`
    """
    work, kind = structure.work, budget.kind
    shared = {("group", t): group for t, group in enumerate(groups) if group.why is None}
    n: dict[Any, int] = {g: work.layers[g].units for g in targets}
    n.update({key: group.units for key, group in shared.items()})
    if kind == "units":
        total: int | None = sum(n.values())
    else:
        total = count_params(structure.net) if kind == "params" else count_macs(structure.net, structure.input_shape)
    if total is None:
        raise ValueError("a MACs budget needs the network's `input_shape`")
    if kind == "macs" and shapes is None:
        try:
            shapes = output_shapes(work)
        except ValueError:
            raise ValueError("a MACs budget needs the network's `input_shape`") from None
    folded, hidden = folded_batchnorms(structure, targets), frozenset(targets)

    def cost(widths: Mapping[Any, int]) -> int:
        if kind == "units":
            return sum(widths.values())
        # over the whole graph: a group's channels are written and read in several segments
        per_layer = {g: k for g, k in widths.items() if g not in shared}
        per_layer.update({p: widths[key] for key, group in shared.items() for p in group.producers})
        return graph_cost(work, per_layer, kind=kind, shapes=shapes, vanishing_bn=folded, merged=hidden)

    return allocate_budget(
        budget,
        n,
        total=total,
        cost=cost,
        probe=probe,
        amplification=amplifications(structure, targets, shapes, shared),
        min_width={g: min_width(structure.locate(g)[0].chain, structure.hidden(g)) for g in targets},
    )


def folded_batchnorms(structure: Structure, targets: Sequence[int]) -> dict[int, int]:
    """For each hidden work layer in ``targets`` whose ReLU a BatchNorm follows, that
    BatchNorm's work index when it is folded into the next layer once the layer is
    compressed (it neither stays, :func:`~tropref.network._after_relu.keeps_batchnorm`, nor
    pins channels): the ``vanishing_bn`` of :func:`graph_cost`.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, BatchNorm, analyse
    >>> bn = BatchNorm(np.zeros(4), np.ones(4), np.ones(4), np.zeros(4))
    >>> s = analyse(Network([Dense(np.ones((4, 3))), ReLU(), bn, Dense(np.ones((2, 4)))]))
    >>> folded_batchnorms(s, s.compressible)
    {0: 2}
    """
    out = {}
    for g in targets:
        part, i = structure.locate(g)
        h = part.hidden[i]
        if h.bn is not None and not keeps_batchnorm(part.chain, h) and not pinned(part.chain, h).any():
            out[g] = part.at[h.bn]
    return out


def amplifications(
    structure: Structure,
    targets: Sequence[int],
    shapes: Sequence[tuple[int, ...]] | None = None,
    groups: Mapping[Any, Any] | None = None,
) -> dict[Any, float]:
    """The amplification ``A_l`` of :func:`budget_widths`: for each hidden work layer in
    ``targets``, the largest change of an output per unit change of every pre-activation
    of the next layer, carried through the later layers' ``|W|`` (:func:`carry_bound`, a
    worst case over all inputs); for each group in ``groups`` (key -> coupled group), the
    largest over its producers' outputs. ``{}`` when the input shape is unknown (every layer
    then counts 1); ``shapes``: the work graph's output shapes, computed here when not given.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, analyse
    >>> net = Network([Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4))), ReLU(), Dense(np.ones((1, 2)))],
    ...               input_shape=(3,))
    >>> s = analyse(net)
    >>> amplifications(s, s.compressible)  # layer 0: the next layer's 2 units, each read with weight 1
    {0: 2.0, 2: 1.0}
    """
    try:
        host = map_arrays(structure.work, lambda a: to_numpy(a).astype(np.float64))
        shapes = output_shapes(host) if shapes is None else shapes
    except ValueError:
        return {}

    def carried(j: int) -> float:
        ones = np.ones(structure.work.layers[j].units)
        return float(np.max(carry_bound(host, j, ones, shapes, host.input_shape)))

    out: dict[Any, float] = {g: carried(structure.next_layer(g)) for g in targets}
    out.update({key: max(carried(p) for p in group.producers) for key, group in (groups or {}).items()})
    return out


def keep_widths(keep: Any, structure: Structure, targets: Sequence[int]) -> dict[int, int]:
    """Units to keep per hidden layer (work indices ``targets``) from a fraction ``q`` (every
    layer keeps ``max(1, round(q n))``) or a mapping from layers (index in the user's
    network, or name) to ``k`` (an int or a fraction); layers not named keep their width.

    Returns
    -------
    dict
        Work index -> units kept, for every layer in ``targets``.

    Raises
    ------
    TypeError, ValueError
        For a ``keep`` that is neither, a layer that is not a compressible hidden layer
        (the message says why), or a ``k`` out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, analyse
    >>> net = Network([Dense(np.ones((8, 3)), name="fc1"), ReLU(), Dense(np.ones((6, 8)), name="fc2"), ReLU(),
    ...                Dense(np.ones((2, 6)), name="out")])
    >>> s = analyse(net)
    >>> keep_widths(0.5, s, s.compressible)  # round(0.5 * 8), round(0.5 * 6)
    {0: 4, 2: 3}
    >>> keep_widths({"fc2": 2}, s, s.compressible), keep_widths({0: 0.25}, s, s.compressible)
    ({0: 8, 2: 2}, {0: 2, 2: 6})
    >>> keep_widths({"out": 1}, s, s.compressible)
    Traceback (most recent call last):
    ...
    ValueError: `keep` names 'out' (layer 4, Dense), which is not a compressible hidden layer
    """
    widths = {g: structure.work.layers[g].units for g in targets}
    if not isinstance(keep, Mapping):
        q = fraction(keep, "keep")
        return {g: units_kept(q, n) for g, n in widths.items()}
    net = structure.net
    by_name = {getattr(layer, "name", None): o for o, layer in enumerate(net.layers)}
    to_work = {
        part.origin[i]: (part, i, part.at[i])
        for part in structure.parts
        for i, layer in enumerate(part.chain.layers)
        if kind_of(layer).linear
    }
    ks = dict(widths)
    for key, value in keep.items():
        o = by_name.get(key) if isinstance(key, str) else key
        if isinstance(o, bool) or not isinstance(o, (int, np.integer)) or not 0 <= o < len(net.layers):
            raise ValueError(f"`keep` names layer {key!r}, which is not a layer of the network")
        part, i, g = to_work.get(int(o), (None, None, None))
        if g not in widths:
            raise ValueError(
                f"`keep` names {net.label(int(o))}, which is not a compressible hidden layer{_why_not(part, i)}"
            )
        ks[g] = k_of(value, widths[g], f"keep[{key!r}]")
    return ks


def _why_not(part: Any, i: int | None) -> str:
    if part is None:
        return ""
    h = part.hidden.get(i)
    if isinstance(h, str):
        return f" ({h})"
    if h is None and part.coupled:
        return f" (coupled: {part.coupled})"
    return ""


def rounded_width(k: int, n: int, round_to: int | None) -> int:
    """``k`` of ``n`` units rounded to the nearest multiple of ``round_to`` (halves up), at
    least ``round_to`` and never above the largest multiple that ``n`` holds; ``k`` itself
    when ``round_to`` is None or 1, when ``k == n`` (a layer left whole stays whole), or when
    ``n < round_to`` (no multiple fits).

    Hardware runs channel counts in multiples of 8 or 16 fastest; fewer MACs at other
    widths often give no speed-up.

    Raises
    ------
    ValueError
        When ``round_to`` is not a positive integer.

    Examples
    --------
    >>> rounded_width(29, 64, 8), rounded_width(3, 64, 8), rounded_width(62, 64, 8), rounded_width(5, 6, 8)
    (32, 8, 64, 5)
    >>> rounded_width(70, 70, 8), rounded_width(69, 70, 8)  # a multiple never above the original
    (70, 64)
    """
    if round_to is None:
        return k
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise ValueError(f"`round_to` must be a positive integer (e.g. 8), got {round_to!r}")
    if round_to == 1 or k >= n or n < round_to:
        return k
    top = (n // round_to) * round_to
    return int(min(top, max(round_to, math.floor(k / round_to + 0.5) * round_to)))
