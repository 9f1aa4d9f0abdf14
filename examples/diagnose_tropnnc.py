"""Where TropNNC loses accuracy, one layer at a time (docs/results.md, section 0).

    python examples/diagnose_tropnnc.py [--images 10000] [--out FILE.md]

For each shipped model, compresses ONE hidden layer at a time to a given width (the
others untouched) with TropNNC's default, its paper-literal variant, each step of the
default switched back, CUP and L1, and prints the test accuracy. Also prints LeNet-5's
first-layer filters: norm, weight sum, mass, and the cosines between them, which show why a
mass-weighted Euclidean objective merges the always-on intensity filter. Deterministic:
every method here draws no random numbers but the paper variant (seed 0).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tropref.experiments import accuracy, load_model, load_test, to_float
from tropref.network import compress_network

VARIANTS = {
    "tropnnc (default)": ("tropnnc", {}),
    "paper variant": ("tropnnc", {"variant": "paper"}),
    "default, K-means partition": ("tropnnc", {"cluster": "kmeans"}),
    "default, mean representative": ("tropnnc", {"representative": "mean"}),
    "default, paper's scales": ("tropnnc", {"fold": "norm"}),
    "default, Euclidean metric": ("tropnnc", {"input_ratio": None}),
    "default, no refit (single fold)": ("tropnnc", {"refit": "none"}),
    "cup": ("cup", {}),
    "l1": ("l1", {}),
}

CASES = {  # model: (layer, kept width) compressed alone
    "lenet300": [("fc1", 90), ("fc2", 30), ("fc1", 30), ("fc2", 10)],
    "lenet5": [("conv1", 3), ("conv1", 2), ("conv2", 8), ("fc1", 32), ("fc2", 13)],
    "vgg_small": [("conv1", 5), ("conv2", 5), ("conv3", 10), ("conv4", 10), ("fc1", 77)],
}


def conv1_table(images: np.ndarray) -> str:
    """LeNet-5's first convolution: what each filter is and how the default sees it."""
    net, _ = load_model("lenet5")
    conv1, conv2 = net.layers[0], net.layers[3]
    W = np.asarray(conv1.W, dtype=np.float64).reshape(6, -1)
    A = np.column_stack([W, np.asarray(conv1.b)])
    out_l1 = np.abs(np.asarray(conv2.W, dtype=np.float64)).sum(axis=(0, 2, 3))
    norm = np.linalg.norm(A, axis=1)
    x = images[:2000, 0]
    patches = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (2, 2), (2, 2))), (5, 5), axis=(1, 2))
    act = np.maximum(patches.reshape(-1, 25) @ W.T + A[:, -1], 0)
    lines = ["| filter | ‖w‖ | Σ weights | mass ‖w‖·‖V‖₁ | mean activation | active |", "|---|---|---|---|---|---|"]
    for j in range(6):
        lines.append(
            f"| {j} | {norm[j]:.2f} | {W[j].sum():+.2f} | {norm[j] * out_l1[j]:.1f} | {act[:, j].mean():.3f} "
            f"| {np.mean(act[:, j] > 0):.0%} |"
        )
    D = A / norm[:, None]
    lines += [
        "",
        "cosines between the filters (w, b):",
        "",
        "```",
        np.array2string(D @ D.T, precision=2, suppress_small=True),
        "```",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    images, labels, split = load_test()
    x, y = to_float(images)[: args.images], labels[: args.images]
    out = [f"Test accuracy (%) on {split}[:{len(y)}], one layer compressed at a time, no fine-tuning.", ""]
    t0 = time.perf_counter()
    for model, cases in CASES.items():
        net, _meta = load_model(model)
        xm = x.reshape(len(x), -1) if model == "lenet300" else x
        head = " | ".join(
            f"`{layer}` {n}→{k}"
            for layer, k in cases
            for n in [next(l.units for l in net.layers if getattr(l, "name", None) == layer)]
        )
        out += [
            f"**{model}** (uncompressed {100 * accuracy(net, xm, y):.2f})",
            "",
            f"| method | {head} |",
            "|---" * (len(cases) + 1) + "|",
        ]
        for label, (method, options) in VARIANTS.items():
            row = []
            for layer, k in cases:
                small, _ = compress_network(net, {layer: k}, method=method, seed=0, **options)
                row.append(f"{100 * accuracy(small, xm, y):.2f}")
            out.append(f"| {label} | " + " | ".join(row) + " |")
        out.append("")
    out += ["**LeNet-5 conv1**", "", conv1_table(x), "", f"({time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
