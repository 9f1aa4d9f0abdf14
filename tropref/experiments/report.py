"""Reports of a sweep: summaries over seeds, Markdown tables, PNG plots, the files written.

Functions
---------
summarize
    One row per layer group, kept fraction and method: mean ± std over seeds.
markdown, plot
    A Markdown table and PNG plots of accuracy against kept fraction, parameters and MACs.
write_report
    All of them written to a folder together with the raw JSON.
to_json
    The JSON text of a result (NumPy arrays and scalars as plain numbers).
code_version
    The version and git commit a result was computed with (recorded in every sweep).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__

__all__ = [
    "NEURON_MERGING_PUBLISHED",
    "summarize",
    "markdown",
    "plot",
    "write_report",
    "to_json",
    "code_version",
]

NEURON_MERGING_PUBLISHED = {
    "source": "Kim et al., NeurIPS 2020, LeNet-300-100 on Fashion-MNIST, no fine-tuning",
    "baseline_accuracy": 0.8980,
    "merge": {0.5: 0.8869, 0.4: 0.8692, 0.3: 0.8275, 0.2: 0.8002},
    "prune": {0.5: 0.8840, 0.4: 0.8517, 0.3: 0.7126, 0.2: 0.6676},
}
"""The published anchor (``docs/theory.md``, section 4); their own trained network."""


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (layers, fraction, method): mean and std over seeds of every measure.

    The accuracy's std is the sample standard deviation (``ddof=1``; 0 for one run); the
    certificate is averaged only when every run has one (else ``None``).

    Examples
    --------
    >>> from tropref.experiments import sweep
    >>> res = sweep("lenet300", methods=["random"], fractions=[0.5], seeds=[0, 1], subset=True, progress=False)
    >>> row = summarize(res)[0]
    >>> row["method"], row["runs"], row["accuracy_std"] > 0
    ('random', 2, True)
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in result["records"]:
        groups.setdefault((r["layers"], r["fraction"], r["method"]), []).append(r)
    rows = []
    for (group, q, method), recs in groups.items():
        acc_m, acc_s = _mean_std([r["accuracy"] for r in recs])
        certs = [r["certificate"] for r in recs if r["certificate"] is not None]
        errs = [r["measured_error"] for r in recs if r["measured_error"] is not None]
        macs = [r["macs"] for r in recs if r["macs"] is not None]
        rows.append(
            {
                "layers": group,
                "fraction": q,
                "method": method,
                "runs": len(recs),
                "accuracy": acc_m,
                "accuracy_std": acc_s,
                "params": float(np.mean([r["params"] for r in recs])),
                "macs": float(np.mean(macs)) if macs else None,
                "certificate": float(np.mean(certs)) if len(certs) == len(recs) else None,
                "certificate_capped": any(r.get("certificate_capped", False) for r in recs),
                "measured_error": float(np.mean(errs)) if errs else None,
                "seconds": float(np.mean([r["seconds"] for r in recs])),
            }
        )
    return rows


def _fmt_acc(row: Mapping[str, Any]) -> str:
    s = f"{100 * row['accuracy']:.2f}"
    if row["runs"] > 1:
        s += f" ± {100 * row['accuracy_std']:.2f}"
    return s


def markdown(result: Mapping[str, Any], published: bool | None = None) -> str:
    """Markdown tables of a sweep: accuracy per method and fraction, then size and certificates.

    ``published`` adds Neuron Merging's published numbers as extra columns (default: when
    the model is called ``lenet300`` and the layers swept are ``dense``).

    Examples
    --------
    >>> from tropref.experiments import sweep
    >>> res = sweep("lenet300", methods=["l1"], fractions=[0.5], subset=True, progress=False)
    >>> print(markdown(res).splitlines()[4:7])
    ['| kept | `l1` | NM paper: merge | NM paper: prune |', '|---|---|---|---|', '| 50% | **87.00** | 88.69 | 88.40 |']
    """
    rows = summarize(result)
    mdl = result["model"]
    methods = result["config"]["methods"]
    out = [
        f"Model `{mdl['name']}`: {mdl['params']:,} parameters, "
        + (f"{mdl['macs']:,} MACs, " if mdl.get("macs") else "")
        + f"test accuracy {100 * mdl['accuracy']:.2f}% on {mdl['test_set']} ({mdl['test_size']} images). "
        + "No fine-tuning. Accuracy in %, mean ± std over seeds where a method is random."
    ]
    for group in result["config"]["layers"]:
        grp = [r for r in rows if r["layers"] == group]
        if not grp:
            continue
        pub = published if published is not None else (mdl["name"] == "lenet300" and group == "dense")
        head = ["kept"] + [f"`{m}`" for m in methods]
        if pub:
            head += ["NM paper: merge", "NM paper: prune"]
        out.append(f"\n**Layers: {group}**\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for q in result["config"]["fractions"]:
            cells = [f"{100 * q:g}%"]
            best = max((r["accuracy"] for r in grp if r["fraction"] == q), default=None)
            for m in methods:
                r = next((r for r in grp if r["fraction"] == q and r["method"] == m), None)
                if r is None:
                    cells.append("-")
                    continue
                c = _fmt_acc(r)
                cells.append(f"**{c}**" if r["accuracy"] == best else c)
            if pub:
                for kind in ("merge", "prune"):
                    v = NEURON_MERGING_PUBLISHED[kind].get(round(q, 4))
                    cells.append("-" if v is None else f"{100 * v:.2f}")
            out.append("| " + " | ".join(cells) + " |")
        if pub:
            out.append(
                f"\nNM paper: {NEURON_MERGING_PUBLISHED['source']}, on the authors' own network "
                f"(baseline {100 * NEURON_MERGING_PUBLISHED['baseline_accuracy']:.2f}%), not on this one."
            )
        out.append("\n| kept | method | params | MACs | network certificate | measured max abs error | time s |")
        out.append("|---|---|---|---|---|---|---|")
        for q in result["config"]["fractions"]:
            for m in methods:
                r = next((r for r in grp if r["fraction"] == q and r["method"] == m), None)
                if r is None:
                    continue
                params = f"{r['params']:,.0f} ({r['params'] / mdl['params']:.1%})"
                macs = "-" if r["macs"] is None or not mdl.get("macs") else f"{r['macs'] / mdl['macs']:.1%}"
                cert = "-" if r["certificate"] is None else f"{r['certificate']:.3g}"
                cert = "interval cap" if r.get("certificate_capped") else cert  # the number would mean nothing
                err = "-" if r["measured_error"] is None else f"{r['measured_error']:.3g}"
                out.append(f"| {100 * q:g}% | `{m}` | {params} | {macs} | {cert} | {err} | {r['seconds']:.2f} |")
    return "\n".join(out) + "\n"


def plot(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """PNG with accuracy against kept fraction, parameters and MACs, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarize(result)
    mdl = result["model"]
    groups = result["config"]["layers"]
    has_macs = bool(mdl.get("macs"))
    ncol = 3 if has_macs else 2
    fig, axes = plt.subplots(len(groups), ncol, figsize=(4.2 * ncol, 3.4 * len(groups)), squeeze=False)
    for gi, group in enumerate(groups):
        for m in result["config"]["methods"]:
            rs = sorted((r for r in rows if r["layers"] == group and r["method"] == m), key=lambda r: r["fraction"])
            if not rs:
                continue
            acc = 100 * np.array([r["accuracy"] for r in rs])
            std = 100 * np.array([r["accuracy_std"] for r in rs])
            xs = [
                [r["fraction"] for r in rs],
                [r["params"] / mdl["params"] for r in rs],
            ] + ([[r["macs"] / mdl["macs"] for r in rs]] if has_macs else [])
            for ax, x in zip(axes[gi], xs, strict=False):
                ax.errorbar(x, acc, yerr=std if std.any() else None, marker="o", ms=3, capsize=2, label=m)
        titles = ["kept fraction of units", "parameters (fraction)", "MACs (fraction)"]
        for ax, t in zip(axes[gi], titles, strict=False):
            ax.axhline(100 * mdl["accuracy"], color="gray", ls="--", lw=0.8)
            ax.set_xlabel(t)
            ax.set_ylabel("test accuracy %")
            ax.set_title(f"{mdl['name']}, layers: {group}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[gi][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    result: Mapping[str, Any], out_dir: str | os.PathLike, stem: str | None = None, png: bool = True
) -> dict[str, Path]:
    """Write ``<stem>.json`` (raw records), ``<stem>.md`` and ``<stem>.png`` into ``out_dir``.

    ``stem`` defaults to ``<model>_<layer groups>``; without matplotlib the plot is left
    out with a note on stderr. Returns the paths written, by kind (``"json"``, ``"md"``,
    ``"png"``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{result['model']['name']}_{'-'.join(result['config']['layers'])}"
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths["json"].write_text(to_json(result))
    paths["md"].write_text(markdown(result))
    if png:
        try:
            paths["png"] = plot(result, out / f"{stem}.png")
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    return paths


def to_json(result: Any) -> str:
    """``result`` as indented JSON text ending in a newline; NumPy arrays become lists,
    NumPy scalars numbers, anything else JSON cannot write its ``str``.

    Examples
    --------
    >>> to_json({"accuracy": np.float32(0.5), "widths": np.arange(2)})
    '{\\n "accuracy": 0.5,\\n "widths": [\\n  0,\\n  1\\n ]\\n}\\n'
    """
    return json.dumps(result, indent=1, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)


def code_version() -> dict[str, Any]:
    """tropref's version and, in a git checkout, the commit and whether files were modified.

    ``git_modified`` lists the tracked Python files of ``tropref/`` and ``adapters/`` that
    differ from the commit (data, docs and results do not change what runs).

    Examples
    --------
    >>> code_version()["tropref"] == __version__
    True
    """
    out: dict[str, Any] = {"tropref": __version__}
    root = Path(__file__).resolve().parents[2]  # the checkout: tropref/experiments/report.py
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        # modified tracked code (data, docs and results do not change what runs)
        out["git_modified"] = sorted(
            path
            for path in (line[3:] for line in status.splitlines() if line.strip())
            if path.endswith(".py") and path.split("/")[0] in ("tropref", "adapters")
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return out
