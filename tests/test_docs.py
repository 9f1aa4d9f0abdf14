"""Every example in the core's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib

import pytest

CORE_MODULES = [
    "tropref.zonotope",
    "tropref.tropical",
    "tropref.compress",
    "tropref.cluster",
    "tropref.methods.tropnnc",
    "tropref.methods.predecessor",
    "tropref.methods.baselines",
    "tropref.methods.thinet",
]


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert failures == 0


def test_core_imports_no_framework():
    """The core never imports a deep-learning framework (only the adapters do)."""
    import subprocess
    import sys

    code = (
        "import sys, tropref, tropref.network, tropref.cluster;"
        "bad = [m for m in ('torch', 'keras', 'tensorflow', 'jax', 'cupy') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_readme_code_blocks_run():
    """The README's Python examples run as written (the PyTorch one needs torch, which CI installs)."""
    import re
    from pathlib import Path

    pytest.importorskip("torch")
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
