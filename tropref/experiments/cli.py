"""The ``tropref`` command line.

::

    tropref models                                  # the shipped Fashion-MNIST models
    tropref demo [--out DIR]                        # the main job, about two minutes
    tropref compress MODEL [--method M] [--keep Q] [--layers G] [--out FILE.npz]
    tropref sweep --model MODEL [--methods ...] [--fractions ...] [--layers ...] [--seeds ...] [--out DIR]
    tropref certcheck [--model lenet300] [--methods ...] [--fractions ...]   # certificate vs error

``MODEL`` is a shipped model's name (``lenet300``, ``lenet5``, ``vgg_small``, ``resnet20``), a ``.npz``
model file in the shipped format, or a whole PyTorch model saved with ``torch.save``
(``.pt``/``.pth``, read through ``tropref.adapters.torch``; needs PyTorch). Evaluation uses
Fashion-MNIST's test split when the IDX files are found (``--data`` or the Debian package
``dataset-fashion-mnist``), else the 2,000 test images shipped with tropref (``--subset``
forces them). Options of a method: ``--option tropnnc.refine=weiszfeld`` (repeatable).
``MODEL`` may also be an ONNX file (``.onnx``, read through ``tropref.adapters.onnx``; needs
onnx); ``--out FILE.onnx`` writes the compressed ONNX model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..methods import METHODS
from ..network import compress_network
from .certcheck import certificate_check, certificate_markdown
from .data import calibration_data, evaluation_data
from .demos import demo
from .models import LAYER_GROUPS, input_dtype, keep_rule, load_model, predict, save_model, shipped_models
from .report import write_report
from .sweeps import sweep


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _options(items: Sequence[str], methods: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``method.key=value`` (or ``key=value`` for every method) into per-method dicts."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        if "=" not in item:
            raise SystemExit(f"tropref: --option must look like method.key=value, got {item!r}")
        key, value = item.split("=", 1)
        if "." in key:
            method, key = key.split(".", 1)
            targets = [method]
        else:
            targets = list(methods or ["*"])
        for m in targets:
            out.setdefault(m, {})[key] = _parse_value(value)
    return out


def _load(model: str, input_shape: Sequence[int] | None = None) -> tuple[Any, dict[str, Any]]:
    path = Path(model)
    if path.suffix in (".pt", ".pth"):
        try:
            import torch
        except ImportError:
            raise SystemExit("tropref: reading a .pt model needs PyTorch (pip install torch)") from None
        from tropref.adapters.torch import from_torch

        module = torch.load(path, weights_only=False, map_location="cpu")
        net = from_torch(module, input_shape=tuple(input_shape or (1, 28, 28)))
        return net, {"name": path.stem}
    if path.suffix == ".keras":
        import os

        os.environ.setdefault("KERAS_BACKEND", "torch")
        try:
            import keras
        except ImportError:
            raise SystemExit("tropref: reading a .keras model needs Keras (pip install keras)") from None
        from tropref.adapters.keras import from_keras

        return from_keras(keras.saving.load_model(path)), {"name": path.stem}
    if path.suffix == ".onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise SystemExit("tropref: reading a .onnx model needs onnx (pip install 'tropref[onnx]')") from None
        from tropref.adapters.onnx import from_onnx

        return from_onnx(path, input_shape=input_shape), {"name": path.stem, "onnx": path}
    try:
        return load_model(model)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"tropref: {exc}") from None


def _test_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """The test split of ``--dataset`` (:func:`~tropref.experiments.evaluation_data`), normalised."""
    if args.dataset == "cifar10" and args.data is None:
        raise SystemExit("tropref: --dataset cifar10 needs --data (the unpacked cifar-10-batches-py folder)")
    try:
        x, y, name = evaluation_data(args.data, args.subset, args.dataset)
    except FileNotFoundError as exc:
        raise SystemExit(f"tropref: {exc}") from None
    return _normalise(args, x), y, name


def _normalise(args: argparse.Namespace, x: np.ndarray) -> np.ndarray:
    if args.mean is None and args.std is None:
        return x
    c = x.shape[1]
    mean = np.asarray(args.mean if args.mean is not None else [0.0] * c, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(args.std if args.std is not None else [1.0] * c, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean.size != c or std.size != c:
        raise SystemExit(f"tropref: --mean/--std need {c} values (one per channel)")
    return (x - mean) / std


def _calibration(args: argparse.Namespace, dtype: Any) -> np.ndarray:
    """``args.calibration`` training images (:func:`~tropref.experiments.calibration_data`), normalised."""
    try:
        x = calibration_data(args.calibration, args.data, args.dataset)
    except FileNotFoundError as exc:
        raise SystemExit(f"tropref: 'thinet' needs training images as calibration data. {exc}") from None
    return _normalise(args, x).astype(dtype)


def cmd_models(args: argparse.Namespace) -> int:
    print(f"{'model':<10} {'parameters':>10} {'test accuracy':>14}  layers")
    for name, meta in shipped_models().items():
        kinds = [l["kind"] for l in meta["architecture"] if l["kind"] in ("linear", "conv2d")]
        desc = ", ".join(f"{kinds.count(k)} {k}" for k in ("conv2d", "linear") if k in kinds)
        if any(l["kind"] == "add" for l in meta["architecture"]):
            desc += ", residual"
        print(f"{name:<10} {meta['parameters']:>10,} {100 * meta['test_accuracy']:>13.2f}%  {desc}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    demo(out_dir=args.out, progress=not args.no_progress)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    net, meta = _load(args.model, args.input_shape)
    x, y, test_name = _test_data(args)
    x = x.astype(input_dtype(net))
    calibration = _calibration(args, x.dtype) if args.method == "thinet" else None
    try:
        keep = keep_rule(net, args.keep, args.layers)
    except (ValueError, NotImplementedError) as exc:
        raise SystemExit(f"tropref: {exc}") from None
    box = np.stack([x.min(axis=0), x.max(axis=0)])
    opts = _options(args.option, [args.method]).get(args.method, {})
    small, report = compress_network(
        net,
        keep,
        method=args.method,
        seed=args.seed,
        data=calibration,
        inputs=box,
        progress=not args.no_progress,
        **opts,
    )
    before, after = predict(net, x), predict(small, x)
    # the report's own "measured" line refers to the two box corners passed as `inputs`
    table = report.table().replace("the box spanned by the 2 inputs given", f"the box spanned by {test_name}")
    print("\n".join(line for line in table.splitlines() if "on the inputs given" not in line))
    print(f"measured max|Δ logits| on {test_name}: {float(np.max(np.abs(before - after))):.4g}")
    print(
        f"test accuracy on {test_name} ({len(y)} images): "
        f"{100 * np.mean(before.argmax(1) == y):.2f}% -> {100 * np.mean(after.argmax(1) == y):.2f}%"
    )
    if args.out and str(args.out).endswith(".onnx"):  # the ONNX model read, its graph edited (else a new one)
        import onnx

        from tropref.adapters.onnx import to_onnx

        onnx.save(to_onnx(small, like=meta.get("onnx")), args.out)
        print(f"wrote {args.out}")
    elif args.out:
        path = save_model(
            small,
            args.out,
            {
                "compressed_from": meta.get("name"),
                "method": args.method,
                "keep": args.keep,
                "layers": args.layers,
                "seed": report.seed,
            },
        )
        print(f"wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    net, meta = _load(args.model, args.input_shape)
    x, y, test_name = _test_data(args)
    try:
        result = sweep(
            net,
            test=(x, y),
            test_name=test_name,
            methods=args.methods,
            fractions=args.fractions,
            layers=args.layers,
            seeds=args.seeds,
            data_path=args.data,
            subset=args.subset,
            calibration=_calibration(args, x.dtype) if "thinet" in args.methods else None,
            options=_options(args.option, args.methods),
            progress=not args.no_progress,
            name=meta.get("name"),
        )
    except (ValueError, FileNotFoundError, NotImplementedError) as exc:
        raise SystemExit(f"tropref: {exc}") from None
    result["command"] = "tropref " + " ".join(args.argv)
    paths = write_report(result, args.out, stem=args.stem, png=not args.no_plot)
    print(Path(paths["md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_certcheck(args: argparse.Namespace) -> int:
    net, _ = _load(args.model, args.input_shape)
    x, y, _ = _test_data(args)
    try:
        options = _options(args.option, args.methods)
        rows = certificate_check(
            net, methods=args.methods, fractions=args.fractions, seed=args.seed, test=(x, y), options=options
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"tropref: {exc}") from None
    print(certificate_markdown(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tropref", description="TropNNC: data-free structured compression of ReLU networks."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--data", default=None, help="folder with the Fashion-MNIST IDX files (default: the Debian package's)"
        )
        q.add_argument("--subset", action="store_true", help="evaluate on the shipped 2,000 test images")
        q.add_argument(
            "--dataset",
            default="fashion-mnist",
            choices=["fashion-mnist", "cifar10"],
            help="test data: Fashion-MNIST IDX files, or a local CIFAR-10 (python version) in --data",
        )
        q.add_argument(
            "--mean", type=float, nargs="+", default=None, help="per-channel mean subtracted from inputs in [0, 1]"
        )
        q.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std dividing the inputs")
        q.add_argument(
            "--input-shape", type=int, nargs="+", default=None, help="C H W of a .pt model's input (default 1 28 28)"
        )
        q.add_argument(
            "--calibration", type=int, default=1000, help="training images given to data-driven methods (thinet)"
        )
        q.add_argument(
            "--option", action="append", default=[], metavar="METHOD.KEY=VALUE", help="method option (repeatable)"
        )
        q.add_argument("--no-progress", action="store_true")

    q = sub.add_parser("models", help="list the shipped models")
    q.set_defaults(fn=cmd_models)

    q = sub.add_parser("demo", help="compress the shipped models with TropNNC and five baselines")
    q.add_argument("--out", default="tropref-demo", help="folder for demo.md, demo.json, demo.png")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(fn=cmd_demo)

    q = sub.add_parser("compress", help="compress one model and report layer by layer")
    q.add_argument("model", help="shipped name, .npz model file, torch.save'd .pt model, or .onnx model")
    q.add_argument("--method", default="tropnnc", choices=sorted(METHODS))
    q.add_argument("--keep", type=float, default=0.5, help="kept fraction of units (default 0.5)")
    q.add_argument("--layers", default="all", choices=LAYER_GROUPS)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", default=None, help="write the compressed model to this .npz (or .onnx)")
    data_args(q)
    q.set_defaults(fn=cmd_compress)

    q = sub.add_parser("certcheck", help="layer certificate against measured error on the first dense layer")
    q.add_argument("--model", default="lenet300")
    q.add_argument(
        "--methods",
        nargs="+",
        default=["tropnnc", "neural_path_kmeans", "neuron_merging", "cup", "l1"],
        choices=sorted(METHODS),
    )
    q.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.3, 0.1])
    q.add_argument("--seed", type=int, default=0)
    data_args(q)
    q.set_defaults(fn=cmd_certcheck)

    q = sub.add_parser("sweep", help="methods x kept fractions x layer groups x seeds, with report and plot")
    q.add_argument("--model", required=True)
    q.add_argument("--methods", nargs="+", default=["tropnnc", "cup", "l1", "neuron_merging"], choices=sorted(METHODS))
    q.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    q.add_argument("--layers", nargs="+", default=["dense"], choices=LAYER_GROUPS)
    q.add_argument("--seeds", nargs="+", type=int, default=[0])
    q.add_argument("--out", default="results", help="folder for <stem>.json, .md, .png")
    q.add_argument("--stem", default=None, help="file name stem (default: <model>_<layers>)")
    q.add_argument("--no-plot", action="store_true")
    data_args(q)
    q.set_defaults(fn=cmd_sweep)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.fn(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
