"""Datasets of the experiments: the IDX reader, the shipped test subset, the one test split and calibration draw."""

from __future__ import annotations

import gzip
import json
import pickle
import struct

import numpy as np
import pytest

from tests.helpers import run_doctests
from tropref import experiments as E
from tropref.experiments import data


def write_idx(path, array, type_byte=0x08, compress=False):
    header = struct.pack(">BBBB", 0, 0, type_byte, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    big = array.astype(array.dtype.newbyteorder(">"))
    raw = header + big.tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, images, compress=compress)
    out = data.read_idx(path)
    assert out.dtype == np.uint8
    assert out.shape == (5, 3, 4)
    np.testing.assert_array_equal(out, images)


def test_read_idx_other_types(tmp_path):
    ints = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    write_idx(tmp_path / "i", ints, type_byte=0x0C)
    out = data.read_idx(tmp_path / "i")
    np.testing.assert_array_equal(out, ints)
    assert out.dtype == np.int32
    assert out.dtype.isnative


def test_read_idx_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match="header"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "type").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01a")
    with pytest.raises(ValueError, match="type byte"):
        data.read_idx(tmp_path / "type")
    with pytest.raises(FileNotFoundError, match="`path`"):
        data.read_idx(tmp_path / "missing")


def test_load_fashion_mnist_from_folder(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)  # uncompressed also found
    x, y = data.load_fashion_mnist("test", tmp_path)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert y.dtype == np.int64
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        data.load_fashion_mnist("train", tmp_path)
    with pytest.raises(ValueError, match="`split`"):
        data.load_fashion_mnist("validation", tmp_path)


def test_missing_folder_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_fashion_mnist("test", tmp_path / "nowhere")
    msg = str(err.value)
    assert "dataset-fashion-mnist" in msg
    assert "load_test_subset" in msg
    with pytest.raises(FileNotFoundError):
        data.load_test(tmp_path / "nowhere")  # an explicit path never falls back silently


def test_shipped_subset():
    x, y = data.load_test_subset()
    assert x.shape == (2000, 28, 28)
    assert x.dtype == np.uint8
    assert y.shape == (2000,)
    assert y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert x.max() > 200
    assert x.min() == 0
    f = data.to_float(x[:3])
    assert f.shape == (3, 1, 28, 28)
    assert f.dtype == np.float32
    assert f.max() <= 1.0


@pytest.mark.skipif(not data.DEFAULT_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_subset_is_the_first_test_images():
    x, y = data.load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28)
    assert y.shape == (10000,)
    xs, ys = data.load_test_subset()
    np.testing.assert_array_equal(xs, x[:2000])
    np.testing.assert_array_equal(ys, y[:2000])


def test_docstring_examples():
    run_doctests(data)


def fashion_folder(tmp_path, n_train=50, n_test=7, shape=(2, 3)):
    """IDX files in Fashion-MNIST's names; image i's first pixel is i (its index in its split)."""
    rng = np.random.default_rng(4)
    tmp_path.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 3, size=n, dtype=np.uint8))
    return tmp_path


def test_evaluation_data_picks_the_split(tmp_path):
    folder = fashion_folder(tmp_path)
    x, y, name = data.evaluation_data(folder)
    images, labels = data.load_fashion_mnist("test", folder)
    assert name == "test"
    np.testing.assert_array_equal(x, data.to_float(images))
    np.testing.assert_array_equal(y, labels)
    xs, ys, name = data.evaluation_data(folder, subset=True)  # the shipped subset, even with a folder
    assert name == "test[:2000]"
    assert xs.shape == (2000, 1, 28, 28)
    np.testing.assert_array_equal(ys, data.load_test_subset()[1])
    with pytest.raises(FileNotFoundError, match="`path`"):
        data.evaluation_data(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="CIFAR-10 is not shipped"):
        data.evaluation_data(dataset="cifar10")
    with pytest.raises(ValueError, match="`dataset`"):
        data.evaluation_data(folder, dataset="mnist")


def test_calibration_data_is_one_seeded_draw_in_training_order(tmp_path):
    folder = fashion_folder(tmp_path)
    x = data.calibration_data(10, folder)
    assert x.shape == (10, 1, 2, 3)
    assert x.dtype == np.float32
    index = np.rint(x[:, 0, 0, 0] * 255).astype(int)
    # ten distinct training images, in the order of the split, drawn by default_rng(0)
    np.testing.assert_array_equal(index, np.sort(np.random.default_rng(0).choice(50, size=10, replace=False)))
    np.testing.assert_array_equal(data.calibration_data(10, folder), x)
    assert not np.array_equal(data.calibration_data(10, folder, seed=1), x)
    assert len(data.calibration_data(80, folder)) == 50  # at most the whole split
    with pytest.raises(FileNotFoundError, match="train-images"):
        data.calibration_data(10, tmp_path / "nowhere")


def test_sweep_certcheck_and_cli_use_the_one_loader_and_draw(tmp_path, capsys):
    """Given a data folder, the sweep (API and command line) evaluates on its test split and
    calibrates ThiNet on its training split, drawn as calibration_data draws."""
    from tropref import experiments as E
    from tropref.experiments.cli import main
    from tropref.network import Dense, Flatten, Network, ReLU

    rng = np.random.default_rng(5)
    net = Network(
        [
            Flatten(),
            Dense(rng.normal(size=(8, 6)).astype(np.float32), rng.normal(size=8).astype(np.float32), name="fc1"),
            ReLU(),
            Dense(rng.normal(size=(3, 8)).astype(np.float32), np.zeros(3, np.float32), name="fc2"),
        ],
        (1, 2, 3),
    )
    folder = fashion_folder(tmp_path / "data")
    kw = dict(methods=["thinet"], fractions=[0.5], layers="dense", progress=False)
    res = E.sweep(net, data_path=folder, n_calibration=20, **kw)
    assert (res["model"]["test_set"], res["model"]["test_size"], res["config"]["n_calibration"]) == ("test", 7, 20)
    given = E.sweep(net, test=data.evaluation_data(folder)[:2], calibration=data.calibration_data(20, folder), **kw)
    assert given["records"][0]["accuracy"] == res["records"][0]["accuracy"]
    assert given["records"][0]["measured_error"] == res["records"][0]["measured_error"]
    rows = E.certificate_check(net, methods=["l1"], fractions=[0.5], data_path=folder)
    assert rows == E.certificate_check(net, methods=["l1"], fractions=[0.5], test=data.evaluation_data(folder)[:2])
    path = E.save_model(net, tmp_path / "net.npz")
    argv = ["sweep", "--model", str(path), "--data", str(folder), "--methods", "thinet", "--fractions", "0.5"]
    argv += ["--calibration", "20", "--out", str(tmp_path), "--stem", "s", "--no-plot", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    cli = json.loads((tmp_path / "s.json").read_text())
    assert (cli["model"]["test_size"], cli["config"]["n_calibration"]) == (7, 20)
    assert cli["records"][0]["accuracy"] == res["records"][0]["accuracy"]
    assert cli["records"][0]["measured_error"] == pytest.approx(res["records"][0]["measured_error"], rel=1e-6)


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


def test_dataset_names_classes_and_the_assets_folder():
    assert data.DATASETS == ("fashion-mnist", "cifar10")
    assert len(data.CLASSES) == 10
    assert data.CLASSES[9] == "Ankle boot"  # Fashion-MNIST's label 9
    folder = data.assets_dir()
    assert folder.is_dir()
    assert (folder / "fashion_mnist_test_2000.npz").is_file()
    assert (folder / "models.json").is_file()
    _, y = data.load_test_subset()
    assert set(np.unique(y)) <= set(range(len(data.CLASSES)))
