"""ThiNet (tropref.methods.thinet) against independent NumPy computations: the greedy removal,
the least-squares rescales, its data."""

from __future__ import annotations

import numpy as np
import pytest

from tests.methods.problems import check_contract, layer, problem, relu, samples
from tropref.methods import METHODS
from tropref.methods.thinet import THINET, thinet


def contributions(A, V, U):
    """(N, n, m*s): unit j's contribution to every next-layer coordinate on every sample."""
    a = relu(U @ A.T)
    return a[:, :, None] * V.transpose(1, 0, 2).reshape(A.shape[0], -1)[None]


def test_thinet_first_removal_is_best_single(backend):
    rng = np.random.default_rng(7)
    A, V = layer(rng, n=7, d=4, m=3, s=2)
    U = samples(rng, 200, 4)
    merge = thinet(problem(backend, A, V, U), 6, rng=rng, rescale="none")
    contrib = contributions(A, V, U)
    errors = [(contrib[:, j] ** 2).sum() for j in range(7)]
    assert merge.info["removal_order"] == [int(np.argmin(errors))]
    np.testing.assert_allclose(merge.info["objective"], min(errors), rtol=1e-9)


def test_thinet_greedy_objective_matches_direct(backend):
    rng = np.random.default_rng(8)
    A, V = layer(rng, n=8, d=3, m=2, s=1)
    U = samples(rng, 300, 3)
    merge = thinet(problem(backend, A, V, U), 3, rng=rng, rescale="none")
    contrib = contributions(A, V, U)
    T = merge.info["removal_order"]
    assert len(T) == 5
    assert len(set(T)) == 5
    np.testing.assert_allclose(merge.info["objective"], (contrib[:, T].sum(axis=1) ** 2).sum(), rtol=1e-9)
    # each greedy step is the best extension of the previous set
    for step in range(1, 5):
        prev = T[:step]
        errs = {j: (contrib[:, [*prev, j]].sum(axis=1) ** 2).sum() for j in range(8) if j not in prev}
        assert T[step] == min(errs, key=errs.get)
    assert sorted(merge.info["kept"]) == sorted(set(range(8)) - set(T))


def test_thinet_least_squares_exact_when_kept_span_removed(backend):
    rng = np.random.default_rng(9)
    base = rng.normal(size=(4, 6))
    # units 4, 5 are positive multiples of units 0, 1: their activations lie in the span
    A = np.concatenate([base, 2.5 * base[0:1], 0.4 * base[1:2]])
    V = rng.normal(size=(3, 6, 2))
    U = samples(rng, 100, 5)
    merge = thinet(problem(backend, A, V, U), 4, rng=rng)
    _assignment, fold, inputs = check_contract(backend, merge, 6, 4)
    assert not merge.single_fold
    out = np.einsum("mns,tn->tms", V, relu(U @ A.T))
    Vnew = np.einsum("mns,nc->mcs", V, fold)
    approx = np.einsum("mcs,tc->tms", Vnew, relu(U @ inputs.T))
    np.testing.assert_allclose(approx, out, atol=1e-8)
    assert merge.info["relative_residual"] < 1e-12


def test_thinet_full_rescale_is_least_squares(backend):
    rng = np.random.default_rng(10)
    A, V = layer(rng, n=9, d=4, m=3, s=1)
    U = samples(rng, 150, 4)
    merge = thinet(problem(backend, A, V, U), 4, rng=rng)
    _, fold, _ = check_contract(backend, merge, 9, 4)
    keep = merge.info["kept"]
    a = relu(U @ A.T)
    Y = a @ V[:, :, 0].T  # (N, m)
    # independent: least-squares next-layer weights from the kept activations
    W_ls = np.linalg.lstsq(a[:, keep], Y, rcond=None)[0].T  # (m, k)
    np.testing.assert_allclose(V[:, :, 0] @ fold, W_ls, rtol=1e-7, atol=1e-9)
    resid = ((Y - a[:, keep] @ W_ls.T) ** 2).sum() / (Y**2).sum()
    np.testing.assert_allclose(merge.info["relative_residual"], resid, rtol=1e-6, atol=1e-12)


def test_thinet_channel_rescale_matches_lstsq(backend):
    rng = np.random.default_rng(11)
    A, V = layer(rng, n=8, d=3, m=4, s=2)
    U = samples(rng, 120, 3)
    merge = thinet(problem(backend, A, V, U), 5, rng=rng, rescale="channel")
    _assignment, fold, _ = check_contract(backend, merge, 8, 5)
    keep = merge.info["kept"]
    contrib = contributions(A, V, U)  # (N, n, q)
    y = contrib.sum(axis=1).ravel()
    X = contrib[:, keep].transpose(0, 2, 1).reshape(-1, 5)
    lam = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(fold[keep, np.arange(5)], lam, rtol=1e-7)
    assert merge.single_fold == bool(np.all(lam >= 0))


def test_thinet_subsamples_with_rng(backend):
    rng = np.random.default_rng(12)
    A, V = layer(rng, n=6)
    U = samples(rng, 500, 5)
    merge = thinet(problem(backend, A, V, U), 3, rng=np.random.default_rng(0), max_samples=100)
    assert merge.info["samples"] == 100


def test_thinet_needs_data(backend):
    rng = np.random.default_rng(13)
    A, V = layer(rng, n=6)
    with pytest.raises(ValueError, match="`data`"):
        thinet(problem(backend, A, V), 3, rng=rng)
    with pytest.raises(ValueError, match="`data`"):
        thinet(problem(backend, A, V, samples(rng, 10, 3)), 3, rng=rng)


def test_compress_layer_thinet_with_data():
    from tropref import compress_layer

    rng = np.random.default_rng(18)
    W, b = rng.normal(size=(10, 4, 3, 3)), rng.normal(size=10)
    W_next = rng.normal(size=(6, 10, 3, 3))
    X = rng.normal(size=(300, 4, 3, 3))
    with pytest.raises(ValueError, match="`data`"):
        compress_layer(W, b, 4, W_next=W_next, method="thinet")
    res = compress_layer(W, b, 4, W_next=W_next, data=X, method="thinet", seed=0)
    assert res.W.shape == (4, 4, 3, 3)
    assert res.W_next.shape == (6, 4, 3, 3)
    assert res.certificate is None
    full = compress_layer(W, b, 10, W_next=W_next, data=X, method="thinet", seed=0)
    np.testing.assert_allclose(full.W_next, W_next, atol=1e-12)


def test_thinet_is_registered():
    assert THINET == {"thinet": thinet}
    assert THINET.items() <= METHODS.items()
