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
- :func:`to_keras` builds a new Keras model of plain layers (saves and loads as ``.keras``).
- :func:`compress` does both around :func:`tropref.compress_network`.

The core computes in NCHW: :func:`to_core_input` transposes channels-last inputs. The model
given is never modified.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from tropref.network import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Identity,
    MaxPool2d,
    Network,
    ReLU,
    Softmax,
    layer_shapes,
    with_flatten_order,
)
from tropref.network_compression import NetworkReport, compress_network

__all__ = ["from_keras", "to_keras", "compress", "data_format_of", "to_core_input"]

SUPPORTED = ("Dense, Conv2D, BatchNormalization, ReLU, Activation('relu'), MaxPooling2D, AveragePooling2D, "
             "GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Dropout, InputLayer, Softmax (and activation='softmax'), "
             "Rescaling, nested Sequential chains, and augmentation/noise layers (identities at inference)")


def _keras() -> Any:
    import keras  # the adapter's only framework import: the core never imports keras

    return keras


def _same_padding(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras ``"same"`` padding ``(before, after)``: the extra pixel goes after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial(shape: Sequence[Any], fmt: str) -> tuple[int, int]:
    return (int(shape[1]), int(shape[2])) if fmt == "channels_last" else (int(shape[2]), int(shape[3]))


def _pad4(padding: str, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], name: str) -> tuple[int, int, int, int]:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return _same_padding(hw[0], k[0], s[0], d[0]) + _same_padding(hw[1], k[1], s[1], d[1])
    raise ValueError(f"layer {name!r}: padding={padding!r} is not supported")


def _activation(activation: Any, name: str) -> list:
    """The core layers of a Keras activation: ReLU, softmax or nothing (linear)."""
    fn = getattr(activation, "__name__", str(activation))
    if fn == "relu":
        return [ReLU(name=f"{name}.relu")]
    if fn == "softmax":
        return [Softmax(name=f"{name}.softmax")]
    if fn == "linear" or activation is None:
        return []
    raise ValueError(f"layer {name!r}: activation {fn!r} is not supported (only 'relu', 'softmax' and linear)")


def _layer_chain(model: Any) -> list:
    """The model's layers in order, checking that they form one chain."""
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {type(model).__name__}")
    try:
        model.inputs, model.outputs
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"model {model.name!r} has no defined input: build it with keras.Input(...) first") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; tropref needs one chain")
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    prev = model.inputs[0]
    chain: list = []
    for layer in layers:
        if len(getattr(layer, "_inbound_nodes", [])) > 1:
            raise ValueError(f"layer {layer.name!r} is used several times (shared layer): the model is not a chain")
        try:
            inp = layer.input
        except (AttributeError, ValueError) as exc:
            raise ValueError(f"layer {layer.name!r}: its input cannot be read ({exc})") from exc
        if isinstance(inp, (list, tuple, dict)) or inp is not prev:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) does not read the previous layer's output alone: "
                             "the model is not a chain (residual additions, concatenations and branches are refused)")
        # a nested model that is itself a chain is read layer by layer
        chain += _layer_chain(layer) if isinstance(layer, keras.Model) else [layer]
        prev = layer.output
    if prev is not model.outputs[0]:
        raise ValueError(f"the output of model {model.name!r} is not the end of its chain of layers (a branch)")
    return chain


def data_format_of(model: Any) -> str:
    """``"channels_last"`` or ``"channels_first"``: the data format of the model's first
    convolution or pooling (``"channels_last"`` for a model without any)."""
    for layer in _layer_chain(model):
        fmt = getattr(layer, "data_format", None)
        if fmt is not None and type(layer).__name__ != "Flatten":
            return fmt
    return "channels_last"


def from_keras(model: Any, *, dtype: Any = np.float32) -> Network:
    """The network description of a Keras chain model (weights copied to NumPy ``dtype``).

    The description is NCHW: a channels-last model's input ``(H, W, C)`` becomes
    ``input_shape = (C, H, W)`` (use :func:`to_core_input` on the data).

    Raises
    ------
    ValueError
        Naming the first unsupported layer, or the layer where the graph stops being a chain.

    Examples
    --------
    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    >>> [type(l).__name__ for l in from_keras(m)]
    ['Dense', 'ReLU', 'Dense']
    """
    keras = _keras()
    L = keras.layers
    chain = _layer_chain(model)
    fmt = data_format_of(model)
    in_shape = tuple(int(s) for s in model.inputs[0].shape[1:])
    if len(in_shape) == 3:
        input_shape = (in_shape[2], in_shape[0], in_shape[1]) if fmt == "channels_last" else in_shape
    elif len(in_shape) == 1:
        input_shape = in_shape
    else:
        raise ValueError(f"model {model.name!r}: input shape {in_shape} is neither (d,) nor an image")

    def arr(a: Any) -> np.ndarray:
        return np.array(a, dtype=dtype, copy=True)

    out: list = []
    for layer in chain:
        name = layer.name
        shape = tuple(layer.input.shape)
        rank = len(shape)
        if isinstance(layer, L.Dense):
            if rank != 2:
                raise ValueError(f"layer {name!r}: Dense on a {rank}-D tensor is not supported (add a Flatten)")
            w = layer.get_weights()
            out.append(Dense(arr(w[0].T), arr(w[1]) if layer.use_bias else None, name=name))
            out += _activation(layer.activation, name)
        elif isinstance(layer, L.Conv2D) and type(layer).__name__ in ("Conv2D", "Convolution2D"):
            if layer.groups != 1:
                raise ValueError(f"layer {name!r}: grouped or depthwise convolution (groups={layer.groups}) is not supported")
            _check_format(layer, fmt)
            k, s, d = tuple(layer.kernel_size), tuple(layer.strides), tuple(layer.dilation_rate)
            pad = _pad4(layer.padding, _spatial(shape, fmt), k, s, d, name)
            w = layer.get_weights()
            out.append(Conv2d(arr(np.transpose(w[0], (3, 2, 0, 1))), arr(w[1]) if layer.use_bias else None, stride=s, padding=pad, dilation=d, name=name))
            out += _activation(layer.activation, name)
        elif isinstance(layer, L.BatchNormalization):
            axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
            channel_axis = 1 if rank == 2 else (3 if fmt == "channels_last" else 1)
            if axis is None or axis % rank != channel_axis:
                raise ValueError(f"layer {name!r}: BatchNormalization over axis {layer.axis} is not over the channels (axis {channel_axis})")
            w = list(layer.get_weights())
            gamma = arr(w.pop(0)) if layer.scale else None
            beta = arr(w.pop(0)) if layer.center else None
            out.append(BatchNorm(arr(w[0]), arr(w[1]), gamma, beta, eps=float(layer.epsilon), name=name))
        elif isinstance(layer, L.ReLU):
            if layer.max_value is not None or float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
                raise ValueError(f"layer {name!r}: ReLU with max_value, negative_slope or threshold is not supported")
            out.append(ReLU(name=name))
        elif isinstance(layer, L.Activation):
            out += [replace_name(l, name) for l in _activation(layer.activation, name)] or [Identity(name=name)]
        elif isinstance(layer, L.Softmax):
            if layer.axis not in (-1, 1) or rank != 2:
                raise ValueError(f"layer {name!r}: Softmax over axis {layer.axis} of a {rank}-D tensor is not supported")
            out.append(Softmax(name=name))
        elif isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
            _check_format(layer, fmt)
            k, s = tuple(layer.pool_size), tuple(layer.strides)
            pad = _pad4(layer.padding, _spatial(shape, fmt), k, s, (1, 1), name)
            if isinstance(layer, L.MaxPooling2D):
                out.append(MaxPool2d(k, s, pad, name=name))
            else:
                out.append(AvgPool2d(k, s, pad, name=name, count_include_pad=False))
        elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
            _check_format(layer, fmt)
            hw = _spatial(shape, fmt)
            cls = AvgPool2d if isinstance(layer, L.GlobalAveragePooling2D) else MaxPool2d
            out.append(cls(hw, hw, 0, name=name))
            if not layer.keepdims:
                out.append(Flatten(name=f"{name}.flatten"))  # (C, 1, 1): both orders agree
        elif isinstance(layer, L.Flatten):
            if rank == 4:
                # Keras moves channels last before flattening when its data_format is
                # channels_first, so the order is (h, w, c) when it matches the tensor's layout.
                own = layer.data_format
                out.append(Flatten("channels_last" if own == fmt else "channels_first", name=name))
            elif rank != 2:
                raise ValueError(f"layer {name!r}: Flatten of a {rank}-D tensor is not supported")
        elif isinstance(layer, (L.Dropout, L.SpatialDropout2D)):
            out.append(Dropout(float(layer.rate), name=name))
        elif isinstance(layer, L.Rescaling):
            # x * scale + offset: a BatchNorm with fixed statistics (per channel or feature)
            C = int(shape[1]) if rank == 2 else int(shape[3] if fmt == "channels_last" else shape[1])
            ones = np.ones(C, dtype=dtype)
            out.append(BatchNorm(0 * ones, ones, arr(np.broadcast_to(np.asarray(layer.scale, dtype=dtype), (C,))),
                                 arr(np.broadcast_to(np.asarray(layer.offset, dtype=dtype), (C,))), eps=0.0, name=name))
        elif isinstance(layer, L.Identity) or isinstance(layer, _inference_identities(L)):
            out.append(Identity(name=name))
        else:
            raise ValueError(f"layer {name!r} ({type(layer).__name__}) is not supported by tropref; supported: {SUPPORTED}")
    return Network(tuple(out), input_shape)


def replace_name(layer: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(layer, name=name)


def _inference_identities(L: Any) -> tuple:
    """Layers that are the identity at inference (data augmentation, noise)."""
    names = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
             "GaussianNoise", "GaussianDropout", "ActivityRegularization")
    return tuple(getattr(L, n) for n in names if hasattr(L, n))


def _check_format(layer: Any, fmt: str) -> None:
    if layer.data_format != fmt:
        raise ValueError(f"layer {layer.name!r}: data_format {layer.data_format!r} differs from the model's {fmt!r}")


def to_core_input(x: Any, data_format: str = "channels_last", dtype: Any = np.float64) -> np.ndarray | None:
    """Inputs of a Keras model as NCHW NumPy arrays for the core (images transposed)."""
    if x is None:
        return None
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else x  # torch-backend tensors
    a = np.asarray(a, dtype=dtype)
    if a.ndim == 4 and data_format == "channels_last":
        a = np.transpose(a, (0, 3, 1, 2))
    return a


def to_keras(net: Network, *, data_format: str = "channels_last", name: str | None = None) -> Any:
    """A new Keras ``Sequential`` model of plain layers computing ``net``.

    ``net.input_shape`` is required. With ``data_format="channels_last"`` the model takes
    ``(H, W, C)`` images and convolution kernels are written HWIO; padding that is not
    Keras's ``"valid"`` or ``"same"`` for that size becomes a ``ZeroPadding2D`` before the
    layer (max pooling accepts only ``"valid"``/``"same"`` padding).

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
    if data_format == "channels_last" and any(isinstance(l, Flatten) and l.order == "channels_first" for l in net.layers):
        net = with_flatten_order(net, "channels_last")
    shapes = layer_shapes(net)
    from tropref._array import to_numpy

    def a(x: Any) -> np.ndarray:
        return np.asarray(to_numpy(x), dtype=np.float32)

    in_shape = net.input_shape
    if len(in_shape) == 3 and data_format == "channels_last":
        in_shape = (in_shape[1], in_shape[2], in_shape[0])
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=in_shape))
    weights: list = []  # (layer, weights) set after the model is built
    rank4 = len(net.input_shape) == 3
    for i, layer in enumerate(net.layers):
        hw = shapes[i][1:] if len(shapes[i]) == 3 else None
        if isinstance(layer, Dense):
            k = L.Dense(layer.units, use_bias=layer.b is not None)
            model.add(k)
            weights.append((k, [a(layer.W).T] + ([a(layer.b)] if layer.b is not None else [])))
        elif isinstance(layer, Conv2d):
            O, C, kh, kw = (int(s) for s in layer.W.shape)
            padding = _keras_padding(layer.padding, hw, (kh, kw), layer.stride, layer.dilation)
            if padding is None:
                t, b, l, r = layer.padding
                model.add(L.ZeroPadding2D(((t, b), (l, r)), data_format=data_format))
                padding = "valid"
            k = L.Conv2D(O, (kh, kw), strides=layer.stride, padding=padding, dilation_rate=layer.dilation, data_format=data_format, use_bias=layer.b is not None)
            model.add(k)
            weights.append((k, [np.transpose(a(layer.W), (2, 3, 1, 0))] + ([a(layer.b)] if layer.b is not None else [])))
            rank4 = True
        elif isinstance(layer, BatchNorm):
            axis = -1 if (not rank4 or data_format == "channels_last") else 1
            k = L.BatchNormalization(axis=axis, epsilon=layer.eps)
            model.add(k)
            c = layer.channels
            weights.append((k, [a(layer.weight) if layer.weight is not None else np.ones(c, np.float32),
                                a(layer.bias) if layer.bias is not None else np.zeros(c, np.float32), a(layer.mean), a(layer.var)]))
        elif isinstance(layer, ReLU):
            model.add(L.ReLU())
        elif isinstance(layer, MaxPool2d):
            padding = _keras_padding(layer.padding, hw, layer.kernel, layer.stride, (1, 1))
            is_avg = isinstance(layer, AvgPool2d)
            if padding == "same" and is_avg and layer.count_include_pad:
                padding = None  # Keras "same" average pooling does not count the padding
            if padding is None:
                if not is_avg or not layer.count_include_pad:
                    raise ValueError(f"{type(layer).__name__} {layer.name!r}: padding {layer.padding} has no Keras equivalent")
                t, b, l, r = layer.padding
                model.add(L.ZeroPadding2D(((t, b), (l, r)), data_format=data_format))
                padding = "valid"
            cls = L.AveragePooling2D if is_avg else L.MaxPooling2D
            model.add(cls(pool_size=layer.kernel, strides=layer.stride, padding=padding, data_format=data_format))
        elif isinstance(layer, Flatten):
            if rank4:
                if data_format == "channels_last":
                    model.add(L.Flatten())
                else:  # Keras's channels_first Flatten yields (h, w, c); its channels_last one (c, h, w) here
                    model.add(L.Flatten(data_format="channels_first" if layer.order == "channels_last" else "channels_last"))
            else:
                model.add(L.Flatten())
            rank4 = False
        elif isinstance(layer, Dropout):
            model.add(L.Dropout(layer.rate))
        elif isinstance(layer, Softmax):
            model.add(L.Softmax())
        else:
            model.add(L.Identity())
    for k, w in weights:
        k.set_weights(w)
    return model


def _keras_padding(pad: tuple[int, int, int, int], hw: Any, k: Any, s: Any, d: Any) -> str | None:
    """``"valid"``, ``"same"`` or None (needs an explicit ZeroPadding2D)."""
    if not any(pad):
        return "valid"
    if hw is not None and pad == _same_padding(hw[0], k[0], s[0], d[0]) + _same_padding(hw[1], k[1], s[1], d[1]):
        return "same"
    return None


def compress(
    model: Any,
    keep: Any = 0.5,
    method: str = "tropnnc",
    seed: int | None = 0,
    *,
    inputs: Any = None,
    data: Any = None,
    dtype: Any = None,
    **options: Any,
) -> tuple[Any, NetworkReport]:
    """Compress a Keras chain model; returns a new Keras model of plain layers and the report.

    ``inputs`` and ``data`` are in the model's own layout (NHWC for channels-last models);
    every other option goes to :func:`tropref.compress_network` (``skip``, budgets,
    ``input_radius``, ``progress``, method options...). The computation runs in ``dtype``:
    by default the model's own (float32, or float64 for a float64 model). The new model has
    the same data format and saves and loads as ``.keras``.

    Examples
    --------
    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    >>> small, report = compress(m, keep=0.5, inputs=np.random.default_rng(0).normal(size=(32, 4)))
    >>> small.layers[0].units
    8
    """
    t0 = time.perf_counter()
    fmt = data_format_of(model)
    if dtype is None:  # the model's own precision (the core computes in float32 or float64)
        dtype = np.float64 if any(str(w.dtype) == "float64" for w in model.weights) else np.float32
    net = from_keras(model, dtype=dtype)
    t_export = time.perf_counter() - t0
    new, report = compress_network(
        net, keep, method=method, seed=seed, inputs=to_core_input(inputs, fmt, dtype), data=to_core_input(data, fmt, dtype), **options
    )
    t1 = time.perf_counter()
    out = to_keras(new, data_format=fmt, name=None)
    steps = {"export": t_export, **report.steps, "import": time.perf_counter() - t1}
    return out, replace(report, steps=steps, time_s=time.perf_counter() - t0)
