"""The network as a graph of layers: :class:`Network`, its nodes and edges.

A :class:`Network` is an immutable graph of layers holding array-API arrays (NumPy, CuPy,
array-api-strict, ...): layer ``i`` reads the outputs of the layers listed in
``inputs[i]`` (``-1`` is the network's input), :class:`~tropref.network.Add` sums its
inputs (residual connections) and :class:`~tropref.network.Concat` joins them along the
channels; the last layer is the output. Without ``inputs`` the network is a chain, each
layer reading the previous one. It is what :func:`tropref.compress_network` reads and
writes, and what the adapters (``tropref.adapters.torch``, ``tropref.adapters.keras``)
translate to and from a framework's model. The core never imports a framework.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._array import Array, check_finite, namespace, to_numpy
from .forward import forward
from .kinds import kind_of
from .layers import ARRAY_FIELDS, Layer

__all__ = ["Network", "map_arrays", "check_finite_layers", "network_namespace"]


@dataclass(frozen=True)
class Network:
    """A feed-forward network of layers: a chain, or a graph with additions and concatenations.

    Parameters
    ----------
    layers : sequence of layers
        :class:`Dense`, :class:`Conv2d`, :class:`BatchNorm`, :class:`ReLU`,
        :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`Flatten`, :class:`Dropout`,
        :class:`Identity`, :class:`Softmax`, :class:`Add`, :class:`Concat`, in a
        topological order (every layer after the layers it reads).
    input_shape : tuple of int, optional
        Shape of one input sample: ``(d,)`` or ``(C, H, W)``. Needed to count the MACs of
        convolutions and for the network certificate; adapters fill it in when they can.
    inputs : sequence of sequences of int, optional
        ``inputs[i]``: the layers whose outputs layer ``i`` reads (``-1``: the network's
        input), each earlier than ``i``; one for every layer but :class:`Add` and
        :class:`Concat`, which read two or more. The last layer is the output. ``None`` (the
        default) is the chain ``inputs[i] = (i - 1,)``; a graph that is a chain is stored
        as ``None``, so equal structures compare equal.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU, count_params
    >>> rng = np.random.default_rng(0)
    >>> net = Network([Dense(rng.normal(size=(4, 3)), np.zeros(4)), ReLU(), Dense(rng.normal(size=(2, 4)))])
    >>> net(np.ones((5, 3))).shape
    (5, 2)
    >>> count_params(net)
    24
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] | None = None
    inputs: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        for i, layer in enumerate(layers):
            try:
                kind_of(layer)  # a layer is what has a kind: a shipped type, or one registered
            except TypeError:
                raise TypeError(
                    f"layer {i} is a {type(layer).__name__}, not a tropref.network layer "
                    "(nor a type given a kind by tropref.network.register_kind)"
                ) from None
        shape = None if self.input_shape is None else tuple(int(s) for s in self.input_shape)
        if shape is not None and len(shape) not in (1, 3):
            raise ValueError(f"`input_shape` must be (d,) or (C, H, W), got {shape}")
        inputs = None if self.inputs is None else _check_inputs(layers, self.inputs)
        if inputs is not None and all(ins == (i - 1,) for i, ins in enumerate(inputs)):
            inputs = None  # a chain
        if inputs is None and any(kind_of(l).junction for l in layers):
            raise ValueError("an Add or Concat layer needs `inputs`: it reads two or more layers")
        # frozen dataclass: normalised fields are written once, here
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "inputs", inputs)

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads the previous one (no ``inputs`` graph)."""
        return self.inputs is None

    def sources(self, i: int) -> tuple[int, ...]:
        """The layers read by layer ``i`` (``-1``: the network's input)."""
        return (i - 1,) if self.inputs is None else self.inputs[i]

    def users(self) -> list[list[int]]:
        """For every layer, the layers that read its output (``[]`` for the output layer)."""
        out: list[list[int]] = [[] for _ in self.layers]
        for i in range(len(self.layers)):
            for p in self.sources(i):
                if p >= 0:
                    out[p].append(i)
        return out

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __call__(self, x: Array) -> Array:
        return forward(self, x)

    def label(self, i: int) -> str:
        """How errors and reports name layer ``i``: its name, else ``"<i>:<Type>"``."""
        layer = self.layers[i]
        name = getattr(layer, "name", None)
        return f"{name!r} (layer {i}, {type(layer).__name__})" if name else f"layer {i} ({type(layer).__name__})"

    def replace_layers(self, layers: Sequence[Layer]) -> Network:
        """The same structure (input shape, graph) with other layers in the same places."""
        return Network(tuple(layers), self.input_shape, self.inputs)

    def to_numpy(self, dtype: Any = None) -> Network:
        """The same network with every array copied to a NumPy host array (optionally cast)."""
        return map_arrays(self, lambda a: to_numpy(a).astype(dtype or to_numpy(a).dtype, copy=True))


def _check_inputs(layers: tuple, inputs: Any) -> tuple[tuple[int, ...], ...]:
    try:
        inputs = tuple(tuple(int(p) for p in ins) for ins in inputs)
    except TypeError:
        raise ValueError("`inputs` must hold one sequence of layer indices per layer") from None
    if len(inputs) != len(layers):
        raise ValueError(f"`inputs` has {len(inputs)} entries for {len(layers)} layers")
    used = {p for ins in inputs for p in ins}
    for i, (layer, ins) in enumerate(zip(layers, inputs, strict=False)):
        name = getattr(layer, "name", None)
        label = f"layer {i} ({type(layer).__name__}{'' if name is None else ' ' + repr(name)})"
        if any(not -1 <= p < i for p in ins):
            raise ValueError(f"{label} reads {ins}: inputs must be earlier layers or -1 (the network's input)")
        junction = kind_of(layer).junction
        if junction and len(ins) < 2:
            raise ValueError(f"{label} must read two or more layers, reads {ins}")
        if not junction and len(ins) != 1:
            raise ValueError(f"{label} must read exactly one layer, reads {ins}")
        if i < len(layers) - 1 and i not in used:
            raise ValueError(f"{label} is read by no layer and is not the output (the last layer)")
    return inputs


def map_arrays(net: Network, fn: Any) -> Network:
    """A new network with ``fn`` applied to every array of every layer.

    ``fn`` maps each array field (``W``, ``b``, ``mean``, ``var``, ``weight``, ``bias``;
    :data:`~tropref.network.layers.ARRAY_FIELDS`) to a new array: a cast, a copy to another
    device or library. Layers without arrays are kept as they are; the structure
    (``input_shape``, ``inputs``) is unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> net = Network([Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4)))])
    >>> net32 = map_arrays(net, lambda a: a.astype(np.float32))
    >>> net32.layers[0].W.dtype, net.layers[0].W.dtype, net32.layers[1] is net.layers[1]
    (dtype('float32'), dtype('float64'), True)
    """
    layers = []
    for layer in net.layers:
        changes = {f: fn(getattr(layer, f)) for f in ARRAY_FIELDS if getattr(layer, f, None) is not None}
        layers.append(replace(layer, **changes) if changes else layer)
    return net.replace_layers(layers)


def check_finite_layers(net: Network) -> None:
    """Raise ``ValueError`` naming the first layer (and its array) that holds NaN or infinity.

    Raises
    ------
    ValueError
        ``"'fc1' (layer 1, Dense): `W` contains NaN or infinite values; ..."``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> check_finite_layers(Network([Dense(np.ones((2, 3))), ReLU(), Dense(np.array([[1.0, np.nan]]), name="out")]))
    Traceback (most recent call last):
        ...
    ValueError: 'out' (layer 2, Dense): `W` contains NaN or infinite values; fix or retrain the model
    """
    for i, layer in enumerate(net.layers):
        arrays = {f: getattr(layer, f) for f in ARRAY_FIELDS if getattr(layer, f, None) is not None}
        if arrays:
            try:
                check_finite(namespace(**arrays), **arrays)
            except ValueError as exc:
                raise ValueError(f"{net.label(i)}: {exc}; fix or retrain the model") from None


def network_namespace(net: Network) -> Any:
    """The common array namespace of a network's arrays (NumPy when it has none).

    Raises
    ------
    TypeError, ValueError
        When the layers hold arrays of different libraries or on different devices
        (:func:`tropref._array.namespace`, naming the layer and field, e.g. ``"0.W"``).

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_strict
    >>> from tropref.network import Network, Dense, ReLU
    >>> net = Network([Dense(np.ones((4, 3))), ReLU(), Dense(np.ones((2, 4)))])
    >>> network_namespace(net).__name__, network_namespace(Network([ReLU()])).__name__
    ('array_api_compat.numpy', 'array_api_compat.numpy')
    >>> network_namespace(map_arrays(net, array_api_strict.asarray)).__name__
    'array_api_strict'
    """
    arrays = {
        f"{i}.{f}": getattr(l, f)
        for i, l in enumerate(net.layers)
        for f in ARRAY_FIELDS
        if getattr(l, f, None) is not None
    }
    if not arrays:
        import array_api_compat.numpy as xp_np

        return xp_np
    return namespace(**arrays)
