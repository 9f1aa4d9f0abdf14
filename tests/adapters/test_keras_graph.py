"""The Keras adapter on functional graphs: keras.applications.ResNet50, nested models,
residual sums and concatenations, .keras save/reload, legacy .h5 Sequential models, and
one refusal that lists every obstacle."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tropref-keras-"))

keras = pytest.importorskip("keras")  # a guard only: CI installs keras and runs these tests
L = keras.layers

from tropref.adapters.keras import compress, from_keras  # noqa: E402
from tropref.network import Add, Concat  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _np(y) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64)


def _randomise_bn(layers, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for layer in layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(size=c) * 0.2, rng.normal(size=c) * 0.2, rng.uniform(0.5, 2, c)]
            )


def test_keras_applications_resnet50_is_exact_at_keep_one():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    _randomise_bn(model.layers)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    small, report = compress(model, keep=1.0, inputs=x)
    ref = _np(model(x))
    np.testing.assert_allclose(_np(small(x)), ref, atol=1e-5)
    assert report.certificate == 0.0
    status = {r.name: r.status for r in report.layers}
    assert status["conv2_block1_1_conv"] == "kept"
    assert status["conv2_block1_2_conv"] == "kept"
    assert status["conv2_block1_3_conv"].startswith("coupled")
    assert status["conv2_block1_0_conv"].startswith("coupled")
    assert status["predictions"] == "classifier"


def _functional_model():
    """Sequential inside functional, functional inside functional, Add, Concatenate, ZeroPadding2D."""
    keras.utils.set_random_seed(3)
    inner = keras.Sequential(
        [
            keras.Input((8, 8, 6)),
            L.Conv2D(10, 3, padding="same", name="in_c1"),
            L.BatchNormalization(name="in_bn"),
            L.ReLU(name="in_relu"),
            L.Conv2D(6, 3, padding="same", name="in_c2"),
        ],
        name="inner_seq",
    )
    x = keras.Input((8, 8, 6))
    block = keras.Model(x, L.Activation("relu")(L.Add()([inner(x), x])), name="block")
    inp = keras.Input((9, 9, 2))
    h = L.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(inp)
    h = L.Conv2D(6, 3, strides=1, padding="valid", name="stem", activation="relu")(h)
    h = L.ZeroPadding2D(1, name="pad2")(h)
    h = L.Conv2D(6, 3, name="stem2", activation="relu")(h)
    h = block(h)
    side = L.Conv2D(4, 1, activation="relu", name="side")(h)
    h = L.Concatenate(name="cat")([h, side])
    h = L.Conv2D(12, 3, padding="same", activation="relu", name="head")(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(5, activation="softmax", name="out")(L.Dense(16, activation="relu", name="fc")(h))
    model = keras.Model(inp, out)
    _randomise_bn(inner.layers)
    return model


def test_nested_functional_graph_compresses_saves_and_reloads(tmp_path):
    model = _functional_model()
    before = [w.copy() for w in model.get_weights()]
    net = from_keras(model)
    assert any(isinstance(layer, Add) for layer in net.layers)
    assert any(isinstance(layer, Concat) for layer in net.layers)
    x = np.random.default_rng(2).normal(size=(16, 9, 9, 2)).astype("float32")
    small, report = compress(model, keep=1.0, inputs=x)
    np.testing.assert_allclose(_np(small(x)), _np(model(x)), atol=1e-6)
    small, report = compress(model, keep=0.5, inputs=x, seed=0)
    widths = {r.name: (r.width_before, r.width_after) for r in report.layers}
    assert widths["in_c1"] == (10, 5)
    assert widths["head"] == (12, 6)
    assert widths["fc"] == (16, 8)
    assert widths["in_c2"] == (6, 6)
    assert widths["side"] == (4, 4)
    assert widths["stem2"] == (6, 6)
    assert widths["stem"] == (6, 3)  # its padded output is read by stem2 alone
    assert report.measured_error <= report.certificate
    np.testing.assert_allclose(np.abs(_np(small(x)) - _np(model(x))).max(), report.measured_error, atol=1e-5)
    small.save(tmp_path / "small.keras")
    again = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(_np(again(x)), _np(small(x)), atol=0)
    for a, b in zip(before, model.get_weights(), strict=False):  # the model given is not modified
        np.testing.assert_array_equal(a, b)


def test_legacy_h5_sequential_is_read_from_its_own_graph(tmp_path):
    pytest.importorskip("h5py")
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(3)])
    model.save(tmp_path / "legacy.h5")
    again = keras.models.load_model(tmp_path / "legacy.h5")
    assert max(len(layer._inbound_nodes) for layer in again.layers) > 1  # what Keras records for such files
    x = np.random.default_rng(5).normal(size=(10, 6)).astype("float32")
    _small, report = compress(again, keep=0.5, inputs=x)
    assert report.measured_error <= report.certificate
    assert [type(layer).__name__ for layer in from_keras(again)] == ["Dense", "ReLU", "Dense"]


def test_one_refusal_lists_every_obstacle():
    inp = keras.Input((8, 8, 4))
    h = L.Conv2D(8, 1, activation="relu6", name="expand")(inp)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.ReLU(max_value=6.0, name="capped")(h)
    h = L.Conv2D(4, 1, name="project")(h)
    out = L.Multiply(name="gate")([h, inp])
    with pytest.raises(ValueError, match="4 problems") as info:
        from_keras(keras.Model(inp, out))
    msg = str(info.value)
    assert "4 problems" in msg
    assert "'expand'" in msg
    assert "relu6" in msg
    assert "'dw'" in msg
    assert "'capped'" in msg
    assert "'gate'" in msg


def test_layer_called_twice_is_read_per_call_with_a_warning():
    inp = keras.Input((8,))
    shared = L.Dense(8, activation="relu", name="shared")
    model = keras.Model(inp, L.Dense(2)(shared(shared(inp))))
    with pytest.warns(UserWarning, match=r"'shared' \(2 calls\).*no longer shared"):
        net = from_keras(model)
    assert [type(l).__name__ for l in net.layers] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    np.testing.assert_allclose(net(x), _np(model(x)), rtol=1e-5, atol=1e-6)
