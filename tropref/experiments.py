"""Experiments: shipped models, sweeps of methods × kept fractions × layers, reports, plots.

Functions
---------
shipped_models
    The Fashion-MNIST models in ``tropref/assets/`` and the test accuracy each reached.
load_model, save_model
    A model as a :class:`tropref.network.Network`, from a shipped name or a ``.npz`` file
    (``state_dict`` arrays in PyTorch layouts plus an ``__arch__`` JSON string, the format of
    ``examples/train_models.py``), and back.
accuracy
    Top-1 accuracy of a network on images and labels.
keep_rule
    The ``keep`` argument of :func:`tropref.compress_network` for a kept fraction and a
    layer group (``"dense"``, ``"conv"``, ``"all"``, or ``"nonuniform"``).
sweep
    Compress a model with several methods at several kept fractions (several seeds where a
    method is random), without fine-tuning, and evaluate each result.
summarize, markdown, plot, write_report
    Mean ± std over seeds, a Markdown table, PNG plots of accuracy against kept fraction,
    parameters and MACs, and all of them written to a folder together with the raw JSON.
demo
    The main job: the shipped models at a few fractions with TropNNC and three baselines.

A sweep works on any :class:`~tropref.network.Network` and any test arrays, so a user's own
model (through ``tropref.adapters``) and data (CIFAR-10, ImageNet, preprocessed as the model
expects) go through the same code; :func:`load_cifar10` reads the CIFAR-10 Python batches.
Nothing here is run on CIFAR or ImageNet on the project's machines.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import assets_dir, load_fashion_mnist, load_test, to_float
from .network import (
    Add,
    AvgPool2d,
    BatchNorm,
    Budget,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Identity,
    MaxPool2d,
    Network,
    ReLU,
    count_macs,
    count_params,
)

__all__ = [
    "DETERMINISTIC",
    "LAYER_GROUPS",
    "NEURON_MERGING_PUBLISHED",
    "shipped_models",
    "load_model",
    "save_model",
    "accuracy",
    "hidden_layer_names",
    "keep_rule",
    "sweep",
    "summarize",
    "markdown",
    "plot",
    "write_report",
    "load_cifar10",
    "certificate_check",
    "certificate_markdown",
    "predict",
    "demo",
]

DETERMINISTIC = frozenset({"l1", "cup", "neuron_merging"})
"""Methods whose result does not depend on the seed: run once per configuration."""

LAYER_GROUPS = ("dense", "conv", "all", "nonuniform")

NEURON_MERGING_PUBLISHED = {
    "source": "Kim et al., NeurIPS 2020, LeNet-300-100 on Fashion-MNIST, no fine-tuning",
    "baseline_accuracy": 0.8980,
    "merge": {0.5: 0.8869, 0.4: 0.8692, 0.3: 0.8275, 0.2: 0.8002},
    "prune": {0.5: 0.8840, 0.4: 0.8517, 0.3: 0.7126, 0.2: 0.6676},
}
"""The published anchor (``docs/theory.md``, section 4); their own trained network."""


# ----------------------------------------------------------------------------- models


def shipped_models() -> dict[str, dict[str, Any]]:
    """Architecture, parameters, training settings and test accuracy of the shipped models."""
    return json.loads((assets_dir() / "models.json").read_text())


def _network_from_arrays(
    arch: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray], input_shape: Sequence[int] | None, dtype: Any
) -> Network:
    def get(name: str, what: str) -> np.ndarray:
        key = f"{name}.{what}"
        if key not in arrays:
            raise ValueError(f"model file has no array {key!r} for layer {name!r}")
        return np.asarray(arrays[key], dtype=dtype)

    layers = []
    graph = any("inputs" in spec for spec in arch)
    for spec in arch:
        kind, name = spec["kind"], spec.get("name")
        if kind == "linear":
            layers.append(Dense(get(name, "weight"), get(name, "bias"), name=name))
        elif kind == "conv2d":
            layers.append(
                Conv2d(
                    get(name, "weight"),
                    get(name, "bias") if spec.get("bias", True) else None,
                    stride=spec.get("stride", 1),
                    padding=spec.get("padding", 0),
                    name=name,
                )
            )
        elif kind == "batchnorm2d":
            layers.append(
                BatchNorm(
                    get(name, "running_mean"),
                    get(name, "running_var"),
                    get(name, "weight"),
                    get(name, "bias"),
                    eps=spec.get("eps", 1e-5),
                    name=name,
                )
            )
        elif kind == "relu":
            layers.append(ReLU(name=name))
        elif kind == "maxpool2d":
            layers.append(MaxPool2d(spec["kernel_size"], spec.get("stride"), name=name))
        elif kind == "avgpool2d":
            layers.append(AvgPool2d(spec["kernel_size"], spec.get("stride"), name=name))
        elif kind == "flatten":
            layers.append(Flatten(spec.get("order", "channels_first"), name=name))
        elif kind == "add":
            layers.append(Add(name=name))
        elif kind == "concat":
            layers.append(Concat(name=name))
        elif kind == "identity":
            layers.append(Identity(name=name))
        else:
            raise ValueError(f"model file: unknown layer kind {kind!r}")
    inputs = [tuple(spec.get("inputs", [i - 1])) for i, spec in enumerate(arch)] if graph else None
    return Network(layers, None if input_shape is None else tuple(input_shape), inputs)


def load_model(model: str | os.PathLike, dtype: Any = np.float32) -> tuple[Network, dict[str, Any]]:
    """A shipped model by name (``"lenet300"``, ``"lenet5"``, ``"vgg_small"``) or a ``.npz`` file.

    Returns
    -------
    network : Network
        NumPy arrays of ``dtype``, input shape ``(1, 28, 28)`` for the shipped models.
    meta : dict
        The model's entry of ``models.json`` (test accuracy, training) or, for a file, its
        ``__meta__`` JSON when present; always with ``name`` and ``architecture``.
    """
    models = shipped_models()
    if isinstance(model, str) and model in models:
        meta = dict(models[model])
        path = assets_dir() / meta["file"]
        meta["name"] = model
    else:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(
                f"`model` {str(model)!r} is neither a shipped model ({', '.join(sorted(models))}) nor a .npz file"
            )
        meta = {"name": path.stem}
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if "__arch__" not in arrays:
        raise ValueError(f"`model`: {str(path)!r} has no '__arch__' entry describing its layers")
    arch = json.loads(str(arrays.pop("__arch__")))
    if "__meta__" in arrays:
        meta = {**json.loads(str(arrays.pop("__meta__"))), **meta}
    meta["architecture"] = arch
    input_shape = meta.get("input_shape", [1, 28, 28])
    return _network_from_arrays(arch, arrays, input_shape, dtype), meta


def save_model(net: Network, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a network of dense, conv, BatchNorm, ReLU, max/avg-pool and flatten layers (and,
    in a graph, additions, concatenations and identities) as ``.npz``.

    The format of the shipped models (readable by :func:`load_model` and by a few lines of
    PyTorch: see ``examples/train_models.py``'s ``build_torch``). Layers without a name get
    ``layer<i>``; in a graph every layer lists the layers it reads as ``inputs``.
    """
    arrays: dict[str, np.ndarray] = {}
    arch = []
    from ._array import to_numpy
    from .network import Dropout, Identity

    for i, layer in enumerate(net.layers):
        name = getattr(layer, "name", None) or f"layer{i}"
        n_before = len(arch)
        if not net.is_chain and isinstance(layer, (Add, Concat, Dropout, Identity)):
            arch.append({"kind": {Add: "add", Concat: "concat"}.get(type(layer), "identity"), "name": name})
        elif (
            isinstance(layer, AvgPool2d)
            and not layer.padded
            and layer.kernel[0] == layer.kernel[1]
            and layer.stride[0] == layer.stride[1]
        ):
            arch.append({"kind": "avgpool2d", "kernel_size": layer.kernel[0], "stride": layer.stride[0]})
        elif isinstance(layer, Dense):
            W = to_numpy(layer.W)
            arch.append(
                {"kind": "linear", "name": name, "in_features": int(W.shape[1]), "out_features": int(W.shape[0])}
            )
            arrays[f"{name}.weight"] = W
            arrays[f"{name}.bias"] = np.zeros(W.shape[0], W.dtype) if layer.b is None else to_numpy(layer.b)
        elif isinstance(layer, Conv2d):
            W = to_numpy(layer.W)
            t, b_, l_, r_ = layer.padding
            if (
                not (t == b_ == l_ == r_)
                or layer.dilation != (1, 1)
                or layer.stride[0] != layer.stride[1]
                or W.shape[2] != W.shape[3]
            ):
                raise ValueError(
                    f"save_model: layer {name!r} has asymmetric padding, dilation or non-square kernel/stride"
                )
            arch.append(
                {
                    "kind": "conv2d",
                    "name": name,
                    "in_channels": int(W.shape[1]),
                    "out_channels": int(W.shape[0]),
                    "kernel_size": int(W.shape[2]),
                    "stride": int(layer.stride[0]),
                    "padding": int(t),
                }
            )
            if layer.b is None and not net.is_chain:
                arch[-1]["bias"] = False
            else:
                arrays[f"{name}.bias"] = np.zeros(W.shape[0], W.dtype) if layer.b is None else to_numpy(layer.b)
            arrays[f"{name}.weight"] = W
        elif isinstance(layer, BatchNorm):
            c = layer.channels
            mean = to_numpy(layer.mean)
            arch.append({"kind": "batchnorm2d", "name": name, "num_features": c, "eps": layer.eps})
            arrays[f"{name}.running_mean"] = mean
            arrays[f"{name}.running_var"] = to_numpy(layer.var)
            arrays[f"{name}.weight"] = np.ones(c, mean.dtype) if layer.weight is None else to_numpy(layer.weight)
            arrays[f"{name}.bias"] = np.zeros(c, mean.dtype) if layer.bias is None else to_numpy(layer.bias)
        elif isinstance(layer, ReLU):
            arch.append({"kind": "relu"})
        elif (
            isinstance(layer, MaxPool2d)
            and type(layer) is MaxPool2d
            and not layer.padded
            and layer.kernel[0] == layer.kernel[1]
            and layer.stride[0] == layer.stride[1]
        ):
            arch.append({"kind": "maxpool2d", "kernel_size": layer.kernel[0], "stride": layer.stride[0]})
        elif isinstance(layer, Flatten):
            arch.append({"kind": "flatten", "order": layer.order})
        elif isinstance(layer, (Dropout, Identity)):
            continue  # the identity at inference
        else:
            raise ValueError(f"save_model: cannot write layer {i} ({type(layer).__name__})")
        if not net.is_chain and len(arch) > n_before:
            arch[-1]["inputs"] = list(net.sources(i))
    arrays["__arch__"] = np.array(json.dumps(arch))
    meta = dict(meta or {})
    if net.input_shape is not None:
        meta.setdefault("input_shape", list(net.input_shape))
    arrays["__meta__"] = np.array(json.dumps(meta, default=str))
    path = Path(path)
    np.savez_compressed(path, **arrays)
    return path


def predict(net: Network, x: np.ndarray, chunk: int = 250) -> np.ndarray:
    """``net(x)`` as a NumPy array: :func:`tropref.network.forward` in chunks of ``chunk``."""
    from ._array import to_numpy
    from .network import forward

    return np.asarray(to_numpy(forward(net, np.asarray(x), chunk=chunk)))


def accuracy(net: Network, images: np.ndarray, labels: np.ndarray, batch: int = 250) -> float:
    """Top-1 accuracy of ``net`` on ``images`` (already preprocessed) and integer ``labels``."""
    labels = np.asarray(labels)
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"`images` ({len(images)}) and `labels` ({len(labels)}) must be non-empty and of one length")
    return float(np.mean(np.argmax(predict(net, images, batch), axis=1) == labels))


# ----------------------------------------------------------------------------- sweeps


def hidden_layer_names(net: Network) -> dict[str, list[Any]]:
    """Compressible layers by kind: in a chain every dense or conv layer but the last (the
    classifier); in a graph the layers whose channels are not coupled to other paths
    (:func:`tropref.network.compressible_layers`).

    Keys ``"dense"`` and ``"conv"``; values are layer names (or indices when unnamed).
    """
    linear = [i for i, l in enumerate(net.layers) if isinstance(l, (Dense, Conv2d))][:-1]
    if not net.is_chain:
        from .network import compressible_layers

        linear = compressible_layers(net)
    out: dict[str, list[Any]] = {"dense": [], "conv": []}
    for i in linear:
        layer = net.layers[i]
        key = layer.name if layer.name else i
        out["dense" if isinstance(layer, Dense) else "conv"].append(key)
    return out


def keep_rule(net: Network, fraction: float, layers: str = "all") -> Any:
    """The ``keep`` argument of ``compress_network`` for a kept fraction and a layer group.

    ``"dense"`` / ``"conv"``: that fraction of the units of every hidden dense / conv layer,
    the others untouched; ``"all"``: every hidden layer; ``"nonuniform"``: a
    ``tropref.Budget`` keeping that fraction of the hidden units of the whole network,
    distributed over the layers from their certificates.
    """
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.floating))
        or not 0 < float(fraction) <= 1
    ):
        raise ValueError(f"`fraction` must lie in (0, 1], got {fraction!r}")
    if layers not in LAYER_GROUPS:
        raise ValueError(f"`layers` must be one of {LAYER_GROUPS}, got {layers!r}")
    fraction = float(fraction)
    if layers == "all":
        return fraction
    if layers == "nonuniform":
        return Budget(units=fraction)
    names = hidden_layer_names(net)[layers]
    if not names:
        raise ValueError(f"`layers`={layers!r}: the network has no hidden {layers} layer")
    return {name: fraction for name in names}


def _compress_network() -> Callable[..., Any]:
    try:
        from . import compress_network  # type: ignore[attr-defined]
    except ImportError:
        from .network import compress_network
    return compress_network


class _Progress:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 24
        fill = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        sys.stderr.write(
            f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
            f"{elapsed:5.0f} s (eta {eta:4.0f} s) {label[:40]:<40}"
        )
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def sweep(
    model: str | os.PathLike | Network,
    *,
    methods: Sequence[str] = ("tropnnc", "l1", "neuron_merging"),
    fractions: Sequence[float] = (0.5, 0.4, 0.3, 0.2, 0.1, 0.05),
    layers: Sequence[str] | str = ("dense",),
    seeds: Sequence[int] = (0,),
    test: tuple[np.ndarray, np.ndarray] | None = None,
    calibration: np.ndarray | None = None,
    data_path: str | os.PathLike | None = None,
    subset: bool = False,
    n_calibration: int = 1000,
    n_error: int = 1000,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    name: str | None = None,
    test_name: str | None = None,
) -> dict[str, Any]:
    """Compress ``model`` with every method × kept fraction × layer group × seed; evaluate.

    No fine-tuning. Methods in :data:`DETERMINISTIC` run once per configuration (with the
    first seed); the others once per seed.

    Parameters
    ----------
    model : str, path or Network
        A shipped model's name, a ``.npz`` model file, or a :class:`~tropref.network.Network`
        (a user's PyTorch or Keras model through ``tropref.adapters``).
    methods : sequence of str
        Names accepted by ``compress_layer(method=...)``.
    fractions : sequence of float
        Kept fractions of units in (0, 1].
    layers : str or sequence of str
        Layer groups among ``"dense"``, ``"conv"``, ``"all"``, ``"nonuniform"``.
    seeds : sequence of int
    test : (images, labels), optional
        Preprocessed test inputs and labels. Default: Fashion-MNIST's test split from
        ``data_path`` (or the Debian package), else the shipped 2,000-image subset.
    calibration : array, optional
        Network inputs for data-driven methods (ThiNet). Default: ``n_calibration`` training
        images of Fashion-MNIST (drawn with seed 0), needed only when such a method is asked.
    data_path : path, optional
        Folder with the Fashion-MNIST IDX files.
    subset : bool
        Evaluate on the shipped subset even when the full test split is available (fast).
    n_error : int
        The measured error ``max |f(x) - f̃(x)|`` (logits) is taken over the first ``n_error``
        test inputs. The network certificate holds on the box spanned elementwise by all the
        test inputs.
    options : mapping, optional
        Per-method options, e.g. ``{"tropnnc": {"refine": "weiszfeld"}}``.

    Returns
    -------
    dict
        ``config``, ``model`` (name, parameters, MACs, accuracy before compression, test
        set), ``records`` (one per run: method, layers, fraction, seed, accuracy, params,
        MACs, certificate, measured error, seconds).
    """
    t_start = time.perf_counter()
    code = code_version()  # before any work: the code this sweep runs on
    if isinstance(layers, str):
        layers = (layers,)
    if not methods or not fractions or not layers or not seeds:
        raise ValueError("`methods`, `fractions`, `layers` and `seeds` must be non-empty")
    from .methods import METHODS

    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r} in `methods`; choose from {sorted(METHODS)}")
    for g in layers:
        if g not in LAYER_GROUPS:
            raise ValueError(f"`layers` must be among {LAYER_GROUPS}, got {g!r}")
    for q in fractions:
        if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0 < float(q) <= 1:
            raise ValueError(f"`fractions` must lie in (0, 1], got {q!r}")
    options = dict(options or {})

    if isinstance(model, Network):
        net, meta = model, {"name": name or "network"}
    else:
        net, meta = load_model(model)
    model_name = name or meta.get("name", "model")

    if test is None:
        if subset:
            from .data import load_test_subset

            images, labels = load_test_subset()
            test_name = "test[:2000]"
        else:
            images, labels, test_name = load_test(data_path)
        x_test, y_test = to_float(images), labels
    else:
        x_test, y_test = test
        test_name = test_name or "user test set"
    x_test = np.asarray(x_test, dtype=_dtype(net))
    x_err = x_test[:n_error]
    # the certificate holds on the box spanned elementwise by the test inputs: compress_network
    # takes the elementwise range of `inputs`, so two corner samples describe the box exactly
    box = np.stack([x_test.min(axis=0), x_test.max(axis=0)])

    data_driven = [m for m in methods if m == "thinet"]
    if data_driven and calibration is None:
        try:
            tr_img, _ = load_fashion_mnist("train", data_path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"method(s) {data_driven} need calibration data (`calibration`, or the Fashion-MNIST "
                f"training split). {exc}"
            ) from None
        pick = np.sort(np.random.default_rng(0).choice(len(tr_img), size=n_calibration, replace=False))
        calibration = to_float(tr_img[pick])
    if calibration is not None:
        calibration = np.asarray(calibration, dtype=_dtype(net))

    base_out = predict(net, x_test)
    base_acc = float(np.mean(np.argmax(base_out, axis=1) == y_test))
    base_err_out = base_out[:n_error]
    runs = [
        (m, g, float(q), s)
        for g in layers
        for q in fractions
        for m in methods
        for s in (seeds[:1] if m in DETERMINISTIC else seeds)
    ]
    bar = _Progress(len(runs), progress)
    compress_network = _compress_network()
    records = []
    for method, group, q, seed in runs:
        keep = keep_rule(net, q, group)
        t0 = time.perf_counter()
        small, report = compress_network(
            net,
            keep,
            method=method,
            seed=int(seed),
            data=calibration if method in data_driven else None,
            inputs=box,
            **options.get(method, {}),
        )
        seconds = time.perf_counter() - t0
        out = predict(small, x_test)
        acc = float(np.mean(np.argmax(out, axis=1) == y_test))
        measured = float(np.max(np.abs(out[:n_error] - base_err_out)))
        records.append(
            {
                "method": method,
                "layers": group,
                "fraction": q,
                "seed": int(seed),
                "accuracy": acc,
                "params": int(report.params_after),
                "macs": None if report.macs_after is None else int(report.macs_after),
                "certificate": report.certificate,
                "measured_error": measured,
                "widths": {r.name: [r.width_before, r.width_after] for r in report.layers},
                "layer_certificates": {r.name: r.certificate for r in report.layers if r.certificate is not None},
                "seconds": round(seconds, 3),
            }
        )
        bar.step(f"{method} {group} {q:g} seed {seed}: {acc:.4f}")
    return {
        "config": {
            "methods": list(methods),
            "fractions": [float(q) for q in fractions],
            "layers": list(layers),
            "seeds": [int(s) for s in seeds],
            "options": {k: dict(v) for k, v in options.items()},
            "n_calibration": None if calibration is None else len(calibration),
            "n_error": len(x_err),
            "certificate_domain": "box spanned elementwise by the test inputs",
        },
        "model": {
            "name": model_name,
            "params": int(count_params(net)),
            "macs": count_macs(net),
            "accuracy": base_acc,
            "test_set": test_name,
            "test_size": len(y_test),
            "shipped_test_accuracy": meta.get("test_accuracy"),
        },
        "records": records,
        "seconds": round(time.perf_counter() - t_start, 1),
        "code": code,
    }


def code_version() -> dict[str, Any]:
    """tropref's version and, in a git checkout, the commit and whether files were modified."""
    import subprocess

    from . import __version__

    out: dict[str, Any] = {"tropref": __version__}
    root = Path(__file__).resolve().parents[1]
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


def _dtype(net: Network) -> Any:
    for layer in net.layers:
        W = getattr(layer, "W", None)
        if W is not None:
            return np.asarray(W).dtype
    return np.float32


# ----------------------------------------------------------------------------- reports


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (layers, fraction, method): mean and std over seeds of every measure."""
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
    """Write ``<stem>.json`` (raw records), ``<stem>.md`` and ``<stem>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{result['model']['name']}_{'-'.join(result['config']['layers'])}"
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    paths["md"].write_text(markdown(result))
    if png:
        try:
            paths["png"] = plot(result, out / f"{stem}.png")
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)


# ----------------------------------------------------------------------------- certificates


def certificate_check(
    model: str | os.PathLike | Network = "lenet300",
    *,
    methods: Sequence[str] = ("tropnnc", "neural_path_kmeans", "neuron_merging", "cup", "l1"),
    fractions: Sequence[float] = (0.5, 0.3, 0.1),
    seed: int = 0,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    data_path: str | os.PathLike | None = None,
    subset: bool = False,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Layer certificate against the measured error, on the first hidden dense layer.

    The first layer reads the images themselves, so ``u = (x, 1)`` is known exactly: for
    every test image and every output ``i`` of the next layer, the measured
    ``|Δz_i(x)| / ‖(x, 1)‖`` (``z`` the next layer's pre-activation) must stay below the
    certificate ``β_i`` of :func:`tropref.compress_layer`. Returns one row per method and
    fraction with ``max_i β_i``, the largest measured ratio, the tightness
    ``max_i (measured_i / β_i)`` (at most 1 when the certificate holds) and the largest
    absolute change ``max |Δz|``. ``options`` maps a method to its options
    (``{"tropnnc": {"variant": "paper"}}``).
    """
    from .compress import compress_layer

    net = model if isinstance(model, Network) else load_model(model)[0]
    idx = [i for i, l in enumerate(net.layers) if isinstance(l, (Dense, Conv2d))]
    first, nxt = net.layers[idx[0]], net.layers[idx[1]]
    if (
        not isinstance(first, Dense)
        or not isinstance(nxt, Dense)
        or any(not isinstance(l, (ReLU, Flatten)) for l in net.layers[idx[0] + 1 : idx[1]])
        or any(not isinstance(l, Flatten) for l in net.layers[: idx[0]])
    ):
        raise ValueError(
            "`model`: certificate_check needs a first hidden Dense layer followed by ReLU and a Dense layer"
        )
    if test is None:
        if subset:
            from .data import load_test_subset

            images, _ = load_test_subset()
        else:
            images, _, _ = load_test(data_path)
        x = to_float(images)
    else:
        x = test[0]
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    W, b = np.asarray(first.W, np.float64), np.asarray(first.b, np.float64)
    V, c = np.asarray(nxt.W, np.float64), np.asarray(nxt.b, np.float64)
    u = np.linalg.norm(np.concatenate([x, np.ones((len(x), 1))], axis=1), axis=1)
    z = np.maximum(x @ W.T + b, 0) @ V.T + c
    rows = []
    for q in fractions:
        k = max(1, round(q * W.shape[0]))
        for m in methods:
            res = compress_layer(W, b, k, W_next=V, b_next=c, method=m, seed=seed, **dict((options or {}).get(m, {})))
            zt = np.maximum(x @ res.W.T + res.b, 0) @ res.W_next.T + res.b_next
            ratio = np.max(np.abs(z - zt) / u[:, None], axis=0)  # per output
            cert = None if res.certificate is None else np.asarray(res.certificate, np.float64)
            rows.append(
                {
                    "method": m,
                    "fraction": float(q),
                    "k": k,
                    "certificate_max": None if cert is None else float(cert.max()),
                    "measured_ratio_max": float(ratio.max()),
                    "tightness": None if cert is None else float(np.max(ratio / np.maximum(cert, 1e-300))),
                    "abs_change_max": float(np.max(np.abs(z - zt))),
                }
            )
    return rows


def certificate_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`certificate_check` rows."""
    out = [
        r"| kept | method | max_i β_i | max_i max_x \|Δz_i\|/‖(x,1)‖ | tightness max_i (measured_i / β_i) | "
        r"max \|Δz\| |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cert = "-" if r["certificate_max"] is None else f"{r['certificate_max']:.3g}"
        tight = "-" if r["tightness"] is None else f"{r['tightness']:.3f}"
        out.append(
            f"| {100 * r['fraction']:g}% | `{r['method']}` | {cert} | {r['measured_ratio_max']:.3g} | "
            f"{tight} | {r['abs_change_max']:.3g} |"
        )
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- other data


def load_cifar10(path: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from a local copy of the Python version (``cifar-10-batches-py``).

    Returns ``float32`` images ``(N, 3, 32, 32)`` in ``[0, 1]`` and ``int64`` labels; apply
    the normalisation your model expects before :func:`sweep`. Not shipped and not run on
    the project's machines (tested on synthetic files of the same format).
    """
    folder = Path(path)
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    if split not in ("test", "train"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    xs, ys = [], []
    for nm in names:
        f = folder / nm
        if not f.is_file():
            raise FileNotFoundError(
                f"`path`: CIFAR-10 batch {nm!r} not found in {str(folder)!r} (the Python version, "
                "cifar-10-python.tar.gz, unpacked)"
            )
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[b"labels"], dtype=np.int64))
    return np.concatenate(xs).astype(np.float32) / np.float32(255.0), np.concatenate(ys)


# ----------------------------------------------------------------------------- demo


def demo(
    out_dir: str | os.PathLike = "tropref-demo",
    models: Sequence[str] = ("lenet300", "lenet5", "vgg_small", "resnet20"),
    fractions: Sequence[float] = (0.75, 0.5, 0.25),
    methods: Sequence[str] = ("tropnnc", "cup", "neuron_merging", "l1"),
    progress: bool = True,
) -> dict[str, Any]:
    """Compress the shipped models at a few fractions with TropNNC and three baselines.

    Runs on the shipped 2,000 test images (no download, no Debian package), all hidden
    layers of each model at once, one seed. Prints a table of accuracy, parameters and
    network certificate per model, writes ``demo.md``, ``demo.json`` and ``demo.png`` into
    ``out_dir``, and returns the sweep results by model.
    """
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
    (out / "demo.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    print(_demo_table(results))
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
            err = "-" if r["measured_error"] is None else f"{r['measured_error']:.3g}"
            params = f"{r['params']:,.0f} ({r['params'] / mdl['params']:.0%})"
            lines.append(
                f"{'':<10} {100 * r['fraction']:>4g}% {r['method']:<15} {100 * r['accuracy']:>8.2f}% "
                f"{params:>16} {cert:>12} {err:>10}"
            )
    lines.append(
        "accuracy on the shipped 2,000 Fashion-MNIST test images; every hidden layer compressed, no fine-tuning; "
        "certificate: composed network bound on max|Δ logits| over the box of the test inputs"
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
