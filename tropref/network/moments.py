"""The correlation of each layer's pre-activations, propagated through the network without data.

The Gaussian refit (``docs/refit.md``) needs the correlation ``ρ`` of a layer's
pre-activations. From the weights alone it takes their cosines, which is what isotropic
inputs would give; a layer deep in a convolutional network does not read isotropic inputs.
:func:`propagated_correlations` carries a stationary Gaussian model of the activations
through the work graph (BatchNorms folded) instead, in float64 on the host:

- every node holds a mean per channel and a *window* of its spatial cross-covariances,
  ``K[a, b, δ] = Cov(z_a(p), z_b(p + δ))`` for offsets ``|δ| <= r`` on its own grid
  (``r`` from ``radius`` and the node's stride, capped by ``budget`` entries);
- the input is an image model, ``K₀[a, b, δ] = v (κ + (1 − κ) [a = b]) r₀^|δ|``, with
  ``κ``, ``r₀`` and ``v`` fitted to the first convolution's BatchNorm statistics;
- a convolution maps the window exactly (up to the window's edge): taps are shifts, with its
  stride, dilation and padding offsets; pooling is taken as a uniform window (max pooling as
  average pooling, a model choice: only correlations are kept, and the next statistics
  recalibrate the scale);
- a layer whose BatchNorm was folded into it is *calibrated*: its model is rescaled and
  shifted per channel to the mean and spread the BatchNorm stored, so that errors do not
  compound through depth; only the correlations are the model's own;
- a ReLU maps the moments in closed form (:func:`tropref.statistics.relu_mean`,
  :func:`tropref.statistics.relu_product_mean`) of the window's symmetric part
  ``(K(δ) + K(−δ)ᵀ)/2`` (a convolution's window is exact at its centre, but the taps it
  skips at the window's edge make the edge entries of a pair ``(a, b, δ)``, ``(b, a, −δ)``
  differ), evaluated once per pair; its cross-covariance with another node is scaled by
  ``Φ(μ/σ)`` (Stein's lemma, exact for jointly Gaussian inputs);
- an addition sums the windows of its inputs and both cross terms, which are tracked from
  the latest fork (a node read by two layers) through the ops of each path.

A layer the model does not describe (dense layers, a flatten, a concatenation), or one
with more than ``√budget`` channels (its window would not fit even at one offset), ends the
walk: the correlations computed so far are returned, and the refit falls back to the cosines
for the rest. No BatchNorm at the first convolution, or a network that does not start with one,
gives no model at all (an empty result).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from scipy.special import ndtr

from .._array import to_numpy
from ..statistics import relu_mean, relu_product_mean
from .layers import Add, BatchNorm, Conv2d, Dropout, Identity, MaxPool2d, ReLU
from .structure import Structure

__all__ = ["propagated_correlations", "RADIUS", "BUDGET"]

RADIUS = 8
"""Offsets kept at the network's input, in input pixels: on ``resnet20`` the correlations
agree with ±27 to two decimals, in a tenth of the time (``docs/refit.md``)."""

BUDGET = 2**19
"""Most entries of one node's window (``c² (2r + 1)²``): bounds memory and time on wide
layers (a layer above 724 channels ends the walk). The shipped models' windows fit whole;
on ResNet-50 the walk then stops at the first 1,024-channel layer, in 1.0 s instead of 49 s
(``docs/performance.md``)."""


class _Unsupported(Exception):
    """A layer or a path the model does not describe: the walk ends there."""


def propagated_correlations(
    structure: Structure, *, radius: int = RADIUS, budget: int = BUDGET
) -> dict[int, np.ndarray]:
    """The model's correlation of the pre-activations of every layer with BatchNorm statistics.

    Parameters
    ----------
    structure : Structure
        The network read by :func:`tropref.network.analyse`.
    radius : int
        Offsets ``|δ| <= radius`` kept at the input's resolution (fewer after each stride).
    budget : int
        The most entries of one node's window; wider layers keep a smaller radius, and a
        layer with more than ``√budget`` channels ends the walk.

    Returns
    -------
    dict
        Work-graph index of the layer -> ``ρ``, shape ``(c, c)``, symmetric with unit
        diagonal. Empty when the network does not start with a convolution whose BatchNorm
        statistics are known.

    Raises
    ------
    ValueError
        When ``radius`` or ``budget`` is not a positive int.

    References
    ----------
    .. [1] C. Stein, "Estimation of the Mean of a Multivariate Normal Distribution",
           Annals of Statistics 9(6), 1981 (``Cov(g(x), y) = E[g'(x)] Cov(x, y)``).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Conv2d, BatchNorm, ReLU, analyse
    >>> rng = np.random.default_rng(0)
    >>> bn = BatchNorm(np.zeros(4), rng.uniform(1, 2, 4))
    >>> net = Network([Conv2d(rng.normal(size=(4, 3, 3, 3))), bn, ReLU(), Conv2d(rng.normal(size=(2, 4, 3, 3)))])
    >>> rho = propagated_correlations(analyse(net, (3, 16, 16)))
    >>> sorted(rho), rho[0].shape, bool(np.allclose(np.diag(rho[0]), 1.0))
    ([0], (4, 4), True)
    """
    for name, v in (("radius", radius), ("budget", budget)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be a positive int, got {v!r}")
    work = structure.work
    targets = {part.at[pos]: stats for part in structure.parts for pos, stats in part.moments.items()}
    first = work.layers[0] if work.layers else None
    if not (isinstance(first, Conv2d) and tuple(work.sources(0)) == (-1,) and 0 in targets):
        return {}
    users = work.users()
    walk = _Walk(work, targets, budget)
    walk.nodes[-1] = _input_model(first, targets[0], radius)
    left = [len(u) for u in users]  # readers still to come: a node is dropped after its last
    try:
        for g, layer in enumerate(work.layers):
            src = tuple(work.sources(g))
            walk.step(g, layer, src, fork=len(users[g]) > 1)
            for s in (s for s in src if s >= 0):
                left[s] -= 1
                if left[s] == 0 and s != walk.anchor:
                    del walk.nodes[s]
    except _Unsupported:
        pass
    return walk.out


class _Node:
    """One node's model: mean ``m`` (c,), window ``K`` (c, c, w, w), grid step ``d`` (input
    pixels per position); ``X``, the window of its cross-covariance with the anchor ``a``
    (the latest fork, on the anchor's grid), and the ops on the path from it."""

    def __init__(self, m, K, d, X=None, a=None, ops=()):
        self.m, self.K, self.d, self.X, self.a, self.ops = m, K, d, X, a, tuple(ops)


class _Walk:
    """The walk's state: each node's model, the calibrated correlations, the anchor."""

    def __init__(self, work: Any, targets: dict, budget: int):
        self.work, self.targets, self.budget = work, targets, budget
        self.nodes: dict[int, _Node] = {}
        self.out: dict[int, np.ndarray] = {}
        self.anchor: int | None = None

    def _ratio(self, node: _Node) -> tuple[int, int]:
        """The node's grid step in units of the anchor's."""
        a = self.nodes[self.anchor].d
        return node.d[0] // a[0], node.d[1] // a[1]

    def step(self, g: int, layer: Any, src: tuple[int, ...], fork: bool) -> None:
        """Node ``g``'s model from its inputs'."""
        if isinstance(layer, (Dropout, Identity)):
            node = self.nodes[src[0]]
        elif isinstance(layer, (Conv2d, MaxPool2d)):
            node = self._linear(g, layer, self.nodes[src[0]], src[0])
        elif isinstance(layer, BatchNorm):
            p = self.nodes[src[0]]
            s, t = (to_numpy(v).astype(np.float64) for v in (layer.scale, layer.shift))
            node = _affine(p, s, s * p.m + t)
        elif isinstance(layer, ReLU):
            p = self.nodes[src[0]]
            m, K, slope = _relu(p.m, p.K)
            X = None if p.X is None else slope[:, None, None, None] * p.X
            node = _Node(m, K, p.d, X, p.a, (*p.ops, ("relu", None)))
        elif isinstance(layer, Add) and len(src) == 2 and self.anchor is not None:
            node = self._add(*src)
        else:
            raise _Unsupported(type(layer).__name__)
        if fork:  # the paths from here meet again in an addition: track their cross terms
            self.anchor = g
            node = _Node(node.m, node.K, node.d)
        self.nodes[g] = node

    def _linear(self, g: int, layer: Any, p: _Node, source: int) -> _Node:
        W, b, stride, dilation, pad = _as_conv(layer, len(p.m))
        c = W.shape[0] if W.ndim == 4 else len(p.m)
        if c**2 > self.budget:  # not even one offset fits: time and memory stay bounded
            raise _Unsupported(f"{c} channels, wider than the budget")
        m = (W.sum((2, 3)) @ p.m if W.ndim == 4 else W.sum() * p.m) + b
        # the output's radius (by the budget), and the input's window it needs
        r = _radius(p.K.shape[-1] // 2 // max(stride), len(m), self.budget)
        margin = max(d * (k - 1) for d, k in zip(dilation, W.shape[-2:], strict=True))  # taps read past it
        first = _conv_first(_crop(p.K, (r + margin) * max(stride)), W, dilation, pad)  # Cov(z(p), x(p + δ))
        K = _transpose(_conv_first(_transpose(first), W, dilation, pad, r, stride))  # at the output's offsets
        X, ops = None, ()
        if self.anchor is not None and source == self.anchor:
            X, ops = first, (("conv", (W, dilation, pad)),)
        elif p.X is not None and p.a == self.anchor:
            ratio = self._ratio(p)  # the taps' step on the anchor's grid
            tap = (dilation[0] * ratio[0], dilation[1] * ratio[1])
            X, ops = _conv_first(p.X, W, tap, pad), (*p.ops, ("conv", (W, tap, pad)))
        node = _Node(m, K, (p.d[0] * stride[0], p.d[1] * stride[1]), X, self.anchor, ops)
        if g in self.targets:  # calibrated to the BatchNorm's statistics; only ρ is the model's
            mean, std = self.targets[g]
            var = np.diagonal(K[:, :, r, r])
            s = np.where(var > 0, std / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
            node = _affine(node, s, mean)
            self.out[g] = _correlation(K[:, :, r, r])
        return node

    def _add(self, su: int, sv: int) -> _Node:
        """``u + v``: the windows and both cross terms, ``Cov(u, v)`` from the anchor (one of
        the inputs, or a node both paths start from, with no ReLU on one of them)."""
        if any(kind == "relu" for kind, _ in self.nodes[sv].ops):
            su, sv = sv, su
        u, v = self.nodes[su], self.nodes[sv]
        if sv == self.anchor and u.X is not None and u.a == self.anchor:
            cross = u.X
        elif su == self.anchor and v.X is not None and v.a == self.anchor:
            cross = _transpose(v.X)
        elif u.X is not None and u.a == v.a == self.anchor:
            C = _transpose(u.X)  # Cov(anchor, u), then v's path applied to the anchor
            for kind, arg in v.ops:
                if kind == "conv":
                    C = _conv_first(C, *arg)
                elif kind == "scale":
                    C = arg[:, None, None, None] * C
                else:
                    raise _Unsupported("an addition of two paths with ReLUs")
            cross = _transpose(C)
        else:
            raise _Unsupported("an addition whose paths do not start at the latest fork")
        _, Ku, Kv, cross = _common(u.K, v.K, _subsample(cross, self._ratio(u)))
        return _Node(u.m + v.m, Ku + Kv + cross + _transpose(cross), u.d)


def _input_model(conv: Conv2d, stats: tuple[np.ndarray, np.ndarray], radius: int) -> _Node:
    """The input's stationary model fitted to the first layer's BatchNorm statistics: the
    correlation ``κ`` between channels and ``r₀`` between neighbouring pixels that best explain
    the spreads ``σ_c`` (up to one scale, log least squares), and the mean ``μ`` per input
    channel by least squares on the means."""
    W = to_numpy(conv.W).astype(np.float64)
    b = np.zeros(W.shape[0]) if conv.b is None else to_numpy(conv.b).astype(np.float64)
    mean, std = stats
    c = W.shape[1]
    mu = np.linalg.lstsq(W.sum((2, 3)), mean - b, rcond=None)[0]
    kh, kw = W.shape[2:]
    dy, dx = conv.dilation
    pos = np.stack(np.meshgrid(dy * np.arange(kh), dx * np.arange(kw), indexing="ij"), -1).reshape(-1, 2)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    Wf = W.reshape(W.shape[0], c, -1)
    same = np.einsum("oat,oau->otu", Wf, Wf)  # within a channel
    allc = np.einsum("oat,obu->otu", Wf, Wf)  # all pairs of channels
    target = np.log(np.maximum(std, 1e-150) ** 2)  # finite where σ = 0 (not read there: `ok`)
    ok = std > 0
    best = (np.inf, 0.5, 0.0, 1.0)
    grid = np.linspace(0.02, 0.98, 49)
    R = grid[:, None, None] ** dist  # every r0 at once: one product per kind of pair
    q_same, q_all = (np.einsum("otu,gtu->go", M, R) for M in (same, allc))
    for r0, qs, qa in zip(grid, q_same, q_all, strict=True):
        for kappa in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0) if c > 1 else (1.0,):
            q = (1 - kappa) * qs + kappa * qa
            if not np.all(q[ok] > 0):
                continue
            logv = np.mean(target[ok] - np.log(q[ok]))
            err = float(np.mean((target[ok] - logv - np.log(q[ok])) ** 2))
            if err < best[0]:
                best = (err, r0, kappa, float(np.exp(logv)))
    _, r0, kappa, v = best
    y, x = np.meshgrid(np.arange(-radius, radius + 1), np.arange(-radius, radius + 1), indexing="ij")
    mix = kappa + (1 - kappa) * np.eye(c)
    K = v * mix[:, :, None, None] * (r0 ** np.sqrt(y**2 + x**2))[None, None]
    return _Node(mu, K, (1, 1))


def _as_conv(layer: Any, c: int) -> tuple[np.ndarray, np.ndarray, tuple, tuple, tuple]:
    """A convolution's weights ``(o, c, kh, kw)`` (or a pooling's, as a uniform depthwise
    window ``(kh, kw)``), bias, stride, dilation and the (top, left) padding offsets."""
    if isinstance(layer, Conv2d):
        W = to_numpy(layer.W).astype(np.float64)
        b = np.zeros(W.shape[0]) if layer.b is None else to_numpy(layer.b).astype(np.float64)
        return W, b, layer.stride, layer.dilation, (layer.padding[0], layer.padding[2])
    kh, kw = layer.kernel
    return np.full((kh, kw), 1.0 / (kh * kw)), np.zeros(c), layer.stride, (1, 1), (layer.padding[0], layer.padding[2])


def _conv_first(
    C: np.ndarray,
    W: np.ndarray,
    dilation: tuple[int, int],
    pad: tuple[int, int],
    radius: int | None = None,
    step: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """The window of ``Cov(conv(x)(p), y(p + δ))`` from that of ``Cov(x(p), y(p + δ))``:
    ``Σ_t W[:, :, t] C(δ − d_t)``, ``d_t`` tap ``t``'s offset (``W[t] C(δ − d_t)`` for a
    depthwise window ``W`` of shape ``(kh, kw)``), zero where ``C``'s window ends.

    The result holds the offsets ``δ = step · k``, ``|k| <= radius`` (by default every
    offset of ``C``'s window): only those are computed, not a window then subsampled and
    cropped. A convolution's taps are one product, ``(o, taps · c)`` by the shifted windows
    stacked (in chunks of at most ``_STACK`` entries): its contraction is then long even
    where ``c`` is 3."""
    R = C.shape[-1] // 2
    r = [R if radius is None else min(radius, R // s) for s in step]
    offsets = [s * np.arange(-q, q + 1) for s, q in zip(step, r, strict=True)]
    shape = (W.shape[0] if W.ndim == 4 else C.shape[0], C.shape[1], *(len(d) for d in offsets))
    taps = []  # (tap, the output's slices, the input's slices) for each tap that reads the window
    for i in range(W.shape[-2]):
        for j in range(W.shape[-1]):
            d = (dilation[0] * (i - pad[0]), dilation[1] * (j - pad[1]))
            cut = [_reads(R + off - dt, 2 * R + 1) for off, dt in zip(offsets, d, strict=True)]
            if all(c is not None for c in cut):
                taps.append(((i, j), *zip(*cut, strict=True)))
    out = np.zeros(shape)
    if W.ndim == 2:
        for (i, j), dst, srcs in taps:
            out[..., dst[0], dst[1]] += W[i, j] * C[..., srcs[0], srcs[1]]
        return out
    chunk = max(1, _STACK // max(1, int(np.prod(shape[1:])) * C.shape[0]))
    for start in range(0, len(taps), chunk):
        group = taps[start : start + chunk]
        stacked = np.zeros((len(group), C.shape[0], *shape[1:]))
        for t, (_, dst, srcs) in enumerate(group):
            stacked[t][..., dst[0], dst[1]] = C[..., srcs[0], srcs[1]]
        Wt = np.stack([W[:, :, i, j] for (i, j), _, _ in group], axis=1)  # (o, taps, c)
        out += (Wt.reshape(shape[0], -1) @ stacked.reshape(-1, int(np.prod(shape[1:])))).reshape(shape)
    return out


_STACK = 2**22
"""Most entries of the stacked shifted windows of one product in :func:`_conv_first` (32 MB)."""


def _reads(index: np.ndarray, size: int) -> tuple[slice, slice] | None:
    """For output positions reading input ``index`` (an arithmetic sequence), the slices of
    the outputs whose input lies in ``[0, size)`` and of those inputs; None when none does."""
    ok = np.flatnonzero((index >= 0) & (index < size))
    if ok.size == 0:
        return None
    step = int(index[1] - index[0]) if index.size > 1 else 1
    first, last = int(index[ok[0]]), int(index[ok[-1]])
    return slice(int(ok[0]), int(ok[-1]) + 1), slice(first, last + 1, step)


def _transpose(C: np.ndarray) -> np.ndarray:
    """``Cov(y(p), x(p + δ)) = Cov(x(p), y(p − δ))``: swap the channels and flip the window."""
    return np.ascontiguousarray(np.transpose(C, (1, 0, 2, 3))[:, :, ::-1, ::-1])


def _subsample(C: np.ndarray, step: tuple[int, int]) -> np.ndarray:
    """The window on a grid ``step`` times coarser (the offsets that are multiples of it)."""
    r = C.shape[-1] // 2
    idx = [r + s * np.arange(-(r // s), r // s + 1) for s in step]
    return C[..., idx[0][:, None], idx[1][None, :]]


def _crop(C: np.ndarray, r: int) -> np.ndarray:
    c = C.shape[-1] // 2
    return C if c <= r else C[..., c - r : c + r + 1, c - r : c + r + 1]


def _common(*windows: np.ndarray) -> list[np.ndarray]:
    """The windows cropped to the smallest radius among them (first: that radius)."""
    r = min(C.shape[-1] // 2 for C in windows)
    return [r, *(_crop(C, r) for C in windows)]


def _radius(r: int, c: int, budget: int) -> int:
    """The largest radius ``<= r`` whose window of ``c`` channels fits in ``budget`` entries."""
    fit = int((np.sqrt(budget) / max(c, 1) - 1) // 2)
    return max(0, min(r, fit))


def _affine(node: _Node, s: np.ndarray, m: np.ndarray) -> _Node:
    """``s z + h`` per channel, with the mean ``m`` it gives."""
    K = s[:, None, None, None] * node.K * s[None, :, None, None]
    X = None if node.X is None else s[:, None, None, None] * node.X
    return _Node(m, K, node.d, X, node.a, (*node.ops, ("scale", s)))


def _correlation(C: np.ndarray) -> np.ndarray:
    """The correlation matrix of the covariance ``C`` (a unit with no spread: uncorrelated)."""
    sd = np.sqrt(np.maximum(np.diagonal(C), 0.0))
    safe = np.where(sd > 0, sd, 1.0)
    rho = np.clip(C / safe[:, None] / safe[None, :], -1.0, 1.0)
    rho = 0.5 * (rho + rho.T)
    np.fill_diagonal(rho, 1.0)
    return rho


def _relu(m: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, window and Stein slope ``Φ(μ/σ)`` of ``relu(z)``, ``z`` Gaussian with ``(m, K)``."""
    c, w = K.shape[0], K.shape[-1]
    r = w // 2
    sd = np.sqrt(np.maximum(np.diagonal(K[:, :, r, r]), 0.0))
    safe = np.where(sd > 0, sd, 1.0)
    # K[a, b, δ] = K[b, a, −δ]: the closed form (the walk's main cost) runs on one entry of
    # each such pair, their mean, and the other is its mirror, so the result is symmetric too
    half, mirror = _half_window(c, w)
    Kf = K.reshape(-1)
    unit_a, unit_b = half // (c * w * w), half // (w * w) % c
    rho = np.clip(0.5 * (Kf[half] + Kf[mirror[half]]) / safe[unit_a] / safe[unit_b], -1.0, 1.0)
    Ea = relu_mean(m, sd)
    cov = np.empty(c * c * w * w)
    cov[half] = relu_product_mean(m[unit_a], sd[unit_a], m[unit_b], sd[unit_b], rho) - Ea[unit_a] * Ea[unit_b]
    cov[mirror[half]] = cov[half]
    slope = np.where(sd > 0, ndtr(m / safe), (m > 0).astype(np.float64))
    return Ea, cov.reshape(K.shape), slope


@lru_cache(maxsize=8)  # the same few shapes recur through a network's ReLUs
def _half_window(c: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The flat indices of a ``(c, c, w, w)`` window with one entry of each pair
    ``(a, b, δ)``, ``(b, a, −δ)`` (the first in C order), and every entry's mirror."""
    flat = np.arange(c * c * w * w).reshape(c, c, w, w)
    mirror = np.transpose(flat, (1, 0, 2, 3))[:, :, ::-1, ::-1].reshape(-1)
    return np.flatnonzero(flat.reshape(-1) <= mirror), mirror
