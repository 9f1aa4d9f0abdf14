"""Issue 19's speed-ups give the results of the straightforward computations they replace.

- Ward's nearest-neighbour chain compacts its matrix to the live clusters: the merges are
  those of the chain over the whole masked matrix (a copy of the code before, below).
- The next layer's rewrite is written block by block into one result: the same array as
  one segment sum over all outputs, and the one-hot fold's product to round-off.
- ``relu_product_mean`` evaluates each normal CDF once and skips the constants no entry
  reads: the same values as the formulas written out.
- The PyTorch adapter's ``compress`` reads the weights in place: the same compressed model
  as from copied weights, the model untouched, no memory shared with it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.special import ndtr

from tropref import _ward
from tropref._blocks import segment_sum
from tropref.compress import _rewrite_next
from tropref.statistics import _SQRT_2PI, _bivariate_cdf, relu_mean, relu_product_mean


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
    monkeypatch.setattr(_ward, "_COMPACT_MIN", compact_min)
    rng = np.random.default_rng(3)
    n = 300
    Y = rng.normal(size=(n, 4))
    if ties:  # integer points: many equal costs, where the argmin's first index decides
        Y = np.round(2 * Y)
    w = rng.uniform(0.5, 2.0, size=n)
    cost = _ward.ward_costs(Y, w)
    np.fill_diagonal(cost, np.inf)
    assert _ward.merges(cost.copy(), w) == _merges_masked(cost.copy(), w)


def test_compaction_keeps_the_live_rows_and_columns():
    rng = np.random.default_rng(0)
    cost = rng.normal(size=(9, 9))
    keep = np.array([0, 2, 3, 7, 8])
    want = cost[np.ix_(keep, keep)].copy()
    got = _ward._compact(cost, keep)
    assert np.array_equal(got, want)
    assert np.shares_memory(got, cost)  # in the matrix's own memory


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
    L = _bivariate_cdf(a, b, r)
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
    assert np.array_equal(got, _relu_product_mean_written_out(m1, s1, m2, s2, corr))


def test_torch_compress_reads_in_place_and_shares_nothing():
    torch = pytest.importorskip("torch")
    from torch import nn

    from tropref.adapters.torch import compress, from_torch, to_torch
    from tropref.network import compress_network

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    ).eval()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(5, 3, 6, 6)
    for in_place in (False, True):
        small, _ = compress(model, keep=0.5, seed=0, input_shape=(3, 6, 6), progress=False, in_place=in_place)
        theirs = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
        assert not theirs & {t.data_ptr() for t in [*small.parameters(), *small.buffers()]}
        assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    # the same network as from copied weights (from_torch), compressed and written back
    copied, _ = compress_network(from_torch(model, input_shape=(3, 6, 6)), 0.5, seed=0, progress=False)
    small, _ = compress(model, keep=0.5, seed=0, input_shape=(3, 6, 6), progress=False)
    with torch.no_grad():
        assert torch.equal(small(x), to_torch(copied)(x))
