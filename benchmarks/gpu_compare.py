"""tropref.cluster.kmeans on CuPy against NumPy, same data and seed (issue 5, GPU part).

Prints, for each case, the NumPy and CuPy times (CuPy timed after a warm-up run, with the
device synchronised), the speed-up, whether the labels agree, the fraction of labels that
differ (ties broken differently by rounding can move a few points) and the relative
difference of the objectives. Exit status 1 if an objective differs by more than
``--rtol`` (default 1e-3 for float32, 1e-8 for float64).

    python benchmarks/gpu_compare.py            # the quick cases, float32 and float64
    python benchmarks/gpu_compare.py --cases fc6-10 fc7-50
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from layer_cases import CASES, LAYERS, QUICK, layer_problem

from tropref import cluster


def main(argv=None) -> int:
    import array_api_compat.cupy as cxp  # noqa: F401  (the namespace tropref will pick)
    import cupy

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=[*QUICK, "fc7-50", "fc6-10"])
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    ap.add_argument("--rtol", type=float, default=None)
    args = ap.parse_args(argv)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"GPU: {props['name'].decode()}  CuPy {cupy.__version__}  NumPy {np.__version__}")
    print("case         dtype      n      d     k |  numpy s   cupy s  speed-up | labels equal  differ  obj rel diff")
    bad = 0
    for dtype in args.dtypes:
        rtol = args.rtol or (1e-3 if dtype == "float32" else 1e-8)
        for name in args.cases:
            layer, pct = CASES[name]
            X, w = layer_problem(*LAYERS[layer], dtype)
            k = max(1, round(X.shape[0] * pct / 100))
            t = time.perf_counter()
            ref = cluster.kmeans(X, k, weights=w, seed=0)
            t_np = time.perf_counter() - t
            Xc, wc = cupy.asarray(X), cupy.asarray(w)
            cluster.kmeans(Xc, k, weights=wc, seed=0)  # warm-up: kernels compile on first use
            cupy.cuda.Device(0).synchronize()
            t = time.perf_counter()
            res = cluster.kmeans(Xc, k, weights=wc, seed=0)
            cupy.cuda.Device(0).synchronize()
            t_cp = time.perf_counter() - t
            la, lb = np.asarray(ref.labels), cupy.asnumpy(res.labels)
            rel = abs(res.objective - ref.objective) / max(abs(ref.objective), 1e-300)
            bad += rel > rtol
            print(
                f"{name:12s} {dtype:8s} {X.shape[0]:5d} {X.shape[1]:6d} {k:5d} | {t_np:8.3f} {t_cp:8.3f} "
                f"{t_np / t_cp:8.1f}x | {np.array_equal(la, lb)!s:>12s} {np.mean(la != lb):7.4f}  {rel:.2e}",
                flush=True,
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
