"""Small layer problems in canonical form and the method contract's checks, for the tests of
tropref.methods."""

from __future__ import annotations

import numpy as np

from tropref.methods.base import LayerProblem, Merge

relu = lambda t: np.maximum(t, 0.0)


def problem(backend, A, V, U=None, dtype="float64"):
    xp = backend.xp
    return LayerProblem(
        xp,
        backend.asarray(A, dtype),
        backend.asarray(V, dtype),
        None if U is None else backend.asarray(U, dtype),
    )


def host(backend, merge: Merge):
    return (
        backend.numpy(merge.assignment),
        backend.numpy(merge.fold).astype(np.float64),
        backend.numpy(merge.inputs).astype(np.float64),
    )


def samples(rng, N, d):
    return np.concatenate([rng.normal(size=(N, d)), np.ones((N, 1))], axis=1)


def layer(rng, n=10, d=5, m=3, s=1):
    return rng.normal(size=(n, d + 1)), rng.normal(size=(m, n, s))


def check_contract(backend, merge, n, k):
    assignment, fold, inputs = host(backend, merge)
    assert assignment.shape == (n,)
    assert assignment.dtype == np.int64
    assert fold.shape == (n, k)
    assert inputs.shape[0] == k
    assert np.all((assignment >= -1) & (assignment < k))
    # rows of dropped units are zero; single_fold means one non-negative entry at assignment
    assert np.all(fold[assignment < 0] == 0)
    if merge.single_fold:
        nz = (fold != 0).sum(axis=1)
        assert np.all(nz <= 1)
        assert np.all(fold >= 0)
        rows = np.flatnonzero(nz == 1)
        assert np.all(np.argmax(np.abs(fold[rows]), axis=1) == assignment[rows])
    return assignment, fold, inputs


def moments_of(rng, n):
    """Pre-activation means and variances of ``n`` units."""
    return rng.normal(size=n), rng.uniform(0.1, 3.0, size=n)
