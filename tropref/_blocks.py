"""Gathers, segment sums and row blocks of the core: selections decided on the host, applied on the device.

No data-dependent output shapes on the device: a selection is a small host index array
applied with ``xp.take``; a large temporary is made block by block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as _device

Array = Any
"""Any array of a namespace that follows the array API standard."""

__all__ = [
    "Array",
    "chunk_rows",
    "outgoing_gram",
    "row_blocks",
    "scaled_one_hot",
    "segment_sum",
    "size_blocks",
    "take_rows",
]


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
    >>> from tropref._blocks import take_rows
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
    >>> from tropref._blocks import chunk_rows
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
    >>> from tropref._blocks import row_blocks
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


def outgoing_gram(V: np.ndarray, max_bytes: int = 8 * 2**20) -> np.ndarray:
    """``G = V_flat V_flatᵀ``, the next layer's Gram over the units, ``V`` host ``(m, n, s)``
    (read-out, unit, position): ``G_jk = Σ_{i,t} V[i, j, t] V[i, k, t]``, in float64.

    Formed over blocks of read-out rows of about ``max_bytes`` (in float64), so that memory
    stays at ``n²`` plus one block instead of two float64 copies of ``V`` (800 MB each for
    a dense layer of 4,096 units reading a 512 × 7 × 7 map); a ``V`` that fits one block
    is multiplied in one product, as before the blocks.

    Examples
    --------
    >>> import numpy as np
    >>> V = np.arange(12.0).reshape(2, 3, 2)
    >>> bool(np.allclose(outgoing_gram(V, max_bytes=48), np.einsum("ijt,ikt->jk", V, V)))
    True
    """
    m, n, s = (int(d) for d in V.shape)
    starts = chunk_rows(m, 8 * n * s, max_bytes)
    G = None
    for lo in starts:
        flat = np.transpose(np.asarray(V[lo : lo + starts.step], dtype=np.float64), (1, 0, 2)).reshape(n, -1)
        part = flat @ flat.T
        G = part if G is None else G + part
    return np.zeros((n, n)) if G is None else G


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
    ``xp.take`` into a member-major ``(..., s, segments, ...)`` block, whose ``s`` slabs are
    added. No padding is
    needed (at most ``√(2n)`` distinct sizes, so as many gathers), each block is cut so that
    its temporaries stay below ``max_bytes``, and the blocks are put back in segment order by
    one last gather, skipped when they already are in order. Every output entry is the sum
    of the same terms as the product with ``F``, without its zero terms, added left to right
    in ascending member order on every backend: it agrees with the product to round-off
    (floating-point addition is not associative).

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
    >>> from tropref._blocks import segment_sum
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
        pieces.append(_gather_sum(xp, x, members.T.reshape(-1), int(members.shape[1]), axis, weights))
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
    """Slices ``index`` of ``x``, weighted, summed over segments of ``size``: ``index`` holds the
    segments' first members, then their second members, and so on.

    Member-major, so that the sum is one addition of whole slabs per member, in the members'
    order, left to right: the same order on every backend and axis. (``xp.sum`` over the
    member axis would leave the order to the library: NumPy sums a contiguous axis pairwise
    from eight terms, and element by element, slowly, when it is the last.)
    """
    idx = xp.asarray(index, device=_device(x))
    g = xp.take(x, idx, axis=axis)
    if weights is not None:
        w = xp.take(weights, idx, axis=0)
        g = g * xp.reshape(w, (-1,) + (1,) * (x.ndim - axis - 1))
    if size == 1:
        return g
    shape = (*tuple(x.shape[:axis]), size, int(index.size) // size, *tuple(x.shape[axis + 1 :]))
    g = xp.reshape(g, shape)
    lead = (slice(None),) * axis
    total = g[(*lead, 0, ...)]
    for t in range(1, size):
        total = total + g[(*lead, t, ...)]
    return total


def _itemsize(x: Array) -> int:
    return 8 if x.dtype == array_namespace(x).float64 else 4


def scaled_one_hot(xp: Any, labels: Array, scale: Array, k: int) -> Array:
    """The dense ``(n, k)`` matrix ``F[j, c] = scale[j] [labels[j] = c]`` (zero row for ``-1``).

    For the users that want the fold as a matrix; the core itself applies it with
    :func:`segment_sum` and gathers instead of products with ``F``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref._blocks import scaled_one_hot
    >>> scaled_one_hot(np, np.array([1, -1, 0]), np.array([2.0, 0.0, 3.0]), 2)
    array([[0., 2.],
           [0., 0.],
           [3., 0.]])
    """
    cols = xp.arange(k, dtype=labels.dtype, device=_device(scale))
    hot = xp.astype(labels[:, None] == cols[None, :], scale.dtype)
    return hot * scale[:, None]
