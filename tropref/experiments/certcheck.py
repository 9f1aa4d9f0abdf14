"""The certificate check: the layer certificate against the error measured on real inputs.

Functions
---------
certificate_check
    On a model's first hidden dense layer, compressed by several methods at several kept
    fractions, the certificate ``β_i`` of :func:`tropref.compress_layer` beside the measured
    ``max_x |Δz_i(x)| / ‖(x, 1)‖`` on test images.
certificate_markdown
    Its rows as a Markdown table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..compress import compress_layer
from ..network import Conv2d, Dense, Flatten, Network, ReLU
from .data import evaluation_data
from .models import load_model

__all__ = ["certificate_check", "certificate_markdown"]


def certificate_check(
    model: str | os.PathLike | Network = "lenet300",
    *,
    methods: Sequence[str] = ("tropnnc", "neural_path_kmeans", "neuron_merging", "cup", "l1"),
    fractions: Sequence[float] = (0.5, 0.3, 0.1),
    seed: int = 0,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    data_path: str | os.PathLike | None = None,
    subset: bool = False,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Layer certificate against the measured error, on the first hidden dense layer.

    The first layer reads the images themselves, so ``u = (x, 1)`` is known exactly: for
    every test image and every output ``i`` of the next layer, the measured
    ``|Δz_i(x)| / ‖(x, 1)‖`` (``z`` the next layer's pre-activation) must stay below the
    certificate ``β_i`` of :func:`tropref.compress_layer`. Computed in float64.

    Parameters
    ----------
    model : str, path or Network
        A shipped model's name, a ``.npz`` model file or a network whose first hidden layer
        is dense, read through flattening only, followed by ReLU and a dense layer.
    methods : sequence of str
        Names accepted by ``compress_layer(method=...)``.
    fractions : sequence of float
        Kept fractions of the first layer's units (``k = max(1, round(q · n))``).
    seed : int
    test : (images, labels), optional
        Preprocessed test inputs (labels unused). Default:
        :func:`~tropref.experiments.evaluation_data` from ``data_path`` and ``subset``.
    data_path : path, optional
        Folder with the Fashion-MNIST IDX files.
    subset : bool
        Use the shipped 2,000 test images even when the full split is available.
    options : mapping, optional
        Per-method options (``{"tropnnc": {"variant": "paper"}}``).

    Returns
    -------
    list of dict
        One row per fraction and method: ``method``, ``fraction``, ``k``,
        ``certificate_max`` (``max_i β_i``), ``measured_ratio_max`` (the largest measured
        ratio), ``tightness`` (``max_i measured_i / β_i``, at most 1 when the certificate
        holds) and ``abs_change_max`` (``max |Δz|``); ``None`` where a method gives no
        certificate.

    Raises
    ------
    ValueError
        When the network does not start with a dense layer, ReLU and a dense layer.

    Examples
    --------
    >>> rows = certificate_check("lenet300", methods=["tropnnc", "l1"], fractions=[0.5], subset=True)
    >>> [(r["method"], r["k"], r["tightness"] <= 1) for r in rows]
    [('tropnnc', 150, True), ('l1', 150, True)]
    """
    net = model if isinstance(model, Network) else load_model(model)[0]
    first, nxt = _first_dense_pair(net)
    x = evaluation_data(data_path, subset)[0] if test is None else test[0]
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    W, b = np.asarray(first.W, np.float64), np.asarray(first.b, np.float64)
    V, c = np.asarray(nxt.W, np.float64), np.asarray(nxt.b, np.float64)
    u = np.linalg.norm(np.concatenate([x, np.ones((len(x), 1))], axis=1), axis=1)
    z = np.maximum(x @ W.T + b, 0) @ V.T + c
    rows = []
    for q in fractions:
        k = max(1, round(q * W.shape[0]))
        for m in methods:
            res = compress_layer(W, b, k, W_next=V, b_next=c, method=m, seed=seed, **dict((options or {}).get(m, {})))
            zt = np.maximum(x @ res.W.T + res.b, 0) @ res.W_next.T + res.b_next
            rows.append({"method": m, "fraction": float(q), "k": k, **_compare(res.certificate, z - zt, u)})
    return rows


def _first_dense_pair(net: Network) -> tuple[Dense, Dense]:
    idx = [i for i, l in enumerate(net.layers) if isinstance(l, (Dense, Conv2d))]
    first, nxt = net.layers[idx[0]], net.layers[idx[1]]
    if (
        not isinstance(first, Dense)
        or not isinstance(nxt, Dense)
        or any(not isinstance(l, (ReLU, Flatten)) for l in net.layers[idx[0] + 1 : idx[1]])
        or any(not isinstance(l, Flatten) for l in net.layers[: idx[0]])
    ):
        raise ValueError(
            "`model`: certificate_check needs a first hidden Dense layer followed by ReLU and a Dense layer"
        )
    return first, nxt


def _compare(certificate: Any, change: np.ndarray, u: np.ndarray) -> dict[str, float | None]:
    """The certificate ``β`` beside the change ``Δz`` (samples × outputs) over ``‖(x, 1)‖ = u``."""
    ratio = np.max(np.abs(change) / u[:, None], axis=0)  # per output
    cert = None if certificate is None else np.asarray(certificate, np.float64)
    return {
        "certificate_max": None if cert is None else float(cert.max()),
        "measured_ratio_max": float(ratio.max()),
        "tightness": None if cert is None else float(np.max(ratio / np.maximum(cert, 1e-300))),
        "abs_change_max": float(np.max(np.abs(change))),
    }


def certificate_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`certificate_check` rows."""
    out = [
        r"| kept | method | max_i β_i | max_i max_x \|Δz_i\|/‖(x,1)‖ | tightness max_i (measured_i / β_i) | "
        r"max \|Δz\| |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cert = "-" if r["certificate_max"] is None else f"{r['certificate_max']:.3g}"
        tight = "-" if r["tightness"] is None else f"{r['tightness']:.3f}"
        out.append(
            f"| {100 * r['fraction']:g}% | `{r['method']}` | {cert} | {r['measured_ratio_max']:.3g} | "
            f"{tight} | {r['abs_change_max']:.3g} |"
        )
    return "\n".join(out) + "\n"
