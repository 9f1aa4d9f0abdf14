"""tropref: the reference implementation of TropNNC.

Data-free structured compression of ReLU networks through tropical geometry: units whose
zonotope generators are close are merged, and every compression comes with a certificate
``|Δ output_i(x)| <= certificate_i · ‖(x, 1)‖``.

Main entry points
-----------------
compress_layer
    One dense or convolutional ReLU layer, on any array-API array (NumPy, CuPy, ...).
compress_network
    A network, chain or graph (:class:`Network`), front to back, with per-layer or global
    (:class:`Budget`) widths, a report and a network certificate.
certify
    A sound bound on the change ``|f(x′) − f̂(x′)|`` between a network and its compressed
    copy over L∞ balls around given inputs (the local certificate).
tropref.adapters.torch, tropref.adapters.keras
    The same for PyTorch and Keras models, returning a model of the same framework.

Modules: :mod:`tropref.tropical` (layer <-> zonotopes), :mod:`tropref.zonotope`
(support functions, exact Hausdorff oracles), :mod:`tropref.cluster` (weighted K-means),
:mod:`tropref.methods` (TropNNC, the predecessor's methods, baselines),
:mod:`tropref.network` (the network level: layers, graphs, the forward pass, the walk of
:func:`compress_network`), :mod:`tropref.experiments` (the application: model files,
sweeps, reports, the command line).
"""

from .compress import LayerCompression, compress_layer
from .methods import METHODS
from .network import (
    Budget,
    LayerReport,
    Network,
    NetworkReport,
    certify,
    compress_network,
    count_macs,
    count_params,
    forward,
)

__version__ = "0.1.0"

__all__ = [
    "compress_layer",
    "LayerCompression",
    "compress_network",
    "certify",
    "Network",
    "Budget",
    "NetworkReport",
    "LayerReport",
    "forward",
    "count_params",
    "count_macs",
    "METHODS",
    "__version__",
]
