"""ONNX adapter: an ``onnx.ModelProto`` to :class:`tropref.network.Network` and back.

- :func:`from_onnx` reads the graphs ReLU networks export to: ``Gemm`` (``transB``,
  ``alpha``, ``beta``), ``MatMul`` (with the ``Add`` of a bias after it), ``Conv`` (2-D,
  ``pads``/``auto_pad``, ``strides``, ``dilations``, ``group=1``), ``Relu``,
  ``BatchNormalization`` (inference mode), ``MaxPool``, ``AveragePool``
  (``count_include_pad``), ``GlobalAveragePool``/``GlobalMaxPool`` (also ``ReduceMean``/
  ``ReduceMax`` over the spatial axes, as PyTorch's default exporter writes them), ``Flatten`` (axis 1),
  ``Reshape`` used as a flatten (a constant target such as ``[-1, d]``, or the
  ``Shape → Gather → Unsqueeze → Concat`` chain that ``x.view(x.size(0), -1)`` exports to),
  ``Add`` and ``Sum`` of tensors (residual sums), ``Concat`` (axis 1), ``Pad`` (constant),
  ``Dropout``, ``Identity``, ``Softmax`` over the features; initializers and ``Constant``
  nodes as weights. Every other node is refused, all at once, by op type and name.
- :func:`to_onnx` writes a network as a new ONNX model; given ``like=`` (the model the
  network was read from) it edits that model's graph instead: the compressed layers get new
  initializers, folded BatchNorms are removed, every other node is copied unchanged, and the
  opset, input and output names and dynamic batch dimension stay as they were.
- :func:`compress` does both around :func:`tropref.compress_network`.

ONNX is channels-first (NCHW, OIHW kernels), as the core is. The model given is never
modified; only ``onnx`` is imported here (never a training framework).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from tropref._array import to_numpy
from tropref.adapters._adaptive import AdaptivePool, resolve_adaptive
from tropref.adapters._graph import run_graph, writer
from tropref.adapters._layout import core_batch, core_dtype
from tropref.adapters._padding import explicit_padding
from tropref.adapters._reading import Pad, append, finish_reading
from tropref.adapters._refusals import (
    is_relu_variant,
    reads_several,
    relu_variant,
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

__all__ = ["from_onnx", "to_onnx", "compress"]

_SUPPORTED = (
    "Gemm, MatMul (+ Add of a bias), Conv (group=1), Relu, BatchNormalization, MaxPool, AveragePool, "
    "GlobalAveragePool, GlobalMaxPool, ReduceMean/ReduceMax (over axes 2, 3), Flatten, Reshape (as a flatten), "
    "Add, Sum, Concat (axis 1), Pad (constant), Dropout, Identity, Softmax, Constant, and Shape/Gather/Unsqueeze/"
    "Concat/Cast on shapes"
)
_ADVICE = "; re-export the model with these operators only (or replace the layer in the source framework)"
_BATCH = "N"  # the batch size in a shape computed from Shape(x): unknown until run time
_ARITHMETIC = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Reciprocal": np.reciprocal,
}
_CONST_OPS = (
    "Identity",
    "Cast",
    "Unsqueeze",
    "Squeeze",
    "Gather",
    "Concat",
    "Reshape",
    "Transpose",
    "Slice",
    "Flatten",
)
_CONST_OPS += tuple(_ARITHMETIC)


def _onnx() -> Any:
    import onnx  # the adapter's only framework import: the core never imports onnx
    import onnx.numpy_helper
    import onnx.shape_inference

    return onnx


# --------------------------------------------------------------------------- reading


@dataclass
class _Reading:
    """A model read: the core layers and what each reads, the graph nodes each layer came
    from (by layer name), the problems found, and the Reshape targets to rewrite."""

    layers: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    out: int | None = None
    owners: dict = field(default_factory=dict)  # layer name -> node indices (MatMul + Add: two)
    by_name: dict = field(default_factory=dict)  # layer name -> the layer as read
    reshapes: dict = field(default_factory=dict)  # node index -> (layer name, target) of a constant-target flatten
    values: dict = field(default_factory=dict)  # constants: initializers, Constant nodes, shapes
    shape: tuple | None = None
    opset: int = 13
    graph: Any = None


def _as_model(model: Any) -> Any:
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model))
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    raise TypeError(f"`model` must be an onnx.ModelProto or the path of a .onnx file, got {type(model).__name__}")


def _attrs(node: Any) -> dict[str, Any]:
    helper = _onnx().helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _label(node: Any) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _model_input(model: Any) -> Any:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _static_shape(value_info: Any) -> tuple[int, ...] | None:
    """One sample's shape of a graph input (its dims after the batch), None where one is dynamic."""
    dims = value_info.type.tensor_type.shape.dim
    rest = [d.dim_value if d.HasField("dim_value") else 0 for d in list(dims)[1:]]
    return tuple(rest) if rest and all(d > 0 for d in rest) else None


def _inferred_shapes(model: Any) -> dict[str, tuple]:
    """Every tensor's shape that ONNX's shape inference finds (dims None where unknown)."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a help (auto_pad, Shape nodes), not a requirement
        return {}
    out = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    return out


def _read(model: Any, input_shape: Sequence[int] | None, dtype: Any) -> _Reading:
    """Every node of ``model``'s graph, in order, as core layers (or constants, or refusals)."""
    onnx = _onnx()
    graph = model.graph
    r = _Reading(opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13))
    r.graph = graph
    r.values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    if dtype is None:
        dtype = core_dtype(a.dtype for a in r.values.values() if a.dtype.kind == "f")
    inputs = _model_input(model)
    if len(inputs) != 1:
        r.problems.extend(several_inputs(i.name) for i in inputs[1:])
        if not inputs:
            r.problems.append("the model has no input")
    shapes = _inferred_shapes(model)
    index: dict[str, int] = {i.name: -1 for i in inputs[:1]}
    r.shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if r.shape is None and inputs:
        r.shape = _static_shape(inputs[0])
    users: dict[str, list[int]] = {}
    for j, node in enumerate(graph.node):
        for name in node.input:
            users.setdefault(name, []).append(j)
    outputs = {o.name for o in graph.output}
    fused: dict[int, int] = {}  # the Add node of a bias -> the node it is the bias of
    names: set[str] = set()
    for j, node in enumerate(graph.node):
        data = [n for n in node.input if n in index]
        if j in fused:
            index[node.output[0]] = index[graph.node[fused[j]].output[0]]
            continue
        if not data:
            _constant(node, r.values)
            continue
        if node.op_type == "Shape":
            _shape_value(node, data[0], shapes, r.values)
            continue
        name = _layer_name(node, j, names)
        for extra in node.output[1:]:
            if extra and (users.get(extra) or extra in outputs):
                r.problems.append(f"{_label(node)}: its output {extra!r} is read; tropref reads the first output only")
        n = _Node(node, j, name, r, shapes, dtype, users, outputs)
        try:
            converted, owned = _convert(n, data), n.owned
        except ValueError as exc:
            r.problems.append(str(exc))
            converted, owned = [Identity(name=name)], [j]  # stands in, so that the nodes after it are checked too
            data = data[:1]
        for k in owned[1:]:
            fused[k] = j
        if any(isinstance(l, (Dense, Conv2d, BatchNorm)) for l in converted):
            r.owners[name] = [j, *owned[1:]]
            r.by_name[name] = converted[0]
        srcs = [index[n] for n in data] if isinstance(converted[0], (Add, Concat)) else [index[data[0]]]
        index[node.output[0]] = append(r.layers, r.inputs, converted, srcs)
    _find_output(r, index)
    return r


def _find_output(r: _Reading, index: dict[str, int]) -> None:
    """The layer that is the model's one output (``r.out``), or the problem why there is none."""
    outputs = r.graph.output
    if len(outputs) != 1:
        names = ", ".join(repr(o.name) for o in outputs)
        r.problems.append(f"the model has {len(outputs)} outputs ({names}); tropref needs one")
    elif outputs[0].name not in index:
        if not r.problems:
            r.problems.append(f"the output {outputs[0].name!r} does not depend on the input")
    else:
        r.out = index[outputs[0].name]
        if r.out < 0 and not r.problems:
            r.problems.append(returns_input())


def _layer_name(node: Any, j: int, names: set[str]) -> str:
    """The node's name (else its op type and position), made unique: the core layer's name."""
    base = node.name or f"{node.op_type}_{j}"
    name, n = base, 1
    while name in names:
        n += 1
        name = f"{base}_{n}"
    names.add(name)
    return name


def _constant(node: Any, values: dict) -> None:
    """A node that reads no data: a constant, evaluated when it is one tropref knows; the
    others are refused only if a layer reads them (see :func:`_const`)."""
    onnx = _onnx()
    a = _attrs(node)
    if node.op_type == "Constant":
        if "value" in a:
            values[node.output[0]] = onnx.numpy_helper.to_array(a["value"])
        elif "value_float" in a or "value_int" in a:
            values[node.output[0]] = np.asarray(a.get("value_float", a.get("value_int")))
        elif "value_floats" in a or "value_ints" in a:
            values[node.output[0]] = np.asarray(a.get("value_floats", a.get("value_ints")))
        return
    ins = [values.get(n) for n in node.input if n]
    if node.op_type not in _CONST_OPS or any(v is None for v in ins):
        return
    x = ins[0]
    try:
        if node.op_type == "Identity":
            y = x
        elif node.op_type == "Cast":
            y = x if x.dtype == object else x.astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
        elif node.op_type in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes", ins[1].tolist() if len(ins) > 1 else None)
            if node.op_type == "Unsqueeze":
                y = x
                for ax in sorted(int(v) % (x.ndim + len(axes)) for v in axes):
                    y = np.expand_dims(y, ax)
            else:
                y = np.squeeze(x, axis=None if axes is None else tuple(int(v) for v in axes))
        elif node.op_type == "Gather":
            y = np.take(x, ins[1].astype(np.int64), axis=int(a.get("axis", 0)))
        elif node.op_type == "Concat":
            y = np.concatenate([np.atleast_1d(v) for v in ins], axis=int(a.get("axis", 0)))
        elif node.op_type == "Reshape":  # of a constant (0 keeps that dim)
            target = [int(v) for v in ins[1]]
            y = np.reshape(x, [x.shape[i] if v == 0 and not a.get("allowzero", 0) else v for i, v in enumerate(target)])
        elif node.op_type == "Transpose":
            y = np.transpose(x, a.get("perm"))
        elif node.op_type == "Slice":
            y = _slice(x, a, ins)
        elif node.op_type == "Flatten":
            axis = int(a.get("axis", 1)) % max(x.ndim, 1)
            y = np.reshape(x, (int(np.prod(x.shape[:axis])), -1))
        else:  # arithmetic on numbers, never on shapes holding the batch size
            if any(v.dtype == object for v in ins):
                return
            y = _ARITHMETIC[node.op_type](*ins)
            if node.op_type == "Div" and all(v.dtype.kind in "iu" for v in ins):
                y = y.astype(ins[0].dtype)  # ONNX divides integers with truncation
    except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError):
        return
    values[node.output[0]] = np.asarray(y, dtype=object) if x.dtype == object else np.asarray(y)


def _slice(x: np.ndarray, a: dict, ins: list) -> np.ndarray:
    """``Slice`` of a constant: ``starts``, ``ends``, ``axes``, ``steps`` as inputs (opset 10+) or attributes."""
    starts, ends = (a["starts"], a["ends"]) if "starts" in a else (ins[1].tolist(), ins[2].tolist())
    axes = a.get("axes", ins[3].tolist() if len(ins) > 3 else list(range(len(starts))))
    steps = ins[4].tolist() if len(ins) > 4 else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        index[int(ax)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _shape_value(node: Any, x: str, shapes: dict, values: dict) -> None:
    """``Shape(x)``: the batch size (unknown: :data:`_BATCH`) and the dims shape inference found."""
    dims = shapes.get(x)
    full = [_BATCH, *(dims[1:] if dims else [None] * 3)]
    a = _attrs(node)
    start, end = a.get("start", 0), a.get("end", None)
    values[node.output[0]] = np.asarray(full[start:end], dtype=object)


@dataclass
class _Node:
    """One node that computes on the data (number ``j`` of the graph, read as the layers
    named ``name``), with what reading it needs; ``owned``: the nodes its layers come from
    (itself, then the ``Add`` of its bias, if any)."""

    node: Any
    j: int
    name: str
    r: _Reading
    shapes: dict
    dtype: Any
    users: dict
    outputs: set
    owned: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.a = _attrs(self.node)
        self.label = _label(self.node)
        self.owned = [self.j]

    def const(self, k: int, what: str) -> np.ndarray | None:
        """Input ``k`` as a constant (None when the input is absent)."""
        node = self.node
        if len(node.input) <= k or not node.input[k]:
            return None
        name = node.input[k]
        if name in self.r.values:
            return self.r.values[name]
        producer = next((n for n in self.r.graph.node if name in n.output), None)
        where = f" (computed by {_label(producer)}, which tropref cannot evaluate)" if producer is not None else ""
        raise ValueError(
            f"{self.label}: its {what} {name!r} is not a constant{where}; tropref reads weights as constants"
        )

    def cast(self, x: Any) -> np.ndarray:
        return np.array(x, dtype=self.dtype, order="C")

    def bias_add(self, units: int, image: bool) -> np.ndarray | None:
        """The bias of a MatMul, Gemm or Conv without one: the ``Add`` of a constant of one
        value per unit that is the only reader of its output (then owned by this node)."""
        out = self.node.output[0]
        readers = self.users.get(out, [])
        if len(readers) != 1 or out in self.outputs:
            return None
        add = self.r.graph.node[readers[0]]
        if add.op_type != "Add" or len(add.input) != 2:
            return None
        b = self.r.values.get(add.input[1] if add.input[0] == out else add.input[0])
        if b is None or b.dtype == object or b.size != units:
            return None
        one_per_unit = [(units, 1, 1), (1, units, 1, 1)] if image else [(units,), (1, units)]
        if tuple(int(d) for d in b.shape) not in one_per_unit and units > 1:  # others broadcast along another axis
            return None
        self.owned.append(readers[0])
        return self.cast(b.reshape(-1))


def _convert(n: _Node, data: list[str]) -> list:
    """The core layers of one data node (reading the data tensors ``data``)."""
    node, op = n.node, n.node.op_type
    if op in ("Add", "Sum") and len(data) == len([i for i in node.input if i]) and len(data) >= 2:
        return [Add(name=n.name)]
    if op == "Concat":
        if len(data) < 2 or len(data) != len(node.input) or int(n.a.get("axis", 0)) != 1:
            raise ValueError(f"{n.label}: tropref reads concatenations of two or more tensors along axis 1 only")
        return [Concat(name=n.name)]
    if len(data) != 1 or node.input[0] != data[0]:
        if op == "Add":
            raise ValueError(
                f"{n.label} adds a constant: tropref reads a bias only as a Gemm's or Conv's, or as the Add right "
                "after a MatMul, Gemm or Conv without one" + _ADVICE
            )
        raise ValueError(reads_several(n.label, op, len(data), "Add, Sum and Concat") + _ADVICE)
    if op in _READERS:
        return _READERS[op](n)
    who = node.name or node.output[0]
    if is_relu_variant(op):
        raise ValueError(relu_variant(who, op, "Relu"))
    if op == "Clip":
        raise ValueError(
            f"{n.label} is a clipped activation (ReLU6 exports as Clip): tropref merges units of max(x, 0) only; "
            "replace it by Relu (and retrain or fine-tune) to compress this model"
        )
    raise ValueError(unsupported(who, op, _SUPPORTED) + _ADVICE)


def _gemm(n: _Node) -> list:
    """``alpha * x @ B' + beta * C`` (``B' = B`` or ``B^T`` by ``transB``) as a dense layer."""
    if n.a.get("transA", 0):
        raise ValueError(f"{n.label}: transA=1 is not supported (the input must be (batch, features))")
    B = n.cast(n.const(1, "weight"))
    W = (B if n.a.get("transB", 0) else B.T) * n.a.get("alpha", 1.0)
    C = n.const(2, "bias")
    if C is None:
        return [Dense(n.cast(W), n.bias_add(W.shape[0], image=False), name=n.name)]
    if C.size not in (1, W.shape[0]) or C.ndim > 2 or (C.ndim == 2 and C.shape[0] != 1):
        raise ValueError(f"{n.label}: a bias of shape {C.shape} is not supported (one value per unit)")
    b = np.broadcast_to(n.cast(C).reshape(-1), (W.shape[0],)) * n.a.get("beta", 1.0)
    return [Dense(n.cast(W), n.cast(b), name=n.name)]


def _matmul(n: _Node) -> list:
    B = n.const(1, "weight")
    if B is None or B.ndim != 2:
        raise ValueError(f"{n.label}: tropref reads a MatMul by a constant 2-D matrix only")
    return [Dense(n.cast(B.T), n.bias_add(B.shape[1], image=False), name=n.name)]


def _conv(n: _Node) -> list:
    W = n.const(1, "weight")
    if W is None or W.ndim != 4:
        raise ValueError(f"{n.label}: tropref reads 2-D convolutions only (a constant OIHW weight)")
    if int(n.a.get("group", 1)) != 1:
        raise ValueError(
            f"{n.label}: grouped or depthwise convolution (group={n.a['group']}) is not supported; tropref merges "
            "the output channels of group=1 convolutions only"
        )
    stride, dilation = tuple(n.a.get("strides", (1, 1))), tuple(n.a.get("dilations", (1, 1)))
    pad = _auto_pad(n, tuple(W.shape[2:]), stride, dilation)
    b = n.const(2, "bias")
    b = n.bias_add(W.shape[0], image=True) if b is None else n.cast(b)
    return [Conv2d(n.cast(W), b, stride=stride, padding=pad, dilation=dilation, name=n.name)]


def _batchnorm(n: _Node) -> list:
    if n.a.get("training_mode", 0):
        raise ValueError(f"{n.label}: training_mode=1; export the model in inference (eval) mode")
    if n.a.get("spatial", 1) == 0:
        raise ValueError(f"{n.label}: spatial=0 (statistics per activation) is not supported, only per channel")
    scale, bias, mean, var = (n.cast(n.const(k, w)) for k, w in enumerate(("scale", "bias", "mean", "var"), 1))
    return [BatchNorm(mean, var, scale, bias, eps=float(n.a.get("epsilon", 1e-5)), name=n.name)]


def _onnx_pads(pads: Sequence[int]) -> tuple[int, int, int, int]:
    """ONNX's ``[top, left, bottom, right]`` as the core's ``(top, bottom, left, right)``."""
    t, l, b, r = (int(p) for p in pads)
    return (t, b, l, r)


def _auto_pad(n: _Node, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """The explicit padding of a Conv or pooling, from ``pads`` or ``auto_pad``."""
    mode = n.a.get("auto_pad", "NOTSET")
    if mode == "NOTSET":
        return _onnx_pads(n.a.get("pads", [0, 0, 0, 0]))
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        dims = n.shapes.get(n.node.input[0])
        hw = tuple(dims[2:4]) if dims and len(dims) == 4 and None not in dims[2:4] else None
        try:
            t, b, l, r = explicit_padding("same", hw, kernel, stride, dilation, n.name)
        except ValueError as exc:
            raise ValueError(f"{n.label}: auto_pad={mode}: {exc}; pass a model with static input sizes") from None
        return (t, b, l, r) if mode == "SAME_UPPER" else (b, t, r, l)
    raise ValueError(f"{n.label}: auto_pad={mode!r} is not supported")


def _pool(n: _Node) -> list:
    kernel = tuple(n.a["kernel_shape"])
    if len(kernel) != 2:
        raise ValueError(f"{n.label}: tropref reads 2-D pooling only")
    if n.a.get("ceil_mode", 0) or any(d != 1 for d in n.a.get("dilations", (1, 1))):
        raise ValueError(f"{n.label}: ceil_mode=1 or dilations are not supported; export with ceil_mode=False")
    stride = tuple(n.a.get("strides", (1, 1)))
    pad = _auto_pad(n, kernel, stride, (1, 1))
    if n.node.op_type == "MaxPool":
        return [MaxPool2d(kernel, stride, pad, name=n.name)]
    return [AvgPool2d(kernel, stride, pad, name=n.name, count_include_pad=bool(n.a.get("count_include_pad", 0)))]


class _GlobalPool(AdaptivePool):
    """GlobalAveragePool / GlobalMaxPool: an adaptive pooling to 1x1, fixed once the input size is known."""

    def __init__(self, average: bool, name: str) -> None:
        super().__init__(average, 1, name)

    @property
    def kind(self) -> str:
        return "GlobalAveragePool" if self.average else "GlobalMaxPool"


def _reduce(n: _Node) -> list:
    """``ReduceMean``/``ReduceMax`` over the two spatial axes of NCHW images (as PyTorch's
    default exporter writes an adaptive pooling to 1x1): a global pooling, then a flatten
    when the reduced axes are not kept."""
    axes = n.a.get("axes")
    if axes is None and len(n.node.input) > 1 and n.node.input[1]:
        axes = n.const(1, "axes").reshape(-1).tolist()
    dims = n.shapes.get(n.node.input[0])
    if axes is None or (dims and len(dims) != 4) or sorted(int(v) % 4 for v in axes) != [2, 3]:
        raise ValueError(
            f"{n.label}: tropref reads a reduction over the spatial axes (2, 3) of NCHW images only, as a "
            f"global pooling; this one reduces axes {axes}" + _ADVICE
        )
    pool = _GlobalPool(n.node.op_type == "ReduceMean", n.name)
    return [pool] if n.a.get("keepdims", 1) else [pool, Flatten("channels_first", name=f"{n.name}.flatten")]


def _flatten(n: _Node) -> list:
    if int(n.a.get("axis", 1)) != 1:
        raise ValueError(f"{n.label}: axis={n.a['axis']} is not supported (only axis=1, keeping the batch)")
    return [Flatten("channels_first", name=n.name)]


def _reshape(n: _Node) -> list:
    """A Reshape to ``(batch, features)``: a constant target, or one computed from ``Shape(x)``."""
    target = n.const(1, "shape")
    t = list(np.asarray(target).reshape(-1))
    batch = len(t) == 2 and (t[0] in (_BATCH, -1) or (t[0] == 0 and not n.a.get("allowzero", 0)) or t[0] > 0)
    features = len(t) == 2 and t[1] not in (_BATCH, None) and (t[1] == -1 or t[1] > 0)
    if not (batch and features) or (t[0] == -1 and t[1] == -1):
        raise ValueError(
            f"{n.label}: a reshape to [{', '.join(str(v) for v in t)}] is not supported; tropref reads a Reshape as "
            "a flatten to (batch, features) only (as x.view(x.size(0), -1) exports)" + _ADVICE
        )
    if target.dtype != object and int(t[1]) > 0:
        n.r.reshapes[n.j] = (n.name, [int(v) for v in t])  # a constant feature count: rewritten when it changes
    return [Flatten("channels_first", name=n.name)]


def _pad(n: _Node) -> list:
    if n.a.get("mode", "constant") != "constant":
        raise ValueError(f"{n.label}: mode={n.a['mode']!r} is not supported (only constant padding)")
    pads = n.a.get("pads")
    pads = [int(p) for p in np.asarray(n.const(1, "pads") if pads is None else pads).reshape(-1)]
    value = n.a.get("value", 0.0)
    if len(n.node.input) > 2 and n.node.input[2]:
        value = float(np.asarray(n.const(2, "constant_value")).item())
    if len(n.node.input) > 3 and n.node.input[3]:  # opset 18: the padded axes
        axes = [int(x) % 4 for x in np.asarray(n.const(3, "axes")).reshape(-1)]
        full = [0] * 8
        for i, ax in enumerate(axes):
            full[ax], full[4 + ax] = pads[i], pads[len(axes) + i]
        pads = full
    if len(pads) != 8 or any(pads[k] for k in (0, 1, 4, 5)):
        raise ValueError(f"{n.label}: tropref reads padding of the two spatial axes of NCHW images only")
    return [Pad((pads[2], pads[6], pads[3], pads[7]), float(value), n.name)]


def _dropout(n: _Node) -> list:
    if len(n.node.input) > 2 and n.node.input[2] and bool(np.asarray(n.const(2, "training_mode")).item()):
        raise ValueError(f"{n.label}: training_mode is true; export the model in inference (eval) mode")
    ratio = n.const(1, "ratio")
    return [Dropout(float(n.a.get("ratio", 0.5) if ratio is None else np.asarray(ratio).item()), name=n.name)]


def _softmax(n: _Node) -> list:
    axis = int(n.a.get("axis", 1 if n.r.opset < 13 else -1))
    if axis not in (1, -1):
        raise ValueError(f"{n.label}: axis={axis} is not supported (only the features, axis 1 of a 2-D input)")
    return [Softmax(name=n.name)]


_READERS = {
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "Relu": lambda n: [ReLU(name=n.name)],
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": lambda n: [_GlobalPool(True, n.name)],
    "GlobalMaxPool": lambda n: [_GlobalPool(False, n.name)],
    "ReduceMean": _reduce,
    "ReduceMax": _reduce,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Pad": _pad,
    "Dropout": _dropout,
    "Identity": lambda n: [Identity(name=n.name)],
    "Softmax": _softmax,
}
"""How each operator tropref reads becomes core layers (joins and refusals: :func:`_convert`)."""


def from_onnx(model: Any, *, input_shape: Sequence[int] | None = None, dtype: Any = None) -> Network:
    """The network description of an ONNX model (weights copied to NumPy ``dtype``).

    Each node that computes on the data becomes a layer of the graph, named as the node;
    shape computations and constants are evaluated; a residual ``Add`` becomes an
    :class:`~tropref.network.Add`, a ``Concat`` along axis 1 a
    :class:`~tropref.network.Concat`. ``Pad`` nodes are folded into the convolution or
    pooling that reads them. A chain comes back as a chain network.

    Parameters
    ----------
    model : onnx.ModelProto, str or path
        The model, or the path of a ``.onnx`` file.
    input_shape : sequence of int, optional
        One sample's shape, ``(d,)`` or ``(C, H, W)``; by default the model input's static
        dims after the batch (needed for ``GlobalAveragePool`` and MAC counts).
    dtype : NumPy dtype, optional
        dtype of the copied weights (default: float64 for a float64 model, else float32).

    Raises
    ------
    ValueError
        Listing every obstacle at once, each naming its node by name and op type: operators
        tropref does not read (ReLU variants, grouped convolutions, ...), weights that are
        not constants, reshapes that are not flattens, several inputs or outputs.

    Examples
    --------
    >>> import numpy as np, onnx
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> W = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    >>> g = helper.make_graph(
    ...     [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1), helper.make_node("Relu", ["h"], ["y"])],
    ...     "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [W])
    >>> [type(l).__name__ for l in from_onnx(helper.make_model(g))]
    ['Dense', 'ReLU']
    """
    model = _as_model(model)
    r = _read(model, input_shape, dtype)
    return finish_reading(r.layers, r.inputs, r.out, r.shape, r.problems, partial(resolve_adaptive, r.shape))


# --------------------------------------------------------------------------- writing


def to_onnx(net: Network, *, like: Any = None, opset: int = 17, dtype: Any = np.float32) -> Any:
    """An ``onnx.ModelProto`` computing ``net`` (it passes ``onnx.checker.check_model``).

    With ``like``, the ONNX model ``net`` was read from (:func:`from_onnx`, possibly then
    compressed), that model's graph is edited: each layer whose weights changed gets new
    initializers (in the model's dtype) on its node, a BatchNorm folded into its layer is
    removed, a ``Reshape`` to a constant feature count gets the new count, and every other
    node, the opset, the input and output names and the dynamic batch dimension are kept.
    Without it a new graph is written (input ``"input"``, output ``"output"``, a dynamic
    batch dimension, ``opset``), its weights in ``dtype``.

    Raises
    ------
    ValueError
        When ``like`` cannot be read (as :func:`from_onnx`), or ``net`` has a layer with
        weights that ``like`` has no node for.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> m = to_onnx(Network([Dense(np.ones((2, 3)), np.zeros(2)), ReLU()], (3,)))
    >>> [n.op_type for n in m.graph.node], m.graph.input[0].name
    (['Gemm', 'Relu'], 'input')
    """
    if like is not None:
        like = _as_model(like)
        r = _read(like, net.input_shape, None)
        return _edit(like, r, net)
    return _fresh(net, opset, dtype)


def _fresh(net: Network, opset: int, dtype: Any) -> Any:
    """A new ONNX graph of plain nodes computing ``net`` (channels-first flattens)."""
    onnx = _onnx()
    helper, nh = onnx.helper, onnx.numpy_helper
    net = with_flatten_order_everywhere(net, "channels_first")
    nodes, inits, used = [], [], set()

    def const(name: str, a: Any) -> str:
        inits.append(nh.from_array(np.asarray(to_numpy(a), dtype=dtype), _unique(name, used)))
        return inits[-1].name

    def step(i: int, srcs: list) -> str:
        layer = net.layers[i]
        name = _unique(getattr(layer, "name", None) or f"layer{i}", used)
        op, ins, attrs = _fresh_node(layer, name, srcs, const)
        out = "output" if i == len(net.layers) - 1 else name
        nodes.append(helper.make_node(op, ins, [out], name=name, **attrs))
        return out

    used.update(("input", "output"))
    run_graph(net, "input", step)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    shape = ["N", *net.input_shape] if net.input_shape is not None else _input_dims(net)
    out = ["N", *output_shapes(net)[-1]] if net.input_shape is not None else ["N", None]
    graph = helper.make_graph(
        nodes,
        "tropref",
        [helper.make_tensor_value_info("input", elem, shape)],
        [helper.make_tensor_value_info("output", elem, out)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tropref")
    model.ir_version = min(model.ir_version, 8)  # what runtimes of opsets up to 17 read
    onnx.checker.check_model(model)
    return model


def _input_dims(net: Network) -> list:
    first = next((l for l in net.layers if isinstance(l, (Dense, Conv2d))), None)
    if isinstance(first, Dense):
        return ["N", int(first.W.shape[1])]
    if isinstance(first, Conv2d):
        return ["N", int(first.W.shape[1]), "H", "W"]
    return None


def _unique(name: str, used: set[str]) -> str:
    out, n = name, 1
    while out in used:
        n += 1
        out = f"{name}_{n}"
    used.add(out)
    return out


def _fresh_node(layer: Any, name: str, srcs: list, const: Any) -> tuple[str, list, dict]:
    """``(op type, inputs, attributes)`` of the ONNX node computing one layer."""
    return writer(_WRITERS, layer, "ONNX")(layer, name, srcs, const)


_Writer = Callable[[Any, str, list, Any], tuple[str, list, dict]]
"""A writer: ``(layer, node name, its inputs' names, const)`` -> ``(op type, inputs, attributes)``."""


def _weighted(op: str, attrs: Callable[[Any], dict]) -> _Writer:
    """The writer of a Gemm or Conv node: its input, the weight and the bias (if any)."""

    def write(layer: Dense | Conv2d, name: str, srcs: list, const: Any) -> tuple[str, list, dict]:
        weight = const(f"{name}.weight", layer.W)  # the initializers in this order: weight, then bias
        bias = [const(f"{name}.bias", layer.b)] if layer.b is not None else []
        return op, [srcs[0], weight, *bias], attrs(layer)

    return write


def _write_batchnorm(layer: BatchNorm, name: str, srcs: list, const: Any) -> tuple[str, list, dict]:
    c = layer.channels
    w = np.ones(c) if layer.weight is None else layer.weight
    b = np.zeros(c) if layer.bias is None else layer.bias
    arrays = {"scale": w, "bias": b, "mean": layer.mean, "var": layer.var}
    ins = [srcs[0]] + [const(f"{name}.{k}", v) for k, v in arrays.items()]
    return "BatchNormalization", ins, {"epsilon": layer.eps}


def _write_pool(layer: MaxPool2d, name: str, srcs: list, const: Any) -> tuple[str, list, dict]:
    t, b, l, r = layer.padding
    attrs = {"kernel_shape": list(layer.kernel), "strides": list(layer.stride), "pads": [t, l, b, r]}
    if isinstance(layer, AvgPool2d):  # the one writer of both pooling types
        return "AveragePool", srcs[:1], {**attrs, "count_include_pad": int(layer.count_include_pad)}
    return "MaxPool", srcs[:1], attrs


def _simple(op: str, **attrs: Any) -> _Writer:
    return lambda layer, name, srcs, const: (op, srcs[:1], dict(attrs))


# tropref layer type -> the ONNX node computing it (the other direction: _READERS)
_WRITERS: dict[type, _Writer] = {
    Dense: _weighted("Gemm", lambda layer: {"transB": 1}),
    Conv2d: _weighted("Conv", lambda layer: _conv_attrs(layer)),
    BatchNorm: _write_batchnorm,
    MaxPool2d: _write_pool,  # and AvgPool2d, a subclass
    ReLU: _simple("Relu"),
    Flatten: _simple("Flatten", axis=1),
    Softmax: _simple("Softmax", axis=1),
    Dropout: _simple("Identity"),  # the identity at inference
    Identity: _simple("Identity"),  # and the walk's folded BatchNorms
    Add: lambda layer, name, srcs, const: ("Add" if len(srcs) == 2 else "Sum", srcs, {}),
    Concat: lambda layer, name, srcs, const: ("Concat", srcs, {"axis": 1}),
}


def _conv_attrs(layer: Conv2d) -> dict:
    t, b, l, r = layer.padding
    return {
        "kernel_shape": [int(s) for s in layer.W.shape[2:]],
        "strides": list(layer.stride),
        "pads": [t, l, b, r],
        "dilations": list(layer.dilation),
    }


def _same(a: Any, b: Any) -> bool:
    if (a is None) != (b is None):
        return False
    if a is None:
        return True
    x, y = to_numpy(a), to_numpy(b)
    return x.shape == y.shape and bool(np.array_equal(x, y))


def _unchanged(new: Any, old: Any) -> bool:
    fields = ("W", "b") if isinstance(new, (Dense, Conv2d)) else ("mean", "var", "weight", "bias")
    return type(new) is type(old) and all(_same(getattr(new, f), getattr(old, f)) for f in fields)


def _edit(model: Any, r: _Reading, net: Network) -> Any:
    """``model``'s graph with the weights of ``net`` (read from it, then compressed): see :func:`to_onnx`."""
    onnx = _onnx()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    final = {l.name: l for l in net.layers if isinstance(l, (Dense, Conv2d, BatchNorm))}
    strays = sorted(set(final) - set(r.owners))
    if strays:
        raise ValueError(f"layers {strays} of the network have no node in the ONNX model given as `like`")
    owner = {k: name for name, ks in r.owners.items() for k in ks}
    flat = _flatten_sizes(net)
    used = {n for node in g.node for n in [*node.input, *node.output]} | {t.name for t in g.initializer}
    edit = _Edit(g, used, {o.name for o in g.output}, r)
    for j, node in enumerate(model.graph.node):
        node = edit.aliased(node)
        name = owner.get(j)
        if j in r.reshapes and flat.get(r.reshapes[j][0], r.reshapes[j][1][1]) != r.reshapes[j][1][1]:
            target = [r.reshapes[j][1][0], flat[r.reshapes[j][0]]]
            edit.nodes.append(edit.with_inputs(node, {1: edit.const(f"{node.input[1]}.tropref", target, np.int64)}))
        elif name is None or j != r.owners[name][0]:
            if name is None:
                edit.nodes.append(node)  # not compressed: copied unchanged (the bias Add is written with its node)
        elif name not in final and isinstance(r.by_name[name], BatchNorm):
            edit.remove(node)  # a BatchNorm folded into its layer
        elif name not in final:  # not on the output's path: nothing read it
            edit.nodes.extend([node] + [edit.aliased(model.graph.node[k]) for k in r.owners[name][1:]])
        elif _unchanged(final[name], r.by_name[name]):
            edit.nodes.extend([node] + [edit.aliased(model.graph.node[k]) for k in r.owners[name][1:]])
        else:
            edit.rewrite(node, [model.graph.node[k] for k in r.owners[name][1:]], final[name])
    return edit.finish(out)


def _flatten_sizes(net: Network) -> dict[str, int]:
    """The number of features of every flatten of ``net`` (when its input size is known)."""
    if net.input_shape is None:
        return {}
    shapes = output_shapes(net)
    return {l.name: int(np.prod(shapes[i])) for i, l in enumerate(net.layers) if isinstance(l, Flatten) and l.name}


class _Edit:
    """The edited graph's nodes and new initializers, and the names of removed nodes'
    outputs with what now stands for them."""

    def __init__(self, graph: Any, used: set[str], outputs: set[str], r: _Reading) -> None:
        self.graph, self.used, self.outputs, self.r = graph, used, outputs, r
        self.nodes: list = []
        self.inits: list = []
        self.alias: dict[str, str] = {}

    def const(self, name: str, a: Any, dtype: Any) -> str:
        nh = _onnx().numpy_helper
        a = a if isinstance(a, (list, np.ndarray)) else to_numpy(a)
        self.inits.append(nh.from_array(np.ascontiguousarray(a, dtype=dtype), _unique(name, self.used)))
        return self.inits[-1].name

    def aliased(self, node: Any) -> Any:
        if not any(n in self.alias for n in node.input):
            return node
        return self.with_inputs(node, {k: self.alias[n] for k, n in enumerate(node.input) if n in self.alias})

    def with_inputs(self, node: Any, inputs: dict[int, str]) -> Any:
        new = type(node)()
        new.CopyFrom(node)
        for k, n in inputs.items():
            while len(new.input) <= k:
                new.input.append("")
            new.input[k] = n
        return new

    def dtype(self, node: Any, k: int) -> Any:
        a = self.r.values.get(node.input[k]) if len(node.input) > k else None
        return a.dtype if a is not None and a.dtype.kind == "f" else np.float32

    def remove(self, node: Any) -> None:
        """A folded BatchNorm: its readers read its input (an Identity where it is the graph's output)."""
        if node.output[0] in self.outputs:
            helper = _onnx().helper
            self.nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        else:
            self.alias[node.output[0]] = node.input[0]

    def rewrite(self, node: Any, adds: list, layer: Any) -> None:
        """``node`` (and the ``Add`` of its bias) with the weights of ``layer``."""
        dt = self.dtype(node, 1)
        base = node.name or node.output[0]
        if isinstance(layer, BatchNorm):
            c = layer.channels
            arrays = [
                np.ones(c) if layer.weight is None else layer.weight,
                np.zeros(c) if layer.bias is None else layer.bias,
                layer.mean,
                layer.var,
            ]
            names = [
                self.const(f"{base}.{k}", a, dt) for k, a in zip(("scale", "bias", "mean", "var"), arrays, strict=True)
            ]
            self.nodes.append(self.with_inputs(node, dict(enumerate(names, 1))))
            return
        new = self.with_inputs(node, {})
        if node.op_type == "Gemm":
            a = _attrs(node)
            W = layer.W if a.get("transB", 0) else to_numpy(layer.W).T
            del new.attribute[:]
            new.attribute.extend(x for x in node.attribute if x.name not in ("alpha", "beta"))
        else:
            W = to_numpy(layer.W).T if node.op_type == "MatMul" else layer.W
        new.input[1] = self.const(f"{base}.weight", W, dt)
        if layer.b is None:
            self.nodes.append(new)
            return
        if adds:  # the bias stays in its Add, in that Add's shape
            add = self.aliased(adds[0])
            k = 1 if add.input[0] == node.output[0] else 0
            shape = list(self.r.values[add.input[k]].shape)
            shape[-1 if node.op_type != "Conv" else len(shape) - 3] = -1
            bias = self.const(f"{base}.bias", np.reshape(to_numpy(layer.b), shape), self.dtype(add, k))
            self.nodes.extend([new, self.with_inputs(add, {k: bias})])
        elif node.op_type in ("Gemm", "Conv"):
            self.nodes.append(self.with_inputs(new, {2: self.const(f"{base}.bias", layer.b, dt)}))
        else:  # a MatMul that now has a bias (a BatchNorm folded into it): an Add after it
            helper = _onnx().helper
            mm = _unique(f"{node.output[0]}.matmul", self.used)
            new.output[0] = mm
            bias = self.const(f"{base}.bias", layer.b, dt)
            self.nodes.extend([new, helper.make_node("Add", [mm, bias], [node.output[0]], name=f"{base}.bias")])

    def finish(self, model: Any) -> Any:
        """The model with the edited nodes, the initializers still read and the new ones."""
        onnx = _onnx()
        g = model.graph
        nodes = self.nodes
        while True:  # constants that fed only replaced weights are dropped
            read = {n for node in nodes for n in node.input} | self.outputs
            kept = [
                n
                for n in nodes
                if any(o in read for o in n.output)
                or not all(i in self.r.values or not i for i in n.input)
                or n.op_type not in ("Constant", *_CONST_OPS)
            ]
            if len(kept) == len(nodes):
                break
            nodes = kept
        read = {n for node in nodes for n in node.input} | self.outputs
        inits = [t for t in g.initializer if t.name in read] + self.inits
        g.ClearField("node")
        g.node.extend(nodes)
        g.ClearField("initializer")
        g.initializer.extend(inits)
        names = {t.name for t in inits}
        was_init = {t.name for t in self.r.graph.initializer}
        inputs = [i for i in g.input if i.name not in was_init or i.name in names]
        g.ClearField("input")
        g.input.extend(inputs)
        g.ClearField("value_info")  # intermediate shapes change with the widths
        onnx.checker.check_model(model)
        return model


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
    **options: Any,
) -> tuple[Any, NetworkReport]:
    """Compress an ONNX model; returns a new ``onnx.ModelProto`` and the report.

    The model (a ``ModelProto`` or a path) is read with :func:`from_onnx`, compressed by
    :func:`tropref.compress_network` with ``keep``, ``method``, ``seed`` and every other
    option (``skip``, budgets, ``input_radius``, ``progress``, method options...), and
    written back by editing its own graph (:func:`to_onnx` with ``like=``): the same opset,
    input and output names and dynamic batch dimension, every node not compressed copied
    unchanged. ``inputs`` and ``data`` (NCHW arrays) measure the error and bound the
    certificate's domain, and their shape gives ``input_shape`` when it is not passed.
    The computation runs in ``dtype`` (default: the model's, float32 or float64).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(16, 4))), ReLU(), Dense(rng.normal(size=(3, 16)))], (4,))
    >>> small, report = compress(to_onnx(net), keep=0.5, inputs=rng.normal(size=(32, 4)))
    >>> [tuple(t.dims) for t in small.graph.initializer]
    [(8, 4), (3, 8), (3,)]
    """
    t0 = time.perf_counter()
    model = _as_model(model)
    if inputs is not None and input_shape is None:
        input_shape = tuple(np.shape(inputs)[1:])
    if data is not None and input_shape is None:
        input_shape = tuple(np.shape(data)[1:])
    r = _read(model, input_shape, dtype)
    net = finish_reading(r.layers, r.inputs, r.out, r.shape, r.problems, partial(resolve_adaptive, r.shape))
    dtype = next((l.W.dtype for l in net.layers if isinstance(l, (Dense, Conv2d))), np.float32)
    t_export = time.perf_counter() - t0
    new, report = compress_network(
        net,
        keep,
        method=method,
        seed=seed,
        inputs=core_batch(inputs, "channels_first", dtype),
        data=core_batch(data, "channels_first", dtype),
        model_name=options.pop("model_name", model.graph.name or "onnx"),
        **options,
    )
    return write_back(new, report, lambda new: _edit(model, r, new), t0, t_export)
