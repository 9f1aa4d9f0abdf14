"""The walk's progress lines: where they go, and the line for each compressed layer.

Shared by the walk over the hidden layers and over the coupled groups
(:mod:`~tropref.network.compress`); not promised to users, who pass ``progress=`` to
:func:`tropref.compress_network`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["progress_sink", "say_layer"]


def progress_sink(
    progress: bool | Callable[[str], None] | None, t0: float, after: float = 2.0, model: str | None = None
) -> Callable[[str], None]:
    """The line sink: a callable, stderr, nothing, or (None) stderr once ``after`` seconds
    have passed; with ``model``, every line's ``[tropref]`` reads ``[tropref <model>]``.

    Examples
    --------
    >>> import time
    >>> lines = []
    >>> say = progress_sink(lines.append, time.perf_counter(), model="LeNet")
    >>> say("[tropref] 1/2 fc1: 300 -> 150 units")
    >>> lines
    ['[tropref LeNet] 1/2 fc1: 300 -> 150 units']
    >>> progress_sink(False, time.perf_counter())("dropped") is None
    True
    """
    if not progress and progress is not None:
        return lambda line: None
    if callable(progress):
        sink = progress
    elif progress is None:
        sink = lambda line: print(line, file=sys.stderr, flush=True) if time.perf_counter() - t0 > after else None  # noqa: E731
    else:
        sink = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if model is None:
        return sink
    return lambda line: sink(line.replace("[tropref]", f"[tropref {model}]", 1))


def say_layer(
    say: Callable[[str], None],
    count: int,
    total: int,
    label: str,
    before: int,
    after: int,
    cmax: float | None,
    seconds: float,
    eta: float | None,
) -> None:
    """One progress line per compressed layer (walks over chains and graphs alike).

    Examples
    --------
    >>> say_layer(print, 1, 2, "fc1", 300, 150, 0.0123, 0.5, 1.2)
    [tropref] 1/2 fc1: 300 -> 150 units, certificate 0.0123, 0.50 s; about 1 s left
    >>> say_layer(print, 2, 2, "fc2", 100, 50, None, 0.25, None)
    [tropref] 2/2 fc2: 100 -> 50 units, certificate -, 0.25 s
    """
    cert = "-" if cmax is None else f"{cmax:.3g}"
    left = "" if eta is None else f"; about {eta:.0f} s left"
    say(f"[tropref] {count}/{total} {label}: {before} -> {after} units, certificate {cert}, {seconds:.2f} s{left}")
