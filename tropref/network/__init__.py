"""The network level: networks as graphs of layers, and their compression.

Modules, each importing only those above it in this list:

- :mod:`~tropref.network.layers`: the layer types (dense, convolution, BatchNorm, ReLU,
  pooling, flatten, dropout, identity, softmax; :class:`Add` and :class:`Concat` junctions);
- :mod:`~tropref.network.windows`: the window arithmetic (window sizes, convolution, pooling);
- :mod:`~tropref.network.kinds`: one kind per layer type, what the walk needs of it;
- :mod:`~tropref.network.shapes`: one sample's shapes, parameter and MAC counts;
- :mod:`~tropref.network.forward`: the one forward pass, on the array API;
- :mod:`~tropref.network.graph`: :class:`Network`, the graph of layers;
- :mod:`~tropref.network.segments`: the chain segments of a graph and splicing them back;
- :mod:`~tropref.network.flatten`: one flatten order for another;
- :mod:`~tropref.network.bounds`: interval bounds, patch norms, bounds carried to the output;
- :mod:`~tropref.network.structure`: what can be compressed (hidden layers), BatchNorm folding;
- :mod:`~tropref.network.widths`: keep rules and :class:`Budget` allocation;
- :mod:`~tropref.network.certificate`: the network certificate;
- :mod:`~tropref.network.local`: :func:`certify`, the local certificate over L∞ balls around inputs;
- :mod:`~tropref.network.report`: :class:`NetworkReport` and :class:`LayerReport`;
- :mod:`~tropref.network.rewrite`: one hidden layer compressed, the next layer rewritten;
- :mod:`~tropref.network.coupled`: coupled channel groups (a residual stream), one partition each;
- :mod:`~tropref.network.compress`: :func:`compress_network`, the walk over the graph.

Private modules hold what several of these share without promising it, each placed in the
same order (``tests/test_layout.py``): ``_after_relu`` (the BatchNorm after a hidden ReLU)
and ``_keep`` (``keep`` and ``skip`` read) below ``widths``; ``_reporting`` (the walk's
report built) and ``_progress`` (its progress lines) below ``rewrite``.
"""

# What users are promised: the layer types (and the hook for a type of their own), the graph
# and its forward pass, the walk and its report, the local certificate, and what
# docs/networks.md shows (segments, analyse, coupled_groups, compressible_layers, their
# results). The rest of each module is the walk's own, imported from its module by the rest
# of tropref.
from .compress import compress_network
from .coupled import Group, coupled_groups
from .forward import forward
from .graph import Network
from .kinds import register_kind, unregister_kind
from .layers import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Identity,
    Layer,
    MaxPool2d,
    ReLU,
    Softmax,
)
from .local import certify
from .report import LayerReport, NetworkReport
from .segments import Segment, segments
from .shapes import count_macs, count_params
from .structure import Structure, analyse, compressible_layers
from .widths import Budget

__all__ = [
    # layers
    "Dense",
    "Conv2d",
    "BatchNorm",
    "ReLU",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
    "Dropout",
    "Identity",
    "Softmax",
    "Add",
    "Concat",
    "Layer",
    # a layer type of the user's own (docs/architecture.md, "Adding a layer type")
    "register_kind",
    "unregister_kind",
    # the graph, its forward pass and its counts
    "Network",
    "forward",
    "count_params",
    "count_macs",
    # what can be compressed
    "Segment",
    "segments",
    "Structure",
    "analyse",
    "compressible_layers",
    "Group",
    "coupled_groups",
    # compression and certificates
    "Budget",
    "compress_network",
    "NetworkReport",
    "LayerReport",
    "certify",
]
