"""The user's own arrays and keep budgets read for the command line (tropref.experiments.userdata)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.experiments.stand_ins import stand_in, tiny_mlp
from tests.helpers import run_doctests
from tropref import Budget
from tropref.experiments import userdata


def test_docstring_examples():
    run_doctests(userdata)


def test_load_arrays_reads_npy_pairs_and_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 2, 3)).astype(np.float32), np.array([0, 2, 1, 1, 0, 2])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.eye(3)[y])  # one-hot rows: their argmax
    got_x, got_y, name = userdata.load_arrays([tmp_path / "x.npy", tmp_path / "y.npy"])
    np.testing.assert_array_equal(got_x, x)
    assert got_y.tolist() == y.tolist()
    assert got_y.dtype == np.int64
    assert "x.npy" in name
    assert userdata.load_arrays([tmp_path / "x.npy"])[1] is None  # inputs alone
    np.savez(tmp_path / "d.npz", x=x, y=y)
    got_x, got_y, _ = userdata.load_arrays([tmp_path / "d.npz"])
    np.testing.assert_array_equal(got_x, x)
    assert got_y.tolist() == y.tolist()
    with pytest.raises(FileNotFoundError, match="no file"):
        userdata.load_arrays([tmp_path / "missing.npy"])
    np.save(tmp_path / "bad.npy", np.array([0.5, 1, 2, 0, 1, 2]))
    with pytest.raises(ValueError, match="whole numbers"):
        userdata.load_arrays([tmp_path / "x.npy", tmp_path / "bad.npy"])


def test_check_fit_counts_the_classes_and_refuses_what_does_not_fit():
    net = tiny_mlp()  # input (1, 2, 3), 3 outputs
    x, y = stand_in(net)
    assert userdata.check_fit(net, x, y, "the data") == 3
    with pytest.raises(ValueError, match="takes inputs of shape 1x2x3, but the data has inputs of shape 1x1x3"):
        userdata.check_fit(net, x[:, :, :1], y, "the data")
    with pytest.raises(ValueError, match="labels up to 5"):
        userdata.check_fit(net, x, np.full(len(x), 5), "the data")


def test_parse_keep_reads_a_fraction_or_a_budget():
    assert userdata.parse_keep("0.25") == 0.25
    assert userdata.parse_keep("params=0.3") == Budget(params=0.3)
    assert userdata.parse_keep("units=1") == Budget(units=1.0)
    for bad, word in (("1.5", "fraction"), ("flops=0.5", "budget"), ("0", "fraction")):
        with pytest.raises(ValueError, match=word):
            userdata.parse_keep(bad)


def test_agreement_is_the_unchanged_top_1_share_and_the_relative_change():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(20, 4))
    assert userdata.agreement(before, before) == (1.0, 0.0)
    after = before.copy()
    after[:5] = -before[:5]  # the top class of the first five moves, unless it was a tie
    share, change = userdata.agreement(before, after)
    assert share == pytest.approx(np.mean(before.argmax(1) == after.argmax(1)))
    assert share <= 0.75
    assert change == pytest.approx(np.linalg.norm(after - before) / np.linalg.norm(before))
