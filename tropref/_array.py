"""Array-API plumbing shared by the core: namespaces, devices, dtypes, validation, conversions.

Everything in the core is written against the Python array API standard. The rules kept
here, once, so that the numerical modules need not repeat them:

- one namespace per public call, taken from the user's arrays (``array_namespace``);
- every array created carries the dtype and device of the inputs explicitly;
- no data-dependent output shapes on the device: selections are decided on the host from
  small index arrays and applied with ``xp.take``;
- randomness is drawn on the host from ``numpy.random.default_rng(seed)`` and moved to the
  device, so one seed gives the same result on every backend.

The host randomness lives in :mod:`tropref._seeds`, and the gathers, segment sums and row
blocks in :mod:`tropref._blocks`; the core imports them from there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as _device
from array_api_compat import to_device as _to_device

from ._blocks import row_blocks

__all__ = [
    "Array",
    "namespace",
    "device",
    "check_floating",
    "check_finite",
    "check_magnitude",
    "max_abs",
    "check_int",
    "to_numpy",
    "asarray_like",
    "relu",
]

Array = Any  # any array-API array (annotations only)
device = _device


def namespace(**arrays: Array | None) -> Any:
    """Common array namespace of the named arrays (``None`` entries are skipped).

    Parameters
    ----------
    **arrays : array or None
        The arrays of one public call, by argument name (the names appear in errors).

    Returns
    -------
    namespace
        The array-API namespace of the arrays (``array_api_compat.numpy`` for NumPy).

    Raises
    ------
    TypeError
        When an argument is not an array (a list, a scalar), naming it; or when the arrays
        come from different libraries, naming each argument's type.
    ValueError
        When the arrays live on different devices, naming the first two that differ.

    See Also
    --------
    check_floating, check_finite : the validation that follows.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref._array import namespace
    >>> namespace(W=np.ones((2, 3)), b=None).__name__
    'array_api_compat.numpy'
    >>> namespace(W=[[1.0]])
    Traceback (most recent call last):
        ...
    TypeError: `W` must be an array, got list
    """
    given = {name: a for name, a in arrays.items() if a is not None}
    for name, a in given.items():
        if isinstance(a, (list, tuple, int, float, complex, bool)) or not hasattr(a, "shape"):
            raise TypeError(f"`{name}` must be an array, got {type(a).__name__}")
        # NumPy subclasses whose arithmetic is not the array API's: a matrix's `*` is a
        # product and it stays 2-D; a masked array's mask would be dropped silently
        if isinstance(a, np.matrix):
            raise TypeError(f"`{name}` is a numpy.matrix, whose operators are not elementwise; pass np.asarray({name})")
        if isinstance(a, np.ma.MaskedArray):
            raise TypeError(
                f"`{name}` is a masked array; tropref would ignore its mask: pass {name}.filled(0) "
                f"(or the values you mean) as a plain array"
            )
    try:
        xp = array_namespace(*given.values())
    except TypeError as exc:
        kinds = ", ".join(f"`{n}`: {type(a).__module__}.{type(a).__name__}" for n, a in given.items())
        raise TypeError(f"arrays come from different array libraries ({kinds})") from exc
    devices = {name: _device(a) for name, a in given.items()}
    first_name, first_dev = next(iter(devices.items()))
    for name, dev in devices.items():
        if dev != first_dev:
            raise ValueError(
                f"`{name}` is on device {dev!r} but `{first_name}` is on {first_dev!r}; move them to one device"
            )
    return xp


def check_floating(xp: Any, dtype: Any = None, **arrays: Array | None) -> Any:
    """Check that the named arrays share one real floating dtype and return it.

    Parameters
    ----------
    xp : namespace
        The arrays' namespace (:func:`namespace`).
    dtype : dtype, optional
        The dtype every array must have; by default the first array's.
    **arrays : array or None
        The arrays, by argument name; ``None`` entries are skipped.

    Returns
    -------
    dtype
        The common dtype (``dtype`` itself when given; None when every array is None).

    Raises
    ------
    TypeError
        Naming the first argument whose dtype is integer, boolean, complex, half precision, or
        differs from the others.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref._array import check_floating
    >>> check_floating(xp, W=np.ones(2, np.float32), b=None)
    dtype('float32')
    >>> check_floating(xp, W=np.ones(2), b=np.ones(2, np.float32))
    Traceback (most recent call last):
        ...
    TypeError: `b` has dtype float32 but `W` has float64; cast them to one floating dtype
    """
    for name, a in arrays.items():
        if a is None:
            continue
        if a.dtype not in (xp.float32, xp.float64):
            raise TypeError(f"`{name}` must have a real floating dtype (float32 or float64), got {a.dtype}")
        if dtype is None:
            dtype, first = a.dtype, name
        elif a.dtype != dtype:
            raise TypeError(f"`{name}` has dtype {a.dtype} but `{first}` has {dtype}; cast them to one floating dtype")
    return dtype


def check_finite(xp: Any, **arrays: Array | None) -> None:
    """Raise ``ValueError`` naming the first array that holds NaN or infinity.

    Parameters
    ----------
    xp : namespace
    **arrays : array or None
        The arrays, by argument name; ``None`` entries are skipped.

    Raises
    ------
    ValueError
        Naming the first argument with a NaN or an infinite entry.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref._array import check_finite
    >>> check_finite(xp, W=np.ones(2), b=np.array([0.0, np.inf]))
    Traceback (most recent call last):
        ...
    ValueError: `b` contains NaN or infinite values
    """
    for name, a in arrays.items():
        if a is not None and not all(bool(xp.all(xp.isfinite(blk))) for blk in row_blocks(a)):
            raise ValueError(f"`{name}` contains NaN or infinite values")


def check_magnitude(xp: Any, dtype: Any, terms: int, **scales: float) -> None:
    """Raise ``ValueError`` when sums of ``terms`` squared products of entries could overflow.

    The methods form squared norms, Gram matrices and masses from products of an entry of
    each named array (and of each array alone), summed over at most ``terms`` terms: with
    ``M`` the largest of the scales and of their product, every such sum is below
    ``16 · terms · M²``. Checking that bound before any work gives one clear error where an
    overflow would otherwise surface as infinities, NaN or an unrelated message later on.

    Parameters
    ----------
    xp : namespace
    dtype : dtype
        The floating dtype of the computation.
    terms : int
        The most terms any sum has (units times the entries of a unit's features).
    **scales : float
        ``max |entry|`` of each argument, by argument name.

    Raises
    ------
    ValueError
        Naming the argument of the largest scale, the bound and the dtype's largest value,
        and saying what to do: rescale, or compute in float64.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref._array import check_magnitude
    >>> check_magnitude(xp, xp.float32, 100, W=3.0, W_next=1e3)
    >>> check_magnitude(xp, xp.float32, 100, W=3.0, W_next=1e37)
    Traceback (most recent call last):
        ...
    ValueError: `W_next` (largest |entry| 1e+37) is too large for float32 with `W` (3): the squared norms and masses computed from them reach about 1.4e+78, over the largest float32 3.4e+38; rescale the weights (divide them by a power of 2, and the outputs back) or use float64
    """  # noqa: E501
    if not scales:
        return
    limit = float(xp.finfo(dtype).max)
    values = [float(v) for v in scales.values()]
    product = float(np.prod(np.asarray(values, dtype=np.float64)))  # float64 on the host: inf when huge
    biggest = max(*values, product)
    with np.errstate(over="ignore"):
        bound = 16.0 * float(terms) * np.float64(biggest) ** 2
    if bound < limit:
        return
    name = max(scales, key=lambda n: scales[n])
    others = ", ".join(f"`{n}` ({scales[n]:.3g})" for n in scales if n != name)
    kind = "float32" if limit < 1e39 else "float64"
    advice = "rescale the weights (divide them by a power of 2, and the outputs back)"
    raise ValueError(
        f"`{name}` (largest |entry| {scales[name]:.3g}) is too large for {kind}"
        + (f" with {others}" if others else "")
        + ": the squared norms and masses computed from them reach "
        + (f"about {bound:.2g}, over" if np.isfinite(bound) else "more than")
        + f" the largest {kind} {limit:.2g}; {advice}"
        + (" or use float64" if kind == "float32" else "")
    )


def max_abs(xp: Any, a: Array | None) -> float:
    """The largest ``|entry|`` of ``a`` as a host float (0.0 for None), block by block so
    that the ``|a|`` temporary stays small.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref._array import max_abs
    >>> max_abs(xp, np.array([[1.0, -4.0], [2.0, 3.0]])), max_abs(xp, None)
    (4.0, 0.0)
    """
    if a is None or any(int(d) == 0 for d in a.shape):
        return 0.0
    return max(float(to_numpy(xp.max(xp.abs(blk)))) for blk in row_blocks(a))


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as a Python int, checked to be an integer in ``[low, high]``.

    Parameters
    ----------
    name : str
        The argument's name, for the error messages.
    value : int
        Python or NumPy integer (not a bool).
    low : int
        Smallest value allowed.
    high : int, optional
        Largest value allowed (no upper bound by default).

    Returns
    -------
    int

    Raises
    ------
    TypeError
        For a bool or a non-integer (a float, a string), naming the argument.
    ValueError
        For a value out of range, naming the argument and the range.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref._array import check_int
    >>> check_int("k", np.int64(3), 1, 5)
    3
    >>> check_int("k", 7, 1, 5)
    Traceback (most recent call last):
        ...
    ValueError: `k` must satisfy 1 <= k <= 5, got 7
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}")
    value = int(value)
    if high is not None and not low <= value <= high:
        raise ValueError(f"`{name}` must satisfy {low} <= {name} <= {high}, got {value}")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}")
    return value


def to_numpy(x: Array) -> np.ndarray:
    """Copy an array of any supported namespace to a NumPy array on the host.

    The core's one explicit way to the host: what depends on the data (which units to remove,
    K-means seeding, labels) is decided on small host vectors obtained through this function,
    never by an implicit ``numpy.asarray`` (which array-api-strict's second device refuses).
    A NumPy array is returned as it is (no copy); a tensor that tracks gradients is detached.

    Parameters
    ----------
    x : array
        NumPy, CuPy, PyTorch, array-api-strict, or any library that speaks DLPack or the
        buffer protocol.

    Returns
    -------
    numpy.ndarray

    See Also
    --------
    asarray_like : the way back to the device.

    Examples
    --------
    >>> import array_api_strict as xps
    >>> from tropref._array import to_numpy
    >>> to_numpy(xps.asarray([1.0, 2.0], device=xps.Device("device1")))
    array([1., 2.])
    """
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # a framework tensor that tracks gradients (PyTorch)
        x = x.detach()
    try:
        return np.asarray(_to_device(x, "cpu"))
    except (ValueError, TypeError, AttributeError, NotImplementedError):
        pass
    if hasattr(x, "get"):  # CuPy
        return x.get()
    # array-api-strict and other libraries that speak DLPack or the buffer protocol
    xp = array_namespace(x)
    try:
        cpu = xp.__array_namespace_info__().default_device()
        x = _to_device(x, cpu)
    except Exception:
        pass
    return np.asarray(x)


def asarray_like(values: Any, xp: Any, like: Array, dtype: Any = None) -> Array:
    """Move host values to the namespace and device of ``like`` (dtype of ``like`` by default).

    Parameters
    ----------
    values : array_like
        Host values (a NumPy array, a list).
    xp : namespace
        ``like``'s namespace.
    like : array
        The array whose device (and, by default, dtype) the result takes.
    dtype : dtype, optional

    Returns
    -------
    array

    See Also
    --------
    to_numpy : the way to the host.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref._array import asarray_like
    >>> asarray_like([1, 2], xp, np.zeros(3, np.float32))
    array([1., 2.], dtype=float32)
    """
    return xp.asarray(values, dtype=like.dtype if dtype is None else dtype, device=_device(like))


def relu(x: Array) -> Array:
    """``max(x, 0)`` elementwise, with the zero made on ``x``'s device and dtype.

    Parameters
    ----------
    x : array

    Returns
    -------
    array
        Same namespace, device, dtype and shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref._array import relu
    >>> relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    """
    xp = array_namespace(x)
    return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=_device(x)))
