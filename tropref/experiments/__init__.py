"""The application level: experiments on the shipped models and on a user's own.

Modules, each with one job, each importing only those listed before it:

- :mod:`~tropref.experiments.data`: datasets (Fashion-MNIST IDX files, the shipped
  2,000-image test subset, CIFAR-10 batches), the one test split and the one calibration
  draw every experiment uses.
- :mod:`~tropref.experiments.models`: model files (the shipped models, the ``.npz``
  format), predictions and accuracy, layer groups and keep rules.
- :mod:`~tropref.experiments.userdata`: a user's own test arrays (``x.npy [y.npy]``, an
  ``.npz``), whether a model and a dataset fit each other, ``--keep`` budgets, the
  agreement of a compressed model with the original.
- :mod:`~tropref.experiments.report`: summaries over seeds, Markdown tables, PNG plots,
  the files a sweep writes, the code version recorded in them.
- :mod:`~tropref.experiments.sweeps`: :func:`sweep`, methods × kept fractions × layer
  groups × seeds, evaluated.
- :mod:`~tropref.experiments.certcheck`: the layer certificate beside the measured error.
- :mod:`~tropref.experiments.demos`: :func:`demo`, the main job.
- :mod:`~tropref.experiments.cli`: the ``tropref`` command line.

Every public name is re-exported here: ``from tropref import experiments as E;
E.sweep("lenet300", ...)``. Nothing here imports a deep-learning framework at import time
(the command line reads ``.pt`` and ``.keras`` files through the adapters when asked).
"""

from .certcheck import certificate_check, certificate_markdown
from .data import (
    CLASSES,
    DATASETS,
    DEFAULT_DIR,
    assets_dir,
    calibration_data,
    evaluation_data,
    load_cifar10,
    load_fashion_mnist,
    load_test,
    load_test_subset,
    read_idx,
    to_float,
)
from .demos import demo
from .models import (
    LAYER_GROUPS,
    accuracy,
    hidden_layer_names,
    input_dtype,
    keep_rule,
    load_model,
    predict,
    save_model,
    shipped_models,
)
from .report import NEURON_MERGING_PUBLISHED, code_version, markdown, plot, summarize, to_json, write_report
from .sweeps import DETERMINISTIC, sweep
from .userdata import agreement, check_fit, load_arrays, parse_keep

__all__ = [
    # data
    "DEFAULT_DIR",
    "DATASETS",
    "CLASSES",
    "read_idx",
    "load_fashion_mnist",
    "load_test_subset",
    "load_test",
    "load_cifar10",
    "to_float",
    "evaluation_data",
    "calibration_data",
    "assets_dir",
    # models
    "LAYER_GROUPS",
    "shipped_models",
    "load_model",
    "save_model",
    "predict",
    "input_dtype",
    "accuracy",
    "hidden_layer_names",
    "keep_rule",
    # sweeps and reports
    "DETERMINISTIC",
    "sweep",
    "NEURON_MERGING_PUBLISHED",
    "summarize",
    "markdown",
    "plot",
    "write_report",
    "to_json",
    "code_version",
    # certificate check, demo
    "certificate_check",
    "certificate_markdown",
    "demo",
    # a user's own data
    "load_arrays",
    "check_fit",
    "parse_keep",
    "agreement",
]
