"""Framework adapters, installed as ``tropref.adapters``.

- :mod:`tropref.adapters.torch`: PyTorch ``nn.Sequential`` / chain ``nn.Module`` <-> network description;
- :mod:`tropref.adapters.keras`: Keras 3 ``Sequential`` / functional chains <-> network description.

Each has ``compress(model, keep=0.5, method="tropnnc", seed=0, **options)`` returning a new
model of the same framework and the report. Importing this package imports no framework;
each adapter imports its framework when it is itself imported.
"""
