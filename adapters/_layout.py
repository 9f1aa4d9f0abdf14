"""Arrays between the frameworks' layouts and the core's, shared by both adapters.

The core computes on NumPy-compatible arrays in NCHW (images) with OIHW convolution
kernels. PyTorch already uses that layout; Keras's default ``"channels_last"`` format keeps
images NHWC and kernels HWIO. Every framework tensor or array reaches NumPy through
:func:`tropref._array.to_numpy` (which detaches PyTorch tensors and moves any array-API
array to the host), and every transpose between the two layouts is written here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tropref._array import to_numpy

__all__ = [
    "host_copy",
    "core_batch",
    "core_dtype",
    "kernel_to_core",
    "kernel_from_core",
    "shape_to_core",
    "shape_from_core",
    "channel_axis",
    "spatial",
]

_NHWC_TO_NCHW = (0, 3, 1, 2)
_HWIO_TO_OIHW = (3, 2, 0, 1)
_OIHW_TO_HWIO = (2, 3, 1, 0)


def _on_host(x: Any) -> Any:
    """``x`` as a NumPy-convertible value: framework tensors and array-API arrays through
    :func:`~tropref._array.to_numpy`, anything else (lists, NumPy arrays) as given."""
    if hasattr(x, "detach") and str(x.dtype).endswith("bfloat16"):
        x = x.detach().float()  # NumPy has no bfloat16; float32 holds every bfloat16 value exactly
    if hasattr(x, "detach") or hasattr(x, "__dlpack__"):
        return to_numpy(x)
    return x


def host_copy(x: Any, dtype: Any) -> np.ndarray | None:
    """A NumPy copy of ``x`` (a weight: framework tensor, array or list) in ``dtype``; None
    stays None (a missing bias). A copy, so that the model given is never modified through it;
    C-ordered, also when ``x`` is a transposed view (a Keras kernel as the core's ``W``), since
    the core reshapes and gathers the weights along their rows and would otherwise copy a
    strided array at each step (seconds on VGG-16's first dense layer).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.ones(2)
    >>> c = host_copy(w, np.float32)
    >>> c.dtype, c is w, host_copy(None, np.float32)
    (dtype('float32'), False, None)
    >>> host_copy(np.ones((2, 3)).T, np.float32).flags["C_CONTIGUOUS"]
    True
    """
    if x is None:
        return None
    return np.array(_on_host(x), dtype=dtype, copy=True, order="C")


def core_batch(x: Any, data_format: str = "channels_first", dtype: Any = np.float64) -> np.ndarray | None:
    """A batch of a model's inputs as the core reads it: NumPy in ``dtype``, images NCHW
    (transposed from NHWC when ``data_format`` is ``"channels_last"``); None stays None.

    Examples
    --------
    >>> import numpy as np
    >>> core_batch(np.zeros((2, 5, 6, 3)), "channels_last").shape
    (2, 3, 5, 6)
    >>> core_batch([[1, 2]], dtype=np.float32)
    array([[1., 2.]], dtype=float32)
    """
    if x is None:
        return None
    a = np.asarray(_on_host(x), dtype=dtype)
    if a.ndim == 4 and data_format == "channels_last":
        a = np.transpose(a, _NHWC_TO_NCHW)
    return a


def core_dtype(dtypes: Iterable[Any]) -> type:
    """The dtype the core computes in for a model whose weights have ``dtypes`` (any
    framework's): float64 when one of them is float64, else float32 (the core computes in
    float32 or float64 only, so float16 and bfloat16 models compute in float32).

    Examples
    --------
    >>> core_dtype(["torch.float64"]).__name__, core_dtype(["float16", "float32"]).__name__
    ('float64', 'float32')
    """
    return np.float64 if any(str(d).rsplit(".", 1)[-1] == "float64" for d in dtypes) else np.float32


def kernel_to_core(w: np.ndarray) -> np.ndarray:
    """A Keras convolution kernel ``(kh, kw, in, out)`` (HWIO) as the core's OIHW.

    Examples
    --------
    >>> import numpy as np
    >>> kernel_to_core(np.zeros((3, 5, 2, 4))).shape
    (4, 2, 3, 5)
    """
    return np.transpose(w, _HWIO_TO_OIHW)


def kernel_from_core(w: np.ndarray) -> np.ndarray:
    """The core's OIHW kernel as Keras's HWIO (the inverse of :func:`kernel_to_core`).

    Examples
    --------
    >>> import numpy as np
    >>> kernel_from_core(np.zeros((4, 2, 3, 5))).shape
    (3, 5, 2, 4)
    """
    return np.transpose(w, _OIHW_TO_HWIO)


def shape_to_core(shape: Sequence[int], data_format: str) -> tuple[int, ...]:
    """One sample's shape as the core's: ``(H, W, C)`` becomes ``(C, H, W)`` in
    ``"channels_last"``; vectors and channels-first images stay as they are.

    Examples
    --------
    >>> shape_to_core((28, 28, 1), "channels_last"), shape_to_core((10,), "channels_last")
    ((1, 28, 28), (10,))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3 and data_format == "channels_last":
        return (shape[2], shape[0], shape[1])
    return shape


def shape_from_core(shape: Sequence[int], data_format: str) -> tuple[int, ...]:
    """The inverse of :func:`shape_to_core`: ``(C, H, W)`` as ``(H, W, C)`` in ``"channels_last"``.

    Examples
    --------
    >>> shape_from_core((1, 28, 28), "channels_last")
    (28, 28, 1)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3 and data_format == "channels_last":
        return (shape[1], shape[2], shape[0])
    return shape


def channel_axis(rank: int, data_format: str) -> int:
    """The channel (feature) axis of a batch of ``rank`` dimensions: 1 for vectors (rank 2),
    else 3 in ``"channels_last"`` and 1 in ``"channels_first"`` (images: rank 4).

    Examples
    --------
    >>> channel_axis(2, "channels_last"), channel_axis(4, "channels_last"), channel_axis(4, "channels_first")
    (1, 3, 1)
    """
    return 1 if rank == 2 or data_format != "channels_last" else 3


def spatial(shape: Sequence[Any], data_format: str) -> tuple[int, int]:
    """``(H, W)`` of a batch of images of ``shape`` in ``data_format``.

    Examples
    --------
    >>> spatial((None, 5, 6, 3), "channels_last"), spatial((None, 3, 5, 6), "channels_first")
    ((5, 6), (5, 6))
    """
    return (int(shape[1]), int(shape[2])) if data_format == "channels_last" else (int(shape[2]), int(shape[3]))
