"""Sweeps: a model compressed with every method × kept fraction × layer group × seed, evaluated.

Functions
---------
sweep
    Compress a model with several methods at several kept fractions (several seeds where a
    method is random), without fine-tuning, and evaluate each result; returns the raw
    records that :mod:`tropref.experiments.report` turns into tables and plots.

A sweep works on any :class:`~tropref.network.Network` and any test arrays, so a user's own
model (through ``tropref.adapters``) and data (CIFAR-10, ImageNet, preprocessed as the model
expects) go through the same code. Nothing here is run on CIFAR or ImageNet on the project's
machines.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..methods import METHODS
from ..network import Network, compress_network, count_macs, count_params
from ..network.certificate import CAPPED
from .data import calibration_data, evaluation_data
from .models import LAYER_GROUPS, input_dtype, keep_rule, load_model, predict
from .report import code_version

__all__ = ["DETERMINISTIC", "sweep"]

DETERMINISTIC = frozenset({"l1", "cup", "neuron_merging"})
"""Methods whose result does not depend on the seed: run once per configuration."""

_DATA_DRIVEN = frozenset({"thinet"})  # methods that need calibration inputs


def sweep(
    model: str | os.PathLike | Network,
    *,
    methods: Sequence[str] = ("tropnnc", "l1", "neuron_merging"),
    fractions: Sequence[float] = (0.5, 0.4, 0.3, 0.2, 0.1, 0.05),
    layers: Sequence[str] | str = ("dense",),
    seeds: Sequence[int] = (0,),
    test: tuple[np.ndarray, np.ndarray] | None = None,
    calibration: np.ndarray | None = None,
    data_path: str | os.PathLike | None = None,
    subset: bool = False,
    n_calibration: int = 1000,
    n_error: int = 1000,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    name: str | None = None,
    test_name: str | None = None,
) -> dict[str, Any]:
    """Compress ``model`` with every method × kept fraction × layer group × seed; evaluate.

    No fine-tuning. Methods in :data:`DETERMINISTIC` run once per configuration (with the
    first seed); the others once per seed. Each run compresses with
    :func:`tropref.compress_network` and records the test accuracy, the sizes, the network
    certificate on the box ``[min_x x, max_x x]`` spanned elementwise by the test inputs
    (a bound on ``max |f(x) − f̃(x)|`` over that box) and the measured error on the test
    inputs.

    Parameters
    ----------
    model : str, path or Network
        A shipped model's name, a ``.npz`` model file, or a :class:`~tropref.network.Network`
        (a user's PyTorch or Keras model through ``tropref.adapters``).
    methods : sequence of str
        Names accepted by ``compress_layer(method=...)``.
    fractions : sequence of float
        Kept fractions of units in (0, 1].
    layers : str or sequence of str
        Layer groups among ``"dense"``, ``"conv"``, ``"all"``, ``"nonuniform"``.
    seeds : sequence of int
    test : (images, labels), optional
        Preprocessed test inputs and labels. Default: :func:`~tropref.experiments.evaluation_data`,
        Fashion-MNIST's test split from ``data_path`` (or the Debian package), else the
        shipped 2,000-image subset.
    calibration : array, optional
        Network inputs for data-driven methods (ThiNet). Default:
        :func:`~tropref.experiments.calibration_data`, ``n_calibration`` training images of
        Fashion-MNIST (drawn with seed 0), needed only when such a method is asked.
    data_path : path, optional
        Folder with the Fashion-MNIST IDX files.
    subset : bool
        Evaluate on the shipped subset even when the full test split is available (fast).
    n_calibration : int
        How many training images the default calibration draw takes.
    n_error : int
        The measured error ``max |f(x) - f̃(x)|`` (logits) is taken over the first ``n_error``
        test inputs. The network certificate holds on the box spanned elementwise by all the
        test inputs.
    options : mapping, optional
        Per-method options, e.g. ``{"tropnnc": {"refine": "weiszfeld"}}``.
    progress : bool
        A progress bar on stderr.
    name, test_name : str, optional
        Names of the model and of the test set in the result (defaults: the model file's
        name or ``"network"``; the split's name or ``"user test set"``).

    Returns
    -------
    dict
        ``config``, ``model`` (name, parameters, MACs, accuracy before compression, test
        set), ``records`` (one per run: method, layers, fraction, seed, accuracy, params,
        MACs, certificate, measured error, widths, layer certificates, seconds), ``seconds``
        and ``code`` (:func:`~tropref.experiments.code_version`).

    Raises
    ------
    ValueError
        When a method, a layer group or a fraction is unknown or out of range, or a list is
        empty.
    FileNotFoundError
        When a data-driven method is asked without ``calibration`` and the training split
        is not found.

    Examples
    --------
    >>> res = sweep("lenet300", methods=["l1"], fractions=[0.5], subset=True, progress=False)
    >>> [(r["method"], r["fraction"], r["params"]) for r in res["records"]]
    [('l1', 0.5, 125810)]
    """
    t_start = time.perf_counter()
    code = code_version()  # before any work: the code this sweep runs on
    layers = (layers,) if isinstance(layers, str) else layers
    _check_grid(methods, fractions, layers, seeds)
    options = dict(options or {})
    net, meta = (model, {"name": name or "network"}) if isinstance(model, Network) else load_model(model)
    if test is None:
        x_test, y_test, test_name = evaluation_data(data_path, subset)
    else:
        (x_test, y_test), test_name = test, test_name or "user test set"
    x_test = np.asarray(x_test, dtype=input_dtype(net))
    data_driven = [m for m in methods if m in _DATA_DRIVEN]
    if data_driven and calibration is None:
        calibration = _draw_calibration(data_driven, n_calibration, data_path)
    if calibration is not None:
        calibration = np.asarray(calibration, dtype=input_dtype(net))

    base_out = predict(net, x_test)
    # the certificate holds on the box spanned elementwise by the test inputs: compress_network
    # takes the elementwise range of `inputs`, so two corner samples describe the box exactly
    box = np.stack([x_test.min(axis=0), x_test.max(axis=0)])
    inputs = _TestInputs(x_test, y_test, box, base_out[:n_error])
    runs = [
        (m, g, float(q), s)
        for g in layers
        for q in fractions
        for m in methods
        for s in (seeds[:1] if m in DETERMINISTIC else seeds)
    ]
    bar = _Progress(len(runs), progress)
    records = []
    for method, group, q, seed in runs:
        data = calibration if method in data_driven else None
        records.append(_run(net, method, group, q, seed, inputs, data, options.get(method, {})))
        bar.step(f"{method} {group} {q:g} seed {seed}: {records[-1]['accuracy']:.4f}")
    return {
        "config": {
            "methods": list(methods),
            "fractions": [float(q) for q in fractions],
            "layers": list(layers),
            "seeds": [int(s) for s in seeds],
            "options": {k: dict(v) for k, v in options.items()},
            "n_calibration": None if calibration is None else len(calibration),
            "n_error": len(x_test[:n_error]),
            "certificate_domain": "box spanned elementwise by the test inputs",
        },
        "model": {
            "name": name or meta.get("name", "model"),
            "params": int(count_params(net)),
            "macs": count_macs(net),
            "accuracy": float(np.mean(np.argmax(base_out, axis=1) == y_test)),
            "test_set": test_name,
            "test_size": len(y_test),
            "shipped_test_accuracy": meta.get("test_accuracy"),
        },
        "records": records,
        "seconds": round(time.perf_counter() - t_start, 1),
        "code": code,
    }


def _check_grid(
    methods: Sequence[str], fractions: Sequence[float], layers: Sequence[str], seeds: Sequence[int]
) -> None:
    if not methods or not fractions or not layers or not seeds:
        raise ValueError("`methods`, `fractions`, `layers` and `seeds` must be non-empty")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r} in `methods`; choose from {sorted(METHODS)}")
    for g in layers:
        if g not in LAYER_GROUPS:
            raise ValueError(f"`layers` must be among {LAYER_GROUPS}, got {g!r}")
    for q in fractions:
        if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0 < float(q) <= 1:
            raise ValueError(f"`fractions` must lie in (0, 1], got {q!r}")


def _draw_calibration(methods: list[str], n: int, path: str | os.PathLike | None) -> np.ndarray:
    try:
        return calibration_data(n, path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"method(s) {methods} need calibration data (`calibration`, or the Fashion-MNIST training split). {exc}"
        ) from None


@dataclass(frozen=True)
class _TestInputs:
    """A sweep's test inputs, labels, the box they span (where the certificate holds) and
    the original network's outputs on the first inputs (where the error is measured)."""

    x: np.ndarray
    y: np.ndarray
    box: np.ndarray
    reference: np.ndarray


def _run(
    net: Network,
    method: str,
    group: str,
    fraction: float,
    seed: int,
    test: _TestInputs,
    data: np.ndarray | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """One compression of ``net`` and its record."""
    t0 = time.perf_counter()
    small, report = compress_network(
        net, keep_rule(net, fraction, group), method=method, seed=int(seed), data=data, inputs=test.box, **options
    )
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = predict(small, test.x)
    evaluation = time.perf_counter() - t1
    return {
        "method": method,
        "layers": group,
        "fraction": fraction,
        "seed": int(seed),
        "accuracy": float(np.mean(np.argmax(out, axis=1) == test.y)),
        "params": int(report.params_after),
        "macs": None if report.macs_after is None else int(report.macs_after),
        "certificate": report.certificate,
        "certificate_capped": CAPPED in report.input_domain,  # the interval cap, not a composed bound
        "measured_error": float(np.max(np.abs(out[: len(test.reference)] - test.reference))),
        "widths": {r.name: [r.width_before, r.width_after] for r in report.layers},
        "layer_certificates": {r.name: r.certificate for r in report.layers if r.certificate is not None},
        "seconds": round(seconds, 3),
        # where the time goes: the certificate and the measured error are part of `seconds`
        "time_s": {
            "network_certificate": round(report.steps.get("network_certificate", 0.0), 3),
            "measured_error": round(report.steps.get("measured_error", 0.0), 3),
            "evaluation": round(evaluation, 3),
        },
    }


class _Progress:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 24
        fill = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        sys.stderr.write(
            f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
            f"{elapsed:5.0f} s (eta {eta:4.0f} s) {label[:40]:<40}"
        )
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
