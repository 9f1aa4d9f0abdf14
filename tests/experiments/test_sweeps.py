"""Experiment runner, reports and command line, on tiny synthetic models and stand-in data."""

from __future__ import annotations

import importlib
import json
import pickle

import numpy as np
import pytest

from tests.helpers import run_doctests
from tropref import experiments as E
from tropref.network import BatchNorm, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU, forward


def tiny_mlp(seed=0, dup=True):
    """An MLP whose second half of hidden units duplicates the first: merging is exact at 50%."""
    rng = np.random.default_rng(seed)
    W1 = rng.normal(size=(4, 6)).astype(np.float32)
    b1 = rng.normal(size=4).astype(np.float32)
    if dup:
        W1, b1 = np.concatenate([W1, 2 * W1]), np.concatenate([b1, 2 * b1])
    W2 = rng.normal(size=(3, W1.shape[0])).astype(np.float32)
    return Network(
        [Flatten(), Dense(W1, b1, name="fc1"), ReLU(), Dense(W2, np.zeros(3, np.float32), name="fc2")], (1, 2, 3)
    )


def tiny_cnn(seed=1):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)
    return Network(
        [
            Conv2d(f(4, 3, 3, 3), f(4), padding=1, name="conv1"),
            BatchNorm(f(4), np.abs(f(4)) + 0.5, f(4), f(4), name="bn1"),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Dense(f(6, 4 * 4 * 4), f(6), name="fc1"),
            ReLU(),
            Dense(f(5, 6), f(5), name="fc2"),
        ],
        (3, 8, 8),
    )


def stand_in(net, n=60, seed=2):
    """Random inputs labelled by the network itself (accuracy 1 before compression)."""
    rng = np.random.default_rng(seed)
    x = rng.random(size=(n, *net.input_shape)).astype(np.float32)
    return x, np.argmax(np.asarray(forward(net, x)), axis=1)


@pytest.mark.parametrize("module", ["models", "report", "sweeps", "certcheck", "userdata"])
def test_docstring_examples(module):
    run_doctests(importlib.import_module(f"tropref.experiments.{module}"))


def test_predict_matches_reference_forward():
    net = tiny_cnn()
    x, _ = stand_in(net)
    np.testing.assert_allclose(E.predict(net, x, chunk=7), np.asarray(forward(net, x)), rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(3)
    conv = Conv2d(
        rng.normal(size=(3, 2, 3, 2)), rng.normal(size=3), stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2)
    )
    z = rng.normal(size=(4, 2, 9, 8))
    zp = np.pad(z, ((0, 0), (0, 0), (1, 0), (2, 1)))
    Ho, Wo = (zp.shape[2] - 3) // 2 + 1, zp.shape[3] - 2 * (2 - 1) - 1 + 1
    ref = np.array(
        [
            [
                [
                    [np.sum(zp[n, :, 2 * r : 2 * r + 3, c : c + 3 : 2] * conv.W[o]) + conv.b[o] for c in range(Wo)]
                    for r in range(Ho)
                ]
                for o in range(3)
            ]
            for n in range(4)
        ]
    )  # the cross-correlation written out
    np.testing.assert_allclose(np.asarray(forward(Network([conv]), z)), ref, atol=1e-12)


def test_shipped_models_load_and_reach_recorded_accuracy():
    from tropref.experiments.data import load_test_subset, to_float

    x, y = load_test_subset()
    x = to_float(x)
    meta = E.shipped_models()
    assert set(meta) == {"lenet300", "lenet5", "vgg_small", "resnet20"}
    net, m = E.load_model("lenet300")
    assert m["parameters"] == 266_610
    assert E.hidden_layer_names(net) == {"dense": ["fc1", "fc2"], "conv": []}
    # the recorded accuracy on the shipped subset is reproduced by the NumPy forward pass
    assert E.accuracy(net, x, y) == pytest.approx(m["test_accuracy_first_2000"], abs=1e-4)
    net5, _m5 = E.load_model("lenet5")
    assert E.accuracy(net5, x[:500], y[:500]) == pytest.approx(np.mean(np.argmax(forward(net5, x[:500]), 1) == y[:500]))


def test_shipped_resnet20_is_a_graph_with_its_inner_channels_compressible():
    from tropref.experiments.data import load_test_subset, to_float

    x, y = load_test_subset()
    net, meta = E.load_model("resnet20")
    assert not net.is_chain
    assert meta["parameters"] == 272_186
    assert E.hidden_layer_names(net)["conv"] == [f"s{s}b{b}_conv1" for s in (1, 2, 3) for b in (1, 2, 3)]
    assert E.accuracy(net, to_float(x[:200]), y[:200]) > 0.85  # recorded: 90.70 % on the first 2000


def test_save_load_roundtrip(tmp_path):
    net = tiny_cnn()
    path = E.save_model(net, tmp_path / "m.npz", {"note": "x"})
    back, meta = E.load_model(path)
    x, _ = stand_in(net)
    np.testing.assert_allclose(E.predict(back, x), E.predict(net, x), rtol=1e-6)
    assert meta["note"] == "x"
    assert meta["input_shape"] == [3, 8, 8]
    with pytest.raises(FileNotFoundError, match="`model`"):
        E.load_model(tmp_path / "missing.npz")


def test_keep_rule():
    net = tiny_cnn()
    assert E.keep_rule(net, 0.5, "all") == 0.5
    assert E.keep_rule(net, 0.5, "dense") == {"fc1": 0.5}
    assert E.keep_rule(net, 0.25, "conv") == {"conv1": 0.25}
    with pytest.raises(ValueError, match="no hidden conv"):
        E.keep_rule(tiny_mlp(), 0.5, "conv")
    with pytest.raises(ValueError, match="`fraction`"):
        E.keep_rule(net, 0.0, "all")
    with pytest.raises(ValueError, match="`layers`"):
        E.keep_rule(net, 0.5, "some")


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


def test_markdown_places_published_anchor():
    res = {
        "config": {"methods": ["tropnnc"], "fractions": [0.5, 0.1], "layers": ["dense"]},
        "model": {"name": "lenet300", "params": 100, "macs": 100, "accuracy": 0.9, "test_set": "t", "test_size": 5},
        "records": [
            {
                "method": "tropnnc",
                "layers": "dense",
                "fraction": q,
                "seed": 0,
                "accuracy": a,
                "params": 50,
                "macs": 50,
                "certificate": 1.0,
                "measured_error": 0.5,
                "seconds": 0.1,
            }
            for q, a in ((0.5, 0.88), (0.1, 0.5))
        ],
    }
    md = E.markdown(res)
    assert "| 50% | **88.00** | 88.69 | 88.40 |" in md
    assert "| 10% | **50.00** | - | - |" in md


def test_load_cifar10_stand_in(tmp_path):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 256, size=(7, 3072), dtype=np.uint8)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": list(range(7))}, fh)
    x, y = E.load_cifar10(tmp_path)
    assert x.shape == (7, 3, 32, 32)
    assert x.dtype == np.float32
    assert y.tolist() == list(range(7))
    np.testing.assert_allclose(x[0, 0, 0, :3], data[0, :3] / 255.0, rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        E.load_cifar10(tmp_path, "train")


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


def test_cli_compress_and_sweep(tmp_path, capsys):
    from tropref.experiments.cli import main

    assert main(["models"]) == 0
    assert "lenet300" in capsys.readouterr().out
    out = tmp_path / "small.npz"
    assert (
        main(
            ["compress", "lenet300", "--keep", "0.5", "--method", "l1", "--subset", "--no-progress", "--out", str(out)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "300->150" in text
    assert "test accuracy on test[:2000]" in text
    net, meta = E.load_model(out)
    assert net.layers[1].W.shape == (150, 784)
    assert meta["method"] == "l1"
    assert (
        main(
            [
                "sweep",
                "--model",
                "lenet300",
                "--methods",
                "l1",
                "random",
                "--fractions",
                "0.5",
                "--seeds",
                "0",
                "1",
                "--subset",
                "--no-progress",
                "--no-plot",
                "--out",
                str(tmp_path),
                "--stem",
                "s",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["command"].startswith("tropref sweep --model lenet300")
    assert len(result["records"]) == 3
    with pytest.raises(SystemExit, match="neither a shipped model"):
        main(["compress", "no_such_model", "--subset"])
    with pytest.raises(SystemExit):
        main(["sweep", "--model", "lenet300", "--methods", "nope"])


def test_certificate_check_holds_and_detects_exact_merge():
    net = tiny_mlp(seed=3)
    x, y = stand_in(net, n=200)
    rows = E.certificate_check(net, methods=["tropnnc", "l1"], fractions=[0.5, 0.25], test=(x, y))
    assert len(rows) == 4
    for r in rows:
        # measured error within the certificate, up to the forward passes' rounding (the
        # exact merge at 0.5 has both near 1e-15)
        assert r["measured_ratio_max"] <= r["certificate_max"] * (1 + 1e-9) + 1e-12
    by = {(r["method"], r["fraction"]): r for r in rows}
    assert by[("tropnnc", 0.5)]["abs_change_max"] < 1e-9  # duplicated units merge exactly
    assert by[("l1", 0.5)]["abs_change_max"] > 1e-3
    paper = E.certificate_check(
        net, methods=["tropnnc"], fractions=[0.25], test=(x, y), options={"tropnnc": {"variant": "paper"}}
    )
    assert paper[0]["certificate_max"] != by[("tropnnc", 0.25)]["certificate_max"]  # the options reach the method
    md = E.certificate_markdown(rows)
    assert md.count("\n") == 6
    with pytest.raises(ValueError, match="`model`"):
        E.certificate_check(tiny_cnn(), test=stand_in(tiny_cnn()))


def test_cli_cifar10_stand_in_with_torch_model(tmp_path, capsys):
    """A user's PyTorch model and local CIFAR-10 copy: synthetic stand-ins of the real shapes."""
    torch = pytest.importorskip("torch")
    from tropref.experiments.cli import main

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 10),
    ).eval()
    torch.save(model, tmp_path / "net.pt")
    rng = np.random.default_rng(8)
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(
                {
                    b"data": rng.integers(0, 256, size=(20, 3072), dtype=np.uint8),
                    b"labels": rng.integers(0, 10, size=20).tolist(),
                },
                fh,
            )
    args = [
        "--dataset",
        "cifar10",
        "--data",
        str(tmp_path),
        "--input-shape",
        "3",
        "32",
        "32",
        "--mean",
        "0.5",
        "0.5",
        "0.5",
        "--std",
        "0.25",
        "0.25",
        "0.25",
        "--no-progress",
        "--trust-pickle",  # a whole pickled module, made by this test
    ]
    assert main(["compress", str(tmp_path / "net.pt"), "--keep", "0.5", *args]) == 0
    assert "8->4" in capsys.readouterr().out
    assert (
        main(
            [
                "sweep",
                "--model",
                str(tmp_path / "net.pt"),
                "--methods",
                "tropnnc",
                "thinet",
                "--fractions",
                "0.5",
                "--layers",
                "all",
                "--calibration",
                "50",
                "--out",
                str(tmp_path),
                "--stem",
                "c",
                "--no-plot",
                *args,
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["model"]["test_set"] == "cifar10 test"
    assert result["config"]["n_calibration"] == 50
    assert {r["method"] for r in result["records"]} == {"tropnnc", "thinet"}


def test_application_level_imports_no_framework():
    """Importing the experiments and the command line loads no framework (the CLI reads .pt
    and .keras files through the adapters only when asked)."""
    import subprocess
    import sys

    code = (
        "import sys, tropref.experiments, tropref.experiments.cli;"
        "bad = [m for m in ('torch', 'keras', 'tensorflow', 'jax', 'cupy', 'matplotlib', 'onnx') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
