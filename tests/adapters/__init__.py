"""Tests of `tropref.adapters` (the top-level folder `adapters/`): one file per module or topic (`test_<module>.py`)."""
