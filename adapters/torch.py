"""PyTorch adapter: ``nn.Module`` chains to :class:`tropref.network.Network` and back.

- :func:`from_torch` reads an ``nn.Sequential`` (nested too) or any ``nn.Module`` whose
  forward is a chain, traced with ``torch.fx``: ``Linear``, ``Conv2d`` (``groups=1``,
  zero padding), ``BatchNorm1d``/``BatchNorm2d`` (running statistics, i.e. eval-mode
  semantics), ``ReLU`` (also ``F.relu``, ``torch.relu``, ``x.relu()``), ``MaxPool2d``,
  ``AvgPool2d`` (also their functional forms; adaptive pooling when the input size, given
  as ``input_shape``, is a multiple of the output size), ``Flatten`` (also ``torch.flatten(x, 1)``,
  ``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``), ``Dropout``, ``Identity``, and a ``Softmax`` over the
  features (``dim=1``). Anything else, and graphs that are
  not a chain (residual additions, concatenations), raise ``ValueError`` naming the layer.
- :func:`to_torch` builds a new ``nn.Sequential`` of plain layers (state_dict round trips).
- :func:`compress` does both around :func:`tropref.compress_network`.

The weights are copied to NumPy arrays: the model given is never modified.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tropref.adapters._reading import Pad, fold_pads, prune, refuse
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
    node_output_shape,
    output_shapes,
    with_flatten_order_everywhere,
)

__all__ = ["from_torch", "to_torch", "compress", "to_numpy_input"]

SUPPORTED = "Linear, Conv2d, BatchNorm1d/2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, Identity, Softmax(dim=1)"


def _torch() -> Any:
    import torch  # the adapter's only framework import: the core never imports torch

    return torch


def _np(t: Any, dtype: Any) -> np.ndarray | None:
    if t is None:
        return None
    return t.detach().cpu().numpy().astype(dtype, copy=True)


def to_numpy_input(x: Any, dtype: Any = np.float64) -> np.ndarray | None:
    """A batch of inputs (tensor or array) as a NumPy array for the core, or None."""
    if x is None:
        return None
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().astype(dtype)
    return np.asarray(x, dtype=dtype)


# --------------------------------------------------------------------------- export


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _convert_module(name: str, m: Any, dtype: Any) -> list:
    nn = _torch().nn
    if isinstance(m, nn.Linear):
        return [Dense(_np(m.weight, dtype), _np(m.bias, dtype), name=name)]
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            raise ValueError(f"layer {name!r}: grouped or depthwise convolution (groups={m.groups}) is not supported")
        if m.padding_mode != "zeros":
            raise ValueError(f"layer {name!r}: padding_mode={m.padding_mode!r} is not supported (only zero padding)")
        kh, kw = m.kernel_size
        if isinstance(m.padding, str):
            if m.padding == "valid":
                pad = (0, 0, 0, 0)
            else:  # "same" (stride 1): PyTorch puts the odd extra pixel at the end
                th, tw = m.dilation[0] * (kh - 1), m.dilation[1] * (kw - 1)
                pad = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            ph, pw = _pair(m.padding)
            pad = (ph, ph, pw, pw)
        return [
            Conv2d(
                _np(m.weight, dtype),
                _np(m.bias, dtype),
                stride=_pair(m.stride),
                padding=pad,
                dilation=_pair(m.dilation),
                name=name,
            )
        ]
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_mean is None:
            raise ValueError(
                f"layer {name!r}: BatchNorm without running statistics (track_running_stats=False) is not supported"
            )
        return [
            BatchNorm(
                _np(m.running_mean, dtype),
                _np(m.running_var, dtype),
                _np(m.weight, dtype),
                _np(m.bias, dtype),
                eps=m.eps,
                name=name,
            )
        ]
    if isinstance(m, nn.ReLU):
        return [ReLU(name=name)]
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
            raise ValueError(f"layer {name!r}: MaxPool2d with dilation, ceil_mode or return_indices is not supported")
        return [_pool(MaxPool2d, m.kernel_size, m.stride, m.padding, name)]
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or m.divisor_override is not None:
            raise ValueError(f"layer {name!r}: AvgPool2d with ceil_mode or divisor_override is not supported")
        return [_pool(AvgPool2d, m.kernel_size, m.stride, m.padding, name, count_include_pad=bool(m.count_include_pad))]
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(
                f"layer {name!r}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) is not supported (only 1, -1)"
            )
        return [Flatten("channels_first", name=name)]
    if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)):
        return [Dropout(float(m.p), name=name)]
    if isinstance(m, nn.Identity):
        return [Identity(name=name)]
    if isinstance(m, nn.Softmax) and m.dim in (1, -1):
        return [Softmax(name=name)]
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return [_Adaptive(isinstance(m, nn.AdaptiveAvgPool2d), m.output_size, name)]
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
        left, right, top, bottom = (int(v) for v in m.padding)
        return [Pad((top, bottom, left, right), float(m.value), name)]
    if isinstance(m, RELU_VARIANTS(nn)):
        raise ValueError(
            f"layer {name!r} ({type(m).__name__}) is a ReLU variant: tropref merges units of max(x, 0) only; "
            "replace it by nn.ReLU (and retrain or fine-tune) to compress this model"
        )
    raise ValueError(f"layer {name!r} ({type(m).__name__}) is not supported by tropref; supported: {SUPPORTED}")


def RELU_VARIANTS(nn: Any) -> tuple:
    """Activations that look like ReLU but are not ``max(x, 0)``: named in the refusals."""
    return (
        nn.ReLU6,
        nn.LeakyReLU,
        nn.PReLU,
        nn.RReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.GELU,
        nn.SiLU,
        nn.Hardswish,
        nn.Hardtanh,
        nn.Mish,
        nn.Softplus,
    )


class _Adaptive:
    """An adaptive pooling, resolved to a fixed one once the input size is known."""

    def __init__(self, average: bool, output_size: Any, name: str) -> None:
        self.average, self.output_size, self.name = average, output_size, name

    @property
    def kind(self) -> str:
        return "AdaptiveAvgPool2d" if self.average else "AdaptiveMaxPool2d"

    def sizes(self, H: int, W: int) -> tuple[int, int]:
        out = self.output_size
        oh, ow = (out, out) if isinstance(out, int) else tuple(out)
        return oh or H, ow or W  # None keeps that size

    def fits(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != 3:
            return False
        oh, ow = self.sizes(shape[1], shape[2])
        return shape[1] % oh == 0 and shape[2] % ow == 0

    def resolve(self, shape: tuple[int, ...] | None, hint: str = "") -> MaxPool2d:
        if shape is None or len(shape) != 3:
            raise ValueError(
                f"layer {self.name!r} ({self.kind}) needs the model's input size: pass `input_shape=(C, H, W)` "
                "(or `inputs=`), an input size for which this layer's input is a multiple of its output size"
            )
        H, W = shape[1], shape[2]
        oh, ow = self.sizes(H, W)
        if H % oh or W % ow:
            raise ValueError(
                f"layer {self.name!r} ({self.kind}): its input is {H}x{W}, not a multiple of the output {oh}x{ow}; "
                f"tropref reads adaptive pooling as a fixed pooling, so the layer's input must be a multiple of "
                f"{oh}x{ow}{hint}"
            )
        k = (H // oh, W // ow)
        return (AvgPool2d if self.average else MaxPool2d)(k, k, 0, name=self.name)


def _pool(cls: type, kernel: Any, stride: Any, padding: Any, name: str, **kw: Any) -> MaxPool2d:
    k = _pair(kernel)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _pair(stride)
    ph, pw = _pair(padding)
    return cls(k, s, (ph, ph, pw, pw), name=name, **kw)


def _arg(node: Any, pos: int, key: str, default: Any) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(key, default)


def _node_inputs(node: Any) -> list:
    fx = _torch().fx
    found: list = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n))
    return found


def _convert_function(node: Any, dtype: Any) -> list | None:
    """A functional call or tensor method as layers."""
    torch = _torch()
    F = torch.nn.functional
    name, target = node.name, node.target
    if node.op == "call_method":
        if target in ("relu", "relu_"):
            return [ReLU(name=name)]
        if target in ("flatten",):
            if _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1:
                return [Flatten(name=name)]
        if target in ("view", "reshape") and _flat_shape(node):
            return [Flatten(name=name)]
        if target == "softmax" and _arg(node, 1, "dim", None) in (1, -1):
            return [Softmax(name=name)]
        if target in ("contiguous",):
            return [Identity(name=name)]
        raise ValueError(f"node {name!r} (tensor method .{target}) is not supported by tropref")
    if target in (F.relu, torch.relu, torch.relu_):
        return [ReLU(name=name)]
    if target is torch.flatten:
        if _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1:
            return [Flatten(name=name)]
        raise ValueError(f"node {name!r}: torch.flatten must flatten from dim 1 to -1")
    if target in (F.max_pool2d,):
        if (
            _arg(node, 4, "dilation", 1) not in (1, (1, 1))
            or _arg(node, 5, "ceil_mode", False)
            or _arg(node, 6, "return_indices", False)
        ):
            raise ValueError(f"node {name!r}: max_pool2d with dilation, ceil_mode or return_indices is not supported")
        return [
            _pool(
                MaxPool2d,
                _arg(node, 1, "kernel_size", None),
                _arg(node, 2, "stride", None),
                _arg(node, 3, "padding", 0),
                name,
            )
        ]
    if target in (F.avg_pool2d,):
        if _arg(node, 4, "ceil_mode", False) or _arg(node, 6, "divisor_override", None) is not None:
            raise ValueError(f"node {name!r}: avg_pool2d with ceil_mode or divisor_override is not supported")
        return [
            _pool(
                AvgPool2d,
                _arg(node, 1, "kernel_size", None),
                _arg(node, 2, "stride", None),
                _arg(node, 3, "padding", 0),
                name,
                count_include_pad=bool(_arg(node, 5, "count_include_pad", True)),
            )
        ]
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        return [_Adaptive(target is F.adaptive_avg_pool2d, _arg(node, 1, "output_size", None), name)]
    if target in (F.softmax, torch.softmax) and _arg(node, 1, "dim", None) in (1, -1):
        return [Softmax(name=name)]
    if target in (F.dropout, F.dropout2d):
        return [Dropout(float(_arg(node, 1, "p", 0.5)), name=name)]
    what = getattr(target, "__name__", str(target))
    if target in (operator.add, operator.iadd, torch.add, torch.cat, torch.stack, operator.mul, torch.mul):
        raise ValueError(
            f"node {name!r} ({what}) combines several tensors: the model is not a chain (residual or "
            "concatenation), which tropref refuses"
        )
    raise ValueError(f"node {name!r} (function {what}) is not supported by tropref")


def _is_shape(node: Any) -> bool:
    """Shape bookkeeping: ``x.size(...)``, ``x.shape`` and items of them."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] == "shape":
        return True
    return (
        node.op == "call_function"
        and node.target is operator.getitem
        and hasattr(node.args[0], "op")
        and _is_shape(node.args[0])
    )


def _is_batch_size(node: Any) -> bool:
    """``x.size(0)``, ``x.shape[0]`` or ``x.size()[0]``."""
    if node.op == "call_method" and node.target == "size":
        return _arg(node, 1, "dim", None) == 0
    return node.op == "call_function" and node.target is operator.getitem and _is_shape(node) and node.args[1] == 0


def _flat_shape(node: Any) -> bool:
    """``x.view(x.size(0), -1)``, ``x.view(-1, d)`` or ``x.reshape(...)`` of the same forms."""
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if len(shape) != 2:
        return False
    first, second = shape
    fx = _torch().fx
    first_ok = first == -1 or (isinstance(first, fx.Node) and _is_batch_size(first))
    return bool(first_ok and (isinstance(second, int)))


def from_torch(model: Any, *, input_shape: Sequence[int] | None = None, dtype: Any = np.float32) -> Network:
    """The network description of a PyTorch model (weights copied to NumPy ``dtype``).

    The model is traced with ``torch.fx``; every call becomes a layer of the graph, a
    residual sum (``out + identity``, ``out += identity``, ``torch.add``) an
    :class:`~tropref.network.Add`, ``torch.cat(..., dim=1)`` a
    :class:`~tropref.network.Concat`. Explicit padding layers (``ZeroPad2d``, and
    ``ConstantPad2d`` of ``-inf`` before a max pooling) are folded into the convolution or
    pooling that reads them. A chain comes back as a chain network.

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` or any module that ``torch.fx`` can trace (torchvision-style
        ResNets with ``BasicBlock``/``Bottleneck`` blocks, pre-activation blocks, ...).
    input_shape : sequence of int, optional
        One sample's shape, ``(d,)`` or ``(C, H, W)``: needed for adaptive pooling, to count
        a convolution's MACs, and to check that every dense layer's input size matches.
    dtype : NumPy dtype
        dtype of the copied weights.

    Raises
    ------
    ValueError
        Listing every obstacle at once, each naming its layer: unsupported layers (ReLU
        variants such as ``ReLU6``, grouped and depthwise convolutions, ...), operations
        tropref cannot read, adaptive pooling whose input size does not fit (with the input
        sizes that do), a dense layer whose input size does not match.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    >>> [type(l).__name__ for l in net]
    ['Dense', 'ReLU', 'Dense']
    """
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:
        raise ValueError(
            f"the model cannot be traced by torch.fx ({type(exc).__name__}: {exc}); write it as an nn.Sequential "
            "or a module whose forward has no data-dependent control flow"
        ) from exc
    layers, inputs, problems, out_index = _read_graph(model, graph, dtype)
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    if out_index is not None and not problems:
        layers = fold_pads(layers, inputs, problems)
    if not problems and out_index is not None:
        _resolve_adaptive(layers, inputs, shape, problems)
    refuse(problems)
    net = prune(layers, inputs, out_index, shape)
    if shape is not None:
        output_shapes(net)  # a dense layer whose input size does not match is named here
    return net


def _read_graph(model: Any, graph: Any, dtype: Any) -> tuple[list, list, list[str], int | None]:
    """The fx graph as layers and inputs (index ``-1``: the model's input), and every
    problem found on the way."""
    torch = _torch()
    layers: list = []
    inputs: list[tuple[int, ...]] = []
    problems: list[str] = []
    index: dict[Any, int] = {}
    out_index = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if -1 in index.values():
                problems.append(f"input {node.name!r}: the model has several inputs; tropref needs one")
            index[node] = -1
            continue
        if node.op == "get_attr":
            problems.append(
                f"node {node.name!r} reads the parameter or buffer {node.target!r} directly; tropref reads layers only"
            )
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node) or result not in index:
                problems.append(f"the output is {result!r}: tropref needs a model with one tensor output")
            else:
                out_index = index[result]
            break
        if _is_shape(node):
            continue  # shape bookkeeping for view/reshape, checked there
        ins = [n for n in _node_inputs(node) if not _is_shape(n)]
        missing = [n for n in ins if n not in index]
        if missing:  # an input that could not be read: already reported
            continue
        try:
            if node.op == "call_function" and node.target in _ADD_FUNCTIONS(torch):
                converted, srcs = _convert_add(node, ins), tuple(index[n] for n in ins)
            elif node.op == "call_function" and node.target is torch.cat:
                converted, srcs = _convert_cat(node, ins), tuple(index[n] for n in ins)
            else:
                if len(ins) != 1:
                    what = node.target if node.op == "call_module" else getattr(node.target, "__name__", node.target)
                    raise ValueError(
                        f"node {node.name!r} ({what}) reads {len(ins)} tensors; tropref reads layers of one input, "
                        "additions and concatenations"
                    )
                converted = (
                    _convert_module(str(node.target), model.get_submodule(node.target), dtype)
                    if node.op == "call_module"
                    else _convert_function(node, dtype)
                )
                srcs = (index[ins[0]],)
        except ValueError as exc:
            problems.append(str(exc))
            converted = [Identity(name=node.name)]  # stands in, so that the layers after it are checked too
            srcs = tuple(index[n] for n in ins[:1])
            if not srcs:
                continue
        for layer in converted:
            layers.append(layer)
            inputs.append(srcs)
            srcs = (len(layers) - 1,)
        index[node] = srcs[0] if converted else index[ins[0]]
    if out_index is not None and out_index < 0 and not problems:
        problems.append("the model returns its input unchanged: there is nothing to compress")
    return layers, inputs, problems, out_index


def _ADD_FUNCTIONS(torch: Any) -> tuple:
    return (operator.add, operator.iadd, torch.add)


def _convert_add(node: Any, ins: list) -> list:
    args = list(node.args) + list(node.kwargs.values())
    if len(ins) != 2 or len(args) != 2 or any(a not in ins for a in args):
        raise ValueError(
            f"node {node.name!r} adds {node.args!r}: tropref reads the sum of two tensors (a residual "
            "connection) only, "
            "not constants or scaled sums"
        )
    return [Add(name=node.name)]


def _convert_cat(node: Any, ins: list) -> list:
    dim = _arg(node, 1, "dim", 0)
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    if dim not in (1, -3) or not isinstance(tensors, (list, tuple)) or len(tensors) < 2 or list(tensors) != ins:
        raise ValueError(
            f"node {node.name!r} (torch.cat, dim={dim}): tropref reads concatenations of two or more tensors "
            "along the channels (dim=1) only"
        )
    return [Concat(name=node.name)]


def _resolve_adaptive(layers: list, inputs: list, shape: tuple[int, ...] | None, problems: list[str]) -> None:
    """Adaptive poolings as fixed ones for the input size ``shape`` (in place)."""
    for p, layer in enumerate(layers):
        if not isinstance(layer, _Adaptive):
            continue
        if shape is None:
            problems.append(
                f"layer {layer.name!r} ({layer.kind}) needs the model's input size: pass `input_shape=(C, H, W)` "
                "(or `inputs=`)"
            )
            continue
        try:
            here = _shape_at(layers, inputs, shape, p)
            layers[p] = layer.resolve(here, "" if layer.fits(here) else _working_sizes(layers, inputs, shape, p, layer))
        except ValueError as exc:
            problems.append(str(exc))
            return  # the shapes after it are unknown


def _shape_at(layers: list, inputs: list, shape: tuple[int, ...], p: int) -> tuple[int, ...]:
    """One sample's input shape of layer ``p`` (adaptive poolings before ``p`` resolved)."""
    outs: list[tuple[int, ...]] = []
    for i in range(p):
        ins = [shape if q < 0 else outs[q] for q in inputs[i]]
        layer = layers[i]
        if isinstance(layer, _Adaptive):
            layer = layer.resolve(ins[0])
        outs.append(node_output_shape(layer, ins))
    (q,) = inputs[p]
    return shape if q < 0 else outs[q]


def _working_sizes(layers: list, inputs: list, shape: tuple[int, ...], p: int, layer: _Adaptive) -> str:
    """A hint naming model input sizes (same channels) for which layer ``p`` fits."""
    if len(shape) != 3:
        return ""
    C, H, W = shape
    first: dict[tuple[int, ...], int] = {}  # layer input -> the smallest square model input giving it
    for size in range(8, 1025):
        try:
            here = _shape_at(layers, inputs, (C, size, size), p)
        except ValueError:
            continue
        oh, ow = layer.sizes(here[1], here[2]) if len(here) == 3 else (0, 0)
        if layer.fits(here) and here[1] >= oh > 0 and here[2] >= ow > 0:
            first.setdefault(here, size)
    if not first:
        return ""
    best = sorted(sorted(first.items(), key=lambda kv: abs(kv[1] - max(H, W)))[:3], key=lambda kv: kv[1])
    sizes = ", ".join(f"input_shape=({C}, {s}, {s}) (the layer then reads {h[1]}x{h[2]})" for h, s in best)
    return f"; the model's input is {H}x{W}: pass an input size that fits, e.g. {sizes}"


# --------------------------------------------------------------------------- import


def to_torch(net: Network, *, dtype: Any = None, device: Any = None) -> Any:
    """A new ``nn.Sequential`` of plain PyTorch layers computing ``net`` (in eval mode).

    Channels-last flattens are turned into PyTorch's channels-first order by permuting the
    next dense layer's columns; asymmetric padding becomes an ``nn.ZeroPad2d`` (or, for max
    pooling, an ``nn.ConstantPad2d`` of ``-inf``) before the layer.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> m = to_torch(Network([Dense(np.ones((2, 3))), ReLU()]))
    >>> m
    Sequential(
      (0): Linear(in_features=3, out_features=2, bias=False)
      (1): ReLU()
    )
    """
    torch = _torch()
    dtype = dtype or torch.float32
    net = with_flatten_order_everywhere(net, "channels_first")
    rank4 = net.input_shape is not None and len(net.input_shape) == 3
    if net.input_shape is None:
        first = next((l for l in net.layers if not isinstance(l, (Dropout, Identity, ReLU, BatchNorm))), None)
        rank4 = isinstance(first, (Conv2d, MaxPool2d, Flatten))
    ranks: dict[int, bool] = {-1: rank4}
    mods: list[list] = []
    with torch.no_grad():
        for i, layer in enumerate(net.layers):
            r4 = ranks[net.sources(i)[0]]
            mods.append(_torch_modules(layer, r4, dtype, device))
            ranks[i] = (r4 or isinstance(layer, (Conv2d, MaxPool2d))) and not isinstance(layer, Flatten)
    if net.is_chain:
        return torch.nn.Sequential(*[m for ms in mods for m in ms]).eval()
    return _graph_module(net, mods)


def _torch_modules(layer: Any, rank4: bool, dtype: Any, device: Any) -> list:
    """The plain PyTorch modules computing one layer (an Add or Concat has none)."""
    torch = _torch()
    nn = torch.nn
    fk = {"dtype": dtype, "device": device}

    def t(a: Any) -> Any:
        from tropref._array import to_numpy

        h = to_numpy(a)  # copied once, by the copy_ below (not here as well)
        return torch.as_tensor(h if h.flags.writeable else np.array(h), dtype=dtype, device=device)

    if isinstance(layer, Dense):
        m = nn.Linear(int(layer.W.shape[1]), layer.units, bias=layer.b is not None, **fk)
        m.weight.copy_(t(layer.W))
        if layer.b is not None:
            m.bias.copy_(t(layer.b))
        return [m]
    if isinstance(layer, Conv2d):
        top, bottom, left, right = layer.padding
        sym = top == bottom and left == right
        pre = [] if sym else [nn.ZeroPad2d((left, right, top, bottom))]
        O, C, kh, kw = (int(s) for s in layer.W.shape)
        m = nn.Conv2d(
            C,
            O,
            (kh, kw),
            stride=layer.stride,
            padding=(top, left) if sym else 0,
            dilation=layer.dilation,
            bias=layer.b is not None,
            **fk,
        )
        m.weight.copy_(t(layer.W))
        if layer.b is not None:
            m.bias.copy_(t(layer.b))
        return [*pre, m]
    if isinstance(layer, BatchNorm):
        m = (nn.BatchNorm2d if rank4 else nn.BatchNorm1d)(layer.channels, eps=layer.eps, **fk)
        m.running_mean.copy_(t(layer.mean))
        m.running_var.copy_(t(layer.var))
        if layer.weight is not None:
            m.weight.copy_(t(layer.weight))
        if layer.bias is not None:
            m.bias.copy_(t(layer.bias))
        return [m]
    if isinstance(layer, ReLU):
        return [nn.ReLU()]
    if isinstance(layer, MaxPool2d):
        return _torch_pool(nn, layer)
    if isinstance(layer, Flatten):
        return [nn.Flatten()]
    if isinstance(layer, Dropout):
        return [nn.Dropout(layer.rate)]
    if isinstance(layer, Softmax):
        return [nn.Softmax(dim=1)]
    if isinstance(layer, (Add, Concat)):
        return []
    return [nn.Identity()]


def _graph_module(net: Network, mods: list[list]) -> Any:
    """A ``torch.fx.GraphModule`` running the layers' modules along the network's graph."""
    torch = _torch()
    fx = torch.fx
    root = torch.nn.Module()
    graph = fx.Graph()
    values: dict[int, Any] = {-1: graph.placeholder("x")}
    used: set[str] = set()
    for i, (layer, ms) in enumerate(zip(net.layers, mods, strict=False)):
        srcs = [values[p] for p in net.sources(i)]
        if isinstance(layer, Add):
            v = srcs[0]
            for other in srcs[1:]:
                v = graph.call_function(operator.add, (v, other))
        elif isinstance(layer, Concat):
            v = graph.call_function(torch.cat, (srcs, 1))
        else:
            v = srcs[0]
            for m in ms:
                name = _module_name(getattr(layer, "name", None) or f"layer{i}", used)
                root.add_module(name, m)
                v = graph.call_module(name, (v,))
        values[i] = v
    graph.output(values[len(net.layers) - 1])
    return fx.GraphModule(root, graph, class_name="TroprefGraph").eval()


def _module_name(name: str, used: set[str]) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name)) or "layer"
    if base[0].isdigit():
        base = "m" + base
    out, n = base, 1
    while out in used:
        n += 1
        out = f"{base}_{n}"
    used.add(out)
    return out


def _torch_pool(nn: Any, layer: MaxPool2d) -> list:
    top, bottom, left, right = layer.padding
    sym = top == bottom and left == right and 2 * top <= layer.kernel[0] and 2 * left <= layer.kernel[1]
    is_avg = isinstance(layer, AvgPool2d)
    pre: list = []
    if layer.padded and not sym:
        if is_avg and not layer.count_include_pad:
            raise ValueError(f"AvgPool2d {layer.name!r}: asymmetric padding without counting it has no PyTorch layer")
        pre = [nn.ConstantPad2d((left, right, top, bottom), 0.0 if is_avg else float("-inf"))]
    pad = (top, left) if sym else 0
    if is_avg:
        return [*pre, nn.AvgPool2d(layer.kernel, layer.stride, pad, count_include_pad=layer.count_include_pad)]
    return [*pre, nn.MaxPool2d(layer.kernel, layer.stride, pad)]


# --------------------------------------------------------------------------- one call


def compress(
    model: Any,
    keep: Any = 0.5,
    method: str = "tropnnc",
    seed: int | None = 0,
    *,
    input_shape: Sequence[int] | None = None,
    inputs: Any = None,
    data: Any = None,
    dtype: Any = None,
    **options: Any,
) -> tuple[Any, NetworkReport]:
    """Compress a PyTorch chain model; returns a new ``nn.Sequential`` and the report.

    The model is read with :func:`from_torch` (weights copied, in ``dtype`` for the
    computation: by default the model's own floating dtype, float32 for float32, float16
    and bfloat16 models; ``dtype=np.float64`` computes in double precision), compressed by
    :func:`tropref.compress_network` with ``keep``, ``method``,
    ``seed`` and every other option (``skip``, ``input_radius``, ``progress``, ``data``,
    method options...), and written back with :func:`to_torch` in the model's own dtype and
    device. ``inputs`` (a tensor or array, NCHW) are used to measure the error and as the
    certificate's input domain; their shape gives ``input_shape`` when it is not passed.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> small, report = compress(model, keep=0.5, inputs=torch.randn(32, 4))
    >>> small[0].out_features
    8
    """
    torch = _torch()
    t0 = time.perf_counter()
    if inputs is not None and input_shape is None:
        input_shape = tuple(inputs.shape[1:])
    if data is not None and input_shape is None:
        input_shape = tuple(data.shape[1:])
    params = list(model.parameters())
    out_dtype = params[0].dtype if params else torch.float32
    out_device = params[0].device if params else None
    if dtype is None:  # the model's own precision (the core computes in float32 or float64)
        dtype = np.float64 if out_dtype == torch.float64 else np.float32
    net = from_torch(model, input_shape=input_shape, dtype=dtype)
    t_export = time.perf_counter() - t0
    new, report = compress_network(
        net,
        keep,
        method=method,
        seed=seed,
        inputs=to_numpy_input(inputs, dtype),
        data=to_numpy_input(data, dtype),
        **options,
    )
    t1 = time.perf_counter()
    out = to_torch(new, dtype=out_dtype, device=out_device)
    steps = {"export": t_export, **report.steps, "import": time.perf_counter() - t1}
    return out, replace(report, steps=steps, time_s=time.perf_counter() - t0)
