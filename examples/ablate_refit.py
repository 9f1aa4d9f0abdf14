"""TropNNC's data-free Gaussian refit of the next layer (``refit="gaussian"``), on and off.

    python examples/ablate_refit.py [--images 1000] [--full] [--fractions 0.75 0.5 0.3]
                                    [--models resnet20 vgg_small] [--configs NAME ...] [--out FILE.md]

Compresses every hidden layer of the shipped ``resnet20`` (the channels inside its blocks)
and of the chain ``vgg_small`` with TropNNC, with and without the refit, combined with the
statistics correction or not, and prints the accuracy and the agreement with the
uncompressed network's predictions on the first ``--images`` test images of the shipped
2,000-image subset (of the full split with ``--full``; ``--images 10000`` for all of it).
``docs/refit.md`` has the measurements. Options not set here keep
:func:`tropref.compress_network`'s defaults by where the layer sits (``correct="full"`` and
``outgoing=0.5`` and the refit with propagated correlations from a partition searched for
it, ``refit_search=1``, in residual branches; ``correct="none"`` elsewhere). The
configurations named "refit" start from Ward's partition (``refit_search=0``) and use the
weights' cosines unless they say otherwise; those named "search" search. Deterministic.
The refit acts only where the units' statistics exist (a BatchNorm before the ReLU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tropref.experiments import evaluation_data, keep_rule, load_model, predict
from tropref.network import compress_network

COSINE = {"refit": "gaussian", "refit_correlation": "cosine", "refit_search": 0}  # the refit as it first shipped
PROPAGATED = {"refit": "gaussian", "refit_correlation": "auto", "refit_search": 0}
CONFIGS = {  # name: TropNNC options on top of the defaults
    # in residual branches: the refit with the variance rescale and propagated ρ, from a
    # partition searched for it (refit_search=1)
    "default": {},
    "section 10": {"refit": "none"},  # the default before the refit (docs/results.md, section 10)
    "no correction": {"correct": "none", "refit": "none"},
    # the refit from Ward's partition (refit_search=0): the configurations as first measured
    "refit": {**COSINE, "refit_variance": False},
    "refit + variance": {**COSINE, "refit_variance": True},
    "refit + variance, no correction": {**COSINE, "refit_variance": True, "correct": "none"},
    "refit + variance, centred ρ": {**COSINE, "refit_variance": True, "refit_correlation": "centred"},
    # ρ propagated through the network without data (tropref.network.moments); cosines elsewhere
    "refit + variance, propagated ρ": {**PROPAGATED, "refit_variance": True},
    "refit + variance, ridge 0.01": {**COSINE, "refit_variance": True, "refit_ridge": 0.01},
    "refit + variance, ridge 1": {**COSINE, "refit_variance": True, "refit_ridge": 1.0},
    # the partition searched for the refit (tropref.methods.refit_search)
    "search, cosine ρ": {**COSINE, "refit_variance": True, "refit_search": 1},
    "search, 3 passes": {**PROPAGATED, "refit_variance": True, "refit_search": 3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="first N test images")
    parser.add_argument("--full", action="store_true", help="the full test split, not the shipped 2,000-image subset")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.3])
    parser.add_argument("--models", nargs="+", default=["resnet20", "vgg_small"])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--out", help="also write the tables to this Markdown file")
    args = parser.parse_args()
    x, y, name = evaluation_data(subset=not args.full)
    x, y = x[: args.images], y[: args.images]
    lines = [f"Test accuracy / agreement with the original's predictions (%), first {len(y)} images of {name}."]
    t0 = time.perf_counter()
    for model in args.models:
        net, _ = load_model(model)
        reference = predict(net, x).argmax(1)
        lines += ["", f"**{model}** (uncompressed {100 * np.mean(reference == y):.2f})", ""]
        lines.append("| TropNNC options | " + " | ".join(f"{q:.0%}" for q in args.fractions) + " |")
        lines.append("|---" * (len(args.fractions) + 1) + "|")
        for label in args.configs:
            cells = []
            for q in args.fractions:
                small, _ = compress_network(
                    net, keep_rule(net, q, "all"), seed=0, certify=False, progress=False, **CONFIGS[label]
                )
                pred = predict(small, x).argmax(1)
                cells.append(f"{100 * np.mean(pred == y):.2f} / {100 * np.mean(pred == reference):.1f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines += ["", f"({time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
