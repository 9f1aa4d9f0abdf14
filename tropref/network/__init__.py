"""The network level: networks as graphs of layers, and their compression.

Modules, each importing only those above it in this list:

- :mod:`~tropref.network.layers`: the layer types (dense, convolution, BatchNorm, ReLU,
  pooling, flatten, dropout, identity, softmax; :class:`Add` and :class:`Concat` junctions);
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
"""

from .bounds import carry_bound, interval_bounds, max_patch_norm, node_bounds
from .certificate import network_certificate
from .compress import compress_network
from .coupled import Gate, Group, compress_group, coupled_groups
from .flatten import with_flatten_order, with_flatten_order_everywhere
from .forward import apply_layer, apply_node, conv_patches, forward, node_outputs
from .graph import Network, map_arrays, network_namespace
from .layers import (
    ARRAY_FIELDS,
    JUNCTIONS,
    LAYER_TYPES,
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
from .segments import Segment, coupling, drop_layers, segment_network, segments, splice
from .shapes import (
    count_macs,
    count_params,
    layer_macs,
    layer_params,
    layer_shapes,
    node_output_shape,
    out_size,
    output_shapes,
)
from .structure import HiddenLayer, Structure, analyse, compressible_layers, hidden_layers
from .widths import Budget, allocate_budget, budget_widths, keep_widths, predict_cost, rounded_width

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
    "LAYER_TYPES",
    "JUNCTIONS",
    "ARRAY_FIELDS",
    # the graph and its forward pass
    "Network",
    "map_arrays",
    "network_namespace",
    "forward",
    "apply_layer",
    "apply_node",
    "node_outputs",
    "conv_patches",
    # shapes and counting
    "out_size",
    "layer_shapes",
    "output_shapes",
    "node_output_shape",
    "count_params",
    "count_macs",
    "layer_params",
    "layer_macs",
    # segments and flatten order
    "Segment",
    "segments",
    "segment_network",
    "splice",
    "drop_layers",
    "coupling",
    "with_flatten_order",
    "with_flatten_order_everywhere",
    # bounds and the certificate
    "interval_bounds",
    "node_bounds",
    "max_patch_norm",
    "carry_bound",
    "network_certificate",
    "certify",
    # compression
    "HiddenLayer",
    "Structure",
    "analyse",
    "hidden_layers",
    "compressible_layers",
    "Group",
    "Gate",
    "coupled_groups",
    "compress_group",
    "Budget",
    "keep_widths",
    "budget_widths",
    "allocate_budget",
    "predict_cost",
    "rounded_width",
    "compress_network",
    "NetworkReport",
    "LayerReport",
]
