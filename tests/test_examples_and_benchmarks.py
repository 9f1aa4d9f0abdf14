"""The example and benchmark scripts run on the installed package: none edits ``sys.path``,
and each starts (``--help``; the quickstart runs whole) from a folder outside the checkout,
as the commands in the README, docs/ and the Makefile run them (``python examples/NAME.py``,
``python benchmarks/NAME.py``)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(str(p.relative_to(ROOT)) for d in ("examples", "benchmarks") for p in (ROOT / d).glob("*.py"))
# imported from their own folder, not run: a shared module, and a script whose main() needs CuPy
IMPORT_ONLY = {"benchmarks/layer_cases.py", "benchmarks/gpu_compare.py"}
RUN_WHOLE = {"examples/quickstart.py"}  # no options: one layer, about a second
SYS_PATH_EDIT = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*=|sys\.path\s*\+=")


def test_no_script_or_test_edits_sys_path():
    """Scripts and tests import tropref (and tropref.adapters) as installed; a script's
    sibling module is found because Python puts the script's own folder first on the path."""
    me = Path(__file__).resolve()
    edits = [
        f"{p.relative_to(ROOT)}:{i}"
        for d in ("examples", "benchmarks", "tests")
        for p in sorted((ROOT / d).rglob("*.py"))  # tests/ has a folder per package
        if p.resolve() != me
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if SYS_PATH_EDIT.search(line)
    ]
    assert edits == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts_outside_the_checkout(script):
    with tempfile.TemporaryDirectory() as tmp:
        if script in IMPORT_ONLY:  # as `python -c "import NAME"` in its folder
            cmd, cwd = [sys.executable, "-c", f"import {Path(script).stem}"], (ROOT / script).parent
        else:
            cmd, cwd = [sys.executable, str(ROOT / script), *([] if script in RUN_WHOLE else ["--help"])], tmp
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if script not in IMPORT_ONLY | RUN_WHOLE:
        assert "usage:" in out.stdout
