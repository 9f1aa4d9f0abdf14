"""compress_layer as an API: shapes, fold/offset semantics, backends, seeds, dtypes, immutability."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import tropref
from tropref._blocks import segment_sum
from tropref.compress import _rewrite_next
from tropref.methods import METHODS


def dense_layer(seed=0, n=12, d=5, m=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=(m, n)), rng.normal(size=m)


def test_result_shapes_dense(backend):
    W, b, V, c = (backend.asarray(t) for t in dense_layer())
    res = tropref.compress_layer(W, b, 4, W_next=V, b_next=c, seed=0)
    assert isinstance(res, tropref.LayerCompression)
    assert res.W.shape == (4, 5)
    assert res.b.shape == (4,)
    assert res.W_next.shape == (3, 4)
    assert res.b_next.shape == (3,)
    assert res.assignment.shape == (12,)
    assert res.fold.shape == (12, 4)
    assert res.offset.shape == (12,)
    assert res.certificate.shape == (3,)
    assert res.zonotope_bound is None
    assert res.method == "tropnnc"
    assert res.seed == 0
    for a in (res.W, res.b, res.W_next, res.b_next, res.fold, res.certificate):
        assert type(a) is type(W)
        assert a.dtype == W.dtype
        assert tropref._array.device(a) == backend.device


def test_result_shapes_convolution(backend):
    rng = np.random.default_rng(1)
    W, b = backend.asarray(rng.normal(size=(8, 3, 3, 3))), backend.asarray(rng.normal(size=8))
    V = backend.asarray(rng.normal(size=(6, 8, 3, 3)))
    res = tropref.compress_layer(W, b, 5, W_next=V, seed=0)
    assert res.W.shape == (5, 3, 3, 3)
    assert res.W_next.shape == (6, 5, 3, 3)
    assert res.b_next.shape == (6,)


def test_next_layer_is_rebuilt_from_fold_and_offset():
    """W_next_new[:, c] = Σ_j W_next[:, j] fold[j, c] and b_next_new = b_next + W_next @ offset."""
    W, b, V, c = dense_layer(seed=3)
    W[2], b[2] = 0.0, 1.5  # a constant unit gives a non-zero offset
    res = tropref.compress_layer(W, b, 5, W_next=V, b_next=c, seed=0)
    fold, offset = np.asarray(res.fold), np.asarray(res.offset)
    np.testing.assert_allclose(np.asarray(res.W_next), V @ fold, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.b_next), c + V @ offset, atol=1e-12)
    assert offset[2] == 1.5
    assert np.all(np.delete(offset, 2) == 0)


def test_fold_rows_point_at_the_assignment():
    W, b, V, _ = dense_layer(seed=4)
    res = tropref.compress_layer(W, b, 6, W_next=V, seed=1)
    fold, assignment = np.asarray(res.fold), np.asarray(res.assignment)
    assert set(assignment) == set(range(6))  # every kept unit receives somebody
    for j, c in enumerate(assignment):
        assert fold[j, c] > 0
        assert np.count_nonzero(fold[j]) == 1


def test_clustering_objective_equals_sum_of_certificates_with_l1_masses():
    """With out_norm='l1', Σ_i certificate_i = Σ_j m_j ‖ŵ_j − ŵ_C‖, the clustering's objective."""
    W, b, V, _ = dense_layer(seed=5, n=20, m=4)
    res = tropref.compress_layer(W, b, 7, W_next=V, seed=2, out_norm="l1")
    objective = sum(run["certificate_objective"] for run in res.info["clustering"])
    assert np.isclose(float(np.sum(res.certificate)), objective, rtol=1e-10)


def test_weiszfeld_refinement_lowers_the_certificate_objective():
    W, b, V, _ = dense_layer(seed=6, n=40, d=6, m=5)
    plain = tropref.compress_layer(W, b, 8, W_next=V, seed=3, variant="paper")
    refined = tropref.compress_layer(W, b, 8, W_next=V, seed=3, variant="paper", refine="weiszfeld")
    run = refined.info["clustering"][0]
    assert run["certificate_objective"] <= run["certificate_objective_before_refine"] + 1e-12
    assert np.sum(refined.certificate) <= np.sum(plain.certificate) + 1e-12


@pytest.mark.parametrize("m", [1, 4])
def test_default_tropnnc_does_not_depend_on_the_seed(m):
    """Ward draws nothing: every seed gives the same compressed layer (the paper variant's
    K-means does depend on it)."""
    W, b, V, _ = dense_layer(seed=8, n=40, d=6, m=m)
    first = tropref.compress_layer(W, b, 9, W_next=V, seed=0)
    for seed in (1, 2, 12345):
        other = tropref.compress_layer(W, b, 9, W_next=V, seed=seed)
        np.testing.assert_array_equal(np.asarray(other.assignment), np.asarray(first.assignment))
        np.testing.assert_array_equal(np.asarray(other.W), np.asarray(first.W))
        np.testing.assert_array_equal(np.asarray(other.W_next), np.asarray(first.W_next))
    paper = {
        tuple(np.asarray(tropref.compress_layer(W, b, 9, W_next=V, seed=s, variant="paper").assignment))
        for s in range(6)
    }
    assert len(paper) > 1


def test_principal_representative_is_the_leading_eigenvector():
    """Each kept unit points along the top eigenvector of Σ_C m_j ŵ_j ŵ_jᵀ (numpy.linalg.eigh),
    and the projection fold reads each member through max(w_j · u, 0) (least squares)."""
    W, b, V, _ = dense_layer(seed=9, n=30, d=5, m=3)
    res = tropref.compress_layer(W, b, 6, W_next=V, seed=0)
    A = np.column_stack([W, b])
    A_new = np.column_stack([np.asarray(res.W), np.asarray(res.b)])
    mass = np.linalg.norm(A, axis=1) * np.abs(V).sum(axis=0)
    D = A / np.linalg.norm(A, axis=1)[:, None]
    assignment, fold = np.asarray(res.assignment), np.asarray(res.fold)
    for c in range(res.k):
        members = np.flatnonzero(assignment == c)
        M = (mass[members, None] * D[members]).T @ D[members]
        top = np.linalg.eigh(M)[1][:, -1]
        u = A_new[c] / np.linalg.norm(A_new[c])
        assert abs(abs(top @ u) - 1.0) < 1e-9
        assert (mass[members] * (D[members] @ u)).sum() > 0  # the sign the mean has
        phi = fold[members, c] * np.linalg.norm(A_new[c])
        np.testing.assert_allclose(phi, np.maximum(A[members] @ u, 0.0), rtol=1e-9, atol=1e-12)


def test_input_metric_scales_each_channel_window_mean():
    """input_ratio=ρ clusters M^{1/2} w with M = I + b ρ² Σ_c e_c e_cᵀ (b = kh·kw per input
    channel): kept units mapped back, so k = n keeps the layer exactly; and the partition
    equals the Euclidean one on weights transformed here by hand."""
    rng = np.random.default_rng(11)
    K, b, K2 = rng.normal(size=(12, 3, 2, 2)), rng.normal(size=12), rng.normal(size=(4, 12, 2, 2))
    full = tropref.compress_layer(K, b, 12, W_next=K2, seed=0, input_ratio=1.0)
    np.testing.assert_allclose(np.asarray(full.W), K, rtol=1e-12, atol=1e-12)
    gain = np.sqrt(1 + 4 * 1.0**2)
    means = K.reshape(12, 3, 4).mean(axis=2, keepdims=True)
    K_metric = (K.reshape(12, 3, 4) + (gain - 1) * means).reshape(K.shape)
    metric = tropref.compress_layer(K, b, 5, W_next=K2, seed=0, input_ratio=1.0)
    by_hand = tropref.compress_layer(K_metric, b, 5, W_next=K2, seed=0)
    np.testing.assert_array_equal(np.asarray(metric.assignment), np.asarray(by_hand.assignment))
    back = np.asarray(by_hand.W).reshape(5, 3, 4)
    back = (back + (1 / gain - 1) * back.mean(axis=2, keepdims=True)).reshape(5, 3, 2, 2)
    np.testing.assert_allclose(np.asarray(metric.W), back, rtol=1e-9, atol=1e-12)
    assert metric.info["input_ratio"] == 1.0
    assert by_hand.info["input_ratio"] is None


def test_paper_variant_is_kmeans_on_generators_with_the_mean_merge():
    """variant='paper', one output: the merged unit is the |c|-weighted mean input vector
    and its output weight is ±Σ|c_j| (the paper's algorithm)."""
    W, b, V, _ = dense_layer(seed=10, n=16, d=4, m=1)
    res = tropref.compress_layer(W, b, 5, W_next=V, seed=0, variant="paper")
    assert res.info["objective_kind"] == "generators"
    assert res.info["cluster"] == "kmeans"
    A = np.column_stack([W, b])
    c = V[0]
    assignment = np.asarray(res.assignment)
    A_new = np.column_stack([np.asarray(res.W), np.asarray(res.b)])
    for k in range(res.k):
        members = np.flatnonzero(assignment == k)
        weights = np.abs(c[members])
        np.testing.assert_allclose(A_new[k], weights @ A[members] / weights.sum(), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(res.W_next)[0, k], c[members].sum(), rtol=1e-10)


def test_same_seed_same_result_on_every_backend(all_backends):
    W, b, V, c = dense_layer(seed=7, n=30, d=6, m=4)
    results = [
        tropref.compress_layer(*(be.asarray(t) for t in (W, b)), 9, W_next=be.asarray(V), b_next=be.asarray(c), seed=11)
        for be in all_backends
    ]
    reference = results[0]
    for be, res in zip(all_backends, results, strict=True):
        np.testing.assert_array_equal(be.numpy(res.assignment), np.asarray(reference.assignment))
        np.testing.assert_allclose(be.numpy(res.W), np.asarray(reference.W), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(be.numpy(res.certificate), np.asarray(reference.certificate), rtol=1e-10)


def test_unseeded_runs_record_a_seed_that_reproduces_them():
    W, b, V, _ = dense_layer(seed=8, n=30)
    first = tropref.compress_layer(W, b, 6, W_next=V)
    again = tropref.compress_layer(W, b, 6, W_next=V, seed=first.seed)
    np.testing.assert_array_equal(np.asarray(first.assignment), np.asarray(again.assignment))


@pytest.mark.parametrize("method", ["tropnnc", "neural_path_kmeans"])
def test_inputs_are_never_modified(backend, method):
    host = dense_layer(seed=9)
    arrays = [backend.asarray(t) for t in host]
    tropref.compress_layer(arrays[0], arrays[1], 4, W_next=arrays[2], b_next=arrays[3], method=method, seed=0)
    for before, after in zip(host, arrays, strict=True):
        np.testing.assert_array_equal(before, backend.numpy(after))


def test_results_never_alias_the_inputs():
    W, b, V, c = dense_layer()
    res = tropref.compress_layer(W, b, W.shape[0], W_next=V, b_next=c, seed=0)
    for out in (res.W, res.b, res.W_next, res.b_next):
        for given in (W, b, V, c):
            assert not np.shares_memory(np.asarray(out), given)


def test_result_is_immutable():
    W, b, V, _ = dense_layer()
    res = tropref.compress_layer(W, b, 4, W_next=V, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.W = W
    with pytest.raises(TypeError):
        res.info["extra"] = 1


def test_float32_results_stay_float32_and_certified(backend):
    W, b, V, c = dense_layer(seed=10, n=16, d=6, m=3)
    arrays = [backend.asarray(t, dtype="float32") for t in (W, b, V, c)]
    res = tropref.compress_layer(arrays[0], arrays[1], 5, W_next=arrays[2], b_next=arrays[3], seed=0)
    assert res.W.dtype == backend.xp.float32
    assert res.certificate.dtype == backend.xp.float32
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)) * 10
    ref = np.maximum(X @ W.T + b, 0) @ V.T + c
    new = np.maximum(X @ backend.numpy(res.W).T.astype(np.float64) + backend.numpy(res.b), 0) @ backend.numpy(
        res.W_next
    ).T + backend.numpy(res.b_next)
    ratio = np.max(np.abs(ref - new) / np.sqrt(np.sum(X**2, 1) + 1)[:, None], axis=0)
    assert np.all(ratio <= backend.numpy(res.certificate) * (1 + 1e-4) + 1e-4)


def test_no_bias_layer_stays_without_bias():
    W, _, V, _ = dense_layer()
    res = tropref.compress_layer(W, None, 4, W_next=V, seed=0)
    assert res.b is None
    assert res.W.shape == (4, 5)


def test_fewer_units_than_k_when_exactly_removable():
    W, b, V, _ = dense_layer(n=6)
    W[:4], b[:4] = 0.0, -1.0  # four dead units
    res = tropref.compress_layer(W, b, 5, W_next=V, seed=0)
    assert res.k == 2
    assert list(np.asarray(res.assignment)[:4]) == [-1] * 4


def test_all_units_removable_keeps_one_silent_unit():
    W = np.zeros((3, 2))
    res = tropref.compress_layer(W, np.zeros(3), 2, W_next=np.ones((1, 3)), seed=0)
    assert res.k == 1
    assert np.all(np.asarray(res.W) == 0)
    assert np.all(np.asarray(res.W_next) == 0)
    assert float(res.certificate[0]) == 0.0


def test_single_output_clusters_respect_signs():
    rng = np.random.default_rng(12)
    W, b = rng.normal(size=(20, 3)), rng.normal(size=20)
    c = rng.normal(size=(1, 20))
    res = tropref.compress_layer(W, b, 6, W_next=c, seed=0)
    assignment, new_c = np.asarray(res.assignment), np.asarray(res.W_next)[0]
    for j, cluster in enumerate(assignment):
        assert np.sign(c[0, j]) == np.sign(new_c[cluster])
    # the merged unit keeps the cluster's |c|-mass: output weight ±Σ|c_j|
    for cluster in range(res.k):
        members = assignment == cluster
        assert np.isclose(abs(new_c[cluster]), np.abs(c[0, members]).sum())


def test_single_output_k_smaller_than_sign_groups_drops_the_lighter_group():
    W = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = tropref.compress_layer(W, None, 1, W_next=np.array([[5.0, -1.0]]), seed=0)
    assert list(np.asarray(res.assignment)) == [0, -1]
    assert np.isclose(float(res.zonotope_bound[1]), 1.0)  # H(Q, {0}) <= ‖g‖ = 1


def test_method_registry_lists_the_core_methods():
    assert {"tropnnc", "zonotope_kmeans", "neural_path_kmeans"} <= set(METHODS)


def test_flatten_blocks_round_trip_shapes():
    rng = np.random.default_rng(13)
    W, b = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4)
    V = rng.normal(size=(10, 4, 25))
    res = tropref.compress_layer(W, b, 2, W_next=V, seed=0)
    assert res.W_next.shape == (10, 2, 25)


def test_pytorch_tensors_give_the_numpy_result():
    """The core is array-API only, so framework tensors work directly (here PyTorch's)."""
    torch = pytest.importorskip("torch")
    W, b, V, c = dense_layer(seed=14, n=20, d=6, m=3)
    ref = tropref.compress_layer(W, b, 7, W_next=V, b_next=c, seed=5)
    res = tropref.compress_layer(
        *(torch.from_numpy(t) for t in (W, b)), 7, W_next=torch.from_numpy(V), b_next=torch.from_numpy(c), seed=5
    )
    assert isinstance(res.W, torch.Tensor)
    assert res.W.dtype == torch.float64
    np.testing.assert_array_equal(res.assignment.numpy(), np.asarray(ref.assignment))
    np.testing.assert_allclose(res.W_next.numpy(), np.asarray(ref.W_next), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.certificate.numpy(), np.asarray(ref.certificate), rtol=1e-12)


def test_kept_units_are_numbered_by_their_smallest_member():
    """The order of the kept units depends on the partition only, not on K-means' numbering."""
    W, b, V, _ = dense_layer(seed=15, n=40, d=6, m=3)
    assignment = np.asarray(tropref.compress_layer(W, b, 9, W_next=V, seed=2).assignment)
    first_seen = [int(c) for c in dict.fromkeys(assignment.tolist())]
    assert first_seen == list(range(9))


def test_keeping_every_unit_keeps_tiny_units():
    """k = n keeps units whose generators are tiny beside the largest (no distinctness cap)."""
    W = np.array([[1.0, 0.0], [1e-10, 0.0], [0.0, 1e-10]])
    for method in ("tropnnc", "zonotope_kmeans"):
        res = tropref.compress_layer(W, np.zeros(3), 3, W_next=np.ones((1, 3)), method=method, seed=0)
        assert res.k == 3
        assert float(res.certificate[0]) <= 1e-25


# The next layer's rewrite is written block by block into one result (issue 19): the same
# array as one segment sum over all outputs, and the one-hot fold's product to round-off


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blockwise_rewrite_is_one_segment_sum(dtype):
    # 9.4 MiB of float32 (18.8 of float64) read: more than one 8 MiB block of outputs
    rng = np.random.default_rng(1)
    m, n, s, k = 600, 64, 64, 20
    V = rng.normal(size=(m, n, s)).astype(dtype)
    labels = rng.integers(-1, k, size=n)
    labels[:k] = np.arange(k)  # no empty cluster
    scale = rng.uniform(0.1, 2.0, size=n).astype(dtype)
    scale[labels < 0] = 0
    got = _rewrite_next(np, V, labels, scale, None, k)
    assert got.shape == (m, k, s)
    assert got.dtype == dtype
    assert np.array_equal(got, segment_sum(np, V, labels, k, axis=1, weights=scale))
    fold = np.zeros((n, k))
    fold[np.flatnonzero(labels >= 0), labels[labels >= 0]] = scale[labels >= 0]
    product = np.einsum("mjs,jc->mcs", V.astype(np.float64), fold)
    np.testing.assert_allclose(got, product, rtol=1e-5, atol=1e-5)


def test_principal_falls_back_to_the_mean_only_where_the_sign_is_undecided():
    """Two equal-mass members that are opposite give no sign to the leading direction: that
    cluster keeps its weighted mean (here 0), computed only then; the others their direction."""
    from tropref.methods.tropnnc import _principal

    u = np.array([0.6, 0.8, 0.0])
    D = np.array([u, -u, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m = np.array([2.0, 2.0, 1.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the undecided cluster's zero direction is not divided by its zero norm
        rep = _principal(np, np.array([0, 0, 1, 1]), D, m, 2)
    np.testing.assert_array_equal(rep[0], np.zeros(3))
    np.testing.assert_allclose(rep[1], [0.0, 1.0, 0.0], atol=1e-12)  # the heavier member's axis
    rep_no_fallback = _principal(np, np.array([0, 1, 1, 1]), D[[2, 0, 2, 3]], m, 2)
    np.testing.assert_allclose(np.linalg.norm(rep_no_fallback, axis=1), 1.0)
