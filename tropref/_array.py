"""Array-API plumbing shared by the core: namespaces, devices, dtypes, validation, host RNG.

Everything in the core is written against the Python array API standard. The rules kept
here, once, so that the numerical modules need not repeat them:

- one namespace per public call, taken from the user's arrays (``array_namespace``);
- every array created carries the dtype and device of the inputs explicitly;
- no data-dependent output shapes on the device: selections are decided on the host from
  small index arrays and applied with ``xp.take``;
- randomness is drawn on the host from ``numpy.random.default_rng(seed)`` and moved to the
  device, so one seed gives the same result on every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as _device
from array_api_compat import to_device as _to_device

Array = Any
"""Any array of a namespace that follows the array API standard."""

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
    "take_rows",
    "make_rng",
    "resolve_seed",
    "chunk_rows",
    "row_blocks",
    "relu",
    "segment_sum",
    "size_blocks",
    "scaled_one_hot",
]

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


def take_rows(xp: Any, x: Array, host_index: np.ndarray, axis: int = 0) -> Array:
    """``x`` restricted to the positions ``host_index`` (a host integer array) along ``axis``.

    A gather with an index vector decided on the host: the result's shape is known before
    the data, as lazy and GPU backends need (no boolean masks on the device). The identity
    selection returns ``x`` itself: no copy of a possibly large array.

    Parameters
    ----------
    xp : namespace
    x : array
    host_index : numpy.ndarray of int
        Positions along ``axis``, in the order wanted.
    axis : int

    Returns
    -------
    array
        ``x`` itself for the identity selection, else a new array.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from tropref._array import take_rows
    >>> x = np.arange(6.0).reshape(3, 2)
    >>> take_rows(xp, x, np.array([2, 0]))
    array([[4., 5.],
           [0., 1.]])
    >>> take_rows(xp, x, np.arange(3)) is x
    True
    """
    host_index = np.asarray(host_index, dtype=np.int64)
    if host_index.shape == (x.shape[axis],) and np.array_equal(host_index, np.arange(x.shape[axis])):
        return x
    idx = xp.asarray(host_index, device=_device(x))
    return xp.take(x, idx, axis=axis)


def resolve_seed(seed: int | np.integer | None) -> int:
    """A concrete integer seed: ``seed`` itself, or a fresh one drawn from OS entropy.

    Recording the concrete seed in every result makes an unseeded run reproducible.

    Parameters
    ----------
    seed : int or None

    Returns
    -------
    int
        A non-negative integer.

    Raises
    ------
    TypeError
        When ``seed`` is not an integer or None (a bool, a float, a string).
    ValueError
        When ``seed`` is negative.

    See Also
    --------
    make_rng : the generator made from it.

    Examples
    --------
    >>> from tropref._array import resolve_seed
    >>> resolve_seed(5)
    5
    >>> isinstance(resolve_seed(None), int)
    True
    """
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an integer or None, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"`seed` must be non-negative, got {seed}")
    return int(seed)


def make_rng(seed: int | np.integer | None) -> np.random.Generator:
    """Host random generator for ``seed`` (see :func:`resolve_seed`).

    Every random choice of the core is drawn on the host from this generator and then moved
    to the device, so one seed gives the same result on every backend.

    Parameters
    ----------
    seed : int or None

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    TypeError, ValueError
        As :func:`resolve_seed`.

    Examples
    --------
    >>> from tropref._array import make_rng
    >>> int(make_rng(3).integers(1000)) == int(make_rng(3).integers(1000))
    True
    """
    return np.random.default_rng(resolve_seed(seed))


def chunk_rows(n_rows: int, row_bytes: int, max_bytes: int = 64 * 2**20) -> range:
    """Start offsets of row chunks whose temporaries stay below ``max_bytes``.

    Used wherever an ``n × k`` (or larger) temporary would otherwise be built at once.

    Parameters
    ----------
    n_rows : int
        Rows to cover.
    row_bytes : int
        Bytes of temporary per row.
    max_bytes : int
        Budget per chunk (at least one row per chunk).

    Returns
    -------
    range
        ``range(0, n_rows, rows_per_chunk)``.

    Examples
    --------
    >>> from tropref._array import chunk_rows
    >>> chunk_rows(10, row_bytes=8, max_bytes=32)
    range(0, 10, 4)
    """
    step = max(1, int(max_bytes // max(int(row_bytes), 1)))
    return range(0, n_rows, step)


def row_blocks(a: Array, max_bytes: int = 2**20) -> Any:
    """Consecutive slices ``a[lo:hi, ...]`` along axis 0 of at most about ``max_bytes`` each.

    An elementwise pass (with its temporaries) over a large array, made block by block,
    stays in cache and bounded in memory; a small array is one block. The default, 1 MiB,
    is about one core's L2 cache: on the project's machine a pass of ``|V| r`` over a
    ``4096 × 25088`` float32 matrix took 0.04-0.1 s in 1 MiB blocks against 0.3-2 s in
    4 MiB ones and 1 s at once.

    Parameters
    ----------
    a : array
        Any array; a 0-d array is one block.
    max_bytes : int
        Target size of a block (at least one row per block).

    Yields
    ------
    array
        Views ``a[lo:hi, ...]`` covering axis 0 in order.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref._array import row_blocks
    >>> [b.shape for b in row_blocks(np.zeros((5, 4)), max_bytes=64)]   # 64 bytes: two rows
    [(2, 4), (2, 4), (1, 4)]
    """
    if a.ndim == 0:
        yield a
        return
    n = int(a.shape[0])
    row = _itemsize(a)
    for d in a.shape[1:]:
        row *= int(d)
    step = max(1, int(max_bytes // max(row, 1)))
    for lo in range(0, n, step):
        yield a[lo : min(n, lo + step), ...]


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


def segment_sum(
    xp: Any,
    x: Array,
    labels: np.ndarray,
    k: int,
    *,
    axis: int = 0,
    weights: Array | None = None,
    max_bytes: int = 64 * 2**20,
) -> Array:
    """Sums of the slices of ``x`` along ``axis`` grouped by host ``labels``, optionally weighted.

    ``out[..., c, ...] = Σ_{j : labels[j] = c} weights[j] · x[..., j, ...]`` for ``c < k``;
    slices with ``labels[j] = -1`` are left out and a segment without members is zero. This
    is ``x`` multiplied along ``axis`` by the one-hot (or scaled one-hot) matrix
    ``F[j, c] = weights[j] [labels[j] = c]`` without forming ``F``: it reads each slice
    once (``O(size of x)``) where the product with ``F`` costs ``k`` times that.

    The array API has no scatter-add, so the sum is made of gathers. The members are sorted
    on the host by segment; segments of equal size ``s`` are gathered together with one
    ``xp.take`` into a ``(..., segments, s, ...)`` block and summed over ``s``. No padding is
    needed (at most ``√(2n)`` distinct sizes, so as many gathers), each block is cut so that
    its temporaries stay below ``max_bytes``, and the blocks are put back in segment order by
    one last gather, skipped when they already are in order. Every output entry is the sum
    of the same terms as the product with ``F``, without its zero terms: the two agree to
    round-off (floating-point addition is not associative).

    Parameters
    ----------
    xp : namespace
        The array namespace of ``x``.
    x : array
        Any shape; ``x.shape[axis] == labels.size``.
    labels : numpy array of int, shape (n,)
        Segment of every slice, ``-1`` for none (host array: the decision is the host's).
    k : int
        Number of segments (``labels < k``).
    axis : int
        The axis of ``x`` that is summed.
    weights : array, shape (n,), optional
        Per-slice factors (dtype and device of ``x``); 1 when omitted.
    max_bytes : int
        Bound on the temporaries of one gather (the output itself excepted).

    Returns
    -------
    array
        ``x``'s shape with ``axis`` of length ``k``, ``x``'s dtype and device.

    Raises
    ------
    ValueError
        When ``labels`` does not match ``x.shape[axis]`` or holds values outside ``[-1, k)``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref._array import segment_sum
    >>> x = np.arange(12.0).reshape(2, 6)
    >>> segment_sum(np, x, np.array([1, 0, 1, -1, 2, 1]), 4, axis=1)
    array([[ 1.,  7.,  4.,  0.],
           [ 7., 25., 10.,  0.]])
    """
    axis = axis % x.ndim
    labels = np.asarray(labels, dtype=np.int64)
    n = int(x.shape[axis])
    if labels.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},) to match axis {axis} of `x`, got {labels.shape}")
    if labels.size and (labels.min() < -1 or labels.max() >= k):
        raise ValueError(f"`labels` must lie in [-1, {k}), got values in [{labels.min()}, {labels.max()}]")
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    slice_bytes = max(1, int(np.prod([int(d) for i, d in enumerate(x.shape) if i != axis]))) * _itemsize(x)
    pieces, segments = [], []
    row_bytes = slice_bytes * (1 if weights is None else 2)
    for chunk, members in size_blocks(labels, k, row_bytes, max_bytes, whole_singletons=weights is None):
        pieces.append(_gather_sum(xp, x, members.reshape(-1), int(members.shape[1]), axis, weights))
        segments.append(chunk)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        shape = list(x.shape)
        shape[axis] = int(empty.size)
        pieces.append(xp.zeros(tuple(shape), dtype=x.dtype, device=_device(x)))
        segments.append(empty)
    if not pieces:  # k == 0
        shape = list(x.shape)
        shape[axis] = 0
        return xp.zeros(tuple(shape), dtype=x.dtype, device=_device(x))
    out = pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=axis)
    pieces.clear()  # now copied into `out`: freed before the gather below makes a second copy
    placed = np.concatenate(segments)
    inverse = np.empty(k, dtype=np.int64)
    inverse[placed] = np.arange(k)
    return take_rows(xp, out, inverse, axis=axis)


def size_blocks(
    labels: np.ndarray, k: int, row_bytes: int, max_bytes: int = 64 * 2**20, *, whole_singletons: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The non-empty segments of host ``labels``, those of equal size together, in blocks.

    Yields ``(segments, members)``: ``members[b]`` holds the indices of segment
    ``segments[b]`` (ascending), all blocks of one size ``s`` have shape ``(B, s)``, and a
    block's ``B s`` members need at most ``max_bytes`` of temporaries at ``row_bytes`` each
    (at least one segment per block). ``labels[j] = -1`` is in no segment. With
    ``whole_singletons`` the segments of one member come in one block: a gather of them is
    the result itself, with no temporary to bound.

    Examples
    --------
    Segment 3 is empty and unit 3 in none; 16 bytes hold two singletons, or one segment of 3:

    >>> import numpy as np

    >>> for segments, members in size_blocks(np.array([1, 0, 1, -1, 2, 1]), 4, row_bytes=8, max_bytes=16):
    ...     print(segments.tolist(), members.tolist())
    [0, 2] [[1], [4]]
    [1] [[0, 2, 5]]
    """
    members = labels >= 0
    order = np.flatnonzero(members)[np.argsort(labels[members], kind="stable")]  # by segment, then index
    sizes = np.bincount(labels[members], minlength=k)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    for size in np.unique(sizes[sizes > 0]):
        segments = np.flatnonzero(sizes == size)
        if size == 1 and whole_singletons:
            step = segments.size
        else:
            step = max(1, int(max_bytes // (max(int(row_bytes), 1) * int(size))))
        for lo in range(0, segments.size, step):
            chunk = segments[lo : lo + step]
            yield chunk, order[start[chunk][:, None] + np.arange(size)[None, :]]


def _gather_sum(xp: Any, x: Array, index: np.ndarray, size: int, axis: int, weights: Array | None) -> Array:
    """Slices ``index`` of ``x`` (consecutive runs of ``size`` per segment), weighted and summed per run."""
    idx = xp.asarray(index, device=_device(x))
    g = xp.take(x, idx, axis=axis)
    if weights is not None:
        w = xp.take(weights, idx, axis=0)
        g = g * xp.reshape(w, (-1,) + (1,) * (x.ndim - axis - 1))
    if size == 1:
        return g
    shape = (*tuple(x.shape[:axis]), int(index.size) // size, size, *tuple(x.shape[axis + 1 :]))
    return xp.sum(xp.reshape(g, shape), axis=axis + 1)


def _itemsize(x: Array) -> int:
    return 8 if x.dtype == array_namespace(x).float64 else 4


def scaled_one_hot(xp: Any, labels: Array, scale: Array, k: int) -> Array:
    """The dense ``(n, k)`` matrix ``F[j, c] = scale[j] [labels[j] = c]`` (zero row for ``-1``).

    For the users that want the fold as a matrix; the core itself applies it with
    :func:`segment_sum` and gathers instead of products with ``F``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref._array import scaled_one_hot
    >>> scaled_one_hot(np, np.array([1, -1, 0]), np.array([2.0, 0.0, 3.0]), 2)
    array([[0., 2.],
           [0., 0.],
           [3., 0.]])
    """
    cols = xp.arange(k, dtype=labels.dtype, device=_device(scale))
    hot = xp.astype(labels[:, None] == cols[None, :], scale.dtype)
    return hot * scale[:, None]
