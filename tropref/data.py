"""Fashion-MNIST: reading the IDX files and the small test subset shipped with tropref.

Functions
---------
read_idx
    Read one IDX file (gzip-compressed or not) into a NumPy array.
load_fashion_mnist
    The official train or test split from the IDX files of the Debian package
    ``dataset-fashion-mnist`` (or from a folder the user gives).
load_test_subset
    The first 2,000 test images and labels, shipped in ``tropref/assets/`` so that the
    demo runs on a machine without the Debian package.

Images are returned as ``uint8`` arrays of shape ``(N, 28, 28)`` and labels as ``int64``
arrays of shape ``(N,)``; :func:`to_float` scales images to ``float32`` in ``[0, 1]`` with a
channel axis, the form the shipped models were trained on.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_DIR",
    "CLASSES",
    "read_idx",
    "load_fashion_mnist",
    "load_test_subset",
    "to_float",
    "assets_dir",
]

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type byte -> big-endian NumPy dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_INSTALL_HINT = (
    "Install the Debian package with\n"
    "    sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist\n"
    "(it puts the IDX files in /usr/share/datasets/fashion-mnist/), or pass the folder that "
    "holds train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] as `path`. "
    "Without the package, `load_test_subset()` gives the first 2,000 test images."
)


def assets_dir() -> Path:
    """The folder ``tropref/assets/`` with the shipped models and test subset."""
    return Path(__file__).resolve().parent / "assets"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when its name ends in ``.gz``).

    Parameters
    ----------
    path : str or path-like
        The file. Its header is two zero bytes, a type byte (``0x08`` for uint8), a byte
        with the number of dimensions, then one big-endian uint32 per dimension; the data
        follow in C order.

    Returns
    -------
    numpy.ndarray
        The data in native byte order, with the shape the header gives.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the header is malformed or the data are shorter or longer than it says.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no IDX file at {str(path)!r}")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"`path`: {str(path)!r} is not an IDX file (bad magic number)")
    type_byte, ndim = raw[2], raw[3]
    if type_byte not in _IDX_TYPES:
        raise ValueError(f"`path`: {str(path)!r} has unknown IDX type byte 0x{type_byte:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"`path`: {str(path)!r} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_byte]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"`path`: {str(path)!r} holds {len(raw) - header} data bytes but its header {shape} asks for {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(split: str = "test", path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST from its IDX files.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    path : str or path-like, optional
        Folder holding the four IDX files (compressed or not). Default
        ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).

    Returns
    -------
    images : numpy.ndarray of uint8, shape (N, 28, 28)
    labels : numpy.ndarray of int64, shape (N,)

    Raises
    ------
    FileNotFoundError
        When the files are missing; the message says how to install them.
    """
    if split not in _FILES:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    folder = DEFAULT_DIR if path is None else Path(path)
    img_stem, lab_stem = _FILES[split]
    img, lab = _find(folder, img_stem), _find(folder, lab_stem)
    if img is None or lab is None:
        missing = img_stem if img is None else lab_stem
        raise FileNotFoundError(
            f"`path`: Fashion-MNIST file {missing}[.gz] not found in {str(folder)!r}. " + _INSTALL_HINT
        )
    images, labels = read_idx(img), read_idx(lab)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`path`: images {images.shape} and labels {labels.shape} in {str(folder)!r} do not form a dataset"
        )
    return images, labels.astype(np.int64)


def load_test_subset() -> tuple[np.ndarray, np.ndarray]:
    """The first 2,000 Fashion-MNIST test images and labels shipped with tropref.

    Returns
    -------
    images : numpy.ndarray of uint8, shape (2000, 28, 28)
    labels : numpy.ndarray of int64, shape (2000,)
    """
    with np.load(assets_dir() / "fashion_mnist_test_2000.npz") as f:
        return np.array(f["images"]), np.array(f["labels"], dtype=np.int64)


def load_test(path: str | os.PathLike | None = None, allow_subset: bool = True):
    """The full test split when available, else (``allow_subset``) the shipped subset.

    Returns ``(images, labels, name)`` with ``name`` either ``"test"`` or ``"test[:2000]"``.
    """
    try:
        images, labels = load_fashion_mnist("test", path)
        return images, labels, "test"
    except FileNotFoundError:
        if not allow_subset or path is not None:
            raise
        images, labels = load_test_subset()
        return images, labels, "test[:2000]"


def to_float(images: np.ndarray) -> np.ndarray:
    """``uint8`` images ``(N, 28, 28)`` as ``float32`` ``(N, 1, 28, 28)`` in ``[0, 1]``."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"`images` must have shape (N, H, W), got {images.shape}")
    return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
