"""Host randomness of the core: a concrete seed for every result, and the generator made from it.

Randomness is drawn on the host from ``numpy.random.default_rng(seed)`` and moved to the
device, so one seed gives the same result on every backend; results record the concrete
seed, so an unseeded run is reproducible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_rng", "resolve_seed"]


def resolve_seed(seed: int | np.integer | None) -> int:
    """A concrete integer seed: ``seed`` itself, or a fresh one drawn from OS entropy.

    Recording the concrete seed in every result makes an unseeded run reproducible.

    Parameters
    ----------
    seed : int or None

    Returns
    -------
    int
        A non-negative integer.

    Raises
    ------
    TypeError
        When ``seed`` is not an integer or None (a bool, a float, a string).
    ValueError
        When ``seed`` is negative.

    See Also
    --------
    make_rng : the generator made from it.

    Examples
    --------
    >>> from tropref._seeds import resolve_seed
    >>> resolve_seed(5)
    5
    >>> isinstance(resolve_seed(None), int)
    True
    """
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an integer or None, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"`seed` must be non-negative, got {seed}")
    return int(seed)


def make_rng(seed: int | np.integer | None) -> np.random.Generator:
    """Host random generator for ``seed`` (see :func:`resolve_seed`).

    Every random choice of the core is drawn on the host from this generator and then moved
    to the device, so one seed gives the same result on every backend.

    Parameters
    ----------
    seed : int or None

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    TypeError, ValueError
        As :func:`resolve_seed`.

    Examples
    --------
    >>> from tropref._seeds import make_rng
    >>> int(make_rng(3).integers(1000)) == int(make_rng(3).integers(1000))
    True
    """
    return np.random.default_rng(resolve_seed(seed))
