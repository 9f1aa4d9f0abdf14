"""Bad input gets a clear error that names the argument."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest

import tropref


@pytest.fixture
def layer():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=(3, 6)), rng.normal(size=3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["W", "b", "W_next", "b_next"])
def test_non_finite_values_are_named(layer, bad, name):
    arrays = dict(zip(["W", "b", "W_next", "b_next"], (a.copy() for a in layer), strict=True))
    arrays[name].flat[0] = bad
    with pytest.raises(ValueError, match=f"`{name}` contains NaN or infinite"):
        tropref.compress_layer(arrays["W"], arrays["b"], 2, W_next=arrays["W_next"], b_next=arrays["b_next"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(W=np.ones((6,))), "`W` must be"),
        (dict(W=np.ones((6, 2, 3))), "`W` must be"),
        (dict(W=np.ones((0, 4))), "`W` must have at least one unit"),
        (dict(b=np.ones(5)), "`b` must have shape"),
        (dict(W_next=np.ones((3, 5))), "`W_next` must have the 6 units"),
        (dict(W_next=np.ones((3,))), "`W_next` must have the 6 units"),
        (dict(b_next=np.ones(2)), "`b_next` must have shape"),
        (dict(data=np.ones((5, 3))), "`data` must hold sample inputs"),
    ],
)
def test_wrong_shapes_are_named(layer, change, match):
    args = dict(W=layer[0], b=layer[1], W_next=layer[2], b_next=layer[3], data=None)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        tropref.compress_layer(args["W"], args["b"], 2, W_next=args["W_next"], b_next=args["b_next"], data=args["data"])


def test_b_next_without_w_next(layer):
    with pytest.raises(ValueError, match="`b_next` was given without `W_next`"):
        tropref.compress_layer(layer[0], layer[1], 2, b_next=layer[3])


@pytest.mark.parametrize("k", [0, -1, 7, 100])
def test_k_out_of_range(layer, k):
    with pytest.raises(ValueError, match=rf"`k` must satisfy 1 <= k <= 6, got {k}"):
        tropref.compress_layer(layer[0], layer[1], k)


@pytest.mark.parametrize("k", [2.0, "2", True, None])
def test_k_not_an_integer(layer, k):
    with pytest.raises(TypeError, match="`k` must be an integer"):
        tropref.compress_layer(layer[0], layer[1], k)


def test_numpy_integer_k_is_accepted(layer):
    assert tropref.compress_layer(layer[0], layer[1], np.int64(3), seed=0).k == 3


@pytest.mark.parametrize("name", ["W", "b", "W_next", "b_next"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool, np.complex128])
def test_non_real_floating_dtypes_are_named(layer, name, dtype):
    arrays = dict(zip(["W", "b", "W_next", "b_next"], layer, strict=True))
    arrays[name] = arrays[name].astype(dtype)
    with pytest.raises(TypeError, match=f"`{name}` must have a real floating dtype"):
        tropref.compress_layer(arrays["W"], arrays["b"], 2, W_next=arrays["W_next"], b_next=arrays["b_next"])


def test_mixed_float_dtypes_are_named(layer):
    with pytest.raises(TypeError, match="`W_next` has dtype float32"):
        tropref.compress_layer(layer[0], layer[1], 2, W_next=layer[2].astype(np.float32))


def test_non_arrays_are_named(layer):
    with pytest.raises(TypeError, match="`W` must be an array, got list"):
        tropref.compress_layer(layer[0].tolist(), layer[1], 2)
    with pytest.raises(TypeError, match="`W` must have a real floating dtype"):
        tropref.compress_layer(np.array([["a", "b"]]), None, 1)


def test_mixed_namespaces_are_named(layer):
    with pytest.raises(TypeError, match="different array libraries"):
        tropref.compress_layer(layer[0], array_api_strict.asarray(layer[1]), 2)


def test_mixed_devices_are_named(layer):
    W = array_api_strict.asarray(layer[0])
    b = array_api_strict.asarray(layer[1], device=array_api_strict.Device("device1"))
    with pytest.raises(ValueError, match="`b` is on device"):
        tropref.compress_layer(W, b, 2)


def test_unknown_method(layer):
    with pytest.raises(ValueError, match="unknown `method` 'kmeans'"):
        tropref.compress_layer(layer[0], layer[1], 2, method="kmeans")


def test_unknown_option(layer):
    with pytest.raises(TypeError, match="bogus"):
        tropref.compress_layer(layer[0], layer[1], 2, bogus=1)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("objective", "points"),
        ("refine", "lloyd"),
        ("out_norm", "l3"),
        ("variant", "fast"),
        ("cluster", "dbscan"),
        ("representative", "median"),
        ("fold", "ones"),
    ],
)
def test_bad_tropnnc_options(layer, option, value):
    with pytest.raises(ValueError, match=f"unknown `{option}`"):
        tropref.compress_layer(layer[0], layer[1], 2, W_next=layer[2], **{option: value})


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_bad_input_ratio(layer, value):
    with pytest.raises(ValueError, match="`input_ratio`"):
        tropref.compress_layer(layer[0], layer[1], 2, W_next=layer[2], input_ratio=value)


def test_zonotope_kmeans_needs_a_single_output(layer):
    with pytest.raises(ValueError, match="'zonotope_kmeans' is for a single output"):
        tropref.compress_layer(layer[0], layer[1], 2, W_next=layer[2], method="zonotope_kmeans")


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_bad_seed(layer, seed, error):
    with pytest.raises(error, match="`seed`"):
        tropref.compress_layer(layer[0], layer[1], 2, seed=seed)


def test_half_precision_is_refused_by_name(layer):
    with pytest.raises(TypeError, match="`W` must have a real floating dtype \\(float32 or float64\\), got float16"):
        tropref.compress_layer(layer[0].astype(np.float16), None, 2)


def test_fold_constants_must_be_a_bool(layer):
    with pytest.raises(TypeError, match="`fold_constants` must be True or False"):
        tropref.compress_layer(layer[0], layer[1], 2, fold_constants="no")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize(("scale", "name"), [(1e-25, "W"), (1e25, "W_next")])
def test_norms_that_underflow_or_overflow_are_named(layer, scale, name):
    W, V = layer[0].astype(np.float32), layer[2].astype(np.float32)
    if name == "W":
        W = W * np.float32(scale)
    else:
        W, V = W * np.float32(1e15), V * np.float32(scale)  # masses α_j ‖V_j‖ overflow
    # overflow is caught before the method by the scale check (issue 16), underflow by the method
    message = "has units whose norms over- or underflow" if name == "W" else r"\(largest \|entry\| .*\) is too large"
    with pytest.raises(ValueError, match=f"`{name}` {message}"):
        tropref.compress_layer(W, None, 6, W_next=V)


def test_pytorch_parameters_that_track_gradients_are_accepted():
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(3, 6)
    res = tropref.compress_layer(lin.weight, lin.bias, 3, seed=0)
    assert res.W.shape == (3, 3)
