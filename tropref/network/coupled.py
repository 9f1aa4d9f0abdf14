"""Coupled channel groups: channels that meet in an addition, compressed with one partition.

In a residual network the outputs of several layers are added: the stem and every block's
last convolution of a ResNet stage write the same channels (the *residual stream*), and
every block of the stage reads them. Such channels cannot be merged one layer at a time.
A **coupled group** (``docs/theory.md``, section 8) is

- its *members*: the additions and the channel-wise ops between them (ReLU, pooling,
  dropout, identity), every node whose output carries the group's channels;
- its *producers*: the dense and convolutional layers whose outputs (BatchNorms folded)
  are members' inputs;
- its *readers*: the dense and convolutional layers that read a member (directly, or
  through a flatten).

:func:`compress_group` clusters the channels once, over the producers' concatenated
generators ``g_j = (w_{1,j}, b_{1,j}, ..., w_{P,j}, b_{P,j})``, with any data-free method
of :func:`tropref.compress_layer`: every producer keeps one merged row per cluster,
``g_j ≈ f_j g̃_{C(j)}`` with one scale ``f_j >= 0`` per channel shared by all producers, and
every reader's columns are folded (``Σ_{j ∈ C} f_j V[:, j]``). ReLU, pooling and addition
commute with a non-negative per-channel scale, so the stream of the compressed network is
exactly the merged stream: channel ``j`` of the original is read as ``f_j`` times channel
``C(j)``. The only approximation is in the producers, by at most
``‖g_{p,j} − f_j g̃_{p,C(j)}‖ ‖(patch, 1)‖`` per output (:func:`group_errors`), which is
what the network certificate carries to the outputs (:func:`groups_certificate`).

A BatchNorm followed by a ReLU that reads the stream (a pre-activation block's
``relu(bn(x))``) is a *gate* (:class:`Gate`): it gets one merged channel per cluster,
``relu(a_c x̃_c + b_c)`` read as ``t_j`` times channel ``C(j)`` by the gate's readers, with
``t_j >= 0`` and ``(a_c, b_c)`` fitted to the members' ``(s_j f_j, β_j)``; this is exact
when the members' thresholds agree, and the rest is bounded (``docs/theory.md``, section 8).

Groups that touch the network's input or output, a concatenation, or a layer that does
not act channel by channel (a BatchNorm not followed by a ReLU alone) are left unchanged,
and :attr:`Group.why` says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._array import Array, asarray_like, to_numpy
from ..compress import compress_layer
from ._keep import fraction, k_of, units_kept
from .bounds import carry_bound, max_patch_norm, node_bounds
from .certificate import input_box
from .graph import Network, map_arrays, network_namespace
from .kinds import kind_of
from .layers import BatchNorm, Conv2d, Dense
from .shapes import output_shapes

__all__ = ["Gate", "Group", "coupled_groups", "compress_group", "group_widths", "group_keys", "groups_certificate"]


def _channelwise(layer: Any) -> bool:
    """Whether a node acts channel by channel, commutes with a non-negative per-channel
    scale, and maps zero to zero (its kind passes channels through: ReLU, pooling, dropout,
    identity): it carries a group's channels (and a gate's, after its ReLU)."""
    return kind_of(layer).passes_channels


def _member(layer: Any) -> bool:
    """Whether a node carries the group's channels: the channel-wise ones, and the additions."""
    return _role(layer) == "add" or _channelwise(layer)


def _linear(layer: Any) -> bool:
    return kind_of(layer).linear


def _role(layer: Any) -> str | None:
    return kind_of(layer).role


@dataclass(frozen=True)
class Gate:
    """A BatchNorm and the ReLU after it reading a coupled group (indices in the network).

    Attributes
    ----------
    bn, relu : int
        The BatchNorm (reading a member or a producer of the group) and the ReLU reading it.
    members : tuple of int
        The channel-wise nodes after the ReLU (pooling, dropout, identity, ReLU).
    readers : tuple of (int, int or None)
        The dense/convolutional layers reading the ReLU or one of ``members``, and the
        flatten they read through.
    """

    bn: int
    relu: int
    members: tuple[int, ...] = ()
    readers: tuple[tuple[int, int | None], ...] = ()


@dataclass(frozen=True)
class Group:
    """One coupled channel group of a network (indices in that network).

    Attributes
    ----------
    producers : tuple of int
        The dense/convolutional layers writing the group's channels, in order.
    members : tuple of int
        The additions and channel-wise nodes carrying them.
    readers : tuple of (int, int or None)
        Each dense/convolutional layer reading a member, and the flatten it reads through
        (None: it reads the member directly).
    units : int
        The channels of the group.
    why : str or None
        Why the group cannot be compressed (None: it can).
    gates : tuple of Gate
        The BatchNorm-ReLU pairs reading the group (pre-activation blocks).
    """

    producers: tuple[int, ...]
    members: tuple[int, ...]
    readers: tuple[tuple[int, int | None], ...]
    units: int
    why: str | None = None
    gates: tuple[Gate, ...] = ()

    def label(self, net: Network, origin: Callable[[int], int] | None = None) -> str:
        """The group named by its first producer and how many more there are; ``origin``
        maps the group's layer indices to ``net``'s (the identity by default: the walk
        passes the user's network and the work graph's map to it)."""
        more, first = len(self.producers) - 1, self.producers[0]
        name = net.label(first if origin is None else origin(first))
        return f"stream of {name}" + (f" (+{more} producers)" if more else "")


def coupled_groups(net: Network) -> list[Group]:
    """The coupled channel groups of ``net``: one per connected set of additions, and one per
    branch (a layer whose channels several layers read, through channel-wise nodes only).

    Starting from every :class:`~tropref.network.Add` (or a branching layer's readers), the
    members are collected through the channel-wise nodes both ways; the dense and
    convolutional layers met on the way in are the producers, those met on the way out the
    readers (see the module notes). Sorted by their first producer.

    Examples
    --------
    Two residual blocks on a stream written by a stem; the classifier reads it.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> I = np.eye(3)
    >>> net = Network([Dense(I), ReLU(), Dense(I), ReLU(), Dense(I), Add(), ReLU(), Dense(np.ones((2, 3)))],
    ...               inputs=[(-1,), (0,), (1,), (2,), (3,), (4, 1), (5,), (6,)])
    >>> (g,) = coupled_groups(net)
    >>> g.producers, g.members, g.readers, g.units, g.why
    ((0, 4), (1, 5, 6), ((2, None), (7, None)), 3, None)
    """
    users = net.users()
    seen: set[int] = set()
    groups = []
    for start, layer in enumerate(net.layers):
        if _role(layer) == "add" and start not in seen:
            group = _collect(net, users, [start])
            seen.update(group.members)
            groups.append(group)
    producers = {p for g in groups for p in g.producers}
    for p, layer in enumerate(net.layers):  # a branch: one layer's channels read by several layers
        after = users[p]
        if _linear(layer) and p not in producers and after and not seen.intersection(after):
            if all(_member(net.layers[u]) for u in after):
                group = _collect(net, users, after)
                if len(group.readers) > 1 and group.producers == (p,):
                    seen.update(group.members)
                    groups.append(group)
    return sorted(groups, key=lambda g: g.producers)


def _collect(net: Network, users: list[list[int]], starts: Sequence[int]) -> Group:
    """The group holding the members ``starts``: members, producers, readers, or why not."""
    members, producers, readers, gates, why = set(starts), set(), set(), {}, []
    todo = list(starts)
    while todo:
        i = todo.pop()
        for p in net.sources(i):  # the way in
            if p < 0:
                why.append("it adds the network's input")
            elif _linear(net.layers[p]):
                producers.add(p)
            elif _member(net.layers[p]):
                if p not in members:
                    members.add(p)
                    todo.append(p)
            else:
                why.append(f"{net.label(p)} writes it")
        if i == len(net.layers) - 1:
            why.append("it is the network's output")
        for u in users[i]:  # the way out
            if _linear(net.layers[u]):
                readers.add((u, None))
            elif _member(net.layers[u]):
                if u not in members:
                    members.add(u)
                    todo.append(u)
            elif _role(net.layers[u]) == "flatten" and (dense := _dense_after(net, users, u)) is not None:
                readers.add((dense, u))
            elif _role(net.layers[u]) == "batchnorm":
                gates[u] = _gate(net, users, u, why)
            else:
                why.append(f"{net.label(u)} reads it")
    for p in producers:  # a producer's output read by anything but members and readers
        for u in users[p]:
            if u in members:
                continue
            if _linear(net.layers[u]):
                readers.add((u, None))
            elif _role(net.layers[u]) == "batchnorm":
                gates[u] = _gate(net, users, u, why)
            else:
                why.append(f"{net.label(u)} reads {net.label(p)}")
    units = {net.layers[p].units for p in producers}
    if len(units) > 1:
        why.append(f"its producers have {sorted(units)} channels")
    return Group(
        tuple(sorted(producers)),
        tuple(sorted(members)),
        tuple(sorted(readers)),
        units.pop() if len(units) == 1 else 0,
        "; ".join(dict.fromkeys(why)) or None,
        tuple(g for _, g in sorted(gates.items()) if g is not None),
    )


def _gate(net: Network, users: list[list[int]], bn: int, why: list[str]) -> Gate | None:
    """The gate at BatchNorm ``bn``: its ReLU and what reads it, or None (``why`` says why)."""
    after = users[bn]
    if len(after) != 1 or _role(net.layers[after[0]]) != "relu":
        why.append(f"{net.label(bn)} reads it and is not followed by a ReLU alone")
        return None
    relu = after[0]
    members, readers, todo = set(), set(), [relu]
    while todo:
        i = todo.pop()
        if i == len(net.layers) - 1:
            why.append(f"{net.label(bn)}'s channels are the network's output")
        for u in users[i]:
            layer = net.layers[u]
            if _linear(layer):
                readers.add((u, None))
            elif _channelwise(layer) and u not in members:
                members.add(u)
                todo.append(u)
            elif _role(layer) == "flatten" and (dense := _dense_after(net, users, u)) is not None:
                readers.add((dense, u))
            elif u not in members:
                why.append(f"{net.label(u)} reads {net.label(bn)}'s channels")
    return Gate(bn, relu, tuple(sorted(members)), tuple(sorted(readers)))


def _dense_after(net: Network, users: list[list[int]], flatten: int) -> int | None:
    """The dense layer that alone reads ``flatten`` (through dropout and identities), if any."""
    i = flatten
    while len(users[i]) == 1:
        i = users[i][0]
        if _linear(net.layers[i]) and not kind_of(net.layers[i]).images:  # a dense layer
            return i
        if _role(net.layers[i]) != "passive":
            return None
    return None


def group_widths(
    keep: Any, groups: Sequence[Group], net: Network, origin: Callable[[int], int] | None = None
) -> dict[int, int]:
    """Channels each compressible group keeps (by its position in ``groups``): from a fraction
    ``q`` (``max(1, round(q n))``) or from a mapping naming any of its producers (index in
    ``net`` or name; groups not named keep their width). ``origin`` maps the groups' layer
    indices to ``net``'s (the identity by default).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> I = np.eye(4)
    >>> net = Network([Dense(I, name="stem"), ReLU(), Dense(I), Add(), ReLU(), Dense(np.ones((2, 4)))],
    ...               inputs=[(-1,), (0,), (1,), (2, 1), (3,), (4,)])
    >>> groups = coupled_groups(net)
    >>> group_widths(0.5, groups, net), group_widths({"stem": 3}, groups, net), group_widths({}, groups, net)
    ({0: 2}, {0: 3}, {0: 4})
    """
    out = {}
    for t, group in enumerate(groups):
        if group.why is not None:
            continue
        n = group.units
        if not isinstance(keep, Mapping):
            out[t] = units_kept(fraction(keep, "keep"), n)
            continue
        named = [key for key in keep if _names(net, key) in _origins(group, origin)]
        out[t] = k_of(keep[named[0]], n, f"keep[{named[0]!r}]") if named else n
    return out


def group_keys(
    keep: Any, groups: Sequence[Group], net: Network, origin: Callable[[int], int] | None = None
) -> set[Any]:
    """The keys of a ``keep`` mapping that name a group's producer (not hidden layers): the
    walk gives the rest to :func:`~tropref.network.widths.keep_widths`, these to
    :func:`group_widths`.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add
    >>> I = np.eye(4)
    >>> net = Network([Dense(I, name="stem"), ReLU(), Dense(I), Add(), ReLU(), Dense(np.ones((2, 4)))],
    ...               inputs=[(-1,), (0,), (1,), (2, 1), (3,), (4,)])
    >>> group_keys({"stem": 3, 1: 2}, coupled_groups(net), net), group_keys(0.5, coupled_groups(net), net)
    ({'stem'}, set())
    """
    if not isinstance(keep, Mapping):
        return set()
    producers = {p for g in groups for p in _origins(g, origin)}
    return {key for key in keep if _names(net, key) in producers}


def _origins(group: Group, origin: Callable[[int], int] | None) -> set[int]:
    return {p if origin is None else origin(p) for p in group.producers}


def _names(net: Network, key: Any) -> int | None:
    """The index in ``net`` of the layer a ``keep`` key names (None: none)."""
    if isinstance(key, str):
        return next((i for i, layer in enumerate(net.layers) if getattr(layer, "name", None) == key), None)
    return int(key) if isinstance(key, (int, np.integer)) and not isinstance(key, bool) else None


def compress_group(
    layers: list,
    net: Network,
    group: Group,
    k: int,
    *,
    method: str,
    seed: int,
    options: Mapping[str, Any],
) -> tuple[dict[int, np.ndarray], np.ndarray, dict[str, Any]]:
    """Compress the channels of ``group`` to ``k`` with one partition (see the module notes).

    ``layers`` holds ``net``'s layers and is edited in place, in five steps:

    1. the group is one layer: the producers' generators concatenated, read by every
       reader's columns (through a gate, scaled by its BatchNorm);
    2. :func:`tropref.compress_layer` partitions and merges it (``method``, ``options``),
       with a fold that must send each channel to one kept channel, ``f_j >= 0``;
    3. every producer gets its merged rows;
    4. every gate's BatchNorm its merged channels (:func:`_merge_gate`);
    5. every reader its folded columns (``f_j`` on the stream, ``t_j`` after a gate).

    Returns
    -------
    errors : dict
        Per producer, ``‖g_{p,j} − f_j g̃_{p,C(j)}‖`` for each original channel ``j``
        (host float64): the producer's output channel ``j`` changes by at most that times
        ``‖(patch, 1)‖`` of its input.
    scale : numpy.ndarray
        ``f_j`` per original channel, ``0`` for a channel removed (host float64).
    info : dict
        What the method reported, the labels of ``C(j)`` (``"assignment"``), and per gate
        (``"gates"``) its ReLU and input nodes, ``t_j`` (``"scale"``) and the bound's terms
        ``|s_j f_j − t_j a_c|`` (``"coef"``) and ``|β_j − t_j b_c|`` (``"offset"``).

    Raises
    ------
    ValueError
        When the method's fold does not send every channel to one kept channel with a
        non-negative scale (a stream cannot be folded otherwise).

    Examples
    --------
    A stream whose channels 0 and 1 are duplicates in both producers merges exactly:

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add, forward
    >>> rng = np.random.default_rng(0)
    >>> W, B = rng.normal(size=(3, 2)), rng.normal(size=(3, 3))
    >>> W[1], B[1] = W[0], B[0]
    >>> net = Network([Dense(W), ReLU(), Dense(rng.normal(size=(3, 3))), ReLU(), Dense(B), Add(), ReLU(),
    ...                Dense(rng.normal(size=(2, 3)))], inputs=[(-1,), (0,), (1,), (2,), (3,), (4, 1), (5,), (6,)])
    >>> (group,) = coupled_groups(net)
    >>> layers = list(net.layers)
    >>> errors, scale, info = compress_group(layers, net, group, 2, method="tropnnc", seed=0, options={})
    >>> [layers[p].W.shape for p in group.producers], max(float(e.max()) for e in errors.values()) < 1e-12
    ([(2, 2), (2, 3)], True)
    >>> x = rng.normal(size=(5, 2))
    >>> bool(np.allclose(forward(Network(layers, inputs=net.inputs), x), forward(net, x)))
    True
    """
    xp = network_namespace(net)
    n = group.units
    # 1. the group as one layer: the producers' concatenated rows, read by every reader
    pieces = [_generator(xp, layers[p], n) for p in group.producers]
    gate_views = [[_reader_view(xp, layers, r, f, n) for r, f in g.readers] for g in group.gates]
    V = _outgoing(xp, layers, group, gate_views)
    # 2. one partition and one merge, by the method
    res = compress_layer(
        xp.concat(pieces, axis=1), None, k, W_next=V, method=method, seed=seed, fold_constants=False, **options
    )
    if res.scale is None or bool(np.any(to_numpy(res.scale) < 0)):
        raise ValueError(
            f"{method!r} folds channels into mixtures of kept channels; a coupled group needs every "
            "channel read as a non-negative multiple of one kept channel (use a merging method such as 'tropnnc')"
        )
    labels, scale = to_numpy(res.assignment), to_numpy(res.scale).astype(np.float64)
    # 3. every producer gets its merged rows
    errors = _merge_producers(xp, layers, group, pieces, res)
    # 4. every gate its merged BatchNorm, and the fold its readers read through
    folds, gates = [(group.readers, res.fold)], []
    for gate, views in zip(group.gates, gate_views, strict=True):
        weight = sum(np.sum(to_numpy(_columns(xp, v, n)).astype(np.float64) ** 2, axis=0) for v in views)
        merged, t, coef, offset = _merge_gate(xp, layers[gate.bn], labels, scale, weight, int(res.fold.shape[1]))
        layers[gate.bn] = merged
        T = np.zeros((n, int(res.fold.shape[1])))
        T[labels >= 0, labels[labels >= 0]] = t[labels >= 0]
        folds.append((gate.readers, asarray_like(T, xp, res.fold)))
        gates.append({"relu": gate.relu, "source": net.sources(gate.bn)[0], "coef": coef, "offset": offset, "scale": t})
    # 5. every reader its folded columns (after the rows: a producer may read its own group)
    for readers, matrix in folds:
        for r, f in readers:
            v = _reader_view(xp, layers, r, f, n)
            folded = xp.moveaxis(xp.tensordot(v, matrix, axes=([1], [0])), -1, 1)
            layers[r] = _with_columns(xp, layers, r, f, folded)
    info = {**res.info, "assignment": labels, "producers": len(group.producers), "gates": gates}
    return errors, scale, info


def _outgoing(xp: Any, layers: list, group: Group, gate_views: list[list[Array]]) -> Array:
    """The outgoing weights the partition sees, one column per channel: the readers'
    columns, and through a gate times its BatchNorm's scale (what the reader reads of the
    stream, to first order)."""
    n = group.units
    columns = [_columns(xp, _reader_view(xp, layers, r, f, n), n) for r, f in group.readers]
    for gate, views in zip(group.gates, gate_views, strict=True):
        columns += [_columns(xp, v, n) * layers[gate.bn].scale for v in views]
    return xp.concat(columns, axis=0)


def _merge_producers(xp: Any, layers: list, group: Group, pieces: list[Array], res: Any) -> dict[int, np.ndarray]:
    """Each producer's merged rows written into ``layers``; per producer, the error
    ``‖g_{p,j} − f_j g̃_{p,C(j)}‖`` of every original channel (host float64)."""
    fold = to_numpy(res.fold).astype(np.float64)
    errors, at = {}, 0
    for p, piece in zip(group.producers, pieces, strict=True):
        width = int(piece.shape[1])
        rows = res.W[:, at : at + width]
        at += width
        errors[p] = np.linalg.norm(
            to_numpy(piece).astype(np.float64) - fold @ to_numpy(rows).astype(np.float64), axis=1
        )
        layers[p] = _with_rows(xp, layers[p], rows)
    return errors


def _merge_gate(
    xp: Any, bn: BatchNorm, labels: np.ndarray, f: np.ndarray, weight: np.ndarray, k: int
) -> tuple[BatchNorm, np.ndarray, np.ndarray, np.ndarray]:
    """The merged BatchNorm of a gate, and per original channel ``t_j``, ``|s_j f_j − t_j a_c|``
    and ``|β_j − t_j b_c|`` (host float64; ``docs/theory.md``, section 8).

    Channel ``j`` reads ``s_j f_j x̃_c + β_j`` (``s``, ``β`` the BatchNorm's scale and shift,
    ``c = C(j)``); the merged channel computes ``a_c x̃_c + b_c`` with ``a_c = ±1/√(1 + ε)``
    (the sign of the readers' weighted ``s_j f_j``), and the readers read ``t_j relu(a_c x̃_c +
    b_c)`` with ``t_j = max(s_j f_j / a_c, 0)``: exact in the scale, and ``b_c`` the
    ``weight``-weighted least-squares fit of ``β_j ≈ t_j b_c``."""
    s_host = to_numpy(bn.scale).astype(np.float64)
    beta = to_numpy(bn.shift).astype(np.float64)
    kept = labels >= 0
    sf = s_host * f
    w = weight + 1e-30
    lean = np.bincount(labels[kept], (w * sf)[kept], minlength=k)
    host = lambda v: asarray_like(v, xp, bn.mean)  # noqa: E731
    probe = BatchNorm(
        host(np.zeros(k)), host(np.ones(k)), host(np.where(lean < 0, -1.0, 1.0)), host(np.zeros(k)), bn.eps, bn.name
    )
    a = to_numpy(probe.scale).astype(np.float64)
    t = np.zeros_like(f)
    t[kept] = np.maximum(sf[kept] / a[labels[kept]], 0.0)
    num = np.bincount(labels[kept], (w * t * beta)[kept], minlength=k)
    den = np.bincount(labels[kept], (w * t * t)[kept], minlength=k)
    merged = replace(probe, bias=host(np.divide(num, den, out=np.zeros(k), where=den > 0)))
    a, b = to_numpy(merged.scale).astype(np.float64), to_numpy(merged.shift).astype(np.float64)
    at = np.where(kept, labels, 0)
    coef = np.abs(sf - np.where(kept, t * a[at], 0.0))
    offset = np.abs(beta - np.where(kept, t * b[at], 0.0))
    return merged, t, coef, offset


def _columns(xp: Any, view: Array, n: int) -> Array:
    """A reader's view as columns, one per group channel: ``(m · positions, n)``."""
    return xp.reshape(xp.moveaxis(view, 1, -1), (-1, n))


def _generator(xp: Any, layer: Dense | Conv2d, n: int) -> Array:
    """The layer's rows ``(w_j, b_j)`` flattened, ``(n, d + 1)`` (``(n, d)`` without a bias)."""
    W = xp.reshape(layer.W, (n, -1))
    return W if layer.b is None else xp.concat([W, layer.b[:, None]], axis=1)


def _with_rows(xp: Any, layer: Dense | Conv2d, rows: Array) -> Dense | Conv2d:
    k = int(rows.shape[0])
    d = math.prod(layer.W.shape[1:])
    W = xp.reshape(rows[:, :d], (k, *layer.W.shape[1:]))
    return replace(layer, W=W, b=None if layer.b is None else rows[:, d])


def _reader_view(xp: Any, layers: list, r: int, flatten: int | None, n: int) -> Array:
    """Reader ``r``'s weights with the group's channels on axis 1: ``(m, n)``, ``(m, n, kh,
    kw)``, or ``(m, n, s)`` after a flatten."""
    W = layers[r].W
    if flatten is None:
        return W
    m, s = int(W.shape[0]), int(W.shape[1]) // n
    if layers[flatten].order == "channels_first":
        return xp.reshape(W, (m, n, s))
    return xp.permute_dims(xp.reshape(W, (m, s, n)), (0, 2, 1))


def _with_columns(xp: Any, layers: list, r: int, flatten: int | None, view: Array) -> Dense | Conv2d:
    layer = layers[r]
    if flatten is None:
        return replace(layer, W=view)
    m = int(view.shape[0])
    if layers[flatten].order != "channels_first":
        view = xp.permute_dims(view, (0, 2, 1))
    return replace(layer, W=xp.reshape(view, (m, -1)))


def groups_certificate(
    states: Sequence[Network],
    groups: Sequence[Group],
    errors: Sequence[Mapping[int, np.ndarray]],
    scales: Sequence[np.ndarray],
    assignments: Sequence[np.ndarray],
    gates: Sequence[Sequence[Mapping[str, Any]]],
    *,
    inputs: Array | None,
    input_radius: float | None,
) -> tuple[np.ndarray | None, list[float]]:
    """A bound on the change of the outputs from compressing the groups one after the other.

    ``states[t]`` is the network with the first ``t`` groups compressed (``states[0]`` the
    original, BatchNorms folded). Group ``t`` changes ``states[t]`` only in its producers,
    and, reading every member ``j`` as ``f_j`` times the merged channel, the compressed
    network is ``states[t]`` with producer ``p``'s rows replaced by ``f_j g̃_{p,C(j)}``. Taking
    the producers in order (telescoping), producer ``p``'s output channel ``j`` changes by at
    most ``errors[t][p][j] ρ_p``, ``ρ_p`` the largest ``‖(patch, 1)‖`` of its input over the
    domain in ``states[t + 1]`` (its input depends only on layers before it; a member of the
    group itself is read as ``f_j`` times the merged channel), and that change reaches the
    outputs through ``states[t]`` (:func:`~tropref.network.bounds.carry_bound`). A gate
    (``gates[t]``, from :func:`compress_group`'s ``info``) changes its ReLU's channel ``j`` by
    at most ``coef_j X_{C(j)} + offset_j``, ``X_c`` the largest ``|x̃_c|`` of the merged
    channel it reads in ``states[t + 1]``, carried the same way.

    Returns the bound per output (None without an input domain, or when it is not finite)
    and each group's share (its largest entry).

    Examples
    --------
    A residual stream of 3 channels merged to 2; the bound holds on the inputs whose box
    it is computed over:

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, Add, forward
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(3, 2))), ReLU(), Dense(rng.normal(size=(3, 3))), ReLU(),
    ...                Dense(rng.normal(size=(3, 3))), Add(), ReLU(), Dense(rng.normal(size=(2, 3)))],
    ...               inputs=[(-1,), (0,), (1,), (2,), (3,), (4, 1), (5,), (6,)])
    >>> (group,) = coupled_groups(net)
    >>> layers = list(net.layers)
    >>> errors, scale, info = compress_group(layers, net, group, 2, method="tropnnc", seed=0, options={})
    >>> small, x = Network(layers, inputs=net.inputs), rng.uniform(-1, 1, size=(100, 2))
    >>> bound, shares = groups_certificate([net, small], [group], [errors], [scale], [info["assignment"]],
    ...                                    [info["gates"]], inputs=x, input_radius=None)
    >>> np.round(bound, 2), bool(np.all(np.abs(forward(small, x) - forward(net, x)) <= bound))
    (array([4.02, 3.73]), True)
    """
    box = input_box(states[0], inputs, input_radius)
    if box is None:
        return None, []
    lo, hi, _ = box
    total, shares = None, []

    def to_host(net: Network) -> Network:
        return map_arrays(net, lambda a: to_numpy(a).astype(np.float64))

    after = to_host(states[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for t, group in enumerate(groups):
            host, after = after, to_host(states[t + 1])  # each state converted once, two held at a time
            shapes = output_shapes(host, lo.shape)
            boxes = node_bounds(after, lo, hi)
            # channel j of these nodes is (scale_j) times merged channel C(j) in states[t + 1]
            region = dict.fromkeys((*group.members, *group.producers), scales[t])
            for gate, terms in zip(group.gates, gates[t], strict=True):
                region.update(dict.fromkeys((gate.relu, *gate.members), terms["scale"]))
            share = None
            for p in group.producers:
                (src,) = host.sources(p)
                b_lo, b_hi = (lo, hi) if src < 0 else boxes[src]
                bound = np.maximum(np.abs(b_lo), np.abs(b_hi))
                if src in region:
                    bound = _expanded(bound, region[src], assignments[t])
                rho = max_patch_norm(host.layers[p], bound)
                e = carry_bound(host, p, errors[t][p] * rho, shapes, tuple(lo.shape))
                share = e if share is None else share + e
            for terms in gates[t]:
                b_lo, b_hi = boxes[terms["source"]]
                X = np.max(np.maximum(np.abs(b_lo), np.abs(b_hi)).reshape(b_lo.shape[0], -1), axis=1)
                merged = np.where(assignments[t] >= 0, X[np.maximum(assignments[t], 0)], 0.0)
                e = carry_bound(host, terms["relu"], terms["coef"] * merged + terms["offset"], shapes, tuple(lo.shape))
                share = e if share is None else share + e
            shares.append(float(np.max(share)) if share is not None else 0.0)
            if share is not None:
                total = share if total is None else total + share
    if total is None:
        return np.zeros(int(np.prod(output_shapes(states[0], lo.shape)[-1]))), shares
    return (total if np.all(np.isfinite(total)) else None), shares


def _expanded(bound: np.ndarray, scale: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per original channel ``j``, ``f_j`` times the bound of merged channel ``labels[j]``."""
    out = np.zeros((labels.size, *bound.shape[1:]))
    kept = labels >= 0
    out[kept] = scale[kept].reshape((-1,) + (1,) * (bound.ndim - 1)) * bound[labels[kept]]
    return out
