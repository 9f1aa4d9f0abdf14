"""The ``tropref`` command line.

::

    tropref models                                  # the shipped Fashion-MNIST models
    tropref demo [--out DIR]                        # the main job, about two minutes
    tropref compress MODEL [--method M] [--keep Q|params=Q|macs=Q|units=Q] [--layers G] [--data ...] [--out FILE]
    tropref sweep --model MODEL [--methods ...] [--fractions ...] [--layers ...] [--seeds ...] [--out DIR]
    tropref certcheck [--model lenet300] [--methods ...] [--fractions ...]   # certificate vs error

``MODEL`` is a shipped model's name (``lenet300``, ``lenet5``, ``vgg_small``, ``resnet20``), a
``.npz`` model file in tropref's format, a PyTorch file (``.pt``/``.pth``, read through
``tropref.adapters.torch``; needs PyTorch): a state_dict with ``--arch module:Class``, or a
whole pickled module with ``--trust-pickle`` only (unpickling can run code;
``docs/security.md``), a Keras file (``.keras``, or legacy ``.h5``; read with Keras's safe
mode) or an ONNX file (``.onnx``). ``--out`` writes the compressed model in the input's
format under the name given (``.onnx`` and tropref's ``.npz`` are accepted for any input):
the help of ``tropref compress`` says how to load each back.

``--data`` is a folder (Fashion-MNIST IDX files, or with ``--dataset cifar10`` the unpacked
``cifar-10-batches-py``), or the user's own arrays: ``x.npy [y.npy]`` or one ``.npz`` with
``x`` and optionally ``y``, inputs of any shape in the model's own layout. Without it,
evaluation uses Fashion-MNIST's test split when the Debian package ``dataset-fashion-mnist``
is installed, else the 2,000 test images shipped with tropref (``--subset`` forces them). A
model whose input shape or number of outputs does not fit the data is refused. Options of a
method: ``--option tropnnc.refine=weiszfeld`` (repeatable).
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
from ..network import Budget, compress_network
from .certcheck import certificate_check, certificate_markdown
from .data import calibration_data, evaluation_data
from .demos import demo
from .models import LAYER_GROUPS, input_dtype, keep_rule, load_model, predict, save_model, shipped_models
from .report import write_report
from .sweeps import sweep
from .userdata import agreement, check_fit, load_arrays, parse_keep

__all__ = ["main"]


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


# the format of a model file by its suffix (anything else: a shipped name or tropref's .npz)
_FORMATS = {".pt": "pt", ".pth": "pt", ".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".onnx": "onnx"}
# what --out writes for each format: the same format, or ONNX / tropref's .npz for any model
_OWN_SUFFIXES = {"pt": (".pt", ".pth"), "keras": (".keras", ".h5"), "onnx": (".onnx",), "npz": (".npz",)}
_FORMAT_NAMES = {"pt": "a PyTorch", "keras": "a Keras", "onnx": "an ONNX", "npz": "a tropref"}
_PORTABLE = {".onnx": ".onnx (ONNX)", ".npz": ".npz (tropref's format)"}

_LOAD_BACK = """\
how to load the file --out wrote:
  .pt     a state_dict of the compressed model, in your own class, resized:
            from tropref.adapters.torch import load_compressed
            small = load_compressed(Net(), torch.load("small.pt", weights_only=True))
          (Net: the --arch class; for a whole pickled module, the original module itself)
  .keras  a Keras model of plain layers (.h5: the legacy format):
            small = keras.saving.load_model("small.keras")
  .onnx   the model's own graph with new weights (a new graph for other inputs):
            onnxruntime.InferenceSession("small.onnx")   # or onnx.load
  .npz    tropref's format:  net, meta = tropref.experiments.load_model("small.npz")
"""


def _format(model: str) -> str:
    """``"pt"``, ``"keras"``, ``"onnx"`` or ``"npz"`` (tropref's files and shipped names)."""
    return _FORMATS.get(Path(model).suffix.lower(), "npz")


def _load(
    model: str,
    input_shape: Sequence[int] | None = None,
    trust_pickle: bool = False,
    arch: str | None = None,
    context: str = "",
) -> tuple[Any, dict[str, Any]]:
    """The model as a Network, and what writing it back needs (``meta``); ``context`` is
    added to a refusal (where ``input_shape`` came from)."""
    path = Path(model)
    fmt = _format(model)
    if arch is not None and fmt != "pt":
        raise SystemExit(f"tropref: --arch is for a .pt file holding a state_dict; {str(path)!r} is not one")
    meta: dict[str, Any] = {"name": path.stem, "format": fmt}
    if fmt == "pt":
        try:
            import torch
        except ImportError:
            raise SystemExit("tropref: reading a .pt model needs PyTorch (pip install torch)") from None
        from tropref.adapters.torch import from_torch

        module = _torch_module(torch, path, trust_pickle, arch)
        shape = tuple(input_shape or (1, 28, 28))
        return _read(from_torch, module, context, input_shape=shape), {**meta, "module": module}
    if fmt == "keras":
        import os

        os.environ.setdefault("KERAS_BACKEND", "torch")
        try:
            import keras
        except ImportError:
            raise SystemExit(f"tropref: reading a {path.suffix} model needs Keras (pip install keras)") from None
        from tropref.adapters.keras import data_format_of, from_keras

        k = _keras_model(keras, path)
        return _read(from_keras, k, context), {**meta, "data_format": data_format_of(k)}
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise SystemExit("tropref: reading a .onnx model needs onnx (pip install 'tropref[onnx]')") from None
        from tropref.adapters.onnx import from_onnx

        return _read(from_onnx, path, context, input_shape=input_shape), {**meta, "onnx": path}
    try:
        net, info = load_model(model)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"tropref: {exc}") from None
    return net, {**info, "format": "npz", "shipped": model in shipped_models()}


def _read(reader: Any, model: Any, context: str = "", **kw: Any) -> Any:
    """``reader(model)``, its refusal as a tropref message."""
    try:
        return reader(model, **kw)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"tropref: {exc}{context}") from None


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
    except (AttributeError, ImportError) as exc:  # a pickled module whose class cannot be found here
        raise SystemExit(
            f"tropref: {str(path)!r} holds a whole pickled module whose class Python cannot find here "
            f"({type(exc).__name__}: {exc}): torch.save(model) stores the class by module and name, not its "
            "code. Save the weights with torch.save(model.state_dict(), path) and pass --arch module:Class "
            "(or file.py:Class), or run tropref where the class's module can be imported (PYTHONPATH)"
        ) from None
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
    cls = _arch_class(torch, arch)
    try:
        module = cls()
    except Exception as exc:  # the user's constructor: whatever it raises, said with the option's name
        raise SystemExit(
            f"tropref: --arch {arch}: building {cls.__name__}() failed ({type(exc).__name__}: {exc}); --arch "
            "names a class built with no arguments: give its arguments defaults, or name a subclass that passes them"
        ) from None
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
    except Exception as exc:  # ImportError, or whatever the user's module raises when it runs
        raise SystemExit(f"tropref: --arch {arch}: cannot import {where!r} ({type(exc).__name__}: {exc})") from None
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


def _data_source(args: argparse.Namespace) -> None:
    """``--data`` told apart by what it is: a folder (``args.data``, the IDX or CIFAR-10
    files) or the user's arrays (``args.arrays``: ``x.npy [y.npy]`` or one ``.npz``)."""
    given = list(args.data or [])
    args.data, args.arrays = None, None
    if not given:
        return
    if len(given) == 1 and Path(given[0]).is_dir():
        args.data = given[0]
        return
    missing = [p for p in given if not Path(p).exists()]
    if missing:
        raise SystemExit(f"tropref: --data: no file or folder {missing[0]!r}")
    if len(given) > 2 or any(Path(p).suffix not in (".npy", ".npz") for p in given):
        raise SystemExit(
            f"tropref: --data takes a folder (the Fashion-MNIST IDX files, or with --dataset cifar10 the unpacked "
            f"cifar-10-batches-py), x.npy [y.npy], or one .npz of arrays x [and y]; got {' '.join(given)}"
        )
    if args.dataset != "fashion-mnist" or args.subset:
        raise SystemExit("tropref: --dataset and --subset name a built-in dataset; with --data arrays leave them out")
    args.arrays = given


def _test_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None, str, str]:
    """The test inputs (the user's arrays in the model's own layout, else the built-in
    split, NCHW), labels (None for arrays without them), the split's name and a
    description of the dataset for messages."""
    if args.arrays is not None:
        try:
            x, y, name = load_arrays(args.arrays)
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"tropref: {exc}") from None
        return x, y, name, name
    if args.dataset == "cifar10" and args.data is None:
        raise SystemExit("tropref: --dataset cifar10 needs --data (the unpacked cifar-10-batches-py folder)")
    try:
        x, y, name = evaluation_data(args.data, args.subset, args.dataset)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"tropref: {exc}") from None
    described = name if args.dataset == "cifar10" else f"Fashion-MNIST {name}"
    return x, y, name, described


def _setup(args: argparse.Namespace, model: str) -> tuple[Any, dict[str, Any], np.ndarray, np.ndarray | None, str]:
    """The model read, the test data as it reads them (normalised, in its dtype), checked to
    fit each other: ``(net, meta, x, y, test_name)``."""
    _data_source(args)
    x, y, name, described = _test_data(args)
    hint, context = args.input_shape, ""
    if hint is None and _format(model) == "pt":  # a .pt file does not store its input shape: the data's
        hint = x.shape[1:]
        context = (
            f" (tropref read the model with inputs of shape {'x'.join(map(str, hint))}, those of "
            f"{described}; pass --input-shape, or --data with inputs of the model's shape)"
        )
    net, meta = _load(model, hint, args.trust_pickle, args.arch, context)
    if meta["format"] == "onnx" and net.input_shape is None:  # no static dims in the graph: the data's
        net, meta = _load(model, x.shape[1:], args.trust_pickle, args.arch, context)
    channels_last = meta.get("data_format") == "channels_last"
    if args.arrays is not None and channels_last and x.ndim == 4:
        x = np.transpose(x, (0, 3, 1, 2))  # the model's NHWC images as the core reads them
    x = _normalise(args, x).astype(input_dtype(net))
    label = f"{str(model)!r}" if meta.get("format") != "npz" or not meta.get("shipped") else model
    try:
        k = check_fit(net, x, y, described, label, channels_last)
    except ValueError as exc:
        raise SystemExit(f"tropref: {exc}") from None
    if args.arrays is None and args.data is None and args.dataset == "fashion-mnist" and not meta.get("shipped"):
        shape = "x".join(str(int(s)) for s in x.shape[1:])
        print(
            f"tropref: note: scoring on {described} ({len(x)} images; no --data given), which fits the model "
            f"({shape} inputs, {k} outputs); pass --data x.npy [y.npy] to score on your own data",
            file=sys.stderr,
        )
    if y is not None and int(y.max()) + 1 < k:
        print(
            f"tropref: note: the model gives {k} outputs, the labels of {described} name {int(y.max()) + 1} "
            "classes; the other outputs count as wrong answers",
            file=sys.stderr,
        )
    return net, meta, x, y, name


def _normalise(args: argparse.Namespace, x: np.ndarray) -> np.ndarray:
    if args.mean is None and args.std is None:
        return x
    if x.ndim != 4:
        raise SystemExit(f"tropref: --mean/--std are per channel of images (N, C, H, W); the inputs are {x.shape}")
    c = x.shape[1]
    mean = np.asarray(args.mean if args.mean is not None else [0.0] * c, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(args.std if args.std is not None else [1.0] * c, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean.size != c or std.size != c:
        raise SystemExit(f"tropref: --mean/--std need {c} values (one per channel)")
    return (x - mean) / std


def _calibration(args: argparse.Namespace, dtype: Any) -> np.ndarray:
    """``args.calibration`` training images (:func:`~tropref.experiments.calibration_data`), normalised."""
    if args.arrays is not None:
        raise SystemExit(
            "tropref: 'thinet' needs training images as calibration data, and --data arrays are the test set: "
            "pass --data FOLDER (Fashion-MNIST IDX files, or --dataset cifar10), or use a data-free method"
        )
    try:
        x = calibration_data(args.calibration, args.data, args.dataset)
    except FileNotFoundError as exc:
        raise SystemExit(f"tropref: 'thinet' needs training images as calibration data. {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"tropref: {exc}") from None
    return _normalise(args, x).astype(dtype)


def _cmd_models(args: argparse.Namespace) -> int:
    print(f"{'model':<10} {'parameters':>10} {'test accuracy':>14}  layers")
    for name, meta in shipped_models().items():
        kinds = [l["kind"] for l in meta["architecture"] if l["kind"] in ("linear", "conv2d")]
        desc = ", ".join(f"{kinds.count(k)} {k}" for k in ("conv2d", "linear") if k in kinds)
        if any(l["kind"] == "add" for l in meta["architecture"]):
            desc += ", residual"
        print(f"{name:<10} {meta['parameters']:>10,} {100 * meta['test_accuracy']:>13.2f}%  {desc}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    demo(out_dir=args.out, progress=not args.no_progress)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def _out_checked(args: argparse.Namespace) -> Path | None:
    """``--out``, checked before any work: a suffix the input's format is written as, and a
    folder that exists."""
    if not args.out:
        return None
    out, fmt = Path(args.out), _format(args.model)
    own = _OWN_SUFFIXES[fmt]
    others = [x for x in (".onnx", ".npz") if x not in own]
    if out.suffix.lower() not in (*own, *others):
        raise SystemExit(
            f"tropref: --out {args.out!r}: {_FORMAT_NAMES[fmt]} model is written as {' or '.join(own)} (its own "
            f"format), or as {' or '.join(_PORTABLE[o] for o in others)}; got {out.suffix or 'no suffix'}"
        )
    if not out.parent.is_dir():
        raise SystemExit(f"tropref: --out {args.out!r}: no folder {str(out.parent)!r}")
    return out


def _keep(args: argparse.Namespace, net: Any) -> Any:
    """The ``keep`` of ``compress_network`` for ``--keep`` and ``--layers``."""
    if isinstance(args.keep, Budget):
        if args.layers not in ("all", "nonuniform"):
            raise SystemExit(
                f"tropref: --keep {_keep_text(args.keep)} is a budget over the whole network; "
                f"--layers {args.layers} does not apply to it: leave --layers at all"
            )
        return args.keep
    try:
        return keep_rule(net, args.keep, args.layers)
    except (ValueError, NotImplementedError) as exc:
        raise SystemExit(f"tropref: {exc}") from None


def _compress(args: argparse.Namespace, net: Any, meta: dict[str, Any], x: np.ndarray, out: Path | None) -> Any:
    """Compress ``net``: through ``compress_network``, or, for a ``.pt`` written as ``.pt``,
    through ``tropref.adapters.torch.compress(..., in_place=True)`` (the user's own class,
    resized): ``(compressed network, report, module or None)``."""
    calibration = _calibration(args, x.dtype) if args.method == "thinet" else None
    keep = _keep(args, net)
    box = np.stack([x.min(axis=0), x.max(axis=0)])
    opts = _options(args.option, [args.method]).get(args.method, {})
    kw = dict(method=args.method, seed=args.seed, data=calibration, inputs=box, progress=not args.no_progress, **opts)
    try:
        if meta["format"] == "pt" and out is not None and out.suffix.lower() in (".pt", ".pth"):
            import warnings

            from tropref.adapters.torch import compress, from_torch

            with warnings.catch_warnings():  # a fallback is said below, as a refusal to write the file
                warnings.simplefilter("ignore", UserWarning)
                module, report = compress(
                    meta["module"], keep, input_shape=net.input_shape, dtype=input_dtype(net), in_place=True, **kw
                )
            small = from_torch(module, input_shape=net.input_shape, dtype=input_dtype(net))
            return small, report, module
        small, report = compress_network(net, keep, **kw)
    except (ValueError, NotImplementedError) as exc:
        raise SystemExit(f"tropref: {exc}") from None
    return small, report, None


def _write(args: argparse.Namespace, out: Path, small: Any, meta: dict[str, Any], report: Any, module: Any) -> None:
    """The compressed model written to ``out`` in the format its suffix names."""
    suffix = out.suffix.lower()
    if suffix in (".pt", ".pth"):
        import torch

        rebuilt = [n for n in report.notes if "not resized in place" in n]  # compress's fallback, said in a note
        if rebuilt or type(module) is not type(meta["module"]):
            why = "; ".join(rebuilt) or "the model was rebuilt as plain layers"
            raise SystemExit(
                f"tropref: cannot write {str(out)!r} as a state_dict of {type(meta['module']).__name__}: {why}. "
                "Write --out small.onnx or small.npz instead"
            )
        torch.save(module.state_dict(), out)
    elif suffix in (".keras", ".h5"):
        from tropref.adapters.keras import to_keras

        to_keras(small, data_format=meta["data_format"]).save(out)
    elif suffix == ".onnx":  # the ONNX model read, its graph edited (else a new one)
        import onnx

        from tropref.adapters.onnx import to_onnx

        onnx.save(to_onnx(small, like=meta.get("onnx")), out)
    else:
        try:
            save_model(
                small,
                out,
                {
                    "compressed_from": meta.get("name"),
                    "method": args.method,
                    "keep": _keep_text(args.keep),
                    "layers": args.layers,
                    "seed": report.seed,
                },
            )
        except ValueError as exc:
            raise SystemExit(f"tropref: cannot write {str(out)!r}: {exc}; write --out small.onnx instead") from None
    print(f"wrote {out}")


def _cmd_compress(args: argparse.Namespace) -> int:
    out = _out_checked(args)
    net, meta, x, y, test_name = _setup(args, args.model)
    small, report, module = _compress(args, net, meta, x, out)
    before, after = predict(net, x), predict(small, x)
    # the report's own "measured" line refers to the two box corners passed as `inputs`
    table = report.table().replace("the box spanned by the 2 inputs given", f"the box spanned by {test_name}")
    print("\n".join(line for line in table.splitlines() if "on the inputs given" not in line))
    same, relative = agreement(before, after)
    print(f"measured max|Δ logits| on {test_name}: {float(np.max(np.abs(before - after))):.4g}")
    print(f"relative logit error on {test_name}: ‖Δ logits‖ / ‖logits‖ = {relative:.4g}")
    print(f"top-1 agreement with the original on {test_name} ({len(x)} inputs): {100 * same:.2f}%")
    if y is not None:
        print(
            f"test accuracy on {test_name} ({len(y)} images): "
            f"{100 * np.mean(before.argmax(1) == y):.2f}% -> {100 * np.mean(after.argmax(1) == y):.2f}%"
        )
    if out is not None:
        _write(args, out, small, meta, report, module)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    net, meta, x, y, test_name = _setup(args, args.model)
    if y is None:
        raise SystemExit("tropref: a sweep scores accuracy: give labels with the inputs (--data x.npy y.npy)")
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


def _cmd_certcheck(args: argparse.Namespace) -> int:
    net, _, x, y, _ = _setup(args, args.model)
    try:
        options = _options(args.option, args.methods)
        rows = certificate_check(
            net, methods=args.methods, fractions=args.fractions, seed=args.seed, test=(x, y), options=options
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"tropref: {exc}") from None
    print(certificate_markdown(rows))
    return 0


def _keep_text(keep: Any) -> str:
    return f"{keep.kind}={keep.fraction:g}" if isinstance(keep, Budget) else f"{keep:g}"


def _keep_arg(text: str) -> Any:
    """``--keep`` for argparse: its refusal as argparse's own error (naming the option)."""
    try:
        return parse_keep(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_MODEL_HELP = (
    "a shipped model's name, a tropref .npz model file, a PyTorch .pt/.pth file (a state_dict with --arch "
    "module:Class; a whole pickled module only with --trust-pickle), a Keras .keras or .h5 file, or an ONNX .onnx file"
)
_LAYERS_HELP = (
    "the layers compressed (default: all): dense, conv, all (every hidden layer) or nonuniform (a units "
    "budget spread over the layers)"
)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tropref", description="TropNNC: data-free structured compression of ReLU networks."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--data",
            nargs="+",
            default=None,
            metavar="PATH",
            help="test data: a folder (the Fashion-MNIST IDX files, default the Debian package's; with --dataset "
            "cifar10 the unpacked cifar-10-batches-py), or your own arrays: x.npy [y.npy], or one .npz with arrays "
            "x [and y]; inputs of any shape in the model's own layout (NHWC for a channels-last Keras model), "
            "labels as class indices (or one-hot rows). A model that does not fit the data (input shape, number "
            "of outputs) is refused. Give MODEL before --data",
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
            "--input-shape",
            type=int,
            nargs="+",
            default=None,
            help="C H W (or D) of one input of a .pt model, or of an ONNX model without static dims "
            "(default: the shape of the test inputs)",
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
    q.set_defaults(fn=_cmd_models)

    q = sub.add_parser("demo", help="compress the shipped models with TropNNC and five baselines")
    q.add_argument("--out", default="tropref-demo", help="folder for demo.md, demo.json, demo.png")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(fn=_cmd_demo)

    q = sub.add_parser(
        "compress",
        help="compress one model and report layer by layer",
        description="Compress one model, report layer by layer, score it against the original on test data "
        "(accuracy with labels; top-1 agreement and relative logit error always), and write it with --out.",
        epilog=_LOAD_BACK,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("model", help=_MODEL_HELP)
    q.add_argument("--method", default="tropnnc", choices=sorted(METHODS))
    q.add_argument(
        "--keep",
        type=_keep_arg,
        default=0.5,
        metavar="Q|params=Q|macs=Q|units=Q",
        help="kept fraction of the units of each layer of --layers (default 0.5), or a tropref.Budget over the "
        "whole network: params=0.3, macs=0.5 or units=0.4 (at most that fraction of the parameters, "
        "multiply-accumulates or hidden units, spread over the layers by their certificates)",
    )
    q.add_argument("--layers", default="all", choices=LAYER_GROUPS, help=_LAYERS_HELP)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the compressed model to FILE, exactly that name, in the input's format: .pt (a state_dict of "
        "your --arch class, resized), .keras or .h5, .onnx, .npz; .onnx and .npz (tropref's format) for any "
        "input. How to load each back: below",
    )
    data_args(q)
    q.set_defaults(fn=_cmd_compress)

    q = sub.add_parser("certcheck", help="layer certificate against measured error on the first dense layer")
    q.add_argument("--model", default="lenet300", help=_MODEL_HELP)
    q.add_argument(
        "--methods",
        nargs="+",
        default=["tropnnc", "neural_path_kmeans", "neuron_merging", "cup", "l1"],
        choices=sorted(METHODS),
    )
    q.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.3, 0.1])
    q.add_argument("--seed", type=int, default=0)
    data_args(q)
    q.set_defaults(fn=_cmd_certcheck)

    q = sub.add_parser("sweep", help="methods x kept fractions x layer groups x seeds, with report and plot")
    q.add_argument("--model", required=True, help=_MODEL_HELP)
    q.add_argument("--methods", nargs="+", default=["tropnnc", "cup", "l1", "neuron_merging"], choices=sorted(METHODS))
    q.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    q.add_argument("--layers", nargs="+", default=["all"], choices=LAYER_GROUPS, help=_LAYERS_HELP)
    q.add_argument("--seeds", nargs="+", type=int, default=[0])
    q.add_argument("--out", default="results", help="folder for <stem>.json, .md, .png")
    q.add_argument("--stem", default=None, help="file name stem (default: <model>_<layers>)")
    q.add_argument("--no-plot", action="store_true")
    data_args(q)
    q.set_defaults(fn=_cmd_sweep)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    args.argv = argv
    return int(args.fn(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
