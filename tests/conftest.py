"""Shared fixtures: the array backends every core test runs on, and Hypothesis profiles.

``backend`` (and its shortcut ``xp``) runs a test on
- NumPy;
- array-api-strict, which refuses everything the standard does not promise;
- array-api-strict on its non-default device ``Device("device1")``, which raises on any
  mix of devices, so GPU placement bugs show up on the CPU;
- CuPy, only when a GPU is present (importing CuPy can succeed without one).
"""

from __future__ import annotations

import os
import tempfile

# Before any test module can import Keras: the PyTorch backend, and a throw-away KERAS_HOME
# so that Keras's first import writes its keras.json there, not in the user's home.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tropref-keras-"))
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tropref._array import to_numpy

settings.register_profile(
    "dev",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "tropref-ci",
    parent=settings.get_profile("ci"),
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("dev"), max_examples=500)
# TROPREF_HYPOTHESIS=thorough runs 500 examples per property, for a deeper search by hand.
settings.load_profile(os.environ.get("TROPREF_HYPOTHESIS") or ("tropref-ci" if os.environ.get("CI") else "dev"))


@dataclass(frozen=True)
class Backend:
    """One array library on one device, with host <-> backend conversions for tests."""

    name: str
    xp: Any
    device: Any

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        host = np.asarray(a)
        if dtype is None:
            dtype = str(host.dtype)
        return self.xp.asarray(host.astype(dtype), dtype=getattr(self.xp, dtype), device=self.device)

    def numpy(self, a: Any) -> np.ndarray:
        return to_numpy(a)


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return False


def _make_backend(name: str) -> Backend:
    if name == "numpy":
        import array_api_compat.numpy as xp

        return Backend(name, xp, "cpu")
    if name.startswith("strict"):
        import array_api_strict as xp

        dev = xp.Device("device1") if name.endswith("device1") else xp.Device("CPU_DEVICE")
        return Backend(name, xp, dev)
    if name == "cupy":
        import array_api_compat.cupy as xp
        import cupy

        return Backend(name, xp, cupy.cuda.Device(0))
    raise ValueError(name)


BACKEND_NAMES = ["numpy", "strict", "strict-device1"] + (["cupy"] if _gpu_available() else [])


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    return _make_backend(request.param)


@pytest.fixture
def xp(backend: Backend) -> Any:
    return backend.xp


@pytest.fixture
def all_backends() -> list[Backend]:
    """Every available backend, for tests that compare backends with each other."""
    return [_make_backend(n) for n in BACKEND_NAMES]
