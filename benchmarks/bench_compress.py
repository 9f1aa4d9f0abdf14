"""End-to-end benchmark of tropref.compress_layer (TropNNC) at VGG-16 scale (issue 5).

Two parts, both printing and never asserting:

``--layers fc6-10 fc7-50 ...``
    ``compress_layer(W, b, k, W_next=..., b_next=..., method="tropnnc", cluster="kmeans",
    seed=0)`` on random He-normal layers of VGG-16's shapes, timed with tropref's K-means
    and with the same TropNNC steps where ``sklearn.cluster.KMeans(init="k-means++",
    n_init=1)`` does the clustering (``tropref.methods.partition.kmeans`` monkeypatched),
    same ``max_iter`` and ``tol``; the clustering objectives of both are printed beside the
    times. The last column times TropNNC's default (Ward partition, no K-means).
``--ward fc7-10 fc6-10 ...``
    TropNNC's default (``compress_layer(W, b, k, W_next=V, seed=0)``: Ward partition) on the
    same layers, ``--repeat`` times, each run beside two references measured in the same
    process right after it (best of 3): the *GEMM floor*, one product ``A · Ãᵀ`` of the
    layer's canonical vectors ``A = [W | b]`` with the kept units, and the layer's *own Gram
    matrix* ``A Aᵀ`` (in the layer's dtype), the lower bound of exact Ward. Prints the
    time, its split (``info["time_s"]``, and Ward's own call), and the ratios to both.
``--vgg``
    A whole VGG-16-shaped network (13 convolutions, fc6, fc7, fc8: about 138 M parameters)
    compressed at ``--keep`` (default 50 %) front to back, every hidden layer through
    ``compress_layer`` with the next layer rewritten for the kept units; per-layer times.

    python benchmarks/bench_compress.py --layers fc7-10 fc7-50 fc6-10
    python benchmarks/bench_compress.py --ward fc7-10 fc6-10 --repeat 3
    python benchmarks/bench_compress.py --vgg
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import tropref
from tropref.cluster import KMeansResult
from tropref.methods import partition

# (name, n units, input shape of one unit, next layer's view of the units)
FC = {"fc6": (4096, 25088, 4096), "fc7": (4096, 4096, 4096)}
VGG_CONVS = [
    (64, 3),
    (64, 64),
    (128, 64),
    (128, 128),
    (256, 128),
    (256, 256),
    (256, 256),
    (512, 256),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
]


def he(rng, shape, fan_in, dtype):
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def sklearn_kmeans(X, k, *, weights=None, n_init=1, max_iter=300, tol=1e-4, init=None, seed=None, **_):
    """Drop-in for tropref.cluster.kmeans backed by scikit-learn (k-means++, n_init=1)."""
    from sklearn.cluster import KMeans

    km = KMeans(k, init="k-means++", n_init=1, max_iter=max_iter, tol=tol, random_state=seed)
    km.fit(np.asarray(X), sample_weight=None if weights is None else np.asarray(weights))
    return KMeansResult(
        km.labels_.astype(np.int64),
        km.cluster_centers_.astype(X.dtype),
        float(km.inertia_),
        int(km.n_iter_),
        int(seed or 0),
    )


class Recorder:
    """Wraps partition.kmeans to record the clustering objective and time of each call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, X, k, **kw):
        t = time.perf_counter()
        res = self.fn(X, k, **kw)
        self.calls.append((time.perf_counter() - t, res.objective, res.n_iter))
        return res


def compress(W, b, k, W_next, b_next, kmeans_fn, **options):
    saved = partition.kmeans
    partition.kmeans = rec = Recorder(kmeans_fn)
    try:
        t = time.perf_counter()
        res = tropref.compress_layer(W, b, k, W_next=W_next, b_next=b_next, method="tropnnc", seed=0, **options)
        return res, time.perf_counter() - t, rec.calls
    finally:
        partition.kmeans = saved


def layer_case(case: str, dtype: str):
    """``"fc7-10"``: the layer ``FC["fc7"]`` with He-initialised weights (seed 0), zero
    biases, its next layer, and the ``k`` that keeps 10 % of its units."""
    name, pct = case.split("-")
    n, fan_in, m = FC[name]
    rng = np.random.default_rng(0)
    W, b = he(rng, (n, fan_in), fan_in, dtype), np.zeros(n, dtype)
    V, c = he(rng, (m, n), n, dtype), np.zeros(m, dtype)
    return W, b, V, c, round(n * int(pct) / 100)


def layers(args):
    print(
        "layer    dtype       n      d     k | tropref s  (clustering s, obj, iters) | sklearn-backed s  "
        "(clustering s, obj, iters) | speed-up  obj ratio | default (Ward) s"
    )
    for case in args.layers:
        W, b, V, c, k = layer_case(case, args.dtype)
        n, fan_in = W.shape
        _, t_ours, calls = compress(W, b, k, V, c, partition.kmeans, cluster="kmeans")
        ours = f"{t_ours:9.2f}  ({sum(x[0] for x in calls):6.2f}, {sum(x[1] for x in calls):.6g}, {calls[0][2]})"
        if args.sklearn:
            _, t_sk, sk = compress(W, b, k, V, c, sklearn_kmeans, cluster="kmeans")
            theirs = f"{t_sk:9.1f}  ({sum(x[0] for x in sk):6.1f}, {sum(x[1] for x in sk):.6g}, {sk[0][2]})"
            tail = f"{t_sk / t_ours:7.0f}x  {sum(x[1] for x in calls) / sum(x[1] for x in sk):.4f}"
        else:
            theirs, tail = "-", "-"
        _, t_ward, _ = compress(W, b, k, V, c, partition.kmeans)
        print(
            f"{case:8s} {args.dtype:8s} {n:5d} {fan_in + 1:6d} {k:5d} | {ours} | {theirs} | {tail} | {t_ward:.2f}",
            flush=True,
        )


def best_of(fn, times=3):
    best = math.inf
    for _ in range(times):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def ward_floors(args):
    """TropNNC's default on one layer against the GEMM floor and the layer's own Gram matrix."""
    print(
        "layer    dtype       n      d     k | run | total s  (prepass method rewrite cert; ward) | "
        "floor s  gram s | floors  x gram"
    )
    for case in args.ward:
        W, b, V, c, k = layer_case(case, args.dtype)
        n, fan_in = W.shape
        A = np.concatenate([W, b[:, None]], axis=1)
        for run in range(args.repeat):
            ward_time: list[float] = []
            saved = partition.ward

            def timed(*a, saved=saved, ward_time=ward_time, **kw):
                t0 = time.perf_counter()
                out = saved(*a, **kw)
                ward_time.append(time.perf_counter() - t0)
                return out

            partition.ward = timed
            try:
                t = time.perf_counter()
                res = tropref.compress_layer(W, b, k, W_next=V, b_next=c, seed=0)
                total = time.perf_counter() - t
            finally:
                partition.ward = saved
            kept = np.concatenate([np.asarray(res.W), np.asarray(res.b)[:, None]], axis=1)
            floor = best_of(lambda A=A, kept=kept: A @ kept.T)
            gram = best_of(lambda A=A: A @ A.T)
            split = " ".join(f"{res.info['time_s'][s]:.2f}" for s in ("prepass", "method", "rewrite", "certificate"))
            print(
                f"{case:8s} {args.dtype:8s} {n:5d} {fan_in + 1:6d} {k:5d} | {run:3d} | {total:7.2f}  ({split}; "
                f"{sum(ward_time):.2f}) | {floor:7.4f} {gram:6.3f} | {total / floor:6.1f} {total / gram:6.2f}",
                flush=True,
            )


def vgg(args):
    """Compress a random VGG-16-shaped network front to back; print where the time goes."""
    rng = np.random.default_rng(0)
    dt = args.dtype
    net = []  # (W, b) with W (n, C, 3, 3) for convolutions, (n, d) for dense layers
    c_in = 3
    for n_out, c in VGG_CONVS:
        net.append((he(rng, (n_out, c, 3, 3), c * 9, dt), np.zeros(n_out, dt)))
        c_in = n_out
    net.append((he(rng, (4096, c_in * 49), c_in * 49, dt), np.zeros(4096, dt)))
    net.append((he(rng, (4096, 4096), 4096, dt), np.zeros(4096, dt)))
    net.append((he(rng, (1000, 4096), 4096, dt), np.zeros(1000, dt)))
    params = sum(W.size + b.size for W, b in net)
    print(f"VGG-16-shaped network, {params / 1e6:.1f} M parameters, {dt}, keep {args.keep:.0%}")
    print("layer  units  kept  fan-in |  time s  (method s)")
    total = time.perf_counter()
    for i in range(len(net) - 1):
        W, b = net[i]
        Wn, bn = net[i + 1]
        n = W.shape[0]
        if Wn.ndim == 2 and W.ndim == 4:  # the flatten before fc6: channel j owns 49 columns
            Wn_view = Wn.reshape(Wn.shape[0], n, -1)
        else:
            Wn_view = Wn
        k = max(1, round(n * args.keep))
        res, t, _ = compress(W, b, k, Wn_view, bn, partition.kmeans)
        net[i] = (np.asarray(res.W), np.asarray(res.b))
        W_next = np.asarray(res.W_next)
        if Wn.ndim == 2:  # back from the (m, n, s) view to a dense (m, n·s) matrix
            W_next = W_next.reshape(Wn.shape[0], -1)
        net[i + 1] = (W_next, np.asarray(res.b_next))
        print(
            f"{i:5d} {n:6d} {res.W.shape[0]:5d} {int(np.prod(W.shape[1:])) + 1:7d} | {t:7.2f}  "
            f"({res.info['time_s']['method']:6.2f})",
            flush=True,
        )
    total = time.perf_counter() - total
    params_after = sum(W.size + b.size for W, b in net)
    print(f"total {total:.1f} s; parameters {params / 1e6:.1f} M -> {params_after / 1e6:.1f} M")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", nargs="*", default=[])
    ap.add_argument("--ward", nargs="*", default=[], help="TropNNC's default against the floor and the Gram")
    ap.add_argument("--repeat", type=int, default=3, help="runs per --ward case")
    ap.add_argument("--vgg", action="store_true")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-sklearn", dest="sklearn", action="store_false")
    args = ap.parse_args(argv)
    print(
        f"numpy {np.__version__}; cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
        f"tropref from {os.path.dirname(tropref.__file__)}"
    )
    if args.layers:
        layers(args)
    if args.ward:
        ward_floors(args)
    if args.vgg:
        vgg(args)


if __name__ == "__main__":
    main()
