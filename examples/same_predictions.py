"""Whether a code change leaves TropNNC's compressed models' predictions as they were.

    PYTHONPATH=OLD_TREE python examples/same_predictions.py --out before.npz
    python examples/same_predictions.py --out after.npz
    python examples/same_predictions.py --compare before.npz after.npz

Compresses the shipped models with TropNNC's default (seed 0) at 75 / 50 / 30 % in the
layer groups of ``docs/results.md`` (LeNet-300-100's dense layers, LeNet-5's and the
VGG-style net's conv layers, the whole VGG-style net and ResNet-20), stores the logits on
the test split, and compares two such files: the largest logit change and whether every
prediction is the same. ``PYTHONPATH`` chooses the tree the code is imported from (the
script prints it).
"""

from __future__ import annotations

import argparse

import numpy as np

CASES = [("lenet300", "dense"), ("lenet5", "conv"), ("vgg_small", "conv"), ("vgg_small", "all"), ("resnet20", "all")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the logits of every case to this .npz")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two such files")
    args = parser.parse_args()
    if args.compare:
        a, b = (np.load(f) for f in args.compare)
        for key in a.files:
            same = bool(np.all(a[key].argmax(1) == b[key].argmax(1)))
            print(f"{key:24s} max |Δ logit| {np.abs(a[key] - b[key]).max():.3g}  same predictions {same}")
        return
    import tropref
    from tropref.experiments import evaluation_data, load_model, predict
    from tropref.experiments.models import keep_rule
    from tropref.network import compress_network

    print("tropref from", tropref.__file__)
    x, y, _ = evaluation_data()
    out = {}
    for name, group in CASES:
        net, _ = load_model(name)
        for q in (0.75, 0.5, 0.3):
            small, _ = compress_network(net, keep_rule(net, q, group), seed=0, certify=False, progress=False)
            out[f"{name}-{group}-{q}"] = logits = predict(small, x)
            print(f"{name} {group} {q}: {100 * np.mean(logits.argmax(1) == y):.2f} %", flush=True)
    if args.out:
        np.savez(args.out, **out)


if __name__ == "__main__":
    main()
