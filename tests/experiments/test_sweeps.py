"""The sweep: methods x fractions x layer groups x seeds (tropref.experiments.sweeps), on tiny
synthetic models and stand-in data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.experiments.stand_ins import stand_in, tiny_cnn, tiny_mlp
from tests.helpers import run_doctests
from tropref import experiments as E
from tropref.experiments import sweeps
from tropref.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU


def test_docstring_examples():
    run_doctests(sweeps)


def test_sweep_records_and_exact_merge():
    net = tiny_mlp()
    x, y = stand_in(net)
    res = E.sweep(
        net,
        methods=["tropnnc", "l1", "random"],
        fractions=[1.0, 0.5],
        layers="dense",
        seeds=[0, 1, 2],
        test=(x, y),
        progress=False,
        name="tiny",
    )
    recs = res["records"]
    # deterministic l1 once per configuration, random methods once per seed
    assert len(recs) == 2 * (3 + 1 + 3)
    assert res["model"]["accuracy"] == 1.0
    by = {(r["method"], r["fraction"], r["seed"]): r for r in recs}
    # keeping everything is exact; at 50% TropNNC merges the duplicated units exactly
    for m in ("tropnnc", "l1", "random"):
        assert by[(m, 1.0, 0)]["accuracy"] == 1.0
    r = by[("tropnnc", 0.5, 0)]
    assert r["accuracy"] == 1.0
    assert r["measured_error"] < 1e-4
    assert r["widths"]["fc1"] == [8, 4]
    assert r["params"] == 4 * 6 + 4 + 3 * 4 + 3
    assert r["certificate"] is not None
    assert r["certificate"] >= r["measured_error"]
    # l1 keeps the 4 larger duplicates and drops the rest without compensation: not exact
    assert by[("l1", 0.5, 0)]["measured_error"] > 1e-3
    rows = E.summarize(res)
    rnd = next(r for r in rows if r["method"] == "random" and r["fraction"] == 0.5)
    accs = [by[("random", 0.5, s)]["accuracy"] for s in range(3)]
    assert rnd["runs"] == 3
    assert rnd["accuracy"] == pytest.approx(np.mean(accs))
    assert rnd["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))


def test_sweep_cnn_groups_and_thinet(tmp_path):
    net = tiny_cnn()
    x, y = stand_in(net, n=80)
    calib, _ = stand_in(net, n=40, seed=5)
    res = E.sweep(
        net,
        methods=["tropnnc", "cup", "thinet"],
        fractions=[0.5],
        layers=["conv", "dense", "all"],
        seeds=[0],
        test=(x, y),
        calibration=calib,
        progress=False,
        name="cnn",
    )
    assert len(res["records"]) == 9
    for r in res["records"]:
        w = r["widths"]
        if r["layers"] == "conv":
            assert w["conv1"] == [4, 2]
            assert w["fc1"] == [6, 6]
        elif r["layers"] == "dense":
            assert w["conv1"] == [4, 4]
            assert w["fc1"] == [6, 3]
        else:
            assert w["conv1"] == [4, 2]
            assert w["fc1"] == [6, 3]
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["params"] < res["model"]["params"]
        if r["method"] == "thinet":
            assert r["certificate"] is None
    paths = E.write_report(res, tmp_path, stem="cnn")
    md = paths["md"].read_text()
    assert "**Layers: conv**" in md
    assert "`thinet`" in md
    assert json.loads(paths["json"].read_text())["model"]["name"] == "cnn"
    assert paths["png"].stat().st_size > 1000


def test_sweep_bad_arguments():
    net = tiny_mlp()
    x, y = stand_in(net)
    with pytest.raises(ValueError, match="unknown method"):
        E.sweep(net, methods=["nope"], fractions=[0.5], test=(x, y), progress=False)
    with pytest.raises(ValueError, match="`fractions`"):
        E.sweep(net, methods=["l1"], fractions=[1.5], test=(x, y), progress=False)
    with pytest.raises(ValueError, match="`layers`"):
        E.sweep(net, methods=["l1"], fractions=[0.5], layers=["middle"], test=(x, y), progress=False)


def test_cifar_shaped_network_sweep():
    """A CIFAR-10-shaped stand-in (3x32x32 inputs, 10 classes) goes through the runner."""
    rng = np.random.default_rng(7)
    f = lambda *s: (rng.normal(size=s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    net = Network(
        [
            Conv2d(f(8, 3, 3, 3), f(8), padding=1, name="c1"),
            ReLU(),
            MaxPool2d(4),
            Flatten(),
            Dense(f(16, 8 * 8 * 8), f(16), name="d1"),
            ReLU(),
            Dense(f(10, 16), f(10), name="out"),
        ],
        (3, 32, 32),
    )
    x, y = stand_in(net, n=30)
    res = E.sweep(net, methods=["tropnnc", "l1"], fractions=[0.5], layers=["all"], test=(x, y), progress=False)
    assert {r["method"] for r in res["records"]} == {"tropnnc", "l1"}


def test_deterministic_methods_run_once_per_configuration():
    net = tiny_mlp()
    x, y = stand_in(net)
    res = E.sweep(net, methods=["l1", "random"], fractions=[0.5], seeds=[0, 1, 2], test=(x, y), progress=False)
    runs = {m: sum(r["method"] == m for r in res["records"]) for m in ("l1", "random")}
    assert "l1" in sweeps.DETERMINISTIC
    assert "random" not in sweeps.DETERMINISTIC
    assert runs == {"l1": 1, "random": 3}
