"""What :func:`tropref.compress_network` did: per-layer and network reports.

:class:`NetworkReport` holds the widths, parameters, MACs, certificates and times of every
dense and convolutional layer (:class:`LayerReport`), the network certificate and the
measured error; it prints as a table and converts to plain values (JSON). The walk builds
it in :mod:`~tropref.network._reporting`, and says its progress through
:mod:`~tropref.network._progress`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .certificate import CAPPED

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
