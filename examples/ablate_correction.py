"""The statistics correction and the outgoing-weight partition, each on its own (docs/results.md, section 10).

    python examples/ablate_correction.py [--images 1000] [--out FILE.md]

Compresses every hidden layer of the shipped ``resnet20`` (the channels inside its blocks)
and of the chain ``vgg_small`` at once, with TropNNC's correction (``correct``) and
partition (``outgoing``) options switched on and off one at a time, at several kept
fractions around the ones the tables report (a single fraction can land on a lucky or an
unlucky partition: the mean over a neighbourhood says more), and prints the accuracy and
the agreement with the uncompressed network's predictions. Deterministic (Ward; no random
numbers are drawn).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tropref.experiments import evaluation_data, keep_rule, load_model, predict
from tropref.network import compress_network

_NO_REFIT = {"refit": "none"}  # as first measured, before the refit (docs/results.md, sections 12-14)
CONFIGS = {  # name: TropNNC options
    "no correction, directions only (the previous default)": {"correct": "none", "outgoing": 0, **_NO_REFIT},
    "variance correction": {"correct": "variance", "outgoing": 0, **_NO_REFIT},
    "mean correction": {"correct": "mean", "outgoing": 0, **_NO_REFIT},
    "variance + mean correction": {"correct": "full", "outgoing": 0, **_NO_REFIT},
    "outgoing weights in the partition (β = 0.5)": {"correct": "none", "outgoing": 0.5, **_NO_REFIT},
    "variance correction + outgoing (β = 0.5)": {"correct": "variance", "outgoing": 0.5, **_NO_REFIT},
    "variance + mean + outgoing (β = 0.25)": {"correct": "full", "outgoing": 0.25, **_NO_REFIT},
    "variance + mean + outgoing (β = 0.5), the default in residual branches": {
        "correct": "full",
        "outgoing": 0.5,
        **_NO_REFIT,
    },
}
FRACTIONS = {"resnet20": (0.4, 0.5, 0.6, 0.7, 0.8), "vgg_small": (0.3, 0.5, 0.75)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="first N images of the shipped test subset")
    parser.add_argument("--out", help="also write the tables to this Markdown file")
    args = parser.parse_args()
    x, y, name = evaluation_data(subset=True)
    x, y = x[: args.images], y[: args.images]
    lines = [f"Test accuracy / agreement with the original's predictions (%), first {len(y)} images of {name}."]
    t0 = time.perf_counter()
    for model, fractions in FRACTIONS.items():
        net, _ = load_model(model)
        reference = predict(net, x).argmax(1)
        lines += ["", f"**{model}** (uncompressed {100 * np.mean(reference == y):.2f})", ""]
        lines.append("| TropNNC options | " + " | ".join(f"{q:.0%}" for q in fractions) + " | mean |")
        lines.append("|---" * (len(fractions) + 2) + "|")
        for label, options in CONFIGS.items():
            accs, cells = [], []
            for q in fractions:
                small, _ = compress_network(
                    net, keep_rule(net, q, "all"), seed=0, certify=False, progress=False, **options
                )
                pred = predict(small, x).argmax(1)
                accs.append(100 * np.mean(pred == y))
                cells.append(f"{accs[-1]:.2f} / {100 * np.mean(pred == reference):.1f}")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(accs):.2f} |")
            print(lines[-1], flush=True)
    lines += ["", f"({time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
