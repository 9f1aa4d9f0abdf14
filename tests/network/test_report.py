"""The walk's report (tropref.network.report): its counts, table, dict and progress lines."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.network.networks import arrays_of, convnet
from tropref.network import Dense, Network, ReLU, compress_network, count_macs, count_params
from tropref.network.certificate import CAPPED
from tropref.network.report import LayerReport, NetworkReport


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


def _layer(**changes) -> LayerReport:
    fields = dict(index=0, name="fc1", kind="dense", status="compressed", width_before=8, width_after=4)
    fields |= dict(params_before=40, params_after=20, macs_before=32, macs_after=16, certificate=0.25)
    return LayerReport(**(fields | changes))


def _report(layers: tuple[LayerReport, ...], **changes) -> NetworkReport:
    fields = dict(layers=layers, method="tropnnc", seed=7, keep="0.5", params_before=100, params_after=60)
    fields |= dict(macs_before=80, macs_after=40, certificate=0.5, certificate_per_output=np.array([0.5, 0.125]))
    fields |= dict(measured_error=0.1, input_domain="the box spanned by the 3 inputs given", time_s=1.5)
    return NetworkReport(**(fields | changes))


def test_layer_report_info_is_read_only():
    info = {"input_ratio": 1.0}
    r = _layer(info=info)
    info["input_ratio"] = 2.0  # a copy: the caller's dict does not reach it
    assert r.info["input_ratio"] == 1.0
    with pytest.raises(TypeError):
        r.info["input_ratio"] = 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.width_after = 5


def test_network_report_table_rows_and_totals():
    report = _report((_layer(), _layer(index=2, name="out", status="classifier", certificate=None)))
    lines = report.table().splitlines()
    assert lines[2].split()[:5] == ["fc1", "dense", "8->4", "40->20", "32->16"]
    assert "0.25" in lines[2]
    assert lines[3].endswith("[classifier]")
    assert "parameters 100 -> 60 (60.0%)" in lines
    assert "MACs       80 -> 40 (50.0%)" in lines
    assert any(line.startswith("network certificate max|Δf| <= 0.5 on the box spanned") for line in lines)
    assert "measured max|Δf| = 0.1 on the inputs given" in lines
    assert lines[-1] == "method tropnnc, seed 7, keep 0.5, 1.50 s"
    capped = _report((_layer(),), input_domain="the box" + CAPPED, notes=("one note",))
    assert "network certificate: only the interval cap (0.5, the span of the output boxes on the box)" in str(capped)
    assert str(capped).endswith("note: one note")


def test_network_report_to_dict_is_plain_json():
    report = _report((_layer(info={"sizes": np.array([1, 2])}),), steps={"compress": 1.0})
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # plain values only
    assert as_dict["certificate_per_output"] == [0.5, 0.125]
    assert as_dict["layers"][0]["info"] == {"sizes": [1, 2]}
    assert set(as_dict) == {f.name for f in dataclasses.fields(NetworkReport)}


@pytest.mark.parametrize("model", ["convnet", "vgg_small", "resnet20"])
def test_the_counts_are_those_of_the_networks_themselves(model):
    # the walk counts MACs at the shapes it computed once per network (the original's, and
    # the result's before its folded BatchNorms are dropped: the convnet has one after its
    # ReLU, and a second convolution that shrinks its input); the counts are those of the
    # networks it returns, computed here from scratch
    from tropref.experiments import load_model

    if model == "convnet":
        net = convnet(np.random.default_rng(5), next_padding=0, dup=False)
    else:
        net, _ = load_model(model)
    new, report = compress_network(net, keep=0.5, seed=0, certify=False)
    assert (report.macs_before, report.macs_after) == (count_macs(net), count_macs(new))
    assert (report.params_before, report.params_after) == (count_params(net), count_params(new))
    assert report.macs_after < report.macs_before
