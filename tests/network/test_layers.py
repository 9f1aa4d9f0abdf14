"""The layer types (tropref.network.layers)."""

from __future__ import annotations

import numpy as np
import pytest

from tropref.network import (
    Conv2d,
    Dense,
    Network,
    ReLU,
    forward,
)


def test_layers_validate_and_name_themselves():
    with pytest.raises(ValueError, match="'c1'"):
        Conv2d(np.zeros((2, 3)), name="c1")
    with pytest.raises(TypeError, match="layer 1"):
        Network([ReLU(), "relu"])
    with pytest.raises(ValueError, match=r"'fc'.*Flatten"):
        forward(Network([Dense(np.zeros((2, 3)), name="fc")]), np.zeros((1, 3, 2, 2)))
