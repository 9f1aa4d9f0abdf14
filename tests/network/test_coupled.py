"""Coupled channel groups (tropref.network.coupled): found where channels meet, compressed
with one partition, exact where channels are duplicates, and certified."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.network.test_graph import residual_graphs
from tropref import Budget
from tropref.experiments import load_model
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
    analyse,
    compress_network,
    count_macs,
    count_params,
    forward,
)
from tropref.network.coupled import (
    Gate,
    Group,
    compress_group,
    coupled_groups,
    group_keys,
    group_widths,
    groups_certificate,
)
from tropref.network.shapes import output_shapes
from tropref.network.widths import folded_batchnorms, graph_cost


def _stream_net(rng, n=4, dup=True, d=3, hidden=5, scaled=True):
    """A stem writing ``n`` stream channels (``2n`` when ``dup``: every channel twice, the
    copy scaled by 0.5 .. 2 when ``scaled``), two residual blocks adding to it, a classifier
    reading it."""
    scale = rng.uniform(0.5, 2.0, size=n) if scaled else np.ones(n)

    def rows(m_in):
        W, b = rng.normal(size=(n, m_in)), rng.normal(size=n)
        if not dup:
            return W, b
        return np.concatenate([W, scale[:, None] * W]), np.concatenate([b, scale * b])

    layers, inputs = [Dense(*rows(d), name="stem"), ReLU()], [(-1,), (0,)]
    stream, width = 1, 2 * n if dup else n
    for blk in range(2):
        Vin = rng.normal(size=(hidden, width))
        layers += [
            Dense(Vin, rng.normal(size=hidden), name=f"b{blk}_in"),
            ReLU(),
            Dense(*rows(hidden), name=f"b{blk}_out"),
            Add(),
            ReLU(),
        ]
        at = len(inputs)
        inputs += [(stream,), (at,), (at + 1,), (at + 2, stream), (at + 3,)]
        stream = at + 4
    layers.append(Dense(rng.normal(size=(2, width)), name="fc"))  # read any way: the fold is exact
    inputs.append((stream,))
    return Network(layers, (d,), inputs)


def test_groups_of_resnet20_are_its_three_streams():
    net, _ = load_model("resnet20")
    work = analyse(net).work
    groups = coupled_groups(work)
    assert [g.units for g in groups] == [16, 32, 64]
    assert all(g.why is None for g in groups)
    names = [[work.label(p).split("'")[1] for p in g.producers] for g in groups]
    assert names[0] == ["stem", "s1b1_conv2", "s1b2_conv2", "s1b3_conv2"]
    assert names[1] == ["s2b1_conv2", "s2b1_down", "s2b2_conv2", "s2b3_conv2"]
    readers = [work.label(r).split("'")[1] for r, _ in groups[2].readers]
    assert readers == ["s3b2_conv1", "s3b3_conv1", "fc"]  # the classifier through the pooling and flatten
    assert groups[2].readers[-1][1] is not None


def test_group_why_names_what_is_in_the_way():
    I = np.eye(2)
    to_input = Network([Dense(I), Add()], (2,), [(-1,), (0, -1)])
    (g,) = coupled_groups(to_input)
    assert "network's input" in g.why
    assert "network's output" in g.why
    concat = Network(
        [Dense(I), ReLU(), Dense(I), Add(), Concat(), Dense(np.ones((1, 4)))],
        (2,),
        [(-1,), (0,), (1,), (2, 1), (3, 1), (4,)],
    )
    assert "Concat" in coupled_groups(concat)[0].why
    bn = BatchNorm(np.zeros(2), np.ones(2), np.ones(2), np.zeros(2))
    preact = Network(
        [Dense(I), Dense(I), Add(), bn, ReLU(), Dense(np.ones((1, 2)))], (2,), [(-1,), (0,), (1, 0), (2,), (3,), (4,)]
    )
    (g,) = coupled_groups(preact)  # a BatchNorm then a ReLU reading the stream: a gate
    assert g.why is None
    assert g.gates[0].bn == 3


@pytest.mark.parametrize(
    ("method", "options", "scaled"),
    [("tropnnc", {}, True), ("tropnnc", {"variant": "paper"}, True), ("model_folding", {}, False), ("cup", {}, False)],
)
def test_duplicated_stream_channels_merge_exactly(method, options, scaled):
    """Copies (scaled copies for the methods that fold with a scale) merge with no error."""
    rng = np.random.default_rng(0)
    net = _stream_net(rng, scaled=scaled)
    x = rng.normal(size=(50, 3))
    small, report = compress_network(net, {"stem": 4}, method=method, seed=0, coupled=True, inputs=x, **options)
    assert small.layers[0].W.shape == (4, 3)
    assert small.layers[-1].W.shape == (2, 4)
    assert report.measured_error < 1e-9
    assert report.certificate < 1e-8
    status = {r.name: r.status for r in report.layers}
    assert status["stem"] == status["b0_out"] == status["b1_out"] == "compressed"
    assert status["b0_in"] == "kept"  # not named in the mapping: the inner channels keep their width


def test_inputs_unchanged_and_hidden_layers_compressed_too():
    rng = np.random.default_rng(1)
    net = _stream_net(rng, dup=False, n=6)
    before = [np.copy(layer.W) for layer in net.layers if hasattr(layer, "W")]
    x = rng.normal(size=(40, 3))
    small, report = compress_network(net, 0.5, seed=0, coupled=True, inputs=x)
    widths = {r.name: (r.width_before, r.width_after) for r in report.layers}
    assert widths["stem"] == widths["b1_out"] == (6, 3)
    assert widths["b0_in"] == (5, 2) or widths["b0_in"] == (5, 3)
    assert widths["fc"] == (2, 2)
    np.testing.assert_allclose(forward(small, x), small(x))
    assert report.measured_error <= report.certificate
    after = [layer.W for layer in net.layers if hasattr(layer, "W")]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    plain, _ = compress_network(net, 0.5, seed=0)
    assert plain.layers[0].W.shape == (6, 3)  # off by default


def test_coupled_refuses_data_driven_methods():
    rng = np.random.default_rng(2)
    net = _stream_net(rng, dup=False)
    with pytest.raises(ValueError, match=r"coupled group stream of 'stem'.*data"):
        compress_network(net, 0.5, method="thinet", coupled=True, data=rng.normal(size=(20, 3)))


def test_conv_stream_through_pooling_and_flatten_is_exact_when_duplicated():
    rng = np.random.default_rng(3)
    n = 3
    W0 = rng.normal(size=(n, 2, 3, 3))
    s = rng.uniform(0.5, 2, size=n)[:, None, None, None]
    W2 = rng.normal(size=(n, 4, 3, 3))
    layers = [
        Conv2d(np.concatenate([W0, s * W0]), padding=(1, 1, 1, 1), name="stem"),
        ReLU(),
        Conv2d(rng.normal(size=(4, 2 * n, 3, 3)), rng.normal(size=4), padding=(1, 1, 1, 1)),
        ReLU(),
        Conv2d(np.concatenate([W2, s * W2]), padding=(1, 1, 1, 1)),
        Add(),
        ReLU(),
        AvgPool2d((2, 2)),
        Flatten(),
        Dense(rng.normal(size=(3, 2 * n * 4))),
    ]
    inputs = [(-1,), (0,), (1,), (2,), (3,), (4, 1), (5,), (6,), (7,), (8,)]
    net = Network(layers, (2, 4, 4), inputs)
    x = rng.normal(size=(10, 2, 4, 4))
    small, report = compress_network(net, {"stem": n}, seed=0, coupled=True, inputs=x)
    assert small.layers[-1].W.shape == (3, n * 4)
    assert report.measured_error < 1e-9
    assert report.certificate < 1e-8


@settings(max_examples=30, deadline=None)
@given(residual_graphs(), st.sampled_from([0.3, 0.6, 1.0]), st.sampled_from(["tropnnc", "model_folding", "l1"]))
def test_certificate_holds_with_coupled_groups_on_random_residual_graphs(case, keep, method):
    net, x = case
    small, report = compress_network(net, keep, method=method, seed=0, inputs=x, coupled=True)
    err = np.abs(forward(small, x) - forward(net, x))
    if report.certificate is not None:
        assert np.all(err <= report.certificate_per_output.reshape(1, -1) * (1 + 1e-9) + 1e-9)
    if keep == 1.0:
        assert report.measured_error <= 1e-9


def test_group_errors_bound_each_producer_against_an_independent_expansion():
    rng = np.random.default_rng(4)
    net = _stream_net(rng, dup=False, n=6)
    work = analyse(net).work
    (group,) = coupled_groups(work)
    layers = list(work.layers)
    errors, scale, info = compress_group(layers, work, group, 3, method="tropnnc", seed=0, options={})
    labels = info["assignment"]
    for p in group.producers:  # the compressed producer, read through the fold, against the original rows
        old, new = work.layers[p], layers[p]
        expanded = scale[:, None] * np.hstack([new.W, new.b[:, None]])[labels]
        diff = np.hstack([old.W, old.b[:, None]]) - expanded
        np.testing.assert_allclose(errors[p], np.linalg.norm(diff, axis=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_certificate_holds_when_a_producer_reads_its_own_group(seed):
    """``s' = relu(W s + s)``: the branch's one layer both reads and writes the stream."""
    rng = np.random.default_rng(seed)
    n, d = 6, 3
    layers = [Dense(rng.normal(size=(n, d)), rng.normal(size=n)), ReLU()]
    inputs = [(-1,), (0,)]
    for _ in range(2):
        at = len(layers)
        layers += [Dense(rng.normal(size=(n, n)) / 2, rng.normal(size=n)), Add(), ReLU()]
        inputs += [(at - 1,), (at, at - 1), (at + 1,)]
    layers.append(Dense(rng.normal(size=(2, n))))
    inputs.append((len(layers) - 2,))
    net = Network(layers, (d,), inputs)
    (group,) = coupled_groups(net)
    assert set(group.producers) & {r for r, _ in group.readers}  # read and written by the same layers
    x = rng.normal(size=(200, d)) * 3
    small, report = compress_network(net, 0.5, seed=0, coupled=True, inputs=x)
    assert small.layers[0].W.shape == (3, d)
    err = np.abs(forward(small, x) - forward(net, x))
    assert np.all(err <= report.certificate_per_output * (1 + 1e-9) + 1e-12)
    assert report.measured_error > 0


def _preact_net(rng, n=4, dup=True, d=3, hidden=5, scaled=True, proportional=True):
    """A pre-activation stream: a stem writing ``n`` channels (``2n`` when ``dup``, the copy
    scaled by 0.5 .. 2 when ``scaled``), two blocks ``s + B relu(A relu(bn(s)))``, and
    ``fc relu(bn(s))``. A copy's BatchNorm reads it as ``r`` times its original (``r`` random
    positive), so every copy's gate is ``r`` times its original's (unless not ``proportional``:
    then the copies' BatchNorms are drawn on their own)."""
    scale = rng.uniform(0.5, 2.0, size=n) if scaled else np.ones(n)
    width = 2 * n if dup else n

    def rows(m_in):
        W, b = rng.normal(size=(n, m_in)), rng.normal(size=n)
        return (np.concatenate([W, scale[:, None] * W]), np.concatenate([b, scale * b])) if dup else (W, b)

    def bn():
        mean, var, weight, bias = rng.normal(size=n), rng.uniform(0.5, 2, n), rng.normal(size=n), rng.normal(size=n)
        if not dup:
            return BatchNorm(mean, var, weight, bias)
        if not proportional:
            mean, var = np.concatenate([mean, rng.normal(size=n)]), np.concatenate([var, rng.uniform(0.5, 2, n)])
            return BatchNorm(mean, var, np.abs(rng.normal(size=2 * n)), rng.normal(size=2 * n))
        r = rng.uniform(0.5, 2.0, size=n)
        cat = np.concatenate
        return BatchNorm(
            cat([mean, scale * mean]), cat([var, var]), cat([weight, weight * r / scale]), cat([bias, r * bias])
        )

    layers, inputs, stream = [Dense(*rows(d), name="stem")], [(-1,)], 0
    for blk in range(2):
        at = len(layers)
        layers += [bn(), ReLU(), Dense(rng.normal(size=(hidden, width)), rng.normal(size=hidden)), ReLU()]
        layers += [Dense(*rows(hidden), name=f"b{blk}_out"), Add()]
        inputs += [(stream,), (at,), (at + 1,), (at + 2,), (at + 3,), (at + 4, stream)]
        stream = at + 5
    layers += [bn(), ReLU(), Dense(rng.normal(size=(2, width)), name="fc")]
    inputs += [(stream,), (stream + 1,), (stream + 2,)]
    return Network(layers, (d,), inputs)


def test_preact_stream_gates_are_found():
    net = _preact_net(np.random.default_rng(0))
    (group,) = coupled_groups(analyse(net).work)
    assert group.why is None
    assert [(g.bn, g.relu, g.readers) for g in group.gates] == [
        (1, 2, ((3, None),)),
        (7, 8, ((9, None),)),
        (13, 14, ((15, None),)),
    ]
    assert group.readers == ()


@pytest.mark.parametrize(
    ("method", "scaled"), [("tropnnc", True), ("tropnnc", False), ("model_folding", False), ("cup", False)]
)
def test_preact_duplicated_channels_merge_exactly_through_their_gates(method, scaled):
    rng = np.random.default_rng(1)
    net = _preact_net(rng, scaled=scaled)
    x = rng.normal(size=(50, 3))
    small, report = compress_network(net, {"stem": 4}, method=method, seed=0, coupled=True, inputs=x)
    assert small.layers[1].channels == 4
    assert small.layers[-1].W.shape == (2, 4)
    assert report.measured_error < 1e-9
    assert report.certificate < 1e-8


@pytest.mark.parametrize("seed", range(8))
def test_certificate_holds_through_merged_gates(seed):
    rng = np.random.default_rng(seed)
    net = _preact_net(rng, n=6, dup=False)
    x = rng.normal(size=(300, 3))
    small, report = compress_network(net, 0.5, seed=0, coupled=True, inputs=x)
    err = np.abs(forward(small, x) - forward(net, x))
    assert report.measured_error > 0
    assert np.all(err <= report.certificate_per_output * (1 + 1e-9) + 1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_gate_bound_alone_holds_and_is_what_the_certificate_carries(seed):
    """Duplicated stream channels (the producers merge exactly) read by BatchNorms that are
    not proportional: the only change is in the merged gates, and the certificate (then the
    gates' terms alone) still holds."""
    rng = np.random.default_rng(seed)
    net = _preact_net(rng, proportional=False)
    x = rng.normal(size=(300, 3))
    small, report = compress_network(net, {"stem": 4}, seed=0, coupled=True, inputs=x, correct="none", outgoing=0)
    err = np.abs(forward(small, x) - forward(net, x))
    assert report.measured_error > 1e-3
    assert np.all(err <= report.certificate_per_output * (1 + 1e-9) + 1e-12)


# --------------------------------------------------------------------------- the adapters


@pytest.mark.parametrize("in_place", [False, True])
def test_torch_resnet18_streams_compressed_written_back_and_reloaded(in_place):
    torch = pytest.importorskip("torch")
    import io

    from tests.torch_resnets import randomise_batchnorm, resnet18
    from tropref.adapters.torch import compress, from_torch, load_compressed

    torch.manual_seed(0)
    model = randomise_batchnorm(resnet18(width=8, num_classes=5)).double().eval()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, report = compress(model, 0.5, inputs=x, coupled=True, progress=False, in_place=in_place)
    status = {r.name: r.status for r in report.layers}
    assert status["layer1.0.conv2"] == status["conv1"] == status["layer2.0.downsample.0"] == "compressed"
    assert status["fc"] == "classifier"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the input is untouched
    # the written-back model computes what tropref's compressed network computes
    net = from_torch(model, input_shape=(3, 32, 32), dtype=np.float64)
    ref, _ = compress_network(net, 0.5, coupled=True, inputs=x.numpy(), progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(small(x).numpy(), forward(ref, x.numpy()), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(
            float(np.max(np.abs(small(x).numpy() - model(x).numpy()))), report.measured_error, rtol=1e-6
        )
    widths = {r.name: r.width_after for r in report.layers}
    assert widths["conv1"] == 4
    assert widths["layer4.1.conv2"] == widths["layer4.0.downsample.0"] == 32
    if in_place:
        assert small.conv1.out_channels == 4
        assert small.layer4[1].conv2.out_channels == 32
    assert report.certificate is None or report.certificate >= report.measured_error
    if in_place:  # the user's own class, reloaded from a saved state
        buf = io.BytesIO()
        torch.save(small.state_dict(), buf)
        buf.seek(0)
        again = load_compressed(resnet18(width=8, num_classes=5).double(), torch.load(buf, weights_only=True))
        with torch.no_grad():
            assert torch.equal(again.eval()(x), small(x))


@pytest.mark.parametrize("in_place", [False, True])
def test_torch_preact_resnet_streams_compressed_through_their_gates(in_place):
    torch = pytest.importorskip("torch")
    import io

    from tests.torch_resnets import PreActResNet, randomise_batchnorm
    from tropref.adapters.torch import compress, from_torch, load_compressed

    torch.manual_seed(1)
    model = randomise_batchnorm(PreActResNet()).double().eval()
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    small, report = compress(model, 0.5, inputs=x, coupled=True, progress=False, in_place=in_place)
    widths = {r.name: r.width_after for r in report.layers}
    assert widths["conv1"] == widths["blocks.1.conv2"] == 4
    assert widths["blocks.2.shortcut"] == widths["blocks.3.conv2"] == 8
    ref, _ = compress_network(from_torch(model, dtype=np.float64), 0.5, coupled=True, inputs=x.numpy(), progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(small(x).numpy(), forward(ref, x.numpy()), rtol=1e-9, atol=1e-9)
        assert float((small(x) - model(x)).abs().max()) == pytest.approx(report.measured_error, rel=1e-9)
    assert report.certificate >= report.measured_error
    if in_place:
        assert small.blocks[1].bn1.num_features == 4
        buf = io.BytesIO()
        torch.save(small.state_dict(), buf)
        buf.seek(0)
        again = load_compressed(PreActResNet().double(), torch.load(buf, weights_only=True))
        with torch.no_grad():
            assert torch.equal(again.eval()(x), small(x))


def test_batchnorm_on_the_stream_without_a_relu_is_left_unchanged_with_the_reason():
    rng = np.random.default_rng(0)
    net = Network(
        [Dense(rng.normal(size=(4, 3))), BatchNorm(np.zeros(4), np.ones(4)), Dense(rng.normal(size=(4, 4))), Add()],
        (3,),
        [(-1,), (0,), (1,), (2, 0)],
    )
    (group,) = coupled_groups(net)
    assert "not followed by a ReLU alone" in group.why


def test_keras_resnet50_streams_compressed():
    keras = pytest.importorskip("keras")
    from tests.adapters.test_keras_graph import _np, _randomise_bn
    from tropref.adapters.keras import compress

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    _randomise_bn(model.layers)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    small, report = compress(model, 0.5, inputs=x, coupled=True, progress=False)
    status = {r.name: r.status for r in report.layers}
    for name in ("conv1_conv", "conv2_block1_0_conv", "conv2_block1_3_conv", "conv5_block3_3_conv"):
        assert status[name] == "compressed", (name, status[name])
    widths = {r.name: r.width_after for r in report.layers}
    assert widths["conv2_block3_3_conv"] == widths["conv2_block1_0_conv"] == 128  # 256 stream channels halved
    out = _np(small(x))
    assert float(np.max(np.abs(out - _np(model(x))))) == pytest.approx(report.measured_error, rel=1e-4, abs=1e-6)


def test_a_group_holds_its_producers_members_and_readers():
    net = analyse(_stream_net(np.random.default_rng(40), dup=False)).work
    (group,) = coupled_groups(net)
    assert isinstance(group, Group)
    assert [net.layers[p].name for p in group.producers] == ["stem", "b0_out", "b1_out"]
    assert all(net.layers[p].units == group.units == 4 for p in group.producers)
    members = set(group.members)
    assert {i for i, l in enumerate(net.layers) if isinstance(l, Add)} <= members
    assert [net.layers[r].name for r, _ in group.readers] == ["b0_in", "b1_in", "fc"]
    for r, _ in group.readers:  # each reader reads the stream
        assert set(net.sources(r)) & members
    assert group.gates == ()


def test_a_gate_is_a_batchnorm_and_its_relu_reading_the_stream():
    net = analyse(_preact_net(np.random.default_rng(41))).work
    (group,) = coupled_groups(net)
    assert len(group.gates) == 3
    for gate in group.gates:
        assert isinstance(gate, Gate)
        assert isinstance(net.layers[gate.bn], BatchNorm)
        assert isinstance(net.layers[gate.relu], ReLU)
        assert net.sources(gate.relu) == (gate.bn,)
        assert set(net.sources(gate.bn)) <= set(group.members) | set(group.producers)
        assert all(gate.relu in net.sources(r) for r, _ in gate.readers)


def test_group_widths_and_keys_read_the_producers_names():
    net = _stream_net(np.random.default_rng(42), dup=False, n=6)
    groups = coupled_groups(net)
    assert group_widths(0.5, groups, net) == {0: 3}
    assert group_widths({"b1_out": 2}, groups, net) == {0: 2}  # any producer names the group
    assert group_widths({"b0_in": 2}, groups, net) == {0: 6}  # a hidden layer does not
    assert group_keys({"stem": 2, "b0_in": 3, 9: 1}, groups, net) == {"stem", 9}  # 9: b1_out
    assert group_keys(0.5, groups, net) == set()


@pytest.mark.parametrize("seed", range(3))
def test_groups_certificate_bounds_the_change_of_compressing_a_group(seed):
    rng = np.random.default_rng(seed)
    net = analyse(_stream_net(rng, dup=False, n=6)).work
    (group,) = coupled_groups(net)
    layers = list(net.layers)
    errors, scale, info = compress_group(layers, net, group, 3, method="tropnnc", seed=0, options={})
    small = Network(layers, net.input_shape, net.inputs)
    x = rng.uniform(-1, 1, size=(200, *net.input_shape))
    bound, shares = groups_certificate(
        [net, small], [group], [errors], [scale], [info["assignment"]], [info["gates"]], inputs=x, input_radius=None
    )
    assert np.all(np.abs(forward(small, x) - forward(net, x)).max(axis=0) <= bound + 1e-12)
    assert len(shares) == 1
    assert groups_certificate([net, small], [group], [errors], [scale], [info["assignment"]], [info["gates"]],
                              inputs=None, input_radius=None) == (None, [])  # fmt: skip


def _conv_stream_net(rng):
    """A convolutional stream with a BatchNorm after a hidden layer's ReLU (folded into its
    reader once that layer is compressed), pooled and flattened into the classifier."""
    bn = BatchNorm(rng.normal(size=5), rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5), rng.normal(size=5))
    layers = [
        Conv2d(rng.normal(size=(6, 2, 3, 3)), padding=(1, 1, 1, 1), name="stem"),
        ReLU(),
        Conv2d(rng.normal(size=(5, 6, 3, 3)), rng.normal(size=5), padding=(1, 1, 1, 1), name="inner"),
        ReLU(),
        bn,
        Conv2d(rng.normal(size=(6, 5, 3, 3)), padding=(1, 1, 1, 1), name="out"),
        Add(),
        ReLU(),
        AvgPool2d((2, 2)),
        Flatten(),
        Dense(rng.normal(size=(3, 6 * 4))),
    ]
    inputs = [(-1,), (0,), (1,), (2,), (3,), (4,), (5, 1), (6,), (7,), (8,), (9,)]
    return Network(layers, (2, 4, 4), inputs)


@pytest.mark.parametrize("model", ["stream", "preact", "conv", "resnet20"])
def test_graph_cost_is_what_compress_network_builds_with_its_groups(model):
    rng = np.random.default_rng(4)
    net = {
        "stream": lambda: _stream_net(rng, dup=False, n=6),
        "preact": lambda: _preact_net(rng, n=6, dup=False),
        "conv": lambda: _conv_stream_net(rng),
        "resnet20": lambda: load_model("resnet20")[0],
    }[model]()
    s = analyse(net)
    groups = [g for g in coupled_groups(s.work) if g.why is None]
    shapes = output_shapes(s.work)
    for _ in range(3):
        widths = {g: int(rng.integers(1, s.work.layers[g].units + 1)) for g in s.compressible}
        keep = {s.origin(g): k for g, k in widths.items()}
        for group in groups:
            k = int(rng.integers(1, group.units + 1))
            widths.update(dict.fromkeys(group.producers, k))
            keep[s.origin(group.producers[0])] = k
        small, _ = compress_network(net, keep, method="l1", seed=0, coupled=True, certify=False, progress=False)
        kw = dict(vanishing_bn=folded_batchnorms(s, s.compressible), merged=frozenset(s.compressible))
        assert graph_cost(s.work, widths, kind="params", shapes=None, **kw) == count_params(small)
        assert graph_cost(s.work, widths, kind="macs", shapes=shapes, **kw) == count_macs(small, net.input_shape)


@pytest.mark.parametrize("kind", ["units", "params", "macs"])
@pytest.mark.parametrize("fraction", [0.8, 0.65])
def test_budget_over_coupled_groups_is_met_and_cuts_the_duplicated_stream_first(kind, fraction):
    # the stream's 2n channels are n duplicated pairs: probed at the uniform width (at least
    # n at these fractions) its merges are exact, so the allocation cuts the stream first
    rng = np.random.default_rng(5)
    net = _stream_net(rng, n=6, dup=True, hidden=8)
    x = rng.normal(size=(100, 3))
    budget = Budget(**{kind: fraction})
    small, report = compress_network(net, budget, seed=0, coupled=True, inputs=x)
    widths = {r.name: (r.width_before, r.width_after) for r in report.layers}
    if kind == "units":
        # the stream's channels count once (written by three producers), as its width
        used, total = (sum(widths[n][t] for n in ("stem", "b0_in", "b1_in")) for t in (1, 0))
    else:
        count = count_params if kind == "params" else (lambda m: count_macs(m, (3,)))
        used, total = count(small), count(net)
    assert used <= fraction * total
    stream, inner = widths["stem"], widths["b0_in"]
    assert widths["b0_out"] == widths["b1_out"] == stream
    assert stream[1] / stream[0] < inner[1] / inner[0]
    assert report.measured_error <= report.certificate
    plain, _ = compress_network(net, budget, seed=0, inputs=x)
    assert plain.layers[0].W.shape[0] == 12  # without coupled=True the stream keeps every channel


@settings(max_examples=15, deadline=None)
@given(residual_graphs(), st.sampled_from([Budget(params=0.5), Budget(units=0.4), Budget(macs=0.6, floor=0)]))
def test_certificate_holds_with_a_budget_over_coupled_groups_on_random_residual_graphs(case, budget):
    net, x = case
    try:
        small, report = compress_network(net, budget, seed=0, inputs=x, coupled=True)
    except ValueError as exc:  # a budget below one unit per layer is refused, with its reason
        if "cannot be met" not in str(exc):
            raise
        return
    err = np.abs(forward(small, x) - forward(net, x))
    if report.certificate is not None:
        assert np.all(err <= report.certificate_per_output.reshape(1, -1) * (1 + 1e-9) + 1e-9)


def test_torch_resnet18_budget_over_its_streams_is_met_and_written_back():
    torch = pytest.importorskip("torch")
    from tests.torch_resnets import randomise_batchnorm, resnet18
    from tropref.adapters.torch import compress

    torch.manual_seed(1)
    model = randomise_batchnorm(resnet18(width=8, num_classes=5)).double().eval()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    small, report = compress(model, Budget(params=0.4), inputs=x, coupled=True, progress=False, in_place=True)
    # the budget is of the network tropref reads (BatchNorms folded), which the report counts
    assert report.params_after <= 0.4 * report.params_before
    widths = {r.name: (r.width_before, r.width_after) for r in report.layers}
    assert widths["layer4.1.conv2"] == widths["layer4.0.downsample.0"]  # one width per stream
    assert widths["layer4.1.conv2"][1] < 64  # the budget cut that stream
    assert small.layer4[1].conv2.out_channels == widths["layer4.1.conv2"][1]
    with torch.no_grad():
        error = float(np.max(np.abs(small(x).numpy() - model(x).numpy())))
    assert error == pytest.approx(report.measured_error, rel=1e-6)
    assert report.certificate is None or report.certificate >= report.measured_error


def test_keras_residual_budget_over_its_stream_is_met_and_rebuilt():
    keras = pytest.importorskip("keras")
    from keras import layers as L

    from tests.adapters.test_keras_graph import _np, _randomise_bn
    from tropref.adapters.keras import compress

    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(12, 3, padding="same", use_bias=False, name="stem")(inp)))
    for blk in range(2):
        r = L.ReLU()(L.BatchNormalization()(L.Conv2D(10, 3, padding="same", name=f"b{blk}_c1")(h)))
        r = L.BatchNormalization()(L.Conv2D(12, 3, padding="same", name=f"b{blk}_c2")(r))
        h = L.ReLU()(L.Add()([r, h]))
    model = keras.Model(inp, L.Dense(4, name="fc")(L.GlobalAveragePooling2D()(h)))
    _randomise_bn(model.layers)
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
    small, report = compress(model, Budget(params=0.3), inputs=x, coupled=True, progress=False)
    assert report.params_after <= 0.3 * report.params_before
    widths = {r.name: r.width_after for r in report.layers}
    assert widths["stem"] == widths["b0_c2"] == widths["b1_c2"] < 12  # the stream cut, one width
    error = float(np.max(np.abs(_np(small(x)) - _np(model(x)))))
    assert error == pytest.approx(report.measured_error, rel=1e-4, abs=1e-6)
    assert report.certificate is None or report.certificate >= report.measured_error


def test_progress_and_errors_name_a_stream_by_the_users_layer_index():
    net, _ = load_model("resnet20")  # its BatchNorms are layers of its own: the work graph's indices differ
    lines = []
    compress_network(net, {"s3b1_conv2": 32}, seed=0, coupled=True, certify=False, progress=lines.append)
    (line,) = [text for text in lines if "stream of" in text]
    assert "'s3b1_conv2' (layer 50, Conv2d)" in line
    assert net.label(50) == "'s3b1_conv2' (layer 50, Conv2d)"
