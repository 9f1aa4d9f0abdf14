"""Chain segments of a graph, coupled channels and splicing (tropref.network.segments), on the
residual network with a concatenation of ``tests/network/test_graph.py``:

    0 stem, 1 bn, 2 relu | 3 c1 .. 7 bn | 8 add | 9 relu | 10 side, 11 relu | 12 cat | 13 pool, 14 flatten, 15 fc
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.network.networks import convnet
from tests.network.test_graph import residual_net
from tropref.network import Identity, forward
from tropref.network.forward import node_outputs
from tropref.network.segments import Segment, coupling, drop_layers, segment_network, segments, splice
from tropref.network.shapes import output_shapes

NET = residual_net(15, concat=True)
X = np.random.default_rng(16).normal(size=(4, *NET.input_shape))


def test_segments_are_the_maximal_chains_between_junctions_and_forks():
    segs = segments(NET)
    assert segs == [
        Segment((0, 1, 2), -1),
        Segment((3, 4, 5, 6, 7), 2),
        Segment((9,), 8),
        Segment((10, 11), 9),
        Segment((13, 14, 15), 12),
    ]
    junctions = {8, 12}
    assert sorted(n for s in segs for n in s.nodes) == sorted(set(range(len(NET.layers))) - junctions)
    for s in segs:  # inside a segment each layer reads the one before it alone
        assert NET.sources(s.nodes[0]) == (s.source,)
        assert all(NET.sources(b) == (a,) for a, b in zip(s.nodes, s.nodes[1:], strict=False))
    chain = convnet(np.random.default_rng(17))
    assert segments(chain) == [Segment(tuple(range(len(chain))), -1)]  # a chain is one segment


def test_segment_network_computes_the_segment():
    outs = node_outputs(NET, X, keep=[-1, *range(len(NET.layers))])
    shapes = output_shapes(NET)
    for s in segments(NET):
        chain = segment_network(NET, s, NET.input_shape if s.source == -1 else shapes[s.source])
        assert chain.is_chain
        assert len(chain) == len(s.nodes)
        np.testing.assert_allclose(forward(chain, outs[s.source]), outs[s.nodes[-1]], atol=1e-12)


def test_splice_puts_chains_in_place_of_segments():
    segs = segments(NET)
    same, placed, moved = splice(NET, segs, {})
    np.testing.assert_allclose(forward(same, X), forward(NET, X))
    assert placed == [list(s.nodes) for s in segs]
    # the branch replaced by its first two layers (c1 and its BatchNorm): the add reads them
    shorter, placed, moved = splice(NET, segs, {1: NET.layers[3:5]})
    assert len(shorter) == len(NET) - 3
    assert [shorter.layers[i] for i in placed[1]] == list(NET.layers[3:5])
    assert shorter.sources(moved[8]) == (placed[1][-1], placed[0][-1])
    with pytest.raises(ValueError, match="no layers"):
        splice(NET, segs, {1: []})


def test_drop_layers_reconnects_the_readers():
    short = drop_layers(NET, [1, 7])  # the BatchNorm before the fork, the branch's last one
    assert len(short) == len(NET) - 2
    as_identity = NET.replace_layers([Identity() if i in (1, 7) else l for i, l in enumerate(NET.layers)])
    np.testing.assert_allclose(forward(short, X), forward(as_identity, X), atol=1e-12)


def test_coupling_says_where_the_channels_go():
    first, branch, after_add, side, tail = segments(NET)
    assert "read by 2 layers" in coupling(NET, first)
    assert "'add'" in coupling(NET, branch)
    assert "read by 2 layers" in coupling(NET, after_add)
    assert "'cat'" in coupling(NET, side)
    assert coupling(NET, tail) is None
