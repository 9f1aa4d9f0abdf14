"""The Keras 3 adapter: round trips in both data formats, exact merges, certificates,
``.keras`` save/load and refusals. Runs on the PyTorch backend with a temporary KERAS_HOME."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from tests.helpers import run_doctests

# Keras reads these on first import: set them before it is imported anywhere in this process.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tropref-keras-"))

keras = pytest.importorskip("keras")  # a guard only: CI installs keras and runs these tests
L = keras.layers

from tropref.adapters.keras import compress, from_keras, to_core_input, to_keras  # noqa: E402
from tropref.network import compress_network, forward  # noqa: E402

RNG = np.random.default_rng(0)

pytestmark = [
    pytest.mark.slow,  # importing Keras and building models takes seconds
    # Keras's own Variable.numpy() triggers NumPy 2's __array__(copy=...) deprecation warning.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]


def _np(y) -> np.ndarray:
    return np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y, dtype=np.float64)


def _randomise_bn(model) -> None:
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, c)]
            )


def vgg_like(fmt: str = "channels_last", dup: bool = False):
    """A small VGG-style Sequential: conv(relu) -> BN -> conv(relu) -> BN -> pool -> ... -> dense."""
    keras.utils.set_random_seed(0)
    axis = -1 if fmt == "channels_last" else 1
    shape = (10, 10, 3) if fmt == "channels_last" else (3, 10, 10)
    model = keras.Sequential(
        [
            keras.Input(shape),
            L.Conv2D(8, 3, padding="same", activation="relu", data_format=fmt),
            L.BatchNormalization(axis=axis),
            L.Conv2D(8, 3, padding="same", activation="relu", data_format=fmt),
            L.BatchNormalization(axis=axis),
            L.MaxPooling2D(2, data_format=fmt),
            L.Dropout(0.25),
            L.Conv2D(6, 2, strides=2, padding="same", data_format=fmt),
            L.Activation("relu"),
            L.AveragePooling2D(2, padding="same", data_format=fmt),
            L.Flatten(),
            L.Dense(12),
            L.ReLU(),
            L.Dropout(0.5),
            L.Dense(3),
        ]
    )
    _randomise_bn(model)
    if dup:  # the first convolution's channels 4..7 repeat 0..3, with their BatchNorm
        conv, bn = model.layers[0], model.layers[1]
        k, b = conv.get_weights()
        k[..., 4:], b[4:] = k[..., :4], b[:4]
        conv.set_weights([k, b])
        w = bn.get_weights()
        for a in w:
            a[4:] = a[:4]
        bn.set_weights(w)
    return model


def _inputs(model, n: int = 5) -> np.ndarray:
    return RNG.normal(size=(n, *tuple(model.inputs[0].shape[1:]))).astype(np.float32)


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_export_import_round_trip(fmt):
    model = vgg_like(fmt)
    x = _inputs(model)
    y = _np(model(x, training=False))
    net = from_keras(model)
    assert net.input_shape == (3, 10, 10)
    np.testing.assert_allclose(forward(net, to_core_input(x, fmt, np.float32)), y, atol=1e-4)  # core == keras
    back = to_keras(net, data_format=fmt)
    np.testing.assert_allclose(_np(back(x)), y, atol=1e-4)


def test_functional_chain_is_read():
    inp = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="hidden")(inp)
    h = L.BatchNormalization()(h)
    out = L.Dense(2, name="out")(h)
    model = keras.Model(inp, out)
    _randomise_bn(model)
    net = from_keras(model)
    assert [type(l).__name__ for l in net] == ["Dense", "ReLU", "BatchNorm", "Dense"]
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(forward(net, x), _np(model(x)), atol=1e-5)


def test_keep_one_is_exact():
    model = vgg_like()
    x = _inputs(model)
    small, report = compress(model, keep=1.0, inputs=x)
    np.testing.assert_allclose(_np(small(x)), _np(model(x)), atol=1e-4)
    assert report.measured_error <= 1e-9


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_duplicated_channels_merge_exactly(fmt):
    model = vgg_like(fmt, dup=True)
    name = model.layers[0].name
    x = _inputs(model)
    small, report = compress(model, keep={name: 4}, inputs=x, dtype=np.float64)
    assert small.layers[0].filters == 4
    np.testing.assert_allclose(_np(small(x)), _np(model(x)), atol=1e-4)
    assert report.certificate <= 1e-6


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_compressed_model_equals_core_and_error_is_certified(fmt):
    model = vgg_like(fmt)
    x = _inputs(model, 8)
    small, report = compress(model, keep=0.5, seed=0, inputs=x)
    core, _ = compress_network(from_keras(model, dtype=np.float64), keep=0.5, seed=0)
    np.testing.assert_allclose(_np(small(x)), forward(core, to_core_input(x, fmt)), atol=1e-4)
    assert report.measured_error <= report.certificate
    assert abs(np.abs(_np(small(x)) - _np(model(x))).max() - report.measured_error) < 1e-4
    assert [r.width_after for r in report.layers] == [4, 4, 3, 6, 3]


def test_global_pooling():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), L.Conv2D(5, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(3)]
    )
    x = _inputs(model)
    np.testing.assert_allclose(forward(from_keras(model), to_core_input(x)), _np(model(x)), atol=1e-5)
    small, _report = compress(model, keep=0.6, inputs=x)
    np.testing.assert_allclose(
        _np(small(x)),
        forward(compress_network(from_keras(model, dtype=np.float64), keep=0.6, seed=0)[0], to_core_input(x)),
        atol=1e-4,
    )


def test_nested_sequential_rescaling_and_augmentation():
    keras.utils.set_random_seed(3)
    inner = keras.Sequential([L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D()], name="block")
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Rescaling(1 / 255.0, offset=0.1), L.RandomFlip(), inner, L.Flatten(), L.Dense(3)]
    )
    x = (RNG.uniform(0, 255, size=(4, 8, 8, 3))).astype(np.float32)
    net = from_keras(model)
    assert [type(l).__name__ for l in net] == [
        "BatchNorm",
        "Identity",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Flatten",
        "Dense",
    ]
    np.testing.assert_allclose(forward(net, to_core_input(x)), _np(model(x, training=False)), rtol=1e-5, atol=1e-5)
    small, _report = compress(model, keep=0.5, inputs=x)
    # the model's own RandomFlip is kept: it flips unless called with training=False, as the original does
    assert [type(layer).__name__ for layer in small.layers] == [type(layer).__name__ for layer in model.layers]
    np.testing.assert_allclose(
        _np(small(x, training=False)),
        forward(compress_network(from_keras(model, dtype=np.float64), keep=0.5, seed=0)[0], to_core_input(x)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_softmax_classifier():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), L.Dense(10, activation="relu"), L.Dense(4, activation="softmax")])
    x = RNG.normal(size=(12, 6)).astype(np.float32)
    small, report = compress(model, keep=0.5, inputs=x)
    assert small.layers[-1].activation is keras.activations.softmax  # the model's own Dense(activation="softmax")
    np.testing.assert_allclose(_np(small(x)).sum(axis=1), 1.0, atol=1e-5)
    assert report.measured_error <= report.certificate <= 1.0  # probabilities move by at most 1


def test_save_and_load_keras_format(tmp_path):
    model = vgg_like()
    x = _inputs(model)
    small, _ = compress(model, keep=0.5, seed=0)
    path = str(tmp_path / "small.keras")
    small.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(_np(again(x)), _np(small(x)), atol=0)


def test_model_is_not_modified():
    model = vgg_like()
    before = [w.copy() for w in model.get_weights()]
    compress(model, keep=0.5, seed=0, inputs=_inputs(model))
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unsupported_layers_and_branches_are_named():
    with pytest.raises(ValueError, match=r"'squash'.*tanh"):
        from_keras(keras.Sequential([keras.Input((3,)), L.Dense(2, activation="tanh", name="squash")]))
    with pytest.raises(ValueError, match="'dw'"):
        from_keras(keras.Sequential([keras.Input((5, 5, 2)), L.DepthwiseConv2D(3, name="dw")]))
    with pytest.raises(ValueError, match=r"'grouped'.*groups=2"):
        from_keras(keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(2, 3, groups=2, name="grouped")]))
    inp = keras.Input((4,))
    h = L.Dense(4, activation="relu", name="fc")(inp)
    out = L.Multiply(name="gate")([h, inp])
    with pytest.raises(ValueError, match="'gate'"):
        from_keras(keras.Model(inp, out))
    a = L.Dense(3, name="a")(inp)
    b = L.Dense(3, name="b")(inp)
    with pytest.raises(ValueError, match=r"'a'|'b'|outputs"):
        from_keras(keras.Model(inp, [a, b]))


def test_docstring_examples():
    import tropref.adapters.keras as mod

    run_doctests(mod)
