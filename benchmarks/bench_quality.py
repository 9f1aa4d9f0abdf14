"""Final K-means objective of tropref (k-means‖ seeding) against scikit-learn (k-means++), over seeds.

One run of either is one draw of a random variable; this prints, over ``--seeds`` seeds,
the mean and best final objective (weighted within-cluster sum of squares) of
``sklearn.cluster.KMeans(init="k-means++", n_init=1)``, of ``tropref.cluster.kmeans`` with
``n_init=1`` and of ``tropref.cluster.kmeans`` with its default ``n_init=3``, on the
TropNNC problems of ``layer_cases.py`` (same ``max_iter`` and ``tol``).

    python benchmarks/bench_quality.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from layer_cases import layer_problem

from tropref.cluster import kmeans

# name: (n, fan-in, next fan-in, k)
PROBLEMS = {
    "fc-1024x4096-10%": (1024, 4096, 1000, 102),
    "fc-1024x4096-50%": (1024, 4096, 1000, 512),
    "conv512-10%": (512, 4608, 4608, 51),
    "conv512-50%": (512, 4608, 4608, 256),
    "lenet300-10%": (300, 784, 100, 30),
    "lenet300-50%": (300, 784, 100, 150),
    "lenet100-10%": (100, 300, 10, 10),
}


def main(argv=None):
    from sklearn.cluster import KMeans

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    print(f"objective over {args.seeds} seeds ({args.dtype}); ratios < 1 mean tropref is better")
    print(
        "problem              sklearn mean / best      | tropref n_init=1 mean / best | ratio  "
        "| tropref n_init=3 mean / best | ratio | time sk / t1 / t3 (s, mean)"
    )
    for name, (n, fan_in, fan_next, k) in PROBLEMS.items():
        X, w = layer_problem(n, fan_in, fan_next, args.dtype)
        sk, t1, t3, tsk, tt1, tt3 = [], [], [], 0.0, 0.0, 0.0
        for s in range(args.seeds):
            t = time.perf_counter()
            sk.append(KMeans(k, n_init=1, random_state=s).fit(X, sample_weight=w).inertia_)
            tsk += time.perf_counter() - t
            t = time.perf_counter()
            t1.append(kmeans(X, k, weights=w, n_init=1, seed=s).objective)
            tt1 += time.perf_counter() - t
            t = time.perf_counter()
            t3.append(kmeans(X, k, weights=w, seed=s).objective)
            tt3 += time.perf_counter() - t
        m = lambda v: f"{np.mean(v):<10.6g} / {np.min(v):<10.6g}"
        print(
            f"{name:20s} {m(sk)} | {m(t1)}    | {np.mean(t1) / np.mean(sk):.4f} | {m(t3)}    | "
            f"{np.mean(t3) / np.mean(sk):.4f} | {tsk / args.seeds:.2f} / {tt1 / args.seeds:.2f} / "
            f"{tt3 / args.seeds:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
