"""Whole PyTorch models through the adapter, against Torch-Pruning's L1 channel pruning (issue 10).

Runs, in one invocation and on the same models with the same random weights:

- tropref ``adapters.torch.compress(model, keep, method=...)`` for ``l1`` and ``tropnnc``
  (the adapter path a user takes: export, BatchNorm folding, every layer, the next-layer
  rewrites, the certificate, the import back), with its defaults (the model's dtype);
- Torch-Pruning (``torch-pruning``, optional: ``pip install tropref[bench]``):
  ``MetaPruner(model, example_inputs, MagnitudeImportance(p=1), pruning_ratio=1 - keep,
  ignored_layers=[classifier])`` and one ``step()``, dependency graph included.

Each run is a fresh subprocess (so that one run's memory cannot hide in another's), timed
inside around the compression call alone; its peak memory is that process's
``ru_maxrss`` (which includes the model itself, built before the call, and the imports;
``model RSS`` is the process's RSS right before the call). Times are the best of
``--repeat`` runs with their range. The models are torchvision's architectures written out
(torchvision's registry wheels are CUDA builds that do not import on a CPU-only torch),
with seeded random weights (BatchNorm statistics randomised too, so folding is not trivial).
A tool that refuses a model (tropref before residual networks) prints ``refused: <reason>``.

    python benchmarks/bench_models.py                       # alexnet vgg11_bn vgg16 resnet18 resnet50, 1 run
    python benchmarks/bench_models.py --models vgg16 --repeat 3
    python benchmarks/bench_models.py --models tiny --tools tropref-l1 torch-pruning
    python benchmarks/bench_models.py --models resnet18 --latency --round-to 8   # latency at batch 1 and 32
    python benchmarks/bench_models.py --models resnet50 --tools tropref-tropnnc --option refit=none

Never asserts; prints a table, and ``--json PATH`` writes every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import OrderedDict

TOOLS = ("tropref-l1", "tropref-tropnnc", "torch-pruning")
MODELS = ("alexnet", "vgg11_bn", "vgg16", "resnet18", "resnet50")
LATENCY_BATCHES = (1, 32)


# --------------------------------------------------------------------------- architectures


def build(name: str):
    """A torchvision architecture (as of torchvision 0.20), written out; ``(model, input_shape)``."""
    import torch
    from torch import nn

    if name == "tiny":
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((2, 2)),
            nn.Flatten(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(32, 10),
        )
        return model, (3, 16, 16)
    if name == "alexnet":
        model = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2),
            ),
            nn.AdaptiveAvgPool2d((6, 6)),
            nn.Flatten(),
            nn.Sequential(
                nn.Dropout(0.5),
                nn.Linear(256 * 36, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Linear(4096, 1000),
            ),
        )
        return model, (3, 224, 224)
    if name.startswith("vgg"):
        cfg = {
            "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
            "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
        }[name.replace("_bn", "")]
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, v, 3, padding=1))
            if name.endswith("_bn"):
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
        model = nn.Sequential(
            nn.Sequential(*layers),
            nn.AdaptiveAvgPool2d((7, 7)),
            nn.Flatten(),
            nn.Sequential(
                nn.Linear(512 * 49, 4096),
                nn.ReLU(True),
                nn.Dropout(),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(),
                nn.Linear(4096, 1000),
            ),
        )
        return model, (3, 224, 224)
    if name in ("resnet18", "resnet50"):
        return _resnet(nn, torch, name), (3, 224, 224)
    if name == "squeezenet1_1":
        return _squeezenet(nn, torch), (3, 224, 224)
    if name == "densenet121":
        return _densenet(nn, torch), (3, 224, 224)
    if name == "googlenet":
        return _googlenet(nn, torch), (3, 224, 224)
    if name == "inception_v3":
        return _inception_v3(nn, torch), (3, 299, 299)
    raise SystemExit(f"unknown model {name!r}; choose from {(*MODELS, 'tiny')}")


def _resnet(nn, torch, name):
    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self, block, counts):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make(block, 64, counts[0])
            self.layer2 = self._make(block, 128, counts[1], 2)
            self.layer3 = self._make(block, 256, counts[2], 2)
            self.layer4 = self._make(block, 512, counts[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, 1000)

        def _make(self, block, planes, count, stride=1):
            down = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                down = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            layers = [block(self.inplanes, planes, stride, down)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, count)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    if name == "resnet18":
        return ResNet(BasicBlock, [2, 2, 2, 2])
    return ResNet(Bottleneck, [3, 4, 6, 3])


def _squeezenet(nn, torch):
    """torchvision's ``squeezenet1_1``: Fire modules, ``ceil_mode`` max pooling, a conv classifier."""

    class Fire(nn.Module):
        def __init__(self, cin, squeeze, e1, e3):
            super().__init__()
            self.squeeze, self.squeeze_activation = nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True)
            self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True)
            self.expand3x3, self.expand3x3_activation = nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.squeeze_activation(self.squeeze(x))
            return torch.cat(
                [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
            )

    class SqueezeNet(nn.Module):
        def __init__(self):
            super().__init__()
            pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(inplace=True), pool(),
                Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
                Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
            )  # fmt: skip
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Conv2d(512, 1000, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
            )

        def forward(self, x):
            return torch.flatten(self.classifier(self.features(x)), 1)

    return SqueezeNet()


def _densenet(nn, torch):
    """torchvision's ``densenet121``: dense blocks concatenating every layer's features
    (the first layer's ``torch.cat`` is of a one-tensor list), transitions, BatchNorm first."""

    class DenseLayer(nn.Module):
        def __init__(self, cin, growth=32, bn_size=4):
            super().__init__()
            self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
            self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

        def forward(self, features):
            x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
            return self.conv2(self.relu2(self.norm2(x)))

    class DenseBlock(nn.ModuleDict):
        def __init__(self, count, cin, growth=32):
            super().__init__({f"denselayer{i + 1}": DenseLayer(cin + i * growth) for i in range(count)})

        def forward(self, x):
            features = [x]
            for layer in self.values():
                features.append(layer(features))
            return torch.cat(features, 1)

    class Transition(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__()
            self.norm, self.relu = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
            self.conv, self.pool = nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2)

    class DenseNet(nn.Module):
        def __init__(self, blocks=(6, 12, 24, 16)):
            super().__init__()
            mods = {"conv0": nn.Conv2d(3, 64, 7, 2, 3, bias=False), "norm0": nn.BatchNorm2d(64)}
            mods |= {"relu0": nn.ReLU(inplace=True), "pool0": nn.MaxPool2d(3, 2, 1)}
            c = 64
            for i, count in enumerate(blocks):
                mods[f"denseblock{i + 1}"] = DenseBlock(count, c)
                c += count * 32
                if i != len(blocks) - 1:
                    mods[f"transition{i + 1}"] = Transition(c, c // 2)
                    c //= 2
            mods["norm5"] = nn.BatchNorm2d(c)
            self.features = nn.Sequential(OrderedDict(mods))
            self.classifier = nn.Linear(c, 1000)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(nn.functional.relu(self.features(x)), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    return DenseNet()


def _googlenet(nn, torch):
    """torchvision's ``googlenet`` without its auxiliary classifiers (they run only in
    training): Inception blocks, ``ceil_mode`` max pooling, BatchNorm with eps 1e-3."""

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, kernel_size, **kw):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(cin, cout, kernel_size, bias=False, **kw), nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return nn.functional.relu(self.bn(self.conv(x)), inplace=True)

    class Inception(nn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, proj):
            super().__init__()
            self.branch1 = BasicConv2d(cin, c1, 1)
            self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, 1), BasicConv2d(c3r, c3, 3, padding=1))
            self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, 1), BasicConv2d(c5r, c5, 3, padding=1))
            self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, proj, 1))

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    class GoogLeNet(nn.Module):
        def __init__(self):
            super().__init__()
            pool = lambda k=3: nn.MaxPool2d(k, 2, ceil_mode=True)
            self.conv1, self.maxpool1 = BasicConv2d(3, 64, 7, stride=2, padding=3), pool()
            self.conv2, self.conv3 = BasicConv2d(64, 64, 1), BasicConv2d(64, 192, 3, padding=1)
            self.maxpool2 = pool()
            self.inception3a, self.inception3b = (
                Inception(192, 64, 96, 128, 16, 32, 32),
                Inception(256, 128, 128, 192, 32, 96, 64),
            )
            self.maxpool3 = pool()
            self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
            self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
            self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
            self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
            self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
            self.maxpool4 = pool(2)
            self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
            self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
            self.avgpool, self.dropout, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Dropout(0.2), nn.Linear(1024, 1000)

        def forward(self, x):
            x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
            x = self.maxpool3(self.inception3b(self.inception3a(x)))
            for name in ("4a", "4b", "4c", "4d", "4e"):
                x = getattr(self, f"inception{name}")(x)
            x = self.inception5b(self.inception5a(self.maxpool4(x)))
            return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    return GoogLeNet()


def _inception_v3(nn, torch):
    """torchvision's ``inception_v3`` without its auxiliary classifier (it runs only in
    training), ``transform_input=False``, input 3×299×299: factorised 1×n/n×1 convolutions,
    the split-and-concat of InceptionE, functional ``avg_pool2d`` (counting its padding) and
    ``max_pool2d``, BatchNorm with eps 1e-3; torchvision's module names."""
    F = nn.functional
    row, col = lambda n: ((1, n), (0, n // 2)), lambda n: ((n, 1), (n // 2, 0))  # (kernel, padding)

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, kernel_size, padding=0, stride=1):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)), inplace=True)

    class Block(nn.Module):
        def add(self, prefix, *specs):  # prefix_1, prefix_2, ...: (cin, cout, kernel, padding[, stride])
            for i, spec in enumerate(specs, 1):
                self.add_module(f"{prefix}_{i}", BasicConv2d(*spec))

        def run(self, prefix, x, n):
            for i in range(1, n + 1):
                x = getattr(self, f"{prefix}_{i}")(x)
            return x

        def pool(self, x):
            return self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))

    class Mixed(Block):  # InceptionA and InceptionC: a 1×1 branch, two chains of convolutions, a pooled 1×1
        def __init__(self, cin, c1, pool_features, **chains):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, c1, 1)
            self.lengths = {prefix: len(specs) for prefix, specs in chains.items()}
            for prefix, specs in chains.items():
                self.add(prefix, *specs)
            self.branch_pool = BasicConv2d(cin, pool_features, 1)

        def forward(self, x):
            chains = (self.run(prefix, x, n) for prefix, n in self.lengths.items())
            return torch.cat([self.branch1x1(x), *chains, self.pool(x)], 1)

    def inception_a(cin, pool_features):
        chains = {"branch5x5": [(cin, 48, 1, 0), (48, 64, 5, 2)]}
        chains["branch3x3dbl"] = [(cin, 64, 1, 0), (64, 96, 3, 1), (96, 96, 3, 1)]
        return Mixed(cin, 64, pool_features, **chains)

    def inception_c(cin, c7):
        chains = {"branch7x7": [(cin, c7, 1, 0), (c7, c7, *row(7)), (c7, 192, *col(7))]}
        dbl = [(c7, c7, *col(7)), (c7, c7, *row(7)), (c7, c7, *col(7)), (c7, 192, *row(7))]
        chains["branch7x7dbl"] = [(cin, c7, 1, 0), *dbl]
        return Mixed(cin, 192, 192, **chains)

    class InceptionB(Block):  # grid 35 -> 17
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
            self.add("branch3x3dbl", (cin, 64, 1, 0), (64, 96, 3, 1), (96, 96, 3, 0, 2))

        def forward(self, x):
            parts = [self.branch3x3(x), self.run("branch3x3dbl", x, 3), F.max_pool2d(x, kernel_size=3, stride=2)]
            return torch.cat(parts, 1)

    class InceptionD(Block):  # grid 17 -> 8
        def __init__(self, cin):
            super().__init__()
            self.add("branch3x3", (cin, 192, 1, 0), (192, 320, 3, 0, 2))
            self.add("branch7x7x3", (cin, 192, 1, 0), (192, 192, *row(7)), (192, 192, *col(7)), (192, 192, 3, 0, 2))

        def forward(self, x):
            parts = [
                self.run("branch3x3", x, 2),
                self.run("branch7x7x3", x, 4),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ]
            return torch.cat(parts, 1)

    class InceptionE(Block):  # each 3×3 path ends split in two, a 1×3 and a 3×1 read the same input
        def __init__(self, cin):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 320, 1)
            self.branch3x3_1 = BasicConv2d(cin, 384, 1)
            self.branch3x3_2a, self.branch3x3_2b = BasicConv2d(384, 384, *row(3)), BasicConv2d(384, 384, *col(3))
            self.add("branch3x3dbl", (cin, 448, 1, 0), (448, 384, 3, 1))
            self.branch3x3dbl_3a, self.branch3x3dbl_3b = BasicConv2d(384, 384, *row(3)), BasicConv2d(384, 384, *col(3))
            self.branch_pool = BasicConv2d(cin, 192, 1)

        def forward(self, x):
            a, b = self.branch3x3_1(x), self.run("branch3x3dbl", x, 2)
            a = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
            b = torch.cat([self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b)], 1)
            return torch.cat([self.branch1x1(x), a, b, self.pool(x)], 1)

    class Inception3(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
            self.maxpool1 = nn.MaxPool2d(3, 2)
            self.Conv2d_3b_1x1, self.Conv2d_4a_3x3 = BasicConv2d(64, 80, 1), BasicConv2d(80, 192, 3)
            self.maxpool2 = nn.MaxPool2d(3, 2)
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (
                inception_a(192, 32),
                inception_a(256, 64),
                inception_a(288, 64),
            )
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b, self.Mixed_6c = inception_c(768, 128), inception_c(768, 160)
            self.Mixed_6d, self.Mixed_6e = inception_c(768, 160), inception_c(768, 192)
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = InceptionD(768), InceptionE(1280), InceptionE(2048)
            self.avgpool, self.dropout, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Dropout(0.5), nn.Linear(2048, 1000)

        def forward(self, x):
            for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1"):
                x = getattr(self, name)(x)
            x = self.maxpool2(self.Conv2d_4a_3x3(x))
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
                x = getattr(self, f"Mixed_{name}")(x)
            return self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))

    return Inception3()


def randomise(model, seed: int) -> None:
    """Seeded random weights (PyTorch's default init) and BatchNorm statistics, eval mode."""
    import torch

    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    model.eval()


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- one run (child)


def _rss_now_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def latency_ms(model, shape: tuple[int, ...], batch: int, repeat: int = 5) -> float:
    """Median wall time of one forward pass of ``model`` on a ``batch`` of random inputs (ms),
    after one warm-up pass."""
    import torch

    x = torch.randn(batch, *shape)
    with torch.no_grad():
        model.eval()(x)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[len(times) // 2]


def child(
    model_name: str,
    tool: str,
    keep: float,
    seed: int,
    round_to: int | None = None,
    latency: bool = False,
    options: dict | None = None,
) -> dict:
    import torch

    torch.set_grad_enabled(False)
    model, shape = build(model_name)
    randomise(model, seed)
    before = count(model)
    rss_model = _rss_now_mb()
    out = {"model": model_name, "tool": tool, "params_before": before, "model_rss_mb": rss_model}
    if latency:
        out["latency_before_ms"] = {b: latency_ms(model, shape, b) for b in LATENCY_BATCHES}
    try:
        if tool.startswith("tropref-"):
            from tropref.adapters.torch import compress

            t = time.perf_counter()
            small, report = compress(
                model,
                keep=keep,
                method=tool.split("-", 1)[1],
                seed=seed,
                input_shape=shape,
                progress=False,
                round_to=round_to,
                **(options or {}),
            )
            out["time_s"] = time.perf_counter() - t
            out["steps"] = (
                {k: round(v, 3) for k, v in getattr(report, "steps", {}).items()} if hasattr(report, "steps") else None
            )
        else:
            import torch_pruning as tp

            with torch.enable_grad():  # Torch-Pruning traces the graph through autograd
                t = time.perf_counter()
                last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
                pruner = tp.pruner.MetaPruner(
                    model,
                    torch.randn(1, *shape),
                    importance=tp.importance.MagnitudeImportance(p=1),
                    pruning_ratio=1.0 - keep,
                    ignored_layers=[last],
                    **({} if round_to is None else {"round_to": round_to}),
                )
                pruner.step()
                out["time_s"] = time.perf_counter() - t
            small = model
        out["params_after"] = count(small)
        if latency:
            out["latency_after_ms"] = {b: latency_ms(small, shape, b) for b in LATENCY_BATCHES}
    except (ValueError, NotImplementedError, TypeError) as exc:
        out["refused"] = f"{type(exc).__name__}: {exc}"
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --------------------------------------------------------------------------- driver


def run_child(
    model: str,
    tool: str,
    keep: float,
    seed: int,
    timeout: float,
    round_to: int | None = None,
    latency: bool = False,
    options: tuple[str, ...] = (),
) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", model, tool, str(keep), str(seed)]
    cmd += ["--round-to", str(round_to)] if round_to else []
    cmd += ["--latency"] if latency else []
    cmd += [arg for item in options for arg in ("--option", item)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "tool": tool, "error": f"timed out after {timeout:.0f} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        return {"model": model, "tool": tool, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _latency(rec: dict, batch: int) -> str:
    before, after = rec["latency_before_ms"][str(batch)], rec["latency_after_ms"][str(batch)]
    return f"  latency b{batch} {before:.1f} -> {after:.1f} ms"


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def available(tool: str) -> str | None:
    if tool == "torch-pruning":
        try:
            import torch_pruning  # noqa: F401
        except ImportError:
            return "torch-pruning is not installed (pip install 'tropref[bench]')"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--tools", nargs="*", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=1, help="runs per model and tool; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--json", help="write every run to this file")
    ap.add_argument("--round-to", type=int, default=None, help="widths in multiples of N (both tools' round_to)")
    ap.add_argument(
        "--latency", action="store_true", help=f"also time a forward pass before and after, batch {LATENCY_BATCHES}"
    )
    ap.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a tropref option (JSON value), repeatable"
    )
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        model, tool, keep, seed = args.child
        options = {k: _value(v) for k, v in (item.split("=", 1) for item in args.option)}
        print(json.dumps(child(model, tool, float(keep), int(seed), args.round_to, args.latency, options)), flush=True)
        return 0

    import torch

    print(
        f"torch {torch.__version__}; cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
        f"keep {args.keep}; best of {args.repeat}",
        flush=True,
    )
    runs, best = [], {}
    for model in args.models:
        for tool in args.tools:
            why = available(tool)
            if why:
                best[model, tool] = {"refused": why}
                print(f"{model:10s} {tool:16s} skipped: {why}", flush=True)
                continue
            got = [
                run_child(model, tool, args.keep, args.seed, args.timeout, args.round_to, args.latency, args.option)
                for _ in range(args.repeat)
            ]
            runs += got
            ok = [r for r in got if "time_s" in r]
            if ok:
                times = sorted(r["time_s"] for r in ok)
                rec = dict(min(ok, key=lambda r: r["time_s"]))
                rec["range"] = (times[0], times[-1])
                rec["peak_rss_mb"] = min(r["peak_rss_mb"] for r in ok)
                best[model, tool] = rec
                print(
                    f"{model:10s} {tool:16s} {times[0]:8.2f} s ({times[0]:.1f}-{times[-1]:.1f})  peak RSS "
                    f"{rec['peak_rss_mb']:7.0f} MB (model {rec['model_rss_mb']:.0f} MB)  params "
                    f"{rec['params_before'] / 1e6:.1f} M -> {rec['params_after'] / 1e6:.1f} M"
                    + (f"  steps {rec['steps']}" if rec.get("steps") else "")
                    + "".join(_latency(rec, b) for b in LATENCY_BATCHES if "latency_after_ms" in rec),
                    flush=True,
                )
            else:
                rec = got[-1]
                best[model, tool] = rec
                print(
                    f"{model:10s} {tool:16s} "
                    f"{'refused: ' + rec['refused'] if 'refused' in rec else 'error: ' + rec.get('error', '?')}",
                    flush=True,
                )

    print(
        "\nmodel      | "
        + " | ".join(f"{t} s (peak MB)" for t in args.tools)
        + " | ratios to torch-pruning (time; memory)"
    )
    for model in args.models:
        cells, ratios = [], []
        ref = best.get((model, "torch-pruning"), {})
        for tool in args.tools:
            r = best.get((model, tool), {})
            if "time_s" in r:
                cells.append(f"{r['time_s']:.2f} ({r['peak_rss_mb']:.0f})")
                if tool != "torch-pruning" and "time_s" in ref:
                    ratios.append(
                        f"{tool.split('-', 1)[1]} {r['time_s'] / ref['time_s']:.1f}x; "
                        f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x"
                    )
            else:
                cells.append("refused" if "refused" in r else "error")
        print(f"{model:10s} | " + " | ".join(cells) + " | " + ", ".join(ratios))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
