"""The PyTorch adapter on residual networks: torchvision's ResNet-18/50 architectures
(written out in ``torch_resnets.py``), pre-activation blocks, save/reload, no mutation, and
the refusals that list every obstacle at once."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a guard only: CI installs torch and runs these tests
nn = torch.nn
F = torch.nn.functional

from tests.torch_resnets import PreActResNet, randomise_batchnorm, resnet18, resnet50  # noqa: E402
from tropref import Budget  # noqa: E402
from tropref.adapters.torch import compress, from_torch, to_torch  # noqa: E402
from tropref.network import Add, Conv2d, Network, ReLU, forward  # noqa: E402


def _out(model, x):
    with torch.no_grad():
        return model(x).double().numpy()


@pytest.mark.parametrize(("make", "width"), [(resnet18, 16), (resnet50, 8)])
def test_resnets_are_exact_at_keep_one(make, width):
    torch.manual_seed(0)
    model = randomise_batchnorm(make(width=width, num_classes=10))
    x = torch.randn(3, 3, 32, 32)
    state = copy.deepcopy(model.state_dict())
    small, report = compress(model, keep=1.0, inputs=x)
    ref = _out(model, x)
    np.testing.assert_allclose(_out(small, x), ref, atol=1e-5 * np.abs(ref).max())
    assert report.measured_error < 1e-5 * np.abs(ref).max()
    assert report.certificate == 0.0
    status = {r.name: r.status for r in report.layers}
    assert status["layer1.0.conv1"] == "kept"
    if make is resnet18:
        assert status["layer1.0.conv2"].startswith("coupled")
    else:
        assert status["layer2.0.conv2"] == "kept"
        assert status["layer2.0.conv3"].startswith("coupled")
        assert status["layer2.0.downsample.0"].startswith("coupled")
    assert status["fc"] == "classifier"
    assert status["conv1"].startswith("coupled")
    for k, v in model.state_dict().items():  # the model given is not modified
        assert torch.equal(v, state[k]), k
    assert not model.training


def test_resnet_compressed_inner_channels_save_and_reload(tmp_path):
    torch.manual_seed(1)
    model = randomise_batchnorm(resnet18(width=8, num_classes=10))
    x = torch.randn(4, 3, 32, 32)
    small, report = compress(model, keep=0.5, inputs=x)
    widths = {r.name: (r.width_before, r.width_after) for r in report.layers}
    assert widths["layer3.1.conv1"] == (32, 16)
    assert widths["layer3.1.conv2"] == (32, 32)
    assert report.params_after < report.params_before
    assert report.measured_error <= report.certificate
    np.testing.assert_allclose(
        np.abs(_out(small, x) - _out(model, x)).max(), report.measured_error, rtol=1e-3, atol=1e-5
    )
    buf = io.BytesIO()
    torch.save(small.state_dict(), buf)
    fresh = copy.deepcopy(small)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    np.testing.assert_allclose(_out(fresh, x), _out(small, x), atol=0)
    torch.save(small, tmp_path / "small.pt")
    again = torch.load(tmp_path / "small.pt", weights_only=False)
    np.testing.assert_allclose(_out(again.eval(), x), _out(small, x), atol=0)
    again_net = from_torch(small, input_shape=(3, 32, 32))  # the written graph reads back
    np.testing.assert_allclose(forward(again_net, x.numpy()), _out(small, x), atol=1e-5)


def test_preactivation_blocks_and_budget():
    torch.manual_seed(2)
    model = randomise_batchnorm(PreActResNet((8, 16)))
    x = torch.randn(6, 3, 8, 8)
    small, report = compress(model, keep=1.0, inputs=x)
    np.testing.assert_allclose(_out(small, x), _out(model, x), atol=1e-5)
    status = {r.name: r.status for r in report.layers}
    assert status["blocks.0.conv1"] == "kept"
    assert status["blocks.0.conv2"].startswith("coupled")
    small, report = compress(model, keep=Budget(params=0.7), inputs=x, seed=0)
    assert report.params_after <= 0.7 * report.params_before
    assert report.measured_error <= report.certificate


def test_one_refusal_lists_every_obstacle():
    class Inverted(nn.Module):  # a MobileNetV2-style inverted residual
        def __init__(self) -> None:
            super().__init__()
            self.expand = nn.Conv2d(4, 8, 1)
            self.act1 = nn.ReLU6()
            self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.act2 = nn.LeakyReLU()
            self.project = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return x + self.project(self.act2(self.depthwise(self.act1(self.expand(x))))) * 0.5

    with pytest.raises(ValueError, match="4 problems") as info:
        from_torch(Inverted())
    msg = str(info.value)
    assert "4 problems" in msg
    assert "'act1' (ReLU6) is a ReLU variant" in msg
    assert "'act2' (LeakyReLU) is a ReLU variant" in msg
    assert "'depthwise'" in msg
    assert "groups=8" in msg
    assert "'mul'" in msg


def test_padding_written_by_tropref_reads_back():
    rng = np.random.default_rng(3)
    net = Network(
        [
            Conv2d(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), stride=2, padding=(0, 1, 0, 1)),
            ReLU(),
            Conv2d(rng.normal(size=(2, 3, 3, 3)), padding=(1, 2, 0, 1)),
        ],
        input_shape=(2, 8, 8),
    )
    model = to_torch(net, dtype=torch.float64)
    assert any(isinstance(m, nn.ZeroPad2d) for m in model)
    back = from_torch(model, input_shape=(2, 8, 8), dtype=np.float64)
    assert [type(l).__name__ for l in back] == ["Identity", "Conv2d", "ReLU", "Identity", "Conv2d"]
    assert back[1].padding == (0, 1, 0, 1)
    assert back[4].padding == (1, 2, 0, 1)
    x = rng.normal(size=(2, 2, 8, 8))
    np.testing.assert_allclose(forward(back, x), forward(net, x), atol=1e-12)
    with pytest.raises(ValueError, match=r"'0'.*padding"):
        from_torch(nn.Sequential(nn.ZeroPad2d(1), nn.ReLU()))


def test_adaptive_pooling_says_which_input_sizes_work_and_dense_size_is_checked():
    vgg_like = nn.Sequential(
        *[m for _ in range(5) for m in (nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))],
        nn.AdaptiveAvgPool2d((7, 7)),
        nn.Flatten(),
        nn.Linear(3 * 49, 10),
    )
    with pytest.raises(ValueError, match=r"'15' \(AdaptiveAvgPool2d\).*3x3.*7x7.*input_shape=\(3, 224, 224\)"):
        from_torch(vgg_like, input_shape=(3, 112, 112))
    assert len(from_torch(vgg_like, input_shape=(3, 224, 224)).layers) == 18
    with pytest.raises(ValueError, match=r"'1' \(layer 1, Dense\) expects \(5,\) inputs, gets \(4,\)"):
        from_torch(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), input_shape=(3,))


def test_softmax_certificate_is_a_number_for_wide_logits():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30)
    _small, report = compress(model, keep=0.5, inputs=torch.randn(32, 10))
    assert report.certificate is not None
    assert np.isfinite(report.certificate)
    assert report.measured_error <= report.certificate <= 1.0


def test_graph_write_back_is_a_plain_graph_module():
    net = Network([Conv2d(np.ones((2, 2, 1, 1))), ReLU(), Add()], (2, 3, 3), [(-1,), (0,), (1, -1)])
    model = to_torch(net, dtype=torch.float64)
    assert isinstance(model, torch.fx.GraphModule)
    x = np.random.default_rng(0).normal(size=(2, 2, 3, 3))
    np.testing.assert_allclose(_out(model, torch.as_tensor(x)), forward(net, x), atol=1e-12)
    assert isinstance(from_torch(model, input_shape=(2, 3, 3))[2], Add)


class _SharedLinear(torch.nn.Module):
    """One Linear called twice (shared weights), as a weight-tied model does."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.relu, self.out = torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.relu(self.fc(self.relu(self.fc(x)))))


def test_layer_called_twice_is_read_per_call_with_a_warning():
    model = _SharedLinear().eval()
    with pytest.warns(UserWarning, match=r"'fc' \(2 calls\).*no longer shared"):
        net = from_torch(model, input_shape=(8,))
    assert [type(l).__name__ for l in net.layers] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    x = torch.randn(16, 8)
    with torch.no_grad():
        np.testing.assert_allclose(forward(net, x.numpy()), model(x).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="no longer shared"):
        small, report = compress(model, keep=0.5, seed=0, inputs=x)
    assert report.params_before == 2 * (8 * 8 + 8) + 2 * 8 + 2  # every call's copy counted
    assert len(list(small.children())) == 5  # one module per call


def test_relu_module_called_twice_warns_nothing(recwarn):
    """Layers without weights (torchvision's BasicBlock calls its ReLU twice) share nothing."""
    from tests.torch_resnets import resnet18

    from_torch(resnet18(width=8).eval(), input_shape=(3, 32, 32))
    assert not [w for w in recwarn if "used several times" in str(w.message)]
