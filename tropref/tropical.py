"""The tropical objects of a ReLU layer: neuron vectors, outgoing weights, zonotope pairs.

A layer ``z = W x + b`` followed by ReLU and read by a next layer ``V`` computes, at its
output ``i``,

    v_i(x) = Σ_j V[i, j] max(0, w_j · u),        u = (x, 1),  w_j = (W[j], b[j]).

Splitting the units by the sign of ``V[i, j]`` writes this as a difference of two support
functions, ``v_i = h_{P_i}(u) − h_{Q_i}(u)``, of the zonotopes

    P_i = Σ_{V[i,j] > 0} [0, |V[i,j]| w_j],     Q_i = Σ_{V[i,j] < 0} [0, |V[i,j]| w_j]

(``docs/theory.md``, section 1). This module builds those objects from weight arrays; the
canonical forms it defines (``A`` for the units' input vectors, ``V`` for their outgoing
weights) are what every compression method works on.

Functions
---------
neuron_vectors
    ``A`` of shape ``(n, p)``: each unit's weights, flattened, then its bias.
outgoing_weights
    ``V`` of shape ``(m, n, s)`` from a dense, convolutional or flatten-block next layer.
zonotope_generators
    Generators of every ``(P_i, Q_i)``.
relu_block, tropical_block
    The block's value computed directly, and through support functions.
"""

from __future__ import annotations

from ._array import Array, device, namespace, relu
from .zonotope import support_function

__all__ = [
    "neuron_vectors",
    "outgoing_weights",
    "zonotope_generators",
    "relu_block",
    "tropical_block",
]


def neuron_vectors(W: Array, b: Array | None = None) -> Array:
    """Input vectors ``w_j = (W[j].ravel(), b[j])`` of the units, shape ``(n, p)``.

    ``W`` has the units on axis 0: ``(n, d)`` dense or ``(n, C, kh, kw)`` convolution
    (each output channel is one unit; its "input" is a patch of ``C * kh * kw`` values).
    ``b=None`` means no bias (a zero last column).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.tropical import neuron_vectors
    >>> neuron_vectors(np.ones((2, 3)), np.array([5.0, 6.0]))
    array([[1., 1., 1., 5.],
           [1., 1., 1., 6.]])
    """
    xp = namespace(W=W, b=b)
    n = W.shape[0]
    flat = xp.reshape(W, (n, -1))
    bias = xp.zeros((n,), dtype=W.dtype, device=device(W)) if b is None else b
    return xp.concat([flat, xp.reshape(bias, (n, 1))], axis=1)


def outgoing_weights(W_next: Array) -> Array:
    """Outgoing weights ``V`` of shape ``(m, n, s)``: how the next layer reads each unit.

    - ``(m, n)`` dense next layer: ``s = 1``;
    - ``(m, n, kh, kw)`` next convolution: ``s = kh * kw`` kernel positions;
    - ``(m, n, s)`` the columns each channel owns after a flatten, already grouped.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.tropical import outgoing_weights
    >>> outgoing_weights(np.zeros((4, 3, 2, 2))).shape
    (4, 3, 4)
    """
    xp = namespace(W_next=W_next)
    m, n = W_next.shape[0], W_next.shape[1]
    return xp.reshape(W_next, (m, n, -1))


def zonotope_generators(A: Array, V: Array) -> tuple[Array, Array]:
    """Generators of the zonotope pairs ``(P_i, Q_i)`` of every output ``i``.

    ``P[i, j] = max(V[i, j], 0) w_j`` and ``Q[i, j] = max(-V[i, j], 0) w_j``: a unit with
    the other sign contributes the zero generator, i.e. the point ``{0}``, which leaves a
    Minkowski sum unchanged.

    Parameters
    ----------
    A : array, shape (n, p)
        Unit input vectors (:func:`neuron_vectors`).
    V : array, shape (m, n) or (m, n, 1)
        Outgoing weights of a dense next layer.

    Returns
    -------
    P, Q : arrays, shape (m, n, p)
    """
    namespace(A=A, V=V)  # one library, one device
    if V.ndim == 3:
        if V.shape[2] != 1:
            raise ValueError("zonotope pairs are defined for a dense next layer (s = 1)")
        V = V[:, :, 0]
    pos = relu(V)[:, :, None]
    neg = relu(-V)[:, :, None]
    return pos * A[None, :, :], neg * A[None, :, :]


def relu_block(A: Array, V: Array, U: Array) -> Array:
    """The block's value computed directly: ``v(x) = V relu(A u)`` for each row ``u`` of ``U``.

    Returns an array of shape ``(m, N)``.
    """
    xp = namespace(A=A, V=V, U=U)
    if V.ndim == 3:
        V = V[:, :, 0]
    hidden = relu(xp.matmul(A, U.T))
    return xp.matmul(V, hidden)


def tropical_block(A: Array, V: Array, U: Array) -> Array:
    """The block's value through support functions: ``v_i(x) = h_{P_i}(u) − h_{Q_i}(u)``.

    Equal to :func:`relu_block` by positive homogeneity of ReLU (``docs/theory.md``).

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.tropical import relu_block, tropical_block
    >>> rng = np.random.default_rng(0)
    >>> A, V, U = rng.normal(size=(5, 3)), rng.normal(size=(2, 5)), rng.normal(size=(4, 3))
    >>> bool(np.allclose(relu_block(A, V, U), tropical_block(A, V, U)))
    True
    """
    P, Q = zonotope_generators(A, V)
    return support_function(P, U) - support_function(Q, U)
