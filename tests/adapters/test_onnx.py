"""The ONNX adapter: models exported from PyTorch with ``torch.onnx.export`` (a VGG-style chain
with BatchNorm and a ``x.view(x.size(0), -1)`` flatten, a ResNet-56-style CIFAR network, a
model with a concatenation), run under onnxruntime; graphs written by hand for the operators
PyTorch does not export (``Gemm`` with ``transB=0``/``alpha``/``beta``, ``MatMul`` + ``Add``,
``Pad``, a ``Reshape`` to a constant size); the refusals, by node name."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # a guard only: CI installs the [onnx] extra and runs these tests
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tropref.adapters.torch as tropref_torch  # noqa: E402
from tests.helpers import run_doctests  # noqa: E402
from tests.torch_resnets import BasicBlock, conv1x1, conv3x3, randomise_batchnorm  # noqa: E402
from tropref import compress_network  # noqa: E402
from tropref.adapters.onnx import compress, from_onnx, to_onnx  # noqa: E402
from tropref.network import Add, BatchNorm, Concat, forward  # noqa: E402

WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "BatchNormalization")


class VGG(nn.Module):
    """conv-BN-ReLU blocks and max pooling, a ``view`` flatten, a dense classifier with dropout."""

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        cfg, layers, cin = [w, w, "M", 2 * w, 2 * w, "M"], [], 3
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
                cin = c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 4 * 4, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class CifarResNet(nn.Module):
    """The CIFAR ResNet-(6n+2) of He et al. (n=9: ResNet-56), with 1x1 convolution shortcuts."""

    def __init__(self, n: int = 9, w: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = conv3x3(3, w), nn.BatchNorm2d(w), nn.ReLU()
        blocks, cin = [], w
        for stage, c in enumerate((w, 2 * w, 4 * w)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                down = nn.Sequential(conv1x1(cin, c, stride), nn.BatchNorm2d(c)) if stride != 1 or cin != c else None
                blocks.append(BasicBlock(cin, c, stride, down))
                cin = c
        self.layers = nn.Sequential(*blocks)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class Branches(nn.Module):
    """Two convolution branches concatenated along the channels, average pooling counting its padding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AvgPool2d(3, 2, padding=1, count_include_pad=True)
        self.fc = nn.Linear(14 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.fc(torch.flatten(self.pool(torch.cat([self.a(s), self.b(s)], 1)), 1))


def _export(model: nn.Module, shape: tuple[int, ...], keep_batchnorm: bool = True):
    """The model exported by the TorchScript exporter, with a dynamic batch dimension; its
    BatchNorms kept as nodes (``TrainingMode.PRESERVE`` of an eval-mode model), or folded into
    the convolutions by the exporter (its default)."""
    f = io.BytesIO()
    kw = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False} if keep_batchnorm else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (torch.zeros(2, *shape),),
            f,
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            **kw,
        )
    return onnx.load_from_string(f.getvalue())


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _inputs(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _check_written_back(original, new) -> None:
    """Same opset, input and output names, dynamic batch; every node but the weight nodes
    copied unchanged (up to its reading a removed BatchNorm's input); passes the checker."""
    onnx.checker.check_model(new)
    assert list(new.opset_import) == list(original.opset_import)
    for a, b in ((original.graph.input, new.graph.input), (original.graph.output, new.graph.output)):
        assert [v.SerializeToString() for v in a] == [v.SerializeToString() for v in b]
    assert new.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    before = {n.name: n for n in original.graph.node}
    kept = {n.name for n in new.graph.node}
    removed = {n.output[0]: n.input[0] for n in original.graph.node if n.name not in kept}
    for node in new.graph.node:
        if node.op_type in WEIGHT_OPS:
            continue
        old = onnx.NodeProto()
        old.CopyFrom(before[node.name])
        for k, name in enumerate(old.input):
            old.input[k] = removed.get(name, name)
        assert node.SerializeToString() == old.SerializeToString(), node.name


def _same_as_torch_adapter(
    model: nn.Module, mp, x: np.ndarray, keep: float = 0.5, compressed: int = 2, **options
) -> None:
    """The ONNX adapter's model of the export equals the PyTorch adapter's of the source model
    (with ``options``): the same widths, the same outputs (float32 round-off)."""
    small, report = compress(mp, keep=keep, seed=3, inputs=x, certify=False, **options)  # no certificate: faster
    ref, ref_report = tropref_torch.compress(
        model, keep=keep, seed=3, inputs=torch.from_numpy(x), certify=False, **options
    )
    assert [r.width_after for r in report.layers] == [r.width_after for r in ref_report.layers]
    assert [r.status.split(":")[0] for r in report.layers] == [r.status.split(":")[0] for r in ref_report.layers]
    assert sum(r.width_after < r.width_before for r in report.layers) >= compressed  # something was compressed
    expect = _torch_out(ref, x)
    np.testing.assert_allclose(_run(small, x), expect, rtol=0, atol=2e-5 * np.abs(expect).max())
    _check_written_back(mp, small)
    # the kept widths are in the written graph: each compressed convolution's weight has its new width
    widths = {r.name: r.width_after for r in report.layers}
    inits = {t.name: tuple(t.dims) for t in small.graph.initializer}
    for node in small.graph.node:
        if node.op_type == "Conv":
            assert inits[node.input[1]][0] == widths[node.name], node.name


@pytest.mark.parametrize("keep_batchnorm", [True, False])
def test_vgg_with_batchnorm(keep_batchnorm):
    torch.manual_seed(0)
    model = randomise_batchnorm(VGG())
    mp = _export(model, (3, 16, 16), keep_batchnorm)
    ops = [n.op_type for n in mp.graph.node]
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Gemm"} <= set(ops)  # x.view(x.size(0), -1)
    assert ops.count("BatchNormalization") == (5 if keep_batchnorm else 1)  # the exporter folds those of convolutions
    saved = mp.SerializeToString()
    x = _inputs((3, 16, 16))
    full, report = compress(mp, keep=1.0, inputs=x)
    y = _run(mp, x)
    np.testing.assert_allclose(_run(full, x), y, rtol=0, atol=1e-5 * np.abs(y).max())
    np.testing.assert_allclose(y, _torch_out(model, x), rtol=0, atol=1e-5 * np.abs(y).max())
    assert report.measured_error < 1e-5 * np.abs(y).max()
    assert "BatchNormalization" not in [n.op_type for n in full.graph.node]  # folded where tropref folds them
    _check_written_back(mp, full)
    # an exporter that folds the convolutions' BatchNorms leaves no statistics there for
    # TropNNC's refit to read: the two models then agree with the refit off
    _same_as_torch_adapter(model, mp, x, **({} if keep_batchnorm else {"refit": "none"}))
    assert mp.SerializeToString() == saved  # the model given is not modified


@pytest.fixture(scope="module")
def resnet56():
    torch.manual_seed(1)
    model = randomise_batchnorm(CifarResNet(n=9, w=4))
    return model, _export(model, (3, 32, 32))


def test_resnet56_style_cifar_network(resnet56):
    model, mp = resnet56
    net = from_onnx(mp)
    assert sum(isinstance(l, Add) for l in net.layers) == 27
    assert sum(isinstance(l, BatchNorm) for l in net.layers) == 57  # 55 convolutions' and 2 shortcuts' BatchNorms
    x = _inputs((3, 32, 32), n=4)
    full, _ = compress(mp, keep=1.0, inputs=x, certify=False)
    y = _run(mp, x)
    np.testing.assert_allclose(_run(full, x), y, rtol=0, atol=1e-5 * np.abs(y).max())
    np.testing.assert_allclose(y, _torch_out(model, x), rtol=0, atol=1e-5 * np.abs(y).max())
    _same_as_torch_adapter(model, mp, x)


def test_concatenation_and_count_include_pad():
    torch.manual_seed(2)
    model = randomise_batchnorm(Branches())
    mp = _export(model, (3, 8, 8))
    net = from_onnx(mp)
    assert any(isinstance(l, Concat) for l in net.layers)
    x = _inputs((3, 8, 8))
    y = _run(mp, x)
    np.testing.assert_allclose(forward(net, x), y, rtol=0, atol=1e-5 * np.abs(y).max())
    _same_as_torch_adapter(model, mp, x, compressed=1)  # the branches' last convolutions are coupled by the Concat


def test_compressed_model_runs_as_tropref_forward_and_reads_from_a_path(tmp_path):
    """onnxruntime on the written model equals tropref's forward pass of the compressed network."""
    torch.manual_seed(3)
    model = randomise_batchnorm(VGG(w=4))
    mp = _export(model, (3, 16, 16))
    onnx.save(mp, tmp_path / "vgg.onnx")
    x = _inputs((3, 16, 16))
    small, _ = compress(tmp_path / "vgg.onnx", keep=0.3, method="l1", seed=0, inputs=x)
    new, _ = compress_network(from_onnx(mp), 0.3, method="l1", seed=0, inputs=x)
    expect = forward(new, x)
    np.testing.assert_allclose(_run(small, x), expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    np.testing.assert_allclose(_run(to_onnx(new, like=mp), x), expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    fresh = to_onnx(new)  # a new graph of plain nodes
    onnx.checker.check_model(fresh)
    np.testing.assert_allclose(_run(fresh, x), expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    assert [type(l).__name__ for l in from_onnx(fresh)] == [type(l).__name__ for l in new.layers]


def test_fresh_graph_of_a_residual_network(resnet56):
    _, mp = resnet56
    net = from_onnx(mp)
    x = _inputs((3, 32, 32), n=2)
    fresh = to_onnx(net)
    assert {n.op_type for n in fresh.graph.node} >= {"Add", "Conv", "BatchNormalization", "AveragePool", "Gemm"}
    np.testing.assert_allclose(_run(fresh, x), _run(mp, x), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- hand-written graphs


def _init(rng, name, *shape, scale=0.5):
    return numpy_helper.from_array((scale * rng.normal(size=shape)).astype(np.float32), name)


def _model(nodes, inits, c=2, hw=6, opset=17):
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _hand_chain():
    """Pad, Conv + Add of its bias, AveragePool not counting its padding, Conv, MaxPool, a
    Reshape to a constant ``[-1, 24]``, MatMul + Add, Gemm with transB=0, alpha and beta."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Pad", ["x", "pads"], ["p"], name="pad"),
        n("Conv", ["p", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        n("Add", ["c1", "b1"], ["a1"], name="conv1_bias"),
        n("Relu", ["a1"], ["r1"], name="relu1"),
        n("AveragePool", ["r1"], ["ap"], name="avg", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Conv", ["ap", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[0, 1, 2, 1]),
        n("Relu", ["c2"], ["r2"], name="relu2"),
        n("MaxPool", ["r2"], ["mp"], name="max", kernel_shape=[2, 2], strides=[2, 2]),
        n("Reshape", ["mp", "shape"], ["f"], name="flatten"),
        n("MatMul", ["f", "w3"], ["m3"], name="fc1"),
        n("Add", ["m3", "b3"], ["a3"], name="fc1_bias"),
        n("Relu", ["a3"], ["r3"], name="relu3"),
        n("Gemm", ["r3", "w4", "b4"], ["g4"], name="fc2", alpha=0.5, beta=2.0),
        n("Relu", ["g4"], ["r4"], name="relu4"),
        n("Gemm", ["r4", "w5"], ["y"], name="fc3", transB=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        _init(rng, "w1", 6, 2, 3, 3),
        _init(rng, "b1", 1, 6, 1, 1),
        _init(rng, "w2", 6, 6, 3, 3),
        _init(rng, "b2", 6),
        numpy_helper.from_array(np.array([-1, 24], np.int64), "shape"),
        _init(rng, "w3", 24, 12),
        _init(rng, "b3", 12),
        _init(rng, "w4", 12, 8),
        _init(rng, "b4", 8),
        _init(rng, "w5", 3, 8),
    ]
    return _model(nodes, inits)


def test_hand_written_operators_read_and_written_back():
    mp = _hand_chain()
    x = _inputs((2, 6, 6))
    net = from_onnx(mp)
    assert [type(l).__name__ for l in net.layers if type(l).__name__ not in ("Identity",)] == [
        *("Conv2d", "ReLU", "AvgPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten"),
        *("Dense", "ReLU", "Dense", "ReLU", "Dense"),
    ]
    assert not net.layers[[l.name for l in net.layers].index("avg")].count_include_pad
    y = _run(mp, x)
    np.testing.assert_allclose(forward(net, x), y, rtol=0, atol=1e-5 * np.abs(y).max())
    small, report = compress(mp, keep=0.5, inputs=x)
    new, _ = compress_network(net, 0.5, seed=0, inputs=x)
    expect = forward(new, x)
    np.testing.assert_allclose(_run(small, x), expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    inits = {t.name: numpy_helper.to_array(t) for t in small.graph.initializer}
    by_name = {node.name: node for node in small.graph.node}
    assert inits[by_name["flatten"].input[1]].tolist() == [-1, 12]  # conv2's 6 channels became 3
    assert inits[by_name["conv1_bias"].input[1]].shape == (1, 3, 1, 1)  # the bias stays in its Add
    assert inits[by_name["fc1"].input[1]].shape == (12, 6)  # MatMul's (in, out)
    assert inits[by_name["fc2"].input[1]].shape == (6, 4)  # transB=0: (in, out)
    assert {a.name for a in by_name["fc2"].attribute}.isdisjoint({"alpha", "beta"})
    assert by_name["pad"].SerializeToString() == mp.graph.node[0].SerializeToString()
    assert {r.name: r.width_after for r in report.layers} == {"conv1": 3, "conv2": 3, "fc1": 6, "fc2": 4, "fc3": 3}


def test_unsupported_nodes_are_refused_by_name_all_at_once():
    rng = np.random.default_rng(1)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], name="grouped", kernel_shape=[3, 3], group=2),
        n("LeakyRelu", ["c1"], ["r1"], name="leaky"),
        n("Sigmoid", ["r1"], ["s1"], name="gate"),
        n("Reshape", ["s1", "shape"], ["f"], name="split_view"),
        n("Clip", ["f", "lo", "hi"], ["cl"], name="relu6"),
        n("Flatten", ["cl"], ["fl"], name="flat"),
        n("Gemm", ["fl", "w2"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _init(rng, "w1", 4, 2, 3, 3),
        numpy_helper.from_array(np.array([0, 2, -1], np.int64), "shape"),
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
        _init(rng, "w2", 3, 64),
    ]
    mp = _model(nodes, inits, c=4)
    with pytest.raises(ValueError, match="5 problems") as info:
        from_onnx(mp)
    msg = str(info.value)
    for part in (
        "'grouped' (Conv): grouped or depthwise convolution (group=2)",
        "'leaky' (LeakyRelu) is a ReLU variant",
        "replace it by Relu",
        "'gate' (Sigmoid) is not supported by tropref; supported: Gemm",
        "re-export the model",
        "'split_view' (Reshape): a reshape to [0, 2, -1] is not supported",
    ):
        assert part in msg
    assert "'relu6' (Clip)" in msg
    with pytest.raises(ValueError, match="'grouped' \\(Conv\\)"):
        compress(mp)


def test_weights_must_be_constants_and_one_output():
    rng = np.random.default_rng(2)
    n = helper.make_node
    nodes = [
        n("Flatten", ["x"], ["f"], name="flat"),
        n("Relu", ["w_raw"], ["w"], name="weight_op"),
        n("Gemm", ["f", "w"], ["y"], name="fc", transB=1),
        n("Relu", ["y"], ["z"], name="extra"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 2, 2])],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, ["n", 3]) for v in ("y", "z")],
        [_init(rng, "w_raw", 3, 8)],
    )
    with pytest.raises(ValueError, match="2 problems") as info:
        from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert "'fc' (Gemm): its weight 'w' is not a constant (computed by node 'weight_op' (Relu)" in str(info.value)
    assert "2 outputs ('y', 'z')" in str(info.value)
    with pytest.raises(TypeError, match="`model`"):
        from_onnx(42)


def test_docstring_examples():
    import tropref.adapters.onnx as mod

    run_doctests(mod)


def test_the_adapter_imports_onnx_only():
    """tropref.adapters.onnx imports onnx and tropref (whose core imports no framework,
    tests/test_docs.py), never a training framework."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[2] / "adapters" / "onnx.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    roots = {name.split(".")[0] for name in names}
    assert roots <= {
        "onnx",
        "numpy",
        "tropref",
        "__future__",
        "os",
        "time",
        "collections",
        "dataclasses",
        "functools",
        "typing",
    }
    assert "onnx" in roots


def test_cli_compresses_an_onnx_file(tmp_path, capsys):
    from tropref.experiments.cli import main

    torch.manual_seed(4)
    model = randomise_batchnorm(
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Flatten(),
            nn.Linear(8 * 7 * 7, 16),
            nn.ReLU(),
            nn.Linear(16, 10),
        )
    )
    onnx.save(_export(model, (1, 28, 28)), tmp_path / "net.onnx")
    out = tmp_path / "small.onnx"
    assert (
        main(["compress", str(tmp_path / "net.onnx"), "--keep", "0.5", "--out", str(out), "--subset", "--no-progress"])
        == 0
    )
    printed = capsys.readouterr().out
    for part in ("8->4", "16->8", f"wrote {out}"):
        assert part in printed
    small = onnx.load(out)
    _check_written_back(onnx.load(tmp_path / "net.onnx"), small)
    x = _inputs((1, 28, 28))
    assert _run(small, x).shape == (8, 10)
    expect, _ = compress(tmp_path / "net.onnx", keep=0.5, seed=0)
    np.testing.assert_allclose(_run(small, x), _run(expect, x), rtol=0, atol=1e-5)


def test_unnamed_nodes_and_initializers_listed_as_inputs():
    """Older exporters leave node names empty and list the initializers among the graph's inputs."""
    mp = _hand_chain()
    for node in mp.graph.node:
        node.name = ""
    mp.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in mp.graph.initializer)
    onnx.checker.check_model(mp)
    x = _inputs((2, 6, 6))
    small, report = compress(mp, keep=0.5, inputs=x)
    assert [r.name for r in report.layers] == ["Conv_1", "Conv_5", "MatMul_9", "Gemm_12", "Gemm_14"]
    new, _ = compress_network(from_onnx(mp), 0.5, seed=0, inputs=x)
    expect = forward(new, x)
    np.testing.assert_allclose(_run(small, x), expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    inits = {t.name for t in small.graph.initializer}
    assert small.graph.input[0].name == "x"
    assert {i.name for i in small.graph.input[1:]} <= inits  # no input left for a weight that was replaced
    assert "pads" in inits  # the Pad node is copied unchanged, with its initializer


def test_a_model_zoo_style_graph():
    """As ONNX's model zoo MNIST model is written: a fixed batch of 1, weights reshaped and
    transposed by nodes, ``auto_pad=SAME_UPPER`` at stride 2 (asymmetric amounts), a bias
    added of shape ``(C, 1, 1)``, a ``Reshape`` to ``[1, d]``, ``MatMul`` + ``Add`` of ``(1, m)``."""
    rng = np.random.default_rng(3)
    n = helper.make_node
    nodes = [
        n("Reshape", ["w1_flat", "w1_shape"], ["w1"], name="w1_reshape"),
        n("Conv", ["x", "w1"], ["c1"], name="conv", kernel_shape=[5, 5], strides=[2, 2], auto_pad="SAME_UPPER"),
        n("Add", ["c1", "b1"], ["a1"], name="conv_plus"),
        n("Relu", ["a1"], ["r1"], name="relu1"),
        n("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Reshape", ["p1", "flat_shape"], ["f"], name="flatten"),
        n("Transpose", ["w2_t"], ["w2"], name="w2_transpose", perm=[1, 0]),
        n("MatMul", ["f", "w2"], ["m2"], name="times"),
        n("Add", ["m2", "b2"], ["a2"], name="plus"),
        n("Relu", ["a2"], ["r2"], name="relu2"),
        n("MatMul", ["r2", "w3"], ["m3"], name="out_times"),
        n("Add", ["m3", "b3"], ["y"], name="out_plus"),
    ]
    inits = [
        _init(rng, "w1_flat", 8 * 5 * 5),
        numpy_helper.from_array(np.array([8, 1, 5, 5], np.int64), "w1_shape"),
        _init(rng, "b1", 8, 1, 1),
        numpy_helper.from_array(np.array([1, 72], np.int64), "flat_shape"),
        _init(rng, "w2_t", 16, 72, scale=0.2),
        _init(rng, "b2", 1, 16),
        _init(rng, "w3", 16, 3),
        _init(rng, "b3", 1, 3),
    ]
    graph = helper.make_graph(
        nodes,
        "zoo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    mp.ir_version = 7
    onnx.checker.check_model(mp)
    x = _inputs((1, 12, 12), n=6)
    net = from_onnx(mp)
    assert net.layers[0].padding == (1, 2, 1, 2)
    y = np.concatenate([_run(mp, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(forward(net, x), y, rtol=0, atol=1e-5 * np.abs(y).max())
    small, report = compress(mp, keep=0.5, inputs=x)
    assert {r.name: r.width_after for r in report.layers} == {"conv": 4, "times": 8, "out_times": 3}
    new, _ = compress_network(net, 0.5, seed=0, inputs=x)
    expect = forward(new, x)
    got = np.concatenate([_run(small, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    by_name = {node.name: node for node in small.graph.node}
    assert {"w1_reshape", "w2_transpose"}.isdisjoint(by_name)  # they fed replaced weights only
    inits = {t.name: numpy_helper.to_array(t) for t in small.graph.initializer}
    assert inits[by_name["flatten"].input[1]].tolist() == [1, 36]
    assert inits[by_name["conv_plus"].input[1]].shape == (4, 1, 1)
    assert inits[by_name["plus"].input[1]].shape == (1, 8)


@pytest.mark.parametrize(("op", "keepdims"), [("ReduceMean", 0), ("ReduceMax", 1)])
def test_spatial_reductions_as_global_pooling(op, keepdims):
    """PyTorch's default (dynamo) exporter writes ``AdaptiveAvgPool2d(1)`` as a ``ReduceMean``
    over axes 2 and 3 (the axes an input from opset 18 on)."""
    rng = np.random.default_rng(4)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu"),
        n(op, ["r1", "axes"], ["m"], name="pool", keepdims=keepdims),
        *([] if not keepdims else [n("Flatten", ["m"], ["m_flat"], name="flatten")]),
        n("Gemm", ["m_flat" if keepdims else "m", "w2"], ["y"], name="fc", transB=1),
    ]
    axes = numpy_helper.from_array(np.array([-2, -1] if keepdims else [2, 3], np.int64), "axes")
    mp = _model(nodes, [_init(rng, "w1", 8, 2, 3, 3), _init(rng, "b1", 8), axes, _init(rng, "w2", 3, 8)], opset=18)
    x = _inputs((2, 6, 6))
    net = from_onnx(mp)
    y = _run(mp, x)
    np.testing.assert_allclose(forward(net, x), y, rtol=0, atol=1e-5 * np.abs(y).max())
    small, report = compress(mp, keep=0.5, inputs=x)
    assert report.layers[0].width_after == 4
    new, _ = compress_network(net, 0.5, seed=0, inputs=x)
    expect = forward(new, x)
    np.testing.assert_allclose(_run(small, x), expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    mp.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    with pytest.raises(ValueError, match=f"node 'pool' \\({op}\\): tropref reads a reduction over the spatial axes"):
        from_onnx(mp)


def test_batchnorm_after_the_relu_rewritten_or_removed():
    """A BatchNorm after a ReLU stays, with new statistics, where tropref keeps it (before the
    next convolution) and is removed where tropref folds it into the next layer (the Linear)."""
    torch.manual_seed(5)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8), nn.MaxPool2d(2)]
    layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)]
    model = randomise_batchnorm(nn.Sequential(*layers))
    mp = _export(model, (3, 8, 8))
    x = _inputs((3, 8, 8))
    _same_as_torch_adapter(model, mp, x)
    small, _ = compress(mp, keep=0.5, seed=3, inputs=x)
    bns = [node for node in small.graph.node if node.op_type == "BatchNormalization"]
    assert [node.name for node in bns] == [
        mp.graph.node[[n.op_type for n in mp.graph.node].index("BatchNormalization")].name
    ]
    inits = {t.name: tuple(t.dims) for t in small.graph.initializer}
    assert [inits[i] for i in bns[0].input[1:]] == [(4,)] * 4  # its channels merged with the convolution's


def test_cli_writes_any_model_as_onnx(tmp_path, capsys):
    """``--out FILE.onnx`` of a model that was not read from ONNX writes a new ONNX graph."""
    from tropref.experiments.cli import main
    from tropref.experiments.models import load_model, predict

    out = tmp_path / "lenet.onnx"
    assert main(["compress", "lenet300", "--keep", "0.5", "--out", str(out), "--subset", "--no-progress"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    small = onnx.load(out)
    onnx.checker.check_model(small)
    assert [tuple(t.dims) for t in small.graph.initializer if len(t.dims) == 2] == [(150, 784), (50, 150), (10, 50)]
    x = _inputs((1, 28, 28))
    net, _ = load_model("lenet300")
    new, _ = compress_network(net, 0.5, seed=0)  # data-free: the CLI's inputs only measure the error
    expect = predict(new, x)
    np.testing.assert_allclose(_run(small, x), expect, rtol=0, atol=1e-5 * np.abs(expect).max())
