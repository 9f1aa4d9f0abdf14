"""The layer certificate beside the measured error (tropref.experiments.certcheck)."""

from __future__ import annotations

import pytest

from tests.experiments.stand_ins import stand_in, tiny_cnn, tiny_mlp
from tests.helpers import run_doctests
from tropref import experiments as E
from tropref.experiments import certcheck


def test_docstring_examples():
    run_doctests(certcheck)


def test_certificate_check_holds_and_detects_exact_merge():
    net = tiny_mlp(seed=3)
    x, y = stand_in(net, n=200)
    rows = E.certificate_check(net, methods=["tropnnc", "l1"], fractions=[0.5, 0.25], test=(x, y))
    assert len(rows) == 4
    for r in rows:
        # measured error within the certificate, up to the forward passes' rounding (the
        # exact merge at 0.5 has both near 1e-15)
        assert r["measured_ratio_max"] <= r["certificate_max"] * (1 + 1e-9) + 1e-12
    by = {(r["method"], r["fraction"]): r for r in rows}
    assert by[("tropnnc", 0.5)]["abs_change_max"] < 1e-9  # duplicated units merge exactly
    assert by[("l1", 0.5)]["abs_change_max"] > 1e-3
    paper = E.certificate_check(
        net, methods=["tropnnc"], fractions=[0.25], test=(x, y), options={"tropnnc": {"variant": "paper"}}
    )
    assert paper[0]["certificate_max"] != by[("tropnnc", 0.25)]["certificate_max"]  # the options reach the method
    md = E.certificate_markdown(rows)
    assert md.count("\n") == 6
    with pytest.raises(ValueError, match="`model`"):
        E.certificate_check(tiny_cnn(), test=stand_in(tiny_cnn()))
