"""The ``tropref`` command line.

::

    tropref models                                  # the shipped Fashion-MNIST models
    tropref demo [--out DIR]                        # the main job, about two minutes
    tropref compress MODEL [--method M] [--keep Q] [--layers G] [--out FILE.npz]
    tropref sweep --model MODEL [--methods ...] [--fractions ...] [--layers ...] [--seeds ...] [--out DIR]
    tropref certcheck [--model lenet300] [--methods ...] [--fractions ...]   # certificate vs error

``MODEL`` is a shipped model's name (``lenet300``, ``lenet5``, ``vgg_small``, ``resnet20``), a ``.npz``
model file in the shipped format, or a PyTorch file (``.pt``/``.pth``, read through ``tropref.adapters.torch``; needs
PyTorch): a state_dict with ``--arch module:Class``, or a whole pickled module with
``--trust-pickle`` only (unpickling can run code; ``docs/security.md``). Evaluation uses
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


def _load(
    model: str, input_shape: Sequence[int] | None = None, trust_pickle: bool = False, arch: str | None = None
) -> tuple[Any, dict[str, Any]]:
    path = Path(model)
    if path.suffix in (".pt", ".pth"):
        try:
            import torch
        except ImportError:
            raise SystemExit("tropref: reading a .pt model needs PyTorch (pip install torch)") from None
        from tropref.adapters.torch import from_torch

        module = _torch_module(torch, path, trust_pickle, arch)
        return _read(from_torch, module, input_shape=tuple(input_shape or (1, 28, 28))), {"name": path.stem}
    if path.suffix == ".keras":
        import os

        os.environ.setdefault("KERAS_BACKEND", "torch")
        try:
            import keras
        except ImportError:
            raise SystemExit("tropref: reading a .keras model needs Keras (pip install keras)") from None
        from tropref.adapters.keras import from_keras

        return _read(from_keras, _keras_model(keras, path)), {"name": path.stem}
    if path.suffix == ".onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise SystemExit("tropref: reading a .onnx model needs onnx (pip install 'tropref[onnx]')") from None
        from tropref.adapters.onnx import from_onnx

        return _read(from_onnx, path, input_shape=input_shape), {"name": path.stem, "onnx": path}
    try:
        return load_model(model)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"tropref: {exc}") from None


def _read(reader: Any, model: Any, **kw: Any) -> Any:
    """``reader(model)``, its refusal as a tropref message."""
    try:
        return reader(model, **kw)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"tropref: {exc}") from None


_UNSAFE_PT = (
    "tropref: {path} holds Python objects, not only tensors ({why}); building them means unpickling, "
    "which can run any code the file names, so tropref refuses. Save the weights with "
    "torch.save(model.state_dict(), path) and pass --arch module:Class (the model's class, built with no "
    "arguments), or, only for a file you trust as you trust your own code, pass --trust-pickle"
)


def _torch_module(torch: Any, path: Path, trust_pickle: bool, arch: str | None) -> Any:
    """The module in a ``.pt`` file: read with ``weights_only=True`` (tensors and containers
    only, never code), a state_dict loaded into ``arch``; a whole pickled module only when
    the user trusts the file (``--trust-pickle``)."""
    import pickle

    if not path.is_file():
        raise SystemExit(f"tropref: no file {str(path)!r}")
    if not trust_pickle and _version(torch.__version__) < (2, 6):
        raise SystemExit(
            f"tropref: reading a .pt file safely needs PyTorch 2.6 or later (torch.load's weights_only mode of "
            f"older versions can be made to run code); you have {torch.__version__}: upgrade PyTorch"
        )
    try:
        obj = torch.load(path, weights_only=not trust_pickle, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if _refused_global(exc):
            raise SystemExit(_UNSAFE_PT.format(path=str(path), why=f"refused: {_refused_global(exc)}")) from None
        raise SystemExit(f"tropref: cannot read {str(path)!r} as a PyTorch file ({exc})") from None
    except Exception as exc:  # a damaged or foreign file: whatever torch raises, say which file
        raise SystemExit(
            f"tropref: cannot read {str(path)!r} as a PyTorch file ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(obj, torch.nn.Module):
        if arch is not None:
            raise SystemExit(f"tropref: {str(path)!r} holds a whole module; --arch is for a file of a state_dict")
        return obj
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(
            f"tropref: {str(path)!r} holds a {type(obj).__name__}, neither a module nor a state_dict of tensors"
        )
    if arch is None:
        raise SystemExit(
            f"tropref: {str(path)!r} holds a state_dict (weights without the architecture): pass "
            "--arch module:Class (or file.py:Class), the model's class, built with no arguments"
        )
    module = _arch_class(torch, arch)()
    try:
        module.load_state_dict(obj)
    except (RuntimeError, ValueError) as exc:
        raise SystemExit(f"tropref: the state_dict in {str(path)!r} does not fit --arch {arch}: {exc}") from None
    return module.eval()


def _version(text: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` as ``(2, 13, 0)``: the numeric release, for comparisons."""
    import re

    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def _refused_global(exc: Exception) -> str | None:
    """The object torch's weights-only unpickler refused, from its long message."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None


def _arch_class(torch: Any, arch: str) -> Any:
    """The ``nn.Module`` class ``module:Class`` or ``file.py:Class`` (the user's own code)."""
    import importlib
    import importlib.util

    where, _, name = arch.rpartition(":")
    if not where or not name:
        raise SystemExit(f"tropref: --arch must look like module:Class or file.py:Class, got {arch!r}")
    try:
        if where.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(where).stem, where)
            if spec is None or spec.loader is None or not Path(where).is_file():
                raise ImportError(f"no file {where!r}")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(where)
    except ImportError as exc:
        raise SystemExit(f"tropref: --arch {arch}: cannot import {where!r} ({exc})") from None
    cls = getattr(mod, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise SystemExit(f"tropref: --arch {arch}: {where!r} has no torch.nn.Module class {name!r}")
    return cls


def _keras_model(keras: Any, path: Path) -> Any:
    """A ``.keras`` file loaded with Keras's ``safe_mode`` on (no code from the file runs)."""
    if not path.is_file():
        raise SystemExit(f"tropref: no file {str(path)!r}")
    if _version(keras.__version__) < (3, 11, 3):
        raise SystemExit(
            f"tropref: reading a .keras file safely needs Keras 3.11.3 or later (older versions have known ways "
            f"around safe_mode); you have {keras.__version__}: upgrade Keras"
        )
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises several kinds; each becomes one tropref message
        why = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        if "safe_mode=False" in str(exc) or "arbitrary code" in str(exc):
            raise SystemExit(
                f"tropref: {str(path)!r} stores code (a Lambda layer or a function), which Keras's safe_mode "
                f"refuses to run ({why}); tropref keeps safe_mode on. Rebuild the model from plain layers, "
                "then save it again"
            ) from None
        raise SystemExit(f"tropref: cannot load {str(path)!r} with Keras ({why})") from None


def _test_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """The test split of ``--dataset`` (:func:`~tropref.experiments.evaluation_data`), normalised."""
    if args.dataset == "cifar10" and args.data is None:
        raise SystemExit("tropref: --dataset cifar10 needs --data (the unpacked cifar-10-batches-py folder)")
    try:
        x, y, name = evaluation_data(args.data, args.subset, args.dataset)
    except (FileNotFoundError, ValueError) as exc:
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
    except ValueError as exc:
        raise SystemExit(f"tropref: {exc}") from None
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
    net, meta = _load(args.model, args.input_shape, args.trust_pickle, args.arch)
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
    net, meta = _load(args.model, args.input_shape, args.trust_pickle, args.arch)
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
    net, _ = _load(args.model, args.input_shape, args.trust_pickle, args.arch)
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
        q.add_argument(
            "--arch",
            default=None,
            metavar="MODULE:CLASS",
            help="for a .pt file holding a state_dict: the model's nn.Module class (module:Class or file.py:Class), "
            "imported and built with no arguments (this runs that code, your own), then given the weights",
        )
        q.add_argument(
            "--trust-pickle",
            action="store_true",
            help="read a .pt file holding a whole pickled module. RISK: unpickling runs any code the file names, "
            "with your permissions; pass it only for files you made or trust like your own code (docs/security.md)",
        )
        q.add_argument("--no-progress", action="store_true")

    q = sub.add_parser("models", help="list the shipped models")
    q.set_defaults(fn=cmd_models)

    q = sub.add_parser("demo", help="compress the shipped models with TropNNC and five baselines")
    q.add_argument("--out", default="tropref-demo", help="folder for demo.md, demo.json, demo.png")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(fn=cmd_demo)

    q = sub.add_parser("compress", help="compress one model and report layer by layer")
    q.add_argument(
        "model", help="shipped name, .npz model file, .pt file (a state_dict with --arch), .keras or .onnx file"
    )
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
