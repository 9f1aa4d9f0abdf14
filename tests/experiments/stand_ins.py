"""Tiny synthetic models and stand-in data the tests of tropref.experiments share."""

from __future__ import annotations

import numpy as np

from tropref.network import BatchNorm, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU, forward


def tiny_mlp(seed=0, dup=True):
    """An MLP whose second half of hidden units duplicates the first: merging is exact at 50%."""
    rng = np.random.default_rng(seed)
    W1 = rng.normal(size=(4, 6)).astype(np.float32)
    b1 = rng.normal(size=4).astype(np.float32)
    if dup:
        W1, b1 = np.concatenate([W1, 2 * W1]), np.concatenate([b1, 2 * b1])
    W2 = rng.normal(size=(3, W1.shape[0])).astype(np.float32)
    return Network(
        [Flatten(), Dense(W1, b1, name="fc1"), ReLU(), Dense(W2, np.zeros(3, np.float32), name="fc2")], (1, 2, 3)
    )


def tiny_cnn(seed=1):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)
    return Network(
        [
            Conv2d(f(4, 3, 3, 3), f(4), padding=1, name="conv1"),
            BatchNorm(f(4), np.abs(f(4)) + 0.5, f(4), f(4), name="bn1"),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Dense(f(6, 4 * 4 * 4), f(6), name="fc1"),
            ReLU(),
            Dense(f(5, 6), f(5), name="fc2"),
        ],
        (3, 8, 8),
    )


def stand_in(net, n=60, seed=2):
    """Random inputs labelled by the network itself (accuracy 1 before compression)."""
    rng = np.random.default_rng(seed)
    x = rng.random(size=(n, *net.input_shape)).astype(np.float32)
    return x, np.argmax(np.asarray(forward(net, x)), axis=1)
