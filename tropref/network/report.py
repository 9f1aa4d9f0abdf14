"""What :func:`tropref.compress_network` did: per-layer and network reports, progress lines.

:class:`NetworkReport` holds the widths, parameters, MACs, certificates and times of every
dense and convolutional layer (:class:`LayerReport`), the network certificate and the
measured error; it prints as a table and converts to plain values (JSON).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .._array import Array, to_numpy
from .certificate import CAPPED
from .graph import Network, network_namespace
from .kinds import kind_of
from .shapes import count_macs, count_params, layer_macs, layer_params, output_shapes
from .structure import Structure

# The module's public API. Names without an underscore that are not listed here are shared
# with the other modules of tropref.network (the walk's parts), not promised to users.
__all__ = ["LayerReport", "NetworkReport"]


@dataclass(frozen=True)
class LayerReport:
    """One dense or convolutional layer in a :class:`NetworkReport`.

    Attributes
    ----------
    index : int
        Position of the layer in the network given to :func:`compress_network`.
    name : str
        The layer's name (or ``"<index>:<Type>"``).
    kind : str
        ``"Dense"`` or ``"Conv2d"``.
    status : str
        ``"compressed"``, ``"kept"`` (k = n asked), ``"skipped"`` (in ``skip``),
        ``"classifier"`` (the last layer) or ``"not a ReLU layer: <why>"``.
    width_before, width_after : int
        Units (output channels) before and after.
    params_before, params_after : int
        Parameters of this layer (its own weights and bias; BatchNorms folded into it are
        counted in the network totals only).
    macs_before, macs_after : int or None
        Multiply-accumulates of this layer per sample (None: unknown input size).
    certificate : float or None
        ``max_i β_i``: the change of the next layer's pre-activations is at most
        ``β_i ‖(patch, 1)‖``. None when the method gives no certificate.
    bound : float or None
        This layer's share of the network certificate (largest over outputs).
    time_s : float
        Seconds spent compressing this layer.
    info : mapping
        What ``compress_layer`` reported (method facts, units removed exactly, ...).
    """

    index: int
    name: str
    kind: str
    status: str
    width_before: int
    width_after: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    certificate: float | None = None
    bound: float | None = None
    time_s: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))


@dataclass(frozen=True)
class NetworkReport:
    """What :func:`compress_network` did, layer by layer, and what it certifies.

    Attributes
    ----------
    layers : tuple of LayerReport
        Every dense and convolutional layer, in order.
    method : str
    seed : int
        The concrete seed (per-layer seeds are derived from it).
    keep : str
        The ``keep`` rule as given (fraction, mapping or budget).
    params_before, params_after : int
        Parameters of the whole network (BatchNorms folded away count in ``before`` only).
    macs_before, macs_after : int or None
        Multiply-accumulates per sample.
    certificate : float or None
        Network-level bound on ``max_i |f_i(x) - f̃_i(x)|`` for every input ``x`` in
        ``input_domain`` (None without an input domain or when a layer gives no
        certificate). Composed layer by layer, so loose for deep networks.
    certificate_per_output : numpy array or None
        The bound for each output.
    measured_error : float or None
        ``max |f(x) - f̃(x)|`` over the inputs given.
    input_domain : str
        The inputs the certificate holds for.
    time_s : float
        Total seconds.
    steps : mapping
        Seconds per step: ``fold_batchnorm``, ``layers`` (all layer compressions, of which
        ``method``, ``rewrite`` of the next layers and ``layer_certificates``),
        ``network_certificate``, ``measured_error``; the adapters add ``export`` and
        ``import``.
    notes : tuple of str
        What an adapter says about the model it wrote back (for example, why the PyTorch
        adapter rebuilt the model instead of resizing the user's own module tree).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, compress_network
    >>> W = np.random.default_rng(0).normal(size=(3, 2))
    >>> net = Network([Dense(np.concatenate([W, W])), ReLU(), Dense(np.ones((1, 6)))])
    >>> _, report = compress_network(net, keep=0.5, seed=0)
    >>> [(r.name, r.status, r.width_before, r.width_after) for r in report.layers]
    [('0:Dense', 'compressed', 6, 3), ('2:Dense', 'classifier', 1, 1)]
    >>> report.to_dict()["params_after"]  # 3 x 2 weights, then 1 x 3 and the new bias
    10
    """

    layers: tuple[LayerReport, ...]
    method: str
    seed: int
    keep: str
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    certificate: float | None
    certificate_per_output: np.ndarray | None
    measured_error: float | None
    input_domain: str
    time_s: float
    steps: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def table(self) -> str:
        """A plain-text table of the layers and the totals."""
        head = f"{'layer':<24} {'kind':<7} {'width':>11} {'params':>19} {'MACs':>23} {'certificate':>11} {'time s':>7}"
        rows = [head, "-" * len(head)]
        for r in self.layers:
            macs = "-" if r.macs_before is None else f"{r.macs_before}->{r.macs_after}"
            cert = "-" if r.certificate is None else f"{r.certificate:.3g}"
            status = "" if r.status in ("compressed",) else f"  [{r.status}]"
            rows.append(
                f"{r.name[:24]:<24} {r.kind:<7} {f'{r.width_before}->{r.width_after}':>11} "
                f"{f'{r.params_before}->{r.params_after}':>19} {macs:>23} {cert:>11} {r.time_s:>7.2f}{status}"
            )
        rows.append("-" * len(head))
        ratio = self.params_after / max(self.params_before, 1)
        rows.append(f"parameters {self.params_before} -> {self.params_after} ({ratio:.1%})")
        if self.macs_before:
            rows.append(
                f"MACs       {self.macs_before} -> {self.macs_after} ({self.macs_after / self.macs_before:.1%})"
            )
        if self.certificate is not None and CAPPED in self.input_domain:
            rows.append(
                f"network certificate: only the interval cap ({self.certificate:.3g}, the span of the output boxes on "
                f"{self.input_domain.replace(CAPPED, '')}): it says nothing about this change; "
                "tropref.certify(net, compressed, x, eps) bounds it around inputs"
            )
        elif self.certificate is not None:
            rows.append(
                f"network certificate max|Δf| <= {self.certificate:.4g} on {self.input_domain} (composed per "
                "layer; loose for deep nets)"
            )
        else:  # say why there is none, rather than leave the line out
            rows.append(f"network certificate: none: {self.input_domain}")
        if self.measured_error is not None:
            rows.append(f"measured max|Δf| = {self.measured_error:.4g} on the inputs given")
        rows.append(f"method {self.method}, seed {self.seed}, keep {self.keep}, {self.time_s:.2f} s")
        if self.steps:
            rows.append("time s: " + ", ".join(f"{k} {v:.2f}" for k, v in self.steps.items()))
        rows.extend(f"note: {n}" for n in self.notes)
        return "\n".join(rows)

    __str__ = table

    def to_dict(self) -> dict[str, Any]:
        """The report as plain Python values (JSON-friendly: arrays become lists)."""

        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, (np.integer, np.floating)):
                return v.item()
            if isinstance(v, Mapping):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        out = {f: plain(getattr(self, f)) for f in self.__dataclass_fields__ if f != "layers"}
        out["layers"] = [{f: plain(getattr(r, f)) for f in r.__dataclass_fields__} for r in self.layers]
        return out


def layer_reports(
    structure: Structure,
    compressed: Network,
    skipped: set[int],
    layer_info: Mapping[int, Mapping[str, Any]],
    bounds: Mapping[int, float],
    unchanged: Mapping[int, str] | None = None,
) -> list[LayerReport]:
    """One :class:`LayerReport` per dense and convolutional layer, in the user's order.

    ``compressed`` is the work graph after the walk (same indices as ``structure.work``),
    ``layer_info[g]`` what the walk recorded for compressed layer ``g`` and ``bounds[g]``
    its share of the network certificate; ``unchanged[g]`` says why the coupled group of
    layer ``g`` was left unchanged when one was asked for (``coupled=True``).
    """
    net, work = structure.net, structure.work
    try:
        shapes_w, shapes_r = output_shapes(work), output_shapes(compressed)
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
) -> NetworkReport:
    """The report of a walk: counts of ``compressed`` and, with ``inputs``, its measured
    error ``max |net(x) − compressed(x)|``; ``steps`` gets the time of that measurement."""
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
        macs_before=count_macs(net, input_shape),
        macs_after=count_macs(compressed, input_shape),
        certificate=None if per_output is None else float(np.max(per_output)),
        certificate_per_output=per_output,
        measured_error=measured,
        input_domain=domain,
        time_s=time.perf_counter() - t0,
        steps=steps,
    )


def progress_sink(
    progress: bool | Callable[[str], None] | None, t0: float, after: float = 2.0, model: str | None = None
) -> Callable[[str], None]:
    """The line sink: a callable, stderr, nothing, or (None) stderr once ``after`` seconds
    have passed; with ``model``, every line's ``[tropref]`` reads ``[tropref <model>]``."""
    if not progress and progress is not None:
        return lambda line: None
    if callable(progress):
        sink = progress
    elif progress is None:
        sink = lambda line: print(line, file=sys.stderr, flush=True) if time.perf_counter() - t0 > after else None  # noqa: E731
    else:
        sink = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if model is None:
        return sink
    return lambda line: sink(line.replace("[tropref]", f"[tropref {model}]", 1))


def say_layer(
    say: Callable[[str], None],
    count: int,
    total: int,
    label: str,
    before: int,
    after: int,
    cmax: float | None,
    seconds: float,
    eta: float | None,
) -> None:
    """One progress line per compressed layer (walks over chains and graphs alike)."""
    cert = "-" if cmax is None else f"{cmax:.3g}"
    left = "" if eta is None else f"; about {eta:.0f} s left"
    say(f"[tropref] {count}/{total} {label}: {before} -> {after} units, certificate {cert}, {seconds:.2f} s{left}")
