"""The Keras adapter beside the PyTorch adapter on the same network (issue 19, item 4).

Builds one network twice: in Keras (``keras.applications``, run on Keras's PyTorch backend,
``KERAS_BACKEND=torch``) and in PyTorch (``bench_models.build``, torchvision's architecture
written out), with the same seeded random weights: ``bench_models.randomise`` draws them
in PyTorch (its default initialisation, BatchNorm statistics randomised) and they are
copied into the Keras model (kernels OIHW -> HWIO; the first dense layer after a flatten
has its inputs reordered from PyTorch's ``c, h, w`` to Keras's ``h, w, c``). ``--check``
runs both on one random input and prints the largest difference of their logits (the
classifier's softmax is left out of the Keras model: logits on both sides).

Then times ``tropref.adapters.keras.compress`` and ``tropref.adapters.torch.compress`` (their
defaults: the Keras user's model cloned at the compressed widths, PyTorch's rebuilt
``nn.Sequential``) at ``--keep`` with each ``--methods``, each run in a fresh subprocess, and
breaks each call down as its report does: ``read`` (the model to a tropref ``Network``, the
report's ``export`` step), ``compress_network`` (the core's walk, identical work on both),
``write`` (the ``Network`` back to a framework model, ``import``). ``l1`` shows the
adapters best: its compression is cheap. Beside them, Keras's own fixed cost, which no
adapter avoids: ``keras.models.clone_model(model)`` of the original (``clone``; random
initial weights drawn) and the same clone with every initialiser ``"zeros"`` (``graph``:
the functional graph traced and its variables made, nothing drawn).

ResNet-50's weights are not mapped: ``keras.applications.ResNet50`` is ResNet v1 (strides on
the first 1x1 convolution, biases on every convolution, BatchNorm eps 1.001e-5) and
torchvision's is v1.5, so the two are different networks; each is timed with its own seeded
weights (Keras's initialisation, BatchNorm statistics randomised) and the table says so.

Times are the best of ``--repeat`` runs with their range; a run's peak memory is the
process's peak RSS during the call (the high-water mark reset just before it, Linux), beside
the RSS with the model built.

    KERAS_BACKEND=torch python benchmarks/bench_adapters.py --check                # vgg16, l1 and tropnnc
    KERAS_BACKEND=torch python benchmarks/bench_adapters.py --models vgg16 resnet50 --repeat 3
    KERAS_BACKEND=torch python benchmarks/bench_adapters.py --models tiny --methods l1 --check

Never asserts; prints a table, and ``--json PATH`` writes every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported, here and in every child

MODELS = ("vgg16", "resnet50")
METHODS = ("l1", "tropnnc")
ADAPTERS = ("keras", "torch")
FIXED = ("clone", "graph")  # Keras's own cost of a functional model of the original's size
MAPPED = ("tiny", "vgg16")  # the models whose Keras and PyTorch forms share their weights


# --------------------------------------------------------------------------- the two models


def keras_model(name: str, seed: int) -> Any:
    """The Keras form of ``name``, with the weights of its PyTorch form where they map
    (:data:`MAPPED`), else Keras's seeded initialisation with BatchNorm statistics randomised."""
    import keras

    keras.utils.set_random_seed(seed)
    if name == "tiny":  # bench_models' tiny network (its adaptive 2x2 pooling of 8x8 an average pooling of 4)
        L = keras.layers
        model = keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                L.Conv2D(8, 3, padding="same"),
                L.BatchNormalization(epsilon=1e-5),
                L.ReLU(),
                L.MaxPooling2D(2),
                L.Conv2D(16, 3, padding="same", activation="relu"),
                L.AveragePooling2D(4),
                L.Flatten(),
                L.Dense(32, activation="relu"),
                L.Dropout(0.5),
                L.Dense(10),
            ],
            name="tiny",
        )
    elif name == "vgg16":
        model = keras.applications.VGG16(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    elif name == "resnet50":
        model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {(*MODELS, 'tiny')}")
    if name in MAPPED:
        copy_weights(torch_model(name, seed), model)
    else:
        _randomise_batchnorms(model, seed)
    return model


def torch_model(name: str, seed: int) -> Any:
    """The PyTorch form of ``name`` (``bench_models.build``), seeded (``bench_models.randomise``)."""
    from bench_models import build, randomise

    model, _shape = build(name)
    randomise(model, seed)
    return model


def copy_weights(src: Any, dst: Any) -> None:
    """The PyTorch model ``src``'s weights into the Keras model ``dst`` of the same layers:
    its ``Conv2d``, ``BatchNorm2d`` and ``Linear`` in order into ``dst``'s ``Conv2D``,
    ``BatchNormalization`` and ``Dense``."""
    import torch

    keras_layers = [layer for layer in dst.layers if layer.weights]
    torch_layers = [m for m in src.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear))]
    if len(keras_layers) != len(torch_layers):
        raise ValueError(f"{len(keras_layers)} Keras layers with weights, {len(torch_layers)} PyTorch ones")
    for k, m in zip(keras_layers, torch_layers, strict=True):
        a = {n: t.detach().numpy() for n, t in [*m.named_parameters(), *m.named_buffers()]}
        if isinstance(m, torch.nn.Conv2d):
            w = [a["weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
        elif isinstance(m, torch.nn.BatchNorm2d):
            w = [a["weight"], a["bias"], a["running_mean"], a["running_var"]]
        else:
            w = [_dense_kernel(a["weight"], k)]
        k.set_weights([*w, a["bias"]] if len(k.weights) > len(w) else w)


def _dense_kernel(weight: Any, layer: Any) -> Any:
    """A ``Linear`` weight ``(out, in)`` as the kernel ``(in, out)`` of the Keras ``Dense``
    ``layer``; when it reads a flatten of ``(h, w, c)`` features its inputs are reordered
    from PyTorch's ``c, h, w`` to Keras's ``h, w, c``."""
    src = layer.input._keras_history.operation
    if type(src).__name__ != "Flatten" or len(src.input.shape) != 4:
        return weight.T
    h, w, c = src.input.shape[1:]
    return weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)


def _randomise_batchnorms(model: Any, seed: int) -> None:
    """BatchNorm statistics and affine parts drawn as ``bench_models.randomise`` draws them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            gamma, beta = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c)
            layer.set_weights([gamma, beta, rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)])


def input_shape(name: str) -> tuple[int, int, int]:
    """One sample's shape, channels last."""
    return (16, 16, 3) if name == "tiny" else (224, 224, 3)


def check(name: str, seed: int) -> float:
    """The largest difference between the Keras and PyTorch forms' outputs on one random
    input (both in float32; 0 up to the frameworks' summation orders)."""
    import numpy as np
    import torch

    x = np.random.default_rng(seed).normal(size=(1, *input_shape(name))).astype(np.float32)
    got = np.asarray(keras_model(name, seed)(x, training=False).detach())
    with torch.no_grad():
        want = torch_model(name, seed)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# --------------------------------------------------------------------------- one run (child)


def _reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs``); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _peak_mb(reset: bool) -> float:
    return _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(model_name: str, adapter: str, method: str, keep: float, seed: int) -> dict:
    """One timed call in this process: ``adapter``'s ``compress`` with ``method``, or for
    ``adapter == "keras"`` and ``method`` in :data:`FIXED` Keras's own clone."""
    import torch

    torch.set_grad_enabled(False)
    model = torch_model(model_name, seed) if adapter == "torch" else keras_model(model_name, seed)
    out: dict[str, Any] = {"model": model_name, "adapter": adapter, "method": method}
    out["model_rss_mb"] = _status_mb("VmRSS")
    if method in FIXED:
        import keras

        clone = None if method == "clone" else _zeros_initialised
        reset, t = _reset_peak(), time.perf_counter()
        keras.models.clone_model(model, clone_function=clone)
        out["time_s"] = time.perf_counter() - t
    else:
        if adapter == "torch":
            from tropref.adapters.torch import compress

            options = {"input_shape": tuple(input_shape(model_name)[i] for i in (2, 0, 1))}
        else:
            from tropref.adapters.keras import compress

            options = {}
        reset, t = _reset_peak(), time.perf_counter()
        _small, report = compress(model, keep=keep, method=method, seed=seed, progress=False, **options)
        out["time_s"] = time.perf_counter() - t
        steps = dict(report.steps)
        read, write = steps.pop("export"), steps.pop("import")
        out["steps"] = {"read": read, "compress_network": out["time_s"] - read - write, "write": write}
        out["core_steps"] = steps
    out["peak_rss_mb"] = _peak_mb(reset)
    return out


def _zeros_initialised(layer: Any) -> Any:
    """A clone of ``layer`` whose weights start at zero: building it draws no random numbers."""
    config = {k: ("zeros" if k.endswith("_initializer") else v) for k, v in layer.get_config().items()}
    return type(layer).from_config(config)


# --------------------------------------------------------------------------- driver


def run_child(argv: list[str], timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def best_of(runs: list[dict]) -> dict:
    """The fastest of ``runs`` with the range of their times (and of each step's)."""
    ok = [r for r in runs if "time_s" in r]
    if not ok:
        return runs[-1]
    rec = dict(min(ok, key=lambda r: r["time_s"]))
    rec["range"] = (min(r["time_s"] for r in ok), max(r["time_s"] for r in ok))
    rec["peak_rss_mb"] = min(r["peak_rss_mb"] for r in ok)
    if "steps" in rec:
        rec["steps"] = {k: min(r["steps"][k] for r in ok) for k in rec["steps"]}
    return rec


def _line(rec: dict) -> str:
    if "time_s" not in rec:
        return f"error: {rec.get('error', '?')}"
    lo, hi = rec["range"]
    steps = "".join(f"  {k} {v:.2f}" for k, v in rec.get("steps", {}).items())
    return (
        f"{rec['time_s']:7.2f} s ({lo:.2f}-{hi:.2f}){steps}  peak RSS {rec['peak_rss_mb']:.0f} MB "
        f"(model {rec['model_rss_mb']:.0f} MB)"
    )


def table(best: dict, models: list[str], methods: list[str]) -> str:
    """The Markdown table of the best runs: each adapter's time and its breakdown, the
    Keras/PyTorch ratio of the whole call and of the adapter's own part (read + write)."""
    head = "model | method | adapter | total s | read s | compress_network s | write s | peak MB"
    head += " | keras/torch (total; read+write)"
    rows = [head, "|".join(["---"] * head.count("|")) + "|---"]
    for model in models:
        note = "" if model in MAPPED else " (not the same network)"
        for method in methods:
            k, t = best.get((model, "keras", method), {}), best.get((model, "torch", method), {})
            for adapter, r in (("keras", k), ("torch", t)):
                if "time_s" not in r:
                    rows.append(f"{model}{note} | {method} | {adapter} | error | | | | |")
                    continue
                s = r["steps"]
                ratio = ""
                if adapter == "keras" and "time_s" in t:
                    own = (s["read"] + s["write"]) / (t["steps"]["read"] + t["steps"]["write"])
                    ratio = f"{r['time_s'] / t['time_s']:.2f}x; {own:.2f}x"
                rows.append(
                    f"{model}{note} | {method} | {adapter} | {r['time_s']:.2f} | {s['read']:.2f} | "
                    f"{s['compress_network']:.2f} | {s['write']:.2f} | {r['peak_rss_mb']:.0f} | {ratio}"
                )
        for fixed in FIXED:
            r = best.get((model, "keras", fixed), {})
            if "time_s" in r:
                rows.append(
                    f"{model} | Keras's own {fixed} | keras | {r['time_s']:.2f} | | | | {r['peak_rss_mb']:.0f} |"
                )
    return "\n".join(rows)


def _load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["vgg16"], help=f"of {(*MODELS, 'tiny')}")
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=1, help="runs per model, adapter and method; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="first compare the two forms' logits on a random input")
    ap.add_argument("--no-fixed", action="store_true", help="skip timing Keras's own clone of the model")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--json", help="write every run to this file")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--check-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        model, adapter, method, keep = args.child
        print(json.dumps(child(model, adapter, method, float(keep), args.seed)), flush=True)
        return 0
    if args.check_child:
        print(json.dumps({"max_rel_diff": check(args.check_child, args.seed)}), flush=True)
        return 0

    import keras
    import torch

    print(
        f"keras {keras.__version__} (backend {keras.backend.backend()}); torch {torch.__version__}; "
        f"cores {os.cpu_count()}; {_load_average()}; keep {args.keep}; best of {args.repeat}",
        flush=True,
    )
    runs, best = [], {}
    for model in args.models:
        if args.check:
            if model in MAPPED:
                got = run_child(["--check-child", model, "--seed", str(args.seed)], args.timeout)
                diff = got.get("max_rel_diff", got.get("error"))
                print(
                    f"{model}: Keras and PyTorch logits differ by at most {diff} (relative to the largest)", flush=True
                )
            else:
                print(f"{model}: the Keras and PyTorch forms are different networks; not compared", flush=True)
        jobs = [(a, m) for m in args.methods for a in ADAPTERS]
        jobs += [] if args.no_fixed else [("keras", f) for f in FIXED]
        for adapter, method in jobs:
            argv_child = ["--child", model, adapter, method, str(args.keep), "--seed", str(args.seed)]
            got = [run_child(argv_child, args.timeout) for _ in range(args.repeat)]
            runs += got
            best[model, adapter, method] = rec = best_of(got)
            print(f"{model:9s} {adapter:6s} {method:8s} {_line(rec)}", flush=True)
    print()
    print(table(best, args.models, args.methods))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
