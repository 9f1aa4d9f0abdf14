"""Hypothesis strategies for weight data: the arrays themselves, not only sizes and seeds.

Drawn through ``hypothesis.extra.numpy`` so that a failure shrinks to a small, readable
layer. The values explore what breaks numerical code: exact zeros (dead, constant and
silent units), ties and duplicated rows (coincident generators, K-means ties), simple
values (shrinking targets) and magnitudes from 1e-4 to 1e4 in one layer, within the range
the core accepts (float64 unit norms that neither underflow nor overflow when squared).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SMALLEST, LARGEST = 1e-4, 1e4

magnitudes = st.floats(np.log10(SMALLEST), np.log10(LARGEST)).map(lambda e: float(10.0**e))
"""Positive magnitudes, log-uniform over ``[1e-4, 1e4]`` (shrinks towards 1.0)."""

values = st.one_of(
    st.just(0.0),
    st.sampled_from([1.0, -1.0, 0.5, -2.0]),  # ties between entries and units
    st.tuples(st.sampled_from([1.0, -1.0]), magnitudes).map(lambda sm: sm[0] * sm[1]),
)
"""One weight: zero, a small repeated value, or a signed magnitude in [1e-4, 1e4]."""


def weights(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """A float64 array of ``shape`` whose entries are :data:`values` (with repeats)."""
    return hnp.arrays(np.float64, shape, elements=values)


@st.composite
def rows_with_duplicates(draw: st.DrawFn, n: int, p: int) -> np.ndarray:
    """``(n, p)`` rows, some of them copies of others (duplicated units)."""
    distinct = draw(st.integers(1, n), label="distinct rows")
    base = draw(weights((distinct, p)), label="base rows")
    index = draw(st.lists(st.integers(0, distinct - 1), min_size=n, max_size=n), label="row of each unit")
    return base[np.array(index)]


@st.composite
def dense_layers(
    draw: st.DrawFn, n: int, d: int, m: int, removable: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``W (n, d), b (n,), V (m, n), b_next (m,)`` of a dense ReLU layer and its next layer.

    At least one unit has non-zero weights and one entry of ``V`` is non-zero, so that the
    layer is not removed exactly as a whole (that case has its own tests). With
    ``removable=False`` no unit is removed exactly either (every unit has non-zero weights
    and is read by the next layer): for statements about the zonotopes of all the units.
    """
    A = draw(rows_with_duplicates(n, d + 1), label="units (W | b)")
    V = draw(weights((m, n)), label="V")
    b_next = draw(weights((m,)), label="b_next")
    if not np.any(A[:, :-1]):
        A[0, 0] = 1.0
    if not np.any(V):
        V[0, 0] = 1.0
    if not removable:
        A[~np.any(A[:, :-1], axis=1), 0] = 1.0
        V[:, ~np.any(V, axis=0)] = 1.0
    return A[:, :-1].copy(), A[:, -1].copy(), V, b_next


def scale_of(*arrays: np.ndarray) -> float:
    """``1 + Π_a Σ|a|``: the size that rounding errors of products of ``arrays`` scale with."""
    return 1.0 + float(np.prod([np.abs(a).sum() for a in arrays]))
