"""Small networks the tests of tropref.network share: an MLP and a conv chain, with duplicated units
(or positively scaled ones) where merging them is exact by Proposition F."""

from __future__ import annotations

import numpy as np

from tropref._array import to_numpy
from tropref.network import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    MaxPool2d,
    Network,
    ReLU,
)


def batchnorm(C: int, rng: np.random.Generator, positive: bool = True) -> BatchNorm:
    w = rng.uniform(0.5, 1.5, size=C) if positive else rng.normal(size=C)
    return BatchNorm(rng.normal(size=C), rng.uniform(0.5, 2.0, size=C), w, rng.normal(size=C))


def duplicated(bn: BatchNorm) -> BatchNorm:
    return BatchNorm(*(np.concatenate([getattr(bn, f)] * 2) for f in ("mean", "var", "weight", "bias")), eps=bn.eps)


def mlp(rng: np.random.Generator, dup: bool = False) -> Network:
    W1, b1 = rng.normal(size=(6, 5)), rng.normal(size=6)
    if dup:  # units 6..11 are positive multiples of units 0..5: merging them is exact
        W1, b1 = np.concatenate([W1, 2.5 * W1]), np.concatenate([b1, 2.5 * b1])
    n1 = W1.shape[0]
    return Network(
        [
            Dense(W1, b1, name="fc1"),
            ReLU(),
            Dropout(0.3),
            Dense(rng.normal(size=(8, n1)), rng.normal(size=8), name="fc2"),
            ReLU(),
            Dense(rng.normal(size=(3, 8)), rng.normal(size=3), name="out"),
        ],
        input_shape=(5,),
    )


def convnet(
    rng: np.random.Generator, order: str = "channels_first", next_padding: int = 1, pool: str = "max", dup: bool = True
) -> Network:
    """Conv -> BN -> ReLU -> BN -> pool -> Conv -> ReLU -> pool -> Flatten -> Dense -> ReLU -> Dense.

    With ``dup`` the first convolution's channels 3..5 duplicate channels 0..2, and both
    BatchNorms are duplicated with them, so merging to 3 channels is exact.
    """
    C = 3
    F, b = rng.normal(size=(C, 2, 3, 3)), rng.normal(size=C)
    bn_pre, bn_post = batchnorm(C, rng), batchnorm(C, rng)
    if dup:
        F, b, bn_pre, bn_post = np.concatenate([F, F]), np.concatenate([b, b]), duplicated(bn_pre), duplicated(bn_post)
    n = F.shape[0]
    Pool = MaxPool2d if pool == "max" else AvgPool2d
    side = 4 if next_padding else 2  # 8x8 -> pool 4x4 -> conv (pad 1: 4x4, pad 0: 2x2)
    spatial = side // 2  # both pools halve the side
    return Network(
        [
            Conv2d(F, b, padding=1, name="conv1"),
            bn_pre,
            ReLU(),
            bn_post,
            Pool(2),
            Conv2d(rng.normal(size=(4, n, 3, 3)), rng.normal(size=4), padding=next_padding, name="conv2"),
            ReLU(),
            Pool(2),
            Dropout(0.1),
            Flatten(order),
            Dense(rng.normal(size=(5, 4 * spatial * spatial)), rng.normal(size=5), name="fc"),
            ReLU(),
            Dense(rng.normal(size=(2, 5)), rng.normal(size=2), name="out"),
        ],
        input_shape=(2, 8, 8),
    )


def arrays_of(net: Network) -> list[np.ndarray]:
    return [
        np.array(to_numpy(getattr(l, f)))
        for l in net.layers
        for f in ("W", "b", "mean", "var", "weight", "bias")
        if getattr(l, f, None) is not None
    ]
