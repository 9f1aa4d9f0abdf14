"""PyTorch adapter: ``nn.Module`` chains to :class:`tropref.network.Network` and back.

- :func:`from_torch` reads an ``nn.Sequential`` (nested too) or any ``nn.Module`` whose
  forward is a chain, traced with ``torch.fx``: ``Linear``, ``Conv2d`` (``groups=1``,
  zero padding), ``BatchNorm1d``/``BatchNorm2d`` (running statistics, i.e. eval-mode
  semantics), ``ReLU`` (also ``F.relu``, ``torch.relu``, ``x.relu()``), ``MaxPool2d``,
  ``AvgPool2d`` (also their functional forms; adaptive pooling when the input size, given
  as ``input_shape``, is a multiple of the output size; ``ceil_mode`` max pooling, with the
  input size, as extra ``-inf`` padding), ``Flatten`` (also ``torch.flatten(x, 1)``,
  ``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``), ``Dropout``, ``Identity``, and a ``Softmax`` over the
  features (``dim=1``). Anything else, and graphs that are
  not a chain (residual additions, concatenations), raise ``ValueError`` naming the layer.
- :func:`to_torch` builds a new model of plain layers: an ``nn.Sequential`` for a chain, a
  ``torch.fx.GraphModule`` (class ``TroprefGraph``) for a graph.
- :func:`compress` reads, compresses with :func:`tropref.compress_network`, and returns a
  deep copy of the user's own module with its layers resized in place (its ``state_dict``
  keys kept), falling back to :func:`to_torch` where the module tree cannot carry the result;
  :func:`load_compressed` rebuilds the compressed shapes on a fresh instance from a saved
  ``state_dict``.

The weights are copied to NumPy arrays: the model given is never modified.
"""

from __future__ import annotations

import copy
import operator
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from tropref._array import to_numpy
from tropref.adapters._adaptive import AdaptivePool, CeilPool, resolve_adaptive
from tropref.adapters._graph import run_graph, writer
from tropref.adapters._in_place import NotInPlace, Slot, in_place_arrays, own_or_rebuilt, unit_moments
from tropref.adapters._layout import core_batch, core_dtype, host_copy
from tropref.adapters._padding import explicit_padding, from_lrtb, pair, symmetric, to_lrtb
from tropref.adapters._reading import Pad, append, finish_reading
from tropref.adapters._refusals import (
    grouped_convolution,
    not_plain,
    overrides,
    reads_several,
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

__all__ = ["from_torch", "to_torch", "compress", "load_compressed", "to_core_input"]

_Read = Callable[[Any], "np.ndarray | None"]
"""How the reader turns a module's tensor (or None) into the NumPy array of a core layer."""

_SUPPORTED = "Linear, Conv2d, BatchNorm1d/2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, Identity, Softmax(dim=1)"


def _torch() -> Any:
    import torch  # the adapter's only framework import: the core never imports torch

    return torch


def to_core_input(x: Any, dtype: Any = np.float64) -> np.ndarray | None:
    """A batch of inputs (tensor or array, NCHW) as a NumPy array for the core, or None.

    Examples
    --------
    >>> import torch
    >>> to_core_input(torch.ones(2, 3)).dtype
    dtype('float64')
    """
    return core_batch(x, "channels_first", dtype)


# --------------------------------------------------------------------------- export


def _plain_classes() -> tuple:
    """The module classes :func:`_convert_module` reads, whose own ``forward`` it assumes."""
    nn = _torch().nn
    return tuple(getattr(nn, n) for n in _CONVERTERS)


def _tracer() -> Any:
    """A ``torch.fx`` tracer that keeps subclasses of the supported layers as layers (not
    traced through), so that :func:`_not_plain` can tell whether they change ``forward``."""
    torch = _torch()
    plain = _plain_classes()

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return isinstance(m, plain) or super().is_leaf_module(m, qualname)

    return Tracer()


def _not_plain(model: Any) -> list[str]:
    """Every module whose computation is not the plain one the reader assumes: forward
    hooks and pre-hooks (the module's own and global ones), a ``forward`` set on the
    instance, subclasses of a supported layer that define ``forward`` anew."""
    torch = _torch()
    problems = []
    glob = torch.nn.modules.module
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        if getattr(glob, kind, None):
            problems.append(
                f"every layer: a global forward {'pre-' if 'pre' in kind else ''}hook is registered "
                "(torch.nn.modules.module.register_module_forward_"
                f"{'pre_' if 'pre' in kind else ''}hook), which changes what every module computes; remove it "
                "(handle.remove()) to compress this model"
            )
    plain = _plain_classes()
    for name, m in model.named_modules():
        name = name or None  # the model itself
        kinds = [
            k
            for k, a in (("forward hook", "_forward_hooks"), ("forward pre-hook", "_forward_pre_hooks"))
            if getattr(m, a, None)
        ]
        if kinds:
            problems.append(not_plain(name, type(m).__name__, "has a " + " and a ".join(kinds), _hook_fix(m)))
        if "forward" in vars(m) or "__call__" in vars(m):
            problems.append(not_plain(name, type(m).__name__, "has its own forward set on the instance", "delete it"))
        base = next((c for c in type(m).__mro__ if c in plain), None)
        if base is not None and type(m) is not base:
            changed = overrides(type(m), base, ["forward", "__call__", "_call_impl"])
            if changed:
                problems.append(
                    not_plain(
                        name,
                        f"{type(m).__name__}, a subclass of {base.__name__}",
                        f"defines {', '.join(changed)} anew",
                        f"use nn.{base.__name__} itself, and write the extra computation as layers",
                    )
                )
    return problems


# hooks PyTorch's own utilities install, and how to make what they do part of the weights
_HOOK_FIXES = {
    "torch.nn.utils.prune": "make the pruning permanent first (torch.nn.utils.prune.remove(module, 'weight'))",
    "torch.nn.utils.weight_norm": "fold it into the weight first (torch.nn.utils.remove_weight_norm(module))",
    "torch.nn.utils.spectral_norm": "fold it into the weight first (torch.nn.utils.remove_spectral_norm(module))",
}


def _hook_fix(m: Any) -> str:
    """What to do about the hooks of module ``m``."""
    hooks = [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    for h in hooks:
        for where, fix in _HOOK_FIXES.items():
            if type(h).__module__.startswith(where):
                return fix
    return "remove it (handle.remove()) or write what it does as layers"


def _meta_tensors(model: Any) -> list[str]:
    """Parameters and buffers without values (on the ``meta`` device), by name."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [n for n, t in tensors if getattr(t, "is_meta", False)]


def _shared_weight(x: Any, dtype: Any) -> np.ndarray | None:
    """A read-only NumPy view of tensor ``x``'s own memory when it is a CPU tensor of NumPy
    ``dtype`` (else a copy, :func:`host_copy`); None stays None.

    :func:`compress` reads the model this way: the core never writes into its inputs (its
    tests give it read-only arrays), the model is not modified during the call, and the
    layers written back are new tensors. A copy of every weight is fresh memory, which the
    first touch makes costly: VGG-16's 553 MB took 1.2 s to copy (docs/performance.md).
    """
    numpy_of = {"torch.float32": np.float32, "torch.float64": np.float64}
    if x is not None and getattr(x, "is_cpu", False) and numpy_of.get(str(x.dtype)) == np.dtype(dtype):
        view = x.detach().numpy().view()
        view.flags.writeable = False
        return view
    return host_copy(x, dtype)


def _linear(name: str, m: Any, read: _Read) -> list:
    return [Dense(read(m.weight), read(m.bias), name=name)]


def _conv2d(name: str, m: Any, read: _Read) -> list:
    if m.groups != 1:
        raise ValueError(grouped_convolution(name, m.groups))
    if m.padding_mode != "zeros":
        raise ValueError(f"layer {name!r}: padding_mode={m.padding_mode!r} is not supported (only zero padding)")
    if isinstance(m.padding, str):  # PyTorch has "same" at stride 1 only: the input size does not matter
        pad = explicit_padding(m.padding, None, m.kernel_size, m.stride, m.dilation, name)
    else:
        ph, pw = pair(m.padding)
        pad = (ph, ph, pw, pw)
    return [
        Conv2d(
            read(m.weight),
            read(m.bias),
            stride=pair(m.stride),
            padding=pad,
            dilation=pair(m.dilation),
            name=name,
        )
    ]


def _batchnorm(name: str, m: Any, read: _Read) -> list:
    if m.running_mean is None:
        raise ValueError(
            f"layer {name!r}: BatchNorm without running statistics (track_running_stats=False) is not supported"
        )
    return [
        BatchNorm(
            read(m.running_mean),
            read(m.running_var),
            read(m.weight),
            read(m.bias),
            eps=m.eps,
            name=name,
        )
    ]


def _relu(name: str, m: Any, read: _Read) -> list:
    return [ReLU(name=name)]


def _max_pool(name: str, m: Any, read: _Read) -> list:
    if pair(m.dilation) != (1, 1) or m.return_indices:
        raise ValueError(
            f"layer {name!r}: MaxPool2d with dilation or return_indices is not supported "
            "(use dilation=1, return_indices=False)"
        )
    return [_pool(MaxPool2d, m.kernel_size, m.stride, m.padding, name, ceil=bool(m.ceil_mode))]


def _avg_pool(name: str, m: Any, read: _Read) -> list:
    if m.ceil_mode or m.divisor_override is not None:
        raise ValueError(
            f"layer {name!r}: AvgPool2d with ceil_mode or divisor_override is not supported "
            "(its divisor at the border is not a padding; use ceil_mode=False, divisor_override=None)"
        )
    return [_pool(AvgPool2d, m.kernel_size, m.stride, m.padding, name, count_include_pad=bool(m.count_include_pad))]


def _flatten(name: str, m: Any, read: _Read) -> list:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ValueError(
            f"layer {name!r}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) is not supported (only 1, -1)"
        )
    return [Flatten("channels_first", name=name)]


def _dropout(name: str, m: Any, read: _Read) -> list:
    return [Dropout(float(m.p), name=name)]


def _identity(name: str, m: Any, read: _Read) -> list:
    return [Identity(name=name)]


def _softmax(name: str, m: Any, read: _Read) -> list:
    if m.dim not in (1, -1):
        raise ValueError(unsupported(name, type(m).__name__, _SUPPORTED))
    return [Softmax(name=name)]


def _adaptive_pool(name: str, m: Any, read: _Read) -> list:
    return [AdaptivePool(isinstance(m, _torch().nn.AdaptiveAvgPool2d), m.output_size, name)]


def _constant_pad(name: str, m: Any, read: _Read) -> list:
    return [Pad(from_lrtb(m.padding), float(m.value), name)]


_CONVERTERS: dict[str, Callable[[str, Any, _Read], list]] = {
    "Linear": _linear,
    "Conv2d": _conv2d,
    "BatchNorm1d": _batchnorm,
    "BatchNorm2d": _batchnorm,
    "ReLU": _relu,
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "Flatten": _flatten,
    "Dropout": _dropout,
    "Dropout1d": _dropout,
    "Dropout2d": _dropout,
    "AlphaDropout": _dropout,
    "Identity": _identity,
    "Softmax": _softmax,
    "AdaptiveAvgPool2d": _adaptive_pool,
    "AdaptiveMaxPool2d": _adaptive_pool,
    "ZeroPad2d": _constant_pad,
    "ConstantPad2d": _constant_pad,
}
"""The one table of the PyTorch module reader: a ``torch.nn`` class name -> the function
giving its core layers (``(name, module, read)``, ``read`` the weight reader of
:func:`_from_torch`). A module is converted by the first entry
it is an instance of (a subclass by its base's), in this order; the ReLU variants
(``LeakyReLU``, ``GELU``, ...) are refused, everything else is unsupported. Adding a
PyTorch module type adds an entry here (:func:`_plain_classes` follows)."""


def _convert_module(name: str, m: Any, read: _Read) -> list:
    nn = _torch().nn
    for cls_name, convert in _CONVERTERS.items():
        if isinstance(m, getattr(nn, cls_name)):
            return convert(name, m, read)
    # found by name, not listed: no ReLU variant is a subclass of a listed class
    if isinstance(m, relu_variant_classes(nn)):
        raise ValueError(relu_variant(name, type(m).__name__, "nn.ReLU"))
    raise ValueError(unsupported(name, type(m).__name__, _SUPPORTED))


def _pool(cls: type, kernel: Any, stride: Any, padding: Any, name: str, ceil: bool = False, **kw: Any) -> Any:
    """The core pooling of PyTorch's arguments; with ``ceil`` (a max pooling's
    ``ceil_mode=True``) a :class:`CeilPool`, whose extra padding waits for the input size."""
    k = pair(kernel)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else pair(stride)
    ph, pw = pair(padding)
    if ceil:
        return CeilPool(k, s, (ph, pw), name)
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


def _convert_function(node: Any) -> list | None:
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
        if _arg(node, 4, "dilation", 1) not in (1, (1, 1)) or _arg(node, 6, "return_indices", False):
            raise ValueError(
                f"node {name!r}: max_pool2d with dilation or return_indices is not supported "
                "(use dilation=1, return_indices=False)"
            )
        return [
            _pool(
                MaxPool2d,
                _arg(node, 1, "kernel_size", None),
                _arg(node, 2, "stride", None),
                _arg(node, 3, "padding", 0),
                name,
                ceil=bool(_arg(node, 5, "ceil_mode", False)),
            )
        ]
    if target in (F.avg_pool2d,):
        if _arg(node, 4, "ceil_mode", False) or _arg(node, 6, "divisor_override", None) is not None:
            raise ValueError(
                f"node {name!r}: avg_pool2d with ceil_mode or divisor_override is not supported "
                "(its divisor at the border is not a padding; use ceil_mode=False, divisor_override=None)"
            )
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
        return [AdaptivePool(target is F.adaptive_avg_pool2d, _arg(node, 1, "output_size", None), name)]
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
        variants such as ``ReLU6``, grouped and depthwise convolutions, ...), layers whose
        computation is not the plain one (forward hooks and pre-hooks, global hooks,
        subclasses that define ``forward`` anew), operations tropref cannot read, adaptive
        pooling whose input size does not fit (with the input sizes that do), a dense layer
        whose input size does not match; parameters on the ``meta`` device.
    TypeError
        When ``model`` is not a ``torch.nn.Module``.

    Warns
    -----
    UserWarning
        When ``model`` is in training mode and has a BatchNorm or dropout: it is read as in
        eval mode (running statistics, no dropout), which is what its compressed copy computes.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    >>> [type(l).__name__ for l in net]
    ['Dense', 'ReLU', 'Dense']
    """
    return _from_torch(model, input_shape, partial(host_copy, dtype=dtype))


def _from_torch(model: Any, input_shape: Sequence[int] | None, read: _Read) -> Network:
    """:func:`from_torch` with the weights read by ``read``: copied (:func:`host_copy`), or
    shared read-only by :func:`compress` (:func:`_shared_weight`)."""
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    meta = _meta_tensors(model)
    if meta:
        raise ValueError(
            f"`model` has parameters on the meta device, without values ({', '.join(meta[:5])}"
            f"{', ...' if len(meta) > 5 else ''}): load its weights first (model.to_empty(device='cpu'), "
            "then load_state_dict)"
        )
    nn = _torch().nn
    mode_dependent = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)  # what train() and eval() compute differently
    if model.training and any(isinstance(m, mode_dependent) for m in model.modules()):
        warnings.warn(
            f"`model` ({type(model).__name__}) is in training mode; tropref reads it as in eval mode (BatchNorm "
            "running statistics, dropout off), which is what it compresses: call model.eval() first to say so",
            UserWarning,
            stacklevel=3,
        )
    try:
        graph = _tracer().trace(model)
    except Exception as exc:
        raise ValueError(
            f"the model cannot be traced by torch.fx ({type(exc).__name__}: {exc}); write it as an nn.Sequential "
            "or a module whose forward has no data-dependent control flow"
        ) from exc
    layers, inputs, problems, out_index = _read_graph(model, graph, read)
    problems = _not_plain(model) + problems
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    return finish_reading(layers, inputs, out_index, shape, problems, partial(resolve_adaptive, shape))


def _read_graph(model: Any, graph: Any, read: _Read) -> tuple[list, list, list[str], int | None]:
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
                problems.append(several_inputs(node.name))
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
                    joins = "additions and concatenations"
                    raise ValueError(reads_several(f"node {node.name!r}", what, len(ins), joins))
                converted = (
                    _convert_module(str(node.target), model.get_submodule(node.target), read)
                    if node.op == "call_module"
                    else _convert_function(node)
                )
                srcs = (index[ins[0]],)
        except ValueError as exc:
            problems.append(str(exc))
            converted = [Identity(name=node.name)]  # stands in, so that the layers after it are checked too
            srcs = tuple(index[n] for n in ins[:1])
            if not srcs:
                continue
        index[node] = append(layers, inputs, converted, srcs)
    if out_index is not None and out_index < 0 and not problems:
        problems.append(returns_input())
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
    if not isinstance(tensors, (list, tuple)) or not tensors or list(tensors) != ins:
        raise ValueError(
            f"node {node.name!r} (torch.cat): tropref reads concatenations of a list of tensors, each the output "
            "of a layer, only"
        )
    if len(tensors) == 1:  # the identity, whatever the dim (torchvision's DenseNet concatenates [x] first)
        return [Identity(name=node.name)]
    if dim not in (1, -3):
        raise ValueError(
            f"node {node.name!r} (torch.cat, dim={dim}): tropref reads concatenations along the channels (dim=1) only"
        )
    return [Concat(name=node.name)]


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
    return writer(_WRITERS, layer, "PyTorch")(_torch().nn, layer, _Writing(rank4, dtype, device))


@dataclass(frozen=True)
class _Writing:
    """What a writer needs besides the layer: whether its input is 4-D, the tensors' dtype and device."""

    rank4: bool
    dtype: Any
    device: Any

    def tensor(self, a: Any) -> Any:
        h = to_numpy(a)  # copied once, by the copy_ below (not here as well)
        return _torch().as_tensor(h if h.flags.writeable else np.array(h), dtype=self.dtype, device=self.device)

    def load(self, m: Any, **arrays: Any) -> Any:
        """``m`` with each of its parameters or buffers named in ``arrays`` (not None) copied
        in; a parameter :meth:`empty` left on the meta device becomes a copy of its array."""
        torch = _torch()
        for field, a in arrays.items():
            if a is None:
                continue
            current = getattr(m, field)
            if current.is_meta:
                device = "cpu" if self.device is None else self.device
                value = torch.empty(tuple(current.shape), dtype=self.dtype, device=device).copy_(self.tensor(a))
                setattr(m, field, torch.nn.Parameter(value, requires_grad=current.requires_grad))
            else:
                current.copy_(self.tensor(a))
        return m

    def empty(self, module: type, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)`` with its parameters on the meta device (no memory, no
        values): :meth:`load` gives every one of them its array. The random initialisation
        would cost about as much as the copy (a quarter of a second on VGG-16), and
        ``skip_init``'s ``to_empty`` imports SymPy on first use (half a second)."""
        return module(*args, dtype=self.dtype, device="meta", **kwargs)


def _write_dense(nn: Any, layer: Dense, w: _Writing) -> list:
    m = w.empty(nn.Linear, int(layer.W.shape[1]), layer.units, bias=layer.b is not None)
    return [w.load(m, weight=layer.W, bias=layer.b)]


def _write_conv(nn: Any, layer: Conv2d, w: _Writing) -> list:
    sym = symmetric(layer.padding)
    pre = [] if sym else [nn.ZeroPad2d(to_lrtb(layer.padding))]
    O, C, kh, kw = (int(s) for s in layer.W.shape)
    m = w.empty(
        nn.Conv2d,
        C,
        O,
        (kh, kw),
        stride=layer.stride,
        padding=sym or 0,
        dilation=layer.dilation,
        bias=layer.b is not None,
    )
    return [*pre, w.load(m, weight=layer.W, bias=layer.b)]


def _write_batchnorm(nn: Any, layer: BatchNorm, w: _Writing) -> list:
    m = (nn.BatchNorm2d if w.rank4 else nn.BatchNorm1d)(layer.channels, eps=layer.eps, dtype=w.dtype, device=w.device)
    return [w.load(m, running_mean=layer.mean, running_var=layer.var, weight=layer.weight, bias=layer.bias)]


# tropref layer type -> the PyTorch modules computing it (the other direction: _CONVERTERS)
_WRITERS: dict[type, Callable[[Any, Any, _Writing], list]] = {
    Dense: _write_dense,
    Conv2d: _write_conv,
    BatchNorm: _write_batchnorm,
    ReLU: lambda nn, layer, w: [nn.ReLU()],
    MaxPool2d: lambda nn, layer, w: _torch_pool(nn, layer),  # and AvgPool2d, a subclass
    Flatten: lambda nn, layer, w: [nn.Flatten()],
    Dropout: lambda nn, layer, w: [nn.Dropout(layer.rate)],
    Softmax: lambda nn, layer, w: [nn.Softmax(dim=1)],
    Identity: lambda nn, layer, w: [nn.Identity()],  # and the walk's folded BatchNorms
    Add: lambda nn, layer, w: [],  # junctions are nodes of the graph module, not modules
    Concat: lambda nn, layer, w: [],
}


def _graph_module(net: Network, mods: list[list]) -> Any:
    """A ``torch.fx.GraphModule`` running the layers' modules along the network's graph."""
    torch = _torch()
    fx = torch.fx
    root = torch.nn.Module()
    graph = fx.Graph()
    used: set[str] = set()

    def step(i: int, srcs: list) -> Any:
        layer = net.layers[i]
        if isinstance(layer, Add):
            v = srcs[0]
            for other in srcs[1:]:
                v = graph.call_function(operator.add, (v, other))
            return v
        if isinstance(layer, Concat):
            return graph.call_function(torch.cat, (srcs, 1))
        v = srcs[0]
        for m in mods[i]:
            name = _module_name(getattr(layer, "name", None) or f"layer{i}", used)
            root.add_module(name, m)
            v = graph.call_module(name, (v,))
        return v

    graph.output(run_graph(net, graph.placeholder("x"), step))
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
    sym = symmetric(layer.padding)
    if sym and (2 * sym[0] > layer.kernel[0] or 2 * sym[1] > layer.kernel[1]):
        sym = None  # PyTorch's pooling pads at most half its kernel
    is_avg = isinstance(layer, AvgPool2d)
    pre: list = []
    if layer.padded and not sym:
        if is_avg and not layer.count_include_pad:
            raise ValueError(f"AvgPool2d {layer.name!r}: asymmetric padding without counting it has no PyTorch layer")
        pre = [nn.ConstantPad2d(to_lrtb(layer.padding), 0.0 if is_avg else float("-inf"))]
    pad = sym or 0
    if is_avg:
        return [*pre, nn.AvgPool2d(layer.kernel, layer.stride, pad, count_include_pad=layer.count_include_pad)]
    return [*pre, nn.MaxPool2d(layer.kernel, layer.stride, pad)]


# --------------------------------------------------------------------------- one call


def compress(
    model: Any,
    keep: Any = 0.5,
    method: str = "tropnnc",
    seed: int | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    inputs: Any = None,
    data: Any = None,
    dtype: Any = None,
    in_place: bool = False,
    **options: Any,
) -> tuple[Any, NetworkReport]:
    """Compress a PyTorch model; returns the compressed model and the report.

    By default (``in_place=False``, for now) the result is the rebuilt model of
    :func:`to_torch`. With ``in_place=True`` it is a ``copy.deepcopy`` of ``model`` itself:
    same class, same attribute names, same ``forward``, with every ``Linear``, ``Conv2d``
    and ``BatchNorm1d/2d`` whose width changed resized in place (its parameters and
    buffers replaced by the compressed ones), so
    ``small.state_dict()`` has the original's keys at smaller shapes and
    :func:`load_compressed` rebuilds it on a fresh instance. A BatchNorm that the compression
    folded into the layer before it stays in the copy with the compressed units' estimated
    statistics (``running_mean``, ``running_var`` from its members' BatchNorm, ``weight =
    sqrt(running_var + eps)``, ``bias`` the mean), carrying the folded bias when that layer
    has none: ``bn(conv(x))`` is the compressed layer in eval mode (to rounding), and in
    training mode it normalises by the batch and restores the units' own mean and spread.
    Where no statistics are known (a coupled group's layers) it is an exact identity
    (``running_mean`` 0, ``weight`` 1, ``running_var + eps == 1`` in the model's dtype).
    The copy is checked against the compressed network by a forward pass on two seeded
    inputs (when the input shape is known).

    Where the tree cannot carry the compressed network (a layer called several times, a
    ``forward`` that does not fit the new widths, such as a hard-coded ``x.view(-1, 400)``),
    the result is the rebuilt model of :func:`to_torch` (an ``nn.Sequential`` for a chain, a
    ``torch.fx.GraphModule`` of class ``TroprefGraph`` for a graph), with a ``UserWarning`` and
    a note in ``report.notes`` saying why.

    The model is read as by :func:`from_torch` (in ``dtype`` for the computation: by
    default the model's own floating dtype, float32 for float32, float16 and bfloat16
    models; ``dtype=np.float64`` computes in double precision; CPU weights already in that
    dtype are read in place, read-only, not copied), compressed by
    :func:`tropref.compress_network` with ``keep``, ``method``,
    ``seed`` and every other option (``skip``, ``input_radius``, ``progress``, ``data``,
    method options...), and written back in the model's own dtype and device (the original
    is never modified). ``inputs`` (a tensor or array, NCHW) are used to measure the error and as the
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
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    t0 = time.perf_counter()
    if inputs is not None and input_shape is None:
        input_shape = tuple(inputs.shape[1:])
    if data is not None and input_shape is None:
        input_shape = tuple(data.shape[1:])
    params = list(model.parameters())
    out_dtype = params[0].dtype if params else torch.float32
    out_device = params[0].device if params else None
    if dtype is None:  # the model's own precision
        dtype = core_dtype([out_dtype])
    net = _from_torch(model, input_shape, partial(_shared_weight, dtype=dtype))  # the weights shared, not copied
    t_export = time.perf_counter() - t0
    new, report = compress_network(
        net,
        keep,
        method=method,
        seed=seed,
        inputs=to_core_input(inputs, dtype),
        data=to_core_input(data, dtype),
        model_name=options.pop("model_name", type(model).__name__),
        **options,
    )
    notes: list[str] = []

    def write(new: Network) -> Any:
        def rebuild() -> Any:
            return to_torch(new, dtype=out_dtype, device=out_device)

        if not in_place:
            return rebuild()
        return own_or_rebuilt(
            lambda: _in_place(model, net, new, dtype, unit_moments(report)),
            rebuild,
            notes,
            "the model was rebuilt as plain layers, not resized in place",
        )

    small, report = write_back(new, report, write, t0, t_export)
    return small, replace(report, notes=(*report.notes, *notes))


# --------------------------------------------------------------------------- the user's own module


def _slots(model: Any) -> dict[str, Slot]:
    """The model's dense, convolutional and BatchNorm layers by module path."""
    nn = _torch().nn
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[name] = Slot("dense", m.bias is not None)
        elif isinstance(m, nn.Conv2d):
            out[name] = Slot("conv", m.bias is not None)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out[name] = Slot("batchnorm", m.weight is not None)
    return out


def _unit_var(eps: float, dtype: Any) -> float:
    """A variance ``v`` for which PyTorch's eval-mode BatchNorm of ``eps`` is exactly the
    identity in ``dtype`` (``v + eps`` rounds to 1): ``1 - eps`` nudged until it does."""
    torch = _torch()
    F = torch.nn.functional
    x = torch.linspace(-3.0, 3.0, 97, dtype=torch.float64).to(dtype).reshape(1, -1)
    v = torch.tensor([1.0 - eps], dtype=dtype)
    one = torch.ones(1, dtype=dtype)
    for _ in range(64):
        y = F.batch_norm(x.T, torch.zeros(1, dtype=dtype), v, one, torch.zeros(1, dtype=dtype), False, 0.0, eps)
        if torch.equal(y.T, x):
            return float(v)
        v = torch.nextafter(v, one + 1) if float(v) + eps < 1 else torch.nextafter(v, -one)
    return 1.0 - eps  # pragma: no cover - every float dtype reaches 1 within a few steps


def _resize(model: Any, state: Any) -> None:
    """Every ``Linear``, ``Conv2d`` and ``BatchNorm1d/2d`` of ``model`` resized, in place, to the
    shapes of its entries in ``state`` (a bias added or removed as ``state`` has one). The
    module objects stay (their class, hyper-parameters and attribute names); their parameters
    and buffers are new tensors of the new shapes, on the module's device and dtype."""
    torch = _torch()
    nn = torch.nn
    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        if isinstance(m, (nn.Linear, nn.Conv2d)) and f"{p}weight" in state:
            shape = tuple(state[f"{p}weight"].shape)
            if isinstance(m, nn.Linear):
                if len(shape) != 2:
                    raise ValueError(f"`state_dict`: {p}weight has shape {shape}; Linear {name!r} needs (out, in)")
                m.out_features, m.in_features = shape
            else:
                if len(shape) != 4 or shape[2:] != tuple(m.kernel_size):
                    raise ValueError(
                        f"`state_dict`: {p}weight has shape {shape}; Conv2d {name!r} has kernel {tuple(m.kernel_size)}"
                    )
                m.out_channels, m.in_channels = shape[0], shape[1] * m.groups
            _new_param(m, "weight", shape)
            if f"{p}bias" in state:
                _new_param(m, "bias", (shape[0],))
            else:
                m.register_parameter("bias", None)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and f"{p}running_mean" in state:
            c = int(state[f"{p}running_mean"].shape[0])
            m.num_features = c
            for f in ("running_mean", "running_var"):
                setattr(m, f, torch.empty(c, dtype=getattr(m, f).dtype, device=getattr(m, f).device))
            if m.weight is not None:
                _new_param(m, "weight", (c,))
                _new_param(m, "bias", (c,))


def _new_param(m: Any, what: str, shape: tuple) -> None:
    torch = _torch()
    ref = m.weight
    old = getattr(m, what)
    if old is not None and tuple(old.shape) == tuple(shape):
        return
    grad = ref.requires_grad if old is None else old.requires_grad
    t = torch.empty(shape, dtype=ref.dtype, device=ref.device)
    setattr(m, what, torch.nn.Parameter(t, requires_grad=grad))


def load_compressed(model: Any, state_dict: Any, *, strict: bool = True) -> Any:
    """A copy of ``model`` resized to the shapes of ``state_dict`` and loaded with it (eval mode).

    The state of a model that :func:`compress` returned has the original model's keys at
    smaller shapes; ``load_compressed(Net(), state_dict)`` rebuilds those shapes on a fresh
    instance (every ``Linear``, ``Conv2d`` and ``BatchNorm1d/2d`` resized in place, from the
    shapes found in ``state_dict``) and loads it. The widths are in the state itself, and in
    the report of the compression (``report.layers[i].width_after``).

    Parameters
    ----------
    model : torch.nn.Module or callable
        A model of the original architecture (copied, never modified), or a function of no
        arguments that builds one.
    state_dict : mapping
        The compressed model's ``state_dict()`` (for example ``torch.load(f, weights_only=True)``).
    strict : bool
        Passed to ``load_state_dict``.

    Raises
    ------
    TypeError
        When ``model`` is neither a module nor a function that returns one.
    ValueError
        When a weight's shape does not fit its layer (rank, or a convolution's kernel size).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> def Net():
    ...     return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> small, report = compress(Net(), keep=0.5, input_shape=(4,), progress=False, in_place=True)
    >>> again = load_compressed(Net, small.state_dict())
    >>> again[0].out_features, torch.equal(again(torch.ones(1, 4)), small(torch.ones(1, 4)))
    (8, True)
    """
    torch = _torch()
    if isinstance(model, torch.nn.Module):
        model = copy.deepcopy(model)
    elif callable(model):
        model = model()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module or a function returning one, got {type(model).__name__}")
    _resize(model, state_dict)
    model.load_state_dict(state_dict, strict=strict)
    return model.eval()


def _in_place(model: Any, net: Network, new: Network, core: Any, moments: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """A deep copy of ``model`` with its layers resized to carry ``new`` (in eval mode; its
    kept BatchNorms take ``moments``, :func:`~tropref.adapters._in_place.unit_moments`), and
    notes for the report; :class:`NotInPlace` when the tree cannot carry it."""
    torch = _torch()
    small = copy.deepcopy(model)
    ref = next(iter(small.parameters()), None)
    dtype = torch.float32 if ref is None else ref.dtype
    arrays, notes = in_place_arrays(net, new, _slots(small), lambda eps: _unit_var(eps, dtype), moments)
    state = small.state_dict()
    for name, fields in arrays.items():
        m = small.get_submodule(name)
        for f, a in fields.items():
            old = getattr(m, f, None)
            like = old if old is not None else m.weight
            a = a if a.flags.writeable else np.array(a)  # an unchanged layer's weights, shared with `model`
            state[f"{name}.{f}"] = torch.as_tensor(a, dtype=like.dtype, device=like.device)
    _resize(small, state)
    small.load_state_dict(state)
    small.eval()
    return small, notes + _check(small, new, core, dtype)


def _check(small: Any, new: Network, core: Any, dtype: Any) -> list[str]:
    """The copy's output against the compressed network's on two seeded inputs (the copy runs
    the user's forward, which may not fit the new widths: a hard-coded ``view``, say)."""
    torch = _torch()
    shape = new.input_shape
    if shape is None and isinstance(new.layers[0], Dense):
        shape = (int(new.layers[0].W.shape[1]),)
    if shape is None:
        return ["the resized model was not checked by a forward pass (no input shape: pass input_shape= or inputs=)"]
    ref = next(iter(small.parameters()))
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, *shape), generator=g, dtype=torch.float64)
    want = np.asarray(to_numpy(new(np.asarray(x.numpy(), dtype=core))), dtype=np.float64)
    try:
        with torch.no_grad():
            got = small(x.to(dtype=dtype, device=ref.device)).double().cpu().numpy()
    except Exception as exc:  # the user's forward, run on the new widths
        raise NotInPlace(
            f"the model's own forward fails on the compressed widths ({type(exc).__name__}: {exc})"
        ) from None
    tol = 1e-9 if dtype == torch.float64 and np.dtype(core) == np.float64 else 1e-3 if dtype == torch.float32 else 5e-2
    if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol * (1 + np.abs(want).max())):
        raise NotInPlace(
            "the model's own forward, run on the compressed widths, does not compute the compressed network"
        )
    return []
