"""The main job (tropref.experiments.demos): the shipped models compressed, a report written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tropref.experiments.demos import demo
from tropref.experiments.models import load_model
from tropref.experiments.sweeps import sweep

DEMO_JSON = Path(__file__).parents[2] / "docs" / "results" / "demo" / "demo.json"


def test_demo_compresses_a_shipped_model_and_writes_its_report(tmp_path, capsys):
    results = demo(tmp_path, models=["lenet300"], fractions=[0.5], methods=["l1"], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.md", "demo.png"]
    (record,) = results["lenet300"]["records"]
    assert (record["method"], record["fraction"], record["layers"]) == ("l1", 0.5, "all")
    assert record["widths"]["fc1"] == [300, 150]
    assert record["params"] < load_model("lenet300")[1]["parameters"]
    assert json.loads((tmp_path / "demo.json").read_text())["lenet300"]["records"][0]["accuracy"] == record["accuracy"]
    assert "lenet300" in (tmp_path / "demo.md").read_text()
    assert "lenet300" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_the_stored_demo_records_are_reproduced(model):
    # docs/results/demo/demo.json is what `make demo` wrote; a refactor that changes what
    # TropNNC returns on a shipped model changes these records. Accuracies, widths and
    # sizes are exact; the certificates and errors are float32 sums, equal to round-off
    stored = json.loads(DEMO_JSON.read_text())[model]
    config = stored["config"]
    old = [r for r in stored["records"] if r["method"] == "tropnnc"]
    new = sweep(
        model,
        methods=["tropnnc"],
        fractions=config["fractions"],
        layers=config["layers"],
        seeds=config["seeds"],
        subset=True,
        progress=False,
    )["records"]
    assert [(r["fraction"], r["seed"]) for r in new] == [(r["fraction"], r["seed"]) for r in old]
    for a, b in zip(old, new, strict=True):
        assert (b["accuracy"], b["params"], b["macs"], b["widths"]) == (
            a["accuracy"],
            a["params"],
            a["macs"],
            a["widths"],
        )
        assert b["layer_certificates"].keys() == a["layer_certificates"].keys()
        for name, bound in a["layer_certificates"].items():
            assert b["layer_certificates"][name] == pytest.approx(bound, rel=1e-4)
        assert b["measured_error"] == pytest.approx(a["measured_error"], rel=1e-4)
