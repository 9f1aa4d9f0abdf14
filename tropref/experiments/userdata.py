"""A user's own test arrays, and whether a model and a dataset fit each other.

Functions
---------
load_arrays
    Inputs and optional labels from ``x.npy [y.npy]`` or one ``.npz`` (keys ``x`` and
    optionally ``y``), read without unpickling anything.
check_fit
    Whether a network can be scored on a dataset: one sample's shape, an output of one
    score per class, labels within the outputs; a ``ValueError`` naming both otherwise.
parse_keep
    ``"0.5"`` as a kept fraction, ``"params=0.3"`` (``macs=``, ``units=``) as a
    :class:`tropref.Budget`.
agreement
    What a compressed network's outputs are against the original's on the same inputs: the
    share of top-1 predictions kept and the relative error of the outputs.

The command line (:mod:`tropref.experiments.cli`) uses them for ``--data`` and ``--keep``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..network import Budget, Network
from .models import predict

__all__ = ["load_arrays", "check_fit", "parse_keep", "agreement"]


def _read(path: Path, what: str) -> Any:
    try:  # allow_pickle=False: an object array is refused, never unpickled
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # NumPy and zipfile raise several kinds for a damaged or foreign file
        why = "it holds pickled Python objects, which tropref never unpickles" if "pickle" in str(exc) else str(exc)
        raise ValueError(f"`{what}`: cannot read {str(path)!r} as NumPy arrays ({why})") from None


def load_arrays(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Test inputs and labels from ``x.npy``, ``x.npy y.npy`` or one ``.npz``.

    Parameters
    ----------
    paths : sequence of path
        One ``.npy`` of inputs; an ``.npy`` of inputs and one of labels; or one ``.npz``
        holding ``x`` (inputs) and optionally ``y`` (labels).

    Returns
    -------
    x : numpy.ndarray
        The inputs, shape ``(N, ...)`` (any sample shape, in the model's own layout).
    y : numpy.ndarray of int64, shape (N,), or None
        Class indices; one-hot or score rows ``(N, K)`` become their argmax.
    name : str
        The file names, for the printed report.

    Raises
    ------
    FileNotFoundError
        When a file is missing.
    ValueError
        When a file is not NumPy arrays (or holds pickled objects), an ``.npz`` has no
        ``x``, the inputs are not numbers of shape ``(N, ...)``, or the labels are not
        integers (or rows) of the inputs' length.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> np.savez(d / "test.npz", x=np.zeros((4, 3, 8, 8), np.float32), y=np.array([0, 1, 2, 1]))
    >>> x, y, name = load_arrays([d / "test.npz"])
    >>> x.shape, y.tolist(), name
    ((4, 3, 8, 8), [0, 1, 2, 1], 'test.npz')
    """
    paths = [Path(p) for p in paths]
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"`data`: give x.npy, x.npy y.npy or one .npz; got {len(paths)} paths")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"`data`: no file {str(p)!r}")
    if paths[0].suffix == ".npz":
        if len(paths) != 1:
            raise ValueError("`data`: an .npz holds the inputs and the labels together (keys x and y): give it alone")
        with _read(paths[0], "data") as f:
            if not isinstance(f, np.lib.npyio.NpzFile) or "x" not in f.files:
                keys = ", ".join(f.files) if isinstance(f, np.lib.npyio.NpzFile) else "none"
                raise ValueError(
                    f"`data`: {str(paths[0])!r} has no array 'x' (its keys: {keys}); save it with np.savez"
                )
            x, y = np.array(f["x"]), (np.array(f["y"]) if "y" in f.files else None)
        name = paths[0].name
    else:
        if any(p.suffix != ".npy" for p in paths):
            raise ValueError(
                f"`data`: arrays are .npy files (x.npy [y.npy]) or one .npz; got {[str(p) for p in paths]}"
            )
        x = np.asarray(_read(paths[0], "data"))
        y = np.asarray(_read(paths[1], "data")) if len(paths) == 2 else None
        name = ", ".join(p.name for p in paths)
    if x.ndim < 2 or x.dtype.kind not in "biuf" or len(x) == 0:
        raise ValueError(
            f"`data`: the inputs in {name} must be numbers of shape (N, ...) with N > 0, got {x.dtype} {x.shape}"
        )
    return x, (None if y is None else _labels(y, len(x), name)), name


def _labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    """Class indices from integer labels, or from one-hot or score rows (their argmax)."""
    if y.dtype.kind not in "biuf":
        raise ValueError(f"`data`: the labels in {name} must be numbers, got {y.dtype}")
    if y.ndim == 2:
        y = np.argmax(y, axis=1)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"`data`: {n} inputs need {n} labels (shape ({n},) or ({n}, K)), got {y.shape} in {name}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError(f"`data`: the labels in {name} must be class indices (whole numbers)")
    if y.min() < 0:
        raise ValueError(f"`data`: the labels in {name} must be class indices from 0, got {int(y.min())}")
    return y.astype(np.int64)


def _shape(shape: Sequence[int], channels_last: bool = False) -> str:
    if channels_last and len(shape) == 3:
        shape = (*shape[1:], shape[0])
    return "x".join(str(int(s)) for s in shape)


def check_fit(
    net: Network,
    x: np.ndarray,
    y: np.ndarray | None,
    dataset: str,
    model: str = "the model",
    channels_last: bool = False,
) -> int:
    """Check that ``net`` can be scored on inputs ``x`` and labels ``y``; its number of outputs.

    Parameters
    ----------
    net : Network
        The model as tropref reads it (images NCHW).
    x : numpy.ndarray
        The inputs as the network reads them (images NCHW).
    y : numpy.ndarray or None
        Class indices.
    dataset, model : str
        Names for the messages.
    channels_last : bool
        Whether the model's own images are ``(H, W, C)`` (a channels-last Keras model): the
        messages show its shapes in its own layout.

    Returns
    -------
    int
        The number of outputs (classes) of ``net``.

    Raises
    ------
    ValueError
        When one sample's shape differs from the network's input shape, the network does not
        run on it, does not give one score per class, or a label is not one of its outputs.

    Examples
    --------
    >>> from tropref.network import Dense, Flatten, ReLU
    >>> net = Network([Flatten(), Dense(np.ones((5, 12)), np.zeros(5))], (3, 2, 2))
    >>> check_fit(net, np.zeros((4, 3, 2, 2)), np.array([0, 1, 4, 2]), "mine")
    5
    >>> check_fit(net, np.zeros((4, 1, 28, 28)), None, "Fashion-MNIST")
    Traceback (most recent call last):
    ValueError: the model takes inputs of shape 3x2x2, but Fashion-MNIST has inputs of shape 1x28x28...
    """
    got = tuple(int(s) for s in x.shape[1:])
    hint = "give inputs of the model's shape, in its own layout, with --data x.npy [y.npy] (or an .npz of x and y)"
    want = net.input_shape
    if want is not None and tuple(int(s) for s in want) != got:
        raise ValueError(
            f"{model} takes inputs of shape {_shape(want, channels_last)}, but {dataset} has inputs of shape "
            f"{_shape(got, channels_last)}: tropref does not score a model on data of another shape; {hint}"
        )
    try:
        out = predict(net, x[:2])
    except Exception as exc:  # whatever the forward pass raises on that shape, said with both names
        raise ValueError(
            f"{model} does not run on the inputs of {dataset} (shape {_shape(got, channels_last)}: "
            f"{type(exc).__name__}: {exc}); {hint}, or pass --input-shape (a .pt or ONNX model)"
        ) from None
    if out.ndim != 2:
        raise ValueError(
            f"{model} gives outputs of shape {_shape(out.shape[1:])} per input, not one score per class: "
            "tropref scores classifiers (outputs (N, K))"
        )
    k = int(out.shape[1])
    if y is not None and len(y) and int(y.max()) >= k:
        raise ValueError(
            f"{dataset} has labels up to {int(y.max())} ({int(y.max()) + 1} classes), but {model} gives {k} "
            f"output{'s' if k != 1 else ''}: tropref does not score a model on another set of classes; give "
            "the labels of the model's own classes with --data x.npy y.npy"
        )
    return k


def parse_keep(text: str) -> float | Budget:
    """``--keep``: a kept fraction (``"0.5"``) or a global budget (``"params=0.3"``).

    ``units=``, ``params=`` and ``macs=`` give a :class:`tropref.Budget` of that kind: the
    compressed network keeps at most that fraction of the original's hidden units,
    parameters or multiply-accumulates, distributed over the layers by their certificates.

    Raises
    ------
    ValueError
        When the text is neither a fraction in (0, 1] nor ``kind=fraction`` of those kinds.

    Examples
    --------
    >>> parse_keep("0.5"), parse_keep("macs=0.25")
    (0.5, Budget(units=None, params=None, macs=0.25, floor=0.5))
    """
    kind, sep, value = str(text).partition("=")
    if not sep:
        kind, value = "", kind
    kind = kind.strip()
    if sep and kind not in ("units", "params", "macs"):
        raise ValueError(f"a budget is units=Q, params=Q or macs=Q, got {text!r}")
    try:
        q = float(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a fraction (0.5) nor a budget (params=0.3, macs=0.5, units=0.4)"
        ) from None
    if not 0 < q <= 1:
        raise ValueError(f"the kept fraction must lie in (0, 1], got {text!r}")
    return Budget(**{kind: q}) if sep else q


def agreement(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """The share of inputs whose top-1 class is unchanged, and ``‖after − before‖ / ‖before‖``.

    The norms are Frobenius norms over all inputs and outputs (the relative error of the
    logits as a whole).

    Examples
    --------
    >>> agreement(np.array([[3.0, 0.0], [0.0, 4.0]]), np.array([[3.0, 4.0], [0.0, 4.0]]))
    (0.5, 0.8)
    """
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    same = float(np.mean(np.argmax(before, axis=1) == np.argmax(after, axis=1)))
    scale = float(np.linalg.norm(before))
    return same, float(np.linalg.norm(after - before)) / (scale if scale > 0 else 1.0)
