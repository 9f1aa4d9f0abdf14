"""Keras 3 adapter: ``Sequential`` and functional chains to :class:`tropref.network.Network` and back.

- :func:`from_keras` reads ``Dense`` (``activation="relu"`` or linear), ``Conv2D`` (both data
  formats, ``groups=1``; ``HWIO`` kernels transposed to ``OIHW``; ``padding="same"`` turned
  into explicit amounts for the layer's input size), ``BatchNormalization`` (moving
  statistics: inference semantics), ``ReLU``/``Activation("relu")``, ``MaxPooling2D``,
  ``AveragePooling2D`` (``"same"`` does not count the padding), ``GlobalAveragePooling2D``,
  ``GlobalMaxPooling2D``, ``Flatten``, ``Dropout``, ``Rescaling`` (as a fixed BatchNorm),
  augmentation and noise layers (identities at inference), nested chain models,
  ``InputLayer``. Keras's ``Flatten`` orders features ``h, w, c`` when its own data format
  matches the tensor's layout (the usual case): a channels-last flatten in the core.
- :func:`to_keras` builds a new Keras model of plain layers (saves and loads as ``.keras``),
  every layer named explicitly after the network's layers.
- :func:`compress` reads the model, runs :func:`tropref.compress_network` and returns the
  user's own model resized: a clone of it (as ``keras.models.clone_model`` makes: same classes,
  configs, layer names, graph, nesting, model and input names; a ``Sequential`` for a
  ``Sequential``, a functional model for a functional one) whose ``Dense`` and ``Conv2D``
  layers have the compressed widths and weights. A BatchNorm folded into its layer stays,
  with the compressed units' estimated statistics (``docs/networks.md``; an exact identity
  where none are known), carrying the folded bias when the layer has none. Where the model cannot carry the
  compressed network (a layer called several times, say) it returns the model of
  :func:`to_keras` instead, with a warning and a note in the report.

The core computes in NCHW: :func:`to_core_input` transposes channels-last inputs. The model
given is never modified.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tropref._array import to_numpy
from tropref.adapters._graph import reads_relu, run_graph, writer
from tropref.adapters._in_place import NotInPlace, Slot, in_place_arrays, own_or_rebuilt, unit_moments
from tropref.adapters._layout import (
    channel_axis,
    core_batch,
    core_dtype,
    host_copy,
    kernel_from_core,
    kernel_to_core,
    shape_from_core,
    shape_to_core,
    spatial,
)
from tropref.adapters._padding import explicit_padding, from_pairs, padding_keyword, to_pairs
from tropref.adapters._reading import Pad, append, finish_reading
from tropref.adapters._refusals import (
    grouped_convolution,
    is_relu_variant,
    not_plain,
    overrides,
    reads_several,
    refuse,
    relu_variant,
    relu_variant_classes,
    returns_input,
    several_inputs,
    unsupported,
)
from tropref.adapters._round_trip import write_back
from tropref.network import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Identity,
    MaxPool2d,
    Network,
    NetworkReport,
    ReLU,
    Softmax,
    compress_network,
)
from tropref.network.flatten import with_flatten_order_everywhere
from tropref.network.shapes import output_shapes

__all__ = ["from_keras", "to_keras", "compress", "data_format_of", "to_core_input"]

_SUPPORTED = (
    "Dense, Conv2D, BatchNormalization, ReLU, Activation('relu'), MaxPooling2D, AveragePooling2D, "
    "GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Dropout, InputLayer, Softmax (and activation='softmax'), "
    "Rescaling, nested Sequential chains, and augmentation/noise layers (identities at inference)"
)


def _keras() -> Any:
    import keras  # the adapter's only framework import: the core never imports keras

    return keras


def _activation(activation: Any, name: str) -> list:
    """The core layers of a Keras activation: ReLU, softmax or nothing (linear), told apart by
    the function itself (Keras's own), not by its name."""
    keras = _keras()
    A, ops = keras.activations, keras.ops
    fn = getattr(activation, "__name__", str(activation))
    if activation is None or activation is A.linear:
        return []
    if activation is A.relu or activation is ops.relu:
        return [ReLU(name=f"{name}.relu")]
    if activation is A.softmax or activation is ops.softmax:
        return [Softmax(name=f"{name}.softmax")]
    if fn in ("relu", "softmax", "linear"):
        where = f"{getattr(activation, '__module__', '?')}.{getattr(activation, '__qualname__', fn)}"
        raise ValueError(
            not_plain(
                name,
                f"activation {fn!r}",
                f"is not Keras's own {fn} but another function of that name ({where})",
                f"use activation={fn!r} (keras.activations.{fn})",
            )
        )
    if is_relu_variant(fn):
        raise ValueError(relu_variant(name, f"activation {fn!r}", _RELU))
    raise ValueError(f"layer {name!r}: activation {fn!r} is not supported (only 'relu', 'softmax' and linear)")


def _plain_classes(L: Any) -> tuple:
    """The layer classes :func:`_convert_layer` reads, whose own ``call`` it assumes."""
    return (
        L.Add,
        L.Concatenate,
        L.ZeroPadding2D,
        L.Dense,
        L.Conv2D,
        L.BatchNormalization,
        L.ReLU,
        L.Activation,
        L.Softmax,
        L.MaxPooling2D,
        L.AveragePooling2D,
        L.GlobalAveragePooling2D,
        L.GlobalMaxPooling2D,
        L.Flatten,
        L.Dropout,
        L.SpatialDropout2D,
        L.Rescaling,
        L.Identity,
        *(getattr(L, n) for n in _INFERENCE_IDENTITIES if hasattr(L, n)),
    )


# what a subclass may not define anew: the computation, and how Dense and Conv2D get their kernel
_COMPUTATION = ("call", "__call__", "quantized_call", "kernel")


def _not_plain(layer: Any, plain: tuple) -> str | None:
    """Why ``layer``'s computation is not the plain one of its class (``plain``: the classes
    the reader assumes), or None: a subclass that defines its computation anew, LoRA,
    quantization."""
    name, what = layer.name, type(layer).__name__
    base = next((c for c in type(layer).__mro__ if c in plain), None)
    if base is not None and type(layer) is not base:
        changed = overrides(type(layer), base, _COMPUTATION)
        if changed:
            return not_plain(
                name,
                f"{what}, a subclass of {base.__name__}",
                f"defines {', '.join(changed)} anew",
                f"use keras.layers.{base.__name__} itself, and write the extra computation as layers",
            )
    if getattr(layer, "lora_enabled", False):
        return not_plain(
            name, what, "has LoRA enabled (kernel + lora_kernel_a @ lora_kernel_b)", "merge the LoRA weights first"
        )
    mode = getattr(layer, "quantization_mode", None) or getattr(
        getattr(layer, "dtype_policy", None), "quantization_mode", None
    )
    if mode:
        return not_plain(name, what, f"is quantized ({mode})", "compress the float model, then quantize it")
    return None


def _model_classes(keras: Any) -> tuple:
    """Keras's own model classes whose ``call`` runs the model's graph."""
    from keras.src.models.functional import Functional  # the class of keras.Model(inputs, outputs)

    return (keras.Sequential, Functional)


def _model_not_plain(model: Any) -> str | None:
    """Why ``model`` (a ``keras.Model``) does not compute its own graph: a subclass that
    defines ``call`` anew. None when it does."""
    keras = _keras()
    plain = _model_classes(keras)
    base = next((c for c in type(model).__mro__ if c in plain), None)
    if base is None or overrides(type(model), base, ("call", "__call__")):
        return not_plain(
            model.name,
            f"{type(model).__name__}, a subclass of keras.Model",
            "defines call anew, so it may not compute the graph of its layers",
            "build it as a keras.Sequential or functional keras.Model of plain layers",
        )
    return None


def _all_layers(model: Any) -> list:
    """Every layer of the model, nested models' layers included, in the model's order."""
    keras = _keras()
    out = []
    for layer in model.layers:
        out += _all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return out


def data_format_of(model: Any) -> str:
    """``"channels_last"`` or ``"channels_first"``: the data format of the model's first
    convolution or pooling (``"channels_last"`` for a model without any)."""
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {type(model).__name__}")
    for layer in _all_layers(model):
        fmt = getattr(layer, "data_format", None)
        if fmt is not None and type(layer).__name__ not in ("Flatten", "ZeroPadding2D"):
            return fmt
    return "channels_last"


def _io(model: Any) -> tuple[Any, Any]:
    """The model's one input and one output symbolic tensors."""
    try:
        ins, outs = model.inputs, model.outputs
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"model {model.name!r} has no defined input: build it with keras.Input(...) first") from exc
    if not ins or not outs:
        raise ValueError(f"model {model.name!r} has no defined input: build it with keras.Input(...) first")
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(ins)} inputs and {len(outs)} outputs; tropref needs one of each"
        )
    return ins[0], outs[0]


def from_keras(model: Any, *, dtype: Any = np.float32) -> Network:
    """The network description of a Keras model (weights copied to NumPy ``dtype``).

    The model's own graph is followed from its output back to its input (through the
    symbolic tensors' history, so a layer's other uses in other models do not matter):
    every layer call becomes a layer of the graph, ``Add`` an
    :class:`~tropref.network.Add`, ``Concatenate`` over the channels a
    :class:`~tropref.network.Concat`, nested models (``Sequential`` inside functional,
    functional inside functional) are read through, and ``ZeroPadding2D`` is folded into
    the convolution or pooling that reads it. A chain comes back as a chain network.

    The description is NCHW: a channels-last model's input ``(H, W, C)`` becomes
    ``input_shape = (C, H, W)`` (use :func:`to_core_input` on the data).

    Raises
    ------
    ValueError
        Listing every obstacle at once, each naming its layer (unsupported layers, ReLU
        variants, depthwise and grouped convolutions, layers whose computation is not the
        plain one: subclasses that define ``call`` anew, LoRA, quantization, activations
        that are not Keras's own ``relu``/``softmax``, ...).

    Examples
    --------
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    >>> [type(l).__name__ for l in from_keras(m)]
    ['Dense', 'ReLU', 'Dense']
    """
    fmt = data_format_of(model)
    problem = _model_not_plain(model)
    if problem:
        refuse([problem])
    x_in, _x_out = _io(model)
    in_shape = tuple(int(s) for s in x_in.shape[1:])
    if len(in_shape) not in (1, 3):
        raise ValueError(f"model {model.name!r}: input shape {in_shape} is neither (d,) nor an image")
    input_shape = shape_to_core(in_shape, fmt)
    layers: list = []
    inputs: list[tuple[int, ...]] = []
    problems: list[str] = []
    out = _read_model(model, {id(x_in): -1}, fmt, dtype, layers, inputs, problems)
    if out is not None and out < 0 and not problems:
        problems.append(returns_input(model.name))
    return finish_reading(layers, inputs, out, input_shape, problems)


def _read_model(
    model: Any, known: dict[int, int], fmt: str, dtype: Any, layers: list, inputs: list, problems: list[str]
) -> int | None:
    """Append the layers of ``model`` (its input tensor's index given in ``known``) and
    return the index of its output; None when a problem stopped the walk."""
    keras = _keras()
    _, x_out = _io(model)
    index = dict(known)
    order, stack, seen = [], [(x_out, False)], set()
    while stack:  # post-order walk from the output: every tensor after the tensors it is computed from
        t, done = stack.pop()
        if id(t) in index or (not done and id(t) in seen):
            continue
        history = getattr(t, "_keras_history", None)
        if history is None:
            problems.append(f"model {model.name!r}: tensor {getattr(t, 'name', t)!r} has no layer history")
            return None
        node = history.operation._inbound_nodes[history.node_index]
        if done:
            order.append((t, history, node))
            index[id(t)] = None  # placeholder until converted
            continue
        seen.add(id(t))
        stack.append((t, True))
        for s in reversed(list(node.input_tensors)):
            if id(s) not in index:
                stack.append((s, False))
    for t, history, node in order:
        op = history.operation
        srcs = [index.get(id(s)) for s in node.input_tensors]
        if any(v is None for v in srcs):
            index[id(t)] = None
            continue
        if isinstance(op, keras.layers.InputLayer):
            problems.append(several_inputs(op.name))
            index[id(t)] = None
            continue
        if len(node.output_tensors) != 1:
            problems.append(
                f"layer {op.name!r} ({type(op).__name__}) has {len(node.output_tensors)} outputs; tropref "
                "reads layers of one output"
            )
            index[id(t)] = None
            continue
        if isinstance(op, keras.Model):
            if _model_not_plain(op):
                problems.append(_model_not_plain(op))
                index[id(t)] = None
                continue
            try:
                sub_in, _ = _io(op)
            except ValueError as exc:
                problems.append(str(exc))
                index[id(t)] = None
                continue
            index[id(t)] = _read_model(op, {id(sub_in): srcs[0]}, fmt, dtype, layers, inputs, problems)
            continue
        shapes = [tuple(s.shape) for s in node.input_tensors]
        try:
            converted = _convert_layer(op, shapes, fmt, dtype)
        except ValueError as exc:
            problems.append(str(exc))
            converted = [Identity(name=op.name)]  # stands in, so that the layers after it are checked too
            srcs = srcs[:1]
        joins = isinstance(converted[0] if converted else None, (Add, Concat))
        if len(srcs) != 1 and not joins:
            problems.append(reads_several(f"layer {op.name!r}", type(op).__name__, len(srcs), "Add and Concatenate"))
            index[id(t)] = None
            continue
        index[id(t)] = append(layers, inputs, converted, srcs)
    return index.get(id(x_out))


_RELU = "activation='relu' or keras.layers.ReLU()"  # what a ReLU variant's refusal proposes instead


def _host(x: Any) -> np.ndarray:
    """A Keras tensor or variable value as a NumPy array, without the NumPy-2
    ``DeprecationWarning`` of the torch backend (Keras converts torch tensors through
    ``np.array``, whose ``copy=`` torch's ``__array__`` does not take): torch tensors are
    read through torch itself."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(_keras().ops.convert_to_numpy(x))


def _weights(layer: Any) -> list[np.ndarray]:
    """``layer.get_weights()``, through :func:`_host`."""
    return [_host(v.value) for v in layer.weights]


@dataclass(frozen=True)
class _Call:
    """One Keras layer call as a converter reads it: the layer's name, its inputs' shapes,
    the model's data format and the dtype of the copied weights."""

    name: str
    shapes: list
    shape: tuple  # the first input's
    rank: int
    fmt: str
    dtype: Any
    L: Any  # keras.layers

    def arr(self, a: Any) -> np.ndarray:
        return host_copy(a, self.dtype)


def _add(layer: Any, c: _Call) -> list:
    if len(c.shapes) < 2:
        raise ValueError(f"layer {c.name!r} (Add) adds {len(c.shapes)} tensor")
    return [Add(name=c.name)]


def _concatenate(layer: Any, c: _Call) -> list:
    channels = channel_axis(c.rank, c.fmt)
    if layer.axis % c.rank != channels:
        raise ValueError(
            f"layer {c.name!r} (Concatenate) joins along axis {layer.axis}, not the channels (axis {channels})"
        )
    return [Concat(name=c.name)]


def _depthwise(layer: Any, c: _Call) -> list:
    raise ValueError(
        f"layer {c.name!r} ({type(layer).__name__}): depthwise convolutions couple each channel to its own filter, "
        "which channel merging does not handle"
    )


def _zero_padding(layer: Any, c: _Call) -> list:
    _check_format(layer, c.fmt)
    return [Pad(from_pairs(layer.padding), 0.0, c.name)]


def _dense(layer: Any, c: _Call) -> list:
    if c.rank != 2:
        raise ValueError(f"layer {c.name!r}: Dense on a {c.rank}-D tensor is not supported (add a Flatten)")
    w = _weights(layer)
    dense = Dense(c.arr(w[0].T), c.arr(w[1]) if layer.use_bias else None, name=c.name)
    return [dense, *_activation(layer.activation, c.name)]


def _conv2d(layer: Any, c: _Call) -> list:
    if type(layer).__name__ not in ("Conv2D", "Convolution2D"):
        # a subclass under another name is not read as a convolution (nor as anything else)
        raise ValueError(unsupported(c.name, type(layer).__name__, _SUPPORTED))
    if layer.groups != 1:
        raise ValueError(grouped_convolution(c.name, layer.groups))
    _check_format(layer, c.fmt)
    k, s, d = tuple(layer.kernel_size), tuple(layer.strides), tuple(layer.dilation_rate)
    pad = explicit_padding(layer.padding, spatial(c.shape, c.fmt), k, s, d, c.name)
    w = _weights(layer)
    conv = Conv2d(
        c.arr(kernel_to_core(w[0])),
        c.arr(w[1]) if layer.use_bias else None,
        stride=s,
        padding=pad,
        dilation=d,
        name=c.name,
    )
    return [conv, *_activation(layer.activation, c.name)]


def _batchnorm(layer: Any, c: _Call) -> list:
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    channels = channel_axis(c.rank, c.fmt)
    if axis is None or axis % c.rank != channels:
        raise ValueError(
            f"layer {c.name!r}: BatchNormalization over axis {layer.axis} is not over the channels (axis {channels})"
        )
    w = _weights(layer)
    gamma = c.arr(w.pop(0)) if layer.scale else None
    beta = c.arr(w.pop(0)) if layer.center else None
    return [BatchNorm(c.arr(w[0]), c.arr(w[1]), gamma, beta, eps=float(layer.epsilon), name=c.name)]


def _relu(layer: Any, c: _Call) -> list:
    if layer.max_value is not None or float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
        raise ValueError(relu_variant(c.name, "ReLU with max_value, negative_slope or threshold", _RELU))
    return [ReLU(name=c.name)]


def _activation_layer(layer: Any, c: _Call) -> list:
    return [replace(l, name=c.name) for l in _activation(layer.activation, c.name)] or [Identity(name=c.name)]


def _softmax(layer: Any, c: _Call) -> list:
    if layer.axis not in (-1, 1) or c.rank != 2:
        raise ValueError(f"layer {c.name!r}: Softmax over axis {layer.axis} of a {c.rank}-D tensor is not supported")
    return [Softmax(name=c.name)]


def _pooling(layer: Any, c: _Call) -> list:
    _check_format(layer, c.fmt)
    k, s = tuple(layer.pool_size), tuple(layer.strides)
    pad = explicit_padding(layer.padding, spatial(c.shape, c.fmt), k, s, (1, 1), c.name)
    if isinstance(layer, c.L.MaxPooling2D):
        return [MaxPool2d(k, s, pad, name=c.name)]
    return [AvgPool2d(k, s, pad, name=c.name, count_include_pad=False)]


def _global_pooling(layer: Any, c: _Call) -> list:
    _check_format(layer, c.fmt)
    hw = spatial(c.shape, c.fmt)
    cls = AvgPool2d if isinstance(layer, c.L.GlobalAveragePooling2D) else MaxPool2d
    out = [cls(hw, hw, 0, name=c.name)]
    if not layer.keepdims:
        out.append(Flatten(name=f"{c.name}.flatten"))  # (C, 1, 1): both orders agree
    return out


def _flatten(layer: Any, c: _Call) -> list:
    if c.rank == 4:
        # Keras moves channels last before flattening when its data_format is
        # channels_first, so the order is (h, w, c) when it matches the tensor's layout.
        return [Flatten("channels_last" if layer.data_format == c.fmt else "channels_first", name=c.name)]
    if c.rank != 2:
        raise ValueError(f"layer {c.name!r}: Flatten of a {c.rank}-D tensor is not supported")
    return [Identity(name=c.name)]


def _dropout(layer: Any, c: _Call) -> list:
    return [Dropout(float(layer.rate), name=c.name)]


def _rescaling(layer: Any, c: _Call) -> list:
    # x * scale + offset: a BatchNorm with fixed statistics (per channel or feature)
    C = int(c.shape[channel_axis(c.rank, c.fmt)])
    ones = np.ones(C, dtype=c.dtype)
    return [
        BatchNorm(
            0 * ones,
            ones,
            c.arr(np.broadcast_to(np.asarray(layer.scale, dtype=c.dtype), (C,))),
            c.arr(np.broadcast_to(np.asarray(layer.offset, dtype=c.dtype), (C,))),
            eps=0.0,
            name=c.name,
        )
    ]


def _identity(layer: Any, c: _Call) -> list:
    return [Identity(name=c.name)]


_INFERENCE_IDENTITIES = (
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
    "GaussianNoise",
    "GaussianDropout",
    "ActivityRegularization",
)
"""Layers that are the identity at inference (data augmentation, noise)."""

_CONVERTERS: dict[str, Callable[[Any, _Call], list]] = {
    "Add": _add,
    "Concatenate": _concatenate,
    "DepthwiseConv2D": _depthwise,
    "SeparableConv2D": _depthwise,
    "ZeroPadding2D": _zero_padding,
    "Dense": _dense,
    "Conv2D": _conv2d,
    "BatchNormalization": _batchnorm,
    "ReLU": _relu,
    "Activation": _activation_layer,
    "Softmax": _softmax,
    "MaxPooling2D": _pooling,
    "AveragePooling2D": _pooling,
    "GlobalAveragePooling2D": _global_pooling,
    "GlobalMaxPooling2D": _global_pooling,
    "Flatten": _flatten,
    "Dropout": _dropout,
    "SpatialDropout2D": _dropout,
    "Rescaling": _rescaling,
    "Identity": _identity,
    **dict.fromkeys(_INFERENCE_IDENTITIES, _identity),
}
"""The one table of the Keras reader: a ``keras.layers`` class name -> the function giving
its core layers. A layer is converted by the first entry it is an instance of (a subclass by
its base's), in this order; the ReLU variants (``LeakyReLU``, ``ELU``, ...) are refused,
everything else is unsupported. Adding a Keras layer type adds an entry here."""


def _convert_layer(layer: Any, shapes: list, fmt: str, dtype: Any) -> list:
    """The core layers of one Keras layer call with inputs of ``shapes`` (ValueError naming it)."""
    L = _keras().layers
    name = layer.name
    problem = _not_plain(layer, _plain_classes(L))
    if problem:
        raise ValueError(problem)
    call = _Call(name, shapes, shapes[0], len(shapes[0]), fmt, dtype, L)
    for cls_name, convert in _CONVERTERS.items():
        cls = getattr(L, cls_name, None)
        if cls is not None and isinstance(layer, cls):
            return convert(layer, call)
    # found by name, not listed: no ReLU variant is a subclass of a listed class
    if isinstance(layer, relu_variant_classes(L)):
        raise ValueError(relu_variant(name, type(layer).__name__, _RELU))
    raise ValueError(unsupported(name, type(layer).__name__, _SUPPORTED))


def _check_format(layer: Any, fmt: str) -> None:
    if layer.data_format != fmt:
        raise ValueError(f"layer {layer.name!r}: data_format {layer.data_format!r} differs from the model's {fmt!r}")


def to_core_input(x: Any, data_format: str = "channels_last", dtype: Any = np.float64) -> np.ndarray | None:
    """Inputs of a Keras model as NCHW NumPy arrays for the core (images transposed).

    Examples
    --------
    >>> import numpy as np
    >>> to_core_input(np.zeros((2, 28, 28, 1))).shape
    (2, 1, 28, 28)
    """
    return core_batch(x, data_format, dtype)


def to_keras(
    net: Network,
    *,
    data_format: str = "channels_last",
    name: str | None = None,
    functional: bool = False,
    input_name: str | None = None,
) -> Any:
    """A new Keras model of plain layers computing ``net``: a ``Sequential`` for a chain, a
    functional ``Model`` (with ``Add`` and ``Concatenate``) for a graph or when
    ``functional=True``.

    ``net.input_shape`` is required. With ``data_format="channels_last"`` the model takes
    ``(H, W, C)`` images and convolution kernels are written HWIO; padding that is not
    Keras's ``"valid"`` or ``"same"`` for that size becomes a ``ZeroPadding2D`` before the
    layer (max pooling accepts only ``"valid"``/``"same"`` padding).

    Every Keras layer is named explicitly, so that the names do not depend on how many models
    were built before: a layer of ``net`` gives its name to the Keras layer computing it (``.``
    and ``/``, which Keras's PyTorch backend refuses, become ``_``; an unnamed layer ``i`` is
    ``<kind>_<i>``, as ``dense_0``), a ``ZeroPadding2D`` written before a layer is
    ``<name>_pad``, a name taken already gets ``_2``, ``_3``, ... The model is ``name``
    (``"tropref"`` when None), its input ``input_name`` (``"input"`` when None).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> m = to_keras(Network([Dense(np.ones((2, 3)), np.zeros(2)), ReLU()], input_shape=(3,)))
    >>> [type(l).__name__ for l in m.layers]
    ['Dense', 'ReLU']
    """
    keras = _keras()
    L = keras.layers
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"`data_format` must be 'channels_last' or 'channels_first', got {data_format!r}")
    if net.input_shape is None:
        raise ValueError("to_keras needs the network's `input_shape`")
    if data_format == "channels_last":
        net = with_flatten_order_everywhere(net, "channels_last")
    shapes = output_shapes(net)
    in_shape = shape_from_core(net.input_shape, data_format)
    weights: list = []  # (layer, weights) set after the model is built
    per_layer: list[list] = []
    used = {input_name or "input"}
    names = [
        _fresh(_keras_name(layer.name, type(layer).__name__.lower(), i), used) for i, layer in enumerate(net.layers)
    ]
    for i, layer in enumerate(net.layers):
        src = net.sources(i)[0]
        shape_in = net.input_shape if src < 0 else shapes[src]
        per_layer.append(
            _keras_layers(
                L, layer, shape_in, data_format, weights, reads_relu(net.layers, net.sources, i), names[i], used
            )
        )
    x = keras.Input(shape=in_shape, name=input_name or "input")
    if net.is_chain and not functional:
        model = keras.Sequential([x] + [k for ks in per_layer for k in ks], name=name or "tropref")
    else:

        def step(i: int, srcs: list) -> Any:
            layer = net.layers[i]
            if isinstance(layer, Add):
                return L.Add(name=names[i])(srcs)
            if isinstance(layer, Concat):
                axis = channel_axis(len(shapes[i]) + 1, data_format)
                return L.Concatenate(axis=axis, name=names[i])(srcs)
            v = srcs[0]
            for k in per_layer[i]:
                v = k(v)
            return v

        model = keras.Model(x, run_graph(net, x, step), name=name or "tropref")
    for k, w in weights:
        k.set_weights(w)
    return model


def _keras_name(name: str | None, kind: str, i: int) -> str:
    """A Keras layer name for layer ``i`` of a network: its own name with ``.`` and ``/``
    (refused by Keras's PyTorch backend) as ``_``, or ``<kind>_<i>`` when it has none."""
    return name.replace(".", "_").replace("/", "_") if name else f"{kind}_{i}"


def _fresh(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... when taken (``used`` gets the result)."""
    out, k = name, 2
    while out in used:
        out, k = f"{name}_{k}", k + 1
    used.add(out)
    return out


def _keras_layers(
    L: Any,
    layer: Any,
    shape_in: tuple[int, ...],
    data_format: str,
    weights: list,
    nonneg: bool = False,
    name: str = "layer",
    used: set[str] | None = None,
) -> list:
    """The plain Keras layers computing one core layer on inputs of ``shape_in`` (NCHW);
    their weights are appended to ``weights``. Add and Concat have none here. ``nonneg``:
    the input is a ReLU's output, so a max pooling's padding may be zeros. The layer is
    ``name``; a ``ZeroPadding2D`` before it ``<name>_pad`` (a fresh name, ``used`` holding
    the names taken)."""
    w = _Writing(L, tuple(shape_in), data_format, weights, nonneg, name, set() if used is None else used)
    return writer(_WRITERS, layer, "Keras")(layer, w)


@dataclass(frozen=True)
class _Writing:
    """What a writer needs besides the layer (see :func:`_keras_layers`)."""

    L: Any
    shape_in: tuple[int, ...]
    data_format: str
    weights: list
    nonneg: bool
    name: str
    used: set[str]

    @property
    def rank4(self) -> bool:
        return len(self.shape_in) == 3

    @property
    def hw(self) -> tuple[int, ...] | None:
        return self.shape_in[1:] if self.rank4 else None

    def pad(self, padding: tuple[int, ...]) -> Any:
        """A ``ZeroPadding2D`` before the layer, under a fresh ``<name>_pad``."""
        return self.L.ZeroPadding2D(
            to_pairs(padding), data_format=self.data_format, name=_fresh(f"{self.name}_pad", self.used)
        )


def _f32(x: Any) -> np.ndarray:
    return np.asarray(to_numpy(x), dtype=np.float32)


def _write_dense(layer: Dense, w: _Writing) -> list:
    k = w.L.Dense(layer.units, use_bias=layer.b is not None, name=w.name)
    w.weights.append((k, [_f32(layer.W).T] + ([_f32(layer.b)] if layer.b is not None else [])))
    return [k]


def _write_conv(layer: Conv2d, w: _Writing) -> list:
    O, _C, kh, kw = (int(s) for s in layer.W.shape)
    padding = padding_keyword(layer.padding, w.hw, (kh, kw), layer.stride, layer.dilation)
    pre = []
    if padding is None:
        pre, padding = [w.pad(layer.padding)], "valid"
    k = w.L.Conv2D(
        O,
        (kh, kw),
        strides=layer.stride,
        padding=padding,
        dilation_rate=layer.dilation,
        data_format=w.data_format,
        use_bias=layer.b is not None,
        name=w.name,
    )
    w.weights.append((k, [kernel_from_core(_f32(layer.W))] + ([_f32(layer.b)] if layer.b is not None else [])))
    return [*pre, k]


def _write_batchnorm(layer: BatchNorm, w: _Writing) -> list:
    axis = -1 if (not w.rank4 or w.data_format == "channels_last") else 1
    k = w.L.BatchNormalization(axis=axis, epsilon=layer.eps, name=w.name)
    c = layer.channels
    gamma = _f32(layer.weight) if layer.weight is not None else np.ones(c, np.float32)
    beta = _f32(layer.bias) if layer.bias is not None else np.zeros(c, np.float32)
    w.weights.append((k, [gamma, beta, _f32(layer.mean), _f32(layer.var)]))
    return [k]


def _write_pool(layer: MaxPool2d, w: _Writing) -> list:
    padding = padding_keyword(layer.padding, w.hw, layer.kernel, layer.stride, (1, 1))
    is_avg = isinstance(layer, AvgPool2d)  # the one writer of both pooling types
    if padding == "same" and is_avg and layer.count_include_pad:
        padding = None  # Keras "same" average pooling does not count the padding
    pre = []
    if padding is None:
        if (not is_avg and not w.nonneg) or (is_avg and not layer.count_include_pad):
            raise ValueError(f"{type(layer).__name__} {layer.name!r}: padding {layer.padding} has no Keras equivalent")
        pre, padding = [w.pad(layer.padding)], "valid"
    cls = w.L.AveragePooling2D if is_avg else w.L.MaxPooling2D
    return [
        *pre,
        cls(pool_size=layer.kernel, strides=layer.stride, padding=padding, data_format=w.data_format, name=w.name),
    ]


def _write_flatten(layer: Flatten, w: _Writing) -> list:
    if w.rank4 and w.data_format == "channels_first":
        # Keras's channels_first Flatten yields (h, w, c); its channels_last one (c, h, w) here
        order = "channels_first" if layer.order == "channels_last" else "channels_last"
        return [w.L.Flatten(data_format=order, name=w.name)]
    return [w.L.Flatten(name=w.name)]


# tropref layer type -> the Keras layers computing it (the other direction: _CONVERTERS)
_WRITERS: dict[type, Callable[[Any, _Writing], list]] = {
    Dense: _write_dense,
    Conv2d: _write_conv,
    BatchNorm: _write_batchnorm,
    ReLU: lambda layer, w: [w.L.ReLU(name=w.name)],
    MaxPool2d: _write_pool,  # and AvgPool2d, a subclass
    Flatten: _write_flatten,
    Dropout: lambda layer, w: [w.L.Dropout(layer.rate, name=w.name)],
    Softmax: lambda layer, w: [w.L.Softmax(name=w.name)],
    Identity: lambda layer, w: [w.L.Identity(name=w.name)],  # and the walk's folded BatchNorms
    Add: lambda layer, w: [],  # junctions are written by the graph's step
    Concat: lambda layer, w: [],
}


def compress(
    model: Any,
    keep: Any = 0.5,
    method: str = "tropnnc",
    seed: int | None = None,
    *,
    inputs: Any = None,
    data: Any = None,
    dtype: Any = None,
    **options: Any,
) -> tuple[Any, NetworkReport]:
    """Compress a Keras model; returns the user's own model, resized, and the report.

    The result is a clone of ``model`` (as ``keras.models.clone_model`` makes): the same layer classes,
    configs, names and graph, the model's name and its input and output names, a
    ``Sequential`` for a ``Sequential`` and a functional ``keras.Model`` for a functional
    model, nested models cloned on their new inputs. Every ``Dense`` and ``Conv2D`` has its
    compressed width and weights, under its own name, so ``small.get_layer(r.name)`` finds
    every layer ``r`` of ``report.layers``. A ``BatchNormalization`` that the compression
    folded into the layer before it stays, under its name, with the compressed units'
    estimated statistics (``moving_mean``, ``moving_variance``; ``gamma = sqrt(var +
    epsilon)``, ``beta`` the mean), the identity at inference, the units' own mean and spread
    in training; an exact identity (``moving_mean`` 0, ``gamma`` 1) where no statistics are
    known; it carries the folded bias in ``beta`` when that layer has none; a layer
    that needs a bias it lacks gets ``use_bias=True`` and a note in ``report.notes``. The
    clone computes the compressed network (:func:`tropref.network.forward`) to round-off; no
    forward pass checks it here (its layers are those the reader read), only its output shape.
    It saves and loads as ``.keras`` (and as legacy ``.h5``).

    Where the model cannot carry the compressed network (a layer called several times,
    whose calls tropref compresses as separate layers; a ``Rescaling`` that would need
    per-channel values), the result is :func:`to_keras`'s model of
    plain layers, named after the network's layers, with the model's name and input name
    (functional for a functional model), with a ``UserWarning`` and a note in
    ``report.notes`` saying why.

    ``inputs`` and ``data`` are in the model's own layout (NHWC for channels-last models);
    every other option goes to :func:`tropref.compress_network` (``skip``, budgets,
    ``input_radius``, ``progress``, method options...). The computation runs in ``dtype``:
    by default the model's own (float32, or float64 for a float64 model); the result keeps
    the model's own dtype and data format.

    Examples
    --------
    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    >>> small, report = compress(m, keep=0.5, inputs=np.random.default_rng(0).normal(size=(32, 4)))
    >>> small.layers[0].units, [r.name for r in report.layers] == [l.name for l in small.layers]
    (8, True)
    """
    t0 = time.perf_counter()
    fmt = data_format_of(model)
    if dtype is None:  # the model's own precision
        dtype = core_dtype(w.dtype for w in model.weights)
    net = from_keras(model, dtype=dtype)
    t_export = time.perf_counter() - t0
    new, report = compress_network(
        net,
        keep,
        method=method,
        seed=seed,
        inputs=to_core_input(inputs, fmt, dtype),
        data=to_core_input(data, fmt, dtype),
        model_name=options.pop("model_name", model.name),
        **options,
    )
    notes: list[str] = []

    def rebuild(new: Network) -> Any:
        x_in, _ = _io(model)
        functional = not isinstance(model, _keras().Sequential)
        return to_keras(new, data_format=fmt, name=model.name, functional=functional, input_name=_input_name(x_in))

    def write(new: Network) -> Any:
        return own_or_rebuilt(
            lambda: _own_model(model, net, new, fmt, unit_moments(report)),
            lambda: rebuild(new),
            notes,
            "the model was rebuilt as plain layers, not the model's own layers resized",
        )

    small, report = write_back(new, report, write, t0, t_export)
    return small, replace(report, notes=(*report.notes, *notes))


def _input_name(x: Any) -> str | None:
    """The name of the input layer that made the symbolic tensor ``x``."""
    history = getattr(x, "_keras_history", None)
    return getattr(history.operation, "name", None) if history is not None else getattr(x, "name", None)


# --------------------------------------------------------------------------- the user's own model


def _slots(layers: list) -> dict[str, Slot]:
    """The model's dense, convolutional and BatchNorm layers by name. A ``Rescaling`` is read
    as a BatchNorm, so it is one here; every BatchNorm slot has an affine part, since the
    clone may give a ``BatchNormalization`` the ``scale``/``center`` it lacks."""
    L = _keras().layers
    out = {}
    for layer in layers:
        if isinstance(layer, L.Dense):
            out[layer.name] = Slot("dense", bool(layer.use_bias))
        elif isinstance(layer, L.Conv2D):
            out[layer.name] = Slot("conv", bool(layer.use_bias))
        elif isinstance(layer, (L.BatchNormalization, L.Rescaling)):
            native = isinstance(layer, L.BatchNormalization) and bool(layer.scale and layer.center)
            out[layer.name] = Slot("batchnorm", True, native)
    return out


@functools.cache
def _unit_var(eps: float, dtype: str) -> float:
    """A variance ``v`` for which Keras's inference BatchNorm of ``eps`` is exactly the identity
    in ``dtype`` (``v + eps`` rounds to 1, whose inverse square root is 1): ``1 - eps`` nudged
    until ``keras.ops.batch_normalization`` returns its input bit for bit."""
    ops = _keras().ops
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:  # bfloat16 and the like: NumPy cannot step through their values
        return 1.0 - eps
    x = np.linspace(-3.0, 3.0, 97).astype(np_dtype).reshape(-1, 1)
    zero, one = np.zeros(1, np_dtype), np.ones(1, np_dtype)
    v = np.array([1.0 - eps], dtype=np_dtype)
    for _ in range(64):
        y = ops.batch_normalization(x, zero, v, axis=-1, offset=zero, scale=one, epsilon=eps)
        if np.array_equal(_host(y), x):
            return float(v[0])
        v = np.nextafter(v, np_dtype.type(2)) if float(v[0]) + eps < 1 else np.nextafter(v, np_dtype.type(-1))
    return 1.0 - eps  # pragma: no cover - every float dtype reaches 1 within a few steps


def _resized_config(layer: Any, a: dict[str, np.ndarray], old: Any, notes: list[str]) -> dict:
    """``layer``'s config for the arrays ``a`` it takes: its width, and a bias, scale or offset
    where the compressed layer needs one the layer lacks. ``old``: the layer as the original
    network read it (a Rescaling's BatchNorm)."""
    L = _keras().layers
    config = layer.get_config()
    if isinstance(layer, L.Dense):
        config.update(units=int(a["weight"].shape[0]), use_bias="bias" in a)
    elif isinstance(layer, L.Conv2D):
        config.update(filters=int(a["weight"].shape[0]), use_bias="bias" in a)
    elif isinstance(layer, L.BatchNormalization):
        scale = layer.scale or bool(np.any(a["weight"] != 1))
        center = layer.center or bool(np.any(a["bias"] != 0))
        if (scale, center) != (layer.scale, layer.center):
            notes.append(f"BatchNormalization {layer.name!r} gets scale={scale}, center={center} (its new values)")
        config.update(scale=scale, center=center)
    elif isinstance(layer, L.Rescaling):
        same = all(
            np.array_equal(np.asarray(to_numpy(getattr(old, f))), a[k])
            for f, k in (("weight", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))
        )
        identity = (np.all(a["weight"] == 1) and np.all(a["bias"] == 0) and np.all(a["running_mean"] == 0)) and np.all(
            a["running_var"] + old.eps == 1
        )
        if identity and not same:
            config.update(scale=1.0, offset=0.0)
        elif not same:
            raise NotInPlace(f"Rescaling {layer.name!r} would need per-channel values (the compressed network's)")
    return config


def _initial_values(layer: Any, config: dict, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays ``a`` (core layout) as the values of the variables of ``layer`` rebuilt from
    ``config`` (its resized config), keyed by the config entry of each variable's initialiser."""
    L = _keras().layers
    if isinstance(layer, L.Dense):
        out = {"kernel_initializer": a["weight"].T}
    elif isinstance(layer, L.Conv2D):
        out = {"kernel_initializer": kernel_from_core(a["weight"])}
    elif isinstance(layer, L.BatchNormalization):
        out = {"moving_mean_initializer": a["running_mean"], "moving_variance_initializer": a["running_var"]}
        out |= {"gamma_initializer": a["weight"]} if config["scale"] else {}
        out |= {"beta_initializer": a["bias"]} if config["center"] else {}
    else:  # a Rescaling: its values are in its config
        out = {}
    if isinstance(layer, (L.Dense, L.Conv2D)) and "bias" in a:
        out["bias_initializer"] = a["bias"]
    return out


class _Given:
    """An initialiser that gives a variable its value: the first call returns ``value``
    (the variable made from the config entry it stands in), later calls ``then``'s values.

    The clone's layers are made with their compressed values: drawing random initial weights
    (Keras's ``glorot_uniform``, the bulk of building a VGG-16) only to overwrite them would
    be wasted. Later calls are other variables that Keras derives from the same initialiser
    (a renormalising BatchNorm's ``moving_stddev``, ``renorm_mean``): they get the
    initialiser's own values, as they did when the values were assigned after the build."""

    def __init__(self, value: np.ndarray, then: Any) -> None:
        self.value, self.then = value, then

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        if self.value is None:
            return self.then(shape, dtype=dtype)
        value, self.value = self.value, None
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"a value of shape {tuple(value.shape)} for a variable of shape {tuple(shape)}")
        # a C-ordered copy of its own: the variable neither aliases the compressed network's
        # arrays nor keeps a transposed view's strides
        return _keras().ops.cast(np.array(value, order="C"), dtype)


class _Later:
    """A model nested in a functional model, cloned when the outer graph calls it: its input
    tensor is then known, with the width the compressed layer before it gives."""

    def __init__(self, model: Any) -> None:
        self.model = model


def _own_model(model: Any, net: Network, new: Network, fmt: str, moments: Any) -> tuple[Any, list[str]]:
    """A clone of ``model`` (``keras.models.clone_model`` for a functional model, the same by
    hand for a Sequential, to follow shapes to nested models: same classes, configs, names, graph,
    nesting, model and input names) with its layers resized to carry ``new``, and notes for
    the report; :class:`NotInPlace` when the model cannot carry it."""
    keras = _keras()
    layers = _all_layers(model)
    dtype = keras.backend.standardize_dtype(model.weights[0].dtype) if model.weights else "float32"
    arrays, notes = in_place_arrays(net, new, _slots(layers), lambda eps: _unit_var(float(eps), dtype), moments)
    read = {layer.name: layer for layer in net.layers if isinstance(layer, BatchNorm)}
    initializers: list[tuple[Any, dict[str, Any]]] = []  # (clone, its config's own initialisers)

    def sequential(seq: Any, shape: tuple | None = None) -> Any:
        """A clone of the Sequential ``seq`` on inputs of batch shape ``shape`` (None: its own):
        a Sequential lists its layers, so a nested model's input shape is followed through
        the layers before it (``compute_output_shape``, symbolic) to clone it on that shape."""
        ref = _io(seq)[0]
        shape = tuple(ref.shape) if shape is None else tuple(shape)
        x = keras.Input(batch_shape=shape, dtype=ref.dtype, name=_input_name(ref))
        out = []
        for k, layer in enumerate(seq.layers):
            if isinstance(layer, keras.Model):
                out.append(nested(layer, shape, ref.dtype))
            else:
                out.append(clone_layer(layer))
            if any(isinstance(later, keras.Model) for later in seq.layers[k + 1 :]):
                shape = tuple(out[-1].compute_output_shape(shape))
        return keras.Sequential([x, *out], name=seq.name, trainable=seq.trainable)

    def nested(inner: Any, shape: tuple, dtype: Any) -> Any:
        """A clone of the nested model ``inner`` on inputs of batch shape ``shape``."""
        if isinstance(inner, keras.Sequential):
            return sequential(inner, shape)
        x = keras.Input(batch_shape=shape, dtype=dtype, name=_input_name(_io(inner)[0]))
        return keras.models.clone_model(inner, input_tensors=x, clone_function=in_functional, call_function=call)

    def in_functional(layer: Any) -> Any:  # a functional model calls its layers: a nested model waits
        return _Later(layer) if isinstance(layer, keras.Model) else clone_layer(layer)

    def clone_layer(layer: Any) -> Any:
        a = arrays.get(layer.name)
        if a is None:
            return type(layer).from_config(layer.get_config())
        config = _resized_config(layer, a, read.get(layer.name), notes)
        values = _initial_values(layer, config, a)
        own = {key: keras.initializers.get(config[key]) for key in values}
        given = {key: _Given(value, own[key]) for key, value in values.items()}
        out = type(layer).from_config({**config, **given})
        initializers.append((out, own))
        return out

    def call(op: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(op, _Later):  # on the tensor it reads now, whose width may have changed
            op = nested(op.model, tuple(args[0].shape), args[0].dtype)
        return op(*args, **kwargs)

    try:
        if isinstance(model, keras.Sequential):
            small = sequential(model)
            if model.compiled:  # as keras.models.clone_model does
                small.compile_from_config(model.get_compile_config())
        else:
            small = keras.models.clone_model(model, clone_function=in_functional, call_function=call)
    except (ValueError, TypeError, NotImplementedError) as exc:  # a layer without compute_output_shape, say
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        why = next((line for line in first if "incompatible" in line), first[0] if first else type(exc).__name__)
        raise NotInPlace(f"Keras could not rebuild the model at the compressed widths ({why.strip()})") from None
    for layer, own in initializers:  # built now: the clone's config names the model's own initialisers again
        for key, initializer in own.items():
            setattr(layer, key, initializer)
    _check(small, new, fmt)
    return small, notes


def _check(small: Any, new: Network, fmt: str) -> None:
    """The clone's output shape against the compressed network's (free: Keras knows it
    symbolically). No forward pass: the clone runs the very layers the reader read, with the
    semantics it read them with (tests check the outputs), so a pass over the weights would
    only cost time."""
    want = shape_from_core(output_shapes(new)[-1], fmt)
    got = tuple(int(s) for s in small.outputs[0].shape[1:])
    if got != want:
        raise NotInPlace(f"the model's own layers, at the compressed widths, give outputs of shape {got}, not {want}")
