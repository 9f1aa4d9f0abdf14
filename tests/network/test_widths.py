"""Widths (tropref.network.widths, and the keep and skip arguments read by ``_keep``): keep
rules, budgets, floors and rounding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.network.networks import convnet, mlp
from tropref.network import Budget, Dense, Network, ReLU, compress_network, count_macs, count_params, forward
from tropref.network.shapes import layer_shapes
from tropref.network.structure import analyse
from tropref.network.widths import allocate_budget, budget_widths, keep_widths, predict_cost, rounded_width


@pytest.mark.parametrize("budget", [Budget(params=0.5), Budget(macs=0.4), Budget(units=0.5)])
def test_budget_is_met(budget):
    rng = np.random.default_rng(13)
    net = convnet(rng, dup=False)
    new, report = compress_network(net, keep=budget, seed=0)
    if budget.kind == "params":
        assert count_params(new) <= 0.5 * count_params(net)
        assert report.params_after == count_params(new)
    elif budget.kind == "macs":
        assert count_macs(new) <= 0.4 * count_macs(net)
    else:
        before = sum(r.width_before for r in report.layers if r.status != "classifier")
        after = sum(r.width_after for r in report.layers if r.status != "classifier")
        assert after <= 0.5 * before
    assert any(r.width_after < r.width_before for r in report.layers if r.status == "compressed")


def test_budget_is_non_uniform_and_spares_sensitive_layers():
    """A layer whose units are duplicated (exact to merge) is compressed before the others."""
    rng = np.random.default_rng(14)
    net = mlp(rng, dup=True)
    _new, report = compress_network(net, keep=Budget(units=0.6), seed=0)
    fc1, fc2 = report.layers[0], report.layers[1]
    assert fc1.width_after / fc1.width_before < fc2.width_after / fc2.width_before
    assert fc1.width_after + fc2.width_after <= 0.6 * (12 + 8)


def test_budget_errors():
    net = mlp(np.random.default_rng(15))
    with pytest.raises(ValueError, match="cannot be met"):
        compress_network(net, keep=Budget(params=0.01))
    with pytest.raises(ValueError, match="exactly one"):
        Budget(params=0.5, macs=0.5)
    with pytest.raises(ValueError, match="fraction"):
        Budget(units=1.5)


def test_keep_arguments_and_errors():
    net = mlp(np.random.default_rng(16))
    _, report = compress_network(net, keep={0: 3, "fc2": 0.5}, seed=0)
    assert [r.width_after for r in report.layers] == [3, 4, 3]
    _, report = compress_network(net, keep=0.5, skip=["fc2"], seed=0)
    assert [r.status for r in report.layers] == ["compressed", "skipped", "classifier"]
    with pytest.raises(ValueError, match="'nope'"):
        compress_network(net, keep={"nope": 2})
    with pytest.raises(ValueError, match=r"'out'.*not a compressible"):
        compress_network(net, keep={"out": 2})
    with pytest.raises(ValueError, match=r"keep\['fc1'\]"):
        compress_network(net, keep={"fc1": 99})
    with pytest.raises(ValueError, match="fraction"):
        compress_network(net, keep=0.0)
    with pytest.raises(TypeError, match="Network"):
        compress_network([Dense(np.zeros((2, 2)))])
    with pytest.raises(ValueError, match="skip"):
        compress_network(net, skip=["nope"])


def test_budget_floor_keeps_every_layer_near_its_uniform_width():
    """No layer is cut below floor x its uniform width (the trust region of the allocation)."""
    rng = np.random.default_rng(21)
    net = mlp(rng, dup=True)
    for floor in (0.5, 0.9):
        _new, report = compress_network(net, keep=Budget(units=0.6, floor=floor), seed=0)
        for r in report.layers[:2]:
            uniform = round(0.6 * r.width_before)
            assert r.width_after >= np.ceil(floor * uniform) - 1  # q0 may sit just below 0.6
        assert sum(r.width_after for r in report.layers[:2]) <= 0.6 * (12 + 8)
    with pytest.raises(ValueError, match="floor"):
        Budget(units=0.5, floor=1.5)


@pytest.mark.parametrize("keep", [0.3, 0.5, {"fc1": 37}])
def test_round_to_gives_multiples_never_above_the_original(keep):
    rng = np.random.default_rng(0)
    fc1, fc2 = Dense(rng.normal(size=(70, 5)), name="fc1"), Dense(rng.normal(size=(20, 70)), name="fc2")
    net = Network([fc1, ReLU(), fc2, ReLU(), Dense(rng.normal(size=(3, 20)))])
    x = rng.normal(size=(30, 5))
    small, report = compress_network(net, keep, round_to=8, inputs=x, progress=False)
    widths = {r.name: r.width_after for r in report.layers}
    assert widths["fc1"] % 8 == 0
    assert widths["fc1"] <= 64
    assert widths["fc2"] % 8 == 0 or widths["fc2"] == 20
    assert np.all(np.abs(forward(small, x) - forward(net, x)) <= report.certificate_per_output * (1 + 1e-9) + 1e-9)


def test_round_to_applies_after_a_budget_and_to_coupled_groups():
    from tropref.experiments import load_model

    net, _ = load_model("resnet20")
    _, report = compress_network(net, Budget(params=0.5), round_to=8, certify=False, progress=False)
    assert all(r.width_after % 8 == 0 for r in report.layers if r.status == "compressed")
    _, report = compress_network(net, 0.4, coupled=True, round_to=8, certify=False, progress=False)
    assert {r.width_after for r in report.layers if r.status == "compressed"} <= {8, 16, 24, 32}


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8"])
def test_round_to_must_be_a_positive_integer(bad):
    net = Network([Dense(np.ones((4, 2))), ReLU(), Dense(np.ones((1, 4)))])
    with pytest.raises(ValueError, match="`round_to` must be a positive integer"):
        compress_network(net, 0.5, round_to=bad, progress=False)


def test_keep_widths_from_a_fraction_or_a_mapping():
    net = convnet(np.random.default_rng(31), dup=False)  # conv1 3, conv2 4, fc 5 units
    s = analyse(net)
    assert keep_widths(0.5, s, s.compressible) == {0: 2, 4: 2, 9: 3}  # max(1, round(0.5 n)), halves up
    assert keep_widths(0.1, s, s.compressible) == {0: 1, 4: 1, 9: 1}
    assert keep_widths({"conv2": 3, 0: 0.34}, s, s.compressible) == {0: 1, 4: 3, 9: 5}
    with pytest.raises(ValueError, match="'out'"):
        keep_widths({"out": 1}, s, s.compressible)


def test_rounded_width_is_the_nearest_multiple_that_fits():
    for n, r, k in itertools.product([6, 8, 20, 64, 70], [None, 1, 4, 8], range(1, 71)):
        if k > n:
            continue
        w = rounded_width(k, n, r)
        if r in (None, 1) or k == n or n < r:
            assert w == k
            continue
        assert w % r == 0
        assert r <= w <= n
        assert abs(w - k) <= r / 2 or w in (r, n - n % r), (n, r, k, w)  # nearest, unless clipped to the range
    for bad in (0, -8):
        with pytest.raises(ValueError, match="round_to"):
            rounded_width(3, 8, bad)


def test_allocate_budget_meets_the_budget_and_spares_the_sensitive_layer():
    cost = lambda w: sum(w.values())
    probe = lambda l, k: np.array([(1.0 if l == 0 else 10.0) * (6 - k)])  # merging layer 1 costs ten times more
    widths = allocate_budget(Budget(units=0.5), {0: 6, 1: 6}, total=12, cost=cost, probe=probe, min_width={0: 2})
    assert cost(widths) <= 6
    assert widths[0] < widths[1]
    assert widths[0] >= 2
    with pytest.raises(ValueError, match="cannot be met"):
        allocate_budget(Budget(units=0.1), {0: 6, 1: 6}, total=12, cost=cost, probe=probe)


@pytest.mark.parametrize("next_padding", [0, 1])
def test_predict_cost_is_what_compress_network_builds(next_padding):
    net = convnet(np.random.default_rng(32), next_padding=next_padding, dup=False)
    s = analyse(net)
    (part,) = s.parts
    for keep in ({0: 2, 4: 3, 9: 4}, {4: 1}, {0: 1, 9: 1}):
        by_name = {net.layers[s.origin(g)].name: k for g, k in keep.items()}
        small, _ = compress_network(net, by_name, seed=0)
        # conv1's BatchNorm after the ReLU is folded into conv2 once conv1 is compressed,
        # unless conv2 zero-pads (test_duplicated_channels_merge_exactly)
        vanishing = {0: part.hidden[0].bn} if 0 in keep and not next_padding else {}
        shapes = layer_shapes(part.chain)
        assert predict_cost(part.chain, keep, kind="params", shapes=None, vanishing_bn=vanishing) == count_params(small)
        assert predict_cost(part.chain, keep, kind="macs", shapes=shapes, vanishing_bn=vanishing) == count_macs(small)
    with pytest.raises(ValueError, match="kind"):
        predict_cost(part.chain, {}, kind="flops", shapes=None, vanishing_bn={})


def test_budget_widths_meet_the_budget_over_a_network():
    net = mlp(np.random.default_rng(33))  # fc1 6, fc2 8 hidden units
    s = analyse(net)
    for cheap, dear in ((0, 3), (3, 0)):
        probe = lambda g, k, cheap=cheap: np.array([1.0 if g == cheap else 10.0])
        widths = budget_widths(s, Budget(units=0.5), s.compressible, probe)
        assert sorted(widths) == s.compressible
        assert sum(widths.values()) <= 0.5 * 14
        assert widths[cheap] < widths[dear]  # the layer whose merges cost less gives up more
    new, _ = compress_network(net, Budget(params=0.6), seed=0)
    assert count_params(new) <= 0.6 * count_params(net)
