"""Widths (tropref.network.widths, and the keep and skip arguments read by ``_keep``): keep
rules, budgets, floors and rounding."""

from __future__ import annotations

import numpy as np
import pytest

from tests.network.networks import convnet, mlp
from tropref.network import (
    Budget,
    Dense,
    Network,
    ReLU,
    compress_network,
    count_macs,
    count_params,
    forward,
)


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
