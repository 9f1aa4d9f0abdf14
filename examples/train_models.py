"""Train the four Fashion-MNIST models shipped in ``tropref/assets/``, and ``vgg_post``.

Usage::

    python examples/train_models.py                 # the four shipped, default epochs
    python examples/train_models.py --models lenet5 --epochs 3
    python examples/train_models.py --models vgg_post --out /tmp/vgg_post   # not shipped
    python examples/train_models.py --data /path/to/fashion-mnist --out /tmp/models

Needs PyTorch (``pip install torch``) and the Fashion-MNIST IDX files (Debian package
``dataset-fashion-mnist``). Fixed seeds, one CPU thread, Adam, no data augmentation, inputs
scaled to ``[0, 1]`` with no other normalisation. Writes, per model, ``<name>.npz`` with the
``state_dict`` tensors as float32 arrays in PyTorch layouts (``Linear.weight`` is
``(out, in)``, ``Conv2d.weight`` is OIHW; BatchNorm keeps ``weight``, ``bias``,
``running_mean``, ``running_var``) plus ``__arch__``, a JSON string describing the layers
in order; and one ``models.json`` with the architectures, the training settings and the test
accuracy each model reached (on the full 10,000-image test split and on the shipped subset
of its first 2,000 images). Also writes that subset, ``fashion_mnist_test_2000.npz``.

The architecture description is a list of layers, each a dict with ``kind`` in
``linear``, ``conv2d``, ``batchnorm2d``, ``relu``, ``maxpool2d``, ``avgpool2d``, ``flatten``,
``add``, its ``name`` (the key prefix in the ``.npz``) for layers with weights, and its
hyper-parameters. A layer reads the previous one unless ``inputs`` lists the indices of the
layers it reads (the residual network ``resnet20``); ``add`` sums its inputs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tropref.experiments import load_fashion_mnist, to_float

ROOT = Path(__file__).resolve().parents[1]  # the checkout, whose tropref/assets/ the models are written to

SEED = 0

ARCHS = {
    # LeNet-300-100 (LeCun et al. 1998), the network of Neuron Merging's Fashion-MNIST table.
    "lenet300": [
        {"kind": "flatten"},
        {"kind": "linear", "name": "fc1", "in_features": 784, "out_features": 300},
        {"kind": "relu"},
        {"kind": "linear", "name": "fc2", "in_features": 300, "out_features": 100},
        {"kind": "relu"},
        {"kind": "linear", "name": "fc3", "in_features": 100, "out_features": 10},
    ],
    # LeNet-5 with ReLU and max pooling (28x28 input, so conv1 pads by 2).
    "lenet5": [
        {
            "kind": "conv2d",
            "name": "conv1",
            "in_channels": 1,
            "out_channels": 6,
            "kernel_size": 5,
            "stride": 1,
            "padding": 2,
        },
        {"kind": "relu"},
        {"kind": "maxpool2d", "kernel_size": 2, "stride": 2},
        {
            "kind": "conv2d",
            "name": "conv2",
            "in_channels": 6,
            "out_channels": 16,
            "kernel_size": 5,
            "stride": 1,
            "padding": 0,
        },
        {"kind": "relu"},
        {"kind": "maxpool2d", "kernel_size": 2, "stride": 2},
        {"kind": "flatten"},
        {"kind": "linear", "name": "fc1", "in_features": 400, "out_features": 120},
        {"kind": "relu"},
        {"kind": "linear", "name": "fc2", "in_features": 120, "out_features": 84},
        {"kind": "relu"},
        {"kind": "linear", "name": "fc3", "in_features": 84, "out_features": 10},
    ],
    # A small VGG-style net: two blocks of (conv3x3 + BN + ReLU) x 2 + max pool, then three
    # dense layers.
    "vgg_small": [
        {
            "kind": "conv2d",
            "name": "conv1",
            "in_channels": 1,
            "out_channels": 16,
            "kernel_size": 3,
            "stride": 1,
            "padding": 1,
        },
        {"kind": "batchnorm2d", "name": "bn1", "num_features": 16, "eps": 1e-5},
        {"kind": "relu"},
        {
            "kind": "conv2d",
            "name": "conv2",
            "in_channels": 16,
            "out_channels": 16,
            "kernel_size": 3,
            "stride": 1,
            "padding": 1,
        },
        {"kind": "batchnorm2d", "name": "bn2", "num_features": 16, "eps": 1e-5},
        {"kind": "relu"},
        {"kind": "maxpool2d", "kernel_size": 2, "stride": 2},
        {
            "kind": "conv2d",
            "name": "conv3",
            "in_channels": 16,
            "out_channels": 32,
            "kernel_size": 3,
            "stride": 1,
            "padding": 1,
        },
        {"kind": "batchnorm2d", "name": "bn3", "num_features": 32, "eps": 1e-5},
        {"kind": "relu"},
        {
            "kind": "conv2d",
            "name": "conv4",
            "in_channels": 32,
            "out_channels": 32,
            "kernel_size": 3,
            "stride": 1,
            "padding": 1,
        },
        {"kind": "batchnorm2d", "name": "bn4", "num_features": 32, "eps": 1e-5},
        {"kind": "relu"},
        {"kind": "maxpool2d", "kernel_size": 2, "stride": 2},
        {"kind": "flatten"},
        {"kind": "linear", "name": "fc1", "in_features": 1568, "out_features": 256},
        {"kind": "relu"},
        {"kind": "linear", "name": "fc2", "in_features": 256, "out_features": 128},
        {"kind": "relu"},
        {"kind": "linear", "name": "fc3", "in_features": 128, "out_features": 10},
    ],
}


def resnet20_arch(widths=(16, 32, 64), blocks=3):
    """A ResNet-20 (He et al. 2016, CIFAR form) for 28x28 inputs: a 3x3 stem, three stages of
    ``blocks`` BasicBlocks (conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU) at
    widths 16/32/64, the first block of stages 2 and 3 with stride 2 and a 1x1 convolution
    + BN shortcut, global average pooling and one dense layer. Layers read the previous one
    unless ``inputs`` names others (indices into the list); ``add`` sums its inputs."""
    arch = []

    def put(spec, inputs=None):
        if inputs is not None:
            spec["inputs"] = list(inputs)
        arch.append(spec)
        return len(arch) - 1

    def conv(name, cin, cout, k, stride, src=None):
        return put(
            {
                "kind": "conv2d",
                "name": name,
                "in_channels": cin,
                "out_channels": cout,
                "kernel_size": k,
                "stride": stride,
                "padding": k // 2,
                "bias": False,
            },
            None if src is None else [src],
        )

    def bn(name, c):
        return put({"kind": "batchnorm2d", "name": name, "num_features": c, "eps": 1e-5})

    conv("stem", 1, widths[0], 3, 1)
    bn("stem_bn", widths[0])
    x = put({"kind": "relu"})
    cin = widths[0]
    for s, w in enumerate(widths, 1):
        for b in range(1, blocks + 1):
            stride = 2 if s > 1 and b == 1 else 1
            p = f"s{s}b{b}"
            conv(f"{p}_conv1", cin, w, 3, stride, x)
            bn(f"{p}_bn1", w)
            put({"kind": "relu"})
            conv(f"{p}_conv2", w, w, 3, 1)
            out = bn(f"{p}_bn2", w)
            short = x
            if stride != 1 or cin != w:
                conv(f"{p}_down", cin, w, 1, stride, x)
                short = bn(f"{p}_down_bn", w)
            put({"kind": "add"}, [out, short])
            x = put({"kind": "relu"})
            cin = w
    put({"kind": "avgpool2d", "kernel_size": 7, "stride": 7})
    put({"kind": "flatten"})
    put({"kind": "linear", "name": "fc", "in_features": widths[-1], "out_features": 10})
    return arch


ARCHS["resnet20"] = resnet20_arch()

# `vgg_small` with each BatchNorm after its ReLU instead of before it (the order of many
# Keras VGGs): its BatchNorms store the ReLU outputs' statistics, not the pre-activations'.
# Not shipped: docs/results.md, section 14, trains it to measure that case.
ARCHS["vgg_post"] = [dict(s) for s in ARCHS["vgg_small"]]
for _i in range(len(ARCHS["vgg_post"]) - 1):
    if ARCHS["vgg_post"][_i]["kind"] == "batchnorm2d" and ARCHS["vgg_post"][_i + 1]["kind"] == "relu":
        ARCHS["vgg_post"][_i], ARCHS["vgg_post"][_i + 1] = ARCHS["vgg_post"][_i + 1], ARCHS["vgg_post"][_i]

EPOCHS = {"lenet300": 30, "lenet5": 6, "vgg_small": 3, "resnet20": 2, "vgg_post": 3}
SHIPPED = ["lenet300", "lenet5", "vgg_small", "resnet20"]


def build_torch(arch):
    """A ``torch.nn.Sequential`` for an architecture description (names as in the .npz), or
    an :class:`ArchNet` when some layer reads other layers than the previous one."""
    import torch.nn as nn

    if any("inputs" in spec or spec["kind"] == "add" for spec in arch):
        return ArchNet(arch)
    layers = OrderedDict()
    for i, spec in enumerate(arch):
        kind = spec["kind"]
        name = spec.get("name", f"{kind}{i}")
        if kind == "linear":
            layers[name] = nn.Linear(spec["in_features"], spec["out_features"])
        elif kind == "conv2d":
            layers[name] = nn.Conv2d(
                spec["in_channels"],
                spec["out_channels"],
                spec["kernel_size"],
                stride=spec["stride"],
                padding=spec["padding"],
                bias=spec.get("bias", True),
            )
        elif kind == "batchnorm2d":
            layers[name] = nn.BatchNorm2d(spec["num_features"], eps=spec["eps"])
        elif kind == "relu":
            layers[name] = nn.ReLU()
        elif kind == "maxpool2d":
            layers[name] = nn.MaxPool2d(spec["kernel_size"], stride=spec["stride"])
        elif kind == "avgpool2d":
            layers[name] = nn.AvgPool2d(spec["kernel_size"], stride=spec["stride"])
        elif kind == "flatten":
            layers[name] = nn.Flatten()
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return nn.Sequential(layers)


def ArchNet(arch):
    """A module running an architecture description with ``inputs`` and ``add`` layers; its
    ``state_dict`` keys are the layer names (as in the .npz)."""
    import torch.nn as nn

    class _ArchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.arch = arch
            for i, spec in enumerate(arch):
                if spec["kind"] != "add":
                    one = {k: v for k, v in spec.items() if k != "inputs"}
                    self.add_module(spec.get("name", f"{spec['kind']}{i}"), build_torch([one])[0])

        def forward(self, x):
            values = {-1: x}
            for i, spec in enumerate(self.arch):
                srcs = [values[j] for j in spec.get("inputs", [i - 1])]
                if spec["kind"] == "add":
                    values[i] = srcs[0] + srcs[1]
                else:
                    values[i] = getattr(self, spec.get("name", f"{spec['kind']}{i}"))(srcs[0])
            return values[len(self.arch) - 1]

    return _ArchNet()


def accuracy(model, x, y, batch=1000):
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def train(name, epochs, xtr, ytr, xte, yte, log=print):
    import torch

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = build_torch(ARCHS[name])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
        log(
            f"  {name} epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.3f}, "
            f"test acc {accuracy(model, xte, yte):.4f} ({time.perf_counter() - t0:.0f} s)"
        )
    return model, time.perf_counter() - t0


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=SHIPPED, choices=list(ARCHS))
    ap.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    ap.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    ap.add_argument("--out", default=str(ROOT / "tropref" / "assets"))
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tr_img, tr_lab = load_fashion_mnist("train", args.data)
    te_img, te_lab = load_fashion_mnist("test", args.data)
    np.savez_compressed(
        out / "fashion_mnist_test_2000.npz", images=te_img[:2000], labels=te_lab[:2000].astype(np.int64)
    )
    xtr, ytr = torch.from_numpy(to_float(tr_img)), torch.from_numpy(tr_lab)
    xte, yte = torch.from_numpy(to_float(te_img)), torch.from_numpy(te_lab)

    meta_path = out / "models.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    for name in args.models:
        epochs = args.epochs or EPOCHS[name]
        print(f"training {name} for {epochs} epochs")
        model, seconds = train(name, epochs, xtr, ytr, xte, yte)
        model.eval()
        arrays = {
            k: v.detach().cpu().numpy().astype(np.float32)
            for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        arch = ARCHS[name]
        arrays["__arch__"] = np.array(json.dumps(arch))
        np.savez_compressed(out / f"{name}.npz", **arrays)
        acc_full = accuracy(model, xte, yte)
        acc_sub = accuracy(model, xte[:2000], yte[:2000])
        n_params = sum(int(p.numel()) for p in model.parameters())
        meta[name] = {
            "file": f"{name}.npz",
            "input_shape": [1, 28, 28],
            "input_scaling": "uint8 / 255, no other normalisation",
            "architecture": arch,
            "parameters": n_params,
            "test_accuracy": round(acc_full, 4),
            "test_accuracy_first_2000": round(acc_sub, 4),
            "training": {
                "epochs": epochs,
                "optimizer": "Adam(lr=1e-3)",
                "batch_size": 128,
                "seed": SEED,
                "threads": 1,
                "seconds": round(seconds, 1),
                "torch": torch.__version__,
            },
        }
        print(
            f"{name}: {n_params} parameters, test accuracy {acc_full:.4f} (first 2000: {acc_sub:.4f}), {seconds:.0f} s"
        )
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
