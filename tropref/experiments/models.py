"""Model files and evaluating them: the shipped models, the ``.npz`` format, layer groups.

Functions
---------
shipped_models
    The Fashion-MNIST models in ``tropref/assets/`` and the test accuracy each reached.
load_model, save_model
    A model as a :class:`tropref.network.Network`, from a shipped name or a ``.npz`` file
    (``state_dict`` arrays in PyTorch layouts plus an ``__arch__`` JSON string, the format of
    ``examples/train_models.py``), and back.
predict, accuracy
    The network's outputs (the one forward pass, :func:`tropref.network.forward`, in
    chunks) and its top-1 accuracy on images and labels.
input_dtype
    The dtype a network's inputs are cast to (that of its weights).
hidden_layer_names, keep_rule
    The compressible layers by kind, and the ``keep`` argument of
    :func:`tropref.compress_network` for a kept fraction and a layer group (``"dense"``,
    ``"conv"``, ``"all"``, or ``"nonuniform"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._array import to_numpy
from ..network import (
    Add,
    AvgPool2d,
    BatchNorm,
    Budget,
    Concat,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Identity,
    MaxPool2d,
    Network,
    ReLU,
    compressible_layers,
    forward,
)
from .data import assets_dir

__all__ = [
    "LAYER_GROUPS",
    "shipped_models",
    "load_model",
    "save_model",
    "predict",
    "input_dtype",
    "accuracy",
    "hidden_layer_names",
    "keep_rule",
]

LAYER_GROUPS = ("dense", "conv", "all", "nonuniform")
"""The layer groups :func:`keep_rule` knows (``"nonuniform"``: a :class:`tropref.Budget`)."""


def shipped_models() -> dict[str, dict[str, Any]]:
    """Architecture, parameters, training settings and test accuracy of the shipped models.

    Examples
    --------
    >>> meta = shipped_models()
    >>> sorted(meta), meta["lenet300"]["parameters"]
    (['lenet300', 'lenet5', 'resnet20', 'vgg_small'], 266610)
    """
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
    """A shipped model by name (``"lenet300"``, ``"lenet5"``, ``"vgg_small"``, ``"resnet20"``)
    or a ``.npz`` file.

    Parameters
    ----------
    model : str or path-like
        A shipped model's name or a file written by :func:`save_model` (or
        ``examples/train_models.py``).
    dtype : dtype
        The dtype of the network's arrays.

    Returns
    -------
    network : Network
        NumPy arrays of ``dtype``, input shape ``(1, 28, 28)`` for the shipped models.
    meta : dict
        The model's entry of ``models.json`` (test accuracy, training) or, for a file, its
        ``__meta__`` JSON when present; always with ``name`` and ``architecture``.

    Raises
    ------
    FileNotFoundError
        When ``model`` is neither a shipped model nor an existing file.
    ValueError
        When the file is not a ``.npz`` of plain arrays, has no ``__arch__`` entry, its
        ``__arch__`` or ``__meta__`` is not valid JSON of the right form, or names a layer
        kind, key or array it lacks.

    Examples
    --------
    >>> net, meta = load_model("lenet300")
    >>> [type(l).__name__ for l in net.layers], meta["name"]
    (['Flatten', 'Dense', 'ReLU', 'Dense', 'ReLU', 'Dense'], 'lenet300')
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
    try:  # allow_pickle=False: an object array in the file is refused, never unpickled
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # not a .npz, a damaged zip, pickled objects: NumPy and zipfile raise several kinds
        why = "it holds pickled Python objects, which tropref never unpickles" if "pickle" in str(exc) else str(exc)
        raise ValueError(f"`model`: {str(path)!r} is not a .npz model file tropref reads ({why})") from None
    if "__arch__" not in arrays:
        raise ValueError(f"`model`: {str(path)!r} has no '__arch__' entry describing its layers")
    arch = _json_entry(arrays.pop("__arch__"), "__arch__", path, list)
    if "__meta__" in arrays:
        meta = {**_json_entry(arrays.pop("__meta__"), "__meta__", path, dict), **meta}
    meta["architecture"] = arch
    input_shape = meta.get("input_shape", [1, 28, 28])
    try:
        return _network_from_arrays(arch, arrays, input_shape, dtype), meta
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        what = f"misses the key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(
            f"`model`: tropref cannot build the layers of {str(path)!r} from its '__arch__' and '__meta__' "
            f"entries ({what}); each layer is a "
            "JSON object with a 'kind' (linear, conv2d, batchnorm2d, relu, maxpool2d, avgpool2d, flatten, add, "
            "concat, identity) and a 'name' naming its arrays, as save_model writes it"
        ) from None


def _json_entry(value: np.ndarray, key: str, path: Path, kind: type) -> Any:
    """The JSON text stored under ``key`` in a model file, parsed and checked to be a ``kind``."""
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError as exc:
        raise ValueError(f"`model`: the {key!r} entry of {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(parsed, kind) or (kind is list and not all(isinstance(s, dict) for s in parsed)):
        want = "a list of layer objects" if kind is list else "an object"
        raise ValueError(f"`model`: the {key!r} entry of {str(path)!r} must be {want}, got {str(value)[:80]!r}")
    return parsed


def save_model(net: Network, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a network of dense, conv, BatchNorm, ReLU, max/avg-pool and flatten layers (and,
    in a graph, additions, concatenations and identities) as ``.npz``.

    The format of the shipped models (readable by :func:`load_model` and by a few lines of
    PyTorch: see ``examples/train_models.py``'s ``build_torch``). Layers without a name get
    ``layer<i>``; in a graph every layer lists the layers it reads as ``inputs``. ``meta``
    is stored as JSON (with the network's ``input_shape``) and read back by :func:`load_model`.

    Raises
    ------
    ValueError
        For a layer the format cannot hold (asymmetric padding, dilation, a non-square
        kernel or stride, a layer type it does not know).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> net, _ = load_model("lenet5")
    >>> path = save_model(net, pathlib.Path(tempfile.mkdtemp()) / "copy.npz", {"note": "a copy"})
    >>> back, meta = load_model(path)
    >>> meta["note"], back.input_shape
    ('a copy', (1, 28, 28))
    """
    arrays: dict[str, np.ndarray] = {}
    arch = []
    for i, layer in enumerate(net.layers):
        if net.is_chain and isinstance(layer, (Dropout, Identity)):
            continue  # the identity at inference
        spec, layer_arrays = _layer_entry(layer, i, net.is_chain)
        if not net.is_chain:
            spec["inputs"] = list(net.sources(i))
        arch.append(spec)
        arrays.update(layer_arrays)
    arrays["__arch__"] = np.array(json.dumps(arch))
    meta = dict(meta or {})
    if net.input_shape is not None:
        meta.setdefault("input_shape", list(net.input_shape))
    arrays["__meta__"] = np.array(json.dumps(meta, default=str))
    path = Path(path)
    np.savez_compressed(path, **arrays)
    return path


def _layer_entry(layer: Any, i: int, is_chain: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Layer ``i``'s entry of ``__arch__`` and its arrays, named ``<layer name>.<array>``."""
    name = getattr(layer, "name", None) or f"layer{i}"
    if not is_chain and isinstance(layer, (Add, Concat, Dropout, Identity)):
        return {"kind": {Add: "add", Concat: "concat"}.get(type(layer), "identity"), "name": name}, {}
    if (
        isinstance(layer, AvgPool2d)
        and not layer.padded
        and layer.kernel[0] == layer.kernel[1]
        and layer.stride[0] == layer.stride[1]
    ):
        return {"kind": "avgpool2d", "kernel_size": layer.kernel[0], "stride": layer.stride[0]}, {}
    if isinstance(layer, Dense):
        W = to_numpy(layer.W)
        spec = {"kind": "linear", "name": name, "in_features": int(W.shape[1]), "out_features": int(W.shape[0])}
        return spec, {f"{name}.weight": W, f"{name}.bias": _bias(layer.b, W)}
    if isinstance(layer, Conv2d):
        return _conv_entry(layer, name, is_chain)
    if isinstance(layer, BatchNorm):
        return _batchnorm_entry(layer, name)
    if isinstance(layer, ReLU):
        return {"kind": "relu"}, {}
    if (
        isinstance(layer, MaxPool2d)
        and type(layer) is MaxPool2d
        and not layer.padded
        and layer.kernel[0] == layer.kernel[1]
        and layer.stride[0] == layer.stride[1]
    ):
        return {"kind": "maxpool2d", "kernel_size": layer.kernel[0], "stride": layer.stride[0]}, {}
    if isinstance(layer, Flatten):
        return {"kind": "flatten", "order": layer.order}, {}
    raise ValueError(f"save_model: cannot write layer {i} ({type(layer).__name__})")


def _bias(b: Any, W: np.ndarray) -> np.ndarray:
    return np.zeros(W.shape[0], W.dtype) if b is None else to_numpy(b)


def _conv_entry(layer: Conv2d, name: str, is_chain: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    W = to_numpy(layer.W)
    t, b_, l_, r_ = layer.padding
    if (
        not (t == b_ == l_ == r_)
        or layer.dilation != (1, 1)
        or layer.stride[0] != layer.stride[1]
        or W.shape[2] != W.shape[3]
    ):
        raise ValueError(f"save_model: layer {name!r} has asymmetric padding, dilation or non-square kernel/stride")
    spec: dict[str, Any] = {
        "kind": "conv2d",
        "name": name,
        "in_channels": int(W.shape[1]),
        "out_channels": int(W.shape[0]),
        "kernel_size": int(W.shape[2]),
        "stride": int(layer.stride[0]),
        "padding": int(t),
    }
    arrays = {}
    if layer.b is None and not is_chain:
        spec["bias"] = False  # graphs (resnet20's format) record a missing bias; chains store zeros, as always
    else:
        arrays[f"{name}.bias"] = _bias(layer.b, W)
    arrays[f"{name}.weight"] = W
    return spec, arrays


def _batchnorm_entry(layer: BatchNorm, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    c = layer.channels
    mean = to_numpy(layer.mean)
    spec = {"kind": "batchnorm2d", "name": name, "num_features": c, "eps": layer.eps}
    return spec, {
        f"{name}.running_mean": mean,
        f"{name}.running_var": to_numpy(layer.var),
        f"{name}.weight": np.ones(c, mean.dtype) if layer.weight is None else to_numpy(layer.weight),
        f"{name}.bias": np.zeros(c, mean.dtype) if layer.bias is None else to_numpy(layer.bias),
    }


def predict(net: Network, x: np.ndarray, chunk: int = 250) -> np.ndarray:
    """``net(x)`` as a NumPy array: :func:`tropref.network.forward` in chunks of ``chunk``.

    Examples
    --------
    >>> from tropref.experiments import evaluation_data
    >>> x, y, _ = evaluation_data(subset=True)
    >>> predict(load_model("lenet300")[0], x[:3]).shape
    (3, 10)
    """
    return np.asarray(to_numpy(forward(net, np.asarray(x), chunk=chunk)))


def input_dtype(net: Network) -> Any:
    """The dtype of the network's first weights, which its inputs are cast to (else float32).

    Examples
    --------
    >>> input_dtype(load_model("lenet300", dtype=np.float64)[0])
    dtype('float64')
    """
    for layer in net.layers:
        W = getattr(layer, "W", None)
        if W is not None:
            return np.asarray(W).dtype
    return np.float32


def accuracy(net: Network, images: np.ndarray, labels: np.ndarray, batch: int = 250) -> float:
    """Top-1 accuracy of ``net`` on ``images`` (already preprocessed) and integer ``labels``.

    Raises
    ------
    ValueError
        When ``images`` and ``labels`` differ in length or are empty.

    Examples
    --------
    >>> from tropref.experiments import evaluation_data
    >>> x, y, _ = evaluation_data(subset=True)
    >>> net, meta = load_model("lenet300")
    >>> abs(accuracy(net, x, y) - meta["test_accuracy_first_2000"]) < 1e-3
    True
    """
    labels = np.asarray(labels)
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"`images` ({len(images)}) and `labels` ({len(labels)}) must be non-empty and of one length")
    return float(np.mean(np.argmax(predict(net, images, batch), axis=1) == labels))


def hidden_layer_names(net: Network) -> dict[str, list[Any]]:
    """Compressible layers by kind: in a chain every dense or conv layer but the last (the
    classifier); in a graph the layers whose channels are not coupled to other paths
    (:func:`tropref.network.compressible_layers`).

    Keys ``"dense"`` and ``"conv"``; values are layer names (or indices when unnamed).

    Examples
    --------
    >>> hidden_layer_names(load_model("lenet5")[0])
    {'dense': ['fc1', 'fc2'], 'conv': ['conv1', 'conv2']}
    """
    linear = [i for i, l in enumerate(net.layers) if isinstance(l, (Dense, Conv2d))][:-1]
    if not net.is_chain:
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

    Raises
    ------
    ValueError
        When ``fraction`` is outside (0, 1], ``layers`` is not in :data:`LAYER_GROUPS`, or
        the network has no hidden layer of that kind.

    Examples
    --------
    >>> net, _ = load_model("lenet5")
    >>> keep_rule(net, 0.5, "conv"), keep_rule(net, 0.5, "all")
    ({'conv1': 0.5, 'conv2': 0.5}, 0.5)
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
