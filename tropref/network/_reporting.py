"""The walk's report built from what it recorded: a :class:`~tropref.network.LayerReport` per
dense and convolutional layer, and the :class:`~tropref.network.NetworkReport` with the
measured error.

Shared by :mod:`~tropref.network.compress` and nothing else: the report's types are public
(:mod:`~tropref.network.report`), how the walk fills them is not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._array import Array, to_numpy
from .graph import Network, network_namespace
from .kinds import kind_of
from .report import LayerReport, NetworkReport
from .shapes import count_macs, count_params, layer_macs, layer_params, output_shapes
from .structure import Structure

__all__ = ["layer_reports", "network_report"]


def layer_reports(
    structure: Structure,
    compressed: Network,
    skipped: set[int],
    layer_info: Mapping[int, Mapping[str, Any]],
    bounds: Mapping[int, float],
    unchanged: Mapping[int, str] | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
    shapes_after: Sequence[tuple[int, ...]] | None = None,
) -> list[LayerReport]:
    """One :class:`LayerReport` per dense and convolutional layer, in the user's order.

    ``compressed`` is the work graph after the walk (same indices as ``structure.work``),
    ``layer_info[g]`` what the walk recorded for compressed layer ``g`` and ``bounds[g]``
    its share of the network certificate; ``unchanged[g]`` says why the coupled group of
    layer ``g`` was left unchanged when one was asked for (``coupled=True``). ``shapes``
    are :func:`~tropref.network.shapes.output_shapes` of ``structure.work``, and
    ``shapes_after`` those of ``compressed``, when the caller has them (the walk computes
    each once), else they are computed here.

    Examples
    --------
    Nothing compressed: the hidden layer is kept, the last is the classifier.

    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, analyse
    >>> layers = [Dense(np.ones((4, 3)), name="fc1"), ReLU(), Dense(np.ones((2, 4)), name="out")]
    >>> net = Network(layers, input_shape=(3,))
    >>> s = analyse(net)
    >>> [(r.name, r.status, r.width_after, r.macs_after) for r in layer_reports(s, s.work, set(), {}, {})]
    [('fc1', 'kept', 4, 12), ('out', 'classifier', 2, 8)]
    """
    net, work = structure.net, structure.work
    try:
        shapes_w = output_shapes(work) if shapes is None else shapes
        shapes_r = output_shapes(compressed) if shapes_after is None else shapes_after
    except ValueError:
        shapes_w = shapes_r = [None] * len(work.layers)
    rows = []
    for part in structure.parts:
        lin = [i for i, layer in enumerate(part.chain.layers) if kind_of(layer).linear]
        for i in lin:
            g, o = part.at[i], part.origin[i]
            before, after, orig = work.layers[g], compressed.layers[g], net.layers[o]
            h = part.hidden.get(i)
            if g in layer_info:
                status = "compressed"
            elif g in (unchanged or {}):
                status = f"coupled: {part.coupled}; left unchanged: {unchanged[g]}"
            elif i == lin[-1]:
                status = "classifier" if part.coupled is None else f"coupled: {part.coupled}; left unchanged"
            elif o in skipped:
                status = "skipped"
            elif isinstance(h, str):
                status = f"not a ReLU layer: {h}"
            else:
                status = "kept"
            li = layer_info.get(g, {})
            rows.append(
                LayerReport(
                    index=o,
                    name=getattr(orig, "name", None) or f"{o}:{type(orig).__name__}",
                    kind=type(before).__name__,
                    status=status,
                    width_before=before.units,
                    width_after=after.units,
                    params_before=layer_params(orig),
                    params_after=layer_params(after),
                    macs_before=layer_macs(before, shapes_w[g]),
                    macs_after=layer_macs(after, shapes_r[g]),
                    certificate=li.get("certificate"),
                    bound=bounds.get(g),
                    time_s=li.get("time", 0.0),
                    info=li.get("info", {}),
                )
            )
    return sorted(rows, key=lambda r: r.index)


def network_report(
    net: Network,
    compressed: Network,
    reports: list[LayerReport],
    inputs: Array | None,
    *,
    method: str,
    seed: int,
    keep: Any,
    per_output: Any,
    domain: str,
    t0: float,
    steps: dict[str, float],
    input_shape: tuple[int, ...] | None = None,
    shapes: tuple[Sequence[tuple[int, ...]] | None, Sequence[tuple[int, ...]] | None] = (None, None),
) -> NetworkReport:
    """The report of a walk: counts of ``compressed`` and, with ``inputs``, its measured
    error ``max |net(x) − compressed(x)|``; ``steps`` gets the time of that measurement.
    ``shapes`` are the output shapes of ``net`` and of ``compressed`` where the caller has
    them (the MACs are then counted at those), else they are computed at ``input_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> net = Network([Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4)))], input_shape=(3,))
    >>> steps = {}
    >>> report = network_report(net, net, [], np.ones((5, 3)), method="tropnnc", seed=0, keep=1.0, per_output=None,
    ...                         domain="no input domain", t0=0.0, steps=steps, input_shape=(3,))
    >>> report.params_after, report.macs_after, report.measured_error, sorted(steps)
    (20, 20, 0.0, ['measured_error'])
    """
    measured = None
    if inputs is not None:
        xp = network_namespace(net)
        t1 = time.perf_counter()
        measured = float(to_numpy(xp.max(xp.abs(net(inputs) - compressed(inputs)))))
        steps["measured_error"] = time.perf_counter() - t1
    return NetworkReport(
        layers=tuple(reports),
        method=method,
        seed=seed,
        keep=repr(keep) if not isinstance(keep, Mapping) else repr(dict(keep)),
        params_before=count_params(net),
        params_after=count_params(compressed),
        macs_before=count_macs(net, input_shape, shapes=shapes[0]),
        macs_after=count_macs(compressed, input_shape, shapes=shapes[1]),
        certificate=None if per_output is None else float(np.max(per_output)),
        certificate_per_output=per_output,
        measured_error=measured,
        input_domain=domain,
        time_s=time.perf_counter() - t0,
        steps=steps,
    )
