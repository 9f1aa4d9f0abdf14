"""ResNet-20 with its residual stream compressed, beside its inner channels alone (docs/results.md, section 11).

    python examples/coupled_groups.py [--images N] [--seeds 0 1 2] [--out FILE.md]
    python examples/coupled_groups.py --budget [--images N] [--out FILE.md]

Compresses the shipped ``resnet20`` two ways with every data-free method:

- *inner*: the channels inside the residual blocks (``compress_network(net, q)``, the
  default scope; section 10 of ``docs/results.md``);
- *whole*: the same and the three residual streams, each a coupled group compressed with
  one partition (``compress_network(net, q, coupled=True)``).

For each, the accuracy on the test split, the agreement with the original's predictions,
the relative logit error ``‖f − f̂‖ / ‖f‖`` and the parameters and MACs kept. Then the
question that decides the default scope: at the *same parameter count*, which keeps more
of the function? For every whole-network width, the inner-only fraction with the closest
parameter count not above it is found (bisection on ``q``) and compressed too.

Methods that draw random numbers are run with every seed of ``--seeds`` (mean ± std);
TropNNC, CUP, Neuron Merging and L1 are deterministic (seed 0).

``--budget`` asks the same question of a non-uniform :class:`tropref.Budget` of
parameters: TropNNC (its default, and without its corrections) with ``Budget(params=q)``
on the inner channels alone, and with ``coupled=True``, where the budget is allocated over
the streams and the inner channels together; each row gives the widths the allocation
chose for the three streams and for the nine inner layers (their ranges).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tropref.experiments import evaluation_data, load_model, predict
from tropref.network import Budget, analyse, compress_network, count_macs, count_params
from tropref.network.coupled import coupled_groups
from tropref.network.widths import amplifications

METHODS = {  # label: (method, options, seeded)
    "tropnnc": ("tropnnc", {}, False),
    "tropnnc, no correction": ("tropnnc", {"correct": "none", "outgoing": 0, "refit": "none"}, False),
    "model_folding": ("model_folding", {}, True),
    "model_folding_ar": ("model_folding_ar", {}, True),
    "cup": ("cup", {}, False),
    "neuron_merging": ("neuron_merging", {}, False),
    "l1": ("l1", {}, False),
}
FRACTIONS = (0.75, 0.5, 0.3)


def _scores(net, small, x, y, f):
    g = predict(small, x)
    acc, agree = 100 * np.mean(g.argmax(1) == y), 100 * np.mean(g.argmax(1) == f.argmax(1))
    return acc, agree, float(np.linalg.norm(f - g) / np.linalg.norm(f))


def _cell(values):
    a = np.asarray(values)
    return f"{a.mean():.2f}" if a.size == 1 else f"{a.mean():.2f} ± {a.std():.2f}"


def _matching_inner(net, params):
    """The inner-only fraction whose compressed network has the most parameters <= ``params``."""
    lo, hi = 0.01, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        small, _ = compress_network(net, mid, method="l1", seed=0, certify=False, progress=False)
        lo, hi = (mid, hi) if count_params(small) <= params else (lo, mid)
    return lo


def _amplification_lines(net) -> list[str]:
    """The amplification each inner layer and each stream gets in the budget's allocation."""
    s = analyse(net)
    groups = {("group", t): g for t, g in enumerate(coupled_groups(s.work)) if g.why is None}
    amp = amplifications(s, s.compressible, None, groups)
    names = {g: net.label(s.origin(g)) for g in s.compressible}
    names.update({key: g.label(net, s.origin) for key, g in groups.items()})
    return [
        "",
        "The amplification of each layer and stream in the allocation (`widths.amplifications`):",
        "",
        *(f"- {names[key]}: {value:.3g}" for key, value in amp.items()),
    ]


def _budget_table(net, x, y, f, shape) -> list[str]:
    """TropNNC with ``Budget(params=q)``, inner only and with the streams, in one table."""
    p0, m0 = count_params(net), count_macs(net, shape)
    rows = [
        "| budget | scope | `tropnnc` options | params | MACs | accuracy % / agreement % / rel. error "
        "| stream widths | inner widths |",
        "|---|---|---|---|---|---|---|---|",
    ]
    inner = [name for layer in net.layers if (name := getattr(layer, "name", None) or "").endswith("conv1")]
    for q in FRACTIONS:
        for label, options in (("default", {}), ("no correction", METHODS["tropnnc, no correction"][1])):
            for scope, coupled in (("inner", False), ("whole", True)):
                small, report = compress_network(
                    net, Budget(params=q), seed=0, certify=False, progress=False, coupled=coupled, **options
                )
                acc, agree, rel = _scores(net, small, x, y, f)
                widths = {r.name: r.width_after for r in report.layers}
                streams = [widths[n] for n in ("stem", "s2b1_down", "s3b1_down") if n in widths]
                kept = [widths[n] for n in inner]
                rows.append(
                    f"| {q:.0%} | {scope} | {label} | {count_params(small) / p0:.1%} | "
                    f"{count_macs(small, shape) / m0:.1%} | {acc:.2f} / {agree:.1f} / {rel:.3f} | "
                    f"{streams} | {min(kept)}–{max(kept)} |"
                )
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="first N test images (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", help="also write the tables to this Markdown file")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="columns to run")
    parser.add_argument("--budget", action="store_true", help="TropNNC with Budget(params=q), inner and whole")
    args = parser.parse_args()
    methods = {label: METHODS[label] for label in args.methods}
    t0 = time.perf_counter()
    x, y, name = evaluation_data()
    x, y = x[: args.images], y[: args.images]
    net, _ = load_model("resnet20")
    f = predict(net, x)
    shape = tuple(x.shape[1:])
    p0, m0 = count_params(net), count_macs(net, shape)
    lines = [
        f"`resnet20` on {name} ({len(y)} images; original {100 * np.mean(f.argmax(1) == y):.2f} %). "
        "Cells: accuracy % / agreement % / relative logit error.",
        "",
    ]
    if args.budget:
        _finish([*lines, *_budget_table(net, x, y, f, shape), *_amplification_lines(net)], t0, args.out)
        return
    scopes = {"inner": {}, "whole": {"coupled": True}}
    header = "| scope | kept | params | MACs | " + " | ".join(f"`{m}`" for m in methods) + " |"
    rows = [header, "|---" * (4 + len(methods)) + "|"]
    matched = []
    for q in FRACTIONS:
        for scope, extra in scopes.items():
            cells, size = [], None
            for method, options, seeded in methods.values():
                runs = []
                for seed in args.seeds if seeded else [0]:
                    small, _ = compress_network(
                        net, q, method=method, seed=seed, certify=False, progress=False, **extra, **options
                    )
                    runs.append(_scores(net, small, x, y, f))
                    size = (count_params(small), count_macs(small, shape))
                acc, agree, rel = zip(*runs, strict=True)
                cells.append(f"{_cell(acc)} / {_cell(agree)} / {_cell(rel).split(' ±')[0]}")
            params, macs = size
            rows.append(
                f"| {scope} | {q:.0%} | {params:,} ({params / p0:.1%}) | {macs / m0:.1%} | " + " | ".join(cells) + " |"
            )
            if scope == "whole":
                matched.append((q, params))
            print(rows[-1], flush=True)
    lines += rows
    lines += [
        "",
        "At the same parameter count: TropNNC (default options) on the whole network at a fraction, "
        "and on the inner channels alone at the fraction whose parameters are closest below.",
        "",
        "| whole-network fraction | params | TropNNC whole | inner fraction | params | TropNNC inner |",
        "|---|---|---|---|---|---|",
    ]
    for q, params in matched:
        qi = _matching_inner(net, params)
        whole, _ = compress_network(net, q, seed=0, certify=False, progress=False, coupled=True)
        inner, _ = compress_network(net, qi, seed=0, certify=False, progress=False)
        sw, si = _scores(net, whole, x, y, f), _scores(net, inner, x, y, f)
        lines.append(
            f"| {q:.0%} | {count_params(whole):,} | {sw[0]:.2f} / {sw[1]:.1f} / {sw[2]:.3f} | {qi:.3f} | "
            f"{count_params(inner):,} | {si[0]:.2f} / {si[1]:.1f} / {si[2]:.3f} |"
        )
        print(lines[-1], flush=True)
    _finish(lines, t0, args.out)


def _finish(lines: list[str], t0: float, out: str | None) -> None:
    """Print the tables with the time taken, and write them to ``out`` when given."""
    text = "\n".join([*lines, "", f"({time.perf_counter() - t0:.0f} s)"])
    print(text)
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
