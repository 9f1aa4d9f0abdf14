"""The last step both adapters' ``compress`` share: the compressed network written back as
a model of the framework, with the times of reading and writing added to the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tropref.network import Network, NetworkReport

__all__ = ["write_back"]


def write_back(
    new: Network, report: NetworkReport, write: Callable[[Network], Any], t0: float, t_export: float
) -> tuple[Any, NetworkReport]:
    """``write(new)`` (the framework's model of the compressed network) and the report with
    the adapter's steps: ``export`` (reading the model, ``t_export`` seconds) before the
    core's steps, ``import`` (``write``) after them, and ``time_s`` counted from ``t0`` (a
    ``time.perf_counter()`` reading taken when the adapter was called).

    Examples
    --------
    >>> import time, numpy as np
    >>> from tropref.network import Dense, Network, ReLU
    >>> from tropref import compress_network
    >>> rng = np.random.default_rng(0)
    >>> t0 = time.perf_counter()
    >>> net = Network([Dense(rng.normal(size=(8, 3))), ReLU(), Dense(rng.normal(size=(2, 8)))])
    >>> new, report = compress_network(net, 0.5, method="l1", progress=False)
    >>> same, report = write_back(new, report, lambda n: n, t0, time.perf_counter() - t0)
    >>> same is new, list(report.steps)[0], list(report.steps)[-1]
    (True, 'export', 'import')
    """
    t1 = time.perf_counter()
    out = write(new)
    steps = {"export": t_export, **report.steps, "import": time.perf_counter() - t1}
    return out, replace(report, steps=steps, time_s=time.perf_counter() - t0)
