"""Datasets of the experiments: reading them, and the one test split and calibration draw.

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
load_test
    Fashion-MNIST's full test split when its files are found, else the shipped subset.
load_cifar10
    CIFAR-10 from a local copy of its Python batches.
evaluation_data
    The test inputs every experiment evaluates on (the sweeps, the certificate check, the
    command line): preprocessed, with the name of the split.
calibration_data
    The training inputs given to data-driven methods (ThiNet): one seeded draw.

Fashion-MNIST images are returned as ``uint8`` arrays of shape ``(N, 28, 28)`` and labels
as ``int64`` arrays of shape ``(N,)``; :func:`to_float` scales images to ``float32`` in
``[0, 1]`` with a channel axis, the form the shipped models were trained on.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_DIR",
    "DATASETS",
    "CLASSES",
    "read_idx",
    "load_fashion_mnist",
    "load_test_subset",
    "load_test",
    "load_cifar10",
    "to_float",
    "evaluation_data",
    "calibration_data",
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

DATASETS = ("fashion-mnist", "cifar10")
"""The datasets :func:`evaluation_data` and :func:`calibration_data` read."""

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
    return Path(__file__).resolve().parents[1] / "assets"


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


def load_test(path: str | os.PathLike | None = None, allow_subset: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """The full test split when available, else (``allow_subset``) the shipped subset.

    Returns ``(images, labels, name)`` with ``name`` either ``"test"`` or ``"test[:2000]"``;
    an explicit ``path`` without the files raises instead of falling back silently.
    """
    try:
        images, labels = load_fashion_mnist("test", path)
        return images, labels, "test"
    except FileNotFoundError:
        if not allow_subset or path is not None:
            raise
        images, labels = load_test_subset()
        return images, labels, "test[:2000]"


# What a CIFAR-10 batch may hold: builtin containers and scalars, and the NumPy arrays of
# its images. Anything else a pickle names is refused before it is looked up, so that no
# callable of the file's choosing ever runs (``pickle.load`` would call whatever it names).
_BATCH_GLOBALS = frozenset(
    {
        *(
            ("builtins", n)
            for n in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float", "bool")
        ),
        *(("__builtin__", n) for n in ("list", "dict", "tuple", "set", "frozenset", "bytearray")),
        ("_codecs", "encode"),  # how protocol 2 pickles written by Python 3 hold bytes
        *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
        *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what :data:`_BATCH_GLOBALS` allows."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"refused {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict:
    """One CIFAR-10 batch file: a dict of bytes keys, read without running its code."""
    try:
        with open(path, "rb") as fh:
            d = _BatchUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(
            f"`path`: {str(path)!r} is not a CIFAR-10 batch tropref reads ({exc}); a batch holds only a dict "
            "of lists, bytes and NumPy arrays, and tropref refuses every other object a pickle names, "
            "so that reading a file never runs its code: use the official cifar-10-python.tar.gz"
        ) from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"`path`: {str(path)!r} is not a CIFAR-10 batch (a dict with b'data' and b'labels')")
    for key in (b"data", b"labels"):
        if np.asarray(d[key]).dtype == object:
            raise ValueError(f"`path`: {str(path)!r}: {key!r} holds Python objects, not numbers")
    n, size = len(d[b"labels"]), np.asarray(d[b"data"]).size
    if size != n * 3072:
        raise ValueError(f"`path`: {str(path)!r} holds {size} pixel values for {n} labels (3,072 per image)")
    return d


def load_cifar10(path: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from a local copy of the Python version (``cifar-10-batches-py``).

    Returns ``float32`` images ``(N, 3, 32, 32)`` in ``[0, 1]`` and ``int64`` labels; apply
    the normalisation your model expects before :func:`tropref.experiments.sweep`. Not shipped
    and not run on the project's machines (tested on synthetic files of the same format).

    The batch files are pickles: they are read with an unpickler that builds only builtin
    containers, numbers, strings and NumPy arrays, and refuses any other object by name, so
    that a crafted batch cannot run code (``docs/security.md``).

    Raises
    ------
    FileNotFoundError
        When a batch file is missing.
    ValueError
        When a batch is not a CIFAR-10 batch, or names anything else to build (refused by name).
    """
    folder = Path(path)
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    if split not in ("test", "train"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    xs, ys = [], []
    for nm in names:
        f = folder / nm
        if not f.is_file():
            raise FileNotFoundError(
                f"`path`: CIFAR-10 batch {nm!r} not found in {str(folder)!r} (the Python version, "
                "cifar-10-python.tar.gz, unpacked)"
            )
        d = _read_batch(f)
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[b"labels"], dtype=np.int64))
    return np.concatenate(xs).astype(np.float32) / np.float32(255.0), np.concatenate(ys)


def evaluation_data(
    path: str | os.PathLike | None = None, subset: bool = False, dataset: str = "fashion-mnist"
) -> tuple[np.ndarray, np.ndarray, str]:
    """The test inputs and labels every experiment evaluates on, and the split's name.

    The one place that picks the test split: :func:`tropref.experiments.sweep`,
    :func:`tropref.experiments.certificate_check` and the command line all call it.

    Parameters
    ----------
    path : str or path-like, optional
        Folder with the dataset's files. Fashion-MNIST: default the Debian package's folder.
    subset : bool
        Fashion-MNIST only: the shipped first 2,000 test images even when the full split is
        available (fast, and the same on every machine).
    dataset : {"fashion-mnist", "cifar10"}

    Returns
    -------
    x : numpy.ndarray of float32, shape (N, C, H, W)
        Images in ``[0, 1]`` (no normalisation).
    labels : numpy.ndarray of int64, shape (N,)
    name : str
        ``"test"`` (all 10,000 Fashion-MNIST test images), ``"test[:2000]"`` (the shipped
        subset: asked for, or the fallback when no ``path`` is given and the Debian package
        is missing) or ``"cifar10 test"``.

    Raises
    ------
    FileNotFoundError
        When an explicit ``path`` lacks the files.
    ValueError
        For an unknown ``dataset``, or CIFAR-10 without ``path`` (it is not shipped).

    Examples
    --------
    >>> x, y, name = evaluation_data(subset=True)
    >>> x.shape, x.dtype, name
    ((2000, 1, 28, 28), dtype('float32'), 'test[:2000]')
    """
    if _check_dataset(dataset, path) == "cifar10":
        x, labels = load_cifar10(path, "test")
        return x, labels, "cifar10 test"
    if subset:
        images, labels = load_test_subset()
        name = "test[:2000]"
    else:
        images, labels, name = load_test(path)
    return to_float(images), labels, name


def calibration_data(
    n: int, path: str | os.PathLike | None = None, dataset: str = "fashion-mnist", seed: int = 0
) -> np.ndarray:
    """``n`` training inputs for data-driven methods (ThiNet), the same ones every time.

    The one calibration draw of the experiments: ``min(n, N)`` of the ``N`` training images
    chosen without replacement by ``numpy.random.default_rng(seed)``, kept in the order of
    the training split.

    Parameters
    ----------
    n : int
        How many images.
    path : str or path-like, optional
        Folder with the dataset's files (Fashion-MNIST: default the Debian package's).
    dataset : {"fashion-mnist", "cifar10"}
    seed : int
        Seed of the draw.

    Returns
    -------
    numpy.ndarray of float32, shape (min(n, N), C, H, W)
        Images in ``[0, 1]`` (no normalisation).

    Raises
    ------
    FileNotFoundError
        When the training split is not found (the shipped subset holds test images only).
    ValueError
        For an unknown ``dataset``, or CIFAR-10 without ``path``.

    Examples
    --------
    >>> calibration_data(10, path="/nowhere")
    Traceback (most recent call last):
    FileNotFoundError: `path`: Fashion-MNIST file train-images-idx3-ubyte[.gz] not found in '/nowhere'...
    """
    if _check_dataset(dataset, path) == "cifar10":
        images, _ = load_cifar10(path, "train")
    else:
        images, _ = load_fashion_mnist("train", path)
    pick = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
    # pick before scaling: 1,000 images are converted instead of all 60,000 (same values)
    return images[pick] if dataset == "cifar10" else to_float(images[pick])


def _check_dataset(dataset: str, path: str | os.PathLike | None) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}, got {dataset!r}")
    if dataset == "cifar10" and path is None:
        raise ValueError("`path`: CIFAR-10 is not shipped; give the unpacked cifar-10-batches-py folder")
    return dataset


def to_float(images: np.ndarray) -> np.ndarray:
    """``uint8`` images ``(N, 28, 28)`` as ``float32`` ``(N, 1, 28, 28)`` in ``[0, 1]``."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"`images` must have shape (N, H, W), got {images.shape}")
    return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
