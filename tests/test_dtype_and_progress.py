"""Whole networks in the model's own dtype, the certificate in float32, progress lines and step times."""

from __future__ import annotations

import numpy as np
import pytest

from tropref.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU, compress_network, forward
from tropref.network.graph import map_arrays


def cnn(dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = lambda *shape: (rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(dtype)
    return Network(
        [
            Conv2d(a(8, 2, 3, 3), a(8, 1)[:, 0], padding=(1, 1, 1, 1)),
            ReLU(),
            MaxPool2d(2),
            Conv2d(a(10, 8, 3, 3), a(10, 1)[:, 0]),
            ReLU(),
            Flatten(),
            Dense(a(12, 40), a(12, 1)[:, 0]),
            ReLU(),
            Dense(a(3, 12), a(3, 1)[:, 0]),
        ],
        input_shape=(2, 8, 8),
    )


@pytest.mark.parametrize("method", ["tropnnc", "l1", "neuron_merging"])
def test_float32_network_stays_float32_and_its_certificate_holds(method):
    """Computed in float32; the certificate bounds the change of the exact functions of the
    stored float32 weights (evaluated here in float64), up to float32 rounding."""
    net = cnn(np.float32)
    x = np.random.default_rng(1).uniform(-1, 1, size=(300, 2, 8, 8)).astype(np.float32)
    small, report = compress_network(net, keep=0.5, method=method, seed=0, inputs=x, progress=False)
    assert all(l.W.dtype == np.float32 for l in small.layers if hasattr(l, "W"))
    to64 = lambda n: map_arrays(n, lambda t: np.asarray(t, dtype=np.float64))
    gap = np.max(np.abs(forward(to64(net), x.astype(np.float64)) - forward(to64(small), x.astype(np.float64))))
    assert report.certificate is not None
    assert gap > 0
    assert gap <= report.certificate * (1 + 1e-4) + 1e-5
    assert abs(report.measured_error - gap) <= 1e-4 * max(gap, 1.0)


def test_progress_lines_with_an_estimate_and_silence_by_default(capsys):
    net = cnn(np.float64)
    lines = []
    compress_network(net, keep=0.5, seed=0, progress=lines.append)
    assert len(lines) == 3
    assert all(line.startswith("[tropref] ") for line in lines)
    assert "left" in lines[0]
    assert "left" not in lines[-1]
    compress_network(net, keep=0.5, seed=0)  # default: silent unless the call runs over 2 s
    assert capsys.readouterr().err == ""


def test_report_times_every_step_and_certify_false_skips_the_certificate():
    net = cnn(np.float64)
    x = np.random.default_rng(2).normal(size=(20, 2, 8, 8))
    _, report = compress_network(net, keep=0.5, seed=0, inputs=x, progress=False)
    for step in (
        "fold_batchnorm",
        "layers",
        "method",
        "rewrite",
        "layer_certificates",
        "network_certificate",
        "measured_error",
    ):
        assert report.steps[step] >= 0
    assert report.steps["method"] + report.steps["rewrite"] <= report.steps["layers"]
    assert "time s:" in report.table()
    _, quick = compress_network(net, keep=0.5, seed=0, inputs=x, progress=False, certify=False)
    assert quick.certificate is None
    assert quick.measured_error == pytest.approx(report.measured_error)


def test_torch_adapter_computes_in_the_model_dtype(monkeypatch):
    torch = pytest.importorskip("torch")
    import tropref.adapters.torch as adapter

    seen = []
    real = adapter.compress_network
    monkeypatch.setattr(
        adapter, "compress_network", lambda net, *a, **k: seen.append(net.layers[0].W.dtype) or real(net, *a, **k)
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    small, report = adapter.compress(model, keep=0.5, inputs=torch.randn(32, 4), progress=False)
    small64, _ = adapter.compress(model.double(), keep=0.5, progress=False)
    assert seen == [np.float32, np.float64]
    assert small[0].weight.dtype == torch.float32
    assert small64[0].weight.dtype == torch.float64
    assert {"export", "import", "layers"} <= set(report.steps)


def test_keras_adapter_computes_in_the_model_dtype(monkeypatch):
    keras = pytest.importorskip("keras")
    import tropref.adapters.keras as adapter

    seen = []
    real = adapter.compress_network
    monkeypatch.setattr(
        adapter, "compress_network", lambda net, *a, **k: seen.append(net.layers[0].W.dtype) or real(net, *a, **k)
    )
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    _, report = adapter.compress(model, keep=0.5, progress=False)
    _, _ = adapter.compress(model, keep=0.5, progress=False, dtype=np.float64)
    assert seen == [np.float32, np.float64]
    assert {"export", "import", "layers"} <= set(report.steps)
