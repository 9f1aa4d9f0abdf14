"""Peak memory of one layer's compression, as a multiple of its inputs (issue 16).

Each case runs in a fresh subprocess (so that no case inherits another's allocations):
random He-normal float32 weights are drawn, then ``tracemalloc`` (which NumPy reports its
buffers to) is started and the compression runs; the peak of the memory allocated after
the inputs existed is divided by the inputs' bytes. The process's maximum resident size
grows too: printed beside it (``ru_maxrss`` minus the resident size before the call).

The default layer is the issue's: ``W`` 4096 × 9216, ``W_next`` 4096 × 4096, ``k = 2048``
(208 MiB of inputs). Cases: ``compress_layer`` with TropNNC and with ``l1`` (a pruning
method, for comparison), and ``compress_network`` with ``certify=True`` on the two-layer
network of the same weights.

    python benchmarks/bench_memory.py                       # all three cases, about a minute
    python benchmarks/bench_memory.py --cases tropnnc --units 1024 --inputs 2304 --outputs 1024
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

CASES = ("tropnnc", "l1", "network-certify")


def _layer(n: int, d: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((n, d), dtype=np.float32) * np.float32(math.sqrt(2.0 / d))).astype(np.float32)
    W_next = (rng.standard_normal((m, n), dtype=np.float32) * np.float32(math.sqrt(2.0 / n))).astype(np.float32)
    return W, np.zeros(n, np.float32), W_next, np.zeros(m, np.float32)


def run_case(case: str, n: int, d: int, m: int, k: int) -> dict:
    """One case in this process: the peak allocated during the call, over the inputs' bytes."""
    import tropref
    from tropref.network import Dense, Network, ReLU, compress_network

    W, b, W_next, b_next = _layer(n, d, m)
    inputs = W.nbytes + b.nbytes + W_next.nbytes + b_next.nbytes
    rss0 = _rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    if case == "network-certify":
        net = Network([Dense(W, b), ReLU(), Dense(W_next, b_next)], input_shape=(d,))
        compress_network(net, {0: k / n}, seed=0, certify=True)
    else:
        tropref.compress_layer(W, b, k, W_next=W_next, b_next=b_next, method=case, seed=0)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "case": case,
        "inputs_mib": inputs / 2**20,
        "peak_mib": peak / 2**20,
        "ratio": peak / inputs,
        "rss_growth_mib": max(_rss() - rss0, 0) / 2**20,
        "seconds": seconds,
    }


def _rss() -> int:
    """The process's maximum resident size so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--units", type=int, default=4096, help="units n of the layer (rows of W)")
    p.add_argument("--inputs", type=int, default=9216, help="inputs d of each unit (columns of W)")
    p.add_argument("--outputs", type=int, default=4096, help="outputs m of the next layer (rows of W_next)")
    p.add_argument("--keep", type=int, default=None, help="units kept, k (default n / 2)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    k = a.keep or a.units // 2
    if a.child:  # one case, in a fresh process: print its result as JSON
        print(json.dumps(run_case(a.child, a.units, a.inputs, a.outputs, k)))
        return 0
    print(f"layer: W {a.units} x {a.inputs}, W_next {a.outputs} x {a.units}, k = {k}, float32")
    print(f"{'case':<16} {'inputs MiB':>10} {'peak MiB':>9} {'peak/inputs':>11} {'RSS growth MiB':>14} {'s':>6}")
    for case in a.cases:
        cmd = [sys.executable, __file__, "--child", case, "--units", str(a.units), "--inputs", str(a.inputs)]
        cmd += ["--outputs", str(a.outputs), "--keep", str(k)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['case']:<16} {r['inputs_mib']:>10.1f} {r['peak_mib']:>9.1f} {r['ratio']:>11.2f} "
            f"{r['rss_growth_mib']:>14.1f} {r['seconds']:>6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
