"""The local certificate on the shipped models: the bound against the worst error PGD finds.

Every hidden layer of each shipped model is compressed by TropNNC at keep 0.5; for the first
``--images`` test images and each radius, :func:`tropref.certify` bounds ``max |f − f̂|``
over the L∞ ball, and a search (random corners, then projected gradient ascent on
``±(f_i − f̂_i)`` for the two outputs that change most at the centre) finds a lower bound.
Prints a markdown table: per model and radius, the median over images of the largest bound
over the outputs, of the largest error found, their ratio (median and worst over images),
whether any found error exceeded its bound, and the times.

Run: python examples/local_certificate.py [--models lenet300 lenet5 vgg_small resnet20] [--images 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tropref
from tropref.experiments.data import load_test_subset
from tropref.experiments.models import keep_rule, load_model

# Where the backward refinement of the intervals pays for itself (small nets) and where it
# costs minutes for little (deep convolutional nets): the settings of the table.
SETTINGS = {
    "lenet300": dict(refine=256),
    "lenet5": dict(refine=256),
    "vgg_small": dict(refine=0),
    "resnet20": dict(refine=0),
}


def worst_found(f, g, x: np.ndarray, eps: float, seed: int = 0, steps: int = 10) -> np.ndarray:
    """Largest ``max_i |f_i − g_i|`` per image found in the ball (PGD, torch float64)."""
    import torch

    from tropref.adapters.torch import to_torch

    tf, tg = to_torch(f, dtype=torch.float64), to_torch(g, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        d0 = (tf(torch.tensor(x)) - tg(torch.tensor(x))).numpy()
    best = np.abs(d0).max(axis=1)
    if eps == 0:
        return best
    top = np.argsort(-np.abs(d0), axis=1)[:, :2]  # two objectives per image
    reps = np.repeat(x, 2, axis=0)
    out = top.reshape(-1)
    sign = np.sign(d0[np.repeat(np.arange(len(x)), 2), out]) + (d0[np.repeat(np.arange(len(x)), 2), out] == 0)
    X = torch.tensor(reps)
    delta = torch.tensor(eps * rng.choice([-1.0, 1.0], size=reps.shape), requires_grad=True)
    rows, cols, sgn = torch.arange(len(out)), torch.tensor(out), torch.tensor(sign)
    for _ in range(steps + 1):
        with torch.enable_grad():
            diff = tf(X + delta) - tg(X + delta)
            (grad,) = torch.autograd.grad((sgn * diff[rows, cols]).sum(), delta)
        best = np.maximum(best, torch.abs(diff).detach().numpy().max(axis=1).reshape(-1, 2).max(axis=1))
        delta = torch.clamp(delta.detach() + eps / 4 * torch.sign(grad), -eps, eps).requires_grad_(True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--eps", nargs="+", type=float, default=[0.0, 1 / 255, 4 / 255])
    parser.add_argument("--refine", type=int, default=None, help="certify's `refine` (default: per model, SETTINGS)")
    parser.add_argument("--generators", type=int, default=-1, help="certify's `generators` (-1: no zonotope)")
    args = parser.parse_args()
    images, _ = load_test_subset()
    x = images[: args.images, None].astype(np.float64) / 255.0
    print(
        "| model | eps | median bound | median PGD error | ratio median | ratio worst | sound | "
        "certify s | compress s |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name in args.models:
        net, _ = load_model(name, dtype=np.float64)
        t = time.perf_counter()
        small = tropref.compress_network(net, keep=keep_rule(net, 0.5), seed=0, progress=False, certify=False)[0]
        t_comp = time.perf_counter() - t
        for eps in args.eps:
            t = time.perf_counter()
            opts = {**SETTINGS.get(name, {}), "generators": args.generators}
            if args.refine is not None:
                opts["refine"] = args.refine
            B = tropref.certify(net, small, x, eps, **opts).max(axis=1)
            t_cert = time.perf_counter() - t
            found = worst_found(net, small, x, eps)
            ratio = B / np.maximum(found, 1e-300)
            print(
                f"| {name} | {eps:.4g} | {np.median(B):.4g} | {np.median(found):.4g} | {np.median(ratio):.3g} | "
                f"{ratio.max():.3g} | {bool(np.all(found <= B))} | {t_cert:.1f} | {t_comp:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
