"""The statistics correction and the Gaussian refit (tropref.methods.correction; docs/theory.md,
section 9), checked independently.

The certificate must bound the function returned, corrected: the sampled errors here are
plain NumPy forward passes of the original and the returned weights.
"""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tropref
from tests.methods.problems import moments_of
from tests.strategies import dense_layers, scale_of
from tests.test_theory import dense_forward, probe_inputs, result_forward, sampled_ratio
from tropref.methods import correction
from tropref.methods.base import LayerProblem
from tropref.methods.correction import REFITS, check_correct, correct_merge, gaussian_refit

CORRECTIONS = ["full", "variance", "mean", "none"]


@pytest.mark.parametrize("correct", CORRECTIONS)
@given(layer=dense_layers(8, 3, 2), k=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_certificate_bounds_the_corrected_layer(correct, layer, k, seed):
    """|Δ v_i(x)| <= certificate_i ‖(x, 1)‖ for the corrected units and next bias (Proposition F
    plus the constant bias correction)."""
    W, b, V, b_next = layer
    rng = np.random.default_rng(seed)
    res = tropref.compress_layer(W, b, k, W_next=V, b_next=b_next, seed=0, moments=moments_of(rng, 8), correct=correct)
    X = probe_inputs(rng, 3, 600)
    ratio = sampled_ratio(dense_forward(W, b, V, b_next, X), result_forward(res, X), X)
    assert np.all(ratio <= np.asarray(res.certificate) + 1e-9 * scale_of(np.column_stack([W, b]), V))


@given(layer=dense_layers(6, 2, 1), k=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_single_output_certificate_with_correction(layer, k, seed):
    """One output: the zonotope cap is dropped once the units are corrected, and the
    certificate still bounds the corrected layer."""
    W, b, V, b_next = layer
    rng = np.random.default_rng(seed)
    res = tropref.compress_layer(W, b, k, W_next=V, b_next=b_next, seed=0, moments=moments_of(rng, 6))
    X = probe_inputs(rng, 2, 600)
    ratio = sampled_ratio(dense_forward(W, b, V, b_next, X), result_forward(res, X), X)
    assert np.all(ratio <= np.asarray(res.certificate) + 1e-9 * scale_of(np.column_stack([W, b]), V))


@pytest.mark.parametrize("correct", CORRECTIONS)
def test_keeping_every_unit_is_exact_with_moments(correct):
    """k = n: every cluster is one unit, the correction is the identity (gain 1, shift 0, δ = 0)."""
    rng = np.random.default_rng(0)
    W, b, V = rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=(3, 6))
    res = tropref.compress_layer(W, b, 6, W_next=V, moments=moments_of(rng, 6), correct=correct)
    X = rng.normal(size=(50, 4))
    np.testing.assert_allclose(result_forward(res, X), dense_forward(W, b, V, None, X), rtol=1e-12, atol=1e-12)
    assert float(np.max(res.certificate)) < 1e-12


def test_variance_correction_restores_the_members_spread():
    """Two unit-norm units 60° apart with isotropic inputs, merged onto their bisector: each is
    read through its projection, so its spread falls to cos 30° without the correction and
    comes back to 1 with it (measured on samples)."""
    rng = np.random.default_rng(1)
    W, b, V = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]]), np.zeros(2), np.ones((1, 2))
    X = rng.normal(size=(20000, 2))
    moments = (np.zeros(2), np.ones(2))  # exact for x ~ N(0, I)
    spread = {}
    for correct in ("none", "variance"):
        res = tropref.compress_layer(W, b, 1, W_next=V, moments=moments, correct=correct)
        z = X @ np.asarray(res.W).T + np.asarray(res.b)
        spread[correct] = np.asarray(res.scale) * float(z.std())
    np.testing.assert_allclose(spread["none"], np.cos(np.pi / 6), rtol=0.03)
    np.testing.assert_allclose(spread["variance"], 1.0, rtol=0.03)


def test_mean_correction_moves_the_next_bias_by_the_mean_change():
    """δ = V E[a] − Ṽ E[ã] with Gaussian moments: the returned next bias is b_next + δ, and δ
    matches the change of the sampled mean of the next layer when the moments are exact."""
    rng = np.random.default_rng(2)
    n, d = 6, 5
    W, b, V = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=(2, n))
    m = rng.normal(size=d)
    X = m + rng.normal(size=(200000, d))
    moments = (W @ m + b, np.linalg.norm(W, axis=1))  # x ~ N(m, I): exact
    plain = tropref.compress_layer(W, b, 3, W_next=V, moments=moments, correct="none")
    mean = tropref.compress_layer(W, b, 3, W_next=V, moments=moments, correct="mean")
    np.testing.assert_allclose(np.asarray(plain.W), np.asarray(mean.W))
    before = dense_forward(W, b, V, None, X).mean(axis=0)
    after_plain = result_forward(plain, X).mean(axis=0)
    after_mean = result_forward(mean, X).mean(axis=0)
    np.testing.assert_allclose(np.asarray(mean.b_next) - np.asarray(plain.b_next), before - after_plain, atol=0.02)
    assert np.all(np.abs(after_mean - before) < 0.02)


def test_paper_variant_is_unchanged_by_moments():
    rng = np.random.default_rng(3)
    W, b, V = rng.normal(size=(8, 4)), rng.normal(size=8), rng.normal(size=(3, 8))
    plain = tropref.compress_layer(W, b, 3, W_next=V, seed=0, variant="paper")
    with_moments = tropref.compress_layer(W, b, 3, W_next=V, seed=0, variant="paper", moments=moments_of(rng, 8))
    for a, c in ((plain.W, with_moments.W), (plain.W_next, with_moments.W_next), (plain.b_next, with_moments.b_next)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
    ("moments", "error"),
    [
        ((np.zeros(3),), TypeError),
        ((np.zeros(3), np.ones(4)), ValueError),
        ((np.zeros(3), -np.ones(3)), ValueError),
        ((np.array([0.0, np.nan, 0.0]), np.ones(3)), ValueError),
    ],
)
def test_bad_moments_are_refused_by_name(moments, error):
    with pytest.raises(error, match="moments"):
        tropref.compress_layer(np.ones((3, 2)), None, 2, W_next=np.ones((1, 3)), moments=moments)


def test_unknown_correction_is_refused():
    with pytest.raises(ValueError, match="correct"):
        tropref.compress_layer(np.eye(3), None, 2, W_next=np.ones((1, 3)), correct="some")


# --- the network level: statistics from BatchNorms, where TropNNC corrects ----------------


def _bn_chain(rng):
    from tropref.network import BatchNorm, Dense, Network, ReLU

    bn = BatchNorm(rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), eps=1e-3)
    return Network([Dense(rng.normal(size=(4, 3))), bn, ReLU(), Dense(rng.normal(size=(2, 4)))]), bn


def test_folded_batchnorm_leaves_its_statistics():
    from tropref.network import analyse

    rng = np.random.default_rng(4)
    net, bn = _bn_chain(rng)
    mean, std = analyse(net).parts[0].moments[0]
    np.testing.assert_allclose(mean, bn.bias)
    np.testing.assert_allclose(std, np.abs(bn.weight) * np.sqrt(bn.var / (bn.var + 1e-3)))


def test_batchnorm_after_a_max_pool_leaves_no_statistics():
    from tropref.network import BatchNorm, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU, analyse

    rng = np.random.default_rng(5)
    bn = BatchNorm(rng.normal(size=3), rng.uniform(0.5, 2, 3), rng.uniform(0.5, 2, 3), rng.normal(size=3))
    net = Network(
        [Conv2d(rng.normal(size=(3, 1, 3, 3))), MaxPool2d(2), bn, ReLU(), Flatten(), Dense(rng.normal(size=(2, 12)))]
    )
    part = analyse(net, (1, 6, 6)).parts[0]
    assert len(part.chain.layers) == len(net.layers) - 1  # folded through the max pooling (scale >= 0)
    assert part.moments == {}


def test_tropnnc_corrects_residual_branches_and_refits_everywhere():
    from tests.network.test_graph import residual_net
    from tropref.network import analyse
    from tropref.network.rewrite import _RESIDUAL_OUTGOING
    from tropref.network.rewrite import _layer_options as layer_options

    structure = analyse(residual_net())
    branch = [structure.locate(g) for g in structure.compressible]
    assert branch, "the residual net has a compressible inner layer"
    for part, i in branch:
        expected = {
            "correct": "full",
            "outgoing": _RESIDUAL_OUTGOING,
            "refit": "gaussian",
            "refit_variance": True,
            "refit_search": 1,
        }
        assert layer_options(part, i, "tropnnc", {}) == expected
        assert layer_options(part, i, "tropnnc", {"refit": "none"})["refit"] == "none"
        assert layer_options(part, i, "tropnnc", {"correct": "none"})["correct"] == "none"
        assert layer_options(part, i, "cup", {}) == {}
    rng = np.random.default_rng(6)
    chain, _ = _bn_chain(rng)
    part = analyse(chain).parts[0]
    refit = {"refit": "gaussian", "refit_variance": True, "refit_search": 1}
    assert layer_options(part, 0, "tropnnc", {}) == {"correct": "none", **refit}  # a chain: no correction


def test_network_certificate_holds_with_corrected_branches():
    from tests.network.test_graph import residual_net
    from tropref import compress_network
    from tropref.network import forward

    net = residual_net(width=4, inner=8)
    x = np.random.default_rng(7).normal(size=(40, 2, 6, 6))
    small, report = compress_network(net, 0.5, seed=0, inputs=x)
    assert report.layers
    assert any(l.info.get("correction") for l in report.layers if l.info)
    err = np.abs(forward(small, x) - forward(net, x))
    assert np.all(err <= report.certificate_per_output.reshape(1, -1) * (1 + 1e-9) + 1e-9)


@pytest.mark.parametrize("options", [{}, {"correct": "none"}, {"refit_variance": True, "refit_ridge": 0.0}])
@given(layer=dense_layers(8, 3, 2), k=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_certificate_bounds_the_refitted_layer(options, layer, k, seed):
    """The Gaussian refit mixes the kept units (a general fold); the certificate, Proposition F
    on the single fold plus Σ_c |Ṽ − V F₀| ‖w̃_c‖ plus the bias change, still bounds it."""
    W, b, V, b_next = layer
    rng = np.random.default_rng(seed)
    res = tropref.compress_layer(
        W, b, k, W_next=V, b_next=b_next, seed=0, moments=moments_of(rng, 8), refit="gaussian", **options
    )
    assert res.certificate is not None
    if res.scale is not None:  # no general fold: the single fold was exact, or the pre-pass left nothing to merge
        assert (res.info.get("correction") or {}).get("refit") in (None, "none: the single fold is exact")
    X = probe_inputs(rng, 3, 600)
    ratio = sampled_ratio(dense_forward(W, b, V, b_next, X), result_forward(res, X), X)
    assert np.all(ratio <= np.asarray(res.certificate) + 1e-9 * scale_of(np.column_stack([W, b]), V))


def test_an_exact_merge_is_not_refitted():
    """Duplicated units merge exactly by the single fold; the refit's solve would only add
    round-off (and a looser certificate), so it is skipped and the merge stays exact."""
    rng = np.random.default_rng(4)
    W, b, V = rng.normal(size=(4, 5)), rng.normal(size=4), rng.normal(size=(3, 8))
    W2, b2 = np.concatenate([W, 2.0 * W]), np.concatenate([b, 2.0 * b])
    moments = (b2, np.linalg.norm(W2, axis=1))
    res = tropref.compress_layer(W2, b2, 4, W_next=V, seed=0, moments=moments, refit="gaussian")
    assert res.scale is not None
    assert res.info["correction"]["refit"] == "none: the single fold is exact"
    assert float(np.max(res.certificate)) <= 1e-12
    X = rng.normal(size=(50, 5))
    np.testing.assert_allclose(result_forward(res, X), dense_forward(W2, b2, V, None, X), atol=1e-12)


def test_refit_lowers_the_error_where_the_gaussian_model_is_exact():
    """x ~ N(0, I): the pre-activations are jointly Gaussian with the cosine correlations, so
    the refit is the population least-squares fold and beats the single fold on a sample."""
    rng = np.random.default_rng(3)
    n, d = 12, 6
    W, b, V = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=(4, n))
    moments = (b, np.linalg.norm(W, axis=1))
    X = rng.normal(size=(20000, d))
    exact = dense_forward(W, b, V, None, X)
    errors = {}
    for refit in ("none", "gaussian"):
        res = tropref.compress_layer(W, b, 5, W_next=V, seed=0, moments=moments, correct="none", refit=refit)
        errors[refit] = float(np.mean((result_forward(res, X) - exact) ** 2))
    assert errors["gaussian"] < 0.9 * errors["none"]


def test_refit_without_moments_is_the_single_fold():
    rng = np.random.default_rng(4)
    W, b, V = rng.normal(size=(8, 4)), rng.normal(size=8), rng.normal(size=(3, 8))
    plain = tropref.compress_layer(W, b, 4, W_next=V, seed=0)
    refit = tropref.compress_layer(W, b, 4, W_next=V, seed=0, refit="gaussian")
    assert refit.scale is not None
    np.testing.assert_array_equal(np.asarray(refit.W_next), np.asarray(plain.W_next))


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"refit": "lsq"}, "refit"),
        ({"refit_ridge": -1.0}, "refit_ridge"),
        ({"refit_correlation": "x"}, "refit_correlation"),
        ({"refit_variance": "True"}, "refit_variance"),
        ({"refit_search": -1}, "refit_search"),
        ({"refit_search": 1.5}, "refit_search"),
    ],
)
def test_bad_refit_options_are_refused_by_name(options, name):
    rng = np.random.default_rng(5)
    W, b, V = rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=(2, 6))
    with pytest.raises(ValueError, match=f"`{name}`"):
        tropref.compress_layer(W, b, 3, W_next=V, moments=moments_of(rng, 6), **{"refit": "gaussian", **options})


def test_network_certificate_holds_with_refitted_branches():
    from tests.network.test_graph import residual_net
    from tropref import compress_network
    from tropref.network import forward

    net = residual_net(width=4, inner=8)
    x = np.random.default_rng(8).normal(size=(40, 2, 6, 6))
    small, report = compress_network(net, 0.5, seed=0, inputs=x, refit="gaussian", refit_variance=True)
    assert any((l.info or {}).get("correction", {}).get("refit") == "gaussian" for l in report.layers)
    err = np.abs(forward(small, x) - forward(net, x))
    assert np.all(err <= report.certificate_per_output.reshape(1, -1) * (1 + 1e-9) + 1e-9)


def test_check_correct_accepts_the_corrections_only():
    assert set(correction.CORRECTIONS) == set(CORRECTIONS)  # the corrections tested above are all of them
    assert [check_correct(c) for c in correction.CORRECTIONS] == list(correction.CORRECTIONS)
    for bad in ("some", None, 1):
        with pytest.raises(ValueError, match="`correct`"):
            check_correct(bad)


@pytest.mark.parametrize("refit", REFITS)
def test_every_refit_is_accepted_and_others_are_refused(refit):
    rng = np.random.default_rng(5)
    W, V = rng.normal(size=(6, 3)), rng.normal(size=(2, 6))
    res = tropref.compress_layer(W, None, 3, W_next=V, refit=refit, moments=moments_of(rng, 6), seed=0)
    assert res.W_next.shape == (2, 3)
    with pytest.raises(ValueError, match="refit"):
        tropref.compress_layer(W, None, 3, W_next=V, refit="lstsq", moments=moments_of(rng, 6))


def test_correct_merge_leaves_the_inputs_without_moments_or_a_correction():
    rng = np.random.default_rng(6)
    A, V = rng.normal(size=(4, 3)), rng.normal(size=(1, 4, 1))
    assignment, scale, kept = np.array([0, 0, 1, 1]), np.ones(4), A[[0, 2]]
    plain = LayerProblem(xp, A, V)
    assert correct_merge(plain, assignment, scale, kept, np.ones(4), "full") == (kept, None, {})
    with_moments = LayerProblem(xp, A, V, moments=moments_of(rng, 4))
    same, moments, _ = correct_merge(with_moments, assignment, scale, kept, np.ones(4), "none")
    assert same is kept
    assert moments is None
    shifted, moments, _ = correct_merge(with_moments, assignment, scale, kept, np.ones(4), "full")
    assert shifted.shape == kept.shape
    assert not np.allclose(shifted, kept)  # the statistics moved the kept units
    assert [m.shape for m in moments] == [(2,), (2,)]


def test_gaussian_refit_is_the_single_fold_under_a_large_ridge_and_exact_on_kept_units():
    rng = np.random.default_rng(7)
    A, V = rng.normal(size=(5, 8)), rng.normal(size=(2, 5, 1))  # more inputs than units: a regular model
    problem = LayerProblem(xp, A, V, moments=moments_of(rng, 5))
    assignment, scale = np.array([0, 1, 2, 0, 1]), rng.uniform(0.5, 1.5, 5)
    kept = A[[0, 1, 2]]
    F, kept_moments, _ = gaussian_refit(problem, assignment, scale, kept, ridge=1e9)
    single = np.zeros((5, 3))
    single[np.arange(5), assignment] = scale
    np.testing.assert_allclose(F, single, atol=1e-6)
    assert [m.shape for m in kept_moments] == [(3,), (3,)]
    identity = np.arange(5)  # every unit kept: the refit reads each through itself
    F, _, _ = gaussian_refit(problem, identity, np.ones(5), A, ridge=0.0)
    np.testing.assert_allclose(F, np.eye(5), atol=1e-8)
    with pytest.raises(ValueError, match="moments"):
        gaussian_refit(LayerProblem(xp, A, V), assignment, scale, kept)


def _correlated_layer(seed=9, n=12, d=6):
    """A dense layer on x ~ N(0, Σ), Σ far from isotropic, and its exact pre-activation
    moments and correlation."""
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(d, d)) + 2.0 * np.ones((d, d))
    W, b, V = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=(4, n))
    cov = W @ (L @ L.T) @ W.T
    sd = np.sqrt(np.diag(cov))
    return W, b, V, L, (b, sd, cov / np.outer(sd, sd))


def test_refit_with_the_true_correlation_beats_the_cosines_on_correlated_inputs():
    """``refit_correlation="auto"`` reads the correlation given as ``moments[2]``; where the
    inputs are correlated that is the population least-squares fold, the cosines are not."""
    W, b, V, L, moments = _correlated_layer()
    X = np.random.default_rng(10).normal(size=(20000, L.shape[0])) @ L.T
    exact = dense_forward(W, b, V, None, X)
    errors, used = {}, {}
    for corr, stats in (("cosine", moments[:2]), ("auto", moments)):
        res = tropref.compress_layer(
            W, b, 5, W_next=V, seed=0, moments=stats, correct="none", refit="gaussian", refit_correlation=corr
        )
        errors[corr] = float(np.mean((result_forward(res, X) - exact) ** 2))
        used[corr] = res.info["correction"]["refit_correlation"]
    assert used == {"cosine": "cosine", "auto": "propagated"}
    assert errors["auto"] < 0.8 * errors["cosine"], errors


def test_auto_without_a_correlation_is_the_cosine_refit():
    W, b, V, _, moments = _correlated_layer()
    a, c = (
        tropref.compress_layer(W, b, 5, W_next=V, seed=0, moments=moments[:2], refit="gaussian", refit_correlation=r)
        for r in ("auto", "cosine")
    )
    np.testing.assert_array_equal(np.asarray(a.W_next), np.asarray(c.W_next))
    assert a.info["correction"]["refit_correlation"] == "cosine"


@pytest.mark.parametrize(
    "rho",
    [
        np.eye(3)[:2],
        np.full((4, 4), 0.5),
        2 * np.eye(4),
        np.triu(np.full((4, 4), 0.3), 1) + np.eye(4),
        np.full((4, 4), np.nan),
    ],
)
def test_bad_correlation_in_moments_is_refused_by_name(rho):
    rng = np.random.default_rng(11)
    W, V = rng.normal(size=(4, 3)), rng.normal(size=(2, 4))
    with pytest.raises(ValueError, match="`moments`"):
        tropref.compress_layer(W, None, 2, W_next=V, moments=(np.zeros(4), np.ones(4), rho), refit="gaussian")


def test_symmetric_relu_covariance_is_the_full_closed_form():
    """The refit's ``Cov(relu(z))`` on the upper triangle, mirrored (issue 19): the full
    elementwise closed form to round-off, exactly symmetric."""
    from tropref.statistics import relu_covariance, relu_mean, relu_product_mean, weight_correlation

    rng = np.random.default_rng(4)
    n = 9
    mean, std = rng.normal(size=n), rng.uniform(0.3, 2.0, size=n)
    std[2] = 0.0  # a unit without spread: the constant relu(μ)
    rho = weight_correlation(rng.normal(size=(n, 6)))
    Ea = relu_mean(mean, std)
    got = relu_covariance(mean, std, rho)
    want = relu_product_mean(mean[:, None], std[:, None], mean[None, :], std[None, :], rho) - np.outer(Ea, Ea)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert np.array_equal(got, got.T)


# the partition that sees the refit (tropref.methods.refit_search)


def test_refit_residual_is_the_sampled_least_squares_residual():
    """R = tr(G C_aa) − tr(G C_ak C_kk⁻¹ C_ka) against its definition, computed independently
    by sampling z ~ N(μ, Σ): the next layer's least-squares residual of V(a − E a) on the
    kept units' activations ã = relu(Λᵀ z), to sampling error."""
    from tropref.methods.refit_search import RefitModel
    from tropref.statistics import weight_correlation

    rng = np.random.default_rng(11)
    n, k, N = 6, 3, 400_000
    A = rng.normal(size=(n, 5))
    mean, std, rho = rng.normal(size=n), rng.uniform(0.5, 1.5, n), weight_correlation(A)
    V = rng.normal(size=(2, n, 2))
    Lam = np.zeros((n, k))
    Lam[[0, 1], 0], Lam[[2, 3, 4], 1], Lam[5, 2] = rng.uniform(0.3, 1, 2), rng.uniform(0.3, 1, 3), 1.0
    model = RefitModel(mean, std, rho, V)
    z = rng.multivariate_normal(mean, std[:, None] * rho * std[None, :], size=N)
    a, kept = np.maximum(z, 0), np.maximum(z @ Lam, 0)
    Vt = np.transpose(V, (1, 0, 2)).reshape(n, -1)
    target, basis = (a - a.mean(0)) @ Vt, kept - kept.mean(0)
    coef = np.linalg.lstsq(basis, target, rcond=None)[0]
    sampled = float(np.mean(np.sum((target - basis @ coef) ** 2, axis=1)))
    assert model.residual(Lam) == pytest.approx(sampled, rel=0.02)
    assert model.total == pytest.approx(float(np.mean(np.sum(target**2, axis=1))), rel=0.02)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 9), k=st.integers(2, 3))
def test_refit_search_never_raises_the_residual(seed, n, k):
    """Every accepted move lowers R; the partition keeps k non-empty clusters; the residual
    it reports is the full recomputation's for the partition it returns."""
    from tropref.methods.refit_search import RefitModel, _KeptUnits, search
    from tropref.statistics import weight_correlation

    rng = np.random.default_rng(seed)
    A, V = rng.normal(size=(n, 4)), rng.normal(size=(3, n, 1))
    model = RefitModel(rng.normal(size=n), rng.uniform(0.5, 2, n), weight_correlation(A), V)
    alpha, vn = np.linalg.norm(A, axis=1), np.abs(V).sum(axis=(0, 2))
    D, m = A / alpha[:, None], alpha * vn
    labels = np.arange(n) % k
    new, info = search(model, D, m, vn, alpha, labels, k, passes=2)
    assert info["R_after"] <= info["R_before"] + 1e-12
    assert sorted(set(new.tolist())) == list(range(k))
    # the kept units as the search builds them (checked against their definition below)
    Lam = _KeptUnits(D, m, vn, alpha)([np.flatnonzero(new == c) for c in range(k)])
    assert model.residual(Lam) / model.total == pytest.approx(info["R_after"], rel=1e-9, abs=1e-12)
    np.testing.assert_array_equal(labels, np.arange(n) % k)  # the input is not modified


def _kept_column(D, m, v, a, members):
    """A cluster's kept unit as ``Λ[:, C]``, straight from its definition in ``search``'s
    docstring (the directions themselves, no Gram): the independent computation."""
    lam = np.zeros(D.shape[0])
    root = np.sqrt(m[members])
    X = D[members] * root[:, None]
    y = np.linalg.svd(X, full_matrices=False)[0][:, 0]  # the top eigenvector of X Xᵀ
    w = root * y * np.sign(np.sum(root * y))
    u = w @ D[members]
    w, u = w / np.linalg.norm(u), u / np.linalg.norm(u)
    stretch = np.sum(v[members] * a[members] * np.maximum(D[members] @ u, 0.0)) / np.sum(v[members])
    lam[members] = stretch * w / a[members]
    return lam


def test_members_that_cancel_give_a_zero_kept_unit():
    """Two opposite directions of equal mass: no principal direction agrees with them, their
    mean is exactly 0, and the kept unit is the zero column (decided from the directions, not
    from the Gram's round-off), while a third unit alone is kept as itself."""
    from tropref.methods.refit_search import _KeptUnits

    D = np.array([[0.6, 0.8, 0.0], [-0.6, -0.8, 0.0], [0.0, 0.0, 1.0]])
    ones = np.ones(3)
    lam = _KeptUnits(D, ones, ones, 2 * ones)([np.array([0, 1]), np.array([2])])
    np.testing.assert_array_equal(lam[:, 0], np.zeros(3))
    np.testing.assert_allclose(lam[:, 1], [0.0, 0.0, 1.0])  # z̃ = Λᵀ z is the unit itself


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 9), k=st.integers(2, 4))
def test_the_search_scores_each_move_as_the_full_recomputation(seed, n, k):
    """The kept units from the directions' Gram, batched over padded clusters, are each
    cluster's from its definition; the bordered update scores every move (staying too) as
    the residual recomputed from scratch with one solve."""
    from tropref.methods.refit_search import RefitModel, _KeptUnits, _State
    from tropref.statistics import weight_correlation

    assume(k < n)
    rng = np.random.default_rng(seed)
    A, V = rng.normal(size=(n, 5)), rng.normal(size=(2, n, 2))
    model = RefitModel(rng.normal(size=n), rng.uniform(0.5, 2, n), weight_correlation(A), V)
    alpha, vn = np.linalg.norm(A, axis=1), np.abs(V).sum(axis=(0, 2))
    D, m = A / alpha[:, None], alpha * vn
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    clusters = [np.flatnonzero(labels == c) for c in range(k)]
    kept = _KeptUnits(D, m, vn, alpha)(clusters)
    reference = np.stack([_kept_column(D, m, vn, alpha, c) for c in clusters], axis=1)
    np.testing.assert_allclose(kept, reference, rtol=1e-9, atol=1e-12)
    j = int(np.flatnonzero(labels == labels[-1])[0])
    sets = [c if t == labels[j] else np.append(c, j) for t, c in enumerate(clusters)]
    cols = np.stack([_kept_column(D, m, vn, alpha, np.sort(c)) for c in sets], axis=1)
    R = _State(model, reference).trials(list(range(k)), cols)
    for t in range(k):
        Lam = reference.copy()
        Lam[:, t] = cols[:, t]
        # R itself is ill-conditioned where kept units nearly coincide (the solve's regulariser
        # is 1e-9 of the largest variance): two exact methods agree to ~1e-8 of tr(G C_aa) there
        assert R[t] == pytest.approx(model.residual(Lam), rel=1e-9, abs=1e-6 * model.total)


@given(layer=dense_layers(8, 3, 2), k=st.integers(2, 7), seed=st.integers(0, 2**32 - 1))
def test_certificate_bounds_the_searched_and_refitted_layer(layer, k, seed):
    """With the partition searched for the refit, the certificate still bounds the layer
    returned (it is computed on the final weights)."""
    W, b, V, b_next = layer
    rng = np.random.default_rng(seed)
    res = tropref.compress_layer(
        W, b, k, W_next=V, b_next=b_next, seed=0, moments=moments_of(rng, 8), refit="gaussian", refit_search=2
    )
    X = probe_inputs(rng, 3, 600)
    ratio = sampled_ratio(dense_forward(W, b, V, b_next, X), result_forward(res, X), X)
    assert np.all(ratio <= np.asarray(res.certificate) + 1e-9 * scale_of(np.column_stack([W, b]), V))


def test_refit_search_is_reported_and_moves_the_partition_where_it_helps():
    rng = np.random.default_rng(12)
    n = 16
    W, b, V = rng.normal(size=(n, 6)), rng.normal(size=n), rng.normal(size=(5, n))
    moments = (b, np.linalg.norm(W, axis=1))
    res = tropref.compress_layer(W, b, 6, W_next=V, seed=0, moments=moments, refit="gaussian", refit_search=1)
    ward = tropref.compress_layer(W, b, 6, W_next=V, seed=0, moments=moments, refit="gaussian")
    record = res.info["clustering"][0]["refit_search"]
    assert record["R_after"] < record["R_before"]
    assert record["moves"] > 0
    assert "refit_search" not in ward.info["clustering"][0]
    assert not np.array_equal(np.asarray(res.assignment), np.asarray(ward.assignment))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_search_models_the_kept_units_tropnnc_builds(seed):
    """The search's kept units ``Λᵀ [W | b]`` (principal representative, projection fold) are
    the ones TropNNC returns for the same partition (no statistics correction), to round-off:
    the model of ``R`` is the merge that is kept."""
    rng = np.random.default_rng(seed)
    n, k = 10, 4
    W, b, V = rng.normal(size=(n, 4)), rng.normal(size=n), rng.normal(size=(3, n))
    moments = (b, np.linalg.norm(W, axis=1))
    res = tropref.compress_layer(
        W, b, k, W_next=V, seed=0, moments=moments, refit="gaussian", correct="none", refit_search=1
    )
    A = np.column_stack([W, b])
    alpha, vn = np.linalg.norm(A, axis=1), np.abs(V).sum(axis=0)  # TropNNC's l1 outgoing norm
    labels = np.asarray(res.assignment)
    Lam = np.stack(
        [_kept_column(A / alpha[:, None], alpha * vn, vn, alpha, np.flatnonzero(labels == c)) for c in range(k)], 1
    )
    np.testing.assert_allclose(Lam.T @ A, np.column_stack([res.W, res.b]), rtol=1e-10, atol=1e-12)


def test_every_trial_move_is_the_full_residual():
    """``_State.trials`` (every move of one unit at once) against ``RefitModel.residual`` of
    each moved partition, and a state with zero spreads stays finite."""
    from tropref.methods.refit_search import RefitModel, _State
    from tropref.statistics import weight_correlation

    rng = np.random.default_rng(13)
    n, k = 9, 3
    A, V = rng.normal(size=(n, 4)), rng.normal(size=(2, n, 2))
    std = rng.uniform(0.5, 2, n)
    std[4] = 0.0
    model = RefitModel(rng.normal(size=n), std, weight_correlation(A), V)
    alpha, vn = np.linalg.norm(A, axis=1), np.abs(V).sum(axis=(0, 2))
    D, m = A / alpha[:, None], alpha * vn
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    col = lambda members: _kept_column(D, m, vn, alpha, np.asarray(members))
    state = _State(model, np.stack([col(np.flatnonzero(labels == c)) for c in range(k)], axis=1))
    base = state.replaced([0], col([1, 2])[:, None])  # unit 0 out of cluster 0
    targets = [1, 2]
    cols = np.stack([col([3, 4, 5, 0]), col([6, 7, 8, 0])], axis=1)
    got = base.trials(targets, cols)
    for i, t in enumerate(targets):
        Lam = base.Lam.copy()
        Lam[:, t] = cols[:, i]
        assert got[i] == pytest.approx(model.residual(Lam), rel=1e-9)
    assert np.all(np.isfinite(got))


def test_a_budget_allocates_from_the_single_fold_certificate_with_the_refit():
    """The Budget's probe leaves the refit out (its certificate measures how far the refit
    moved from the single fold, not the merge's damage): the widths with the refit on are
    those with it off, and the refit still acts on the layers compressed."""
    from tropref.network import BatchNorm, Budget, Dense, Network, ReLU, compress_network

    rng = np.random.default_rng(21)

    def bn(c):
        return BatchNorm(rng.normal(size=c), rng.uniform(0.5, 2, c), rng.normal(size=c), rng.normal(size=c))

    first, second, last = (
        Dense(rng.normal(size=(12, 5))),
        Dense(rng.normal(size=(10, 12))),
        Dense(rng.normal(size=(3, 10))),
    )
    net = Network([first, bn(12), ReLU(), second, bn(10), ReLU(), last])
    keep = Budget(units=0.5)
    _, plain = compress_network(net, keep, seed=0, certify=False)
    _, refit = compress_network(net, keep, seed=0, certify=False, refit="gaussian", refit_variance=True)
    assert [l.width_after for l in refit.layers] == [l.width_after for l in plain.layers]
    hidden = [l for l in refit.layers if l.info and "correction" in l.info]
    assert len(hidden) == 2
    assert all(l.info["correction"].get("refit") == "gaussian" for l in hidden)
