"""Bad input gets one clear error from tropref, naming the argument or the layer and saying
what to do, before NumPy or a framework fails (issue 16)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import tropref
from tropref.experiments import load_model
from tropref.experiments.cli import main
from tropref.network import Dense, Network, ReLU, compress_network

RNG = np.random.default_rng(16)
W, B, V = RNG.normal(size=(16, 5)), RNG.normal(size=16), RNG.normal(size=(3, 16))
METHODS = ["tropnnc", "neural_path_kmeans", "cup", "neuron_merging", "l1"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dtype", "scale"), [(np.float64, 1e153), (np.float64, 1e306), (np.float32, 1e37)])
def test_extreme_next_layer_scale_is_one_clear_error(method, dtype, scale):
    with pytest.raises(ValueError, match=r"`W_next` \(largest \|entry\| .*\) is too large for float") as info:
        tropref.compress_layer(W.astype(dtype), B.astype(dtype), 4, W_next=(V * scale).astype(dtype), method=method)
    assert "rescale the weights" in str(info.value)
    assert ("or use float64" in str(info.value)) == (dtype == np.float32)


@pytest.mark.parametrize("method", ["tropnnc", "neural_path_kmeans"])
def test_huge_layer_weights_are_one_clear_error(method):
    with pytest.raises(ValueError, match=r"`W` \(largest \|entry\| .*e\+300\) is too large for float64"):
        tropref.compress_layer(W * 1e300, B * 1e300, 4, W_next=V, method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dtype", "scale"), [(np.float64, 1e140), (np.float32, 1e14)])
def test_large_scales_below_the_limit_give_finite_results(method, dtype, scale):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way either
        V_big = (V * scale).astype(dtype)
        res = tropref.compress_layer(W.astype(dtype), B.astype(dtype), 4, W_next=V_big, method=method)
    for a in (res.W, res.b, res.W_next, res.b_next, res.certificate):
        assert np.all(np.isfinite(a))


def _mlp(W2=None):
    rng = np.random.default_rng(0)
    W2 = rng.normal(size=(6, 8)) if W2 is None else W2
    return Network(
        [Dense(rng.normal(size=(8, 3)), name="fc1"), ReLU(), Dense(W2, name="fc2"), ReLU(), Dense(np.ones((2, 6)))]
    )


def test_nan_in_a_hidden_layer_names_the_layer():
    W2 = np.random.default_rng(1).normal(size=(6, 8))
    W2[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"^'fc2' \(layer 2, Dense\): `W` contains NaN or infinite values; fix"):
        compress_network(_mlp(W2), keep=0.5)


def test_overflow_inside_a_network_names_the_layer():
    W2 = np.random.default_rng(1).normal(size=(6, 8)) * 1e200
    with pytest.raises(ValueError, match=r"^'fc1' \(layer 0, Dense\), compressed with the layer it feeds: `W_next`"):
        compress_network(_mlp(W2), keep=0.5)


def test_unknown_method_and_options_are_refused_before_any_early_return():
    dead = np.zeros((4, 3)), -np.ones(4)  # every unit is removable exactly: no method runs
    with pytest.raises(TypeError, match=r"method 'tropnnc' got unknown option\(s\) \['bogus'\]; its options: \["):
        tropref.compress_layer(*dead, 2, bogus=1)
    with pytest.raises(ValueError, match="unknown `method` 'tropnc'"):
        tropref.compress_layer(*dead, 2, method="tropnc")
    with pytest.raises(ValueError, match="unknown `method` 'tropnc'"):
        compress_network(_mlp(), keep=1.0, method="tropnc")
    with pytest.raises(TypeError, match=r"method 'l1' got unknown option\(s\) \['bogus'\]"):
        compress_network(_mlp(), keep=1.0, method="l1", bogus=1)
    compress_network(_mlp(), keep=1.0, method="l1", include_bias=True)  # a real option passes


def test_unknown_method_through_the_torch_adapter():
    torch = pytest.importorskip("torch")
    from tropref.adapters.torch import compress

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="unknown `method` 'tropnc'"):
        compress(model, keep=1.0, method="tropnc")


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("kind", ["matrix", "masked"])
def test_matrix_and_masked_arrays_are_refused(kind):
    if kind == "matrix":
        bad = np.matrix(np.ones((4, 3)))
    else:
        bad = np.ma.masked_array(np.ones((4, 3)), mask=np.eye(4, 3, dtype=bool))
    with pytest.raises(TypeError, match=r"^`W` is a (numpy\.matrix|masked array).*pass "):
        tropref.compress_layer(bad, None, 2)


ONE = {"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.ones(2, np.float32)}
MALFORMED = {
    "no_kind": ({"__arch__": json.dumps([{"name": "fc"}]), **ONE}, "misses the key 'kind'"),
    "invalid_json": ({"__arch__": "[{"}, "'__arch__' entry .* is not valid JSON"),
    "not_a_list": ({"__arch__": json.dumps({"kind": "linear"})}, "must be a list of layer objects"),
    "not_objects": ({"__arch__": json.dumps([1, 2])}, "must be a list of layer objects"),
    "wrong_type": ({"__arch__": json.dumps([{"kind": "maxpool2d", "kernel_size": "x"}])}, "cannot build the layers"),
    "bad_inputs": ({"__arch__": json.dumps([{"kind": "relu", "inputs": 5}])}, "cannot build the layers"),
    "bad_meta": ({"__arch__": json.dumps([{"kind": "relu"}]), "__meta__": "nope"}, "'__meta__' entry .* not valid"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_npz_model_file_is_a_clear_error(tmp_path, case):
    arrays, message = MALFORMED[case]
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ValueError, match=rf"^`model`: .*{message}"):
        load_model(tmp_path / "m.npz")
    with pytest.raises(SystemExit, match=rf"^tropref: `model`: .*{message}"):
        main(["compress", str(tmp_path / "m.npz"), "--subset", "--no-progress"])


def test_npz_of_pickled_objects_or_junk_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "obj.npz", __arch__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled Python objects, which tropref never unpickles"):
        load_model(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(SystemExit, match=r"^tropref: `model`: .* is not a \.npz model file"):
        main(["compress", str(tmp_path / "junk.npz"), "--subset"])
