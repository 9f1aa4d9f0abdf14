"""Framework adapters, installed as ``tropref.adapters``.

- :mod:`tropref.adapters.torch`: PyTorch ``nn.Sequential`` / chain ``nn.Module`` <-> network description;
- :mod:`tropref.adapters.keras`: Keras 3 ``Sequential`` / functional chains <-> network description;
- :mod:`tropref.adapters.onnx`: ONNX models (from any framework) <-> network description.

Each has ``compress(model, keep=0.5, method="tropnnc", seed=None, **options)`` returning a new
model of the same framework and the report. As in the core, ``seed=None`` draws a fresh seed that
``report.seed`` records (pass it back to repeat the run); TropNNC's default draws no random
numbers, so its result does not depend on it. Importing this package imports no framework;
each adapter imports its framework when it is itself imported.

What the two adapters share is written once, in private modules that import no framework:
``_padding`` (the padding rules: ``"same"``/``"valid"`` amounts, the frameworks' padding
orders), ``_layout`` (framework tensors to NumPy, NCHW/NHWC and OIHW/HWIO transposes),
``_refusals`` (the ReLU variants and the wording of every refusal), ``_graph`` (walks over a
network's graph), ``_reading`` (explicit padding folded, the end of reading a model),
``_adaptive`` (adaptive pooling as a fixed pooling) and ``_round_trip`` (the report's
export and import steps).
"""

# Nothing here: each adapter is imported by name (``import tropref.adapters.torch``), so that
# importing this package imports no framework.
__all__: list[str] = []
