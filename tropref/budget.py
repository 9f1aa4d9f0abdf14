"""Global budgets and their non-uniform allocation across layers (the paper's non-uniform variant).

A :class:`Budget` asks for a whole compressed network of at most a fraction of the
original's units, parameters or MACs. :func:`allocate_budget` turns it into a width per
hidden layer.

The rule (a tropref choice, documented in ``docs/networks.md``):

1. ``q0``: the largest uniform keep fraction that meets the budget.
2. Probe: compress each hidden layer alone to ``k0_l = round(q0 n_l)`` units and take its
   certificate ``β_l`` (largest over the next layer's pre-activations), times the
   amplification ``A_l`` of a unit change there to the network's outputs through the later
   layers' ``|W|`` (see :func:`tropref.network_compression.network_certificate`).
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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._array import to_numpy
from .network import BatchNorm, Conv2d, Dense, Network, count_macs, count_params, layer_shapes

__all__ = ["Budget", "allocate_budget", "predict_cost"]


@dataclass(frozen=True)
class Budget:
    """A global budget: the compressed network keeps at most this fraction of the original's
    hidden ``units``, ``params`` (parameters) or ``macs`` (multiply-accumulates per sample).

    Exactly one of the three is given, as a fraction in (0, 1]. ``floor`` bounds the
    non-uniform allocation from below: no layer keeps fewer than ``floor`` times the width
    the uniform fraction meeting the budget would give it (``floor=0`` lets a layer go
    down to one unit).

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


def predict_cost(
    work: Network,
    widths: Mapping[int, int],
    hidden: Mapping[int, Any],
    folded_bn: set[int],
    kind: str,
    shapes: list | None,
) -> int:
    """Units, parameters or MACs of the network ``work`` once layer ``i`` has ``widths[i]``
    units (layers not in ``widths`` keep theirs), as :func:`compress_network` would build it."""
    if kind == "units":
        return sum(int(widths.get(i, work.layers[i].units)) for i in hidden)
    compressed = {i for i in widths if widths[i] < work.layers[i].units}
    gone_bn = {hidden[i].bn for i in compressed if hidden[i].bn in folded_bn}
    total = 0
    prev_orig = prev_new = None
    prev_changed = False
    for p, layer in enumerate(work.layers):
        if isinstance(layer, (Dense, Conv2d)):
            out = int(widths.get(p, layer.units))
            fan_in = int(layer.W.shape[1])
            if prev_orig is not None and prev_new != prev_orig:
                fan_in = fan_in // prev_orig * prev_new
            ksize = int(np.prod(layer.W.shape[2:])) if layer.W.ndim == 4 else 1
            if kind == "params":
                has_bias = layer.b is not None or prev_changed
                total += out * fan_in * ksize + (out if has_bias else 0)
            else:
                spatial = 1 if isinstance(layer, Dense) else int(shapes[p + 1][1] * shapes[p + 1][2])
                total += out * fan_in * ksize * spatial
            prev_changed = p in compressed
            prev_orig, prev_new = layer.units, out
        elif isinstance(layer, BatchNorm) and kind == "params" and p not in gone_bn:
            ratio = layer.channels // prev_orig if prev_orig else 1  # per-feature after a flatten
            total += 2 * (prev_new * ratio if prev_orig else layer.channels)
    return total


def allocate_budget(
    work: Network,
    budget: Budget,
    hidden: Mapping[int, Any],
    *,
    reference: Network,
    probe: Callable[[int, int], np.ndarray | None],
    folded_bn: set[int] = frozenset(),
    amplification: Mapping[int, float] | None = None,
    min_width: Mapping[int, int] | None = None,
    cost: Callable[[Mapping[int, int]], int] | None = None,
) -> dict[int, int]:
    """Widths per hidden layer meeting ``budget`` (see the module notes for the rule).

    Parameters
    ----------
    work : Network
        The network with BatchNorms before ReLUs folded in (what is compressed).
    budget : Budget
    hidden : mapping
        The compressible hidden layers (index in ``work`` to their structure).
    reference : Network
        The network the budget is a fraction of (the user's network).
    probe : callable
        ``probe(i, k)``: the certificate vector of layer ``i`` compressed alone to ``k``.
    folded_bn : set of int
        BatchNorms (indices in ``work``) that disappear when their layer is compressed.
    amplification : mapping, optional
        ``A_l`` per layer (1 when missing).
    min_width : mapping, optional
        The fewest units each layer can be compressed to (1 when missing).
    cost : callable, optional
        ``cost(widths)``: the units, parameters or MACs of the compressed network with these
        widths. Default: :func:`predict_cost` of the chain ``work``; a graph passes the sum
        over its chain segments.

    Returns
    -------
    dict
        ``k`` for every layer in ``hidden``.

    Raises
    ------
    ValueError
        When the budget cannot be met even with one unit per hidden layer.
    """
    kind = budget.kind
    shapes = None
    if kind == "macs" and cost is None:
        try:
            shapes = layer_shapes(work)
        except ValueError:
            raise ValueError("a MACs budget needs the network's `input_shape`") from None
    if kind == "units":
        total0 = sum(work.layers[i].units for i in hidden)
    elif kind == "params":
        total0 = count_params(reference)
    else:
        total0 = count_macs(reference)
        if total0 is None:
            raise ValueError("a MACs budget needs the network's `input_shape`")
    limit = budget.fraction * total0
    n = {i: work.layers[i].units for i in hidden}
    low = {i: max(1, min(n[i], int((min_width or {}).get(i, 1)))) for i in hidden}

    if cost is None:

        def cost(widths: Mapping[int, int]) -> int:
            return predict_cost(work, widths, hidden, set(folded_bn), kind, shapes)

    smallest = cost(low)
    if smallest > limit:
        raise ValueError(
            f"the budget {budget} cannot be met: even the smallest widths (one unit per hidden layer, plus "
            "pinned channels) leave "
            f"{smallest} of {total0} {kind} ({smallest / max(total0, 1):.1%})"
        )
    if cost(n) <= limit:
        return dict(n)

    def uniform(q: float) -> dict[int, int]:
        return {i: max(low[i], min(m, math.floor(q * m + 0.5))) for i, m in n.items()}

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
