"""tropref: the reference implementation of TropNNC.

Data-free structured compression of ReLU networks through tropical geometry: units whose
zonotope generators are close are merged, and every compression comes with a certificate
``|Δ output_i(x)| <= certificate_i · ‖(x, 1)‖``.

Main entry points
-----------------
compress_layer
    One dense or convolutional ReLU layer, on any array-API array (NumPy, CuPy, ...).

Modules: :mod:`tropref.tropical` (layer <-> zonotopes), :mod:`tropref.zonotope`
(support functions, exact Hausdorff oracles), :mod:`tropref.cluster` (weighted K-means),
:mod:`tropref.methods` (TropNNC, the predecessor's methods, baselines).
"""

from .compress import LayerCompression, compress_layer
from .methods import METHODS

__version__ = "0.1.0"

__all__ = ["compress_layer", "LayerCompression", "METHODS", "__version__"]
