"""The walk's report (tropref.network.report): its counts, table, dict and progress lines."""

from __future__ import annotations

import numpy as np

from tests.network.networks import arrays_of, convnet
from tropref.network import (
    Dense,
    Network,
    ReLU,
    compress_network,
    count_macs,
    count_params,
)


def test_report_and_progress(capsys):
    net = convnet(np.random.default_rng(18), dup=False)
    lines: list[str] = []
    new, report = compress_network(net, keep=0.5, seed=3, progress=lines.append)
    assert len(lines) == 3
    assert "conv1" in lines[0]
    assert capsys.readouterr().err == ""  # silent by default
    compress_network(net, keep=0.5, seed=3, progress=True)
    assert "[tropref]" in capsys.readouterr().err
    assert report.params_before == count_params(net)
    assert report.params_after == count_params(new)
    assert report.macs_after == count_macs(new)
    assert report.certificate is None
    assert "no input domain" in report.input_domain
    for r in report.layers:
        assert r.params_after == sum(
            int(np.prod(getattr(new.layers[k], f).shape))
            for k in [_find(new, r.name)]
            for f in ("W", "b")
            if getattr(new.layers[k], f) is not None
        )
    import json

    as_dict = json.loads(json.dumps(report.to_dict(), default=str))
    assert as_dict["layers"][0]["name"] == "conv1"
    assert as_dict["params_after"] == report.params_after
    table = report.table()
    assert "conv1" in table
    assert "parameters" in table
    assert str(report) == table
    # the same seed gives the same network
    again, _ = compress_network(net, keep=0.5, seed=3)
    for a, b in zip(arrays_of(new), arrays_of(again), strict=True):
        np.testing.assert_array_equal(a, b)


def _find(net: Network, name: str) -> int:
    return next(i for i, l in enumerate(net.layers) if getattr(l, "name", None) == name)


def test_report_says_why_there_is_no_network_certificate():
    rng = np.random.default_rng(0)
    net = Network([Dense(rng.normal(size=(8, 3))), ReLU(), Dense(rng.normal(size=(2, 8)))])
    _, report = compress_network(net, 0.5, progress=False)
    assert report.certificate is None
    assert "network certificate: none: no input domain (pass `inputs` or `input_radius`)" in report.table()
    _, report = compress_network(net, 0.5, progress=False, inputs=rng.normal(size=(4, 3)), certify=False)
    assert "network certificate: none: not certified (certify=False)" in report.table()
