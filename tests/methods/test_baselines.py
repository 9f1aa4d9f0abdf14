"""Baselines (l1, random, cup, neuron_merging: tropref.methods.baselines) against independent
NumPy computations; the contract checks shared with ThiNet (bad k and options, inputs unchanged)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.cluster import hierarchy

from tests.methods.problems import check_contract, layer, problem, relu, samples
from tropref.methods.base import LayerProblem
from tropref.methods.baselines import BASELINES, cup, l1, neuron_merging, random
from tropref.methods.thinet import THINET, thinet

# ----------------------------------------------------------------------------- l1, random


@pytest.mark.parametrize("include_bias", [False, True])
def test_l1_keeps_largest_l1_norms(backend, include_bias):
    rng = np.random.default_rng(0)
    A, V = layer(rng, n=12)
    k = 5
    merge = l1(problem(backend, A, V), k, rng=rng, include_bias=include_bias)
    assignment, fold, inputs = check_contract(backend, merge, 12, k)
    norms = np.abs(A if include_bias else A[:, :-1]).sum(axis=1)
    expected = sorted(np.argsort(norms)[::-1][:k])
    assert merge.info["kept"] == expected
    np.testing.assert_allclose(inputs, A[expected])
    np.testing.assert_array_equal(fold[expected], np.eye(k))
    dropped = np.setdiff1d(np.arange(12), expected)
    assert np.all(assignment[dropped] == -1)
    assert np.all(fold[dropped] == 0)
    assert merge.single_fold


def test_l1_ties_go_to_lower_index(backend):
    A = np.array([[1.0, 0.0], [-1.0, 5.0], [0.5, 0.0], [1.0, 1.0]])
    V = np.ones((1, 4, 1))
    merge = l1(problem(backend, A, V), 2, rng=np.random.default_rng(0))
    assert merge.info["kept"] == [0, 1]


def test_random_is_seeded_and_uniform_subset(backend):
    rng = np.random.default_rng(0)
    A, V = layer(rng, n=20)
    p = problem(backend, A, V)
    a = random(p, 7, rng=np.random.default_rng(3))
    b = random(p, 7, rng=np.random.default_rng(3))
    c = random(p, 7, rng=np.random.default_rng(4))
    check_contract(backend, a, 20, 7)
    assert a.info["kept"] == b.info["kept"]
    assert a.info["kept"] != c.info["kept"]
    assert len(set(a.info["kept"])) == 7
    # every unit is picked at about the same rate
    counts = np.zeros(20)
    for seed in range(400):
        counts[random(p, 5, rng=np.random.default_rng(seed)).info["kept"]] += 1
    assert counts.min() > 50
    assert counts.max() < 150


# ----------------------------------------------------------------------------- neuron merging


def reference_neuron_merging(A, k, threshold):
    """Independent loop, after the description in Kim et al. 2020."""
    keep = sorted(np.argsort(-np.abs(A).sum(axis=1), kind="stable")[:k])
    fold = np.zeros((A.shape[0], k))
    for j in range(A.shape[0]):
        if j in keep:
            fold[j, keep.index(j)] = 1
            continue
        cos = [A[j] @ A[c] / np.linalg.norm(A[j]) / np.linalg.norm(A[c]) for c in keep]
        c = int(np.argmax(cos))
        if threshold is None or cos[c] >= threshold:
            fold[j, c] = np.linalg.norm(A[j]) / np.linalg.norm(A[keep[c]])
    return keep, fold


@pytest.mark.parametrize("threshold", [None, 0.0, 0.45])
def test_neuron_merging_matches_reference(backend, threshold):
    rng = np.random.default_rng(1)
    A, V = layer(rng, n=15, d=3)
    merge = neuron_merging(problem(backend, A, V), 6, rng=rng, threshold=threshold)
    _assignment, fold, inputs = check_contract(backend, merge, 15, 6)
    keep, ref = reference_neuron_merging(A, 6, threshold)
    assert merge.info["kept"] == keep
    np.testing.assert_allclose(fold, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inputs, A[keep])
    assert merge.info["merged"] == int(((ref != 0).sum(axis=1) == 1).sum()) - 6
    if threshold is None:
        assert merge.info["dropped"] == 0


def test_neuron_merging_exact_for_positive_multiple(backend):
    rng = np.random.default_rng(2)
    big = rng.normal(size=(3, 4)) * 5
    A = np.concatenate([big, 0.3 * big[1:2], 0.7 * big[2:3]])  # units 3, 4 parallel to 1, 2
    V = rng.normal(size=(2, 5, 1))
    merge = neuron_merging(problem(backend, A, V), 3, rng=rng)
    assignment, fold, inputs = check_contract(backend, merge, 5, 3)
    assert merge.info["kept"] == [0, 1, 2]
    assert assignment.tolist() == [0, 1, 2, 1, 2]
    np.testing.assert_allclose(fold[3, 1], 0.3) and np.testing.assert_allclose(fold[4, 2], 0.7)
    U = samples(rng, 50, 3)
    np.testing.assert_allclose(relu(U @ inputs.T) @ fold.T, relu(U @ A.T), atol=1e-12)


def test_neuron_merging_threshold_drops_dissimilar(backend):
    A = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.1, 0.0], [0.0, 0.0, 1.0]])
    V = np.ones((1, 4, 1))
    merge = neuron_merging(problem(backend, A, V), 2, rng=np.random.default_rng(0), threshold=0.45)
    assignment, _fold, _ = check_contract(backend, merge, 4, 2)
    assert assignment.tolist() == [0, 1, 0, -1]  # unit 3 is orthogonal to both kept units
    assert merge.info == {**merge.info, "merged": 1, "dropped": 1}


# ----------------------------------------------------------------------------- cup


@pytest.mark.parametrize("representative", ["mean", "max_norm"])
def test_cup_keep_all_is_exact(backend, representative):
    rng = np.random.default_rng(3)
    A, V = layer(rng, n=9)
    merge = cup(problem(backend, A, V), 9, rng=rng, representative=representative)
    _, fold, inputs = check_contract(backend, merge, 9, 9)
    U = samples(rng, 30, 5)
    np.testing.assert_allclose(relu(U @ inputs.T) @ fold.T, relu(U @ A.T), atol=1e-12)


def test_cup_merges_duplicates_exactly(backend):
    rng = np.random.default_rng(4)
    base = rng.normal(size=(3, 5))
    A = base[[0, 1, 2, 0, 1, 2, 1]]
    Vbase = rng.normal(size=(2, 3, 1))
    V = Vbase[:, [0, 1, 2, 0, 1, 2, 1]]
    merge = cup(problem(backend, A, V), 3, rng=rng)
    assignment, fold, inputs = check_contract(backend, merge, 7, 3)
    assert assignment.tolist() == [0, 1, 2, 0, 1, 2, 1]
    assert merge.info["cluster_sizes"] == [2, 3, 2]
    U = samples(rng, 40, 4)
    out = np.einsum("mns,tn->tm", V, relu(U @ A.T))
    Vnew = np.einsum("mns,nc->mcs", V, fold)
    np.testing.assert_allclose(np.einsum("mcs,tc->tm", Vnew, relu(U @ inputs.T)), out, atol=1e-12)


@pytest.mark.parametrize("linkage", ["ward", "average", "complete"])
def test_cup_partition_matches_scipy(backend, linkage):
    rng = np.random.default_rng(5)
    A, V = layer(rng, n=14, d=4, m=2, s=3)
    merge = cup(problem(backend, A, V), 5, rng=rng, linkage=linkage)
    assignment, fold, inputs = check_contract(backend, merge, 14, 5)
    # independent features and cut
    Vt = V.transpose(1, 0, 2).reshape(14, -1)
    feats = np.concatenate([A / np.sqrt(np.mean((A**2).sum(1))), Vt / np.sqrt(np.mean((Vt**2).sum(1)))], axis=1)
    ref = hierarchy.fcluster(hierarchy.linkage(feats, method=linkage), 5, criterion="maxclust")
    assert len(set(ref)) == 5
    # same partition up to relabelling
    pairs_ref = {(i, j) for i, j in itertools.combinations(range(14), 2) if ref[i] == ref[j]}
    pairs = {(i, j) for i, j in itertools.combinations(range(14), 2) if assignment[i] == assignment[j]}
    assert pairs == pairs_ref
    # s = 3 > 1: the representative is the member with the largest L2 norm
    assert merge.info["representative"] == "max_norm"
    norms = np.linalg.norm(A, axis=1)
    for c in range(5):
        members = np.flatnonzero(assignment == c)
        np.testing.assert_allclose(inputs[c], A[members[np.argmax(norms[members])]])
    np.testing.assert_array_equal(fold, np.eye(5)[assignment])


def test_cup_mean_representative_for_dense(backend):
    rng = np.random.default_rng(6)
    A, V = layer(rng, n=8, s=1)
    merge = cup(problem(backend, A, V), 3, rng=rng)
    assignment, _fold, inputs = check_contract(backend, merge, 8, 3)
    assert merge.info["representative"] == "mean"
    for c in range(3):
        np.testing.assert_allclose(inputs[c], A[assignment == c].mean(axis=0), atol=1e-12)


def test_cup_cut_gives_exactly_k_with_ties(backend):
    A = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)  # only two distinct units
    V = np.ones((1, 8, 1))
    merge = cup(problem(backend, A, V), 5, rng=np.random.default_rng(0), features="in")
    assignment, _, _inputs = check_contract(backend, merge, 8, 5)
    assert sorted(set(assignment.tolist())) == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- shared


ALL = {**BASELINES, **THINET}


@pytest.mark.parametrize("name", sorted(ALL))
def test_bad_k_and_options(name):
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(14)
    A, V = layer(rng, n=5)
    p = LayerProblem(xp, A, V, samples(rng, 20, 5))
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match="`k`"):
            ALL[name](p, bad, rng=rng)
    for bad in (2.0, True, "2"):
        with pytest.raises(TypeError, match="`k`"):
            ALL[name](p, bad, rng=rng)
    with pytest.raises(TypeError, match="no_such_option"):
        ALL[name](p, 2, rng=rng, no_such_option=1)


@pytest.mark.parametrize(
    ("fn", "kwargs", "word"),
    [
        (cup, {"linkage": "nope"}, "`linkage`"),
        (cup, {"features": "out"}, "`features`"),
        (cup, {"representative": "median"}, "`representative`"),
        (neuron_merging, {"criterion": "l3"}, "`criterion`"),
        (neuron_merging, {"threshold": 2.0}, "`threshold`"),
        (thinet, {"rescale": "some"}, "`rescale`"),
        (thinet, {"max_samples": 0}, "`max_samples`"),
    ],
)
def test_bad_options(fn, kwargs, word):
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(15)
    A, V = layer(rng, n=5)
    p = LayerProblem(xp, A, V, samples(rng, 20, 5))
    with pytest.raises(ValueError, match=word):
        fn(p, 2, rng=rng, **kwargs)


@pytest.mark.parametrize("name", sorted(ALL))
def test_inputs_not_modified_and_float32(backend, name):
    rng = np.random.default_rng(16)
    A, V = layer(rng, n=10, s=2)
    U = samples(rng, 40, 5)
    p = problem(backend, A, V, U, dtype="float32")
    before = [backend.numpy(x).copy() for x in (p.inputs, p.outgoing, p.data)]
    merge = ALL[name](p, 4, rng=np.random.default_rng(0))
    for x, b in zip((p.inputs, p.outgoing, p.data), before, strict=True):
        np.testing.assert_array_equal(backend.numpy(x), b)
    assert merge.fold.dtype == p.inputs.dtype
    assert merge.inputs.dtype == p.inputs.dtype
    check_contract(backend, merge, 10, 4)
    assert isinstance(dict(merge.info), dict)


# ----------------------------------------------------------------------------- compress_layer


def test_every_baseline_is_registered():
    from tropref.methods import METHODS

    assert {**BASELINES, **THINET}.items() <= METHODS.items()


@pytest.mark.parametrize("name", ["l1", "random", "cup", "neuron_merging"])
def test_compress_layer_certificate_bounds_error(name):
    from tropref import compress_layer

    rng = np.random.default_rng(17)
    W, b = rng.normal(size=(12, 6)), rng.normal(size=12)
    W_next, b_next = rng.normal(size=(4, 12)), rng.normal(size=4)
    res = compress_layer(W, b, 5, W_next=W_next, b_next=b_next, method=name, seed=0)
    assert res.W.shape == (5, 6)
    assert res.W_next.shape == (4, 5)
    X = rng.normal(size=(500, 6)) * 3
    exact = relu(X @ W.T + b) @ W_next.T + b_next
    approx = relu(X @ res.W.T + res.b) @ res.W_next.T + res.b_next
    u_norm = np.linalg.norm(np.concatenate([X, np.ones((500, 1))], axis=1), axis=1)
    assert res.certificate is not None
    assert np.all(np.abs(exact - approx) <= res.certificate[None, :] * u_norm[:, None] + 1e-9)
    if name == "l1":
        keep = sorted(np.argsort(-np.abs(W).sum(axis=1))[:5])
        np.testing.assert_allclose(res.W, W[keep])
        np.testing.assert_allclose(res.W_next, W_next[:, keep])
