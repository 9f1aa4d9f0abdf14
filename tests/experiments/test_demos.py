"""The main job (tropref.experiments.demos): the shipped models compressed, a report written."""

from __future__ import annotations

import json

from tropref.experiments.demos import demo
from tropref.experiments.models import load_model


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
