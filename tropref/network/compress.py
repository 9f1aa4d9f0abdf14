"""``compress_network``: a whole network, a chain or a graph, compressed front to back, with a report.

The walk (``docs/networks.md`` says it with pictures), one step per module below this one:

1. **Structure** (:mod:`~tropref.network.structure`): the network is cut into chain
   segments, BatchNorms acting on pre-activations are folded into their layers, and the
   hidden ReLU layers of every segment are found. A chain is one segment. Channels at the
   end of a segment that feeds an addition, a concatenation or a branch are coupled to
   other paths and left unchanged.
2. **Widths** (:mod:`~tropref.network.widths`): ``k`` per hidden layer from ``keep`` (a
   fraction, a mapping, or a :class:`~tropref.network.widths.Budget` allocated from the
   layers' certificates).
3. **Compress front to back** (:mod:`~tropref.network.rewrite`): the hidden layers in the
   graph's order, each by the one per-layer step ``_Run.compress``, which reads the next
   layer per unit (:func:`~tropref.network.rewrite.read_hidden`), calls
   :func:`tropref.compress_layer` and writes the result back into the chain
   (:func:`~tropref.network.rewrite.write_hidden`); the next layer is then
   compressed in turn from its rewritten weights. Data-driven methods receive each layer's
   inputs in the partly compressed network (``_LayerInputs``).
4. **Certify and report** (:mod:`~tropref.network.certificate`,
   :mod:`~tropref.network.report`): the layer certificates are composed along every path
   into the network certificate, and the compressed network is measured on ``inputs``.

Indices, each kind with its own name throughout this module: ``g`` is a layer of the work
graph (``structure.work``, BatchNorms folded; the keys of the widths and of the layer
reports), ``part_no`` a part of ``structure.parts`` and ``pos`` a position in that part's
chain, ``group_no`` a group's position in the list of coupled groups; the units a layer
keeps are ``units`` (channels for a group), never an index.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._array import Array, namespace
from .._seeds import resolve_seed
from ..compress import compress_layer
from ..methods import check_method
from ._after_relu import Folded
from ._keep import resolve_layers
from ._progress import progress_sink, say_layer
from ._reporting import layer_reports, network_report
from .certificate import network_certificate
from .coupled import Group, compress_group, coupled_groups, group_keys, group_widths, groups_certificate
from .forward import apply_layer, apply_node, node_outputs
from .graph import Network, check_finite_layers, network_namespace
from .kinds import kind_of
from .moments import propagated_correlations
from .report import NetworkReport
from .rewrite import read_hidden, write_hidden
from .segments import drop_layers
from .shapes import output_shapes
from .structure import Part, Structure, analyse
from .widths import Budget, budget_widths, keep_widths, rounded_width

__all__ = ["compress_network"]


def compress_network(
    net: Network,
    keep: float | Mapping[Any, Any] | Budget = 0.5,
    *,
    method: str = "tropnnc",
    seed: int | None = None,
    skip: Sequence[int | str] = (),
    data: Array | None = None,
    inputs: Array | None = None,
    input_radius: float | None = None,
    max_patches: int = 4096,
    progress: bool | Callable[[str], None] | None = None,
    certify: bool = True,
    coupled: bool = False,
    round_to: int | None = None,
    model_name: str | None = None,
    **options: Any,
) -> tuple[Network, NetworkReport]:
    """Compress every hidden ReLU layer of a network (a chain or a graph), front to back.

    Each hidden layer ``l`` is compressed with :func:`tropref.compress_layer`, which merges
    its units (output channels) and rewrites the inputs of the next dense/conv layer
    through whatever lies between them (BatchNorm, pooling, flatten, dropout). The next
    layer is then compressed from its rewritten weights. The last layer (classifier) has no
    ReLU and is left alone. In a graph, the walk runs on every chain segment; channels that
    feed an addition, a concatenation or a branch are coupled to other paths and left
    unchanged (the report says so), and the certificate is carried along every path and
    summed where paths meet. The input network is not modified.

    Parameters
    ----------
    net : Network
        The network (:mod:`tropref.network`); adapters build one from PyTorch or Keras.
    keep : float, mapping or Budget
        - a fraction ``q`` in (0, 1]: every hidden layer keeps ``max(1, round(q n))`` units;
        - a mapping from layer (index in ``net`` or name) to ``k`` (an int, or a fraction);
          layers not named are not compressed;
        - a :class:`tropref.Budget` (units, parameters or MACs as a fraction of the whole
          network's): widths are allocated non-uniformly from the layers' certificates,
          see :func:`tropref.network.widths.allocate_budget`. The budget is met.
    method : str
        Any method of :func:`tropref.compress_layer`.
    seed : int, optional
        Seed; layer ``l`` uses a seed derived from ``(seed, l)``.
    skip : sequence of int or str
        Layers (index in ``net`` or name) to leave uncompressed.
    data : array, optional
        Sample inputs of the network (``(N, d)`` or NCHW), for data-driven methods: each
        layer receives the inputs it sees in the partly compressed network (up to
        ``max_patches`` random input patches for a convolution).
    inputs : array, optional
        Inputs on which to measure the error (default: ``data``). Their elementwise range
        is also the input domain of the network certificate, unless ``input_radius`` is set.
    input_radius : float, optional
        Certify over ``{x : |x_i| <= r}`` (and, for the first layer, ``‖x‖ <= r``).
    progress : bool, None or callable
        One line per layer (its width, certificate, time and an estimate of the time left),
        and a line before a slow step. ``None`` (default): printed to stderr once the call
        has run for 2 s (short calls stay silent); ``True``: always; ``False``: never; a
        callable receives the lines instead.
    certify : bool
        Compute the network certificate when an input domain is given (``inputs`` or
        ``input_radius``); ``False`` skips its interval bounds, the costliest part of the
        report (the measured error on ``inputs`` is still computed).
    coupled : bool
        Also compress the coupled channel groups (:mod:`tropref.network.coupled`): the
        channels that meet in an addition, as the residual stream of a ResNet, each group
        with one partition shared by all the layers that write it, and every reader
        rewritten. ``keep`` applies to each group as to a hidden layer (a mapping names a
        group by any of its producers; a :class:`Budget` allocates over the groups and the
        hidden layers together, each group as one more layer,
        :func:`~tropref.network.widths.budget_widths`). The groups are compressed first, on
        the original weights, then the hidden layers. Needs a data-free method. Off by
        default: on the shipped ResNet-20 the inner channels alone keep more of the function
        at the same parameter count, with a fraction and with a Budget
        (``docs/results.md``, sections 11 and 15).
    round_to : int, optional
        Round every width to a multiple of ``round_to`` (8 or 16 for hardware that runs
        such channel counts fastest), never above the layer's own width
        (:func:`~tropref.network.widths.rounded_width`); after a :class:`Budget`'s
        allocation, so the budget holds to within the rounding.
    model_name : str, optional
        The model's name in the progress lines (``[tropref ResNet] 3/9 ...``; the adapters
        pass the model's class or name).
    **options
        Passed to the method (e.g. ``objective``, ``refine`` for ``"tropnnc"``).

    Returns
    -------
    network : Network
        The compressed network; BatchNorms are folded away where exact.
    report : NetworkReport
        Per-layer widths, parameters, MACs, certificates and times; the network
        certificate and the measured error.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> rng = np.random.default_rng(0)
    >>> W1 = rng.normal(size=(6, 3))
    >>> net = Network([Dense(np.concatenate([W1, 2 * W1]), np.zeros(12)), ReLU(), Dense(rng.normal(size=(2, 12)))])
    >>> small, report = compress_network(net, keep=0.5, seed=0, inputs=rng.normal(size=(50, 3)))
    >>> small[0].W.shape
    (6, 3)
    >>> report.measured_error < 1e-9
    True
    """
    t0 = time.perf_counter()
    if not isinstance(net, Network):
        raise TypeError(f"`net` must be a tropref.network.Network, got {type(net).__name__}")
    check_method(method, options)  # before anything, also where nothing needs compressing
    check_finite_layers(net)  # each layer named, before a compressed layer's own check names its arguments
    run = _Run(method, resolve_seed(seed), max_patches, options)
    rounded_width(1, 1, round_to)  # `round_to` checked before any work
    say = progress_sink(progress, t0, model=model_name)
    inputs = data if inputs is None else inputs
    data = _in_weights_dtype(network_namespace(net), net, data)
    steps: dict[str, float] = {}

    # 1. structure: segments, BatchNorms folded, hidden layers, the shapes of the work graph
    original = analyse(net, _input_shape(net, data, inputs))
    run = replace(run, correlations=_Correlations(original))
    shapes = _work_shapes(original.work)  # once, for the widths, the certificate and the report
    steps["fold_batchnorm"] = time.perf_counter() - t0
    skipped = resolve_layers(net, skip, "skip")
    targets = [g for g in original.compressible if original.origin(g) not in skipped]
    groups = _groups(original, skipped) if coupled else []

    # 2. widths: units kept per work layer, channels kept per group (by its position in `groups`)
    units_kept, group_units_kept = _widths(net, original, keep, targets, groups, round_to, run, data, shapes)

    # 3a. the coupled groups, each with one partition, on the original weights
    states, done_groups, group_info = _compress_groups(original, groups, group_units_kept, run, say)
    structure, work_shapes = _after_groups(original, states, shapes)

    # 3. the hidden layers front to back, each segment's chain edited in place
    work = structure.work
    todo = [g for g in targets if units_kept[g] < work.layers[g].units]
    inputs_of = _LayerInputs(structure, data)  # each hidden layer's input in the partly compressed network
    eta = _Estimate(work, structure, todo)
    layer_info: dict[int, dict[str, Any]] = {}
    for count, g in enumerate(todo, 1):
        part_no, pos = structure.index(g)
        part, chain_layers = structure.parts[part_no], inputs_of.chains[part_no]
        x = inputs_of(part_no, pos)
        t1 = time.perf_counter()
        cmax, cvec, info, width = run.compress(part, pos, chain_layers, units_kept[g], x)
        layer_info[g] = dict(certificate=cmax, certificate_vector=cvec, info=info, time=time.perf_counter() - t1)
        label, units = net.label(part.origin[pos]), work.layers[g].units
        say_layer(say, count, len(todo), label, units, width, cmax, layer_info[g]["time"], eta(count))
    _layer_steps(steps, layer_info, time.perf_counter() - eta.start)
    result = work.replace_layers(_graph_layers(structure, inputs_of.chains))

    # 4. certify, measure, report
    t1 = time.perf_counter()
    per_output, bounds, domain = _certificate_step(
        say,
        certify,
        inputs,
        input_radius,
        len(work.layers),
        lambda: _certificate(structure, states, done_groups, result, layer_info, inputs, input_radius, work_shapes),
    )
    steps["network_certificate"] = time.perf_counter() - t1
    final, after, final_shapes = _final(net, result)
    reports = layer_reports(
        original, result, skipped, {**layer_info, **group_info}, bounds, _unchanged(groups), shapes, after
    )
    report = network_report(
        net,
        final,
        reports,
        inputs,
        method=method,
        seed=run.seed,
        keep=keep,
        per_output=per_output,
        domain=domain,
        t0=t0,
        steps=steps,
        input_shape=structure.input_shape,
        shapes=(original.shapes, final_shapes),
    )
    return final, report


@dataclass(frozen=True)
class _Run:
    """What every layer of one call is compressed with; :meth:`compress` is the per-layer step."""

    method: str
    seed: int
    max_patches: int
    options: dict[str, Any]
    correlations: Callable[[int], np.ndarray | None] | None = None  # the model's ρ per work layer

    def compress(
        self, part: Part, pos: int, chain_layers: list, units: int, x: Array | None
    ) -> tuple[float | None, np.ndarray | None, dict[str, Any], int]:
        """Hidden layer ``pos`` of ``part``'s chain (``chain_layers``: the chain as compressed
        so far, edited in place; ``x``: the layer's input, or None) compressed to ``units``,
        with the seed and options of that layer: the next layer read per unit, then
        :func:`tropref.compress_layer`, then the result written back (:mod:`~tropref.network.rewrite`).
        Returns the certificate's largest entry, its vector, the info and the width after
        (:func:`~tropref.network.rewrite.write_hidden`); a ValueError names the layer."""
        try:
            read = read_hidden(
                part,
                pos,
                chain_layers,
                units,
                method=self.method,
                seed=_layer_seed(self.seed, part.origin[pos]),
                data=x,
                max_patches=self.max_patches,
                options=self.options,
                correlation=None if self.correlations is None else lambda: self.correlations(part.at[pos]),
            )
            res = None if read.args is None else compress_layer(*read.args, **read.kwargs)
            return write_hidden(chain_layers, read, res)
        except ValueError as exc:
            # the arguments compress_layer names are the network's layers: say which it was
            label = part.chain.label(part.hidden[pos].i)
            raise ValueError(f"{label}, compressed with the layer it feeds: {exc}") from exc


class _Correlations:
    """The pre-activation correlations propagated through the original network
    (:func:`~tropref.network.moments.propagated_correlations`), computed on first use: only a
    refit with ``refit_correlation="auto"`` reads them."""

    def __init__(self, structure: Structure):
        self.structure, self.table = structure, None

    def __call__(self, g: int) -> np.ndarray | None:
        if self.table is None:
            self.table = propagated_correlations(self.structure)
        return self.table.get(g)


def _widths(
    net: Network,
    structure: Structure,
    keep: Any,
    targets: Sequence[int],
    groups: Sequence[Group],
    round_to: int | None,
    run: _Run,
    data: Array | None,
    shapes: list[tuple[int, ...]] | None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Step 2: the units each target work layer keeps, and the channels each group keeps,
    rounded after the allocation (a Budget holds to within the rounding)."""
    if isinstance(keep, Budget):
        probe = _prober(structure, run, data, groups)
        allocated = budget_widths(structure, keep, targets, probe, shapes=shapes, groups=groups)
        units_kept = {g: k for g, k in allocated.items() if not isinstance(g, tuple)}
        group_units_kept = {g[1]: k for g, k in allocated.items() if isinstance(g, tuple)}
    else:
        units_kept = keep_widths(_without(keep, group_keys(keep, groups, net, structure.origin)), structure, targets)
        group_units_kept = group_widths(keep, groups, net, structure.origin)
    if round_to is not None:
        work = structure.work
        units_kept = {g: rounded_width(k, work.layers[g].units, round_to) for g, k in units_kept.items()}
        group_units_kept = {
            group_no: rounded_width(k, groups[group_no].units, round_to) for group_no, k in group_units_kept.items()
        }
    return units_kept, group_units_kept


def _compress_groups(
    structure: Structure, groups: Sequence[Group], group_units_kept: Mapping[int, int], run: _Run, say: Any
) -> tuple[list[Network], list[tuple], dict[int, dict[str, Any]]]:
    """Step 3a: every coupled group merged with one partition, on the original weights.

    Returns the work graph before and after each group, each merged group with its
    errors, scale, assignment and gates, and the report's entry of each producer."""
    work = structure.work
    states, done_groups, group_info = [work], [], {}
    for group_no, channels in group_units_kept.items():
        group = groups[group_no]
        if channels >= group.units:
            continue
        t1, layers = time.perf_counter(), list(states[-1].layers)
        errors, scale, info = _compress_group(layers, states[-1], group, channels, structure, run)
        states.append(states[-1].replace_layers(layers))
        done_groups.append((group, errors, scale, info["assignment"], info["gates"]))
        seconds = time.perf_counter() - t1
        for producer in group.producers:
            group_info[producer] = dict(
                certificate=float(np.max(errors[producer])), info=info, time=seconds / len(errors)
            )
        label, width = group.label(structure.net, structure.origin), layers[group.producers[0]].units
        say_layer(say, len(done_groups), len(group_units_kept), label, group.units, width, None, seconds, None)
    return states, done_groups, group_info


def _after_groups(
    original: Structure, states: Sequence[Network], shapes: list[tuple[int, ...]] | None
) -> tuple[Structure, list[tuple[int, ...]] | None]:
    """The structure the hidden layers are compressed in, and its work graph's shapes: the
    original's, or, once the groups changed widths, over the layers after them (their
    shapes computed once)."""
    if len(states) == 1:
        return original, shapes
    work_shapes = _work_shapes(states[-1])
    return original.with_layers(states[-1].layers, work_shapes), work_shapes


class _LayerInputs:
    """Each hidden layer's input in the partly compressed network, carried forward along the walk.

    ``chains[part_no]`` is the chain of part ``part_no`` as compressed so far (the walk edits
    it in place); calling ``inputs_of(part_no, pos)`` gives the input of chain layer ``pos``
    (None without data). The walk asks in the graph's order, so the input is carried from
    the previous hidden layer of the same part, or computed from the compressed graph when
    a new part begins."""

    def __init__(self, structure: Structure, data: Array | None):
        self.structure, self.data = structure, data
        self.chains = [list(part.chain.layers) for part in structure.parts]
        self.xp = None if data is None else namespace(x=data)  # one namespace for the walk's forward steps
        self.memo: dict[int, Array] = {} if data is None else {-1: data}  # outputs of the compressed graph
        self.x, self.at = None, (-1, 0)  # the data at (part number, chain position)

    def __call__(self, part_no: int, pos: int) -> Array | None:
        if self.data is None:
            return None
        structure = self.structure
        if self.at[0] != part_no:  # a new segment: its input, from the graph compressed so far
            src = structure.moved[structure.parts[part_no].segment.source]
            layers = _graph_layers(structure, self.chains)
            self.x, self.at = _value_at(structure.work, layers, self.memo, src, self.xp), (part_no, 0)
        self.x = _advance(self.chains[part_no], self.x, self.at[1], pos, self.xp)
        self.at = (part_no, pos)
        return self.x


class _Estimate:
    """The time left, from the weights the layers done and the layers left read."""

    def __init__(self, work: Network, structure: Structure, todo: Sequence[int]):
        self.cost = [_layer_cost(work, g, structure.next_layer(g)) for g in todo]
        self.start = time.perf_counter()

    def __call__(self, count: int) -> float | None:
        """Seconds left after the first ``count`` layers (None when none is left)."""
        done, left = sum(self.cost[:count]), sum(self.cost[count:])
        return (time.perf_counter() - self.start) * left / max(done, 1) if left else None


def _certificate(
    structure: Structure,
    states: Sequence[Network],
    done_groups: Sequence[tuple],
    result: Network,
    layer_info: Mapping[int, Mapping[str, Any]],
    inputs: Array | None,
    input_radius: float | None,
    shapes: list[tuple[int, ...]] | None,
) -> tuple[np.ndarray | None, dict[int, float], str]:
    """The network certificate: the coupled groups' share (from the original to
    ``structure.work``), then the hidden layers' (from it to ``result``), capped once;
    ``shapes``: the output shapes of ``structure.work``, or None."""
    earlier, shares = None, {}
    if done_groups:
        earlier, per_group = groups_certificate(
            states, *zip(*done_groups, strict=True), inputs=inputs, input_radius=input_radius
        )
        shares = {p: share for (group, *_), share in zip(done_groups, per_group, strict=True) for p in group.producers}
        if earlier is None:
            return None, {}, "the coupled groups' bound is not finite (certificate unavailable)"
    bound, layer_shares, domain = network_certificate(
        structure.work,
        result,
        {g: v["certificate_vector"] for g, v in layer_info.items()},
        {g: structure.next_layer(g) for g in layer_info},
        inputs=inputs,
        input_radius=input_radius,
        earlier=earlier,
        original=states[0] if done_groups else None,
        shapes=shapes,
    )
    return bound, {**layer_shares, **shares}, domain


def _certificate_step(
    say: Callable[[str], None],
    certify: bool,
    inputs: Array | None,
    input_radius: float | None,
    n_layers: int,
    compute: Callable[[], tuple[Any, dict, str]],
) -> tuple[Any, dict, str]:
    """Step 4's certificate when it is asked for and an input domain is known, else why not."""
    if certify and (inputs is not None or input_radius is not None):
        say(f"[tropref] network certificate: interval bounds through {n_layers} layers (certify=False skips it)")
        return compute()
    why = "not certified (certify=False)" if certify is False else "no input domain (pass `inputs` or `input_radius`)"
    return None, {}, why


def _groups(structure: Structure, skipped: set[int]) -> list[Group]:
    """The coupled groups of the work graph that ``coupled=True`` compresses: every group
    but those with a skipped producer."""
    groups = coupled_groups(structure.work)
    return [group for group in groups if not any(structure.origin(p) in skipped for p in group.producers)]


def _unchanged(groups: Sequence[Group]) -> dict[int, str]:
    """Why each producer of a group that cannot be compressed is left as it is."""
    why = {p: group.why for group in groups if group.why for p in group.producers}
    return {p: f"its coupled group cannot be compressed ({reason})" for p, reason in why.items()}


def _without(keep: Any, keys: set[Any]) -> Any:
    """``keep`` without the keys that name coupled groups (a fraction as it is)."""
    return {k: v for k, v in keep.items() if k not in keys} if isinstance(keep, Mapping) else keep


def _compress_group(
    layers: list, net: Network, group: Group, channels: int, structure: Structure, run: _Run
) -> tuple[dict[int, np.ndarray], np.ndarray, dict[str, Any]]:
    """:func:`compress_group` with the seed of its first producer, naming the group in its errors."""
    first = structure.origin(group.producers[0])
    seed = _layer_seed(run.seed, first)
    try:
        return compress_group(layers, net, group, channels, method=run.method, seed=seed, options=run.options)
    except ValueError as exc:
        raise ValueError(f"the coupled group {group.label(structure.net, structure.origin)}: {exc}") from exc


def _final(net: Network, result: Network) -> tuple[Network, Any, Any]:
    """The network returned: ``result`` without the walk's placeholders, with the user's
    input shape; and the output shapes of ``result`` and of it, computed once (dropping an
    identity changes no other layer's shape)."""
    # Folded is the walk's own placeholder (an Identity to its kind): its type is the marker
    folded = {g for g, layer in enumerate(result.layers) if isinstance(layer, Folded)}
    final = drop_layers(result, sorted(folded))
    final = Network(final.layers, net.input_shape, final.inputs)  # the user's input shape, as given
    after = _work_shapes(result)
    return final, after, None if after is None else [s for g, s in enumerate(after) if g not in folded]


def _work_shapes(work: Network) -> list[tuple[int, ...]] | None:
    """The work graph's output shapes, computed once per walk (None when its input shape is
    unknown or its inputs do not fit: each step then says so in its own way)."""
    try:
        return output_shapes(work)
    except ValueError:
        return None


def _input_shape(net: Network, data: Array | None, inputs: Array | None) -> tuple[int, ...] | None:
    """One sample's shape: the network's, else the data's (None when neither is known)."""
    if net.input_shape is not None:
        return net.input_shape
    x = inputs if inputs is not None else data
    return None if x is None else tuple(int(s) for s in x.shape[1:])


def _in_weights_dtype(xp: Any, net: Network, data: Array | None) -> Array | None:
    """``data`` in the dtype of the network's weights: compress_layer wants one floating dtype."""
    weights = next((l.W for l in net.layers if kind_of(l).linear), None)
    if data is not None and weights is not None and data.dtype != weights.dtype:
        return xp.astype(data, weights.dtype)
    return data


def _layer_seed(seed: int, i: int) -> int:
    """Layer ``i``'s seed, derived from the walk's: the same whichever layers are compressed."""
    return int(np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint32)[0])


def _layer_cost(work: Network, g: int, g_next: int) -> int:
    """Weights a layer's compression reads (its own and the next layer's): the progress estimate's unit."""
    return sum(int(np.prod(work.layers[h].W.shape)) for h in (g, g_next))


def _layer_steps(steps: dict[str, float], layer_info: Mapping[int, Mapping[str, Any]], seconds: float) -> None:
    """The layers' time, and its method / rewrite / certificate parts summed from compress_layer."""
    steps["layers"] = seconds
    for name, key in (("method", "method"), ("rewrite", "rewrite"), ("certificate", "layer_certificates")):
        steps[key] = sum(v["info"].get("time_s", {}).get(name, 0.0) for v in layer_info.values())


def _advance(layers: Sequence[Any], x: Array, start: int, stop: int, xp: Any) -> Array:
    """``x``, the input of chain layer ``start``, carried to the input of layer ``stop``."""
    for pos in range(start, stop):
        x = apply_layer(layers[pos], x, xp)
    return x


def _graph_layers(structure: Structure, chains: Sequence[Sequence[Any]]) -> list:
    """The work graph's layers with every segment's chain as compressed so far."""
    layers = list(structure.work.layers)
    for part, chain in zip(structure.parts, chains, strict=True):
        for g, layer in zip(part.at, chain, strict=True):
            layers[g] = layer
    return layers


def _value_at(work: Network, layers: list, memo: dict[int, Array], node: int, xp: Any) -> Array:
    """The output of ``node`` in the graph compressed so far, computed from the outputs kept
    in ``memo`` (``-1``: the data). The segments are compressed in the graph's order, so
    every layer upstream of a segment's input is final when it is computed; outputs whose
    readers have all been computed are dropped from ``memo``."""
    if node in memo:
        return memo[node]
    stack = [node]
    while stack:
        g = stack[-1]
        missing = [src for src in work.sources(g) if src not in memo]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        if g not in memo:
            memo[g] = apply_node(layers[g], [memo[src] for src in work.sources(g)], xp)
    value = memo[node]
    users = work.users()
    for g in [g for g in memo if g >= 0 and g != node]:
        if all(u in memo for u in users[g]):
            del memo[g]
    return value


def _prober(
    structure: Structure, run: _Run, data: Array | None, groups: Sequence[Group] = ()
) -> Callable[[Any, int], np.ndarray | None]:
    """``probe(g, units)`` for budgets: the certificate vector of hidden work layer ``g``
    compressed alone to ``units`` in the original network, with the merge's single fold;
    for ``g = ("group", t)``, the summed largest errors of the producers of ``groups[t]``
    compressed together to ``units`` channels (:func:`compress_group`, on the original
    weights, as the walk compresses the groups).

    The Gaussian refit is left out of the probe (``refit="none"``): a refitted layer's
    certificate adds to the single fold's the distance the refit moved from it, which
    measures the refit's change, not the merge's damage, and allocating from it moved the
    cuts to the wrong layers (``vgg_small`` at 30 %: 60.03 % against 85.84 % with the single
    fold's certificate; ``docs/results.md``, section 13)."""
    sources: dict[int, Array] = {}  # each segment's input in the original network
    xp = None if data is None else namespace(x=data)
    if run.method == "tropnnc":
        run = replace(run, options={**run.options, "refit": "none"})

    def probe(g: Any, units: int) -> np.ndarray | None:
        if isinstance(g, tuple):
            layers = list(structure.work.layers)
            errors, _, _ = _compress_group(layers, structure.work, groups[g[1]], units, structure, run)
            return np.array([sum(float(np.max(e)) for e in errors.values())])
        part, pos = structure.locate(g)
        chain_layers, x = list(part.chain.layers), None
        if data is not None:
            src = part.segment.source
            if src not in sources:
                sources[src] = data if src < 0 else node_outputs(structure.net, data, stop=src)[src]
            x = _advance(chain_layers, sources[src], 0, pos, xp)
        _, cvec, _, _ = run.compress(part, pos, chain_layers, units, x)
        return cvec

    return probe
