"""Tests of `tropref.methods`: one file per module (`test_<module>.py`)."""
