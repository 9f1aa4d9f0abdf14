"""TropNNC (tropref.methods.tropnnc): the method contract, exact merges of positively
parallel units, its options, and the outgoing norms that weigh the units."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest

from tests.methods.problems import check_contract, layer, problem, relu, samples
from tropref.methods.tropnnc import outgoing_norm, tropnnc


@pytest.mark.parametrize("variant", ["refined", "paper"])
def test_positive_multiples_merge_exactly(backend, variant):
    rng = np.random.default_rng(0)
    A, V = layer(rng, n=4, d=3, m=2, s=1)
    A = np.concatenate([A, 3.0 * A])  # units 4..7 are 3 x units 0..3: relu(3 z) = 3 relu(z)
    V = np.concatenate([V, rng.normal(size=(2, 4, 1))], axis=1)
    merge = tropnnc(problem(backend, A, V), 4, rng=rng, variant=variant)
    assignment, fold, inputs = check_contract(backend, merge, 8, 4)
    assert merge.single_fold
    np.testing.assert_array_equal(assignment[:4], assignment[4:])
    U = samples(rng, 50, 3)
    before = np.einsum("mns,tn->tms", V, relu(U @ A.T))
    after = np.einsum("mcs,tc->tms", np.einsum("mns,nc->mcs", V, fold), relu(U @ inputs.T))
    np.testing.assert_allclose(after, before, atol=1e-9)


def test_single_output_gives_a_zonotope_bound_and_unknown_options_are_refused(backend):
    rng = np.random.default_rng(1)
    A, V = layer(rng, n=9, m=1)
    merge = tropnnc(problem(backend, A, V), 4, rng=rng)
    check_contract(backend, merge, 9, 4)
    assert merge.zonotope_bound is not None
    with pytest.raises(ValueError, match="`variant`"):
        tropnnc(problem(backend, A, V), 4, rng=rng, variant="other")


@pytest.mark.parametrize(("kind", "norm"), [("l1", 1), ("l2", 2), ("linf", np.inf)])
def test_outgoing_norm_is_the_norm_of_each_units_outgoing_weights(kind, norm):
    V = np.random.default_rng(2).normal(size=(3, 5, 4))
    expected = np.linalg.norm(V.transpose(1, 0, 2).reshape(5, -1), ord=norm, axis=1)
    np.testing.assert_allclose(outgoing_norm(xp, V, kind), expected)
    with pytest.raises(ValueError, match="out_norm"):
        outgoing_norm(xp, V, "l3")
