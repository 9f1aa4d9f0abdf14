"""The tests: one file per module, in folders that mirror the source tree (CONTRIBUTING.md, "Tests")."""
