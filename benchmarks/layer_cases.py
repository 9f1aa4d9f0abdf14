"""The clustering problems the K-means benchmarks share (``bench_cluster.py``,
``bench_quality.py``, ``gpu_compare.py``): TropNNC's multi-output clustering problem of a
layer with random He-normal weights, for the layer shapes of VGG-16, LeNet-300-100 and a
512-channel convolution.

Imported by the benchmark scripts as a sibling module: ``python benchmarks/NAME.py`` puts
``benchmarks/`` first on the module path, so no script edits ``sys.path``.
"""

from __future__ import annotations

import math

import numpy as np

# name: (n neurons, fan-in, next layer's fan-in per neuron), kept fraction
LAYERS = {
    "fc6": (4096, 25088, 4096),
    "fc7": (4096, 4096, 1000),
    "conv512": (512, 512 * 9, 512 * 9),
    "lenet300": (300, 784, 100),
    "lenet100": (100, 300, 10),
}
CASES = {f"{name}-{pct}": (name, pct) for name in LAYERS for pct in (50, 10)}
QUICK = ["fc7-10", "conv512-50", "conv512-10", "lenet300-50", "lenet300-10", "lenet100-50", "lenet100-10"]


def layer_problem(n: int, fan_in: int, fan_next: int, dtype: str, seed: int = 0):
    """Directions and masses that TropNNC clusters, for a random He-normal layer."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, fan_in)) * math.sqrt(2.0 / fan_in)
    b = rng.standard_normal(n) * 0.01
    V = rng.standard_normal((fan_next, n)) * math.sqrt(2.0 / n)  # W_next[:, j] read as a block
    A = np.concatenate([W, b[:, None]], axis=1)
    alpha = np.linalg.norm(A, axis=1)
    X = (A / alpha[:, None]).astype(dtype)
    w = (alpha * np.linalg.norm(V, axis=0)).astype(dtype)
    return X, w
