"""Networks as graphs: the forward pass, segments, compression and the certificate through
additions and concatenations (core only, every backend)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tropref import Budget, compress_network
from tropref.network import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Network,
    ReLU,
    Softmax,
    count_macs,
    count_params,
    forward,
    segments,
)
from tropref.network.graph import check_finite_layers, map_arrays, network_namespace
from tropref.network.shapes import output_shapes


def _conv(rng, o, c, k=3, stride=1, name=None):
    return Conv2d(
        rng.normal(size=(o, c, k, k)) / np.sqrt(c * k * k),
        rng.normal(size=o) * 0.1,
        stride=stride,
        padding=k // 2,
        name=name,
    )


def _bn(rng, c, name=None):
    return BatchNorm(
        rng.normal(size=c) * 0.2, rng.random(c) + 0.5, rng.random(c) + 0.5, rng.normal(size=c) * 0.2, name=name
    )


def residual_net(seed: int = 0, width: int = 4, inner: int = 6, concat: bool = False) -> Network:
    """stem -> [conv-bn-relu-conv-bn] + identity -> relu -> (concat with a 1x1 branch) -> pool -> fc."""
    rng = np.random.default_rng(seed)
    layers = [
        _conv(rng, width, 2, name="stem"),
        _bn(rng, width),
        ReLU(),  # 0 1 2
        _conv(rng, inner, width, name="c1"),
        _bn(rng, inner),
        ReLU(),
        _conv(rng, width, inner, name="c2"),
        _bn(rng, width),  # 3-7
        Add(name="add"),
        ReLU(),
    ]  # 8 9
    inputs = [(-1,), (0,), (1,), (2,), (3,), (4,), (5,), (6,), (7, 2), (8,)]
    last, c = 9, width
    if concat:
        layers += [_conv(rng, 3, width, k=1, name="side"), ReLU(), Concat(name="cat")]
        inputs += [(9,), (10,), (9, 11)]
        last, c = 12, width + 3
    layers += [AvgPool2d(6), Flatten(), Dense(rng.normal(size=(3, c)), rng.normal(size=3), name="fc")]
    inputs += [(last,), (last + 1,), (last + 2,)]
    return Network(layers, (2, 6, 6), inputs)


def test_chain_inputs_are_stored_as_a_chain_and_junctions_need_inputs():
    rng = np.random.default_rng(0)
    net = Network([Dense(rng.normal(size=(2, 2))), ReLU()], inputs=[(-1,), (0,)])
    assert net.is_chain
    assert net.inputs is None
    with pytest.raises(ValueError, match=r"Add.*needs `inputs`"):
        Network([Dense(rng.normal(size=(2, 2))), Add()])
    with pytest.raises(ValueError, match="must read two or more"):
        Network([Dense(rng.normal(size=(2, 2))), Add()], inputs=[(-1,), (0,)])
    with pytest.raises(ValueError, match="read by no layer"):
        Network([Dense(rng.normal(size=(2, 2))), ReLU(), Dense(rng.normal(size=(2, 2)))], inputs=[(-1,), (-1,), (1,)])
    with pytest.raises(ValueError, match="earlier layers"):
        Network([ReLU(), ReLU()], inputs=[(1,), (0,)])


def test_graph_forward_matches_a_hand_written_residual(backend):
    net = residual_net(1, concat=True)
    x = np.random.default_rng(2).normal(size=(5, 2, 6, 6))
    L = net.layers

    def run(idx, v):
        for i in idx:
            v = forward(Network([L[i]]), v)
        return v

    h = run([0, 1, 2], x)
    y = np.maximum(run([3, 4, 5, 6, 7], h) + h, 0)
    y = np.concatenate([y, run([10, 11], y)], axis=1)
    want = run([13, 14, 15], y)
    xb = backend.asarray(x)
    got = forward(net.to_numpy() if backend.name == "numpy" else _on(net, backend), xb, chunk=2)
    np.testing.assert_allclose(backend.numpy(got), want, rtol=1e-9, atol=1e-9)
    assert output_shapes(net)[-1] == (3,)


def _on(net: Network, backend) -> Network:
    from tropref.network.graph import map_arrays

    return map_arrays(net, lambda a: backend.asarray(a))


def test_segments_and_coupled_layers_are_reported():
    net = residual_net(0, concat=True)
    assert [s.nodes for s in segments(net)] == [(0, 1, 2), (3, 4, 5, 6, 7), (9,), (10, 11), (13, 14, 15)]
    x = np.random.default_rng(1).normal(size=(16, 2, 6, 6))
    small, report = compress_network(net, 0.5, seed=0, inputs=x)
    status = {r.name: r.status for r in report.layers}
    assert status["c1"] == "compressed"
    assert status["stem"].startswith("coupled")
    assert "read by 2 layers" in status["stem"]
    assert status["c2"].startswith("coupled")
    assert "'add'" in status["c2"]
    assert "residual sum" in status["c2"]
    assert status["side"].startswith("coupled")
    assert "concatenation" in status["side"]
    assert status["fc"] == "classifier"
    widths = {r.name: (r.width_before, r.width_after) for r in report.layers}
    assert widths["c1"] == (6, 3)
    assert widths["c2"] == (4, 4)
    assert widths["stem"] == (4, 4)
    assert report.params_after == count_params(small) < report.params_before == count_params(net)
    assert report.macs_after == count_macs(small)
    assert report.measured_error <= report.certificate


def test_keep_one_is_exact_and_the_input_is_not_modified():
    net = residual_net(3, concat=True)
    before = [np.array(getattr(layer, "W", np.zeros(1))) for layer in net.layers]
    x = np.random.default_rng(4).normal(size=(10, 2, 6, 6))
    small, report = compress_network(net, 1.0, seed=0, inputs=x)
    np.testing.assert_allclose(forward(small, x), forward(net, x), atol=1e-12)
    assert report.certificate == 0.0
    for a, layer in zip(before, net.layers, strict=False):
        np.testing.assert_array_equal(a, np.array(getattr(layer, "W", np.zeros(1))))


def test_keep_mapping_names_coupled_layers_and_budget_is_met():
    net = residual_net(5, inner=8)
    x = np.random.default_rng(6).normal(size=(8, 2, 6, 6))
    with pytest.raises(ValueError, match=r"'c2'.*coupled.*'add'"):
        compress_network(net, {"c2": 2}, inputs=x)
    _, report = compress_network(net, {"c1": 3}, inputs=x)
    assert {r.name: r.width_after for r in report.layers}["c1"] == 3
    for kind in ("params", "macs", "units"):
        _small, report = compress_network(net, Budget(**{kind: 0.8}), seed=0, inputs=x)
        if kind == "params":
            assert report.params_after <= 0.8 * report.params_before
        if kind == "macs":
            assert report.macs_after <= 0.8 * report.macs_before
        assert report.measured_error <= report.certificate


def test_data_driven_methods_read_the_compressed_graph():
    net = residual_net(7, inner=8, concat=True)
    x = np.random.default_rng(8).normal(size=(12, 2, 6, 6))
    small, report = compress_network(net, 0.5, method="thinet", seed=0, data=x)
    assert {r.name: r.width_after for r in report.layers}["c1"] == 4
    assert np.all(np.isfinite(forward(small, x)))


@st.composite
def residual_graphs(draw):
    """Random small residual networks of dense layers: a stem, 1-3 blocks of 1-2 hidden
    ReLU layers (each with an optional BatchNorm before its ReLU) with an identity (or
    projected) shortcut, an optional
    concatenation, an optional softmax."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    d, w = draw(st.integers(2, 4)), draw(st.integers(2, 5))
    layers, inputs = [Dense(rng.normal(size=(w, d)), rng.normal(size=w)), ReLU()], [(-1,), (0,)]
    stream = 1
    for _ in range(draw(st.integers(1, 3))):
        prev, width = stream, w
        for _ in range(draw(st.integers(1, 2))):
            h = draw(st.integers(1, 6))
            dup = draw(st.booleans())  # duplicated units: exact merges
            W, units = rng.normal(size=(h, width)), 2 * h if dup else h
            layers.append(Dense(np.concatenate([W, 2 * W]) if dup else W, rng.normal(size=units)))
            inputs.append((prev,))
            if draw(st.booleans()):  # a BatchNorm before the ReLU: statistics, so TropNNC corrects them
                layers.append(_bn(rng, units))
                inputs.append((len(layers) - 2,))
            layers.append(ReLU())
            inputs.append((len(layers) - 2,))
            prev, width = len(layers) - 1, units
        layers.append(Dense(rng.normal(size=(w, width)), rng.normal(size=w)))
        inputs.append((prev,))
        layers.append(Add())
        inputs.append((len(layers) - 2, stream))
        layers.append(ReLU())
        inputs.append((len(layers) - 2,))
        stream = len(layers) - 1
    out_in, width = stream, w
    if draw(st.booleans()):
        layers += [Dense(rng.normal(size=(2, w)), rng.normal(size=2)), ReLU(), Concat()]
        inputs += [(stream,), (len(layers) - 3,), (stream, len(layers) - 2)]
        out_in, width = len(layers) - 1, w + 2
    layers.append(Dense(rng.normal(size=(3, width)), rng.normal(size=3)))
    inputs.append((out_in,))
    if draw(st.booleans()):
        layers.append(Softmax())
        inputs.append((len(layers) - 2,))
    return Network(layers, (d,), inputs), rng.normal(size=(20, d)) * draw(st.sampled_from([1.0, 30.0]))


@given(residual_graphs(), st.sampled_from([0.3, 0.5, 0.8, 1.0]), st.sampled_from(["tropnnc", "cup", "neuron_merging"]))
def test_certificate_holds_on_random_residual_graphs(case, keep, method):
    net, x = case
    small, report = compress_network(net, keep, method=method, seed=0, inputs=x)
    err = np.abs(forward(small, x) - forward(net, x))
    assert report.measured_error == pytest.approx(float(err.max()), abs=1e-12)
    if report.certificate is not None:
        assert np.all(err <= report.certificate_per_output.reshape(1, -1) * (1 + 1e-9) + 1e-9)
    else:
        assert "unavailable" in report.input_domain
    if keep == 1.0:
        assert report.measured_error <= 1e-9


def test_carry_bound_adds_the_paths_that_meet_and_joins_concatenations():
    from tropref.network.bounds import carry_bound

    rng = np.random.default_rng(0)
    A, B, C = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.normal(size=(2, 6))
    # layer 0 (j) -> A -> Add <- B <- j ; Add -> Concat with the input -> C
    net = Network(
        [Dense(rng.normal(size=(2, 3))), Dense(A), Dense(B), Add(), Concat(), Dense(C)],
        (3,),
        [(-1,), (0,), (0,), (1, 2), (3, -1), (4,)],
    )
    e = np.array([0.5, 2.0])
    want = np.abs(C) @ np.concatenate([np.abs(A) @ e + np.abs(B) @ e, np.zeros(3)])
    np.testing.assert_allclose(carry_bound(net, 0, e, output_shapes(net), (3,)), want)


def test_graph_model_files_round_trip(tmp_path):
    from tropref.experiments import hidden_layer_names, load_model, save_model

    net = residual_net(9, concat=True)
    path = save_model(net, tmp_path / "res.npz")
    again, _meta = load_model(path, dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(3, 2, 6, 6))
    np.testing.assert_allclose(forward(again, x), forward(net, x), atol=1e-12)
    assert hidden_layer_names(again) == {"dense": [], "conv": ["c1"]}


def test_graph_compression_agrees_across_backends(backend):
    net = residual_net(0, inner=8, concat=True)
    x = np.random.default_rng(0).normal(size=(10, 2, 6, 6))
    want, rep0 = compress_network(net, Budget(params=0.8), seed=0, inputs=x, data=x, method="thinet")
    got, rep = compress_network(
        _on(net, backend),
        Budget(params=0.8),
        seed=0,
        inputs=backend.asarray(x),
        data=backend.asarray(x),
        method="thinet",
    )
    np.testing.assert_allclose(backend.numpy(forward(got, backend.asarray(x))), forward(want, x), rtol=1e-9, atol=1e-9)
    assert [r.width_after for r in rep.layers] == [r.width_after for r in rep0.layers]


def test_check_finite_layers_names_the_layer_and_the_array():
    net = residual_net(13)
    check_finite_layers(net)  # finite: nothing raised
    layers = list(net.layers)
    layers[4] = BatchNorm(layers[4].mean, layers[4].var, layers[4].weight, np.full(layers[4].channels, np.inf))
    with pytest.raises(ValueError, match=r"layer 4 \(BatchNorm\): `bias`"):
        check_finite_layers(net.replace_layers(layers))


def test_network_namespace_is_the_arrays_namespace_and_refuses_a_mix(all_backends):
    net = residual_net(14)
    for be in all_backends:
        assert network_namespace(map_arrays(net, be.asarray)) is be.xp, be.name
    strict = next(be for be in all_backends if be.name == "strict")
    mixed = list(net.layers)
    mixed[0] = Conv2d(strict.asarray(net.layers[0].W), strict.asarray(net.layers[0].b), padding=1)
    with pytest.raises((TypeError, ValueError), match=r"0\.W"):
        network_namespace(net.replace_layers(mixed))
