"""The command line on a user's own model and data: every input format written back in its
own format under the name given, loaded back by its framework with the documented call;
the user's arrays; the refusals when a model and a dataset do not fit."""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import sys

import numpy as np
import pytest

from tropref import experiments as E
from tropref.experiments.cli import _build_parser, main
from tropref.network import Dense, Flatten, Network, ReLU, compress_network, count_params

ARCH = """
import torch
import torch.nn as nn


class Net(nn.Module):
    # an MNIST-shaped model of the user's own class (its own forward, not an nn.Sequential)
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(4)
        self.fc1 = nn.Linear(4 * 7 * 7, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class NeedsArgs(Net):
    def __init__(self, width):
        super().__init__()


class HardCoded(Net):
    # a forward that does not fit other widths: compress(in_place=True) falls back to plain layers
    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(x.view(-1, 196))))
"""


def _exit(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return str(info.value)


def _module(path, name):
    """The user's module file, imported the way ``--arch file.py:Class`` imports it."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def user_model(tmp_path):
    """The user's files: ``mynet.py`` (class Net), ``w.pt`` (its state_dict), ``x.npy``, ``y.npy``."""
    torch = pytest.importorskip("torch")
    (tmp_path / "mynet.py").write_text(ARCH)
    Net = _module(tmp_path / "mynet.py", "mynet").Net
    torch.manual_seed(0)
    model = Net().eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 10, size=40))
    return tmp_path, Net, model, f"{tmp_path / 'mynet.py'}:Net"


def _accuracies(text):
    found = re.search(r"test accuracy on .*: ([\d.]+)% -> ([\d.]+)%", text)
    return float(found.group(1)), float(found.group(2))


def test_own_pt_model_and_arrays_written_back_as_a_state_dict(user_model, capsys):
    torch = pytest.importorskip("torch")
    from tropref.adapters.torch import from_torch, load_compressed

    tmp, Net, model, arch = user_model
    out = tmp / "small.pt"
    argv = ["compress", str(tmp / "w.pt"), "--arch", arch, "--data", str(tmp / "x.npy"), str(tmp / "y.npy")]
    assert main([*argv, "--keep", "0.5", "--method", "tropnnc", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for part in ("4->2", "16->8", "test accuracy on x.npy, y.npy (40 images)", "top-1 agreement", f"wrote {out}"):
        assert part in text
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("small")) == ["small.pt"]  # that name only
    # loaded back with the documented call: the user's own class, resized
    small = load_compressed(Net(), torch.load(out, weights_only=True))
    assert type(small) is Net
    assert small.fc1.out_features == 8
    x, y = np.load(tmp / "x.npy"), np.load(tmp / "y.npy")
    with torch.no_grad():
        got = small(torch.from_numpy(x)).numpy()
    # the compressed network the CLI reported (TropNNC is data-free: the test inputs only score it)
    new, _ = compress_network(from_torch(model, input_shape=(1, 28, 28)), 0.5, seed=0, progress=False)
    want = E.predict(new, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert _accuracies(text)[1] == pytest.approx(100 * np.mean(got.argmax(1) == y), abs=0.01)
    original = model(torch.from_numpy(x)).detach().numpy()
    assert _accuracies(text)[0] == pytest.approx(100 * np.mean(original.argmax(1) == y), abs=0.01)


def test_arrays_without_labels_and_the_default_dataset_note(user_model, capsys):
    tmp, _, _, arch = user_model
    np.savez(tmp / "test.npz", x=np.load(tmp / "x.npy"))
    base = ["compress", str(tmp / "w.pt"), "--arch", arch, "--method", "l1", "--no-progress"]
    assert main([*base, "--data", str(tmp / "test.npz")]) == 0
    printed = capsys.readouterr()
    assert "top-1 agreement with the original on test.npz (40 inputs)" in printed.out
    assert "relative logit error on test.npz" in printed.out
    assert "test accuracy" not in printed.out  # no labels, no accuracy
    assert "note" not in printed.err
    assert main([*base, "--subset"]) == 0  # an MNIST-shaped model, 10 outputs: Fashion-MNIST fits it
    printed = capsys.readouterr()
    notes = [line for line in printed.err.splitlines() if "note:" in line]
    assert len(notes) == 1
    assert "scoring on Fashion-MNIST test[:2000]" in notes[0]
    assert "--data" in notes[0]
    assert "test accuracy on test[:2000] (2000 images)" in printed.out
    msg = _exit(["sweep", "--model", str(tmp / "w.pt"), "--arch", arch, "--data", str(tmp / "test.npz")])
    assert msg.startswith("tropref: a sweep scores accuracy")
    assert "y.npy" in msg


def _npz_model(path, input_shape, outputs, seed=0):
    rng = np.random.default_rng(seed)
    d = int(np.prod(input_shape))
    net = Network(
        [
            Flatten(),
            Dense(rng.normal(size=(6, d)).astype(np.float32) / np.sqrt(d), np.zeros(6, np.float32), name="fc1"),
            ReLU(),
            Dense(rng.normal(size=(outputs, 6)).astype(np.float32), np.zeros(outputs, np.float32), name="fc2"),
        ],
        input_shape,
    )
    return E.save_model(net, path), net


def test_refusals_when_model_and_data_do_not_fit(tmp_path):
    big, _ = _npz_model(tmp_path / "big.npz", (3, 224, 224), 10)
    msg = _exit(["compress", str(big), "--subset", "--no-progress"])
    assert msg.startswith("tropref: ")
    assert "takes inputs of shape 3x224x224, but Fashion-MNIST test[:2000] has inputs of shape 1x28x28" in msg
    five, _ = _npz_model(tmp_path / "five.npz", (1, 28, 28), 5)
    msg = _exit(["compress", str(five), "--subset", "--no-progress"])
    assert "has labels up to 9 (10 classes)" in msg
    assert "gives 5 outputs" in msg
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 28, 28), np.float32))
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 7]))
    msg = _exit(["compress", str(five), "--data", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
    assert "x.npy, y.npy has labels up to 7" in msg
    np.save(tmp_path / "short.npy", np.array([0, 1]))
    assert "4 inputs need 4 labels" in _exit(
        ["compress", str(five), "--data", str(tmp_path / "x.npy"), str(tmp_path / "short.npy")]
    )
    msg = _exit(["compress", str(five), "--data", str(tmp_path / "x.npy"), str(tmp_path / "nope.npy")])
    assert "no file or folder" in msg
    assert "nope.npy" in msg
    (tmp_path / "x.txt").write_text("1 2 3")
    assert "x.npy [y.npy], or one .npz" in _exit(["compress", str(five), "--data", str(tmp_path / "x.txt")])
    np.savez(tmp_path / "nox.npz", inputs=np.zeros((4, 1, 28, 28)))
    assert "has no array 'x' (its keys: inputs)" in _exit(["compress", str(five), "--data", str(tmp_path / "nox.npz")])


def test_own_pt_model_on_data_of_another_shape_and_other_refusals(user_model):
    tmp, _, _, arch = user_model
    np.save(tmp / "cifar.npy", np.zeros((4, 3, 32, 32), np.float32))
    msg = _exit(["compress", str(tmp / "w.pt"), "--arch", arch, "--data", str(tmp / "cifar.npy")])
    assert msg.startswith("tropref: ")
    assert "3x32x32" in msg
    assert "--input-shape" in msg
    msg = _exit(["compress", str(tmp / "w.pt"), "--arch", arch, "--subset", "--out", str(tmp / "small.keras")])
    assert (
        "a PyTorch model is written as .pt or .pth (its own format), or as .onnx (ONNX) or .npz (tropref's format)"
        in msg
    )
    assert not (tmp / "small.keras").exists()
    msg = _exit(["compress", str(tmp / "w.pt"), "--arch", f"{tmp / 'mynet.py'}:NeedsArgs", "--subset"])
    assert "building NeedsArgs() failed" in msg
    assert "no arguments" in msg
    hard = ["compress", str(tmp / "w.pt"), "--arch", f"{tmp / 'mynet.py'}:HardCoded", "--subset", "--no-progress"]
    msg = _exit([*hard, "--layers", "conv", "--out", str(tmp / "hard.pt")])
    assert "cannot write" in msg
    assert "state_dict of HardCoded" in msg
    assert "small.onnx" in msg
    assert not (tmp / "hard.pt").exists()
    assert "--arch is for a .pt file" in _exit(["compress", "lenet300", "--arch", arch, "--subset"])


def test_pickled_module_of_a_class_not_found_says_what_to_pass(tmp_path, monkeypatch):
    """``torch.save(model)`` of the user's own class, read where that class cannot be imported:
    a tropref message naming the file and ``--arch``, not pickle's AttributeError."""
    torch = pytest.importorskip("torch")
    (tmp_path / "gone_net.py").write_text(ARCH)
    mod = _module(tmp_path / "gone_net.py", "tropref_test_gone_net")
    monkeypatch.setitem(sys.modules, "tropref_test_gone_net", mod)  # importable while saving only
    torch.save(mod.Net(), tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, "tropref_test_gone_net")
    msg = _exit(["compress", str(tmp_path / "net.pt"), "--trust-pickle", "--subset"])
    assert msg.startswith(f"tropref: {str(tmp_path / 'net.pt')!r} holds a whole pickled module")
    assert "--arch module:Class" in msg
    assert "state_dict" in msg


def test_npz_out_keeps_its_name_and_keep_budgets(tmp_path, capsys):
    out = tmp_path / "small.npz"
    argv = ["compress", "lenet300", "--method", "l1", "--subset", "--no-progress"]
    assert main([*argv, "--keep", "params=0.3", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    small, meta = E.load_model(out)
    original, _ = E.load_model("lenet300")
    assert count_params(small) <= 0.3 * count_params(original) < count_params(original)
    assert meta["keep"] == "params=0.3"
    msg = _exit([*argv, "--out", str(tmp_path / "small.pt")])
    assert "a tropref model is written as .npz (its own format), or as .onnx (ONNX); got .pt" in msg
    assert "--layers dense does not apply" in _exit([*argv, "--keep", "macs=0.5", "--layers", "dense"])
    with pytest.raises(SystemExit) as info:
        main([*argv, "--keep", "weights=0.5"])
    assert info.value.code == 2
    assert "units=Q, params=Q or macs=Q" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--keep", "1.5"])
    assert "(0, 1]" in capsys.readouterr().err


def test_help_names_every_format_the_load_calls_and_one_layers_default(capsys):
    helps = {}
    for command in ("compress", "sweep"):
        with pytest.raises(SystemExit):
            _build_parser().parse_args([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
    for fmt in (".pt", "--arch", "--trust-pickle", ".keras", ".h5", ".onnx", ".npz"):
        assert fmt in helps["compress"]
        assert fmt in helps["sweep"]
    for call in ("load_compressed(Net(), torch.load(", "keras.saving.load_model(", 'load_model("small.npz")'):
        assert call in helps["compress"]
    for h in helps.values():
        assert "(default: all)" in h
    assert _build_parser().parse_args(["sweep", "--model", "m"]).layers == ["all"]
    assert _build_parser().parse_args(["compress", "m"]).layers == "all"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_model_written_back_as_keras(tmp_path, capsys, suffix):
    keras = pytest.importorskip("keras")
    from tropref.adapters.keras import from_keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(4, 3, padding="same", activation="relu"),
            L.MaxPooling2D(4),
            L.Flatten(),
            L.Dense(16, activation="relu"),
            L.Dense(10),
        ]
    )
    model.save(tmp_path / f"net{suffix}")
    rng = np.random.default_rng(1)
    x = rng.random((30, 28, 28, 1)).astype(np.float32)  # the model's own layout, NHWC
    np.savez(tmp_path / "test.npz", x=x, y=rng.integers(0, 10, size=30))
    out = tmp_path / f"small{suffix}"
    argv = ["compress", str(tmp_path / f"net{suffix}"), "--data", str(tmp_path / "test.npz"), "--keep", "0.5"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "16->8" in text
    assert f"wrote {out}" in text
    assert "test accuracy on test.npz (30 images)" in text
    small = keras.saving.load_model(out)  # the documented call
    got = small.predict(x, verbose=0)
    new, _ = compress_network(from_keras(model), 0.5, seed=0, progress=False)
    want = E.predict(new, np.transpose(x, (0, 3, 1, 2)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert _accuracies(text)[1] == pytest.approx(
        100 * np.mean(got.argmax(1) == np.load(tmp_path / "test.npz")["y"]), abs=0.01
    )
    msg = _exit([*argv, "--out", str(tmp_path / "small.pt")])
    assert "a Keras model is written as .keras or .h5" in msg


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_h5_with_code_is_refused_by_safe_mode(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(3)])
    model.save(tmp_path / "lam.h5")
    msg = _exit(["compress", str(tmp_path / "lam.h5"), "--subset"])
    assert msg.startswith("tropref: ")
    assert "safe_mode" in msg
    assert "lam.h5" in msg


def test_onnx_model_and_arrays_written_back_as_onnx(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from tropref.adapters.onnx import from_onnx, to_onnx

    _, net = _npz_model(tmp_path / "m.npz", (1, 28, 28), 10, seed=3)
    onnx.save(to_onnx(net), tmp_path / "net.onnx")
    rng = np.random.default_rng(2)
    x = rng.random((25, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 10, size=25))
    out = tmp_path / "small.onnx"
    argv = ["compress", str(tmp_path / "net.onnx"), "--data", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    assert main([*argv, "--keep", "0.5", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "6->3" in text
    assert f"wrote {out}" in text
    session = ort.InferenceSession(str(out))  # the documented call
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    new, _ = compress_network(from_onnx(tmp_path / "net.onnx"), 0.5, seed=0, progress=False)
    want = E.predict(new, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert _accuracies(text)[1] == pytest.approx(100 * np.mean(got.argmax(1) == np.load(tmp_path / "y.npy")), abs=0.01)
    assert "an ONNX model is written as .onnx" in _exit([*argv, "--out", str(tmp_path / "small.pt")])


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
