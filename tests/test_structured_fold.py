"""The fold applied with its structure: segment sums instead of products with a one-hot matrix.

``compress_layer`` rewrites the next layer as ``Σ_{j∈C} scale_j V[:, j, :]`` (gathers and a
segment sum) where it used to multiply by the dense ``n × k`` fold. These tests hold the new
path to the old one: the same seed gives the same compressed layer, to round-off.
"""

from __future__ import annotations

import numpy as np
import pytest

import tropref
from tropref._blocks import outgoing_gram, scaled_one_hot, segment_sum
from tropref.methods import METHODS
from tropref.methods.base import Merge


def dense_reference(x, labels, k, axis, weights=None):
    """The product with the scaled one-hot matrix, in float64 NumPy."""
    F = np.zeros((labels.size, k))
    rows = np.flatnonzero(labels >= 0)
    F[rows, labels[rows]] = 1.0 if weights is None else weights[rows]
    return np.moveaxis(np.tensordot(np.moveaxis(x, axis, -1), F, axes=1), -1, axis)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("max_bytes", [1, 64 * 2**20])
def test_segment_sum_equals_the_one_hot_product(backend, axis, weighted, max_bytes):
    rng = np.random.default_rng(axis + 3 * weighted)
    shape = [4, 5, 3]
    shape[axis] = 23
    x = rng.normal(size=shape)
    k = 9
    labels = rng.integers(-1, k - 2, size=23)  # dropped slices (-1) and empty segments (k-2, k-1)
    labels[:4] = [0, 0, 0, 0]  # one large segment beside singletons
    w = rng.uniform(0.5, 2.0, size=23) if weighted else None
    out = segment_sum(
        backend.xp,
        backend.asarray(x),
        labels,
        k,
        axis=axis,
        weights=None if w is None else backend.asarray(w),
        max_bytes=max_bytes,
    )
    assert tropref._array.device(out) == backend.device
    assert out.dtype == backend.xp.float64
    np.testing.assert_allclose(backend.numpy(out), dense_reference(x, labels, k, axis, w), rtol=1e-13, atol=1e-13)


def test_segment_sum_of_singletons_in_order_is_a_gather_without_arithmetic():
    x = np.random.default_rng(0).normal(size=(3, 7, 2)).astype(np.float32)
    labels = np.array([-1, 0, -1, 1, 2, -1, 3])
    np.testing.assert_array_equal(segment_sum(np, x, labels, 4, axis=1), x[:, [1, 3, 4, 6]])


@pytest.mark.parametrize("axis", [0, 1])
def test_segment_sum_adds_the_members_left_to_right_on_every_axis(axis):
    # the documented order: ((x_a + x_b) + x_c) + ... in ascending member index, whatever the
    # axis and the segment's size (NumPy's own sum over a contiguous axis is pairwise from 8)
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(12, 12)) * 10.0 ** rng.uniform(-4, 4, size=(12, 12))).astype(np.float32)
    x = x if axis == 0 else x.T.copy()
    labels = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])  # one segment of 10 members
    members = np.flatnonzero(labels == 0)
    w = rng.uniform(0.5, 2.0, size=12).astype(np.float32)
    expected = np.take(x, [members[0]], axis=axis) * w[members[0]]
    for j in members[1:]:
        expected = expected + np.take(x, [j], axis=axis) * w[j]
    out = segment_sum(np, x, labels, 3, axis=axis, weights=w)
    np.testing.assert_array_equal(np.take(out, [0], axis=axis), expected)


def test_segment_sum_rejects_labels_that_do_not_fit():
    with pytest.raises(ValueError, match="labels"):
        segment_sum(np, np.ones((3, 2)), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="labels"):
        segment_sum(np, np.ones((3, 2)), np.array([0, 1, 2]), 2)


def test_merge_built_with_a_dense_fold_still_works_and_gives_its_scale():
    A = np.arange(12.0).reshape(4, 3)
    fold = np.array([[0.0, 2.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    merge = Merge(np.array([1, -1, 0, 1]), fold, A[:2])  # positional, as methods build it
    np.testing.assert_array_equal(merge.scale, [2.0, 0.0, 1.0, 0.5])
    assert merge.fold is fold
    assert merge.k == 2
    lazy = Merge(np.array([1, -1, 0, 1]), None, A[:2], scale=np.array([2.0, 0.0, 1.0, 0.5]))
    np.testing.assert_array_equal(lazy.fold, fold)
    with pytest.raises(AttributeError):
        lazy.inputs = A
    with pytest.raises(ValueError, match="fold"):
        Merge(np.array([0]), None, A[:1])
    general = Merge(np.array([0, 0]), np.array([[1.0], [-1.0]]), A[:1], single_fold=False)
    assert general.scale is None


def layer(rng, kind):
    if kind == "dense":
        W, b, V = rng.normal(size=(30, 6)), rng.normal(size=30), rng.normal(size=(4, 30))
        W[3], b[3] = 0.0, 2.0  # a constant unit (folded into the next bias)
        W[4], b[4] = 0.0, -1.0  # a dead unit
        return W, b, V
    if kind == "conv":
        return rng.normal(size=(10, 2, 3, 3)), rng.normal(size=10), rng.normal(size=(5, 10, 3, 3))
    if kind == "flatten":
        return rng.normal(size=(10, 2, 3, 3)), rng.normal(size=10), rng.normal(size=(7, 10, 6))
    return rng.normal(size=(30, 6)), rng.normal(size=30), rng.normal(size=(1, 30))  # single output


CASES = [
    (m, kind)
    for m in sorted(METHODS)
    for kind in ("dense", "conv", "flatten", "single")
    if not (m == "zonotope_kmeans" and kind != "single")
]


@pytest.mark.parametrize(("method", "kind"), CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_structured_rewrite_equals_the_dense_fold_product(method, kind, dtype):
    """Same seed, same compressed model as the product with the dense fold (to round-off).

    The reference is what ``compress_layer`` computed before the structured path:
    ``V_new = V ×₁ fold``, ``b_next + Σ_s V offset`` and ``Σ_s |V| r`` with
    ``r_j = ‖w_j − (Σ_c fold[j, c]) w̃_{c(j)}‖``.
    """
    rng = np.random.default_rng(len(method) + len(kind))
    W, b, V = (t.astype(dtype) for t in layer(rng, kind))
    c = rng.normal(size=V.shape[0]).astype(dtype)
    data = rng.normal(size=(50, *W.shape[1:])).astype(dtype) if method == "thinet" else None
    res = tropref.compress_layer(W, b, 6, W_next=V, b_next=c, method=method, seed=4, data=data)
    again = tropref.compress_layer(W, b, 6, W_next=V, b_next=c, method=method, seed=4, data=data)
    np.testing.assert_array_equal(np.asarray(res.W_next), np.asarray(again.W_next))

    fold, offset = np.asarray(res.fold, dtype=np.float64), np.asarray(res.offset, dtype=np.float64)
    V3 = V.reshape(V.shape[0], V.shape[1], -1).astype(np.float64)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(res.W_next).reshape(V.shape[0], res.k, -1), np.einsum("mns,nk->mks", V3, fold), **tol
    )
    np.testing.assert_allclose(np.asarray(res.b_next), c + V3.sum(axis=2) @ offset, **tol)
    if res.certificate is not None:
        assignment = np.asarray(res.assignment)
        A = np.concatenate([W.reshape(W.shape[0], -1), b[:, None]], axis=1).astype(np.float64)
        kept = np.concatenate([np.asarray(res.W).reshape(res.k, -1), np.asarray(res.b)[:, None]], axis=1)
        r = np.linalg.norm(A - fold.sum(axis=1)[:, None] * kept[np.maximum(assignment, 0)], axis=1)
        r[(assignment < 0) & (np.abs(A[:, :-1]).sum(axis=1) == 0)] = 0.0  # removed exactly
        expected = np.abs(V3).sum(axis=2) @ r
        if res.zonotope_bound is not None:
            expected = np.minimum(expected, np.sum(np.asarray(res.zonotope_bound, dtype=np.float64)))
        np.testing.assert_allclose(np.asarray(res.certificate), expected, **tol)
    if res.scale is not None:
        np.testing.assert_array_equal(
            np.asarray(scaled_one_hot(np, res.assignment, res.scale, res.k)), np.asarray(res.fold)
        )


@pytest.mark.parametrize("max_bytes", [1, 200, 2**20])
def test_outgoing_gram_in_blocks_is_the_gram_of_the_flattened_read_out(max_bytes):
    """``G = V_flat V_flatᵀ`` over blocks of read-out rows: the same matrix to round-off, and
    to the bit when ``V`` fits one block (the shipped models' layers)."""
    V = np.random.default_rng(5).normal(size=(7, 5, 3)).astype(np.float32)
    flat = np.transpose(V.astype(np.float64), (1, 0, 2)).reshape(5, -1)
    G = outgoing_gram(V, max_bytes=max_bytes)
    assert G.dtype == np.float64
    np.testing.assert_allclose(G, flat @ flat.T, rtol=1e-13, atol=1e-13)
    if max_bytes >= V.size * 8:
        np.testing.assert_array_equal(G, flat @ flat.T)
