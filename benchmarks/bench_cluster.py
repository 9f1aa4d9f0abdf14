"""Benchmark of tropref.cluster.kmeans against scikit-learn and the GEMM floor (issue 5).

For each layer shape (TropNNC's multi-output clustering problem: the neurons' unit
directions ``(w_j, b_j) / α_j`` weighted by ``α_j ‖W_next[:, j]‖``, random He-normal weights)
it prints, all measured in the same run:

- tropref: time split into the Gram matrix (once per call, Gram mode only), seeding,
  Lloyd iterations (and their count), final objective, peak extra memory (tracemalloc,
  relative to the layer's own size);
- the GEMM floor: the time of one ``X · Cᵀ`` product with ``k`` centres (best of 3);
- scikit-learn: ``KMeans(init="k-means++", n_init=1)`` with the same ``max_iter`` and
  ``tol``, split into its seeding (``sklearn.cluster.kmeans_plusplus``, the function
  ``KMeans`` calls) and its Lloyd iterations (``KMeans(init=those centres)``);
- ratios: tropref iteration / floor, (Gram + seeding) / floor, sklearn / tropref.

Where scikit-learn's k-means++ would exceed ``--sk-budget`` seconds (predicted from timing
it on a few centres, it is linear in ``k``), its seeding time is printed as an
extrapolation marked ``~`` and its iterations are timed from tropref's seeds for at most
``--sk-iters`` iterations; its final objective is then not available (``-``).

Run ``python benchmarks/bench_cluster.py --quick`` for a small subset,
``--scaling`` for the log-log slopes, ``--cases fc6-10 ...`` for chosen cases.
Numbers are printed, never asserted. Nothing here runs in the tests.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np
from layer_cases import CASES, LAYERS, QUICK, layer_problem

from tropref import _lloyd, cluster
from tropref._points import Points


def best_of(f, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


class PhaseTimer:
    """Times tropref's phases by wrapping its private steps (the public call is unchanged)."""

    def __init__(self):
        self.t = {}
        self._orig = {}

    def __enter__(self):
        for owner, name, label in [
            (Points, "__init__", "gram"),
            (_lloyd, "seed_indices", "seed"),
            (_lloyd, "lloyd", "lloyd"),
        ]:
            f = getattr(owner, name)
            self._orig[(owner, name)] = f

            def wrapped(*a, __f=f, __label=label, **kw):
                t = time.perf_counter()
                try:
                    return __f(*a, **kw)
                finally:
                    self.t[__label] = self.t.get(__label, 0.0) + time.perf_counter() - t

            setattr(owner, name, wrapped)
        return self

    def __exit__(self, *exc):
        for (owner, name), f in self._orig.items():
            setattr(owner, name, f)


def run_tropref(X, w, k, args):
    with PhaseTimer() as pt:
        t = time.perf_counter()
        res = cluster.kmeans(X, k, weights=w, n_init=args.n_init, max_iter=args.max_iter, tol=args.tol, seed=0)
        total = time.perf_counter() - t
    gram = (
        pt.t["gram"]
        if X.shape[0] <= X.shape[1] and _lloyd.choose_gram(*X.shape, k, args.n_init, args.max_iter, "k-means||")
        else 0.0
    )
    return res, total, gram, pt.t.get("seed", 0.0), pt.t.get("lloyd", 0.0)


def peak_memory(X, w, k, args) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    cluster.kmeans(X, k, weights=w, n_init=args.n_init, max_iter=args.max_iter, tol=args.tol, seed=0)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / X.nbytes


def run_sklearn(X, w, k, args, our_centres):
    from sklearn.cluster import KMeans, kmeans_plusplus

    # k-means++ seeds one centre after another: predict its time as k times the time per
    # centre measured on k0 centres (an under-estimate, as each step tries 2 + ln k points)
    k0 = max(1, min(k // 2, 16))
    predicted = best_of(lambda: kmeans_plusplus(X, k0, sample_weight=w, random_state=0), 1) * k / k0
    out = {"seed_pred": predicted}
    if predicted <= args.sk_budget:
        t = time.perf_counter()
        centres, _ = kmeans_plusplus(X, k, sample_weight=w, random_state=0)
        out["seed"] = time.perf_counter() - t
        t = time.perf_counter()
        km = KMeans(k, init=centres, n_init=1, max_iter=args.max_iter, tol=args.tol).fit(X, sample_weight=w)
        out["iter"] = time.perf_counter() - t
        out["n_iter"], out["obj"] = km.n_iter_, float(km.inertia_)
    else:  # seeding extrapolated; iterations timed from tropref's centres for a few steps
        t = time.perf_counter()
        km = KMeans(k, init=our_centres, n_init=1, max_iter=args.sk_iters, tol=0.0).fit(X, sample_weight=w)
        out["iter_each"] = (time.perf_counter() - t) / km.n_iter_
    return out


def fmt(x, spec=".2f", missing="-"):
    return missing if x is None else format(x, spec)


HEADER = (
    "case      dtype    n     d      k   | tropref: gram  seed   iters(n)       per-it  total   "
    "obj          mem/X | floor    it/fl seed/fl | sklearn: seed    iters(n)       per-it  obj          "
    "| speed-up  obj ratio"
)


def bench_case(name, dtype, args):
    layer, pct = CASES[name]
    n, fan_in, fan_next = LAYERS[layer]
    X, w = layer_problem(n, fan_in, fan_next, dtype)
    k = max(1, round(n * pct / 100))
    if n * fan_in < 10**6:  # small cases: warm up (imports, BLAS threads) before timing
        run_tropref(X, w, k, args)
    res, total, gram, seed, lloyd = run_tropref(X, w, k, args)
    C = np.asarray(res.centers)
    floor = best_of(lambda: X @ C.T, 5)
    mem = peak_memory(X, w, k, args) if args.memory else None
    per_it = lloyd / res.n_iter
    sk = run_sklearn(X, w, k, args, C) if args.sklearn else {}
    if "seed" in sk:
        sk_seed, sk_total = f"{sk['seed']:7.1f}", sk["seed"] + sk["iter"]
        sk_iters = f"{sk['iter']:6.2f} ({sk['n_iter']:3d})"
        sk_per, sk_obj = sk["iter"] / sk["n_iter"], sk["obj"]
    elif sk:
        sk_seed, sk_iters, sk_per, sk_obj = f"~{sk['seed_pred']:6.0f}", "     -      ", sk["iter_each"], None
        sk_total = sk["seed_pred"] + sk["iter_each"] * res.n_iter  # lower bound: as many iterations as ours
    else:
        sk_seed, sk_iters, sk_per, sk_obj, sk_total = "-", "-", None, None, None
    speed = f"{'~' if 'seed' not in sk else ''}{sk_total / total:.0f}x" if sk_total else "-"
    ratio = fmt(res.objective / sk_obj if sk_obj else None, ".4f")
    print(
        f"{name:9s} {dtype:7s} {n:5d} {X.shape[1]:6d} {k:4d} | "
        f"{gram:6.2f} {seed:6.2f} {lloyd:6.2f} ({res.n_iter:3d}) {per_it:7.3f} {total:6.2f}  "
        f"{res.objective:<12.6g} {fmt(mem, '4.2f'):>5s} | {floor:6.4f} {per_it / floor:5.2f} "
        f"{(gram + seed) / floor:6.1f}  | {sk_seed:>7s} {sk_iters} {fmt(sk_per, '7.3f')}  "
        f"{fmt(sk_obj, '<12.6g'):12s} | {speed:>8s}  {ratio}",
        flush=True,
    )


def bench_weiszfeld(name, dtype, args):
    """weiszfeld from kmeans labels: time per iteration against the floor, objectives."""
    layer, pct = CASES[name]
    X, w = layer_problem(*LAYERS[layer], dtype)
    k = max(1, round(X.shape[0] * pct / 100))
    res = cluster.kmeans(X, k, weights=w, n_init=1, seed=0)
    C = np.asarray(res.centers)
    before = float(np.sum(w.astype(np.float64) * np.linalg.norm(X - C[np.asarray(res.labels)], axis=1)))
    t = time.perf_counter()
    ref = cluster.weiszfeld(X, res.labels, k, weights=w, max_iter=args.weiszfeld_iters, tol=0.0)
    total = time.perf_counter() - t
    floor = best_of(lambda: X @ C.T, 5)
    print(
        f"{name:9s} {dtype:7s} {X.shape[0]:5d} {X.shape[1]:6d} {k:4d} | {total:7.2f} ({ref.n_iter:3d}) "
        f"{total / ref.n_iter:7.3f} | {floor:6.4f} {total / ref.n_iter / floor:6.2f} | "
        f"{before:<12.6g} {ref.objective:<12.6g} {ref.objective / before:.4f}",
        flush=True,
    )


def scaling(args):
    """Fitted slopes of log(time) against log(n), log(d), log(k) around n=1024, d=4096, k=256."""
    base = dict(n=1024, d=4096, k=256)
    grid = {"n": [512, 1024, 2048], "d": [2048, 4096, 8192], "k": [128, 256, 512]}
    print("\nscaling (float32, n_init=1, max_iter=10, tol=0): time of tropref.kmeans and of the floor")
    for var, values in grid.items():
        ts, fl = [], []
        for v in values:
            p = dict(base, **{var: v})
            rng = np.random.default_rng(1)
            X = rng.standard_normal((p["n"], p["d"])).astype(np.float32)
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            w = rng.uniform(0.5, 2.0, p["n"]).astype(np.float32)
            ts.append(
                best_of(
                    lambda X=X, k=p["k"], w=w: cluster.kmeans(X, k, weights=w, n_init=1, max_iter=10, tol=0.0, seed=0),
                    2,
                )
            )
            C = X[: p["k"]]
            fl.append(best_of(lambda X=X, C=C: X @ C.T))
        slope = np.polyfit(np.log(values), np.log(ts), 1)[0]
        slope_f = np.polyfit(np.log(values), np.log(fl), 1)[0]
        print(f"  {var}: {values}  tropref {[f'{t:.3f}' for t in ts]} s  slope {slope:.2f}   floor slope {slope_f:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset (float32 only)")
    ap.add_argument("--cases", nargs="*", default=None, help=f"among {sorted(CASES)}")
    ap.add_argument("--dtypes", nargs="*", default=None)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--n-init", type=int, default=1, help="tropref restarts (sklearn runs one)")
    ap.add_argument("--sk-budget", type=float, default=120.0, help="max seconds of sklearn seeding per case")
    ap.add_argument("--sk-iters", type=int, default=3)
    ap.add_argument("--no-sklearn", dest="sklearn", action="store_false")
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--scaling", action="store_true", help="also fit log-log slopes")
    ap.add_argument("--only-scaling", action="store_true", help="only the log-log slopes")
    ap.add_argument("--weiszfeld", action="store_true", help="time weiszfeld from kmeans labels instead")
    ap.add_argument("--weiszfeld-iters", type=int, default=10)
    args = ap.parse_args(argv)
    cases = args.cases or (QUICK if args.quick else list(CASES))
    dtypes = args.dtypes or (["float32"] if args.quick else ["float32", "float64"])
    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(
            f"{i['internal_api']} {i.get('version')} {i.get('architecture')} x{i['num_threads']}"
            for i in threadpool_info()
        )
    except ImportError:
        blas = "threadpoolctl not installed"
    print(
        f"numpy {np.__version__}; BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
        f"cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; max_iter={args.max_iter} "
        f"tol={args.tol} n_init={args.n_init}"
    )
    print("times in seconds; '~' marks an extrapolated sklearn seeding (see the module docstring)")
    if args.weiszfeld:
        print(f"weiszfeld, max_iter={args.weiszfeld_iters}, tol=0, from kmeans(n_init=1, seed=0) labels")
        print(
            "case      dtype    n     d      k   | total s (iters) per-it | floor  per-it/fl | "
            "unsquared obj: kmeans   weiszfeld    ratio"
        )
        for dtype in dtypes:
            for name in cases:
                bench_weiszfeld(name, dtype, args)
    elif not args.only_scaling:
        print(HEADER)
        for dtype in dtypes:
            for name in cases:
                bench_case(name, dtype, args)
    if args.scaling or args.only_scaling:
        scaling(args)


if __name__ == "__main__":
    main()
