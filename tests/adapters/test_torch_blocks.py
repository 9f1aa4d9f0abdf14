"""The PyTorch adapter on the blocks of torchvision's SqueezeNet, GoogLeNet, Inception-v3 and
DenseNet, written out small: Fire modules and ``MaxPool2d(ceil_mode=True)``, Inception branches
concatenated (one of them a stride-1 ``ceil_mode`` max pooling), Inception-v3's 1×7/7×1 and
1×3/3×1 convolutions, functional ``avg_pool2d`` (its padding counted) and ``max_pool2d``
branches and the split-and-concat inside a concatenation, dense blocks that concatenate every
layer to the running features (the first concatenation of one tensor). Each reads exactly,
compresses exactly at keep 1, and at keep 0.5 gives the model of the compressed network,
resized in place or rebuilt, within its certificate."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a guard only: CI installs torch and runs these tests
nn = torch.nn
F = torch.nn.functional

from tests.torch_resnets import randomise_batchnorm  # noqa: E402
from tropref.adapters.torch import compress, from_torch, to_torch  # noqa: E402
from tropref.network import AvgPool2d, Concat, Conv2d, Identity, MaxPool2d, compress_network, forward  # noqa: E402


def _out(model, x):
    with torch.no_grad():
        return model(x).double().numpy()


# --------------------------------------------------------------------------- the blocks


class Fire(nn.Module):
    """torchvision's SqueezeNet Fire module: a 1x1 squeeze, then 1x1 and 3x3 expands
    concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNetLike(nn.Module):
    """squeezenet1_1's layout at toy widths; on 16x16 inputs both ceil_mode poolings add a
    window (16 -> 8 and 8 -> 4, where floor mode gives 7 and 3)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(8, 4, 6, 6),
            Fire(12, 4, 6, 6),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(12, 6, 8, 8),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(16, classes, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class BasicConv2d(nn.Module):
    """GoogLeNet's convolution: no bias, BatchNorm (eps 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """GoogLeNet's Inception block: four branches concatenated, the last a stride-1
    ``ceil_mode`` max pooling then a 1x1 convolution."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cin, c3r, kernel_size=1), BasicConv2d(c3r, c3, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(cin, c5r, kernel_size=1), BasicConv2d(c5r, c5, kernel_size=3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), BasicConv2d(cin, pool, kernel_size=1)
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetLike(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 8, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(8, 4, 4, 6, 2, 4, 4)
        self.inception3b = Inception(18, 6, 4, 6, 2, 4, 4)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(20, classes)

    def forward(self, x):
        x = self.inception3b(self.inception3a(self.maxpool1(self.conv1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def _row(cin: int, cout: int, n: int) -> BasicConv2d:  # a 1×n convolution, padded to keep the size
    return BasicConv2d(cin, cout, kernel_size=(1, n), padding=(0, n // 2))


def _col(cin: int, cout: int, n: int) -> BasicConv2d:  # an n×1 convolution
    return BasicConv2d(cin, cout, kernel_size=(n, 1), padding=(n // 2, 0))


def _avg_pooled(x):  # Inception-v3's pooling branch: count_include_pad is True
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionC(nn.Module):
    """Inception-v3's InceptionC: 1×7 and 7×1 convolutions in two branches, a pooling branch."""

    def __init__(self, cin: int, c7: int, out: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, out, kernel_size=1)
        self.branch7x7 = nn.Sequential(BasicConv2d(cin, c7, kernel_size=1), _row(c7, c7, 7), _col(c7, out, 7))
        self.branch7x7dbl = nn.Sequential(BasicConv2d(cin, c7, kernel_size=1), _col(c7, c7, 7), _row(c7, out, 7))
        self.branch_pool = BasicConv2d(cin, out, kernel_size=1)

    def forward(self, x):
        parts = [self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x), self.branch_pool(_avg_pooled(x))]
        return torch.cat(parts, 1)


class InceptionE(nn.Module):
    """Inception-v3's InceptionE: two paths each end in a 1×3 and a 3×1 convolution of the
    same map, concatenated, inside the block's concatenation."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, width, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, width, kernel_size=1)
        self.branch3x3_2a, self.branch3x3_2b = _row(width, width, 3), _col(width, width, 3)
        self.branch3x3dbl_1 = BasicConv2d(cin, width, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(width, width, kernel_size=3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = _row(width, width, 3), _col(width, width, 3)
        self.branch_pool = BasicConv2d(cin, width, kernel_size=1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        a = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b = torch.cat([self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b)], 1)
        return torch.cat([self.branch1x1(x), a, b, self.branch_pool(_avg_pooled(x))], 1)


class InceptionV3Like(nn.Module):
    """inception_v3's layout at toy sizes: stem, InceptionC, a grid reduction (a stride-2
    convolution beside ``F.max_pool2d``, as InceptionB/D), InceptionE; 9×9 -> 4×4."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = BasicConv2d(3, 8, kernel_size=3, padding=1)
        self.mixed_c = InceptionC(8, 4, 4)
        self.reduce = BasicConv2d(16, 6, kernel_size=3, stride=2)
        self.mixed_e = InceptionE(22, 3)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(18, classes)

    def forward(self, x):
        x = self.mixed_c(self.stem(x))
        x = self.mixed_e(torch.cat([self.reduce(x), F.max_pool2d(x, kernel_size=3, stride=2)], 1))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class DenseLayer(nn.Module):
    """torchvision's ``_DenseLayer``: BN-ReLU-1x1 conv, BN-ReLU-3x3 conv of the
    concatenation of every feature map before it (of one map for the first layer)."""

    def __init__(self, cin: int, growth: int, size: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        concated = torch.cat(features, 1)  # torch.cat([x], 1) for the first layer, as torchvision's
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(concated))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, growth: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth))

    def forward(self, init_features):
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNetLike(nn.Module):
    """densenet121's layout at toy sizes: stem, a dense block, a transition, a dense block."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
            DenseBlock(3, 8, 4),
            nn.Sequential(nn.BatchNorm2d(20), nn.ReLU(inplace=True), nn.Conv2d(20, 10, 1, bias=False), nn.AvgPool2d(2)),
            DenseBlock(2, 10, 4),
            nn.BatchNorm2d(18),
        )
        self.classifier = nn.Linear(18, classes)

    def forward(self, x):
        out = F.adaptive_avg_pool2d(F.relu(self.features(x), inplace=True), (1, 1))
        return self.classifier(torch.flatten(out, 1))


MODELS = {
    "squeezenet": (SqueezeNetLike, 16),
    "googlenet": (GoogLeNetLike, 12),
    "inception_v3": (InceptionV3Like, 9),
    "densenet": (DenseNetLike, 12),
}


def _model(kind: str):
    torch.manual_seed(0)
    make, size = MODELS[kind]
    model = randomise_batchnorm(make())
    return model, (3, size, size)


# --------------------------------------------------------------------------- ceil_mode pooling


@pytest.mark.parametrize("size", [7, 8, 9, 10])
@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1), (2, 3, 1)])
def test_ceil_mode_max_pooling_reads_exactly(size, kernel, stride, padding):
    pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=True)

    class Functional(nn.Module):  # F.max_pool2d(..., ceil_mode=True) after an exact identity convolution
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)
            with torch.no_grad():
                self.conv.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))

        def forward(self, x):
            return F.max_pool2d(self.conv(x), kernel, stride, padding, ceil_mode=True)

    x = torch.randn(3, 2, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    for model in (nn.Sequential(pool), Functional().double()):
        net = from_torch(model, input_shape=(2, size, size), dtype=np.float64)
        read = next(l for l in net.layers if isinstance(l, MaxPool2d))
        assert read.padding[0] == read.padding[2] == padding  # the extra padding is after the input only
        ref = _out(model, x)
        got = forward(net, x.numpy())
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)  # max pooling selects, the padding never wins
        np.testing.assert_array_equal(_out(to_torch(net, dtype=torch.float64), x), ref)  # and writes back


def test_ceil_mode_needs_the_input_size_and_avg_pool_ceil_mode_is_refused():
    with pytest.raises(ValueError, match=r"'1' \(MaxPool2d with ceil_mode=True\) needs .*input_shape=\(C, H, W\)"):
        from_torch(nn.Sequential(nn.Conv2d(2, 2, 1), nn.MaxPool2d(3, 2, ceil_mode=True)))
    with pytest.raises(ValueError, match=r"'0': AvgPool2d with ceil_mode.*use ceil_mode=False"):
        from_torch(nn.Sequential(nn.AvgPool2d(3, 2, ceil_mode=True)), input_shape=(2, 8, 8))


def test_one_tensor_concatenation_is_the_identity():
    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            return F.relu(torch.cat([self.conv(x)], 1))

    net = from_torch(One(), input_shape=(2, 4, 4))
    assert [type(l).__name__ for l in net.layers] == ["Conv2d", "Identity", "ReLU"]
    assert net.is_chain

    class Two(One):
        def forward(self, x):
            return torch.cat([self.conv(x), self.conv(x)], 2)

    with pytest.raises(ValueError, match=r"torch.cat, dim=2\): tropref reads concatenations along the channels"):
        from_torch(Two(), input_shape=(2, 4, 4))


# --------------------------------------------------------------------------- the models


@pytest.mark.parametrize("kind", list(MODELS))
def test_block_models_read_and_compress_exactly_at_keep_one(kind):
    model, shape = _model(kind)
    x = torch.randn(4, *shape)
    net = from_torch(model, input_shape=shape, dtype=np.float64)
    ref = _out(model, x)
    np.testing.assert_allclose(forward(net, x.double().numpy()), ref, atol=1e-5 * np.abs(ref).max())
    if kind == "densenet":  # the first layer of each block concatenates one tensor: an identity
        assert sum(isinstance(l, Identity) and l.name.startswith("cat") for l in net.layers) == 2
        assert sum(isinstance(l, Concat) for l in net.layers) == 5
    elif kind == "inception_v3":  # 1×n/n×1 kernels padded along their long side only; the pools read
        kernels = {(l.W.shape[2:], l.padding) for l in net.layers if isinstance(l, Conv2d)}
        assert {
            ((1, 7), (0, 0, 3, 3)),
            ((7, 1), (3, 3, 0, 0)),
            ((1, 3), (0, 0, 1, 1)),
            ((3, 1), (1, 1, 0, 0)),
        } <= kernels
        assert sum(isinstance(l, AvgPool2d) and l.count_include_pad and l.padding == (1,) * 4 for l in net.layers) == 2
        assert sum(type(l) is MaxPool2d for l in net.layers) == 1
        assert sum(isinstance(l, Concat) for l in net.layers) == 5  # InceptionE's two inner ones among them
    else:  # every ceil_mode pooling is read as a max pooling; on these sizes the stride-2 ones add padding
        pools = [l for l in net.layers if type(l) is MaxPool2d]
        assert len(pools) == 2 + (kind == "googlenet")
        assert any(p.padding[1] > p.padding[0] for p in pools)
    small, report = compress(model, keep=1.0, inputs=x)
    np.testing.assert_allclose(_out(small, x), ref, atol=1e-5 * np.abs(ref).max())
    assert report.measured_error < 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("in_place", [False, True])
def test_block_models_at_keep_half_equal_the_compressed_network(kind, in_place):
    model, shape = _model(kind)
    x = torch.randn(4, *shape)
    small, report = compress(model, keep=0.5, seed=0, inputs=x, dtype=np.float64, in_place=in_place)
    assert report.params_after < report.params_before
    net = from_torch(model, input_shape=shape, dtype=np.float64)
    core, _ = compress_network(net, keep=0.5, seed=0, inputs=x.double().numpy())
    got = _out(small, x)
    np.testing.assert_allclose(got, forward(core, x.double().numpy()), rtol=1e-5, atol=1e-5)
    measured = np.abs(got - _out(model, x)).max()
    assert measured == pytest.approx(report.measured_error, rel=1e-3, abs=1e-4)
    assert measured <= report.certificate
    if in_place:
        assert type(small) is type(model)  # the user's own module, resized
