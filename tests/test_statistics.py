"""tropref.statistics: Gaussian ReLU moments and merged units' moments, against independent computations."""

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import ndtr, owens_t

from tropref.statistics import (
    _SQRT_2PI,
    merged_covariance,
    merged_moments,
    moment_match,
    relu_input_moments,
    relu_mean,
    relu_product_mean,
    weight_correlation,
)


@given(mu=st.floats(-5, 5), sigma=st.floats(0.05, 5))
@settings(max_examples=30, deadline=None)
def test_relu_mean_equals_the_integral(mu, sigma):
    """E[relu(z)] by quadrature of z φ((z − μ)/σ)/σ over z > 0 (where the density lives)."""
    lo, hi = max(0.0, mu - 12 * sigma), max(0.0, mu + 12 * sigma)
    value = (
        integrate.quad(lambda z: z * stats.norm.pdf(z, mu, sigma), lo, hi, points=[max(lo, mu)])[0] if hi > lo else 0.0
    )
    assert relu_mean(np.array([mu]), np.array([sigma]))[0] == pytest.approx(value, rel=1e-7, abs=1e-10)


@given(mu=st.floats(-5, 5), sigma=st.floats(0.05, 5))
@settings(max_examples=40, deadline=None)
def test_relu_input_moments_invert_the_relus_moments_by_quadrature(mu, sigma):
    """The ReLU output's mean and variance, by quadrature, give back ``μ`` and ``σ`` (for
    units that fire at least once in 10⁹ draws, ``μ/σ > −6``)."""
    assume(mu / sigma > -6)
    hi = max(0.0, mu + 14 * sigma)
    lo, pts = max(0.0, mu - 14 * sigma), [max(0.0, mu - 14 * sigma, mu)]
    m1, m2 = (
        integrate.quad(lambda z, p=p: z**p * stats.norm.pdf(z, mu, sigma), lo, hi, points=pts, epsabs=1e-14)[0]
        for p in (1, 2)
    )
    got_mu, got_sigma = relu_input_moments(np.array([m1]), np.array([m2 - m1 * m1]))
    assert got_mu[0] == pytest.approx(mu, abs=2e-5 * sigma)
    assert got_sigma[0] == pytest.approx(sigma, rel=2e-5)


def test_relu_input_moments_of_units_that_never_fire_or_never_vary():
    mu, sigma = relu_input_moments(np.array([0.0, 2.0, -1.0]), np.array([0.0, 0.0, 1.0]))
    assert mu.tolist() == [0.0, 2.0, 0.0]
    assert sigma.tolist() == [0.0, 0.0, 0.0]


def test_relu_mean_at_zero_spread_is_the_relu():
    assert relu_mean(np.array([-2.0, 0.0, 3.0]), np.zeros(3)).tolist() == [0.0, 0.0, 3.0]


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 7), d=st.integers(2, 9), k=st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_merged_moments_are_exact_for_isotropic_inputs(seed, n, d, k):
    """For x ~ N(m, s² I) the members' moments are μ_j = w_j·m + b_j, σ_j = s‖w_j‖ and
    cos(w_j, w_k) is their correlation: a merged unit in the members' span then has exactly
    mean ũ·m + b̃ and spread s‖ũ‖."""
    rng = np.random.default_rng(seed)
    k = min(k, n)
    A = rng.normal(size=(n, d + 1))
    labels = np.concatenate([np.arange(k), rng.integers(0, k, size=n - k)])
    kept = np.zeros((k, d + 1))
    for c in range(k):  # a random combination of each cluster's members
        members = np.flatnonzero(labels == c)
        kept[c] = rng.normal(size=members.size) @ A[members]
    m, s = rng.normal(size=d), rng.uniform(0.5, 2.0)
    mean, std = A[:, :-1] @ m + A[:, -1], s * np.linalg.norm(A[:, :-1], axis=1)
    mu, sigma = merged_moments(A, labels, kept, mean, std)
    np.testing.assert_allclose(mu, kept[:, :-1] @ m + kept[:, -1], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(sigma, s * np.linalg.norm(kept[:, :-1], axis=1), rtol=1e-6, atol=1e-8)


def test_merged_moments_of_a_unit_without_members():
    A = np.array([[1.0, 0.0, 0.5]])
    mu, sigma = merged_moments(A, np.array([0]), np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 2.0]]), np.ones(1), np.ones(1))
    assert mu.tolist() == [1.0, 2.0]
    assert sigma.tolist() == [1.0, 0.0]


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_moment_match_minimises_the_weighted_squares(seed):
    """σ'_c minimises Σ ω_j (f_j σ' − σ_j)² (and μ'_c the same for the means): no perturbation does better."""
    rng = np.random.default_rng(seed)
    n, k = 6, 2
    labels = np.array([0, 0, 0, 1, 1, 1])
    f, w = rng.uniform(0.1, 2, n), rng.uniform(0.1, 2, n)
    mean, std = rng.normal(size=n), rng.uniform(0.1, 2, n)
    mu0, sd0 = rng.normal(size=k), rng.uniform(0.1, 2, k)
    gain, shift = moment_match(labels, f, w, mean, std, mu0, sd0)
    assert np.all(gain > 0)
    sd, mu = gain * sd0, gain * mu0 + shift

    def loss(values, fitted, members):
        return np.sum(w[members] * (f[members] * fitted - values[members]) ** 2)

    for c in range(k):
        members = labels == c
        for eps in (1e-3, -1e-3):
            assert loss(std, sd[c], members) <= loss(std, sd[c] + eps, members)
            assert loss(mean, mu[c], members) <= loss(mean, mu[c] + eps, members)


def test_moment_match_leaves_unread_units_alone():
    gain, shift = moment_match(
        np.array([0, 1]),
        np.array([0.0, 1.0]),
        np.ones(2),
        np.ones(2),
        np.ones(2),
        np.array([5.0, 1.0]),
        np.array([2.0, 1.0]),
    )
    assert gain.tolist() == [1.0, 1.0]
    assert shift.tolist() == [0.0, 0.0]


@given(
    mu1=st.floats(-3, 3),
    s1=st.floats(0.1, 3),
    mu2=st.floats(-3, 3),
    s2=st.floats(0.1, 3),
    rho=st.floats(-0.999, 0.999),
)
@example(mu1=1.2402862056353105e-252, s1=1.0, mu2=-1.7929915376776528e-186, s2=1.0, rho=0.5)  # a b underflows
@settings(max_examples=30, deadline=None)
def test_relu_product_mean_equals_the_integral(mu1, s1, mu2, s2, rho):
    """E[relu(z) relu(z')] by quadrature over u of φ(u) relu(μ + σu) E[relu(z') | u], where
    z' | u ~ N(μ' + σ'ρu, σ'²(1 − ρ²)) has the closed-form mean of relu_mean (one dimension)."""
    sd = s2 * np.sqrt(1.0 - rho * rho)
    lo = max(-mu1 / s1, -10.0)

    def inner(u):
        return stats.norm.pdf(u) * (mu1 + s1 * u) * relu_mean(np.array([mu2 + s2 * rho * u]), np.array([sd]))[0]

    value = integrate.quad(inner, lo, max(lo, 10.0), limit=200)[0] if lo < 10 else 0.0
    got = relu_product_mean(np.array(mu1), np.array(s1), np.array(mu2), np.array(s2), np.array(rho))
    assert float(got) == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_relu_product_mean_limits():
    """ρ = 1 on one unit is E[relu(z)²]; ρ = 0 the product of the means; no spread the relu."""
    mu, sd = np.array([-0.7, 0.0, 1.3]), np.array([0.5, 1.0, 2.0])
    square = [
        integrate.quad(lambda z, m=m, s=s: z * z * stats.norm.pdf(z, m, s), 0, m + 12 * s)[0]
        for m, s in zip(mu, sd, strict=True)
    ]
    np.testing.assert_allclose(relu_product_mean(mu, sd, mu, sd, np.ones(3)), square, rtol=1e-9)
    np.testing.assert_allclose(
        relu_product_mean(mu, sd, mu[::-1], sd[::-1], np.zeros(3)),
        relu_mean(mu, sd) * relu_mean(mu[::-1], sd[::-1]),
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        relu_product_mean(mu, np.zeros(3), mu, sd, np.full(3, 0.3)), np.maximum(mu, 0) * relu_mean(mu, sd)
    )


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 6), d=st.integers(2, 8), k=st.integers(1, 3))
@settings(max_examples=20, deadline=None)
def test_merged_covariance_is_exact_for_isotropic_inputs(seed, n, d, k):
    """For x ~ N(0, I): Cov(z_j, z̃_c) = w_j · ũ_c and Cov(z̃_c, z̃_d) = ũ_c · ũ_d, with the
    cosines of the weights and σ_j = ‖w_j‖, when each kept unit lies in its members' span."""
    rng = np.random.default_rng(seed)
    k = min(k, n)
    A = rng.normal(size=(n, d + 1))
    labels = rng.integers(0, k, size=n)
    labels[:k] = np.arange(k)
    kept = np.zeros((k, d + 1))
    for c in range(k):
        kept[c] = rng.normal(size=int(np.sum(labels == c))) @ A[labels == c]
    mu, cross, cov = merged_covariance(
        A, labels, kept, A[:, -1], np.linalg.norm(A[:, :-1], axis=1), weight_correlation(A)
    )
    np.testing.assert_allclose(mu, kept[:, -1], atol=1e-9)
    np.testing.assert_allclose(cross, A[:, :-1] @ kept[:, :-1].T, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cov, kept[:, :-1] @ kept[:, :-1].T, rtol=1e-7, atol=1e-9)


# relu_product_mean evaluates each factor's terms at its own shape, each normal CDF once,
# Rosenbaum's four terms collected, and skips the constants no entry reads (issue 19): the
# same values, to round-off, as the formulas written out term by term


def _owen_bivariate_cdf(a, b, r):
    """Owen's (1956) Φ₂(a, b; ρ), every term where it appears (a, b nonzero)."""
    s = np.sqrt(1.0 - r * r)
    beta = np.where((a < 0) != (b < 0), 0.5, 0.0)
    return 0.5 * (ndtr(a) + ndtr(b)) - owens_t(a, (b - r * a) / (a * s)) - owens_t(b, (a - r * b) / (b * s)) - beta


def _relu_product_mean_written_out(mean1, std1, mean2, std2, corr):
    """The formulas of ``relu_product_mean`` with every term evaluated where it appears."""
    mu1, s1, mu2, s2, rho = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (mean1, std1, mean2, std2, corr))
    )
    rho = np.clip(rho, -1.0, 1.0)
    spread = (s1 > 0) & (s2 > 0)
    a, b = mu1 / np.where(s1 > 0, s1, 1.0), mu2 / np.where(s2 > 0, s2, 1.0)
    r = np.clip(rho, -1.0 + 1e-9, 1.0 - 1e-9)
    s = np.sqrt(1.0 - r * r)
    pa, pb = np.exp(-0.5 * a * a) / _SQRT_2PI, np.exp(-0.5 * b * b) / _SQRT_2PI
    ta, tb = (b - r * a) / s, (a - r * b) / s
    L = _owen_bivariate_cdf(a, b, r)
    Eu = pa * ndtr(ta) + r * pb * ndtr(tb)
    Ev = pb * ndtr(tb) + r * pa * ndtr(ta)
    Euv = r * L - r * a * pa * ndtr(ta) - r * b * pb * ndtr(tb) + s * pa * np.exp(-0.5 * ta * ta) / _SQRT_2PI
    value = s1 * s2 * (a * b * L + a * Ev + b * Eu + Euv)
    same = (rho == 1.0) & np.isclose(a, b, rtol=0.0, atol=1e-12)
    value = np.where(same, s1 * s2 * ((a * a + 1.0) * ndtr(a) + a * pa), value)
    const = np.where(s1 > 0, relu_mean(mu1, s1) * np.maximum(mu2, 0.0), 0.0)
    const = np.where(s2 > 0, np.maximum(mu1, 0.0) * relu_mean(mu2, s2), const)
    const = np.where((s1 > 0) | (s2 > 0), const, np.maximum(mu1, 0.0) * np.maximum(mu2, 0.0))
    return np.where(spread, np.maximum(value, 0.0), const)


@pytest.mark.parametrize("case", ["spread", "some_without_spread", "self"])
def test_relu_product_mean_is_the_formulas_written_out(case):
    rng = np.random.default_rng(2)
    n, k = 40, 30
    m1, s1 = rng.normal(size=(n, 1)), rng.uniform(0.2, 2.0, size=(n, 1))
    m2, s2 = rng.normal(size=(1, k)), rng.uniform(0.2, 2.0, size=(1, k))
    corr = rng.uniform(-1.0, 1.0, size=(n, k))
    if case == "some_without_spread":
        s1[::7], s2[0, ::5] = 0.0, 0.0
    if case == "self":  # ρ = 1 on the diagonal: the exact squares
        m2, s2, corr = m1.T, s1.T, np.where(np.eye(n, k, dtype=bool), 1.0, corr)
        m2, s2 = np.resize(m2, (1, k)), np.resize(s2, (1, k))
    got = relu_product_mean(m1, s1, m2, s2, corr)
    want = _relu_product_mean_written_out(m1, s1, m2, s2, corr)
    assert got.shape == want.shape == (n, k)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
