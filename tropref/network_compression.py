"""``compress_network``: a whole network, a chain or a graph, compressed front to back, with a report.

A graph (residual additions, concatenations) is cut into chain segments
(:mod:`tropref.graph`); the walk below runs on each, the channels at the end of a segment
that feeds an addition, a concatenation or a branch are coupled to other paths and left
unchanged, and the network certificate is carried along every path (bounds added where
paths meet).

The walk (``docs/networks.md`` says it with pictures):

1. **Fold BatchNorm into its layer.** A BatchNorm reached from a dense or convolutional layer
   through dropout, identity or max pooling only (so before the ReLU) is a per-channel
   affine map of the pre-activations: ``W <- s W``, ``b <- s b + t``. Exact at inference.
   Through a max pooling this needs ``s >= 0`` (``max`` commutes with non-negative scales).
2. **Find the hidden layers.** A dense or convolutional layer is a hidden ReLU layer when a
   ReLU follows it before the next dense/convolutional layer, with only dropout, identity
   and max pooling in between (``relu`` commutes with ``max``). Its units are its output
   channels. The last such layer (the classifier) has no ReLU and is never compressed.
3. **Compress front to back.** For hidden layer ``l`` with next layer ``l + 1``, the ops
   between its ReLU and layer ``l + 1`` (max/avg pooling, flatten of either order, dropout,
   a BatchNorm after the ReLU) are carried through: the next layer's weights are read per
   unit as ``compress_layer`` expects (``(m, n)``, ``(m, n, kh, kw)``, or the ``(m, n, s)``
   column blocks after a flatten), a BatchNorm after the ReLU is folded into the next
   layer, and :func:`tropref.compress_layer` rewrites the next layer's inputs. Layer
   ``l + 1`` is then compressed in turn, from its rewritten weights.
4. **Certify.** Every layer certificate bounds the change of the next layer's
   pre-activations by ``β_i ‖(patch, 1)‖``. The network certificate composes them
   (``docs/theory.md``, "Whole networks"): see :func:`network_certificate`.

Exactness rules kept by the walk:

- constants (units with zero weights) are folded into the next bias only where that is
  exact: not into a zero-padded convolution and not through a zero-padded average pooling
  that counts the padding (``fold_constants=False`` there);
- a BatchNorm after the ReLU folds exactly into a dense or unpadded convolution. Before a
  zero-padded convolution its shift ``t`` is not a bias (the padding is not shifted): it is
  kept as a BatchNorm of scale 1 on the kept channels, with shifts ``t̃`` fitted by least
  squares to the next layer's kernels; the fit's residual ``R`` goes into the next bias
  (exact away from the borders) and ``Σ |R|``, an input-independent bound of the border
  error, is added to the layer certificate. With nothing merged, the BatchNorm is kept as is.
- max pooling commutes with a fold only when every unit folds into one kept unit with a
  non-negative scale; for methods that fold otherwise, the layer certificate is dropped
  (None) when a max pooling sits between the layers;
- a channel whose BatchNorm after the ReLU has a negative scale and is followed by a max
  pooling (``max(s a + t) = s min(a) + t``) is *pinned*: kept intact, after the kept
  channels, with its BatchNorm; the other channels are compressed.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from ._array import Array, asarray_like, device, make_rng, namespace, resolve_seed, take_rows, to_numpy
from .budget import Budget, allocate_budget, predict_cost
from .compress import compress_layer
from .graph import Segment, carry_bound, coupling, drop_layers, segment_network, segments, splice
from .network import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Identity,
    MaxPool2d,
    Network,
    ReLU,
    Softmax,
    apply_layer,
    apply_node,
    conv_patches,
    count_macs,
    count_params,
    interval_bounds,
    layer_macs,
    layer_params,
    layer_shapes,
    map_arrays,
    max_patch_norm,
    network_namespace,
    node_bounds,
    node_outputs,
    output_shapes,
)

__all__ = [
    "compress_network",
    "compressible_layers",
    "LayerReport",
    "NetworkReport",
    "hidden_layers",
    "network_certificate",
]

_PASSIVE = (Dropout, Identity)


@dataclass(frozen=True)
class _Folded(Identity):
    """Placeholder for a BatchNorm folded into the next layer during the walk (removed at the end)."""


# --------------------------------------------------------------------------- reports


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
        if self.certificate is not None:
            rows.append(
                f"network certificate max|Δf| <= {self.certificate:.4g} on {self.input_domain} (composed per "
                "layer; loose for deep nets)"
            )
        if self.measured_error is not None:
            rows.append(f"measured max|Δf| = {self.measured_error:.4g} on the inputs given")
        rows.append(f"method {self.method}, seed {self.seed}, keep {self.keep}, {self.time_s:.2f} s")
        if self.steps:
            rows.append("time s: " + ", ".join(f"{k} {v:.2f}" for k, v in self.steps.items()))
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


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class _Hidden:
    """A hidden ReLU layer ``i`` of the working network and what lies up to the next one."""

    i: int
    j: int  # the next dense/conv layer
    path: tuple[int, ...]  # layers strictly between i and j
    bn: int | None  # a BatchNorm after the ReLU, if any
    flatten: int | None
    maxpool: bool
    padded_avg: bool  # a zero-padded average pooling counting the padding, after the ReLU
    max_after_bn: bool = False  # a max pooling after the BatchNorm: negative scales pin channels


def _linear_indices(net: Network) -> list[int]:
    return [i for i, l in enumerate(net.layers) if isinstance(l, (Dense, Conv2d))]


def _analyse(net: Network, i: int, j: int) -> _Hidden | str:
    """The hidden-layer structure between linear layers ``i`` and ``j``, or why there is none."""
    seen_relu = False
    bn = flatten = None
    maxpool = padded_avg = max_after_bn = False
    path = tuple(range(i + 1, j))
    for p in path:
        layer = net.layers[p]
        if isinstance(layer, _PASSIVE):
            continue
        if isinstance(layer, ReLU):
            if bn is not None:
                return f"a ReLU follows the BatchNorm {net.label(bn)}"
            seen_relu = True
        elif isinstance(layer, MaxPool2d) and not isinstance(layer, AvgPool2d):
            maxpool = True
            max_after_bn = max_after_bn or bn is not None
        elif isinstance(layer, AvgPool2d):
            if not seen_relu:
                return f"average pooling {net.label(p)} before the ReLU"
            padded_avg = padded_avg or (layer.padded and layer.count_include_pad)
        elif isinstance(layer, Flatten):
            if not seen_relu:
                return f"Flatten {net.label(p)} before the ReLU"
            flatten = p
        elif isinstance(layer, BatchNorm):
            if not seen_relu:
                return f"BatchNorm {net.label(p)} before the ReLU could not be folded into the layer"
            if bn is not None:
                return f"two BatchNorms after the ReLU ({net.label(bn)}, {net.label(p)})"
            bn = p
        else:
            return f"{net.label(p)} between it and the next layer"
    if not seen_relu:
        return "no ReLU after it"
    if isinstance(net.layers[i], Conv2d) and isinstance(net.layers[j], Dense) and flatten is None:
        return f"no Flatten between the convolution and {net.label(j)}"
    if bn is not None and padded_avg:
        # the shift would have to pass a padded average: not a per-channel constant any more
        return f"the BatchNorm {net.label(bn)} is followed by a zero-padded average pooling counting the padding"
    return _Hidden(i, j, path, bn, flatten, maxpool, padded_avg, max_after_bn)


def hidden_layers(net: Network) -> dict[int, _Hidden | str]:
    """For every dense/conv layer but the last: its hidden-layer structure or why it has none."""
    lin = _linear_indices(net)
    return {i: _analyse(net, i, j) for i, j in itertools.pairwise(lin)}


def compressible_layers(net: Network) -> list[int]:
    """The dense and convolutional layers whose units :func:`compress_network` can merge
    (indices in ``net``): the hidden ReLU layers of a chain, or of every chain segment of a
    graph (channels feeding an addition, a concatenation or a branch are not among them)."""
    parts = (
        [(net, list(range(len(net.layers))))]
        if net.is_chain
        else [(segment_network(net, seg, None), list(seg.nodes)) for seg in segments(net)]
    )
    out = []
    for chain, nodes in parts:
        work, origin = _fold_pre_relu_bn(chain)
        out += [nodes[origin[i]] for i, h in hidden_layers(work).items() if isinstance(h, _Hidden)]
    return sorted(out)


# --------------------------------------------------------------------------- BatchNorm folding


def _fold_pre_relu_bn(net: Network) -> tuple[Network, list[int]]:
    """Fold every BatchNorm that acts on a dense/conv layer's pre-activations into it.

    Returns the new network and, for each of its layers, the index in ``net``.
    """
    layers = list(net.layers)
    origin = list(range(len(layers)))
    out: list = []
    out_origin: list[int] = []
    last_linear: int | None = None  # index in `out` of the layer BN can fold into
    through_max = False
    for idx, layer in zip(origin, layers, strict=False):
        if isinstance(layer, (Dense, Conv2d)):
            last_linear, through_max = len(out), False
        elif isinstance(layer, BatchNorm) and last_linear is not None:
            lin = out[last_linear]
            scale, shift = layer.scale, layer.shift
            ok = layer.channels == lin.units and (not through_max or bool(np.all(to_numpy(scale) >= 0)))
            if ok:
                out[last_linear] = _scale_units(lin, scale, shift)
                continue
            last_linear = None
        elif isinstance(layer, MaxPool2d) and not isinstance(layer, AvgPool2d):
            through_max = True
        elif not isinstance(layer, _PASSIVE):
            last_linear = None
        out.append(layer)
        out_origin.append(idx)
    return net.replace_layers(out), out_origin


def _scale_units(layer: Dense | Conv2d, scale: Array, shift: Array) -> Dense | Conv2d:
    xp = namespace(W=layer.W)
    shape = (-1,) + (1,) * (layer.W.ndim - 1)
    b = shift if layer.b is None else layer.b * scale + shift
    return replace(layer, W=layer.W * xp.reshape(scale, shape), b=b)


# --------------------------------------------------------------------------- the next layer's view


def _next_view(net: Network, h: _Hidden, n: int) -> tuple[Array, Callable[[Array], Array]]:
    """The next layer's weights with the units of layer ``h.i`` on axis 1, and the map back."""
    xp = network_namespace(net)
    nxt = net.layers[h.j]
    W = nxt.W
    if isinstance(nxt, Conv2d) or h.flatten is None:
        return W, lambda V: V
    m, d = int(W.shape[0]), int(W.shape[1])
    if d % n:
        raise ValueError(f"{net.label(h.j)} has {d} inputs, not a multiple of the {n} channels of {net.label(h.i)}")
    s = d // n
    if net.layers[h.flatten].order == "channels_first":
        return xp.reshape(W, (m, n, s)), lambda V: xp.reshape(V, (m, -1))
    view = xp.permute_dims(xp.reshape(W, (m, s, n)), (0, 2, 1))
    return view, lambda V: xp.reshape(xp.permute_dims(V, (0, 2, 1)), (m, -1))


def _per_unit(xp: Any, v: Array, W_view: Array, flatten_order: str | None, after_flatten: bool) -> Array:
    """A per-channel (or, after a flatten, per-feature) vector laid out like ``W_view[0]``."""
    n = int(W_view.shape[1])
    extra = tuple(int(s) for s in W_view.shape[2:])
    if after_flatten and W_view.ndim == 3:
        s = extra[0]
        if flatten_order == "channels_first":
            return xp.reshape(v, (n, s))
        return xp.permute_dims(xp.reshape(v, (s, n)), (1, 0))
    return xp.reshape(v, (n,) + (1,) * len(extra))


# --------------------------------------------------------------------------- the walk


def _k_rule(keep: Any, net: Network, work: Network, origin: list[int], targets: list[int]) -> dict[int, int]:
    """Units to keep per compressible layer (work indices) from a fraction or a mapping."""
    widths = {i: work.layers[i].units for i in targets}
    if isinstance(keep, Mapping):
        by_name = {getattr(net.layers[o], "name", None): o for o in range(len(net.layers))}
        to_work = {o: w for w, o in enumerate(origin)}
        ks = dict(widths)
        for key, value in keep.items():
            o = by_name.get(key) if isinstance(key, str) else key
            if (
                isinstance(o, bool)
                or not isinstance(o, (int, np.integer))
                or o not in to_work
                or not 0 <= o < len(net.layers)
            ):
                raise ValueError(f"`keep` names layer {key!r}, which is not a layer of the network")
            w = to_work[int(o)]
            if w not in widths:
                raise ValueError(f"`keep` names {net.label(int(o))}, which is not a compressible hidden layer")
            ks[w] = _k_of(value, widths[w], f"keep[{key!r}]")
        return ks
    q = _fraction(keep, "keep")
    return {i: max(1, min(n, math.floor(q * n + 0.5))) for i, n in widths.items()}


def _fraction(q: Any, what: str) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"`{what}` must be a fraction in (0, 1], a mapping layer -> k, or a tropref.Budget; got {type(q).__name__}"
        )
    q = float(q)
    if not 0 < q <= 1:
        raise ValueError(f"`{what}` must be a fraction in (0, 1], got {q}")
    return q


def _k_of(value: Any, n: int, what: str) -> int:
    if isinstance(value, (float, np.floating)):
        return max(1, min(n, math.floor(_fraction(value, what) * n + 0.5)))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= n:
        raise ValueError(f"`{what}` must be an integer 1 <= k <= {n} (or a fraction), got {value!r}")
    return int(value)


def _layer_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint32)[0])


def _sample_patches(layer: Dense | Conv2d, x: Array, rng: np.random.Generator, max_patches: int) -> Array:
    """The layer's inputs for data-driven methods: ``x`` itself for a dense layer, at most
    ``max_patches`` random input patches (drawn on the host) for a convolution."""
    if isinstance(layer, Dense):
        return x
    t, b, l, r = layer.padding
    kh, kw = int(layer.W.shape[2]), int(layer.W.shape[3])
    Ho = (int(x.shape[2]) + t + b - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    Wo = (int(x.shape[3]) + l + r - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    total = int(x.shape[0]) * Ho * Wo
    index = None if total <= max_patches else np.sort(rng.choice(total, size=max_patches, replace=False))
    return conv_patches(layer, x, index)


def _single_nonneg(fold: Array) -> bool:
    f = to_numpy(fold)
    return bool(np.all(f >= 0) and np.all(np.count_nonzero(f, axis=1) <= 1))


def _pinned(net: Network, h: _Hidden) -> np.ndarray:
    """Channels that must stay as they are: a negative BatchNorm scale before a max pooling.

    ``max(s a + t) = s min(a) + t`` for ``s < 0``: such a channel cannot be merged with
    others (nor its scale moved across the pooling), so it is kept intact.
    """
    n = net.layers[h.i].units
    if h.bn is None or not h.max_after_bn:
        return np.zeros(n, dtype=bool)
    return to_numpy(net.layers[h.bn].scale) < 0


def _certificate_step(
    say: Callable[[str], None],
    certify: bool,
    inputs: Array | None,
    input_radius: float | None,
    n_layers: int,
    compute: Callable[[], tuple[Any, dict, str]],
) -> tuple[Any, dict, str]:
    """The network certificate when it is asked for and an input domain is known, else why not."""
    if certify and (inputs is not None or input_radius is not None):
        say(f"[tropref] network certificate: interval bounds through {n_layers} layers (certify=False skips it)")
        return compute()
    why = "not certified (certify=False)" if certify is False else "no input domain (pass `inputs` or `input_radius`)"
    return None, {}, why


FIRST_CONV_INPUT_RATIO = 1.0
"""TropNNC's ``input_ratio`` for a first convolution, which reads patches of the raw images."""


def _layer_options(net: Network, i: int, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method options for layer ``i``: TropNNC (not its paper-literal variant) clusters a
    first convolution in the metric of natural image patches (``input_ratio``,
    ``docs/theory.md``) unless the options say otherwise."""
    first = next(j for j, l in enumerate(net.layers) if isinstance(l, (Dense, Conv2d)))
    refined = method == "tropnnc" and options.get("variant", "refined") != "paper"
    if refined and i == first and isinstance(net.layers[i], Conv2d) and "input_ratio" not in options:
        return {**options, "input_ratio": FIRST_CONV_INPUT_RATIO}
    return options


def _compress_one(
    work: Network,
    new: list,
    h: _Hidden,
    k: int,
    *,
    method: str,
    seed: int,
    data: Array | None,
    max_patches: int,
    options: dict[str, Any],
) -> tuple[float | None, np.ndarray | None, dict[str, Any], int]:
    """Compress hidden layer ``h.i`` of ``new`` (list of layers, edited in place) to ``k``.

    Returns the layer certificate (largest entry), the per-output certificate, info, and the
    width after.
    """
    xp = network_namespace(work)
    layer, nxt = new[h.i], new[h.j]
    n = layer.units
    net_now = work.replace_layers(new)
    W_view, back = _next_view(net_now, h, n)
    b_next = nxt.b
    bn = new[h.bn] if h.bn is not None else None
    pinned = _pinned(net_now, h)
    free, fixed = np.flatnonzero(~pinned), np.flatnonzero(pinned)
    info: dict[str, Any] = {"pinned_channels": int(fixed.size)} if fixed.size else {}
    if free.size <= 1 or k - fixed.size >= free.size:
        m = int(W_view.shape[0])
        return 0.0, np.zeros(m), {**info, "note": "no channel can be merged"}, n
    padded_next = isinstance(nxt, Conv2d) and nxt.padded
    V = take_rows(xp, W_view, free, axis=1)  # how the next layer reads the free channels
    shift_contrib = None
    if bn is not None:
        order = _order(new, h)
        after_flatten = h.flatten is not None and h.flatten < h.bn
        scale = take_rows(xp, _per_unit(xp, bn.scale, W_view, order, after_flatten), free)
        shift = take_rows(xp, _per_unit(xp, bn.shift, W_view, order, after_flatten), free)
        shift_contrib = V * shift[None, ...]  # (m, n_free, ...): what the shifts feed the next layer
        V = V * scale[None, ...]  # the scale moves into the next layer (s >= 0 across a max pool)
        if not padded_next:  # the next layer reads s a + t and t becomes bias: exact
            total = xp.sum(xp.reshape(shift_contrib, (shift_contrib.shape[0], -1)), axis=1)
            b_next = total if b_next is None else b_next + total
            shift_contrib = None
    fold_constants = not (padded_next or h.padded_avg)
    patches = None if data is None else _sample_patches(layer, data, make_rng(seed), max_patches)
    res = compress_layer(
        take_rows(xp, layer.W, free),
        None if layer.b is None else take_rows(xp, layer.b, free),
        max(1, k - int(fixed.size)),
        W_next=V,
        b_next=b_next,
        method=method,
        seed=seed,
        data=patches,
        fold_constants=fold_constants,
        **options,
    )
    info.update(res.info)
    cert = None if res.certificate is None else to_numpy(res.certificate).astype(np.float64)
    if (
        h.maxpool and cert is not None and (res.scale is None or not _single_nonneg(res.scale[:, None]))
    ):  # no (n, k) fold formed
        cert = None
        info["certificate_dropped"] = "the fold does not commute with max pooling"

    b_next_new, t_kept = res.b_next, None
    if shift_contrib is not None:
        b_next_new, t_kept, border = _refit_shift(xp, res, shift_contrib, b_next_new)
        info["bn_border_bound"] = float(np.max(border)) if border.size else 0.0
        if cert is not None:
            cert = cert + border

    W_layer, b_layer, W_next_new = res.W, res.b, res.W_next
    if fixed.size:  # pinned channels follow the kept ones, untouched (their BatchNorm stays)
        W_layer = xp.concat([W_layer, take_rows(xp, layer.W, fixed)], axis=0)
        b_layer = None if layer.b is None else xp.concat([b_layer, take_rows(xp, layer.b, fixed)], axis=0)
        W_next_new = xp.concat([W_next_new, take_rows(xp, W_view, fixed, axis=1)], axis=1)
    if bn is not None:
        if padded_next or fixed.size:
            new[h.bn] = _kept_batchnorm(xp, bn, res.k, t_kept, fixed, like=res.W)
        else:
            new[h.bn] = _Folded(name=bn.name)  # folded into the next layer; removed at the end
    new[h.i] = replace(layer, W=W_layer, b=b_layer)
    new[h.j] = replace(nxt, W=back(W_next_new), b=b_next_new)
    cmax = None if cert is None else (float(np.max(cert)) if cert.size else 0.0)
    return cmax, cert, info, int(W_layer.shape[0])


def _kept_batchnorm(
    xp: Any, bn: BatchNorm, k: int, shifts: np.ndarray | None, fixed: np.ndarray, like: Array
) -> BatchNorm:
    """The BatchNorm after the compression: scale 1 and shifts ``t̃`` on the ``k`` kept
    channels (their scales moved into the next layer), the original one on pinned channels."""
    kw = dict(dtype=like.dtype, device=device(like))
    t = xp.zeros((k,), **kw) if shifts is None else asarray_like(shifts, xp, like)
    if not fixed.size:  # eps = 0 makes the scale exactly 1
        return BatchNorm(xp.zeros((k,), **kw), xp.ones((k,), **kw), xp.ones((k,), **kw), t, eps=0.0, name=bn.name)
    one = math.sqrt(1.0 + bn.eps)  # weight / sqrt(1 + eps) = 1 with the BatchNorm's own eps
    ref = bn.mean
    weight = bn.weight if bn.weight is not None else xp.ones_like(ref)
    bias = bn.bias if bn.bias is not None else xp.zeros_like(ref)
    return BatchNorm(
        mean=xp.concat([xp.zeros((k,), **kw), take_rows(xp, bn.mean, fixed)]),
        var=xp.concat([xp.ones((k,), **kw), take_rows(xp, bn.var, fixed)]),
        weight=xp.concat([xp.full((k,), one, **kw), take_rows(xp, weight, fixed)]),
        bias=xp.concat([t, take_rows(xp, bias, fixed)]),
        eps=bn.eps,
        name=bn.name,
    )


def _min_width(net: Network, h: _Hidden) -> int:
    """The fewest units layer ``h.i`` can be compressed to (pinned channels plus one)."""
    pinned = _pinned(net, h)
    free = int(np.count_nonzero(~pinned))
    return net.layers[h.i].units if free <= 1 else int(np.count_nonzero(pinned)) + 1


def _keeps_bn(net: Network, h: _Hidden) -> bool:
    nxt = net.layers[h.j]
    return h.bn is not None and isinstance(nxt, Conv2d) and nxt.padded


def _amplifications(work: Network, hidden: Mapping[int, _Hidden]) -> dict[int, float]:
    """Largest output change per unit change of the next layer's pre-activations."""
    try:
        shapes = layer_shapes(work)
    except ValueError:
        return {}
    host = map_arrays(work, lambda a: to_numpy(a).astype(np.float64))
    return {
        i: float(np.max(_carry_bound(host, h.j, np.ones(work.layers[h.j].units), shapes))) for i, h in hidden.items()
    }


def _order(layers: list, h: _Hidden) -> str | None:
    return None if h.flatten is None else layers[h.flatten].order


def _refit_shift(xp: Any, res: Any, shift_contrib: Array, b_next: Array) -> tuple[Array, np.ndarray, np.ndarray]:
    """Kept channels' BatchNorm shifts ``t̃`` before a zero-padded convolution.

    The next convolution read the constant maps ``t_j`` of the original channels through
    kernels ``W[:, j]``; it now reads ``t̃_c`` through the rewritten kernels ``W̃[:, c]``.
    ``t̃`` minimises ``‖Σ_j W[:, j] t_j − Σ_c W̃[:, c] t̃_c‖`` (least squares, on the host);
    the residual kernel ``R`` adds ``Σ R`` to the bias (exact in the interior) and at most
    ``Σ |R|`` at the borders. Returns the new bias, ``t̃`` and that per-output border bound.
    """
    target = to_numpy(xp.sum(shift_contrib, axis=1)).astype(np.float64)  # (m, kh, kw)
    Wn = to_numpy(res.W_next).astype(np.float64)  # (m, k', kh, kw)
    m, kp = Wn.shape[:2]
    A = np.moveaxis(Wn, 1, -1).reshape(-1, kp)
    t_new, *_ = np.linalg.lstsq(A, target.reshape(-1), rcond=None)
    R = (target.reshape(-1) - A @ t_new).reshape(m, -1)
    b_new = b_next + asarray_like(R.sum(axis=1), xp, res.W)
    return b_new, t_new, np.abs(R).sum(axis=1)


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
          see :func:`tropref.budget.allocate_budget`. The budget is met.
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
    steps: dict[str, float] = {}
    if not isinstance(net, Network):
        raise TypeError(f"`net` must be a tropref.network.Network, got {type(net).__name__}")
    seed = resolve_seed(seed)
    say = _progress(progress, t0)
    xp = network_namespace(net)
    if inputs is None:
        inputs = data
    if not net.is_chain:
        return _compress_graph(
            net,
            keep,
            method=method,
            seed=seed,
            skip=skip,
            data=data,
            inputs=inputs,
            input_radius=input_radius,
            max_patches=max_patches,
            say=say,
            options=options,
            t0=t0,
            certify=certify,
        )
    data = _in_weights_dtype(xp, net, data)

    work, origin = _fold_pre_relu_bn(net)
    steps["fold_batchnorm"] = time.perf_counter() - t0
    structure = hidden_layers(work)
    skipped = _resolve_layers(net, skip, "skip")
    compressible = [i for i, h in structure.items() if isinstance(h, _Hidden) and origin[i] not in skipped]

    if isinstance(keep, Budget):
        ks = allocate_budget(
            work,
            keep,
            {i: structure[i] for i in compressible},
            reference=net,
            probe=lambda i, k: _probe(
                work,
                structure[i],
                k,
                method,
                _layer_seed(seed, origin[i]),
                _layer_options(work, i, method, options),
                data,
                max_patches,
            ),
            folded_bn={
                structure[i].bn
                for i in compressible
                if structure[i].bn is not None
                and not _keeps_bn(work, structure[i])
                and not _pinned(work, structure[i]).any()
            },
            min_width={i: _min_width(work, structure[i]) for i in compressible},
            amplification=_amplifications(work, {i: structure[i] for i in compressible}),
        )
    else:
        ks = _k_rule(keep, net, work, origin, compressible)

    new = list(work.layers)
    layer_info: dict[int, dict[str, Any]] = {}
    cur_x, pos = data, 0  # data propagated through the compressed prefix: input of layer `pos`
    todo = [i for i in compressible if ks.get(i, work.layers[i].units) < work.layers[i].units]
    cost = {i: _layer_cost(work, structure[i]) for i in todo}
    t_layers = time.perf_counter()
    for count, i in enumerate(todo, 1):
        h = structure[i]
        if cur_x is not None:
            cur_x = _advance(new, cur_x, pos, i)
            pos = i
        t1 = time.perf_counter()
        cmax, cvec, info, width = _compress_one(
            work,
            new,
            h,
            ks[i],
            method=method,
            seed=_layer_seed(seed, origin[i]),
            data=cur_x,
            max_patches=max_patches,
            options=_layer_options(work, i, method, options),
        )
        layer_info[i] = dict(certificate=cmax, certificate_vector=cvec, info=info, time=time.perf_counter() - t1)
        done, left = sum(cost[t] for t in todo[:count]), sum(cost[t] for t in todo[count:])
        eta = (time.perf_counter() - t_layers) * left / max(done, 1) if left else None
        _say_layer(say, count, len(todo), work.label(i), work.layers[i].units, width, cmax, layer_info[i]["time"], eta)
    _layer_steps(steps, layer_info, time.perf_counter() - t_layers)

    result = work.replace_layers(new)
    t1 = time.perf_counter()
    per_output, bounds, domain = _certificate_step(
        say,
        certify,
        inputs,
        input_radius,
        len(work.layers),
        lambda: network_certificate(
            work,
            result,
            {i: v["certificate_vector"] for i, v in layer_info.items()},
            structure,
            inputs=inputs,
            input_radius=input_radius,
        ),
    )
    steps["network_certificate"] = time.perf_counter() - t1
    reports = _layer_reports(net, work, result, origin, structure, compressible, skipped, layer_info, bounds, ks)
    final = result.replace_layers([l for l in result.layers if not isinstance(l, _Folded)])
    report = _network_report(
        net,
        result,
        reports,
        inputs,
        method=method,
        seed=seed,
        keep=keep,
        per_output=per_output,
        domain=domain,
        t0=t0,
        steps=steps,
    )
    return final, report


def _advance(layers: list, x: Array, start: int, stop: int) -> Array:
    xp = namespace(x=x)
    for p in range(start, stop):
        x = apply_layer(layers[p], x, xp)
    return x


def _in_weights_dtype(xp: Any, net: Network, data: Array | None) -> Array | None:
    """``data`` in the dtype of the network's weights: compress_layer wants one floating dtype."""
    weights = next((l.W for l in net.layers if isinstance(l, (Dense, Conv2d))), None)
    if data is not None and weights is not None and data.dtype != weights.dtype:
        return xp.astype(data, weights.dtype)
    return data


def _say_layer(
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


def _layer_steps(steps: dict[str, float], layer_info: Mapping[int, Mapping[str, Any]], seconds: float) -> None:
    """The layers' time, and its method / rewrite / certificate parts summed from compress_layer."""
    steps["layers"] = seconds
    for part, key in (("method", "method"), ("rewrite", "rewrite"), ("certificate", "layer_certificates")):
        steps[key] = sum(v["info"].get("time_s", {}).get(part, 0.0) for v in layer_info.values())


def _network_report(
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
) -> NetworkReport:
    """The report of a walk: counts of ``compressed`` and, with ``inputs``, its measured error."""
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
        macs_before=count_macs(net),
        macs_after=count_macs(compressed),
        certificate=None if per_output is None else float(np.max(per_output)),
        certificate_per_output=per_output,
        measured_error=measured,
        input_domain=domain,
        time_s=time.perf_counter() - t0,
        steps=steps,
    )


def _progress(progress: bool | Callable[[str], None] | None, t0: float, after: float = 2.0) -> Callable[[str], None]:
    """The line sink: a callable, stderr, nothing, or (None) stderr once ``after`` seconds have passed."""
    if callable(progress):
        return progress
    if progress is None:
        return lambda line: print(line, file=sys.stderr, flush=True) if time.perf_counter() - t0 > after else None
    if progress:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: None


def _layer_cost(net: Network, h: _Hidden) -> int:
    """Weights a layer's compression reads (its own and the next layer's): the progress estimate's unit."""
    return sum(int(np.prod(net.layers[p].W.shape)) for p in (h.i, h.j))


def _resolve_layers(net: Network, keys: Sequence[int | str], what: str) -> set[int]:
    if isinstance(keys, (str, int)):
        keys = [keys]
    names = {getattr(l, "name", None): i for i, l in enumerate(net.layers)}
    out = set()
    for key in keys:
        if isinstance(key, str):
            if key not in names:
                raise ValueError(f"`{what}` names layer {key!r}, which is not in the network")
            out.add(names[key])
        elif (
            isinstance(key, (int, np.integer))
            and not isinstance(key, bool)
            and -len(net.layers) <= key < len(net.layers)
        ):
            out.add(int(key) % len(net.layers))
        else:
            raise ValueError(f"`{what}` holds {key!r}, not a layer index or name of the network")
    return out


def _probe(
    work: Network,
    h: _Hidden,
    k: int,
    method: str,
    seed: int,
    options: dict[str, Any],
    data: Array | None,
    max_patches: int,
) -> np.ndarray | None:
    """The certificate of layer ``h.i`` compressed alone to ``k`` units (for budgets)."""
    new = list(work.layers)
    x = None if data is None else _advance(new, data, 0, h.i)
    _, cvec, _, _ = _compress_one(
        work, new, h, k, method=method, seed=seed, data=x, max_patches=max_patches, options=options
    )
    return cvec


# --------------------------------------------------------------------------- certificate


def _input_box(
    net: Network, inputs: Array | None, input_radius: float | None
) -> tuple[np.ndarray, np.ndarray, str] | None:
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
    structure: Mapping[int, Any],
    *,
    inputs: Array | None = None,
    input_radius: float | None = None,
) -> tuple[np.ndarray | None, dict[int, float], str]:
    """Compose per-layer certificates into a bound on the change of the network's outputs.

    Telescoping over the layers compressed, ``f̃ − f = Σ_l (g_l − g_{l−1})`` where ``g_l``
    has layers ``≤ l`` compressed and the rest original. ``g_l`` and ``g_{l−1}`` differ
    only in the next layer's pre-activations, by at most ``β_l ρ_l`` per channel, where
    ``ρ_l`` is the largest ``‖(patch, 1)‖`` of layer ``l``'s input in the *compressed*
    prefix over the input domain (from interval bounds). That change is carried to the
    outputs through the *original* remaining layers with per-channel bounds: ReLU, pooling
    and dropout keep them, BatchNorm multiplies by ``|scale|``, a dense layer by ``|W|``,
    a convolution by ``Σ_{kh,kw} |W|``, a final softmax by ``1/2`` (of the largest bound).
    The sum is capped by the span of the two networks' interval output boxes. Loose for deep
    networks (each ``|W|`` is an
    operator-norm-like worst case); the report shows the measured error beside it.

    Returns the per-output bound (None when it is not available), each layer's share (its
    largest entry) and a description of the input domain.
    """
    box = _input_box(work, inputs, input_radius)
    if box is None:  # before the float64 copy of the network: no domain costs nothing
        return None, {}, "no input domain (pass `inputs` or `input_radius`)"
    host = map_arrays(work, lambda a: to_numpy(a).astype(np.float64))
    lo, hi, domain = box
    if not layer_certificates:
        out_shape = layer_shapes(host, lo.shape)[-1]
        return np.zeros(int(np.prod(out_shape))), {}, domain
    if any(v is None for v in layer_certificates.values()):
        return None, {}, domain
    comp = map_arrays(compressed, lambda a: to_numpy(a).astype(np.float64))
    boxes = interval_bounds(comp, lo, hi)
    shapes = layer_shapes(host, lo.shape)
    total = None
    shares = {}
    for i, beta in sorted(layer_certificates.items()):
        b_lo, b_hi = boxes[i]
        rho = max_patch_norm(comp.layers[i], np.maximum(np.abs(b_lo), np.abs(b_hi)))
        if input_radius is not None and all(isinstance(l, (Dropout, Identity)) for l in comp.layers[:i]):
            rho = min(rho, math.sqrt(float(input_radius) ** 2 + 1.0))
        e = _carry_bound(host, structure[i].j, beta * rho, shapes)
        shares[i] = float(np.max(e))
        total = e if total is None else total + e
    # Both networks' outputs lie in their interval boxes: the difference never exceeds the
    # span of the two (which is what makes a final softmax's bound at most 1).
    (lo_f, hi_f), (lo_c, hi_c) = interval_bounds(host, lo, hi)[-1], boxes[-1]
    span = (np.maximum(hi_f, hi_c) - np.minimum(lo_f, lo_c)).reshape(-1)
    return np.minimum(total, span), shares, domain


def _carry_bound(net: Network, j: int, e: np.ndarray, shapes: list) -> np.ndarray:
    """Bound on the outputs' change from a per-channel bound ``e`` on layer ``j``'s output."""
    for p in range(j + 1, len(net.layers)):
        layer = net.layers[p]
        if isinstance(layer, Dense):
            e = np.abs(layer.W) @ e
        elif isinstance(layer, Conv2d):
            e = np.abs(layer.W).sum(axis=(2, 3)) @ e
        elif isinstance(layer, BatchNorm):
            e = np.abs(layer.scale) * e
        elif isinstance(layer, Softmax):  # |Δp_i| <= 2 p_i (1 - p_i) max_j |Δz_j|, and p_i is in [0, 1]
            e = np.full_like(e, min(np.max(e) / 2, 1.0))
        elif isinstance(layer, Flatten) and len(shapes[p]) == 3:
            s = int(shapes[p][1] * shapes[p][2])
            e = np.repeat(e, s) if layer.order == "channels_first" else np.tile(e, s)
    if len(shapes[-1]) == 3:  # a convolutional output: every position has the channel's bound
        e = np.repeat(e, int(shapes[-1][1] * shapes[-1][2]))
    return e


def _layer_reports(
    net, work, result, origin, structure, compressible, skipped, layer_info, bounds, ks
) -> list[LayerReport]:
    try:
        shapes_w = layer_shapes(work)
        shapes_r = layer_shapes(result)
    except ValueError:
        shapes_w = shapes_r = [None] * (len(work.layers) + 1)
    lin = _linear_indices(work)
    out = []
    for i in lin:
        before, after = work.layers[i], result.layers[i]
        orig = net.layers[origin[i]]
        h = structure.get(i, "classifier")
        if i in layer_info:
            status = "compressed"
        elif i == lin[-1]:
            status = "classifier"
        elif origin[i] in skipped:
            status = "skipped"
        elif isinstance(h, str):
            status = f"not a ReLU layer: {h}"
        else:
            status = "kept"
        li = layer_info.get(i, {})
        out.append(
            LayerReport(
                index=origin[i],
                name=getattr(orig, "name", None) or f"{origin[i]}:{type(orig).__name__}",
                kind=type(before).__name__,
                status=status,
                width_before=before.units,
                width_after=after.units,
                params_before=layer_params(orig),
                params_after=layer_params(after),
                macs_before=layer_macs(before, shapes_w[i + 1]),
                macs_after=layer_macs(after, shapes_r[i + 1]),
                certificate=li.get("certificate"),
                bound=bounds.get(i),
                time_s=li.get("time", 0.0),
                info=li.get("info", {}),
            )
        )
    return out


# --------------------------------------------------------------------------- graphs


@dataclass
class _SegmentWork:
    """One chain segment of a graph during the walk: its network with BatchNorms folded
    (``work``), where each of its layers came from in the graph (``origin``), its hidden
    layers and the indices of its layers in the work graph (``at``)."""

    seg: Segment
    work: Network
    origin: list[int]
    structure: dict[int, Any]
    at: list[int] = field(default_factory=list)
    coupled: str | None = None


def _graph_input_shape(net: Network, data: Array | None, inputs: Array | None) -> tuple[int, ...] | None:
    if net.input_shape is not None:
        return net.input_shape
    x = inputs if inputs is not None else data
    return None if x is None else tuple(int(s) for s in x.shape[1:])


def _compress_graph(
    net: Network,
    keep: Any,
    *,
    method: str,
    seed: int,
    skip: Sequence[int | str],
    data: Array | None,
    inputs: Array | None,
    input_radius: float | None,
    max_patches: int,
    say: Callable[[str], None],
    options: dict[str, Any],
    t0: float,
    certify: bool = True,
) -> tuple[Network, NetworkReport]:
    """:func:`compress_network` on a graph: the chain walk on every segment (see
    :mod:`tropref.graph`), the keep rule over all their hidden layers, and the network
    certificate carried through every path (bounds added where paths meet)."""
    xp = network_namespace(net)
    in_shape = _graph_input_shape(net, data, inputs)
    if in_shape is not None and net.input_shape is None:
        net = Network(net.layers, in_shape, net.inputs)
    data = _in_weights_dtype(xp, net, data)
    try:
        shapes = output_shapes(net) if in_shape is not None else None
    except ValueError as exc:
        raise ValueError(f"the network does not accept inputs of shape {in_shape}: {exc}") from None
    steps: dict[str, float] = {}
    segs = segments(net)
    parts: list[_SegmentWork] = []
    for seg in segs:
        src_shape = None if shapes is None else (in_shape if seg.source < 0 else shapes[seg.source])
        work, local_origin = _fold_pre_relu_bn(segment_network(net, seg, src_shape))
        parts.append(
            _SegmentWork(
                seg, work, [seg.nodes[o] for o in local_origin], hidden_layers(work), coupled=coupling(net, seg)
            )
        )
    work_g, placed, moved = splice(net, segs, {k: p.work.layers for k, p in enumerate(parts)})
    steps["fold_batchnorm"] = time.perf_counter() - t0
    where: dict[int, tuple[int, int]] = {}  # work-graph index -> (segment, local index)
    origin: dict[int, int] = {}  # work-graph index -> index in `net`
    for k, (part, at) in enumerate(zip(parts, placed, strict=False)):
        part.at = at
        for local, g in enumerate(at):
            where[g], origin[g] = (k, local), part.origin[local]
    skipped = _resolve_layers(net, skip, "skip")
    hidden = {part.at[i]: h for part in parts for i, h in part.structure.items() if isinstance(h, _Hidden)}
    compressible = [g for g in sorted(hidden) if origin[g] not in skipped]

    if isinstance(keep, Budget):
        ks = _graph_budget(
            net, work_g, parts, where, origin, compressible, keep, method, seed, data, max_patches, options
        )
    else:
        ks = _graph_k_rule(keep, net, work_g, parts, where, origin, compressible)

    current = [list(p.work.layers) for p in parts]  # the segments' layers as compressed so far
    layer_info: dict[int, dict[str, Any]] = {}
    todo = [g for g in compressible if ks.get(g, work_g.layers[g].units) < work_g.layers[g].units]
    by_segment: dict[int, list[int]] = {}
    for g in todo:
        by_segment.setdefault(where[g][0], []).append(g)
    count = 0
    t_layers = time.perf_counter()
    memo: dict[int, Array] = {} if data is None else {-1: data}
    for k in sorted(by_segment):
        part, new = parts[k], current[k]
        cur_x, pos = None, 0
        if data is not None:
            cur_x = _value_at(work_g, _graph_layers(work_g, current, placed), memo, moved[part.seg.source])
        for g in by_segment[k]:
            i = where[g][1]
            count += 1
            if cur_x is not None:
                cur_x = _advance(new, cur_x, pos, i)
                pos = i
            t1 = time.perf_counter()
            cmax, cvec, info, width = _compress_one(
                part.work,
                new,
                part.structure[i],
                ks[g],
                method=method,
                seed=_layer_seed(seed, origin[g]),
                data=cur_x,
                max_patches=max_patches,
                options=_segment_options(part, i, method, options),
            )
            layer_info[g] = dict(certificate=cmax, certificate_vector=cvec, info=info, time=time.perf_counter() - t1)
            label, units = net.label(origin[g]), work_g.layers[g].units
            _say_layer(say, count, len(todo), label, units, width, cmax, layer_info[g]["time"], None)

    _layer_steps(steps, layer_info, time.perf_counter() - t_layers)
    result_g = work_g.replace_layers(_graph_layers(work_g, current, placed))
    next_of = {g: parts[where[g][0]].at[parts[where[g][0]].structure[where[g][1]].j] for g in layer_info}
    t1 = time.perf_counter()
    per_output, bounds, domain = _certificate_step(
        say,
        certify,
        inputs,
        input_radius,
        len(work_g.layers),
        lambda: graph_certificate(
            work_g,
            result_g,
            {g: v["certificate_vector"] for g, v in layer_info.items()},
            next_of,
            inputs=inputs,
            input_radius=input_radius,
        ),
    )
    steps["network_certificate"] = time.perf_counter() - t1
    final = drop_layers(result_g, [g for g, layer in enumerate(result_g.layers) if isinstance(layer, _Folded)])
    reports = _graph_layer_reports(net, work_g, result_g, parts, origin, skipped, layer_info, bounds)
    report = _network_report(
        net,
        final,
        reports,
        inputs,
        method=method,
        seed=seed,
        keep=keep,
        per_output=per_output,
        domain=domain,
        t0=t0,
        steps=steps,
    )
    return final, report


def _segment_options(part: _SegmentWork, i: int, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """:func:`_layer_options` in a segment: only the segment that reads the network's input
    holds the network's first convolution."""
    return _layer_options(part.work, i, method, options) if part.seg.source < 0 else options


def _graph_layers(work_g: Network, current: list[list], placed: list[list[int]]) -> list:
    layers = list(work_g.layers)
    for chain, at in zip(current, placed, strict=False):
        for layer, g in zip(chain, at, strict=False):
            layers[g] = layer
    return layers


def _value_at(work_g: Network, layers: list, memo: dict[int, Array], node: int) -> Array:
    """The output of ``node`` in the graph compressed so far, computed from the outputs kept
    in ``memo`` (``-1``: the data). The segments are compressed in the graph's order, so
    every layer upstream of a segment's input is final when it is computed; outputs whose
    readers have all been computed are dropped from ``memo``."""
    xp = namespace(x=memo[-1])
    stack = [node]
    while stack:
        i = stack[-1]
        missing = [p for p in work_g.sources(i) if p not in memo]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        if i not in memo:
            memo[i] = apply_node(layers[i], [memo[p] for p in work_g.sources(i)], xp)
    value = memo[node]
    users = work_g.users()
    for p in [p for p in memo if p >= 0 and p != node]:
        if all(u in memo for u in users[p]):
            del memo[p]
    return value


def _graph_k_rule(
    keep: Any, net: Network, work_g: Network, parts: list, where: dict, origin: dict, targets: list[int]
) -> dict[int, int]:
    widths = {g: work_g.layers[g].units for g in targets}
    if not isinstance(keep, Mapping):
        q = _fraction(keep, "keep")
        return {g: max(1, min(n, math.floor(q * n + 0.5))) for g, n in widths.items()}
    by_name = {getattr(layer, "name", None): o for o, layer in enumerate(net.layers)}
    to_work = {o: g for g, o in origin.items() if isinstance(work_g.layers[g], (Dense, Conv2d))}
    ks = dict(widths)
    for key, value in keep.items():
        o = by_name.get(key) if isinstance(key, str) else key
        if isinstance(o, bool) or not isinstance(o, (int, np.integer)) or not 0 <= o < len(net.layers):
            raise ValueError(f"`keep` names layer {key!r}, which is not a layer of the network")
        g = to_work.get(int(o))
        if g not in widths:
            why = "" if g is None else _why_not(parts, where, g)
            raise ValueError(f"`keep` names {net.label(int(o))}, which is not a compressible hidden layer{why}")
        ks[g] = _k_of(value, widths[g], f"keep[{key!r}]")
    return ks


def _why_not(parts: list, where: dict, g: int) -> str:
    k, i = where[g]
    h = parts[k].structure.get(i)
    if isinstance(h, str):
        return f" ({h})"
    if h is None and parts[k].coupled:
        return f" (coupled: {parts[k].coupled})"
    return ""


def _graph_budget(
    net: Network,
    work_g: Network,
    parts: list,
    where: dict,
    origin: dict,
    compressible: list[int],
    budget: Budget,
    method: str,
    seed: int,
    data: Array | None,
    max_patches: int,
    options: dict[str, Any],
) -> dict[int, int]:
    """Widths meeting a global budget over every compressible set of the graph."""
    kind = budget.kind
    local_hidden = [{i: part.structure[i] for i in part.structure if part.at[i] in compressible} for part in parts]
    folded = [
        {
            h.bn
            for h in lh.values()
            if h.bn is not None and not _keeps_bn(part.work, h) and not _pinned(part.work, h).any()
        }
        for part, lh in zip(parts, local_hidden, strict=False)
    ]
    seg_shapes = []
    for part in parts:
        try:
            seg_shapes.append(layer_shapes(part.work) if kind == "macs" else None)
        except ValueError:
            raise ValueError("a MACs budget needs the network's `input_shape`") from None

    def cost(widths: Mapping[int, int]) -> int:
        total = 0
        for k, part in enumerate(parts):
            local = {i: widths[part.at[i]] for i in local_hidden[k] if part.at[i] in widths}
            total += predict_cost(part.work, local, local_hidden[k], folded[k], kind, seg_shapes[k])
        return total

    originals: dict[int, Array] = {}

    def probe(g: int, k: int) -> np.ndarray | None:
        seg_k, i = where[g]
        part = parts[seg_k]
        x = None
        if data is not None:
            src = part.seg.source
            if src not in originals:
                originals[src] = data if src < 0 else node_outputs(net, data, stop=src)[src]
            x = originals[src]
        return _probe(
            part.work,
            part.structure[i],
            k,
            method,
            _layer_seed(seed, origin[g]),
            _segment_options(part, i, method, options),
            x,
            max_patches,
        )

    amp = {}
    try:
        host = map_arrays(work_g, lambda a: to_numpy(a).astype(np.float64))
        shapes = output_shapes(host)
        for g in compressible:
            seg_k, i = where[g]
            j = parts[seg_k].at[parts[seg_k].structure[i].j]
            amp[g] = float(np.max(carry_bound(host, j, np.ones(work_g.layers[j].units), shapes, host.input_shape)))
    except ValueError:
        amp = {}
    return allocate_budget(
        work_g,
        budget,
        {g: None for g in compressible},
        reference=net,
        probe=probe,
        amplification=amp,
        min_width={
            g: _min_width(parts[where[g][0]].work, parts[where[g][0]].structure[where[g][1]]) for g in compressible
        },
        cost=cost,
    )


def graph_certificate(
    work: Network,
    compressed: Network,
    layer_certificates: Mapping[int, np.ndarray | None],
    next_layer: Mapping[int, int],
    *,
    inputs: Array | None = None,
    input_radius: float | None = None,
) -> tuple[np.ndarray | None, dict[int, float], str]:
    """The network certificate of :func:`network_certificate` on a graph.

    The same telescoping over the compressed layers, taken in the graph's order: layer
    ``l`` changes the pre-activations of the layer that reads it (``next_layer[l]``) by at
    most ``β_l ρ_l`` per channel, ``ρ_l`` the largest ``‖(patch, 1)‖`` of layer ``l``'s input
    in the compressed graph over the input domain (interval bounds through the graph, an
    addition adding the bounds of its inputs). That change reaches the output along every
    path of the original remaining graph; the bounds are carried along each path and added
    where the paths meet (:func:`tropref.graph.carry_bound`). The sum is capped by the span
    of the two networks' interval output boxes. When a bound is not finite (the interval
    bounds overflow in a deep network) the certificate is reported as unavailable (None),
    never as a number that does not hold.
    """
    box = _input_box(work, inputs, input_radius)
    if box is None:
        return None, {}, "no input domain (pass `inputs` or `input_radius`)"
    lo, hi, domain = box
    host = map_arrays(work, lambda a: to_numpy(a).astype(np.float64))
    shapes = output_shapes(host, lo.shape)
    if not layer_certificates:
        return np.zeros(int(np.prod(shapes[-1]))), {}, domain
    if any(v is None for v in layer_certificates.values()):
        return None, {}, domain
    comp = map_arrays(compressed, lambda a: to_numpy(a).astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        boxes = node_bounds(comp, lo, hi)
        total = None
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
        (lo_f, hi_f), (lo_c, hi_c) = node_bounds(host, lo, hi)[-1], boxes[-1]
        span = (np.maximum(hi_f, hi_c) - np.minimum(lo_f, lo_c)).reshape(-1)
        bound = np.minimum(total, span)
    if not np.all(np.isfinite(bound)):
        return None, {}, domain + " (certificate unavailable: the interval bounds overflow)"
    return bound, shares, domain


def _reads_input(net: Network, g: int) -> bool:
    """Whether layer ``g`` reads the network's input through dropout and identities only."""
    (p,) = net.sources(g)
    while p >= 0:
        if not isinstance(net.layers[p], (Dropout, Identity)):  # a folded BatchNorm is an Identity here
            return False
        (p,) = net.sources(p)
    return True


def _graph_layer_reports(net, work_g, result_g, parts, origin, skipped, layer_info, bounds) -> list[LayerReport]:
    try:
        shapes_w, shapes_r = output_shapes(work_g), output_shapes(result_g)
    except ValueError:
        shapes_w = shapes_r = [None] * len(work_g.layers)
    rows = []
    for part in parts:
        lin = [i for i, layer in enumerate(part.work.layers) if isinstance(layer, (Dense, Conv2d))]
        for i in lin:
            g = part.at[i]
            before, after, orig = work_g.layers[g], result_g.layers[g], net.layers[origin[g]]
            h = part.structure.get(i)
            if g in layer_info:
                status = "compressed"
            elif origin[g] in skipped:
                status = "skipped"
            elif i == lin[-1]:
                status = "classifier" if part.coupled is None else f"coupled: {part.coupled}; left unchanged"
            elif isinstance(h, str):
                status = f"not a ReLU layer: {h}"
            else:
                status = "kept"
            li = layer_info.get(g, {})
            rows.append(
                (
                    origin[g],
                    LayerReport(
                        index=origin[g],
                        name=getattr(orig, "name", None) or f"{origin[g]}:{type(orig).__name__}",
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
                    ),
                )
            )
    return [r for _, r in sorted(rows, key=lambda t: t[0])]
