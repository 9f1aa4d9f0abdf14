"""Tests of `tropref.experiments`: one file per module (`test_<module>.py`)."""
