"""compress on Keras models: the user's own model back (its class, layer names and BatchNorms),
computing tropref's compressed network, saved and reloaded as .keras and .h5."""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tropref-keras-"))

keras = pytest.importorskip("keras")  # a guard only: CI installs keras and runs these tests
L = keras.layers

from tropref.adapters.keras import compress, from_keras, to_core_input, to_keras  # noqa: E402
from tropref.network import compress_network, forward  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # importing Keras takes seconds
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file"),
]


def _np(y) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64)


def _randomise_bn(model, seed: int = 1):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            w = layer.get_weights()
            c = w[0].shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(size=c) * 0.3}
            values |= {"moving_mean": rng.normal(size=c) * 0.3, "moving_variance": rng.uniform(0.5, 2, c)}
            layer.set_weights([values[v.path.split("/")[-1]] for v in layer.weights])
    return model


def functional_bn():
    """conv-BN-ReLU, pool, flatten, dense-BN-ReLU, dense; a conv without bias, a BN without scale."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="image")
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(16, name="fc1")(h)
    h = L.BatchNormalization(scale=False, epsilon=1e-5, name="bn2")(h)
    h = L.Activation("relu", name="relu2")(h)
    h = L.Dropout(0.2, name="drop")(h)
    return _randomise_bn(keras.Model(inp, L.Dense(5, name="logits")(h), name="mynet"))


def sequential():
    keras.utils.set_random_seed(1)
    return _randomise_bn(
        keras.Sequential(
            [
                keras.Input((6, 6, 2), name="pixels"),
                L.Conv2D(6, 3, activation="relu", name="conv"),
                L.BatchNormalization(name="bn"),  # after the ReLU: stays, refitted
                L.GlobalAveragePooling2D(name="gap"),
                L.Dense(12, activation="relu", name="hidden"),
                L.Dense(3, activation="softmax", name="probs"),
            ],
            name="myseq",
        )
    )


def residual():
    keras.utils.set_random_seed(2)
    inp = keras.Input((6, 6, 4), name="image")
    h = L.Conv2D(8, 3, padding="same", name="b1_c1")(inp)
    h = L.BatchNormalization(name="b1_bn1")(h)
    h = L.ReLU(name="b1_relu1")(h)
    h = L.Conv2D(4, 3, padding="same", name="b1_c2")(h)
    h = L.BatchNormalization(name="b1_bn2")(h)
    h = L.ReLU(name="b1_out")(L.Add(name="b1_add")([h, inp]))
    side = L.Conv2D(6, 1, activation="relu", name="side")(h)
    h = L.Concatenate(name="cat")([h, side])
    h = L.AveragePooling2D(2, name="pool")(h)
    h = L.Flatten(name="flat")(h)
    out = L.Dense(3, name="logits")(L.Dense(10, activation="relu", name="fc")(h))
    return _randomise_bn(keras.Model(inp, out, name="myres"))


MODELS = {"functional_bn": functional_bn, "sequential": sequential, "residual": residual}


def _output_layer(model) -> str:
    return model.outputs[0]._keras_history.operation.name


def _x(model, n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *tuple(model.inputs[0].shape[1:]))).astype("float32")


def _compress(model, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to a rebuilt model
        return compress(model, 0.5, inputs=x, progress=False, **kw)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_own_model_back_with_names_batchnorms_and_type(make, tmp_path):
    model = make()
    before = [w.copy() for w in model.get_weights()]
    x = _x(model)
    small, report = _compress(model, x)
    assert type(small) is type(model)
    assert small.name == model.name
    assert [t.name for t in small.inputs] == [t.name for t in model.inputs]
    assert _output_layer(small) == _output_layer(model)
    names = [layer.name for layer in small.layers]
    assert names == [layer.name for layer in model.layers]  # every layer, in order
    assert {r.name for r in report.layers} <= set(names)
    assert any(r.width_after < r.width_before for r in report.layers)
    for r in report.layers:
        layer = small.get_layer(r.name)
        assert (layer.units if isinstance(layer, L.Dense) else layer.filters) == r.width_after
    bns = [layer.name for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    assert bns
    assert all(isinstance(small.get_layer(n), L.BatchNormalization) for n in bns)
    assert report.notes == ()
    # the model's own layers compute tropref's compressed network
    core, _ = compress_network(from_keras(model), 0.5, inputs=to_core_input(x, dtype=np.float32), progress=False)
    want = forward(core, to_core_input(x, dtype=np.float32))
    np.testing.assert_allclose(_np(small(x, training=False)), want, rtol=1e-5, atol=1e-5)
    assert abs(np.abs(_np(small(x)) - _np(model(x))).max() - report.measured_error) < 1e-4
    small.save(tmp_path / "small.keras")
    again = keras.models.load_model(tmp_path / "small.keras")
    assert type(again) is type(model)
    assert [layer.name for layer in again.layers] == names
    np.testing.assert_array_equal(_np(again(x)), _np(small(x)))
    for a, b in zip(before, model.get_weights(), strict=True):  # the model given is not modified
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_model_saves_and_reloads_as_h5(make, tmp_path):
    pytest.importorskip("h5py")
    model = make()
    x = _x(model)
    small, _ = _compress(model, x)
    small.save(tmp_path / "small.h5")
    again = keras.models.load_model(tmp_path / "small.h5")
    assert type(again) is type(model)
    assert [layer.name for layer in again.layers] == [layer.name for layer in small.layers]
    np.testing.assert_array_equal(_np(again(x)), _np(small(x)))


def test_folded_batchnorm_keeps_the_merged_units_statistics_and_the_folded_bias():
    """``bn1`` follows a compressed layer: it holds its units' estimated statistics (running
    mean and variance, gamma = sqrt(var + eps), beta = mean), so that in eval mode it adds the
    folded bias; ``bn2`` (no scale in the model) is an exact identity plus beta."""
    model = functional_bn()
    small, report = _compress(model, _x(model))
    bn1 = small.get_layer("bn1")
    assert small.get_layer("c1").use_bias is False  # the conv keeps its config; the BN carries the bias
    mean, std = report.layers[0].info["moments"]
    np.testing.assert_allclose(_np(bn1.moving_variance), std**2, rtol=1e-6)
    np.testing.assert_allclose(_np(bn1.beta), mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_np(bn1.gamma), np.sqrt(std**2 + bn1.epsilon), rtol=1e-6)
    folded_bias = _np(bn1.beta) - _np(bn1.moving_mean)
    assert np.any(folded_bias != 0)
    rng = np.random.default_rng(3)
    probe = rng.normal(size=(2, 8, 8, mean.shape[0])).astype("float32")
    np.testing.assert_allclose(_np(bn1(probe, training=False)), probe + folded_bias, rtol=1e-5, atol=1e-5)
    bn2 = small.get_layer("bn2")
    assert bn2.scale is False  # the model's own settings
    assert bn2.epsilon == 1e-5
    z = rng.normal(size=(4, bn2.moving_mean.shape[0])).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn2(z, training=False)), z + keras.ops.convert_to_numpy(bn2.beta)
    )


def test_compressing_twice_gives_the_same_names():
    model = residual()
    x = _x(model)
    a, _ = _compress(model, x)
    b, _ = _compress(model, x)
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    np.testing.assert_array_equal(_np(a(x)), _np(b(x)))


def test_nested_model_whose_input_width_changes_is_cloned_on_its_new_input():
    keras.utils.set_random_seed(4)
    block_in = keras.Input((10,), name="block_in")
    block = keras.Model(block_in, L.Dense(6, activation="relu", name="inner")(block_in), name="block")
    seq = keras.Sequential([keras.Input((6,), name="seq_in"), L.Dense(8, activation="relu", name="deep")], name="seq")
    inp = keras.Input((4,), name="x")
    out = L.Dense(3, name="out")(seq(block(L.Dense(10, activation="relu", name="outer")(inp))))
    model = keras.Model(inp, out, name="nest")
    x = _x(model, 16)
    small, _ = _compress(model, x)
    assert [layer.name for layer in small.layers] == ["x", "outer", "block", "seq", "out"]
    assert type(small.get_layer("seq")) is keras.Sequential
    assert small.get_layer("block").get_layer("inner").units == 3
    assert small.get_layer("seq").get_layer("deep").units == 4
    assert small.get_layer("outer").units == 5
    core, _ = compress_network(from_keras(model), 0.5, inputs=x, progress=False)
    np.testing.assert_allclose(_np(small(x)), forward(core, x), rtol=1e-5, atol=1e-5)
    # the same in a Sequential: the nested model's input shape is followed through the layers before it
    inner = keras.Sequential([keras.Input((10,), name="inner_in"), L.Dense(6, activation="relu", name="deep")])
    model = keras.Sequential([keras.Input((4,)), L.Dense(10, activation="relu", name="first"), inner, L.Dense(3)])
    small, _ = _compress(model, x)
    assert type(small.layers[1]) is keras.Sequential
    assert small.layers[1].get_layer("deep").units == 3
    core, _ = compress_network(from_keras(model), 0.5, inputs=x, progress=False)
    np.testing.assert_allclose(_np(small(x)), forward(core, x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:tropref reads every call of a layer used several times")
def test_shared_layer_falls_back_to_a_rebuilt_model_with_the_names_and_a_note():
    inp = keras.Input((8,), name="x")
    shared = L.Dense(8, activation="relu", name="shared")
    model = keras.Model(inp, L.Dense(2, name="out")(shared(shared(inp))), name="twice")
    x = _x(model, 16)
    with pytest.warns(UserWarning, match="rebuilt as plain layers"):
        small, report = compress(model, 0.5, inputs=x, progress=False)
    assert any("rebuilt" in n for n in report.notes)
    assert type(small) is type(model)  # functional for functional
    assert small.name == "twice"
    assert {"shared", "shared_2", "out"} <= {layer.name for layer in small.layers}
    assert small.inputs[0].name == "x"


def test_to_keras_names_are_explicit_and_do_not_depend_on_earlier_models():
    model = residual()
    net, _ = compress_network(from_keras(model), 0.5, progress=False)
    first, second = to_keras(net), to_keras(net)
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert {"b1_c1", "fc_relu", "b1_add"} <= {layer.name for layer in first.layers}
    seq = to_keras(from_keras(sequential()), name="s", functional=True)
    assert type(seq).__name__ == "Functional"
    assert seq.name == "s"


def test_compress_raises_no_numpy_deprecation_warning():
    """Keras's own ``get_weights`` warns under NumPy 2 on the torch backend; the adapter
    reads and writes weights without it."""
    head = [keras.Input((6, 6, 2)), L.Conv2D(6, 3, name="c1"), L.BatchNormalization(name="bn"), L.ReLU(name="r")]
    model = keras.Sequential([*head, L.Flatten(name="f"), L.Dense(8, activation="relu", name="fc1"), L.Dense(3)])
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        small, _ = compress(model, 0.5, inputs=x, progress=False)
        small(x)


_WIDTHS = ("units", "filters", "use_bias", "scale", "center")  # what the clone may change


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_clone_keeps_every_layers_config_but_its_width(make):
    """The clone's layers are made with their compressed values as initialisers; once built
    they name the model's own initialisers again (and save with them)."""
    model = make()
    small, _ = _compress(model, _x(model))
    for a, b in zip(model.layers, small.layers, strict=True):
        want, got = a.get_config(), b.get_config()
        assert {k: v for k, v in got.items() if k not in _WIDTHS} == {k: v for k, v in want.items() if k not in _WIDTHS}
        for key in (k for k in want if k.endswith("_initializer")):
            assert type(getattr(b, key)) is type(getattr(a, key))


def test_renormalising_batchnorm_keeps_its_renorm_variables_initial_values():
    """A BatchNorm with ``renorm=True`` makes ``moving_stddev`` and ``renorm_*`` from its
    moving-statistics initialisers too: they start as the model's initialisers give them
    (``sqrt(1)``, ``0``), not from the compressed statistics."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((6,), name="x")
    h = L.BatchNormalization(renorm=True, name="bn")(L.Dense(8, name="fc")(inp))
    model = keras.Model(inp, L.Dense(2, name="out")(L.ReLU(name="r")(h)), name="renorm")
    rng = np.random.default_rng(5)
    bn = model.get_layer("bn")
    for v, value in ((bn.moving_mean, rng.normal(size=8)), (bn.moving_variance, rng.uniform(0.5, 2, 8))):
        v.assign(value.astype("float32"))
    small, _ = _compress(model, _x(model, 16))
    bn = small.get_layer("bn")
    assert bn.moving_mean.shape == (4,)
    assert np.any(_np(bn.moving_variance) != 1)  # the compressed units' statistics
    np.testing.assert_array_equal(_np(bn.moving_stddev), np.ones(4))
    np.testing.assert_array_equal(_np(bn.renorm_mean), np.zeros(4))
    np.testing.assert_array_equal(_np(bn.renorm_stddev), np.ones(4))
