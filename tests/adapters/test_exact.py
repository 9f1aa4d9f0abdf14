"""The adapters read a layer only when its computation is the plain one they assume: hooks,
subclasses that define ``forward``/``call`` anew, LoRA, quantization and look-alike activations
are refused by name, in the one refusal message; the plain models they accept give the
original's outputs at ``keep=1.0``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tropref.adapters import torch as TA  # noqa: E402


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).eval()


def _refusal(fn, *args, **kw):
    with pytest.raises(ValueError, match=r"^tropref cannot read this model") as info:
        fn(*args, **kw)
    return str(info.value)


def _same_outputs(small, model, x):
    with torch.no_grad():
        np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_torch_forward_hooks_and_pre_hooks_are_refused_by_name():
    model = _mlp()
    handle = model[0].register_forward_hook(lambda m, i, o: 2 * o)
    msg = _refusal(TA.compress, model, keep=1.0)
    assert "layer '0' (Linear) has a forward hook" in msg
    handle.remove()
    handle = model.register_forward_pre_hook(lambda m, i: (i[0] + 1,))
    msg = _refusal(TA.from_torch, model)
    assert "the model (Sequential) has a forward pre-hook" in msg
    handle.remove()
    small, _ = TA.compress(model, keep=1.0)
    _same_outputs(small, model, torch.randn(8, 3))


def test_torch_pruning_hooks_are_refused_with_the_fix():
    from torch.nn.utils import prune

    model = _mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    msg = _refusal(TA.from_torch, model)
    assert "layer '0' (Linear) has a forward pre-hook" in msg
    assert "torch.nn.utils.prune.remove" in msg
    prune.remove(model[0], "weight")
    small, _ = TA.compress(model, keep=1.0)
    _same_outputs(small, model, torch.randn(8, 3))


def test_torch_global_forward_hook_is_refused():
    model = _mlp()
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
    try:
        msg = _refusal(TA.from_torch, model)
    finally:
        handle.remove()
    assert "global forward hook" in msg
    TA.from_torch(model)


class Doubled(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class Renamed(nn.Linear):
    """A subclass that computes what nn.Linear computes: read as a Linear."""


class Clipped(nn.ReLU):
    def forward(self, x):
        return torch.clamp(x, 0, 1)


def test_torch_subclasses_that_define_forward_anew_are_refused_by_name():
    torch.manual_seed(0)
    model = nn.Sequential(Doubled(3, 6), Clipped(), nn.Linear(6, 2))
    msg = _refusal(TA.compress, model, keep=1.0)
    assert "(2 problems)" in msg
    assert "layer '0' (Doubled, a subclass of Linear) defines forward anew" in msg
    assert "layer '1' (Clipped, a subclass of ReLU) defines forward anew" in msg
    plain = nn.Sequential(Renamed(3, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    small, _ = TA.compress(plain, keep=1.0)
    _same_outputs(small, plain, torch.randn(8, 3))


def test_torch_forward_set_on_an_instance_is_refused():
    model = _mlp()
    model[2].forward = lambda x: x
    assert "layer '2' (Linear) has its own forward set on the instance" in _refusal(TA.from_torch, model)


def test_torch_meta_model_and_non_module_are_refused_clearly():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"meta device.*0\.weight.*to_empty"):
        TA.compress(model, keep=1.0)
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module, got dict"):
        TA.compress({"0.weight": 1}, keep=1.0)


# --------------------------------------------------------------------------- Keras


def _keras():
    return pytest.importorskip("keras")


def _keras_same(small, model, shape):
    keras = _keras()
    x = np.random.default_rng(0).normal(size=(6, *shape)).astype("float32")
    got, want = keras.ops.convert_to_numpy(small(x)), keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_keras_subclasses_that_define_call_anew_are_refused_by_name():
    keras = _keras()
    from tropref.adapters import keras as KA

    L = keras.layers

    class Doubled(L.Dense):
        def call(self, x):
            return 2 * super().call(x)

    class Same(L.Dense):
        pass

    class MySeq(keras.Sequential):
        def call(self, x, training=None):
            return 2 * super().call(x)

    model = keras.Sequential([keras.Input((3,)), Doubled(6, activation="relu", name="d"), L.Dense(2)])
    assert "layer 'd' (Doubled, a subclass of Dense) defines call anew" in _refusal(KA.compress, model, keep=1.0)
    model = MySeq([keras.Input((3,)), L.Dense(6, activation="relu"), L.Dense(2)], name="s")
    assert "layer 's' (MySeq, a subclass of keras.Model) defines call anew" in _refusal(KA.from_keras, model)
    plain = keras.Sequential([keras.Input((3,)), Same(6, activation="relu"), L.Dense(2)])
    small, _ = KA.compress(plain, keep=1.0)
    _keras_same(small, plain, (3,))


@pytest.mark.slow
def test_keras_lora_and_quantized_layers_are_refused_by_name():
    keras = _keras()
    from tropref.adapters import keras as KA

    L = keras.layers
    model = keras.Sequential([keras.Input((3,)), L.Dense(6, activation="relu", name="d"), L.Dense(2, name="out")])
    model.get_layer("d").enable_lora(2)
    model.get_layer("d").lora_kernel_b.assign(np.ones((2, 6), "float32"))  # LoRA that changes the outputs
    assert "layer 'd' (Dense) has LoRA enabled" in _refusal(KA.compress, model, keep=1.0)
    model = keras.Sequential([keras.Input((3,)), L.Dense(6, activation="relu", name="d"), L.Dense(2, name="out")])
    with pytest.warns(UserWarning, match="quantize"):
        model.quantize("int8")
    msg = _refusal(KA.compress, model, keep=1.0)
    assert "layer 'd' (Dense) is quantized (int8)" in msg
    assert "layer 'out' (Dense) is quantized (int8)" in msg


@pytest.mark.slow
def test_keras_activation_named_relu_that_is_not_keras_relu_is_refused():
    keras = _keras()
    from tropref.adapters import keras as KA

    L = keras.layers

    def relu(x):  # named relu, but not max(x, 0)
        return 3 * keras.ops.relu(x)

    model = keras.Sequential([keras.Input((3,)), L.Dense(6, activation=relu, name="d"), L.Dense(2)])
    msg = _refusal(KA.compress, model, keep=1.0)
    assert "layer 'd' (activation 'relu') is not Keras's own relu" in msg
    model = keras.Sequential([keras.Input((3,)), L.Dense(6, name="d"), L.Activation(relu, name="act"), L.Dense(2)])
    assert "layer 'act' (activation 'relu')" in _refusal(KA.from_keras, model)
    for act in ("relu", keras.activations.relu, keras.ops.relu):
        plain = keras.Sequential([keras.Input((3,)), L.Dense(6, activation=act), L.Dense(2)])
        small, _ = KA.compress(plain, keep=1.0)
        _keras_same(small, plain, (3,))
