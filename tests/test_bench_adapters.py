"""Smoke test of benchmarks/bench_adapters.py: the tiny network's two forms are the same
network, and one run of each adapter and of Keras's own clone, in-process."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tropref-keras-"))
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

pytestmark = [
    pytest.mark.slow,  # importing Keras takes seconds
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

HERE = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


def _load(name: str):
    """The benchmark script ``name`` as a module, registered so that its sibling import finds it."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_load("bench_models")
bench = _load("bench_adapters")


def test_the_keras_and_pytorch_forms_compute_the_same_network():
    """The weights copied across (kernels transposed, the dense inputs after the flatten
    reordered) give the same logits; a wrong reordering differs at order 1."""
    assert bench.check("tiny", 0) < 1e-5


def test_one_run_of_each_adapter_and_of_kerass_clone():
    with torch.enable_grad():  # the child turns gradients off for its process; not for the tests after it
        runs = {a: bench.child("tiny", a, "l1", 0.5, 0) for a in bench.ADAPTERS}
        fixed = bench.child("tiny", "keras", "graph", 0.5, 0)
    for out in runs.values():
        assert set(out["steps"]) == {"read", "compress_network", "write"}
        assert all(v >= 0 for v in out["steps"].values())
        assert abs(sum(out["steps"].values()) - out["time_s"]) < 1e-9
        assert out["peak_rss_mb"] >= out["model_rss_mb"] > 0
    assert fixed["time_s"] > 0
    best = {("tiny", a, "l1"): bench.best_of([r]) for a, r in runs.items()}
    text = bench.table(best, ["tiny"], ["l1"])
    assert text.count("\n") == 3  # the header, its rule, one row per adapter
