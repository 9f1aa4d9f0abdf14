"""A local certificate: a sound bound on ``|f(x′) − f̂(x′)|`` over L∞ balls around inputs.

:func:`certify` bounds the change between a network and its compressed copy on every input
within ``eps`` of given samples, by a linear relaxation of their *difference* computed
jointly (``docs/theory.md``, "Local certificates"):

1. per sample, elementwise bounds on every layer's output of both networks over the ball,
   by interval arithmetic, tightened at the inputs of ReLUs and max-poolings by a backward
   linear bound (CROWN-style) for the neurons whose sign the intervals leave open, where a
   budget allows;
2. one backward pass through each network from its outputs (``+e_i`` for the original,
   ``−e_i`` for the compressed one), through the same relaxations, giving linear functions
   of the common input ``x′`` that bound ``f_i − f̂_i`` from above and below. They are added
   *before* the maximum over the ball is taken, so the parts the two networks share cancel
   (the difference, not two intervals, is bounded);
3. the bound is the larger of the two sides' maxima over the ball, capped by the span of
   the two output boxes and, with a zonotope, by the range of the difference of the two
   output zonotopes (their generators are numbered alike, so the input's cancel).

Exact ReLUs (both sides stable) contribute nothing beyond the linear map, so at ``eps = 0``
the bound is the measured ``|f(x) − f̂(x)|`` up to float64 rounding. The arithmetic runs on
NumPy ``float64`` host copies of the networks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._array import Array, to_numpy
from .bounds import node_step
from .graph import Network, map_arrays
from .kinds import Zonotope, kind_of
from .layers import Identity, Layer, Softmax
from .shapes import output_shapes

__all__ = ["certify"]

_XP = None  # the NumPy array-API namespace, imported once on first use
_Bounds = dict[int, tuple[np.ndarray, np.ndarray]]
_ROUNDING = 1e-9  # relative margin added for float64 rounding of the certificate's own arithmetic


def _xp() -> Any:
    global _XP
    if _XP is None:
        import array_api_compat.numpy as xp

        _XP = xp
    return _XP


def certify(
    original: Network,
    compressed: Network,
    x: Array,
    eps: float,
    *,
    refine: int | None = None,
    generators: int = -1,
    chunk: int = 25,
    workers: int | None = None,
) -> np.ndarray:
    """Bound the change of every output over the L∞ ball of radius ``eps`` around each input.

    Returns ``B`` with ``|f_i(x′) − f̂_i(x′)| <= B[n, i]`` for every ``x′`` with
    ``‖x′ − x_n‖∞ <= eps``, where ``f`` is ``original`` and ``f̂`` is ``compressed``. The two
    networks may differ in anything but their input and output shapes (hidden widths,
    folded BatchNorms, graphs with :class:`Add` and :class:`Concat`). The method is a joint
    linear relaxation of ``f − f̂`` (see the module notes and ``docs/theory.md``, "Local
    certificates"); at ``eps = 0`` it returns ``|f(x) − f̂(x)|`` up to float64 rounding.

    Parameters
    ----------
    original, compressed : Network
        Two networks with the same input and output shapes: ReLU networks of dense and
        convolutional layers, BatchNorm, max- and average pooling, flatten, dropout,
        identity, additions and concatenations; a :class:`Softmax` only as the last layer
        (then the probabilities' change is bounded, ``|Δp_i| <= max_j |Δz_j| / 2``).
    x : array, shape (N, *input_shape)
        The centres of the balls (any array-API array; read as float64).
    eps : float
        The radius of the L∞ ball, ``>= 0``.
    refine : int, optional
        Largest number of neurons per sample and layer whose interval bounds are tightened
        by a backward linear bound (0: none). None (the default): 256 for networks of at
        most 5 dense and convolutional layers, 0 for deeper ones, where each tightening
        runs back through every earlier layer (minutes per sample on ResNet-20 for a bound
        about half as large).
    generators : int
        Largest number of new generators per ReLU or max-pooling layer of the zonotope
        carried alongside the intervals (one per open ReLU or uncertain max, the largest;
        the rest are boxed); ``-1``: no zonotope. A cap above the number of units (e.g.
        ``10**6``) boxes nothing: far tighter on deep convolutional nets (the box grows
        like the intervals), at a cost in time and memory proportional to the number of
        generators (about a minute and 3 GB per image on the VGG-style net).
    chunk : int
        Samples processed at once (memory), per worker.
    workers : int, optional
        Threads that bound chunks side by side (NumPy's array operations release the GIL);
        None (the default): one per CPU this process may use, at most one per chunk. The
        bounds are the same to the bit for any number of workers (the chunks are); memory
        grows with it.

    Returns
    -------
    numpy.ndarray, shape (N, outputs)
        The bound per sample and output (outputs flattened).

    Raises
    ------
    TypeError
        When ``original`` or ``compressed`` is not a :class:`Network`.
    ValueError
        For a negative or non-finite ``eps``; when ``x`` is not a batch of the networks'
        input shape; when the networks' input or output shapes differ; for a softmax that
        is not the last layer.

    References
    ----------
    ``docs/theory.md``, "Local certificates"; Paulsen, Wang, Wang, "ReluDiff: differential
    verification of deep neural networks", ICSE 2020; Zhang et al., "Efficient neural
    network robustness certification with general activation functions" (CROWN), NeurIPS
    2018.

    Examples
    --------
    A hidden layer of 8 units compressed to 4 by :func:`tropref.compress_network`; the bound
    at radius 0.05 holds on points of the ball, and at radius 0 it is the measured error.

    >>> import numpy as np
    >>> import tropref
    >>> from tropref.network import Network, Dense, ReLU
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(8, 3)), rng.normal(size=8)), ReLU(), Dense(rng.normal(size=(2, 8)))],
    ...               input_shape=(3,))
    >>> small = tropref.compress_network(net, keep=0.5, seed=0)[0]
    >>> x = rng.uniform(-1, 1, size=(5, 3))
    >>> B = certify(net, small, x, 0.05)
    >>> B.shape
    (5, 2)
    >>> xs = x + rng.uniform(-0.05, 0.05, size=(5, 3))
    >>> bool(np.all(np.abs(net(xs) - small(xs)) <= B))
    True
    >>> bool(np.allclose(certify(net, small, x, 0.0), np.abs(net(x) - small(x))))
    True
    """
    nets = _checked(original, compressed, x, eps)
    if refine is None:
        depth = max(sum(kind_of(l).linear for l in n.layers) for n in nets[:2])
        refine = 256 if depth <= 5 else 0
    x = to_numpy(x).astype(np.float64)
    if int(x.shape[0]) == 0:
        return np.zeros((0, int(np.prod(output_shapes(nets[0], tuple(x.shape[1:]))[-1]))))
    n = int(x.shape[0])
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"`workers` must be a positive int or None, got {workers!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"`chunk` must be a positive int, got {chunk!r}")
    # the chunks are those of one worker: a product's sums may depend on its batch size, so
    # the bounds are the same to the bit whatever the number of workers
    starts = range(0, n, int(chunk))
    bound = lambda s: _certify_chunk(nets, x[s : s + chunk], float(eps), int(refine), int(generators))  # noqa: E731
    if workers == 1 or len(starts) == 1:
        return np.concatenate([bound(s) for s in starts], axis=0)
    with ThreadPoolExecutor(max_workers=min(int(workers), len(starts))) as pool:
        return np.concatenate(list(pool.map(bound, starts)), axis=0)


def _checked(original: Any, compressed: Any, x: Any, eps: Any) -> tuple[Network, Network, bool]:
    """The two networks as float64 host copies without a final softmax, and whether they had one."""
    for what, net in (("original", original), ("compressed", compressed)):
        if not isinstance(net, Network):
            raise TypeError(f"`{what}` must be a tropref.network.Network, got {type(net).__name__}")
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"`eps` must be a non-negative number, got {eps!r}") from None
    if not (e >= 0 and math.isfinite(e)):
        raise ValueError(f"`eps` must be a non-negative finite number, got {eps!r}")
    if getattr(x, "ndim", 0) not in (2, 4):
        raise ValueError(f"`x` must be a batch (N, d) or (N, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
    shape = tuple(int(s) for s in x.shape[1:])
    out = []
    soft = []
    for what, net in (("original", original), ("compressed", compressed)):
        if net.input_shape is not None and tuple(net.input_shape) != shape:
            raise ValueError(f"`x` holds samples of shape {shape}, `{what}` reads {tuple(net.input_shape)}")
        # a final softmax is certify's own rule (the logits' bound, 1/2-Lipschitz), not a step
        # of its kind: the type itself is asked for
        for i, layer in enumerate(net.layers[:-1]):
            if isinstance(layer, Softmax):
                raise ValueError(f"{what}: {net.label(i)} is a softmax inside the network; only a final one is bounded")
        host = map_arrays(net, lambda a: to_numpy(a).astype(np.float64))
        last = bool(net.layers) and isinstance(net.layers[-1], Softmax)
        soft.append(last)
        if last:
            host = Network((*host.layers[:-1], Identity()), host.input_shape, host.inputs)
        out.append(host)
    s1, s2 = (output_shapes(n, shape)[-1] if n.layers else shape for n in out)
    if s1 != s2 or soft[0] != soft[1]:
        raise ValueError(
            f"the networks' outputs differ: `original` gives {s1}{' (softmax)' * soft[0]}, "
            f"`compressed` {s2}{' (softmax)' * soft[1]}"
        )
    return out[0], out[1], soft[0]


def _certify_chunk(
    nets: tuple[Network, Network, bool], x: np.ndarray, eps: float, refine: int, generators: int
) -> np.ndarray:
    f, g, softmax = nets
    n = int(x.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        if generators >= 0 and eps > 0:
            bf, bg, zdiff = _pair_bounds(f, g, x, eps, refine, generators)
        else:
            bf, bg, zdiff = _bounds(f, x, eps, refine), _bounds(g, x, eps, refine), None
        (lo_f, hi_f), (lo_g, hi_g) = _out(f, bf, x, eps), _out(g, bg, x, eps)
        lo_f, hi_f, lo_g, hi_g = (a.reshape(n, -1) for a in (lo_f, hi_f, lo_g, hi_g))
        k = int(lo_f.shape[1])
        spec = np.concatenate([np.eye(k), -np.eye(k)])  # upper bounds of Δ_i and of −Δ_i
        # the backward passes a few samples at a time, so that their coefficients (2k rows
        # of the widest layer per sample) stay in cache through the elementwise steps
        widest = max(int(np.prod(lo.shape[1:])) for b in (bf, bg) for lo, _ in b.values())
        step = max(1, _BACKWARD // (2 * k * widest))
        up = np.concatenate([_joint_upper(f, g, bf, bg, spec, x, eps, a, a + step) for a in range(0, n, step)])
        bound = np.maximum(up[:, :k], up[:, k:])
        span = np.maximum(hi_f - lo_g, hi_g - lo_f)
        bound = np.minimum(bound, span)
        if zdiff is not None:
            bound = np.minimum(bound, zdiff)
    bound = np.maximum(bound, 0.0)
    bound = bound + _ROUNDING * (1.0 + bound + np.maximum(np.abs(hi_f), np.abs(lo_f)))
    if softmax:  # each p_i is 1/2-Lipschitz in the largest change of the logits, and lies in [0, 1]
        bound = np.broadcast_to(np.minimum(np.max(bound, axis=1, keepdims=True) / 2, 1.0), bound.shape).copy()
    if not np.all(np.isfinite(bound)):
        raise FloatingPointError("the local certificate overflowed float64 (the interval bounds are too wide)")
    return bound


_BACKWARD = 2**19
"""Entries of the widest layer's coefficients in one block of samples of the backward passes (4 MB)."""


def _joint_upper(
    f: Network, g: Network, bf: _Bounds, bg: _Bounds, spec: np.ndarray, x: np.ndarray, eps: float, a: int, b: int
) -> np.ndarray:
    """Samples ``a:b``: the upper bounds over their balls of ``spec · (f − g)``, one per row of
    ``spec``, from the two networks' backward bounds added before the maximum is taken."""
    xs = x[a:b]
    start = np.broadcast_to(spec, (int(xs.shape[0]), *spec.shape))
    cut = lambda bounds: {i: (lo[a:b], hi[a:b]) for i, (lo, hi) in bounds.items()}  # noqa: E731
    lam_f, c_f = _backward(f, cut(bf), _last(f), start, xs, eps)
    lam_g, c_g = _backward(g, cut(bg), _last(g), -start, xs, eps)
    return _concretize(lam_f + lam_g, c_f + c_g, xs, eps)  # (b − a, rows)


def _last(net: Network) -> int:
    return len(net.layers) - 1


def _out(net: Network, bounds: dict[int, tuple[np.ndarray, np.ndarray]], x: np.ndarray, eps: float) -> Any:
    return bounds[_last(net)] if net.layers else (x - eps, x + eps)


# -- elementwise bounds per sample -----------------------------------------------------------


def _bounds(net: Network, x: np.ndarray, eps: float, refine: int, zono: Any = None) -> _Bounds:
    """Bounds ``(lo, hi)`` of every layer's output over the balls, stacked over samples, by
    intervals (and backward refinement where a ReLU or max-pooling reads), intersected with
    ``zono``'s where one is carried alongside (one sample then)."""
    vals: _Bounds = {-1: (x - eps, x + eps)}
    read = _read_by_nonlinear(net)
    for i in range(len(net.layers)):
        _step(net, zono, vals, i, x, eps, refine if i in read else 0)
    return vals


def _pair_bounds(
    f: Network, g: Network, x: np.ndarray, eps: float, refine: int, generators: int
) -> tuple[_Bounds, _Bounds, np.ndarray]:
    """Both networks' bounds, stacked over samples, and the bound on ``|f − g|`` from their
    output zonotopes, one sample at a time."""
    per = [_pair_sample(f, g, x[s : s + 1], eps, refine, generators) for s in range(int(x.shape[0]))]
    stack = lambda k: {  # noqa: E731
        i: (np.concatenate([b[k][i][0] for b in per]), np.concatenate([b[k][i][1] for b in per])) for i in per[0][k]
    }
    return stack(0), stack(1), np.stack([b[2] for b in per])


def _pair_sample(
    f: Network, g: Network, x: np.ndarray, eps: float, refine: int, generators: int
) -> tuple[_Bounds, _Bounds, np.ndarray]:
    """One sample: each network's bounds with a zonotope carried alongside, the two over one
    numbering of generators (the input's first, then each new one once), and the bound on
    ``|f − g|`` from their output zonotopes."""
    rows = [int(np.prod(x.shape[1:]))]
    out = []
    for net in (f, g):
        zono = _Zonotope(net, x, eps, generators, rows)
        out.append((_bounds(net, x, eps, refine, zono), zono.state[_last(net)]))
    (vf, zf), (vg, zg) = out
    return vf, vg, _zono_difference(zf, zg)


def _step(net: Network, zono: Any, vals: _Bounds, i: int, x: np.ndarray, eps: float, refine: int) -> None:
    """Layer ``i``'s bounds: interval arithmetic, intersected with the zonotope carried
    alongside (if any), and tightened by backward linear bounds for at most ``refine``
    entries whose sign is still open."""
    lo, hi = node_step(_xp(), net.layers[i], [vals[p] for p in net.sources(i)])
    if zono is not None:
        z_lo, z_hi = zono.step(i, vals)
        lo, hi = np.maximum(lo, z_lo), np.minimum(hi, z_hi)
    vals[i] = (lo, hi)
    if refine > 0 and eps > 0:
        vals[i] = _refine(net, vals, i, x, eps, refine)


def _read_by_nonlinear(net: Network) -> set[int]:
    """The layers whose output a ReLU or max-pooling reads: where tightening pays."""
    return {p for i, layer in enumerate(net.layers) if _nonlinear(layer) for p in net.sources(i)}


def _zono_difference(zf: Any, zg: Any) -> np.ndarray:
    """``max |f − g|`` over one sample's ball from the two output zonotopes: their
    generators are numbered alike, so the coefficients are subtracted before the absolute
    value is taken; the boxes add."""
    (Gf, cf, rf), (Gg, cg, rg) = zf, zg
    g = max(Gf.shape[0], Gg.shape[0])
    dG = (_pad_rows(Gf, g) - _pad_rows(Gg, g)).reshape(g, -1)
    return np.abs(cf - cg).reshape(-1) + np.abs(dG).sum(axis=0) + (rf + rg).reshape(-1)


def _nonlinear(layer: Layer) -> bool:
    return kind_of(layer).role in ("relu", "max")


class _Zonotope:
    """A zonotope ``c + G ε + [−r, r]`` (``ε ∈ [−1, 1]^g``) per layer output of one sample,
    carried forward: exact through affine layers, DeepZ's relaxation at open ReLUs, exact at
    max-poolings whose winner is certain and an interval elsewhere. Each relaxation's new
    independent term becomes a generator of its own (at most ``generators`` per layer, the
    largest; the rest go into the box ``r``): a generator is carried through the next layers
    by ``W``, where a box is carried by ``|W|`` and loses every cancellation."""

    def __init__(self, net: Network, x: np.ndarray, eps: float, generators: int, rows: list[int] | None = None) -> None:
        d = int(np.prod(x.shape[1:]))
        self.net, self.cap, self.xp = net, generators, _xp()
        # generators are numbered across every zonotope sharing ``rows`` (the two networks of a
        # pair), so that equal rows are the same ε and their coefficients may be subtracted
        self.rows = [d] if rows is None else rows
        self.state = {-1: (eps * np.eye(d).reshape((d, *x.shape[1:])), x, np.zeros_like(x))}
        users = net.users()
        self.last = {k: max(u) for k, u in enumerate(users) if u}
        self.last[-1] = max((i for i in range(len(net.layers)) if -1 in net.sources(i)), default=-1)

    def step(self, i: int, vals: _Bounds) -> tuple[np.ndarray, np.ndarray]:
        """Layer ``i``'s output zonotope, and the bounds it implies."""
        layer, src = self.net.layers[i], self.net.sources(i)
        ins = [self.state[p] for p in src]
        if len(ins) > 1:  # a junction's inputs over the same generators: those created after one are zero in it
            g = max(G.shape[0] for G, _, _ in ins)
            ins = [(_pad_rows(G, g), c, r) for G, c, r in ins]
        out = self._node(layer, ins, [vals[p] for p in src])
        self.state[i] = out
        for p in set(src):
            if self.last.get(p) == i:
                del self.state[p]
        G, c, r = out
        spread = np.abs(G).sum(axis=0, keepdims=True) + r
        return c - spread, c + spread

    def _node(self, layer: Layer, ins: Sequence[Zonotope], bounds: Sequence[tuple[np.ndarray, np.ndarray]]) -> Zonotope:
        """A layer's output zonotope: its kind's step, the new independent terms as generators."""
        out, mu = kind_of(layer).zonotope(self.xp, layer, ins, bounds)
        return out if mu is None else self._new_generators(*out, mu)

    def _new_generators(self, G: np.ndarray, c: np.ndarray, r: np.ndarray, mu: np.ndarray) -> Any:
        """``c + G ε + r`` plus an independent term in ``[−mu, mu]`` per entry: a new generator
        each for the ``cap`` largest, the box ``r`` for the rest."""
        flat = mu.reshape(-1)
        picked = np.flatnonzero(flat > 0)
        if picked.size > self.cap:
            picked = picked[np.argsort(-flat[picked], kind="stable")[: self.cap]]
        rest = flat.copy()
        rest[picked] = 0.0
        g = self.rows[0]
        out = np.zeros((g + picked.size, *G.shape[1:]))  # one allocation: G, zero rows, the new ones
        out[: G.shape[0]] = G
        out.reshape(g + picked.size, -1)[g + np.arange(picked.size), picked] = flat[picked]
        self.rows[0] += picked.size
        return out, c, r + rest.reshape(r.shape)


def _pad_rows(G: np.ndarray, g: int) -> np.ndarray:
    """``G`` with zero rows appended up to ``g`` generators (those created after it)."""
    if G.shape[0] == g:
        return G
    return np.concatenate([G, np.zeros((g - G.shape[0], *G.shape[1:]))])


def _refine(
    net: Network, vals: dict[int, tuple[np.ndarray, np.ndarray]], i: int, x: np.ndarray, eps: float, refine: int
) -> tuple[np.ndarray, np.ndarray]:
    """Layer ``i``'s bounds, tightened per sample for the entries whose sign is open by a
    backward linear bound through the relaxations of the layers before it."""
    lo, hi = (a.copy() for a in vals[i])
    n = int(lo.shape[0])
    shape = tuple(lo.shape[1:])
    flat_lo, flat_hi = lo.reshape(n, -1), hi.reshape(n, -1)
    for s in range(n):
        open_ = np.flatnonzero((flat_lo[s] < 0) & (flat_hi[s] > 0))
        if open_.size == 0:
            continue
        if open_.size > refine:  # the widest open entries, where the relaxation costs most
            slack = np.minimum(-flat_lo[s, open_], flat_hi[s, open_])
            open_ = open_[np.argsort(-slack, kind="stable")[:refine]]
        m = open_.size
        start = np.zeros((1, 2 * m, flat_lo.shape[1]))
        start[0, np.arange(m), open_] = 1.0
        start[0, m + np.arange(m), open_] = -1.0
        sub = {k: (a[s : s + 1], b[s : s + 1]) for k, (a, b) in vals.items() if k < i}
        lam, c = _backward(net, sub, i, start.reshape((1, 2 * m, *shape)), x[s : s + 1], eps)
        up = _concretize(lam, c, x[s : s + 1], eps)[0]
        up = up + _ROUNDING * (1.0 + np.abs(up))
        flat_hi[s, open_] = np.minimum(flat_hi[s, open_], up[:m])
        flat_lo[s, open_] = np.maximum(flat_lo[s, open_], -up[m:])
    return flat_lo.reshape(lo.shape), flat_hi.reshape(hi.shape)


# -- backward linear bounds ------------------------------------------------------------------


def _concretize(lam: np.ndarray, c: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    """The maximum of ``lam · x′ + c`` over the balls: ``lam · x + eps ‖lam‖₁ + c``."""
    n, s = int(lam.shape[0]), int(lam.shape[1])
    lam = lam.reshape(n, s, -1)
    return np.einsum("nsd,nd->ns", lam, x.reshape(n, -1)) + eps * np.abs(lam).sum(axis=2) + c


def _backward(
    net: Network,
    bounds: dict[int, tuple[np.ndarray, np.ndarray]],
    top: int,
    start: np.ndarray,
    x: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``lam`` on the input and constants ``c`` with ``start · v_top <= lam · x′
    + c`` for every ``x′`` in the balls (upper bounds, one per row of ``start``)."""
    n, s = int(start.shape[0]), int(start.shape[1])
    lams: dict[int, np.ndarray] = {top: np.array(start, dtype=np.float64)}
    const = np.zeros((n, s))
    for k in range(top, -1, -1):
        if k not in lams:
            continue
        lam = lams.pop(k)
        layer, src = net.layers[k], net.sources(k)
        ins = [(x - eps, x + eps) if p < 0 else bounds[p] for p in src]
        back, c = kind_of(layer).back(layer, lam, ins)
        const = const + c
        for p, lam_p in zip(src, back, strict=True):
            _accumulate(lams, p, lam_p)
    lam_in = lams.pop(-1, None)
    if lam_in is None:
        lam_in = np.zeros((n, s, *x.shape[1:]))
    return lam_in, const


def _accumulate(lams: dict[int, np.ndarray], p: int, lam: np.ndarray) -> None:
    lams[p] = lam if p not in lams else lams[p] + lam
