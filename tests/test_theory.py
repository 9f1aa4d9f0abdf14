"""The theory of docs/theory.md, checked by property tests against independent computations.

Each test names the statement it checks. "Independent" means: the sampled errors are
computed here with plain NumPy from the original and the compressed weights, and the
Hausdorff distances by the exact SciPy oracle, never from quantities the library reports.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tropref
from tests.strategies import dense_layers, scale_of, weights
from tropref.tropical import relu_block, tropical_block
from tropref.zonotope import hausdorff_exact, hausdorff_vertex_sets

seeds = st.integers(0, 2**32 - 1)


# --- independent reference computations -------------------------------------------------


def dense_forward(W, b, V, b_next, X):
    """``V relu(W x + b) + b_next`` for every row of ``X``; shape ``(N, m)``."""
    b = np.zeros(W.shape[0]) if b is None else b
    hidden = np.maximum(X @ W.T + b, 0.0)
    out = hidden @ V.T
    return out if b_next is None else out + b_next


def probe_inputs(rng, d, N=1500):
    """Inputs at many scales and directions: ``|Δv(x)| / ‖(x, 1)‖`` is scale-sensitive."""
    directions = rng.normal(size=(N, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = np.exp(rng.uniform(np.log(1e-2), np.log(1e3), size=(N, 1)))
    return directions * radii


def sampled_ratio(original, compressed, X):
    """``max_x |Δ v_i(x)| / ‖(x, 1)‖`` per output ``i``."""
    u_norm = np.sqrt(np.sum(X * X, axis=1) + 1.0)
    return np.max(np.abs(original - compressed) / u_norm[:, None], axis=0)


def result_forward(res, X):
    W, b = np.asarray(res.W), None if res.b is None else np.asarray(res.b)
    return dense_forward(W, b, np.asarray(res.W_next), np.asarray(res.b_next), X)


def split_generators(A, c):
    """Generators of P (c > 0) and Q (c < 0) for one output, rows ``|c_j| w_j``."""
    G = np.abs(c)[:, None] * A
    return G[c > 0], G[c < 0]


def layer(rng, n, d, m):
    return rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=(m, n)), rng.normal(size=m)


# --- Section 1: the tropical identity ---------------------------------------------------


@given(n=st.integers(1, 8), d=st.integers(1, 4), m=st.integers(1, 3), data=st.data())
def test_block_equals_difference_of_support_functions(backend, n, d, m, data):
    """v_i(x) = h_{P_i}(u) − h_{Q_i}(u): the block is a tropical rational function."""
    A = data.draw(weights((n, d + 1)), label="A")
    V = data.draw(weights((m, n)), label="V")
    U = data.draw(weights((5, d + 1)), label="U")
    direct = backend.numpy(relu_block(*(backend.asarray(t) for t in (A, V, U))), dtype="float64")
    tropical = backend.numpy(tropical_block(*(backend.asarray(t) for t in (A, V, U))), dtype="float64")
    independent = V @ np.maximum(A @ U.T, 0.0)
    tol = 1e-12 * scale_of(A, V, U)
    np.testing.assert_allclose(direct, independent, rtol=1e-12, atol=tol)
    np.testing.assert_allclose(tropical, independent, rtol=1e-10, atol=tol)


# --- Propositions A, Corollaries D/E: the chain of bounds for one output -----------------


ONE_OUTPUT_METHODS = [
    ("tropnnc", {}),
    ("tropnnc", {"variant": "paper"}),
    ("tropnnc", {"cluster": "kmeans", "fold": "norm"}),
    ("zonotope_kmeans", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "options"), ONE_OUTPUT_METHODS)
@given(seed=seeds, n=st.integers(2, 7), d=st.integers(1, 2), data=st.data())
def test_sampled_error_below_hausdorff_below_certificate(method, options, seed, n, d, data):
    """sampled max |Δv|/‖u‖ <= H(P, P̃) + H(Q, Q̃) <= certificate, H by the exact oracle."""
    k = data.draw(st.integers(1, n), label="k")
    rng = np.random.default_rng(seed)
    W, b, V, b_next = data.draw(dense_layers(n, d, 1, removable=False), label="layer")
    res = tropref.compress_layer(W, b, k, W_next=V, b_next=b_next, method=method, seed=seed, **options)

    A = np.column_stack([W, b])
    P, Q = split_generators(A, V[0])
    A_new = np.column_stack([np.asarray(res.W), np.asarray(res.b)])
    P_new, Q_new = split_generators(A_new, np.asarray(res.W_next)[0])
    h_p, h_q = hausdorff_exact(P, P_new), hausdorff_exact(Q, Q_new)

    X = probe_inputs(rng, d)
    measured = sampled_ratio(dense_forward(W, b, V, b_next, X), result_forward(res, X), X)[0]
    certificate = float(res.certificate[0])
    # the oracle may overestimate by ~1e-6 relative on ill-conditioned sets (its docstring),
    # and its bounded least squares by ~1e-8 of the generators' size on nearly degenerate ones
    # (a 4-unit layer with weights 1e-3 and ±1 gave H = 2.4e-8 against a bound of 1.3e-8)
    size = max(float(np.max(np.linalg.norm(G, axis=1), initial=0.0)) for G in (P, Q, P_new, Q_new))
    tol = 1e-9 * scale_of(A, V) + 1e-6 * (h_p + h_q) + 1e-7 * size
    assert measured <= h_p + h_q + tol
    assert h_p <= float(res.zonotope_bound[0]) + tol
    assert h_q <= float(res.zonotope_bound[1]) + tol
    assert h_p + h_q <= certificate + tol


@given(seed=seeds, n1=st.integers(1, 5), n2=st.integers(1, 5), p=st.integers(2, 3))
def test_continuous_hausdorff_never_exceeds_vertex_set_distance(seed, n1, n2, p):
    """H(conv A, conv B) <= H(A, B): TropNNC's bound is never worse than the predecessor's."""
    rng = np.random.default_rng(seed)
    G1, G2 = rng.normal(size=(n1, p)), rng.normal(size=(n2, p))
    assert hausdorff_exact(G1, G2) <= hausdorff_vertex_sets(G1, G2) + 1e-9


@pytest.mark.slow
@given(seed=seeds, n=st.integers(1, 5), p=st.integers(1, 3))
def test_hausdorff_oracle_matches_support_function_form(seed, n, p):
    """For convex bodies H = sup_{‖e‖=1} |h_A(e) − h_B(e)|; sampled directions stay below."""
    rng = np.random.default_rng(seed)
    G1, G2 = rng.normal(size=(n, p)), rng.normal(size=(n + 1, p))
    E = rng.normal(size=(4000, p))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    gap = np.max(np.abs(np.maximum(E @ G1.T, 0).sum(1) - np.maximum(E @ G2.T, 0).sum(1)))
    exact = hausdorff_exact(G1, G2)
    assert gap <= exact + 1e-9
    assert gap >= 0.9 * exact - 1e-9  # 4000 directions in <= 3 dimensions come close


# --- Proposition F: several outputs, convolutions, flattens ------------------------------


SEVERAL_OUTPUT_METHODS = [
    ("tropnnc", {}),
    ("tropnnc", {"refine": "weiszfeld"}),
    ("tropnnc", {"variant": "paper"}),
    ("tropnnc", {"variant": "paper", "refine": "weiszfeld"}),
    ("tropnnc", {"representative": "mean", "fold": "projection"}),
    ("tropnnc", {"input_ratio": 1.0}),
    ("neural_path_kmeans", {}),
]


@pytest.mark.parametrize(("method", "options"), SEVERAL_OUTPUT_METHODS)
@given(seed=seeds, n=st.integers(2, 12), d=st.integers(1, 5), m=st.integers(2, 4), data=st.data())
def test_certificate_holds_for_several_outputs(method, options, seed, n, d, m, data):
    """|Δ v_i(x)| <= certificate_i ‖(x, 1)‖ on sampled inputs, for every output i."""
    k = data.draw(st.integers(1, n), label="k")
    rng = np.random.default_rng(seed)
    W, b, V, b_next = data.draw(dense_layers(n, d, m), label="layer")
    res = tropref.compress_layer(W, b, k, W_next=V, b_next=b_next, method=method, seed=seed, **options)
    X = probe_inputs(rng, d, N=500)
    measured = sampled_ratio(dense_forward(W, b, V, b_next, X), result_forward(res, X), X)
    assert np.all(measured <= np.asarray(res.certificate) + 1e-9 * scale_of(np.column_stack([W, b]), V))


@given(seed=seeds, n=st.integers(2, 10), d=st.integers(1, 4), data=st.data())
def test_certificate_per_unit_without_next_layer(seed, n, d, data):
    """With W_next=None the certificate bounds each original activation: a ≈ fold ã + offset."""
    k = data.draw(st.integers(1, n), label="k")
    rng = np.random.default_rng(seed)
    W, b, _, _ = data.draw(dense_layers(n, d, 1), label="layer")
    res = tropref.compress_layer(W, b, k, seed=seed)
    X = probe_inputs(rng, d, N=500)
    original = np.maximum(X @ W.T + b, 0)
    approx = np.maximum(X @ np.asarray(res.W).T + np.asarray(res.b), 0) @ np.asarray(res.fold).T + np.asarray(
        res.offset
    )
    tol = 1e-9 * scale_of(np.column_stack([W, b]))
    assert np.all(sampled_ratio(original, approx, X) <= np.asarray(res.certificate) + tol)


def conv2d_valid(x, K, bias=None):
    """Reference 2-D convolution (cross-correlation), stride 1, no padding: x (C, H, W), K (n, C, kh, kw)."""
    n, _C, kh, kw = K.shape
    H, Wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    patches = np.stack([x[:, i : i + kh, j : j + kw].ravel() for i in range(H) for j in range(Wd)])
    out = (patches @ K.reshape(n, -1).T).T.reshape(n, H, Wd)
    return out if bias is None else out + bias[:, None, None]


def patch_norms(x, kh, kw):
    """‖(patch, 1)‖ at every output position of a stride-1 valid convolution."""
    H, Wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return np.array([[np.sqrt(np.sum(x[:, i : i + kh, j : j + kw] ** 2) + 1) for j in range(Wd)] for i in range(H)])


@given(seed=seeds, n=st.integers(2, 6), C=st.integers(1, 2), m=st.integers(1, 3), data=st.data())
def test_certificate_holds_for_convolution_then_convolution(seed, n, C, m, data):
    """Conv -> ReLU -> conv: the bound holds at every output position, ‖u‖ = largest patch norm
    (also when TropNNC clusters in the per-channel patch-mean metric, ``input_ratio``)."""
    k = data.draw(st.integers(1, n), label="k")
    options = data.draw(st.sampled_from([{}, {"input_ratio": 1.0}, {"variant": "paper"}]), label="options")
    rng = np.random.default_rng(seed)
    K1, b1 = rng.normal(size=(n, C, 2, 2)), rng.normal(size=n)
    K2, b2 = rng.normal(size=(m, n, 2, 2)), rng.normal(size=m)
    res = tropref.compress_layer(K1, b1, k, W_next=K2, b_next=b2, seed=seed, **options)
    assert res.W.shape == (res.k, C, 2, 2)
    assert res.W_next.shape == (m, res.k, 2, 2)
    for scale in (0.1, 1.0, 30.0):
        x = scale * rng.normal(size=(C, 6, 6))
        y = conv2d_valid(np.maximum(conv2d_valid(x, K1, b1), 0), K2, b2)
        y_new = conv2d_valid(
            np.maximum(conv2d_valid(x, np.asarray(res.W), np.asarray(res.b)), 0),
            np.asarray(res.W_next),
            np.asarray(res.b_next),
        )
        norms = patch_norms(x, 2, 2)
        # output (i, r, s) reads first-layer positions (r..r+1, s..s+1): take their largest patch norm
        reach = np.maximum.reduce([norms[a : a + 4, b : b + 4] for a in (0, 1) for b in (0, 1)])
        ratio = np.abs(y - y_new) / reach[None]
        assert np.all(ratio.max(axis=(1, 2)) <= np.asarray(res.certificate) + 1e-9 * (1 + np.abs(K2).sum()))


@pytest.mark.parametrize("order", ["channels_first", "channels_last"])
@given(seed=seeds, n=st.integers(2, 6), data=st.data())
def test_certificate_holds_for_convolution_then_flatten_then_dense(order, seed, n, data):
    """Conv -> ReLU -> flatten (either order) -> dense: the strided column blocks are right."""
    k = data.draw(st.integers(1, n), label="k")
    rng = np.random.default_rng(seed)
    K, bk = rng.normal(size=(n, 1, 2, 2)), rng.normal(size=n)
    s, m = 9, 3  # a 4x4 input gives a 3x3 map per channel
    dense = rng.normal(size=(m, n * s))
    blocks = dense.reshape(m, n, s) if order == "channels_first" else dense.reshape(m, s, n).transpose(0, 2, 1)
    res = tropref.compress_layer(K, bk, k, W_next=blocks, seed=seed)
    V_new = np.asarray(res.W_next)
    dense_new = V_new.reshape(m, -1) if order == "channels_first" else V_new.transpose(0, 2, 1).reshape(m, -1)

    def flatten(fmap):
        return fmap.reshape(-1) if order == "channels_first" else fmap.transpose(1, 2, 0).reshape(-1)

    for scale in (0.1, 1.0, 30.0):
        x = scale * rng.normal(size=(1, 4, 4))
        y = dense @ flatten(np.maximum(conv2d_valid(x, K, bk), 0))
        y_new = dense_new @ flatten(np.maximum(conv2d_valid(x, np.asarray(res.W), np.asarray(res.b)), 0)) + np.asarray(
            res.b_next
        )
        ratio = np.abs(y - y_new) / patch_norms(x, 2, 2).max()
        assert np.all(ratio <= np.asarray(res.certificate) + 1e-9 * (1 + np.abs(dense).sum()))


# --- Exactness ----------------------------------------------------------------------------


def assert_same_function(W, b, V, b_next, res, d, rng, rtol=1e-10):
    X = probe_inputs(rng, d, N=300)
    expected = dense_forward(W, b, V, b_next, X)
    scale = 1 + np.abs(expected).max()
    np.testing.assert_allclose(result_forward(res, X), expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("method", ["tropnnc", "zonotope_kmeans", "neural_path_kmeans"])
@given(seed=seeds, n=st.integers(1, 10), d=st.integers(1, 4), m=st.integers(1, 3), data=st.data())
def test_keeping_every_unit_is_exact(method, seed, n, d, m, data):
    if method == "zonotope_kmeans":
        m = 1
    rng = np.random.default_rng(seed)
    W, b, V, b_next = data.draw(dense_layers(n, d, m), label="layer")
    res = tropref.compress_layer(W, b, n, W_next=V, b_next=b_next, method=method, seed=seed)
    assert res.k <= n  # duplicated, dead or unread units may merge or go, exactly
    assert_same_function(W, b, V, b_next, res, d, rng)
    assert np.all(np.asarray(res.certificate) <= 1e-12 * scale_of(np.column_stack([W, b]), V))


@given(seed=seeds, k=st.integers(1, 5), copies=st.integers(2, 4), d=st.integers(1, 4), m=st.integers(1, 3))
def test_merging_duplicated_units_is_exact(seed, k, copies, d, m):
    """k distinct units, each repeated: compressing to k units loses nothing."""
    rng = np.random.default_rng(seed)
    W0, b0 = rng.normal(size=(k, d)), rng.normal(size=k)
    idx = rng.permutation(np.repeat(np.arange(k), copies))
    W, b = W0[idx], b0[idx]
    V = rng.normal(size=(m, idx.size))
    if m == 1:
        # One output: a duplicate copies the unit with its outgoing weight, so that it lies
        # in the same sign group (directions and generators both coincide).
        V = rng.normal(size=(1, k))[:, idx]
    res = tropref.compress_layer(W, b, k, W_next=V, seed=seed)
    assert_same_function(W, b, V, None, res, d, rng)
    assert float(np.max(res.certificate)) <= 1e-10 * (1 + np.abs(V).sum() * np.abs(W).sum())


@pytest.mark.parametrize("options", [{}, {"variant": "paper", "objective": "directions"}])
@given(seed=seeds, k=st.integers(1, 4), copies=st.integers(2, 4), d=st.integers(1, 4), m=st.integers(1, 4))
def test_merging_positively_parallel_units_is_exact(options, seed, k, copies, d, m):
    """Parallel input vectors of different scales and outgoing weights of either sign.

    Exact with the default (directions clustered, for one output as for several) and with
    the paper variant's direction objective. With one output the sign groups are clustered
    apart, so k counts directions per sign.
    """
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(k, d + 1))
    idx = rng.permutation(np.repeat(np.arange(k), copies))
    scales = rng.uniform(0.1, 10.0, size=idx.size)
    A = scales[:, None] * directions[idx]
    W, b = A[:, :-1], A[:, -1]
    V = rng.normal(size=(m, idx.size))  # mixed signs, per output
    k_needed = k if m > 1 else len(set(zip(idx, V[0] > 0, strict=True)))
    res = tropref.compress_layer(W, b, k_needed, W_next=V, seed=seed, **options)
    assert res.k == k_needed
    assert_same_function(W, b, V, None, res, d, rng, rtol=1e-9)
    assert float(np.max(res.certificate)) <= 1e-9 * (1 + np.abs(V).sum() * np.abs(A).sum())


@given(seed=seeds, k=st.integers(2, 4), d=st.integers(1, 3))
def test_permuting_the_units_permutes_the_partition(seed, k, d):
    """Well-separated parallel groups: any order of the units gives the same merge, exactly."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(d + k + 1, d + k + 1)))[0][:k, : d + 1]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    idx = np.repeat(np.arange(k), 3)
    A = rng.uniform(0.5, 2.0, size=(idx.size, 1)) * directions[idx]
    V = rng.normal(size=(2, idx.size))
    perm = rng.permutation(idx.size)
    a = tropref.compress_layer(A[:, :-1], A[:, -1], k, W_next=V, seed=seed)
    p = tropref.compress_layer(A[perm, :-1], A[perm, -1], k, W_next=V[:, perm], seed=seed)
    same_cluster = lambda lab: lab[:, None] == lab[None, :]
    np.testing.assert_array_equal(
        same_cluster(np.asarray(a.assignment))[np.ix_(perm, perm)], same_cluster(np.asarray(p.assignment))
    )
    assert_same_function(A[perm, :-1], A[perm, -1], V[:, perm], None, p, d, rng, rtol=1e-9)
    assert_same_function(A[:, :-1], A[:, -1], V, None, a, d, rng, rtol=1e-9)


@given(seed=seeds, n=st.integers(4, 8), d=st.integers(1, 3), m=st.integers(1, 3))
def test_dead_constant_and_unread_units_are_removed_exactly(seed, n, d, m):
    rng = np.random.default_rng(seed)
    W, b, V, b_next = layer(rng, n, d, m)
    W[0], b[0] = 0.0, 0.0  # dead: relu(0) = 0
    W[1], b[1] = 0.0, abs(b[1]) + 0.5  # constant relu(b) > 0: goes to the next bias
    V[:, 2] = 0.0  # never read
    res = tropref.compress_layer(W, b, n, W_next=V, b_next=b_next, seed=seed)
    assert res.k == n - 3
    assert res.info["removed_exactly"] == {"dead_or_silent": 2, "constant": 1}
    assert np.asarray(res.offset)[1] == b[1]
    assert_same_function(W, b, V, b_next, res, d, rng)
