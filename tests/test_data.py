"""Fashion-MNIST IDX reader and the shipped test subset."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from tropref import data


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
