"""Model files, shipped models, predict/accuracy, layer groups and keep rules (tropref.experiments.models)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.experiments.stand_ins import stand_in, tiny_cnn, tiny_mlp
from tests.helpers import run_doctests
from tropref import Budget
from tropref import experiments as E
from tropref.experiments import models
from tropref.network import Conv2d, Dense, Flatten, Network, ReLU, forward


def test_docstring_examples():
    run_doctests(models)


def test_predict_matches_reference_forward():
    net = tiny_cnn()
    x, _ = stand_in(net)
    np.testing.assert_allclose(E.predict(net, x, chunk=7), np.asarray(forward(net, x)), rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(3)
    conv = Conv2d(
        rng.normal(size=(3, 2, 3, 2)), rng.normal(size=3), stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2)
    )
    z = rng.normal(size=(4, 2, 9, 8))
    zp = np.pad(z, ((0, 0), (0, 0), (1, 0), (2, 1)))
    Ho, Wo = (zp.shape[2] - 3) // 2 + 1, zp.shape[3] - 2 * (2 - 1) - 1 + 1
    ref = np.array(
        [
            [
                [
                    [np.sum(zp[n, :, 2 * r : 2 * r + 3, c : c + 3 : 2] * conv.W[o]) + conv.b[o] for c in range(Wo)]
                    for r in range(Ho)
                ]
                for o in range(3)
            ]
            for n in range(4)
        ]
    )  # the cross-correlation written out
    np.testing.assert_allclose(np.asarray(forward(Network([conv]), z)), ref, atol=1e-12)


def test_shipped_models_load_and_reach_recorded_accuracy():
    from tropref.experiments.data import load_test_subset, to_float

    x, y = load_test_subset()
    x = to_float(x)
    meta = E.shipped_models()
    assert set(meta) == {"lenet300", "lenet5", "vgg_small", "resnet20"}
    net, m = E.load_model("lenet300")
    assert m["parameters"] == 266_610
    assert E.hidden_layer_names(net) == {"dense": ["fc1", "fc2"], "conv": []}
    # the recorded accuracy on the shipped subset is reproduced by the NumPy forward pass
    assert E.accuracy(net, x, y) == pytest.approx(m["test_accuracy_first_2000"], abs=1e-4)
    net5, _m5 = E.load_model("lenet5")
    assert E.accuracy(net5, x[:500], y[:500]) == pytest.approx(np.mean(np.argmax(forward(net5, x[:500]), 1) == y[:500]))


def test_shipped_resnet20_is_a_graph_with_its_inner_channels_compressible():
    from tropref.experiments.data import load_test_subset, to_float

    x, y = load_test_subset()
    net, meta = E.load_model("resnet20")
    assert not net.is_chain
    assert meta["parameters"] == 272_186
    assert E.hidden_layer_names(net)["conv"] == [f"s{s}b{b}_conv1" for s in (1, 2, 3) for b in (1, 2, 3)]
    assert E.accuracy(net, to_float(x[:200]), y[:200]) > 0.85  # recorded: 90.70 % on the first 2000


def test_save_load_roundtrip(tmp_path):
    net = tiny_cnn()
    path = E.save_model(net, tmp_path / "m.npz", {"note": "x"})
    back, meta = E.load_model(path)
    x, _ = stand_in(net)
    np.testing.assert_allclose(E.predict(back, x), E.predict(net, x), rtol=1e-6)
    assert meta["note"] == "x"
    assert meta["input_shape"] == [3, 8, 8]
    with pytest.raises(FileNotFoundError, match="`model`"):
        E.load_model(tmp_path / "missing.npz")


def test_keep_rule():
    net = tiny_cnn()
    assert E.keep_rule(net, 0.5, "all") == 0.5
    assert E.keep_rule(net, 0.5, "dense") == {"fc1": 0.5}
    assert E.keep_rule(net, 0.25, "conv") == {"conv1": 0.25}
    with pytest.raises(ValueError, match="no hidden conv"):
        E.keep_rule(tiny_mlp(), 0.5, "conv")
    with pytest.raises(ValueError, match="`fraction`"):
        E.keep_rule(net, 0.0, "all")
    with pytest.raises(ValueError, match="`layers`"):
        E.keep_rule(net, 0.5, "some")


def test_keep_rule_knows_every_layer_group():
    net = tiny_cnn()
    rules = {group: E.keep_rule(net, 0.5, group) for group in models.LAYER_GROUPS}
    assert rules["all"] == 0.5
    assert rules["dense"] == {"fc1": 0.5}
    assert rules["conv"] == {"conv1": 0.5}
    assert isinstance(rules["nonuniform"], Budget)
    assert rules["nonuniform"].fraction == 0.5


def test_input_dtype_is_the_first_weights_dtype():
    assert models.input_dtype(tiny_cnn()) == np.float32
    net64 = Network([Dense(np.ones((2, 3))), ReLU(), Dense(np.ones((1, 2)))])
    assert models.input_dtype(net64) == np.float64
    assert models.input_dtype(Network([Flatten()])) == np.float32  # no weights: float32
    assert models.input_dtype(E.load_model("lenet300", dtype=np.float64)[0]) == np.float64
