"""What the PyTorch and Keras adapters share (``tropref.adapters._padding``, ``_layout``,
``_refusals``, ``_reading``, ``_round_trip``): the padding rules against the frameworks' own
padding (and PyTorch's ``ceil_mode`` pooling), the layout transposes against the frameworks'
own convolutions, and the list of ReLU variants against the names the frameworks really have."""

from __future__ import annotations

import importlib
import itertools
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.helpers import run_doctests

# Keras reads these on first import: set them before it is imported anywhere in this process.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tropref-keras-"))

torch = pytest.importorskip("torch")  # a guard only: CI installs torch and keras and runs these tests
F = torch.nn.functional

from tropref.adapters._layout import (  # noqa: E402
    core_batch,
    kernel_from_core,
    kernel_to_core,
    shape_from_core,
    shape_to_core,
)
from tropref.adapters._padding import (  # noqa: E402
    ceil_padding,
    explicit_padding,
    from_lrtb,
    from_pairs,
    padding_keyword,
    same_padding,
    to_lrtb,
    to_pairs,
)
from tropref.adapters._refusals import RELU_VARIANTS, is_relu_variant, relu_variant_classes  # noqa: E402

SHARED = ["_padding", "_layout", "_refusals", "_graph", "_reading", "_adaptive", "_round_trip", "_in_place"]
# (input size, kernel, stride, dilation): odd and even sizes, strides that do and do not divide them
AXES = [
    (s, k, st, d) for s, k, st, d in itertools.product((7, 8, 11), (1, 2, 3, 5), (1, 2, 3), (1, 2)) if st == 1 or d == 1
]


@pytest.mark.parametrize("name", SHARED)
def test_docstring_examples(name):
    run_doctests(importlib.import_module(f"tropref.adapters.{name}"))


def test_shared_modules_import_no_framework():
    """Only tropref.adapters.torch and .keras import their framework (the package docstring's promise)."""
    imports = "; ".join(f"import tropref.adapters.{name}" for name in SHARED)
    frameworks = "('torch', 'keras', 'tensorflow', 'jax', 'onnx')"
    code = f"import sys; {imports}; print(','.join(m for m in {frameworks} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(("size", "k", "s", "d"), AXES)
def test_same_padding_gives_ceil_size_over_stride_outputs(size, k, s, d):
    before, after = same_padding(size, k, s, d)
    assert 0 <= before <= after <= before + 1  # the odd pixel goes after
    assert (size + before + after - (k - 1) * d - 1) // s + 1 == -(-size // s)


# PyTorch warns that even kernels make it copy the input to pad it: the case under test
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize(("k", "d"), list(itertools.product((1, 2, 3, 4, 5), (1, 2))))
def test_torch_same_padding_is_the_shared_rule(k, d):
    torch.manual_seed(0)
    x, w = torch.randn(1, 2, 9, 8), torch.randn(3, 2, k, k + 1)
    pad = explicit_padding("same", None, (k, k + 1), (1, 1), (d, d), "conv")
    want = F.conv2d(x, w, padding="same", dilation=d)
    got = F.conv2d(F.pad(x, to_lrtb(pad)), w, dilation=d)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("k", "s"), list(itertools.product((1, 2, 3, 4), (1, 2, 3))))
def test_ceil_padding_is_torch_ceil_mode_max_pooling(k, s):
    """The floor-mode pooling of the extra ``-inf`` padding computes ``ceil_mode=True``'s:
    the output sizes, the window starts and every value (all sizes, every allowed padding)."""
    for size, p in itertools.product(range(max(k - 2, 1), 14), range(k // 2 + 1)):
        if size + 2 * p < k:
            continue  # PyTorch refuses an input smaller than the kernel
        x = torch.randn(1, 2, size, size + 1, dtype=torch.float64)
        want = F.max_pool2d(x, k, s, p, ceil_mode=True)
        eh, ew = ceil_padding(size, k, s, p), ceil_padding(size + 1, k, s, p)
        assert 0 <= eh < s  # ceil_mode adds one window at most
        assert 0 <= ew < s
        got = F.max_pool2d(F.pad(x, (p, p + ew, p, p + eh), value=-float("inf")), k, s)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_pad_orders_are_inverse():
    pad = (1, 2, 3, 4)
    assert from_lrtb(to_lrtb(pad)) == pad
    assert from_pairs(to_pairs(pad)) == pad
    x = torch.zeros(1, 1, 5, 6)
    assert tuple(torch.nn.ZeroPad2d(to_lrtb(pad))(x).shape[2:]) == (5 + 1 + 2, 6 + 3 + 4)


@pytest.mark.parametrize(("size", "k", "s", "d"), AXES)
def test_padding_keyword_reads_back_explicit_padding(size, k, s, d):
    hw, kk, ss, dd = (size, size + 1), (k, k), (s, s), (d, d)
    same = explicit_padding("same", hw, kk, ss, dd, "conv")
    assert padding_keyword(same, hw, kk, ss, dd) == ("same" if any(same) else "valid")
    assert padding_keyword((0, 0, 0, 0), hw, kk, ss, dd) == "valid"
    assert padding_keyword(tuple(p + 1 for p in same), hw, kk, ss, dd) is None


def test_unknown_padding_word_is_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"'c1': padding='causal'"):
        explicit_padding("causal", (5, 5), (3, 3), (1, 1), (1, 1), "c1")
    with pytest.raises(ValueError, match="stride 2"):
        same_padding(None, 3, 2)


def test_layout_transposes_are_inverse():
    w = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(kernel_from_core(kernel_to_core(w)), w)
    assert shape_from_core(shape_to_core((5, 6, 3), "channels_last"), "channels_last") == (5, 6, 3)
    assert shape_to_core((3, 5, 6), "channels_first") == (3, 5, 6)
    x = torch.randn(2, 5, 6, 3, requires_grad=True)
    a = core_batch(x, "channels_last", np.float32)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, x.detach().permute(0, 3, 1, 2).numpy())
    assert core_batch(None) is None


def test_relu_variants_name_real_activations():
    """Every name is a PyTorch class or a Keras activation or layer (a typo would refuse nothing)."""
    keras = pytest.importorskip("keras")
    torch_names = {c.__name__ for c in relu_variant_classes(torch.nn)}
    keras_names = {c.__name__ for c in relu_variant_classes(keras.layers)}
    keras_names |= {n for n in dir(keras.activations) if is_relu_variant(n)}
    found = {n.lower().replace("_", "") for n in torch_names | keras_names}
    assert found == RELU_VARIANTS
    assert {"ReLU6", "LeakyReLU", "GELU", "SiLU"} <= torch_names
    assert not any(is_relu_variant(n) for n in ("ReLU", "relu", "softmax", "linear"))


@pytest.mark.slow  # importing Keras and building models takes seconds
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize(("size", "k", "s"), [(7, 3, 2), (8, 3, 2), (8, 4, 3), (11, 5, 2), (9, 2, 1)])
def test_keras_same_convolution_is_explicit_padding_and_the_core_layout(size, k, s):
    """Keras's ``"same"`` equals the shared padding amounts, and its HWIO kernel on NHWC data
    equals the transposed OIHW kernel on NCHW data (PyTorch's convolution, the core's layout)."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(size * k * s)
    x = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
    conv = keras.layers.Conv2D(4, k, strides=s, padding="same", use_bias=False)
    want = np.asarray(keras.ops.convert_to_numpy(conv(x)))
    pad = explicit_padding("same", (size, size + 1), (k, k), (s, s), (1, 1), "conv")
    valid = keras.Sequential([keras.layers.ZeroPadding2D(to_pairs(pad)), keras.layers.Conv2D(4, k, strides=s)])
    valid.build((None, size, size + 1, 3))
    valid.layers[-1].set_weights([conv.get_weights()[0], np.zeros(4, np.float32)])
    np.testing.assert_allclose(np.asarray(keras.ops.convert_to_numpy(valid(x))), want, atol=1e-5)
    core = F.conv2d(
        F.pad(torch.from_numpy(core_batch(x, "channels_last", np.float32)), to_lrtb(pad)),
        torch.from_numpy(np.ascontiguousarray(kernel_to_core(conv.get_weights()[0]))),
        stride=s,
    )
    np.testing.assert_allclose(core.permute(0, 2, 3, 1).numpy(), want, atol=1e-5)


def test_zero_padding_before_max_pooling_of_relu_output_through_dropout_is_folded():
    """A ZeroPad2d after ReLU and Dropout (an identity at inference) pads non-negative values,
    so it folds into the max pooling: the same output, and no padding layer left."""
    from tropref.adapters.torch import from_torch
    from tropref.network import MaxPool2d, forward

    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Dropout(0.3), nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2))
    model.eval()
    x = torch.randn(4, 2, 8, 8)
    net = from_torch(model, input_shape=(2, 8, 8))
    (pool,) = [layer for layer in net.layers if isinstance(layer, MaxPool2d)]
    assert pool.padding == (0, 1, 0, 1)
    with torch.no_grad():
        np.testing.assert_allclose(forward(net, x.numpy()), model(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_torch_models_compute_in_float32_and_come_back_in_their_dtype(dtype):
    """As compress() promises: NumPy has no bfloat16, so its weights and inputs are widened
    (exactly) to float32 on the way to the core, and the new model is written in bfloat16."""
    from tropref.adapters.torch import compress

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).to(dt)
    x = torch.randn(8, 4).to(dt)
    assert core_batch(x, dtype=np.float32).dtype == np.float32
    small, report = compress(model, keep=0.5, inputs=x, progress=False)
    assert small[0].weight.dtype == dt
    assert small[0].out_features == 8
    assert np.isfinite(report.certificate)
