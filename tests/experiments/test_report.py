"""Summaries over seeds, Markdown, PNG and files (tropref.experiments.report)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tropref
from tests.helpers import run_doctests
from tropref import experiments as E
from tropref.experiments import report
from tropref.experiments.report import (
    NEURON_MERGING_PUBLISHED,
    code_version,
    markdown,
    plot,
    summarize,
    to_json,
    write_report,
)


def test_docstring_examples():
    run_doctests(report)


def test_markdown_places_published_anchor():
    res = {
        "config": {"methods": ["tropnnc"], "fractions": [0.5, 0.1], "layers": ["dense"]},
        "model": {"name": "lenet300", "params": 100, "macs": 100, "accuracy": 0.9, "test_set": "t", "test_size": 5},
        "records": [
            {
                "method": "tropnnc",
                "layers": "dense",
                "fraction": q,
                "seed": 0,
                "accuracy": a,
                "params": 50,
                "macs": 50,
                "certificate": 1.0,
                "measured_error": 0.5,
                "seconds": 0.1,
            }
            for q, a in ((0.5, 0.88), (0.1, 0.5))
        ],
    }
    md = E.markdown(res)
    assert "| 50% | **88.00** | 88.69 | 88.40 |" in md
    assert "| 10% | **50.00** | - | - |" in md


def _result(accuracies, certificates):
    records = [
        {"method": "tropnnc", "layers": "dense", "fraction": 0.5, "seed": s, "accuracy": a, "params": 50 + s}
        | {"macs": 50, "certificate": c, "measured_error": 0.5, "seconds": 0.1}
        for s, (a, c) in enumerate(zip(accuracies, certificates, strict=True))
    ]
    model = {"name": "lenet300", "params": 100, "macs": 100, "accuracy": 0.9, "test_set": "t", "test_size": 5}
    return {
        "config": {"methods": ["tropnnc"], "fractions": [0.5], "layers": ["dense"]},
        "model": model,
        "records": records,
    }


def test_summarize_averages_over_seeds():
    (row,) = summarize(_result([0.8, 0.9, 0.7], [1.0, 3.0, 2.0]))
    assert (row["method"], row["layers"], row["fraction"], row["runs"]) == ("tropnnc", "dense", 0.5, 3)
    assert row["accuracy"] == pytest.approx(0.8)
    assert row["accuracy_std"] == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert row["params"] == pytest.approx(51)
    assert row["certificate"] == pytest.approx(2.0)
    (row,) = summarize(_result([0.8, 0.9], [1.0, None]))
    assert row["certificate"] is None  # one run without a certificate: no mean
    assert summarize(_result([0.8], [1.0]))[0]["accuracy_std"] == 0.0


def test_markdown_anchors_are_the_published_numbers():
    md = markdown(_result([0.88], [1.0]))
    merge, prune = NEURON_MERGING_PUBLISHED["merge"][0.5], NEURON_MERGING_PUBLISHED["prune"][0.5]
    assert f"| 50% | **88.00** | {100 * merge:.2f} | {100 * prune:.2f} |" in md


def test_write_report_writes_json_markdown_and_a_png(tmp_path):
    result = _result([0.8, 0.9], [1.0, 2.0])
    paths = write_report(result, tmp_path)
    assert sorted(paths) == ["json", "md", "png"]
    assert paths["json"].name == "lenet300_dense.json"  # the default stem: model and layer groups
    assert json.loads(paths["json"].read_text()) == json.loads(to_json(result))
    assert paths["md"].read_text() == markdown(result)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(write_report(result, tmp_path, stem="x", png=False)) == ["json", "md"]
    assert plot(result, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_to_json_writes_numpy_values_and_the_rest_as_text():
    text = to_json({"a": np.float32(0.25), "b": np.arange(3), "c": np.int64(2), "d": object})
    assert text.endswith("\n")
    assert json.loads(text) == {"a": 0.25, "b": [0, 1, 2], "c": 2, "d": str(object)}


def test_code_version_names_the_version_and_the_commit():
    info = code_version()
    assert info["tropref"] == tropref.__version__
    if "git_commit" in info:  # in a checkout
        assert len(info["git_commit"]) == 40
        assert isinstance(info["git_modified"], list)
