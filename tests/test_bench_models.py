"""Smoke test of benchmarks/bench_models.py: the architectures written out, one tiny run in-process."""

from __future__ import annotations

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")

PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_models.py")
spec = importlib.util.spec_from_file_location("bench_models", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

# parameter counts of torchvision's models (torchvision.models.<name>().parameters())
TORCHVISION = {
    "alexnet": 61_100_840,
    "vgg11_bn": 132_868_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "squeezenet1_1": 1_235_496,
    "densenet121": 7_978_856,
    "googlenet": 6_624_904,  # without the auxiliary classifiers (13,004,888 with them)
    # without AuxLogits (768·128 + 128·768·25 conv weights, 2·(128 + 768) BatchNorm, 768·1000 + 1000 fc:
    # 3,326,696 parameters), the 27,161,264 torchvision documents with them
    "inception_v3": 27_161_264 - 3_326_696,
}
INPUT = {"inception_v3": (3, 299, 299)}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_architectures_have_torchvisions_parameter_counts(name):
    with torch.device("meta"):  # no memory, no initialisation: the shapes alone
        model, shape = bench.build(name)
    assert bench.count(model) == TORCHVISION[name]
    assert shape == INPUT.get(name, (3, 224, 224))


def test_inception_v3_blocks_fit_together_at_299():
    with torch.device("meta"):  # shapes propagated, nothing computed: every concat's width is the next block's
        model, shape = bench.build("inception_v3")
        assert model(torch.empty(1, *shape)).shape == (1, 1000)


def test_one_run_of_each_tool_on_a_tiny_model():
    with torch.enable_grad():  # the child turns gradients off for its process; not for the tests after it
        out = bench.child("tiny", "tropref-l1", 0.5, 0)
    assert out["params_after"] < out["params_before"]
    assert out["time_s"] > 0
    assert out["peak_rss_mb"] > 0
    assert out["steps"]
    assert "layers" in out["steps"]
