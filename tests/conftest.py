"""Shared fixtures: the array backends every core test runs on, and Hypothesis profiles.

``backend`` runs a test on each of

- ``numpy``: NumPy through array-api-compat;
- ``numpy-readonly``: NumPy arrays with ``writeable=False``, so that any in-place write to
  an input (or to a view of one) raises: the core promises never to modify its inputs;
- ``strict``: array-api-strict, which refuses everything the standard does not promise;
- ``strict-device1``: array-api-strict on its non-default device ``Device("device1")``,
  which raises on any mix of devices and on any implicit conversion to NumPy, so GPU
  placement bugs and unmarked trips to the host show up on the CPU;
- ``torch``: PyTorch tensors, which the core accepts directly (when torch is installed);
- ``cupy``: only when a GPU is present (importing CuPy can succeed without one).

Both array-api-strict backends run with ``data_dependent_shapes=False`` and
``boolean_indexing=False`` (set for the whole session below), as the core claims in
``tropref/_array.py``: the GPU and lazy backends need output shapes known before the data.
The core decides what depends on data on the host, and goes there only explicitly through
``tropref._array.to_numpy`` (CONTRIBUTING.md lists those places); ``strict-device1``
enforces that, since it refuses ``numpy.asarray`` on its arrays.

Every conversion back to NumPy in a test goes through :meth:`Backend.numpy`, which first
asserts that the array kept the backend's array type, namespace and device (and its dtype
when one is named), so results are checked for those as well as for their values.
"""

from __future__ import annotations

import os
import tempfile

# Before any test module can import Keras: the PyTorch backend, and a throw-away KERAS_HOME
# so that Keras's first import writes its keras.json there, not in the user's home.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tropref-keras-"))
import importlib.util
from dataclasses import dataclass
from typing import Any

import array_api_strict
import numpy as np
import pytest
from array_api_compat import array_namespace
from hypothesis import HealthCheck, settings

from tropref._array import device, to_numpy

# --- Hypothesis ------------------------------------------------------------------------------
# dev: the default here; tropref-ci: CI (CI=true), derandomized so a CI failure reproduces;
# thorough: TROPREF_HYPOTHESIS=thorough, 500 examples per property, for a deeper search by hand.
_common = {
    "deadline": None,
    "max_examples": 30,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("dev", **_common)
settings.register_profile("tropref-ci", parent=settings.get_profile("ci"), **_common)
settings.register_profile("thorough", parent=settings.get_profile("dev"), max_examples=500)
settings.load_profile(os.environ.get("TROPREF_HYPOTHESIS") or ("tropref-ci" if os.environ.get("CI") else "dev"))

# --- array-api-strict at its strictest, for the whole session ---------------------------------
STRICT_FLAGS = {"data_dependent_shapes": False, "boolean_indexing": False}
array_api_strict.set_array_api_strict_flags(**STRICT_FLAGS)


@pytest.fixture(autouse=True, scope="session")
def _strict_flags_stay_set():
    """Fail loudly if anything (a test, a plugin) relaxed the strict flags during the run."""
    yield
    flags = array_api_strict.get_array_api_strict_flags()
    assert {k: flags[k] for k in STRICT_FLAGS} == STRICT_FLAGS


# --- backends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One array library on one device, with host <-> backend conversions for tests."""

    name: str
    xp: Any
    device: Any
    read_only: bool = False

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """``a`` (host values) as an array of this backend, in ``dtype`` (default: ``a``'s)."""
        host = np.asarray(a)
        if dtype is None:
            dtype = str(host.dtype)
        if self.read_only:
            out = np.array(host, dtype=dtype)
            out.flags.writeable = False
            return out
        return self.xp.asarray(host.astype(dtype), dtype=getattr(self.xp, dtype), device=self.device)

    def check(self, a: Any, dtype: str | None = None) -> None:
        """Assert that ``a`` is an array of this backend, on its device (and of ``dtype``)."""
        like = self.asarray(np.zeros(1))
        assert type(a) is type(like), f"{self.name}: got a {type(a).__module__}.{type(a).__name__}"
        assert array_namespace(a) is array_namespace(like), f"{self.name}: wrong namespace"
        assert device(a) == self.device, f"{self.name}: array on {device(a)!r}, not {self.device!r}"
        if dtype is not None:
            assert a.dtype == getattr(self.xp, dtype), f"{self.name}: dtype {a.dtype}, not {dtype}"

    def numpy(self, a: Any, dtype: str | None = None) -> np.ndarray:
        """``a`` copied to the host, after :meth:`check` (so results keep type and device)."""
        self.check(a, dtype)
        return to_numpy(a)


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _make_backend(name: str) -> Backend:
    if name.startswith("numpy"):
        import array_api_compat.numpy as xp

        return Backend(name, xp, "cpu", read_only=name.endswith("readonly"))
    if name.startswith("strict"):
        xp = array_api_strict
        dev = xp.Device("device1") if name.endswith("device1") else xp.Device("CPU_DEVICE")
        return Backend(name, xp, dev)
    if name == "torch":
        import array_api_compat.torch as xp
        import torch

        return Backend(name, xp, torch.device("cpu"))
    if name == "cupy":
        import array_api_compat.cupy as xp
        import cupy

        return Backend(name, xp, cupy.cuda.Device(0))
    raise ValueError(name)


BACKEND_NAMES = ["numpy", "numpy-readonly", "strict", "strict-device1"]
if importlib.util.find_spec("torch") is not None:  # CI installs torch: there it always runs
    BACKEND_NAMES.append("torch")
if _gpu_available():
    BACKEND_NAMES.append("cupy")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    return _make_backend(request.param)


@pytest.fixture
def all_backends() -> list[Backend]:
    """Every available backend, for tests that compare backends with each other."""
    return [_make_backend(n) for n in BACKEND_NAMES]
