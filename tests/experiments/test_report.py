"""Summaries over seeds, Markdown, PNG and files (tropref.experiments.report)."""

from __future__ import annotations

from tests.helpers import run_doctests
from tropref import experiments as E
from tropref.experiments import report


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
