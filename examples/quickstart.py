"""Compress one ReLU layer with TropNNC and compare the certificate with the measured error.

Run: python examples/quickstart.py   (or `make demo`)
"""

from __future__ import annotations

import numpy as np

import tropref


def main() -> None:
    rng = np.random.default_rng(0)
    n, d, m = 256, 64, 10
    # A layer with redundancy, as trained layers have: 32 directions, each used by 8 units
    # at different scales, plus a little noise.
    directions = rng.normal(size=(32, d + 1))
    A = rng.uniform(0.5, 2.0, size=(n, 1)) * directions[rng.integers(0, 32, size=n)]
    A += 0.05 * rng.normal(size=A.shape)
    W, b = A[:, :d], A[:, d]
    V, c = rng.normal(size=(m, n)) / np.sqrt(n), rng.normal(size=m)

    X = rng.normal(size=(5000, d))
    u_norm = np.sqrt(np.sum(X**2, axis=1) + 1)
    exact = np.maximum(X @ W.T + b, 0) @ V.T + c

    print(f"layer: {n} units of dimension {d}, next layer {m} outputs; 5000 random inputs")
    print(f"{'kept':>6} {'method':>20} {'max certificate':>16} {'max measured':>14} {'holds':>6}")
    for k in (128, 64, 32, 16):
        for method in ("tropnnc", "neural_path_kmeans"):
            res = tropref.compress_layer(W, b, k, W_next=V, b_next=c, method=method, seed=0)
            approx = np.maximum(X @ res.W.T + res.b, 0) @ res.W_next.T + res.b_next
            measured = np.max(np.abs(exact - approx) / u_norm[:, None], axis=0)
            holds = bool(np.all(measured <= res.certificate))
            print(f"{res.k:>6} {method:>20} {res.certificate.max():>16.4g} {measured.max():>14.4g} {holds!s:>6}")
    print("certificate: |Δ output_i(x)| <= certificate_i * ‖(x, 1)‖ for every x; measured: the same ratio on samples")


if __name__ == "__main__":
    main()
