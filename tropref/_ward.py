"""Weighted Ward clustering of :func:`tropref.cluster.ward`: the initial costs (float32 or float64
Gram), the nearest-neighbour chain of merges, the cut at ``k`` clusters (host, NumPy)."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BLOCK",
    "COLUMNS",
    "RELATIVE",
    "cut",
    "distances",
    "gram32_in_place",
    "gram64",
    "merges",
    "mirror",
    "ward_costs",
]

COLUMNS = 4096  # Ward's float64 Gram is summed over slices of this many input columns
BLOCK = 16 * 2**20  # bytes of one block of rows of Ward's Gram (the only temporary)
# A float32 Gram entry is trusted where its probabilistic error bound (below) is at most this
# fraction of the squared distance it enters; closer pairs are recomputed in float64.
RELATIVE = 2.0**-10
_COMPACT_MIN = 256  # below this many live clusters the chain's steps cost their calls, not their length


def ward_costs(Y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Ward's initial merge costs ``Δ(i, j) = w_i w_j / (w_i + w_j) ‖y_i − y_j‖²`` (host, float64).

    ``‖y_i − y_j‖² = ‖y_i‖² + ‖y_j‖² − 2 G_ij`` from the Gram matrix ``G = Y Yᵀ``, the
    ``O(n² d)`` part, formed once straight into the ``n × n`` float64 cost matrix; the only
    temporary is one block (``BLOCK``), so memory stays ``8 n²`` bytes plus a block.

    float64 points: the Gram is summed in float64 over slices of ``COLUMNS`` columns,
    each in blocks of rows on and right of the diagonal (half the work, as a symmetric
    product does), the other triangle mirrored after. float32 points: the Gram is one
    float32 symmetric product (half the time of float64, and no float64 copy of ``Y``)
    written into the cost matrix's own memory and widened there (``gram32_in_place``),
    with the squared norms ``‖y_i‖²`` in float64. A float32 product of length ``d``
    is off by ``|δG_ij| ≲ 4 √d u ‖y_i‖ ‖y_j‖`` (``u = 2⁻²⁴``; the probabilistic bound of
    Higham and Mary, 2019, with a margin; the worst case ``d u`` is not reached by blocked
    BLAS sums), which only matters where ``‖y_i − y_j‖²`` is small: the pairs where
    ``2 |δG_ij|`` may exceed ``RELATIVE`` of their squared distance (nearly parallel
    units) are recomputed in float64. When those are more than an eighth of all pairs the
    whole Gram is formed in float64 instead. Every cost is then within a relative
    ``RELATIVE`` of the float64 one; merges whose costs differ by less can come in
    another order (``docs/performance.md``, "Ward in float32").
    """
    n, d = (int(s) for s in Y.shape)
    cost = np.empty((n, n))
    if Y.dtype != np.float32:
        distances(cost, gram64(Y, cost), w)
        return cost
    sq = np.empty(n)
    rows_sq = max(1, 2**18 // (8 * d))  # small blocks: in cache, and no fresh pages to fault in
    for lo in range(0, n, rows_sq):  # float64 squared norms, one block of rows at a time
        part = Y[lo : lo + rows_sq].astype(np.float64)
        sq[lo : lo + rows_sq] = np.einsum("ij,ij->i", part, part)
    gram32_in_place(Y, cost)
    # 2 |δG_ij| <= RELATIVE ‖y_i − y_j‖² is trusted; the other pairs are recomputed
    i, j = distances(cost, sq, w, 8.0 * math.sqrt(d) * 2.0**-24 / RELATIVE)
    if 8 * i.size > n * (n - 1) // 2:  # mostly near-parallel units: float64 throughout
        distances(cost, gram64(Y, cost), w)
        return cost
    chunk = max(1, BLOCK // (16 * d))
    for lo in range(0, i.size, chunk):
        a, b = i[lo : lo + chunk], j[lo : lo + chunk]
        g = np.einsum("ij,ij->i", Y[a].astype(np.float64), Y[b].astype(np.float64))
        cost[a, b] = cost[b, a] = np.maximum(sq[a] + sq[b] - 2.0 * g, 0.0) * (w[a] * w[b] / (w[a] + w[b]))
    return cost


def gram32_in_place(Y: np.ndarray, cost: np.ndarray) -> None:
    """``cost = Y Yᵀ`` (float64 ``n × n``) from one float32 product written into ``cost``'s own memory.

    The float32 Gram (``X @ X.T``: NumPy calls SYRK, half the flops) fills the first half
    of ``cost``'s bytes, then is widened to float64 in place, from the last block of rows to
    the first: float64 rows ``[r, r + s)`` overwrite float32 rows ``[2r, 2r + 2s)``, which are
    already widened, so a copy of the block being widened is the only temporary.
    """
    n = int(Y.shape[0])
    flat = cost.reshape(-1)
    G32 = flat.view(np.float32)[: n * n].reshape(n, n)
    np.matmul(Y, Y.T, out=G32)
    step = max(1, BLOCK // (4 * n))
    for r in range(((n - 1) // step) * step, -1, -step):
        block = G32[r : r + step].copy()
        cost[r : r + step] = block


def distances(
    cost: np.ndarray, sq: np.ndarray, w: np.ndarray, close: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The Gram ``cost`` turned, in place and in row blocks (no ``n × n`` temporary), into
    ``Δ(i, j) = w_i w_j / (w_i + w_j) max(sq_i + sq_j − 2 G_ij, 0)``.

    With ``close`` also returns the pairs ``i < j`` whose squared distance is at most
    ``close · √(sq_i sq_j)`` (host index arrays), found in the same pass.
    """
    n = int(cost.shape[0])
    norms = np.sqrt(sq) if close is not None else None
    found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    step = max(1, 2**18 // max(n, 1))  # 2 MiB of rows: the block and its temporaries stay in cache
    for lo in range(0, n, step):
        rows = cost[lo : lo + step]
        rows *= -2.0
        rows += sq[lo : lo + step, None] + sq[None, :]
        if close is not None:
            i, j = np.nonzero(rows <= close * norms[lo : lo + step, None] * norms[None, :])
            upper = i + lo < j  # each pair once, the diagonal never
            found_i.append(i[upper] + lo)
            found_j.append(j[upper])
        np.maximum(rows, 0.0, out=rows)
        rows *= w[lo : lo + step, None] * w[None, :] / (w[lo : lo + step, None] + w[None, :])
    return np.concatenate(found_i), np.concatenate(found_j)


def gram64(Y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = Y Yᵀ`` in float64, summed over slices of columns, in blocks of rows; returns
    the squared norms of the rows, summed in the same slices."""
    n = int(Y.shape[0])
    out[...] = 0.0
    sq = np.zeros(n)
    # wide inputs in slices of columns, each slice's product added in blocks of rows on and
    # right of the diagonal: the temporaries stay at most 32 MiB and 16 MiB
    columns = max(256, min(COLUMNS, (2 * BLOCK) // (8 * n)))
    step = max(1, BLOCK // (8 * n))
    for lo in range(0, int(Y.shape[1]), columns):
        part = Y[:, lo : lo + columns].astype(np.float64)
        for r in range(0, n, step):
            out[r : r + step, r:] += part[r : r + step] @ part[r:].T
        sq += np.einsum("ij,ij->i", part, part)
    mirror(out, step)
    return sq


def mirror(G: np.ndarray, step: int) -> None:
    """Copy the upper triangle of ``G`` (filled in blocks of ``step`` rows) onto the lower."""
    n = int(G.shape[0])
    for r in range(0, n, step):
        G[r + step :, r : r + step] = G[r : r + step, r + step :].T


def merges(cost: np.ndarray, w: np.ndarray) -> list[tuple[float, int, int]]:
    """The ``n - 1`` merges ``(cost, lo, hi)`` of the nearest-neighbour chain, in the order found.

    ``cost`` (the initial costs, diagonal ``inf``) is updated in place by the Lance-Williams
    formula; a merged cluster keeps the lower index ``lo``. Merged-away clusters are masked
    (``+inf`` added to the row searched); once half of the clusters are gone the matrix is
    compacted to the live ones (``_compact``, in its own memory), so that the ``O(n)`` steps
    of a merge run over the live clusters only: the same float64 operations on the same
    values, in the same order (the live clusters keep their order), so the same merges.
    """
    n = int(cost.shape[0])
    ids = np.arange(n)  # the original index of each row of the (compacted) matrix
    size = w.copy()
    active = np.ones(n, dtype=bool)
    mask = np.zeros(n)  # +inf on merged-away clusters: they are masked, not erased
    row, new, tmp = np.empty(n), np.empty(n), np.empty(n)  # reused: no allocation per step
    found: list[tuple[float, int, int]] = []
    chain: list[int] = []
    live = n
    while len(found) < n - 1:
        if 2 * live <= int(ids.size) and live >= _COMPACT_MIN:
            keep = np.flatnonzero(active)
            cost = _compact(cost, keep)
            chain = np.searchsorted(keep, chain).tolist()
            ids, size, active, mask = ids[keep], size[keep], active[keep], mask[keep]
            row, new, tmp = row[:live], new[:live], tmp[:live]
        if not chain:
            chain.append(int(np.argmax(active)))
        a = chain[-1]
        np.add(cost[a], mask, out=row)
        b = int(np.argmin(row))
        if len(chain) > 1 and row[chain[-2]] <= row[b]:
            b = chain[-2]  # ties go back down the chain, so that it always ends
        if len(chain) == 1 or b != chain[-2]:
            chain.append(b)
            continue
        chain.pop()
        chain.pop()
        lo, hi = min(a, b), max(a, b)
        d_ab = float(cost[a, b])
        # Lance-Williams, ((W_a + W) Δ_a + (W_b + W) Δ_b − W Δ_ab) / (W_a + W_b + W), in place
        np.add(size, size[a], out=new)
        new *= cost[a]
        np.add(size, size[b], out=tmp)
        tmp *= cost[b]
        new += tmp
        np.multiply(size, d_ab, out=tmp)
        new -= tmp
        np.add(size, size[a] + size[b], out=tmp)
        new /= tmp
        new[lo] = np.inf
        cost[lo, :] = new
        cost[:, lo] = new  # the one strided write per merge
        size[lo] += size[hi]
        active[hi] = False
        mask[hi] = np.inf
        live -= 1
        found.append((d_ab, int(ids[lo]), int(ids[hi])))
    return found


def _compact(cost: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``cost[keep][:, keep]`` (``keep`` ascending), written into the first ``m²`` entries of
    ``cost``'s own memory row by row: row ``r`` lands before row ``keep[r + 1] >= r + 1`` of
    the old matrix begins (``(r + 1) m <= (r + 1) n``), so no row is overwritten before it
    is read (each row's gather is a copy first)."""
    m = int(keep.size)
    flat = cost.reshape(-1)
    for r, i in enumerate(keep):
        flat[r * m : (r + 1) * m] = cost[i, keep]
    return flat[: m * m].reshape(m, m)


def cut(found: list[tuple[float, int, int]], n: int, k: int) -> np.ndarray:
    """The partition after the ``n - k`` cheapest merges, numbered in the order of the
    clusters' smallest members."""
    # stable: a merge comes after the merges it builds on
    order = np.argsort(np.array([m[0] for m in found]), kind="stable")[: n - k]
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for t in order:
        _, lo, hi = found[t]
        parent[root(hi)] = root(lo)
    roots = np.array([root(i) for i in range(n)])
    _, first = np.unique(roots, return_index=True)
    rank = {int(roots[f]): c for c, f in enumerate(np.sort(first))}
    return np.array([rank[int(r)] for r in roots], dtype=np.int64)
