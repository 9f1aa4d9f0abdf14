"""The PyTorch adapter: round trips, exact merges, certificates, save/load and refusals."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest

from tests.helpers import run_doctests

torch = pytest.importorskip("torch")  # a guard only: CI installs torch and runs these tests
nn = torch.nn
F = torch.nn.functional

from tropref.adapters.torch import compress, from_torch, to_torch  # noqa: E402
from tropref.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU, compress_network, forward  # noqa: E402


class LeNet(nn.Module):
    """LeNet-5 written the usual way: functional ReLU and pooling, ``view`` to flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = self.fc2(x).relu()
        return self.fc3(x)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.fc(x)) + x


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.fc(x)) * x


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def vgg_like() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU(), nn.BatchNorm2d(8), nn.AvgPool2d(2)),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(8 * 3 * 3, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Identity(),
        nn.Linear(16, 4),
    )
    _randomise_bn(model)
    return model.eval()


def _out(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).double().numpy()


@pytest.mark.parametrize(("make", "shape"), [(LeNet, (1, 28, 28)), (vgg_like, (3, 12, 12))])
def test_export_import_round_trip(make, shape):
    torch.manual_seed(1)
    model = make().eval()
    x = torch.randn(4, *shape)
    net = from_torch(model, input_shape=shape)
    np.testing.assert_allclose(forward(net, x.numpy()), _out(model, x), atol=1e-5)  # core == torch
    back = to_torch(net)
    np.testing.assert_allclose(_out(back, x), _out(model, x), atol=1e-5)
    assert all(type(m).__module__.startswith("torch.nn") for m in back)  # plain layers only


def test_keep_one_is_exact_and_model_untouched():
    model = vgg_like()
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(6, 3, 12, 12)
    small, report = compress(model, keep=1.0, inputs=x, dtype=np.float64)  # exact: double precision
    np.testing.assert_allclose(_out(small, x), _out(model, x), atol=1e-5)
    assert report.measured_error <= 1e-9
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_duplicated_channels_merge_exactly():
    """conv1's channels 4..7 repeat channels 0..3 (with their BatchNorm): merging to 4 is exact."""
    model = vgg_like()
    with torch.no_grad():
        conv, bn = model[0], model[1]
        conv.weight[4:] = conv.weight[:4]
        conv.bias[4:] = conv.bias[:4]
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            t[4:] = t[:4]
    x = torch.randn(5, 3, 12, 12)
    small, report = compress(model, keep={"0": 4}, inputs=x, dtype=np.float64)
    assert small[0].out_channels == 4
    np.testing.assert_allclose(_out(small, x), _out(model, x), atol=1e-4)
    assert report.certificate <= 1e-6


@pytest.mark.parametrize("method", ["tropnnc", "neural_path_kmeans"])
def test_compressed_model_equals_core_and_error_is_certified(method):
    torch.manual_seed(2)
    model = LeNet().eval()
    x = torch.randn(8, 1, 28, 28)
    small, report = compress(model, keep=0.5, method=method, seed=0, inputs=x)
    # the core in the adapter's own dtype (float32): a float32 and a float64 clustering may
    # part ways on a near tie (they did on one machine's BLAS for neural_path_kmeans)
    net = from_torch(model, input_shape=(1, 28, 28), dtype=np.float32)
    core, _ = compress_network(net, keep=0.5, method=method, seed=0)
    np.testing.assert_allclose(_out(small, x), forward(core, x.numpy()), atol=1e-4)
    measured = np.abs(_out(small, x) - _out(model, x)).max()
    assert measured == pytest.approx(report.measured_error, rel=1e-3, abs=1e-4)
    assert report.measured_error <= report.certificate
    assert [r.width_after for r in report.layers] == [3, 8, 60, 42, 10]
    assert report.params_after < report.params_before


def test_state_dict_and_torch_save_round_trip(tmp_path):
    model = vgg_like()
    x = torch.randn(3, 3, 12, 12)
    small, _report = compress(model, keep=0.5, seed=0)
    net, _ = compress_network(from_torch(model, input_shape=(3, 12, 12), dtype=np.float64), keep=0.5, seed=0)
    fresh = to_torch(net)  # the architecture, rebuilt
    buf = io.BytesIO()
    torch.save(small.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    np.testing.assert_allclose(_out(fresh, x), _out(small, x), atol=0)
    path = tmp_path / "small.pt"
    torch.save(small, path)
    again = torch.load(path, weights_only=False)
    np.testing.assert_allclose(_out(again.eval(), x), _out(small, x), atol=0)


def test_asymmetric_padding_and_channels_last_flatten_import():
    rng = np.random.default_rng(3)
    net = Network(
        [
            Conv2d(rng.normal(size=(3, 2, 2, 2)), rng.normal(size=3), stride=2, padding=(0, 1, 1, 0)),
            ReLU(),
            MaxPool2d(2, 1, (0, 1, 0, 1)),
            Flatten("channels_last"),
            Dense(rng.normal(size=(2, 3 * 4 * 4))),
        ],
        input_shape=(2, 7, 7),
    )
    x = rng.normal(size=(3, 2, 7, 7))
    model = to_torch(net, dtype=torch.float64)
    np.testing.assert_allclose(_out(model, torch.as_tensor(x)), forward(net, x), atol=1e-10)


def test_unsupported_layers_and_branches_are_named():
    with pytest.raises(ValueError, match=r"'1' \(Tanh\)"):
        from_torch(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    with pytest.raises(ValueError, match=r"'0'.*groups=2"):
        from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)))
    with pytest.raises(ValueError, match=r"'mul'.*reads 2 tensors"):
        from_torch(Gated())
    with pytest.raises(ValueError, match=r"'0'.*padding_mode"):
        from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")))
    with pytest.raises(TypeError):
        from_torch("not a model")


def test_adaptive_pooling_needs_and_uses_the_input_size():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(), nn.Linear(16, 3)
    ).eval()
    with pytest.raises(ValueError, match=r"'2'.*input_shape"):
        from_torch(model)
    x = torch.randn(3, 2, 6, 6)
    net = from_torch(model, input_shape=(2, 6, 6))
    np.testing.assert_allclose(forward(net, x.numpy()), _out(model, x), atol=1e-5)
    _small, report = compress(model, keep=0.5, inputs=x)
    assert report.measured_error <= report.certificate


def test_softmax_output():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=1)).eval()
    x = torch.randn(10, 5)
    small, report = compress(model, keep=0.5, inputs=x)
    assert isinstance(small[-1], nn.Softmax)
    np.testing.assert_allclose(_out(small, x).sum(axis=1), 1.0, atol=1e-6)
    assert report.measured_error <= report.certificate


def test_functional_and_method_forms_are_read():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3)
            self.f = nn.Linear(2 * 2 * 2, 3)

        def forward(self, x):
            x = torch.relu(self.c(x))
            x = F.avg_pool2d(x, 2)
            x = torch.flatten(x, 1)
            return F.dropout(self.f(x), 0.1, training=False)

    class Net2(Net):
        def forward(self, x):
            x = F.max_pool2d(self.c(x).relu(), 2)
            return F.softmax(self.f(x.reshape(x.shape[0], -1)), dim=1)

    net = from_torch(Net())
    assert [type(l).__name__ for l in net] == ["Conv2d", "ReLU", "AvgPool2d", "Flatten", "Dense", "Dropout"]
    model = Net2().eval()
    net = from_torch(model)
    assert [type(l).__name__ for l in net] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Dense", "Softmax"]
    x = torch.randn(2, 1, 6, 6)
    np.testing.assert_allclose(forward(net, x.numpy()), _out(model, x), atol=1e-5)


def test_docstring_examples():
    import tropref.adapters.torch as mod

    run_doctests(mod)


def test_a_model_in_training_mode_is_read_as_eval_with_a_warning():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match=r"training mode.*model\.eval\(\)"):
        net = from_torch(model)
    model.eval()
    x = torch.randn(5, 3)
    with torch.no_grad():
        np.testing.assert_allclose(net(x.numpy()), model(x).numpy(), rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_torch(model)  # in eval mode: no warning
        from_torch(nn.Sequential(nn.Linear(3, 2)).train())  # nothing that depends on the mode


def test_progress_lines_name_the_model():
    lines = []
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    compress(model, 0.5, progress=lines.append)
    assert lines
    assert all(line.startswith("[tropref Sequential] ") for line in lines)


def test_round_to_reaches_the_written_back_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 70), nn.ReLU(), nn.Linear(70, 3)).eval()
    small, report = compress(model, 0.3, round_to=8, progress=False)
    assert small[0].out_features == 24  # round(0.3 * 70) = 21 -> 24
    assert report.layers[0].width_after == 24


# compress reads the weights in place (issue 19): the same compressed model as from copied
# weights, the model untouched, no memory shared with it


def test_torch_compress_reads_in_place_and_shares_nothing():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    ).eval()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(5, 3, 6, 6)
    for in_place in (False, True):
        small, _ = compress(model, keep=0.5, seed=0, input_shape=(3, 6, 6), progress=False, in_place=in_place)
        theirs = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
        assert not theirs & {t.data_ptr() for t in [*small.parameters(), *small.buffers()]}
        assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    # the same network as from copied weights (from_torch), compressed and written back
    copied, _ = compress_network(from_torch(model, input_shape=(3, 6, 6)), 0.5, seed=0, progress=False)
    small, _ = compress(model, keep=0.5, seed=0, input_shape=(3, 6, 6), progress=False)
    with torch.no_grad():
        assert torch.equal(small(x), to_torch(copied)(x))
