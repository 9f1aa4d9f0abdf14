"""Reading ``keep`` and ``skip``: fractions, widths and layer names, each checked with a
message that names the argument.

Shared by the keep rules of the hidden layers (:mod:`~tropref.network.widths`), of the
coupled groups (:mod:`~tropref.network.coupled`) and the walk's ``skip``
(:mod:`~tropref.network.compress`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .graph import Network

__all__ = ["fraction", "units_kept", "k_of", "resolve_layers"]


def fraction(q: Any, what: str) -> float:
    """``q`` as a fraction in (0, 1] (``TypeError``/``ValueError`` naming ``what`` otherwise).

    Examples
    --------
    >>> fraction(0.25, "keep")
    0.25
    >>> fraction(1.5, "keep")
    Traceback (most recent call last):
    ...
    ValueError: `keep` must be a fraction in (0, 1], got 1.5
    """
    if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"`{what}` must be a fraction in (0, 1], a mapping layer -> k, or a tropref.Budget; got {type(q).__name__}"
        )
    q = float(q)
    if not 0 < q <= 1:
        raise ValueError(f"`{what}` must be a fraction in (0, 1], got {q}")
    return q


def units_kept(q: float, n: int) -> int:
    """The units a fraction ``q`` keeps of ``n``: ``round(q n)`` (halves up), at least 1, at most ``n``.

    Examples
    --------
    >>> units_kept(0.5, 5), units_kept(0.01, 5), units_kept(1.0, 5)
    (3, 1, 5)
    """
    return max(1, min(n, math.floor(q * n + 0.5)))


def k_of(value: Any, n: int, what: str) -> int:
    """A width ``1 <= k <= n`` from an int or a fraction of ``n`` (``ValueError`` naming ``what``).

    Examples
    --------
    >>> k_of(3, 8, "keep['fc1']"), k_of(0.5, 8, "keep['fc1']")
    (3, 4)
    >>> k_of(9, 8, "keep['fc1']")
    Traceback (most recent call last):
    ...
    ValueError: `keep['fc1']` must be an integer 1 <= k <= 8 (or a fraction), got 9
    """
    if isinstance(value, (float, np.floating)):
        return units_kept(fraction(value, what), n)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= n:
        raise ValueError(f"`{what}` must be an integer 1 <= k <= {n} (or a fraction), got {value!r}")
    return int(value)


def resolve_layers(net: Network, keys: Sequence[int | str], what: str) -> set[int]:
    """Indices in ``net`` of the layers named in ``keys`` (indices, negative ones too, or
    names); ``ValueError`` naming ``what`` for a key that is neither.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.network import Network, Dense, ReLU
    >>> net = Network([Dense(np.ones((4, 3)), name="fc1"), ReLU(), Dense(np.ones((2, 4)), name="out")])
    >>> sorted(resolve_layers(net, ["fc1", -1], "skip")), resolve_layers(net, 1, "skip")
    ([0, 2], {1})
    """
    if isinstance(keys, (str, int)):
        keys = [keys]
    names = {getattr(l, "name", None): i for i, l in enumerate(net.layers)}
    out = set()
    for key in keys:
        if isinstance(key, str):
            if key not in names:
                raise ValueError(f"`{what}` names layer {key!r}, which is not in the network")
            out.add(names[key])
        elif (
            isinstance(key, (int, np.integer))
            and not isinstance(key, bool)
            and -len(net.layers) <= key < len(net.layers)
        ):
            out.add(int(key) % len(net.layers))
        else:
            raise ValueError(f"`{what}` holds {key!r}, not a layer index or name of the network")
    return out
