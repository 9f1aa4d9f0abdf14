"""Tests of tropref.cluster: weighted K-means (direct and Gram modes) and Weiszfeld."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.strategies import magnitudes, rows_with_duplicates
from tropref import _ward as ward_module
from tropref import cluster
from tropref._lloyd import choose_gram
from tropref._points import Points
from tropref._seeding import seed_indices
from tropref._ward import RELATIVE, ward_costs
from tropref.cluster import kmeans, weiszfeld

MODES = ["direct", "gram"]
INITS = ["k-means||", "k-means++"]


def _sq_objective(X, w, labels, C):
    return float(np.sum(w * np.sum((X - C[labels]) ** 2, axis=1)))


def _objective(X, w, labels, C):
    return float(np.sum(w * np.linalg.norm(X - C[labels], axis=1)))


def _reference_lloyd(X, w, C, max_iter=1000):
    """Plain weighted Lloyd in NumPy from centres C, to a fixed point."""
    labels = None
    for _ in range(max_iter):
        new = np.argmin(((X[:, None, :] - C[None, :, :]) ** 2).sum(-1), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for c in range(C.shape[0]):
            if np.any(labels == c):
                C[c] = np.average(X[labels == c], axis=0, weights=w[labels == c])
    return labels, C


def _blobs(rng, k=5, per=8, d=4, spread=0.01):
    centres = rng.standard_normal((k, d)) * 10
    truth = np.repeat(np.arange(k), per)
    X = centres[truth] + spread * rng.standard_normal((k * per, d))
    return X, truth


def _same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# ------------------------------------------------------------------------ K-means


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 30),
    d=st.integers(1, 5),
    kfrac=st.floats(0.0, 1.0),
    mode=st.sampled_from(MODES),
    init=st.sampled_from(INITS),
    data=st.data(),
)
def test_objective_not_worse_than_reference_lloyd(backend, seed, n, d, kfrac, mode, init, data):
    X = data.draw(rows_with_duplicates(n, d), label="X")
    w = data.draw(hnp.arrays(np.float64, n, elements=magnitudes), label="weights")
    k = 1 + int(kfrac * (n - 1))
    res = kmeans(backend.asarray(X), k, weights=backend.asarray(w), n_init=1, tol=0.0, seed=seed, init=init, _mode=mode)
    # the same seeds, drawn the same way, then a plain NumPy Lloyd
    P = Points(backend.xp, backend.asarray(X), w, mode == "gram", 64 * 2**20)
    idx = seed_indices(P, k, init, np.random.default_rng(seed))
    labels, C = _reference_lloyd(X, w, X[idx].copy())
    assert res.objective <= _sq_objective(X, w, labels, C) * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("init", INITS)
def test_blobs_recovered(backend, init):
    rng = np.random.default_rng(3)
    X, truth = _blobs(rng)
    w = rng.uniform(0.5, 2.0, X.shape[0])
    res = kmeans(backend.asarray(X), 5, weights=backend.asarray(w), seed=7, init=init)
    assert _same_partition(backend.numpy(res.labels), truth)
    assert res.labels.dtype == backend.xp.int64
    assert res.labels.shape == (X.shape[0],)


@pytest.mark.parametrize("mode", MODES)
def test_objective_and_centres_recomputed(backend, mode):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 7))
    w = rng.uniform(0.1, 5.0, 60)
    res = kmeans(backend.asarray(X), 6, weights=backend.asarray(w), seed=2, _mode=mode)
    labels, C = backend.numpy(res.labels), backend.numpy(res.centers)
    for c in range(6):
        np.testing.assert_allclose(
            C[c], np.average(X[labels == c], axis=0, weights=w[labels == c]), rtol=1e-10, atol=1e-12
        )
    assert res.objective == pytest.approx(_sq_objective(X, w, labels, C), rel=1e-12)
    assert res.seed == 2
    assert 1 <= res.n_iter <= 300


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [4, 6, 12])
def test_duplicates_every_cluster_non_empty(backend, mode, k):
    base = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    X = np.repeat(base, 3, axis=0)  # 12 points, 4 distinct
    res = kmeans(backend.asarray(X), k, seed=0, _mode=mode)
    labels = backend.numpy(res.labels)
    assert np.bincount(labels, minlength=k).min() >= 1
    assert labels.max() < k
    assert res.objective == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("init", INITS)
def test_all_points_identical_and_single_point(backend, mode, init):
    X = np.ones((5, 3))
    for k in (1, 3, 5):
        res = kmeans(backend.asarray(X), k, seed=0, init=init, _mode=mode)
        assert np.bincount(backend.numpy(res.labels), minlength=k).min() >= 1
        assert res.objective == 0.0
        np.testing.assert_array_equal(backend.numpy(res.centers), np.ones((k, 3)))
    res = kmeans(backend.asarray(X[:1]), 1, seed=0, init=init, _mode=mode)
    assert backend.numpy(res.labels).tolist() == [0]
    assert res.objective == 0.0
    r = weiszfeld(backend.asarray(X), backend.asarray(np.zeros(5, np.int64)), 3)
    assert np.bincount(backend.numpy(r.labels), minlength=3).min() >= 1
    assert r.objective == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_k_equals_n_and_k_equals_one(backend, mode):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((9, 4))
    w = rng.uniform(0.2, 4.0, 9)
    res = kmeans(backend.asarray(X), 9, weights=backend.asarray(w), seed=1, _mode=mode)
    assert sorted(backend.numpy(res.labels).tolist()) == list(range(9))
    assert res.objective == 0.0
    res = kmeans(backend.asarray(X), 1, weights=backend.asarray(w), seed=1, _mode=mode)
    assert np.all(backend.numpy(res.labels) == 0)
    np.testing.assert_allclose(backend.numpy(res.centers)[0], np.average(X, axis=0, weights=w), rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("init", INITS)
def test_same_seed_same_labels_on_every_backend(all_backends, mode, init):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((80, 12))
    w = rng.uniform(0.5, 2.0, 80)
    results = [kmeans(b.asarray(X), 9, weights=b.asarray(w), seed=123, init=init, _mode=mode) for b in all_backends]
    ref = all_backends[0].numpy(results[0].labels)
    for b, r in zip(all_backends, results, strict=True):
        np.testing.assert_array_equal(b.numpy(r.labels), ref)
        np.testing.assert_allclose(b.numpy(r.centers), all_backends[0].numpy(results[0].centers), rtol=1e-10)
    # an unseeded run reports the seed that reproduces it
    r1 = kmeans(all_backends[0].asarray(X), 9, _mode=mode)
    r2 = kmeans(all_backends[0].asarray(X), 9, seed=r1.seed, _mode=mode)
    np.testing.assert_array_equal(r1.labels, r2.labels)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
def test_dtypes(backend, dtype, mode):
    rng = np.random.default_rng(2)
    X, truth = _blobs(rng, k=4, per=10, d=6)
    res = kmeans(backend.asarray(X, dtype), 4, weights=backend.asarray(np.ones(40), dtype), seed=0, _mode=mode)
    assert res.centers.dtype == getattr(backend.xp, dtype)
    assert res.centers.shape == (4, 6)
    assert _same_partition(backend.numpy(res.labels), truth)
    labels, C = backend.numpy(res.labels), backend.numpy(res.centers).astype(np.float64)
    assert res.objective == pytest.approx(_sq_objective(X, np.ones(40), labels, C), rel=1e-4)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("shape", [(30, 50), (50, 8), (40, 40)])
def test_gram_mode_equals_direct_mode(backend, init, shape):
    rng = np.random.default_rng(shape[0])
    X = rng.standard_normal(shape)
    w = rng.uniform(0.5, 2.0, shape[0])
    kw = dict(weights=backend.asarray(w), seed=4, init=init, n_init=2)
    g = kmeans(backend.asarray(X), 7, _mode="gram", **kw)
    dr = kmeans(backend.asarray(X), 7, _mode="direct", **kw)
    np.testing.assert_array_equal(backend.numpy(g.labels), backend.numpy(dr.labels))
    np.testing.assert_allclose(backend.numpy(g.centers), backend.numpy(dr.centers), rtol=1e-9, atol=1e-12)
    assert g.objective == pytest.approx(dr.objective, rel=1e-10)
    assert g.n_iter == dr.n_iter


def test_mode_rule_and_chunking(backend):
    assert choose_gram(4096, 25089, 410, 3, 300, "k-means||")
    assert not choose_gram(5000, 100, 50, 3, 300, "k-means||")  # G would exceed X
    assert not choose_gram(4096, 4097, 2, 1, 300, "k-means||")  # k tiny: G not worth it
    rng = np.random.default_rng(8)
    X = rng.standard_normal((70, 9))
    for mode in MODES:
        a = kmeans(backend.asarray(X), 8, seed=3, _mode=mode)
        b = kmeans(backend.asarray(X), 8, seed=3, _mode=mode, max_bytes=300)  # many tiny chunks
        np.testing.assert_array_equal(backend.numpy(a.labels), backend.numpy(b.labels))
        assert a.objective == pytest.approx(b.objective, rel=1e-12)


def test_seeding_quality_close_to_sklearn():
    sklearn = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 30))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ours = kmeans(X, 40, seed=0, n_init=1).objective
    theirs = sklearn.KMeans(40, n_init=1, random_state=0).fit(X).inertia_
    assert ours <= 1.02 * theirs


# ---------------------------------------------------------------------- Weiszfeld


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weiszfeld_never_increases(backend, dtype):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 5))
    w = rng.uniform(0.2, 3.0, 50)
    start = kmeans(backend.asarray(X, dtype), 6, weights=backend.asarray(w, dtype), seed=0)
    labels0 = backend.numpy(start.labels)
    C0 = np.stack([np.average(X[labels0 == c], axis=0, weights=w[labels0 == c]) for c in range(6)])
    previous = _objective(X, w, labels0, C0) * (1 + 1e-6)
    for it in range(1, 12):
        r = weiszfeld(
            backend.asarray(X, dtype), start.labels, 6, weights=backend.asarray(w, dtype), max_iter=it, tol=0.0
        )
        assert r.objective <= previous
        previous = r.objective
        labels, C = backend.numpy(r.labels), backend.numpy(r.centers).astype(np.float64)
        assert np.bincount(labels, minlength=6).min() >= 1
        assert r.objective == pytest.approx(_objective(X, w, labels, C), rel=1e-5)
        assert r.seed == -1
        assert r.centers.dtype == getattr(backend.xp, dtype)


def _scipy_median(X, w):
    f = lambda c: float(np.sum(w * np.linalg.norm(X - c, axis=1)))
    best = scipy.optimize.minimize(
        f, np.average(X, axis=0, weights=w), method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-12, maxiter=20000)
    )
    return best.x, best.fun


@pytest.mark.parametrize("case", ["spread", "coincident"])
def test_weiszfeld_matches_scipy(backend, case):
    rng = np.random.default_rng(6)
    if case == "spread":
        X = rng.standard_normal((9, 3))
        w = rng.uniform(0.5, 2.0, 9)
    else:  # the median sits on a heavy data point: the guarded step must reach it
        X = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        w = np.array([5.0, 1.0, 1.0, 1.0])
    r = weiszfeld(
        backend.asarray(X),
        backend.asarray(np.zeros(len(X), np.int64)),
        1,
        weights=backend.asarray(w),
        max_iter=3000,
        tol=0.0,
    )
    c, fun = _scipy_median(X, w)
    assert r.objective <= fun + 1e-9
    np.testing.assert_allclose(backend.numpy(r.centers)[0], c, atol=1e-4)
    # two well-separated clusters: one median each
    X2 = np.concatenate([X, X + 100.0])
    w2 = np.concatenate([w, w[::-1]])
    start = backend.asarray(np.repeat([0, 1], len(X)))
    r2 = weiszfeld(backend.asarray(X2), start, 2, weights=backend.asarray(w2), max_iter=3000, tol=0.0)
    _, fun_b = _scipy_median(X + 100.0, w[::-1])
    assert r2.objective <= fun + fun_b + 1e-8


# ---------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument(backend):
    X = backend.asarray(np.random.default_rng(0).standard_normal((6, 3)))
    bad = [
        (dict(X=backend.asarray(np.ones(6))), ValueError, "`X`"),
        (dict(X=backend.asarray(np.ones((6, 3), np.int64))), TypeError, "`X`"),
        (dict(X=backend.asarray(np.full((6, 3), np.nan))), ValueError, "`X`"),
        (dict(k=0), ValueError, "`k`"),
        (dict(k=7), ValueError, "`k`"),
        (dict(k=2.0), TypeError, "`k`"),
        (dict(k=True), TypeError, "`k`"),
        (dict(weights=backend.asarray(np.ones(5))), ValueError, "`weights`"),
        (dict(weights=backend.asarray(-np.ones(6))), ValueError, "`weights`"),
        (dict(weights=backend.asarray(np.array([1, 1, np.inf, 1, 1, 1.0]))), ValueError, "`weights`"),
        (dict(weights=backend.asarray(np.ones(6, np.int64))), TypeError, "`weights`"),
        (dict(weights=[1.0] * 6), TypeError, "`weights`"),
        (dict(init="random"), ValueError, "`init`"),
        (dict(n_init=0), ValueError, "`n_init`"),
        (dict(max_iter=0), ValueError, "`max_iter`"),
        (dict(tol=-1.0), ValueError, "`tol`"),
        (dict(seed=-3), ValueError, "`seed`"),
    ]
    for change, exc, name in bad:
        args = dict(X=X, k=2)
        args.update(change)
        with pytest.raises(exc, match=name):
            kmeans(args.pop("X"), args.pop("k"), **args)
    labels = backend.asarray(np.zeros(6, np.int64))
    with pytest.raises(ValueError, match="`labels`"):
        weiszfeld(X, backend.asarray(np.full(6, 2, np.int64)), 2)
    with pytest.raises(ValueError, match="`labels`"):
        weiszfeld(X, backend.asarray(np.zeros(5, np.int64)), 2)
    with pytest.raises(TypeError, match="`labels`"):
        weiszfeld(X, backend.asarray(np.zeros(6)), 2)
    with pytest.raises(ValueError, match="`k`"):
        weiszfeld(X, labels, 0)
    with pytest.raises(ValueError, match="`max_iter`"):
        weiszfeld(X, labels, 1, max_iter=0)


def test_mixed_namespaces_rejected():
    import array_api_strict as xps

    X = np.zeros((4, 2))
    with pytest.raises(TypeError, match="`X`"):
        kmeans(X, 2, weights=xps.ones(4, dtype=xps.float64))


def test_inputs_not_modified(backend):
    rng = np.random.default_rng(9)
    X, w = rng.standard_normal((40, 6)), rng.uniform(0.5, 2.0, 40)
    Xb, wb = backend.asarray(X), backend.asarray(w)
    for mode in MODES:
        res = kmeans(Xb, 5, weights=wb, seed=0, _mode=mode)
    labels_before = backend.numpy(res.labels).copy()
    weiszfeld(Xb, res.labels, 5, weights=wb)
    np.testing.assert_array_equal(backend.numpy(Xb), X)
    np.testing.assert_array_equal(backend.numpy(wb), w)
    np.testing.assert_array_equal(backend.numpy(res.labels), labels_before)


# --------------------------------------------------------------------------- Ward


def _ward_objective(X, w, labels):
    return sum(
        float(
            w[labels == c]
            @ np.sum((X[labels == c] - np.average(X[labels == c], axis=0, weights=w[labels == c])) ** 2, axis=1)
        )
        for c in np.unique(labels)
    )


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 30), d=st.integers(1, 4), data=st.data())
def test_ward_matches_scipy_on_points_without_ties(seed, n, d, data):
    """Unweighted, the partition is scipy.cluster.hierarchy's Ward tree cut at k clusters."""
    from scipy.cluster import hierarchy

    k = data.draw(st.integers(1, n), label="k")
    X = np.random.default_rng(seed).normal(size=(n, d))  # continuous: no ties, almost surely
    ours = cluster.ward(X, k)
    theirs = hierarchy.fcluster(hierarchy.linkage(X, "ward"), k, "maxclust")
    assert _same_partition(ours, theirs)
    assert sorted(set(ours.tolist())) == list(range(k))


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 10), data=st.data())
def test_ward_integer_weights_equal_repeated_points(seed, n, data):
    """Weight 3 on a point clusters like three copies of it (scipy on the repeated set)."""
    from scipy.cluster import hierarchy

    rng = np.random.default_rng(seed)
    X, w = rng.normal(size=(n, 3)), rng.integers(1, 4, size=n)
    k = data.draw(st.integers(1, n), label="k")
    ours = cluster.ward(X, k, weights=w.astype(float))
    repeated = hierarchy.fcluster(hierarchy.linkage(np.repeat(X, w, axis=0), "ward"), k, "maxclust")
    assert _same_partition(ours, repeated[np.cumsum(w) - 1])


def test_ward_beats_or_ties_kmeans_on_its_objective_with_small_clusters(backend):
    """At 10-50 % kept most clusters have one or two members; Ward is deterministic there
    and its weighted objective is not worse than one K-means run on average."""
    rng = np.random.default_rng(3)
    X, w = rng.normal(size=(120, 8)), rng.uniform(0.5, 2.0, size=120)
    ratios = []
    for k in (12, 36, 60):
        ward_labels = cluster.ward(backend.asarray(X), k, weights=backend.asarray(w))
        km = kmeans(backend.asarray(X), k, weights=backend.asarray(w), seed=0, n_init=1)
        ratios.append(_ward_objective(X, w, ward_labels) / _ward_objective(X, w, backend.numpy(km.labels)))
    assert np.mean(ratios) <= 1.0


def test_ward_edge_cases_and_errors(backend):
    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert cluster.ward(backend.asarray(X), 3).tolist() == [0, 1, 2]
    assert cluster.ward(backend.asarray(X), 2).tolist() == [0, 0, 1]
    assert cluster.ward(backend.asarray(X), 1).tolist() == [0, 0, 0]
    assert cluster.ward(backend.asarray(X[:1]), 1).tolist() == [0]
    with pytest.raises(ValueError, match="`k`"):
        cluster.ward(backend.asarray(X), 4)
    with pytest.raises(ValueError, match="`weights`"):
        cluster.ward(backend.asarray(X), 2, weights=backend.asarray(np.array([1.0, 0.0, 1.0])))
    with pytest.raises(ValueError, match=r"NaN|finite"):
        cluster.ward(backend.asarray(np.array([[np.nan, 0.0], [1.0, 1.0]])), 1)
    Xc = backend.asarray(X)
    before = backend.numpy(Xc).copy()
    cluster.ward(Xc, 2)
    np.testing.assert_array_equal(backend.numpy(Xc), before)  # input untouched


def _unit_layer(rng, n, d, dtype):
    """TropNNC's Ward input for a random He-normal layer: unit directions, weighted by mass."""
    W = rng.normal(scale=np.sqrt(2.0 / d), size=(n, d))
    V = rng.normal(scale=np.sqrt(2.0 / n), size=(16, n))
    X = (W / np.linalg.norm(W, axis=1, keepdims=True)).astype(dtype)
    return X, np.linalg.norm(W, axis=1) * np.abs(V).sum(axis=0)


@pytest.mark.parametrize("case", ["layer", "separated", "near-parallel", "duplicates"])
def test_ward_float32_gram_gives_the_float64_partition(case):
    """float32 points get a float32 Gram (the close pairs in float64); the partition is the
    one of the same points in float64, which is how every dtype was clustered before.
    Exact ties are the exception: with 12 distinct points, which copies stay apart at
    k > 12 is arbitrary (every such partition has the objective 0) and may differ."""
    rng = np.random.default_rng(11)
    if case == "layer":
        X, w = _unit_layer(rng, 300, 257, np.float32)
    else:
        centres = rng.normal(size=(12, 40))
        spread = {"separated": 0.05, "near-parallel": 1e-4, "duplicates": 0.0}[case]
        X = (centres[rng.integers(0, 12, 240)] + spread * rng.normal(size=(240, 40))).astype(np.float32)
        w = rng.uniform(0.5, 2.0, size=240)
    for k in (6, 12, X.shape[0] // 10, X.shape[0] // 2):
        ours, before = cluster.ward(X, k, weights=w), cluster.ward(X.astype(np.float64), k, weights=w)
        if case == "duplicates" and k > 12:
            assert _ward_objective(X, w, ours) < 1e-20
            assert _ward_objective(X, w, before) < 1e-20
        else:
            assert np.array_equal(ours, before), (case, k)


def test_ward_float32_costs_are_float64_costs_to_the_documented_precision():
    """Nearly parallel units (squared distances 1e-8, far below float32's Gram error) are
    recomputed in float64: every initial cost within a relative 2⁻¹⁰ of the float64 one."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(20, 500))
    X = np.concatenate([base, base + 1e-4 * rng.normal(size=base.shape), rng.normal(size=(200, 500))])
    X32, w = X.astype(np.float32), rng.uniform(0.5, 2.0, size=X.shape[0])
    c32, c64 = ward_costs(X32, w), ward_costs(X32.astype(np.float64), w)
    off = ~np.eye(X.shape[0], dtype=bool)
    assert np.all(np.abs(c32 - c64)[off] <= RELATIVE * c64[off])
    naive = X32 @ X32.T  # what an uncorrected float32 Gram would give for the close pairs
    sq = np.einsum("ij,ij->i", X32.astype(np.float64), X32.astype(np.float64))
    d_naive = sq[:20] + sq[20:40] - 2.0 * np.diagonal(naive[:20, 20:40])
    d_exact = np.diagonal(c64[:20, 20:40]) * (w[:20] + w[20:40]) / (w[:20] * w[20:40])
    assert np.max(np.abs(d_naive - d_exact) / d_exact) > RELATIVE  # the correction is needed


def test_ward_costs_blocks_do_not_change_the_costs(monkeypatch):
    """Blocks of a few rows (and, in float64, slices of a few columns) give the same costs,
    to the round-off of the dtype (BLAS sums a float32 block in another order)."""
    rng = np.random.default_rng(4)
    X, w = _unit_layer(rng, 70, 300, np.float64)
    whole = {dt: ward_costs(X.astype(dt), w) for dt in (np.float32, np.float64)}
    monkeypatch.setattr(ward_module, "BLOCK", 8 * 70 * 3)  # 3 float64 rows, 6 float32 rows
    monkeypatch.setattr(ward_module, "COLUMNS", 64)
    off = ~np.eye(70, dtype=bool)  # the diagonal is never read (Ward sets it to inf)
    for dt, rtol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        np.testing.assert_allclose(ward_costs(X.astype(dt), w)[off], whole[dt][off], rtol=rtol, atol=0)


# Ward's nearest-neighbour chain compacts its matrix to the live clusters (issue 19): the
# merges are those of the chain over the whole masked matrix (the code before, below)


def _merges_masked(cost: np.ndarray, w: np.ndarray) -> list[tuple[float, int, int]]:
    """The chain before compaction: every step over the whole matrix, merged clusters masked."""
    n = int(cost.shape[0])
    size, active, mask = w.copy(), np.ones(n, dtype=bool), np.zeros(n)
    found: list[tuple[float, int, int]] = []
    chain: list[int] = []
    while len(found) < n - 1:
        if not chain:
            chain.append(int(np.argmax(active)))
        a = chain[-1]
        row = cost[a] + mask
        b = int(np.argmin(row))
        if len(chain) > 1 and row[chain[-2]] <= row[b]:
            b = chain[-2]
        if len(chain) == 1 or b != chain[-2]:
            chain.append(b)
            continue
        chain.pop()
        chain.pop()
        lo, hi = min(a, b), max(a, b)
        d_ab = float(cost[a, b])
        new = (size + size[a]) * cost[a]
        new += (size + size[b]) * cost[b]
        new -= size * d_ab
        new /= size + (size[a] + size[b])
        new[lo] = np.inf
        cost[lo, :] = new
        cost[:, lo] = new
        size[lo] += size[hi]
        active[hi], mask[hi] = False, np.inf
        found.append((d_ab, lo, hi))
    return found


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("compact_min", [2, 16, 10**9])
def test_compacted_chain_merges_as_the_masked_chain(monkeypatch, ties, compact_min):
    # compact_min 2: a compaction at every halving down to 2 clusters; 10**9: none (the old path)
    monkeypatch.setattr(ward_module, "_COMPACT_MIN", compact_min)
    rng = np.random.default_rng(3)
    n = 300
    Y = rng.normal(size=(n, 4))
    if ties:  # integer points: many equal costs, where the argmin's first index decides
        Y = np.round(2 * Y)
    w = rng.uniform(0.5, 2.0, size=n)
    cost = ward_module.ward_costs(Y, w)
    np.fill_diagonal(cost, np.inf)
    assert ward_module.merges(cost.copy(), w) == _merges_masked(cost.copy(), w)


def test_compaction_keeps_the_live_rows_and_columns():
    rng = np.random.default_rng(0)
    cost = rng.normal(size=(9, 9))
    keep = np.array([0, 2, 3, 7, 8])
    want = cost[np.ix_(keep, keep)].copy()
    got = ward_module._compact(cost, keep)
    assert np.array_equal(got, want)
    assert np.shares_memory(got, cost)  # in the matrix's own memory
