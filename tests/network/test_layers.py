"""The layer types (tropref.network.layers)."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from tropref.network import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Dropout,
    Identity,
    MaxPool2d,
    Network,
    ReLU,
    Softmax,
    forward,
)
from tropref.network.forward import apply_layer, apply_node
from tropref.network.layers import ARRAY_FIELDS, JUNCTIONS, LAYER_TYPES, Layer


def test_layers_validate_and_name_themselves():
    with pytest.raises(ValueError, match="'c1'"):
        Conv2d(np.zeros((2, 3)), name="c1")
    with pytest.raises(TypeError, match="layer 1"):
        Network([ReLU(), "relu"])
    with pytest.raises(ValueError, match=r"'fc'.*Flatten"):
        forward(Network([Dense(np.zeros((2, 3)), name="fc")]), np.zeros((1, 3, 2, 2)))


def test_batchnorm_is_the_affine_map_of_its_statistics_per_channel():
    rng = np.random.default_rng(0)
    mean, var, weight, bias = rng.normal(size=3), rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=3)
    bn = BatchNorm(mean, var, weight, bias, eps=1e-3)
    x = rng.normal(size=(4, 3, 2, 2))
    per_channel = lambda v: v[None, :, None, None]
    expected = (x - per_channel(mean)) / np.sqrt(per_channel(var) + 1e-3) * per_channel(weight) + per_channel(bias)
    np.testing.assert_allclose(apply_layer(bn, x), expected, atol=1e-12)
    np.testing.assert_allclose(bn.scale, weight / np.sqrt(var + 1e-3))
    np.testing.assert_allclose(bn.shift, bias - mean * bn.scale)
    assert bn.channels == 3
    plain = BatchNorm(mean, var)  # no affine part: weight one, bias zero
    np.testing.assert_allclose(plain.scale, 1 / np.sqrt(var + 1e-5))
    np.testing.assert_allclose(plain.shift, -mean * plain.scale)
    with pytest.raises(ValueError, match="`var`"):
        BatchNorm(mean, var[:2], name="bn")


def test_dropout_and_identity_pass_their_input_and_softmax_normalises():
    x = np.random.default_rng(1).normal(size=(5, 4))
    np.testing.assert_array_equal(apply_layer(Dropout(0.5), x), x)
    np.testing.assert_array_equal(apply_layer(Identity(), x), x)
    p = apply_layer(Softmax(), x)
    np.testing.assert_allclose(p, np.exp(x) / np.exp(x).sum(axis=1, keepdims=True))
    assert apply_layer(Softmax(), np.array([[1000.0, 0.0]]))[0, 0] == pytest.approx(1.0)  # no overflow


def test_junctions_sum_or_join_their_inputs():
    a, b = np.arange(12.0).reshape(1, 3, 2, 2), -np.ones((1, 3, 2, 2))
    np.testing.assert_array_equal(apply_node(Add(), [a, b]), a + b)
    np.testing.assert_array_equal(apply_node(Concat(), [a, b[:, :1]]), np.concatenate([a, b[:, :1]], axis=1))
    assert JUNCTIONS == (Add, Concat)


def test_pooling_layers_normalise_their_windows():
    pool = MaxPool2d(2)
    assert (pool.kernel, pool.stride, pool.padding, pool.padded) == ((2, 2), (2, 2), (0, 0, 0, 0), False)
    avg = AvgPool2d((3, 2), 1, 1)
    assert (avg.kernel, avg.stride, avg.padding, avg.padded) == ((3, 2), (1, 1), (1, 1, 1, 1), True)
    assert avg.count_include_pad
    with pytest.raises(ValueError, match="kernel"):
        MaxPool2d((2, 2, 2), name="p")


def test_layer_types_and_array_fields_describe_every_layer():
    assert set(typing.get_args(Layer)) == set(LAYER_TYPES)
    array_fields = {
        f.name for cls in LAYER_TYPES for f in dataclasses.fields(cls) if "Array" in str(f.type)
    }  # the fields annotated as arrays, read from the classes themselves
    assert array_fields == set(ARRAY_FIELDS)
    assert all(dataclasses.is_dataclass(cls) for cls in LAYER_TYPES)
