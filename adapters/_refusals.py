"""What the adapters refuse, and how they say it.

Both adapters collect every problem of a model before raising, so that one error lists every
obstacle (:func:`refuse`), and word each problem alike whatever the framework: the layer's
name first, then what it is, then why tropref cannot read it and, where there is one, the
fix. The ReLU variants, which look like ReLU but are not ``max(x, 0)``, are listed here once
by name (:data:`RELU_VARIANTS`); each adapter finds its framework's classes or activations
of those names.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "RELU_VARIANTS",
    "is_relu_variant",
    "relu_variant_classes",
    "relu_variant",
    "unsupported",
    "grouped_convolution",
    "several_inputs",
    "reads_several",
    "returns_input",
    "not_plain",
    "overrides",
    "refuse",
]

RELU_VARIANTS = frozenset(
    {
        "relu6",
        "leakyrelu",
        "prelu",
        "rrelu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "hardsilu",
        "hardswish",
        "hardtanh",
        "hardsigmoid",
        "mish",
        "softplus",
        "sparseplus",
        "squareplus",
        "logsigmoid",
        "glu",
    }
)
"""Names of activations that look like ReLU but are not ``max(x, 0)`` (PyTorch's classes and
Keras's activations and layers), lower case without underscores: ``ReLU6``, ``relu6``,
``LeakyReLU``, ``leaky_relu`` and so on."""


def _key(name: str) -> str:
    return name.lower().replace("_", "")


def is_relu_variant(name: str) -> bool:
    """Whether the class or activation ``name`` is a ReLU variant (spelling as in either framework).

    Examples
    --------
    >>> is_relu_variant("ReLU6"), is_relu_variant("leaky_relu"), is_relu_variant("relu")
    (True, True, False)
    """
    return _key(name) in RELU_VARIANTS


@functools.cache  # looked up for every layer a reader meets that it does not support otherwise
def relu_variant_classes(module: Any) -> tuple[type, ...]:
    """The classes of ``module`` (``torch.nn``, ``keras.layers``) named as ReLU variants.

    Examples
    --------
    >>> import types
    >>> layers = types.ModuleType("layers")
    >>> layers.ELU, layers.ReLU, layers.elu = type("ELU", (), {}), type("ReLU", (), {}), len
    >>> [c.__name__ for c in relu_variant_classes(layers)]
    ['ELU']
    """
    return tuple(c for n, c in sorted(vars(module).items()) if isinstance(c, type) and is_relu_variant(n))


def relu_variant(name: str, what: str, replacement: str) -> str:
    """The refusal of the ReLU variant ``what`` (a class, an activation) of layer ``name``.

    Examples
    --------
    >>> relu_variant("act", "ReLU6", "nn.ReLU")
    "layer 'act' (ReLU6) is a ReLU variant: tropref merges units of max(x, 0) only; replace it by nn.ReLU (and retrain or fine-tune) to compress this model"
    """  # noqa: E501
    return (
        f"layer {name!r} ({what}) is a ReLU variant: tropref merges units of max(x, 0) only; "
        f"replace it by {replacement} (and retrain or fine-tune) to compress this model"
    )


def unsupported(name: str, what: str, supported: str) -> str:
    """The refusal of a layer ``name`` of a kind (``what``) tropref does not read.

    Examples
    --------
    >>> unsupported("1", "Tanh", "Linear, ReLU")
    "layer '1' (Tanh) is not supported by tropref; supported: Linear, ReLU"
    """
    return f"layer {name!r} ({what}) is not supported by tropref; supported: {supported}"


def grouped_convolution(name: str, groups: int) -> str:
    """The refusal of a convolution whose channels are split in ``groups`` (depthwise too).

    Examples
    --------
    >>> grouped_convolution("dw", 8)
    "layer 'dw': grouped or depthwise convolution (groups=8) is not supported"
    """
    return f"layer {name!r}: grouped or depthwise convolution (groups={groups}) is not supported"


def several_inputs(name: str) -> str:
    """The refusal of a model's second input ``name``.

    Examples
    --------
    >>> several_inputs("y")
    "input 'y': the model has several inputs; tropref needs one"
    """
    return f"input {name!r}: the model has several inputs; tropref needs one"


def reads_several(where: str, what: str, n: int, joins: str) -> str:
    """The refusal of an operation ``where`` (``"node 'mul'"``, ``"layer 'gate'"``) that reads
    ``n`` tensors and is none of the joins tropref reads (``joins``, in the framework's words).

    Examples
    --------
    >>> reads_several("node 'mul'", "mul", 2, "additions and concatenations")
    "node 'mul' (mul) reads 2 tensors; tropref reads layers of one input, additions and concatenations"
    """
    return f"{where} ({what}) reads {n} tensors; tropref reads layers of one input, {joins}"


def returns_input(model: str | None = None) -> str:
    """The refusal of a model (named ``model``, if given) whose output is its input.

    Examples
    --------
    >>> returns_input("m")
    "model 'm' returns its input unchanged: there is nothing to compress"
    """
    who = "the model" if model is None else f"model {model!r}"
    return f"{who} returns its input unchanged: there is nothing to compress"


def not_plain(name: str | None, what: str, why: str, fix: str) -> str:
    """The refusal of a layer ``name`` (``what``; None: the model itself) whose computation is
    not the plain one of its kind (``why``: a hook, an override, LoRA, quantization, a custom
    activation), and ``fix``.

    Examples
    --------
    >>> not_plain("fc", "Linear", "has a forward hook", "remove it")
    "layer 'fc' (Linear) has a forward hook: tropref reads a layer's plain computation only and would misread this one; remove it"
    """  # noqa: E501
    who = "the model" if name is None else f"layer {name!r}"
    return f"{who} ({what}) {why}: tropref reads a layer's plain computation only and would misread this one; {fix}"


def overrides(cls: type, base: type, methods: Sequence[str]) -> list[str]:
    """The methods of ``methods`` that the subclass ``cls`` of ``base`` defines anew.

    Examples
    --------
    >>> class Base:
    ...     def call(self): ...
    >>> class Mine(Base):
    ...     def call(self): ...
    >>> overrides(Mine, Base, ["call", "build"]), overrides(Base, Base, ["call"])
    (['call'], [])
    """
    return [m for m in methods if getattr(cls, m, None) is not getattr(base, m, None)]


def refuse(problems: Sequence[str] | Iterable[str]) -> None:
    """Raise one ``ValueError`` listing every problem (nothing when there is none).

    Raises
    ------
    ValueError
        ``tropref cannot read this model (N problems):`` and one line per problem.

    Examples
    --------
    >>> refuse([])
    >>> refuse(["layer 'a': ...", "layer 'b': ..."])
    Traceback (most recent call last):
    ...
    ValueError: tropref cannot read this model (2 problems):
    - layer 'a': ...
    - layer 'b': ...
    """
    problems = list(problems)
    if problems:
        n = len(problems)
        raise ValueError(
            f"tropref cannot read this model ({n} problem{'s' if n > 1 else ''}):\n- " + "\n- ".join(problems)
        )
