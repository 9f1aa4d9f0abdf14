"""One hidden layer compressed inside a chain: the layer, its BatchNorm and the next layer rewritten.

For hidden layer ``l`` with next layer ``l + 1``, the ops between its ReLU and layer
``l + 1`` (max/avg pooling, flatten of either order, dropout, a BatchNorm after the ReLU)
are carried through: the next layer's weights are read per unit as
:func:`tropref.compress_layer` expects (``(m, n)``, ``(m, n, kh, kw)``, or the ``(m, n, s)``
column blocks after a flatten), a BatchNorm after the ReLU is folded into the next layer,
and :func:`tropref.compress_layer` merges the units and rewrites the next layer's inputs.
:func:`read_hidden` does the reading and returns ``compress_layer``'s arguments
(:class:`HiddenRead`); the walk calls ``compress_layer`` itself, and :func:`write_hidden`
writes its result back into the chain.

Exactness rules kept here:

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
  (None) when a max pooling sits between the layers, unless the fold refits such a single
  fold (TropNNC's ``refit="gaussian"``), whose certificate bounds the pooled outputs too;
- a channel whose BatchNorm after the ReLU has a negative scale and is followed by a max
  pooling (``max(s a + t) = s min(a) + t``) is *pinned*: kept intact, after the kept
  channels, with its BatchNorm; the other channels are compressed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._array import Array, asarray_like, device, to_numpy
from .._blocks import take_rows
from .._seeds import make_rng
from ..compress import LayerCompression
from ._after_relu import Folded, pinned
from .graph import Network, network_namespace
from .kinds import kind_of
from .layers import BatchNorm
from .structure import HiddenLayer, Part

__all__ = ["HiddenRead", "read_hidden", "write_hidden"]

_FIRST_CONV_INPUT_RATIO = 1.0
"""TropNNC's ``input_ratio`` for a first convolution, which reads patches of the raw images."""

_RESIDUAL_OUTGOING = 0.5
"""TropNNC's ``outgoing`` weight in a residual branch (``docs/results.md``, section 10)."""


def _layer_options(part: Part, i: int, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method options for layer ``i`` of ``part``, TropNNC's defaults by where the layer sits.

    Unless the options say otherwise, TropNNC (not its paper-literal variant)

    - clusters the network's first convolution in the metric of natural image patches
      (``input_ratio``, ``docs/theory.md``);
    - in a residual branch (the layer's next layer ends a segment whose channels meet other
      paths in an addition or a concatenation) corrects the merged units' statistics
      (``correct="full"``) and lets the partition see the outgoing weights
      (``outgoing=_RESIDUAL_OUTGOING``); elsewhere it does neither (``correct="none"``);
    - everywhere refits the next layer by least squares under the Gaussian model of its
      statistics, keeping the variance it reads (``refit="gaussian"``,
      ``refit_variance=True``; ``docs/refit.md``), with the units' correlations propagated
      through the network from its BatchNorms (``refit_correlation="auto"``, the method's
      default; :mod:`tropref.network.moments`), from a partition that one pass of
      single-unit moves fits to that refit (``refit_search=1``,
      :mod:`tropref.methods.refit_search`).

    Each was measured (``docs/results.md``, sections 10, 12, 13 and 14): in residual
    branches all of them keep far more of the network at every fraction; in the chain
    networks the correction costs accuracy and the refit gains. The refit needs the
    statistics of the layer's pre-activations, from a BatchNorm before its ReLU or implied
    by one after it (:func:`tropref.network.structure.fold_batchnorm`); where none exist
    (the LeNets), the correction and the refit do nothing.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, ReLU, Flatten, Dense, analyse
    >>> net = Network([Conv2d(np.ones((4, 1, 3, 3))), ReLU(), Flatten(), Dense(np.ones((2, 16)))])
    >>> part = analyse(net).parts[0]
    >>> _layer_options(part, 0, "tropnnc", {})
    {'input_ratio': 1.0, 'correct': 'none', 'refit': 'gaussian', 'refit_variance': True, 'refit_search': 1}
    >>> _layer_options(part, 0, "tropnnc", {"variant": "paper"})
    {'variant': 'paper'}
    """
    if method != "tropnnc" or options.get("variant", "refined") == "paper":
        return options
    chain, extra = part.chain, {}
    linear = [j for j, l in enumerate(chain.layers) if kind_of(l).linear]
    first_of_network = part.segment.source < 0 and i == linear[0]
    if first_of_network and kind_of(chain.layers[i]).images:
        extra["input_ratio"] = _FIRST_CONV_INPUT_RATIO
    h = part.hidden[i]
    branch = part.coupled is not None and isinstance(h, HiddenLayer) and h.j == linear[-1]
    extra["correct"] = "full" if branch else "none"
    if branch:
        extra["outgoing"] = _RESIDUAL_OUTGOING
    extra.update(refit="gaussian", refit_variance=True, refit_search=1)
    return {**extra, **options}


@dataclass(frozen=True)
class HiddenRead:
    """A hidden layer read for :func:`tropref.compress_layer` (:func:`read_hidden`), and what
    writing the result back into the chain needs (:func:`write_hidden`).

    Attributes
    ----------
    args : tuple or None
        ``compress_layer``'s positional arguments ``(W, b, k)``: the rows of the channels
        that can be merged and the units they keep. None when no channel can be merged.
    kwargs : dict
        Its keyword arguments: the next layer read per unit (``W_next``, ``b_next``), the
        method, seed, options, input patches, ``fold_constants`` and ``moments``.
    h : HiddenLayer
        The hidden layer (local indices in its chain).
    """

    args: tuple[Array, Array | None, int] | None
    kwargs: dict[str, Any]
    h: HiddenLayer
    xp: Any = field(repr=False)
    W_view: Array = field(repr=False)  # the next layer's weights, units on axis 1
    back: Callable[[Array], Array] = field(repr=False)  # W_view's layout back to the next layer's
    free: np.ndarray = field(repr=False)  # the channels compressed
    fixed: np.ndarray = field(repr=False)  # the pinned channels, kept after them
    padded_next: bool = field(repr=False)
    shift_contrib: Array | None = field(repr=False)  # the BatchNorm shifts a padded next layer reads
    moments: tuple[np.ndarray, np.ndarray] | None = field(repr=False)  # of all the layer's units
    info: dict[str, Any] = field(repr=False)


def read_hidden(
    part: Part,
    pos: int,
    layers: list,
    k: int,
    *,
    method: str,
    seed: int,
    data: Array | None,
    max_patches: int,
    options: dict[str, Any],
    correlation: Callable[[], np.ndarray | None] | None = None,
) -> HiddenRead:
    """Hidden layer ``pos`` of ``part``'s chain read for compressing it to ``k`` units.

    ``layers`` holds the chain's layers as compressed so far (not edited here). The next
    layer's weights are read per unit through what lies between (see the module notes), a
    BatchNorm after the ReLU is moved into them where that is exact, pinned channels are
    set aside, and ``data`` (the layer's input in the compressed prefix, for data-driven
    methods) becomes up to ``max_patches`` patches drawn with ``seed``. The method's options
    get TropNNC's defaults for where the layer sits (:func:`_layer_options`).

    Parameters
    ----------
    part : Part
        The chain segment (:attr:`~tropref.network.structure.Structure.parts`).
    pos : int
        The hidden layer's index in ``part.chain``.
    layers : list of layers
        ``part.chain``'s layers as compressed so far.
    k : int
        Units to keep.
    method, seed, options
        As in :func:`tropref.compress_layer`.
    data : array or None
        The input of the layer in the compressed prefix (data-driven methods only).
    max_patches : int
        The most convolution input patches given to a data-driven method.
    correlation : callable, optional
        Returns the model's correlation of the layer's pre-activations, ``(n, n)``, or
        None; called only when the layer's refit reads it (``refit_correlation="auto"``),
        which then gets ``moments=(μ, σ, ρ)``.

    Returns
    -------
    HiddenRead
        ``compress_layer(*read.args, **read.kwargs)`` compresses it (unless ``read.args``
        is None); :func:`write_hidden` writes the result back.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, analyse
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(8, 3)), rng.normal(size=8)), ReLU(), Dense(rng.normal(size=(2, 8)))])
    >>> part = analyse(net).parts[0]
    >>> read = read_hidden(part, 0, list(part.chain.layers), 4, method="tropnnc", seed=0, data=None,
    ...                    max_patches=4096, options={})
    >>> W, b, k = read.args
    >>> W.shape, k, read.kwargs["W_next"].shape, read.kwargs["correct"]
    ((8, 3), 4, (2, 8), 'none')
    """
    h = part.hidden[pos]
    chain = part.chain
    xp = network_namespace(chain)
    layer, nxt = layers[h.i], layers[h.j]
    n = layer.units
    net_now = chain.replace_layers(layers)
    W_view, back = _next_view(net_now, h, n)
    b_next = nxt.b
    bn = layers[h.bn] if h.bn is not None else None
    mask = pinned(net_now, h)
    free, fixed = np.flatnonzero(~mask), np.flatnonzero(mask)
    info: dict[str, Any] = {"pinned_channels": int(fixed.size)} if fixed.size else {}
    padded_next = kind_of(nxt).pads_inputs(nxt)
    moments = part.moments.get(pos)
    done = dict(xp=xp, W_view=W_view, back=back, free=free, fixed=fixed, padded_next=padded_next, info=info)
    if free.size <= 1 or k - fixed.size >= free.size:
        return HiddenRead(None, {}, h, shift_contrib=None, moments=moments, **done)
    V = take_rows(xp, W_view, free, axis=1)  # how the next layer reads the free channels
    shift_contrib = None
    if bn is not None:
        order = _order(layers, h)
        after_flatten = h.flatten is not None and h.flatten < h.bn
        scale = take_rows(xp, _per_unit(xp, bn.scale, W_view, order, after_flatten), free)
        shift = take_rows(xp, _per_unit(xp, bn.shift, W_view, order, after_flatten), free)
        shift_contrib = V * shift[None, ...]  # (m, n_free, ...): what the shifts feed the next layer
        V = V * scale[None, ...]  # the scale moves into the next layer (s >= 0 across a max pool)
        if not padded_next:  # the next layer reads s a + t and t becomes bias: exact
            total = xp.sum(xp.reshape(shift_contrib, (shift_contrib.shape[0], -1)), axis=1)
            b_next = total if b_next is None else b_next + total
            shift_contrib = None
    patches = None if data is None else kind_of(layer).patches(layer, data, make_rng(seed), max_patches)
    opts = _layer_options(part, pos, method, options)
    # moments implied by a BatchNorm after the ReLU are tropref's model, for TropNNC's refit;
    # the baselines read only what their papers do, a BatchNorm before the ReLU
    read_moments = None if pos in part.implied and method != "tropnnc" else moments
    args = (
        take_rows(xp, layer.W, free),
        None if layer.b is None else take_rows(xp, layer.b, free),
        max(1, k - int(fixed.size)),
    )
    kwargs = dict(
        W_next=V,
        b_next=b_next,
        method=method,
        seed=seed,
        data=patches,
        fold_constants=not (padded_next or h.padded_avg),
        moments=_moments(read_moments, free, n, opts, correlation),
        **opts,
    )
    return HiddenRead(args, kwargs, h, shift_contrib=shift_contrib, moments=moments, **done)


def _moments(
    moments: tuple[np.ndarray, np.ndarray] | None,
    free: np.ndarray,
    n: int,
    opts: dict[str, Any],
    correlation: Callable[[], np.ndarray | None] | None,
) -> tuple[np.ndarray, ...] | None:
    """The free channels' moments, with the model's correlation where the refit reads it."""
    if moments is None:
        return None
    pair = (moments[0][free], moments[1][free])
    if correlation is None or opts.get("refit") != "gaussian" or opts.get("refit_correlation", "auto") != "auto":
        return pair
    rho = correlation()
    return pair if rho is None or rho.shape != (n, n) else (*pair, rho[np.ix_(free, free)])


def write_hidden(
    layers: list, read: HiddenRead, res: LayerCompression | None
) -> tuple[float | None, np.ndarray | None, dict[str, Any], int]:
    """``compress_layer``'s result ``res`` for a :class:`HiddenRead` written back into the chain.

    ``layers`` (the chain as compressed so far, as :func:`read_hidden` read it) is edited in
    place: the hidden layer keeps the merged units (and the pinned ones after them), its
    BatchNorm after the ReLU is folded away or kept on the kept channels, and the next
    layer reads the kept units (see the module notes). ``res`` is None when ``read.args``
    is: nothing is merged and ``layers`` stays as it is.

    Returns
    -------
    certificate : float or None
        The layer certificate's largest entry (None when the method gives none or the fold
        does not commute with a max pooling in between).
    vector : numpy.ndarray or None
        The certificate over the next layer's channels: for an input ``x`` of the hidden
        layer, the next layer's pre-activations change by at most ``vector ‖(patch, 1)‖``.
    info : dict
        The method's info (and notes on pinned channels and BatchNorm borders).
    width : int
        The units of the hidden layer after.

    Examples
    --------
    >>> import numpy as np
    >>> import tropref
    >>> from tropref.network import Network, Dense, ReLU, analyse
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(8, 3)), rng.normal(size=8)), ReLU(), Dense(rng.normal(size=(2, 8)))])
    >>> part = analyse(net).parts[0]
    >>> layers = list(part.chain.layers)
    >>> read = read_hidden(part, 0, layers, 4, method="tropnnc", seed=0, data=None, max_patches=4096, options={})
    >>> cmax, cert, info, width = write_hidden(layers, read, tropref.compress_layer(*read.args, **read.kwargs))
    >>> width, layers[0].W.shape, layers[2].W.shape, cert.shape
    (4, (4, 3), (2, 4), (2,))
    >>> x = rng.normal(size=(50, 3))
    >>> change = np.abs(net.replace_layers(layers)(x) - net(x))
    >>> bool(np.all(change <= cert * np.linalg.norm(np.hstack([x, np.ones((50, 1))]), axis=1)[:, None]))
    True
    """
    h, xp, info = read.h, read.xp, dict(read.info)
    layer, nxt = layers[h.i], layers[h.j]
    if res is None:
        m = int(read.W_view.shape[0])
        return 0.0, np.zeros(m), {**info, "note": "no channel can be merged"}, layer.units
    free, fixed, W_view, moments = read.free, read.fixed, read.W_view, read.moments
    info.update(res.info)
    cert = None if res.certificate is None else to_numpy(res.certificate).astype(np.float64)
    # a general fold's certificate, where there is one, refits a single non-negative fold, and
    # its bound holds through a max pooling as that fold's does (docs/refit.md, section 4)
    if h.maxpool and cert is not None and res.scale is not None and not _single_nonneg(res.scale[:, None]):
        cert = None
        info["certificate_dropped"] = "the fold does not commute with max pooling"

    b_next_new, t_kept = res.b_next, None
    if read.shift_contrib is not None:
        b_next_new, t_kept, border = _refit_shift(xp, res, read.shift_contrib, b_next_new)
        info["bn_border_bound"] = float(np.max(border)) if border.size else 0.0
        if cert is not None:
            cert = cert + border

    if moments is not None and res.assignment is not None:
        info["moments"] = _kept_moments(
            res, (moments[0][free], moments[1][free]), (moments[0][fixed], moments[1][fixed])
        )
    W_layer, b_layer, W_next_new = res.W, res.b, res.W_next
    if fixed.size:  # pinned channels follow the kept ones, untouched (their BatchNorm stays)
        W_layer = xp.concat([W_layer, take_rows(xp, layer.W, fixed)], axis=0)
        b_layer = None if layer.b is None else xp.concat([b_layer, take_rows(xp, layer.b, fixed)], axis=0)
        W_next_new = xp.concat([W_next_new, take_rows(xp, W_view, fixed, axis=1)], axis=1)
    if h.bn is not None:
        bn = layers[h.bn]
        if read.padded_next or fixed.size:
            layers[h.bn] = _kept_batchnorm(xp, bn, res.k, t_kept, fixed, like=res.W)
        else:
            layers[h.bn] = Folded(name=bn.name)  # folded into the next layer; removed at the end
    layers[h.i] = replace(layer, W=W_layer, b=b_layer)
    layers[h.j] = replace(nxt, W=read.back(W_next_new), b=b_next_new)
    cmax = None if cert is None else (float(np.max(cert)) if cert.size else 0.0)
    return cmax, cert, info, int(W_layer.shape[0])


def _kept_moments(
    res: Any, free: tuple[np.ndarray, np.ndarray], fixed: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Each kept unit's pre-activation mean and spread, estimated from its members' (host
    float64; the pinned units' own after them): a member ``j`` reads ``f_j`` times the kept
    unit, so ``z̃_c ≈ z_j / f_j``, averaged over the cluster (what the statistics correction
    matches, where it is on). A kept unit without members (none here) gets mean 0, spread 1.
    A model that keeps its BatchNorms (the adapters' ``in_place``) stores these as the
    BatchNorm's running statistics."""
    labels = to_numpy(res.assignment)
    f = np.ones(labels.size) if res.scale is None else to_numpy(res.scale).astype(np.float64)
    ok = (labels >= 0) & (f > 0)
    k = int(res.W.shape[0])
    count = np.bincount(labels[ok], minlength=k)
    mean = np.bincount(labels[ok], free[0][ok] / f[ok], minlength=k)
    std = np.bincount(labels[ok], free[1][ok] / f[ok], minlength=k)
    mean, std = (
        np.where(count > 0, mean / np.maximum(count, 1), 0.0),
        np.where(count > 0, std / np.maximum(count, 1), 1.0),
    )
    return np.concatenate([mean, fixed[0]]), np.concatenate([std, fixed[1]])


def _next_view(net: Network, h: HiddenLayer, n: int) -> tuple[Array, Callable[[Array], Array]]:
    """The next layer's weights with the units of layer ``h.i`` on axis 1, and the map back."""
    nxt = net.layers[h.j]
    order = None if h.flatten is None else net.layers[h.flatten].order
    return kind_of(nxt).read_units(network_namespace(net), nxt, n, order, net.label(h.j), net.label(h.i))


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


def _single_nonneg(fold: Array) -> bool:
    f = to_numpy(fold)
    return bool(np.all(f >= 0) and np.all(np.count_nonzero(f, axis=1) <= 1))


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


def _order(layers: list, h: HiddenLayer) -> str | None:
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
