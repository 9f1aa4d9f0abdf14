"""The demo, the main job: the shipped models compressed by TropNNC and five baselines.

Functions
---------
demo
    Every shipped model at a few kept fractions, on the shipped 2,000 test images: a table
    printed, and ``demo.md``, ``demo.json`` and ``demo.png`` written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import markdown, summarize, to_json
from .sweeps import sweep

__all__ = ["demo"]


def demo(
    out_dir: str | os.PathLike = "tropref-demo",
    models: Sequence[str] = ("lenet300", "lenet5", "vgg_small", "resnet20"),
    fractions: Sequence[float] = (0.75, 0.5, 0.25),
    methods: Sequence[str] = ("tropnnc", "model_folding", "model_folding_ar", "cup", "neuron_merging", "l1"),
    progress: bool = True,
) -> dict[str, Any]:
    """Compress the shipped models at a few fractions with TropNNC and five baselines.

    Runs on the shipped 2,000 test images (no download, no Debian package), all hidden
    layers of each model at once, one seed. Prints a table of accuracy, parameters and
    network certificate per model, writes ``demo.md``, ``demo.json`` and ``demo.png`` into
    ``out_dir``, and returns the sweep results by model.
    """
    t0 = time.perf_counter()
    results = {}
    for name in models:
        results[name] = sweep(
            name, methods=methods, fractions=fractions, layers=("all",), seeds=(0,), subset=True, progress=progress
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = []
    for name, res in results.items():
        text.append(f"## {name}\n\n" + markdown(res))
    (out / "demo.md").write_text("\n".join(text))
    (out / "demo.json").write_text(to_json(results))
    print(_demo_table(results))
    t_sweeps, t_local = time.perf_counter() - t0, time.perf_counter()
    print(_local_bounds(models, fractions))
    print(_time_split(results, t_sweeps, time.perf_counter() - t_local))
    try:
        _demo_plot(results, out / "demo.png")
        print(f"\nwrote {out / 'demo.md'}, {out / 'demo.json'} and {out / 'demo.png'}")
    except ImportError:
        print(f"\nwrote {out / 'demo.md'} and {out / 'demo.json'} (no plot: pip install matplotlib)")
    return results


def _demo_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    head = (
        f"{'model':<10} {'kept':>5} {'method':<15} {'accuracy':>9} {'params':>16} {'certificate':>12} {'measured':>10}"
    )
    lines = [head, "-" * len(head)]
    for name, res in results.items():
        mdl = res["model"]
        lines.append(
            f"{name:<10} {'100%':>5} {'(original)':<15} {100 * mdl['accuracy']:>8.2f}% {mdl['params']:>16,} "
            f"{'':>12} {'':>10}"
        )
        for r in summarize(res):
            cert = "-" if r["certificate"] is None else f"{r['certificate']:.3g}"
            cert = "interval cap" if r.get("certificate_capped") else cert  # the number would mean nothing
            err = "-" if r["measured_error"] is None else f"{r['measured_error']:.3g}"
            params = f"{r['params']:,.0f} ({r['params'] / mdl['params']:.0%})"
            lines.append(
                f"{'':<10} {100 * r['fraction']:>4g}% {r['method']:<15} {100 * r['accuracy']:>8.2f}% "
                f"{params:>16} {cert:>12} {err:>10}"
            )
    lines.append(
        "accuracy on the shipped 2,000 Fashion-MNIST test images; every hidden layer compressed, no fine-tuning; "
        "certificate: composed network bound on max|Δ logits| over the box of the test inputs "
        "('interval cap': only the span of the interval output boxes, which says nothing about the change)"
    )
    return "\n".join(lines)


def _time_split(results: Mapping[str, Mapping[str, Any]], sweeps: float, local: float) -> str:
    """Where the demo's time went: compression, network certificate, measured error and
    evaluation per model (from the sweep records; a model's total also holds its reference
    predictions and the files written), the local certificates, and the demo's total."""
    lines = ["\ntime (s): compression / network certificate / measured error / evaluation on the test images"]
    for name, res in results.items():
        rs = res["records"]
        cert, err, ev = (
            sum(r["time_s"][k] for r in rs) for k in ("network_certificate", "measured_error", "evaluation")
        )
        compress = sum(r["seconds"] for r in rs) - cert - err
        lines.append(
            f"{name:<10} {compress:7.1f} / {cert:7.1f} / {err:7.1f} / {ev:7.1f}   ({res['seconds']:.1f} in all)"
        )
    lines.append(f"local certificates {local:.1f}; total {sweeps + local:.1f}")
    return "\n".join(lines)


def _local_bounds(models: Sequence[str], fractions: Sequence[float], eps: float = 1 / 255, images: int = 5) -> str:
    """TropNNC's local certificate (:func:`tropref.certify`) on the first few shipped test images."""
    import numpy as np

    from .. import certify, compress_network
    from .data import load_test_subset
    from .models import keep_rule, load_model

    x = load_test_subset()[0][:images, None].astype(np.float64) / 255.0
    lines = [f"\nlocal certificate (tropnnc): max|Δ logits| over ‖x′ − x‖∞ <= 1/255 around {images} test images"]
    for name in models:
        net = load_model(name, dtype=np.float64)[0]
        for q in fractions:
            small = compress_network(net, keep_rule(net, q), seed=0, certify=False, progress=False)[0]
            bound, err = certify(net, small, x, eps).max(axis=1), np.abs(net(x) - small(x)).max(axis=1)
            lines.append(
                f"{name:<10} {100 * q:>4g}%  bound median {np.median(bound):.3g}, max {bound.max():.3g}; "
                f"measured at the images median {np.median(err):.3g}, max {err.max():.3g}"
                + ("  (loose: open ReLUs compound through the layers)" if bound.max() > 100 * err.max() else "")
            )
    return "\n".join(lines)


def _demo_plot(results: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=False):
        rows = summarize(res)
        for m in res["config"]["methods"]:
            rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["params"])
            ax.plot(
                [r["params"] / res["model"]["params"] for r in rs],
                [100 * r["accuracy"] for r in rs],
                marker="o",
                label=m,
            )
        ax.axhline(100 * res["model"]["accuracy"], color="gray", ls="--", lw=0.8, label="original")
        ax.set_xlabel("parameters kept (fraction)")
        ax.set_ylabel("test accuracy % (2,000 images)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
