"""Torch-Pruning's L1 pruning of the shipped ``resnet20``: its parameters at each ``keep``,
beside tropref's (docs/results.md, section 11).

    python examples/torch_pruning_resnet20.py [--fractions 0.75 0.5 0.3]

``resnet20`` is written to PyTorch (``tropref.adapters.torch.to_torch``) and pruned by
Torch-Pruning's ``MetaPruner`` with L1 magnitude importance at ``pruning_ratio = 1 − keep``,
the classifier excluded, as ``benchmarks/bench_models.py`` runs it. Torch-Pruning prunes
every channel group (the residual streams included), so its counts are to be read beside
tropref's ``coupled=True``. Needs ``torch`` and ``torch-pruning`` (``pip install
tropref[bench]``). Prints the parameters kept and the accuracy on the test split (no
fine-tuning).
"""

from __future__ import annotations

import argparse

import numpy as np

from tropref.experiments import evaluation_data, load_model
from tropref.network import compress_network, count_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.3])
    args = parser.parse_args()
    import torch
    import torch_pruning as tp

    from tropref.adapters.torch import to_torch

    x, y, name = evaluation_data()
    net, _ = load_model("resnet20")
    shape = tuple(x.shape[1:])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"resnet20 on {name} ({len(y)} images): {count_params(net):,} parameters (BatchNorms folded)")
    print("| keep | Torch-Pruning params | its accuracy % | tropref inner | tropref coupled=True |")
    print("|---|---|---|---|---|")
    for keep in args.fractions:
        model = to_torch(net).eval()
        before = count(model)
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.enable_grad():  # Torch-Pruning traces the graph through autograd
            importance = tp.importance.MagnitudeImportance(p=1)
            tp.pruner.MetaPruner(
                model, torch.randn(1, *shape), importance=importance, pruning_ratio=1.0 - keep, ignored_layers=[last]
            ).step()
        with torch.no_grad():
            g = model(torch.as_tensor(x, dtype=torch.float32)).numpy()
        inner, _ = compress_network(net, keep, method="l1", certify=False, progress=False)
        whole, _ = compress_network(net, keep, method="l1", coupled=True, certify=False, progress=False)
        p1 = count(model)
        print(
            f"| {keep:.0%} | {p1:,} ({100 * p1 / before:.1f}%) | {100 * np.mean(g.argmax(1) == y):.2f} "
            f"| {count_params(inner):,} | {count_params(whole):,} |"
        )


if __name__ == "__main__":
    main()
