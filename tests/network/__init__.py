"""Tests of `tropref.network`: one file per module (`test_<module>.py`)."""
