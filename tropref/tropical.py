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

    Parameters
    ----------
    W : array, shape (n, d) or (n, C, kh, kw)
        Weights, units on axis 0.
    b : array, shape (n,), optional
        Biases.

    Returns
    -------
    array, shape (n, p)
        ``p = d + 1`` (dense) or ``C·kh·kw + 1`` (convolution), in ``W``'s namespace, device
        and dtype.

    Raises
    ------
    TypeError
        When ``W`` and ``b`` come from different array libraries.
    ValueError
        When they live on different devices.

    See Also
    --------
    outgoing_weights : the other half of a layer's canonical form.
    zonotope_generators : the zonotopes built from these vectors.

    References
    ----------
    .. [1] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.

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

    Parameters
    ----------
    W_next : array, shape (m, n), (m, n, kh, kw) or (m, n, s)
        The next layer's weights, units on axis 1.

    Returns
    -------
    array, shape (m, n, s)
        A reshape of ``W_next`` (no copy where the library can avoid one).

    See Also
    --------
    neuron_vectors : the units' input vectors.

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

    Raises
    ------
    ValueError
        When ``V`` reads each unit at several positions (``s > 1``): the pairs are defined for
        a dense next layer; also when ``A`` and ``V`` live on different devices.
    TypeError
        When ``A`` and ``V`` come from different array libraries.

    See Also
    --------
    tropical_block : the block's value through the support functions of these zonotopes.
    tropref.zonotope.hausdorff_exact : the distance the certificate of one output bounds.

    References
    ----------
    .. [1] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.
    .. [2] P. Misiakos, G. Smyrnis, G. Retsinas, P. Maragos, "Neural Network Approximation
           based on Hausdorff distance of Tropical Zonotopes", ICLR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.tropical import zonotope_generators
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> P, Q = zonotope_generators(A, np.array([[2.0, -1.0]]))
    >>> P[0]   # unit 0 read with +2: generator 2 w_0; unit 1 contributes {0}
    array([[2., 4.],
           [0., 0.]])
    >>> Q[0]
    array([[0., 0.],
           [3., 4.]])

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

    Parameters
    ----------
    A : array, shape (n, p)
        Unit input vectors (:func:`neuron_vectors`).
    V : array, shape (m, n) or (m, n, 1)
        Outgoing weights of a dense next layer.
    U : array, shape (N, p)
        Inputs ``u = (x, 1)``, one per row.

    Returns
    -------
    array, shape (m, N)

    Raises
    ------
    TypeError
        When the arrays come from different array libraries.
    ValueError
        When they live on different devices.

    See Also
    --------
    tropical_block : the same values as ``h_P(u) − h_Q(u)``.

    Examples
    --------
    >>> import numpy as np
    >>> from tropref.tropical import relu_block
    >>> A = np.array([[1.0, 0.0], [-1.0, 1.0]])      # relu(x) and relu(1 − x)
    >>> U = np.array([[2.0, 1.0], [0.5, 1.0]])        # x = 2 and x = 0.5
    >>> relu_block(A, np.array([[1.0, -1.0]]), U)
    array([[2., 0.]])
    """
    xp = namespace(A=A, V=V, U=U)
    if V.ndim == 3:
        V = V[:, :, 0]
    hidden = relu(xp.matmul(A, U.T))
    return xp.matmul(V, hidden)


def tropical_block(A: Array, V: Array, U: Array) -> Array:
    """The block's value through support functions: ``v_i(x) = h_{P_i}(u) − h_{Q_i}(u)``.

    Equal to :func:`relu_block` by positive homogeneity of ReLU (``docs/theory.md``).

    Parameters
    ----------
    A, V, U : arrays
        As in :func:`relu_block`.

    Returns
    -------
    array, shape (m, N)

    See Also
    --------
    relu_block : the direct computation.
    zonotope_generators : the generators of ``P_i`` and ``Q_i``.
    tropref.zonotope.support_function : ``h_Z(u) = Σ_j max(0, g_j · u)``.

    References
    ----------
    .. [1] K. Fotopoulos, P. Maragos, P. Misiakos, "TropNNC: Structured Neural Network
           Compression Using Tropical Geometry", arXiv:2409.03945, 2024.
    .. [2] P. Misiakos, G. Smyrnis, G. Retsinas, P. Maragos, "Neural Network Approximation
           based on Hausdorff distance of Tropical Zonotopes", ICLR 2022.

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
