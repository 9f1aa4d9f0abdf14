"""The compressed network written back into the user's own model tree, layer by layer by name.

An adapter reads a model into a network whose dense, convolutional and BatchNorm layers carry
the model's own layer names (PyTorch module paths). The compressed network keeps those names,
with fewer units, and lacks the BatchNorms folded into their neighbours. :func:`in_place_arrays`
says, for every named layer of the model, which arrays it takes in the compressed copy, so
that the adapter can resize the layers of a copy of the model in place: same class, same
attribute names, same forward, the state's keys unchanged.

A BatchNorm folded away is kept in the model with the statistics of the compressed layer's
units: the running mean ``μ̃_c`` and variance ``σ̃_c²`` that its members' BatchNorm implies
(``LayerReport.info["moments"]``, estimated without data), weight ``√(σ̃² + eps)`` and bias
``μ̃``, so that ``BN(conv(x))`` is the compressed layer in eval mode (to rounding) and, in
training mode, normalises by the batch and restores the same mean and spread, as the
original did. Where no statistics are known (a coupled group's layers) it is an exact
identity (mean 0, weight 1, a variance ``v`` with ``v + eps == 1`` in the model's
precision). Either carries the folded layer's bias when the layer before it has none. When
the tree cannot carry the compressed network (a layer called several times, a layer the
compressed network changed in kind or hyper-parameters, a width that cannot be traced),
:class:`NotInPlace` says why, and the adapter falls back to a rebuilt model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tropref._array import to_numpy
from tropref.network import Add, BatchNorm, Conv2d, Dense, Dropout, Identity, MaxPool2d, Network, ReLU

__all__ = ["NotInPlace", "Slot", "in_place_arrays", "own_or_rebuilt", "unit_moments"]

_WEIGHTED = (Dense, Conv2d, BatchNorm)
_PASS = (ReLU, MaxPool2d, Dropout, Identity, BatchNorm, Add)  # same channels as they read (AvgPool2d too)
_KIND = {Dense: "dense", Conv2d: "conv", BatchNorm: "batchnorm"}


class NotInPlace(ValueError):
    """The model's own tree cannot carry the compressed network (the message says why)."""


@dataclass(frozen=True)
class Slot:
    """One layer of the user's model: its ``kind`` (``"dense"``, ``"conv"``, ``"batchnorm"``)
    and whether it has a bias (for BatchNorm: an affine part), and for a BatchNorm whether it
    has one already (``native``: False when the adapter would have to add it)."""

    kind: str
    bias: bool
    native: bool = True


def own_or_rebuilt(
    resize: Callable[[], tuple[Any, list[str]]], rebuild: Callable[[], Any], notes: list[str], instead: str
) -> Any:
    """The user's own model resized (``resize()``: the model and notes for the report), or,
    when it cannot carry the compressed network (:class:`NotInPlace`), ``rebuild()``, with
    ``instead`` and the reason in ``notes`` and in a warning (raised at the adapter's
    ``compress``, through its ``write_back`` and ``write``)."""
    try:
        small, said = resize()
    except NotInPlace as exc:
        why = f"{instead}: {exc}"
        notes.append(why)
        warnings.warn(f"tropref: {why}", UserWarning, stacklevel=4)
        return rebuild()
    notes.extend(said)
    return small


def unit_moments(report: Any) -> dict[str, tuple[Any, Any]]:
    """The kept units' estimated pre-activation statistics of every compressed layer of a
    :class:`~tropref.network.NetworkReport`, by layer name (those the walk recorded)."""
    return {r.name: r.info["moments"] for r in report.layers if "moments" in r.info}


def _by_name(net: Network, what: str) -> dict[str, tuple[int, Any]]:
    out: dict[str, tuple[int, Any]] = {}
    for i, layer in enumerate(net.layers):
        if isinstance(layer, _WEIGHTED):
            if not layer.name:
                raise NotInPlace(f"layer {i} ({type(layer).__name__}) of the {what} network has no name")
            if layer.name in out:
                raise NotInPlace(
                    f"layer {layer.name!r} is called several times (shared weights): its calls are compressed as "
                    "separate layers, which one module cannot hold"
                )
            out[layer.name] = (i, layer)
    return out


def _same_hyper(a: Any, b: Any) -> bool:
    if isinstance(a, Conv2d):
        return (a.stride, a.padding, a.dilation) == (b.stride, b.padding, b.dilation)
    return True


def _channels(net: Network, new_by_name: Mapping[str, tuple[int, Any]], i: int, name: str) -> int:
    """The channels that layer ``i`` of ``net`` (the original) reads in the compressed network."""
    q = net.sources(i)[0]
    while q >= 0:
        layer = net.layers[q]
        if isinstance(layer, (Dense, Conv2d)):
            return new_by_name[layer.name][1].units
        if isinstance(layer, BatchNorm) and layer.name in new_by_name:
            return new_by_name[layer.name][1].channels
        if not isinstance(layer, _PASS):  # a concatenation, a flatten: not traced
            raise NotInPlace(f"BatchNorm {name!r} reads {type(layer).__name__} {layer.name!r}; its width is not traced")
        q = net.sources(q)[0]
    return net.layers[i].channels  # the model's input or a residual stream: unchanged


def in_place_arrays(
    net: Network,
    new: Network,
    slots: Mapping[str, Slot],
    unit_var: Callable[[float], float],
    moments: Mapping[str, tuple[Any, Any]] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """For every named layer of the model, the arrays it takes when ``net`` (the model as
    read) is replaced by ``new`` (its compressed network): ``weight``, ``bias``,
    ``running_mean``, ``running_var`` as NumPy arrays (the compressed network's own, in its
    precision, not copied again: a model's big weights are converted once, by the adapter), and
    notes for the report.

    ``slots`` describes the model's layers by name; ``unit_var(eps)`` is a variance ``v``
    with ``v + eps == 1`` exactly in the model's precision (a folded BatchNorm kept as an
    identity); ``moments[name]`` the mean and spread of compressed layer ``name``'s units'
    pre-activations (with its folded bias), for the BatchNorm folded into it.

    Raises
    ------
    NotInPlace
        When a layer is called several times, is not a layer of the model of the same kind,
        changed its hyper-parameters, or a BatchNorm's width cannot be traced.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Dense, Network, ReLU, compress_network
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(6, 3)), name="fc1"), ReLU(), Dense(rng.normal(size=(2, 6)), name="fc2")])
    >>> new, _ = compress_network(net, 0.5, progress=False)
    >>> slots = {"fc1": Slot("dense", True), "fc2": Slot("dense", True)}
    >>> arrays, notes = in_place_arrays(net, new, slots, lambda eps: 1 - eps)
    >>> {k: {f: a.shape for f, a in v.items()} for k, v in arrays.items()}
    {'fc1': {'weight': (3, 3), 'bias': (3,)}, 'fc2': {'weight': (2, 3), 'bias': (2,)}}
    """
    old_by, new_by = _by_name(net, "original"), _by_name(new, "compressed")
    for name, (_, layer) in new_by.items():
        slot = slots.get(name)
        if slot is None or slot.kind != _KIND[type(layer)] or name not in old_by:
            raise NotInPlace(f"layer {name!r} of the compressed network is no {_KIND[type(layer)]} layer of the model")
        if type(old_by[name][1]) is not type(layer) or not _same_hyper(old_by[name][1], layer):
            raise NotInPlace(f"layer {name!r} changed its kind or hyper-parameters in the compressed network")
    for name, (_, layer) in old_by.items():
        if name not in new_by and not isinstance(layer, BatchNorm):
            raise NotInPlace(f"layer {name!r} is not in the compressed network")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    notes: list[str] = []
    for name, (_, layer) in new_by.items():
        eps = old_by[name][1].eps if isinstance(layer, BatchNorm) else 0.0
        arrays[name] = _layer_arrays(layer, slots[name], eps, unit_var)
    for name, (i, layer) in old_by.items():
        if name in new_by:
            continue
        c = _channels(net, new_by, i, name)
        src = net.layers[net.sources(i)[0]] if net.sources(i)[0] >= 0 else None
        stats = None if src is None or moments is None else moments.get(src.name)
        if stats is not None and slots[name].bias and slots[name].native and len(stats[0]) == c:
            arrays[name] = _with_statistics(arrays[src.name], slots[src.name].bias, stats, layer.eps)
            continue
        identity = {"running_mean": np.zeros(c), "running_var": np.full(c, unit_var(layer.eps))}
        if slots[name].bias:
            identity.update(weight=np.ones(c), bias=np.zeros(c))
        if isinstance(src, (Dense, Conv2d)) and slots[name].bias and not slots[src.name].bias:
            identity["bias"] = arrays[src.name].pop("bias", np.zeros(c))  # the folded bias goes to the BN
        arrays[name] = identity
    for name, a in arrays.items():
        if slots[name].kind != "batchnorm" and "bias" in a and not slots[name].bias:
            if np.any(a["bias"] != 0):
                notes.append(f"layer {name!r} gets a bias (the compressed layer has one, the model's has none)")
            else:
                del a["bias"]
    return arrays, notes


def _with_statistics(
    src: dict[str, np.ndarray], has_bias: bool, stats: tuple[Any, Any], eps: float
) -> dict[str, np.ndarray]:
    """The arrays of a BatchNorm kept after compressed layer ``src`` (its arrays, edited: a
    layer without a bias slot hands its folded bias on) with its units' statistics: ``z`` the
    compressed pre-activation, ``z − b`` what the layer computes without its bias, mean
    ``μ``, spread ``σ``; ``BN(y) = √(σ² + eps) (y − m) / √(σ² + eps) + β`` is ``z`` for ``m``
    the mean of ``y`` and ``β = μ``."""
    mean, std = (np.asarray(v, dtype=np.float64) for v in stats)
    bias = np.asarray(src.get("bias", np.zeros(mean.size)), dtype=np.float64)
    if not has_bias:
        src.pop("bias", None)
    var = std**2
    return {
        "running_mean": mean if has_bias else mean - bias,
        "running_var": var,
        "weight": np.sqrt(var + eps),
        "bias": mean,
    }


def _layer_arrays(layer: Any, slot: Slot, eps: float, unit_var: Callable[[float], float]) -> dict[str, np.ndarray]:
    """The arrays of one compressed layer; ``eps``: the model's epsilon for a BatchNorm."""

    def host(a: Any) -> np.ndarray:
        return np.asarray(to_numpy(a))  # no float64 copy: the adapter converts once, to the model's dtype

    if isinstance(layer, BatchNorm):
        c = layer.channels
        out = {"running_mean": host(layer.mean), "running_var": host(layer.var)}
        weight = np.ones(c) if layer.weight is None else host(layer.weight)
        if layer.eps != eps:
            # The model's layer keeps its own epsilon (a BatchNorm the compression refitted has
            # eps 0): the scale 1 / sqrt(var + eps) moves into the weight, over an identity variance.
            denom = np.sqrt(np.asarray(out["running_var"], dtype=np.float64) + layer.eps)
            if np.any(denom != 1):
                weight = np.asarray(weight, dtype=np.float64) / denom
            out["running_var"] = np.full(c, unit_var(eps))
        bias = np.zeros(c) if layer.bias is None else host(layer.bias)
        if slot.bias:
            out.update(weight=weight, bias=bias)
        elif np.any(weight != 1) or np.any(bias != 0):
            raise NotInPlace(f"BatchNorm {layer.name!r} has no affine part in the model, its compressed form has one")
        return out
    out = {"weight": host(layer.W)}
    if layer.b is not None:
        out["bias"] = host(layer.b)
    elif slot.bias:
        out["bias"] = np.zeros(layer.units)
    return out
