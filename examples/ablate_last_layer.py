"""TropNNC's ``outgoing`` partition on the last hidden layer alone, against every layer and none.

    python examples/ablate_last_layer.py [--beta 1.0] [--models lenet5 lenet300 vgg_small]
                                         [--fractions 0.75 0.5 0.3] [--subset]

``docs/results.md`` (section 0) found TropNNC weakest on the dense layers that feed the
classifier, where units with similar outgoing weights can be merged with errors that cancel
in the logits, and measured ``outgoing=β`` on every layer: large gains at 30 %, losses
elsewhere. This script asks whether the option helps where the diagnosis points, the last
hidden layer only (the one the classifier reads), with TropNNC's default on every other
layer. For each shipped chain model, layer group (``all``, ``nonuniform``) and fraction it
compresses the network three ways at the same widths (those the default chooses) and prints
the test accuracy (%):

- ``default``: one call of :func:`tropref.compress_network` with default options;
- ``last β``: the same widths, the other layers first with the default, then the last
  hidden layer with ``outgoing=β`` (the walk is front to back, so two calls are one walk:
  the column ``two-stage``, the second call with the default, must equal ``default``);
- ``every β``: ``outgoing=β`` on every layer.

Then two data-free scores of the last layer's merge, with β = 0 and with β: the sum over
the classifier's outputs of the layer's certificate (:func:`tropref.compress_layer`'s
``certificate``, ``Σ_j |V_ij| ‖a_j − φ_j ã_C‖`` for output ``i``, ``a_j = (w_j, b_j)``,
``V_j`` the classifier's column ``j``) and the error while a cluster's members are active together,
which sees their cancellation in the classifier, ``Σ_C ‖Σ_{j∈C} V_j (a_j − φ_j ã_C)ᵀ‖_F``
(:func:`tropref.compress_layer` on the layer as the walk sees it).

Deterministic (TropNNC's default draws no random numbers); about two minutes on two cores.
"""

from __future__ import annotations

import argparse

import numpy as np

import tropref
from tropref.experiments import accuracy, evaluation_data, keep_rule, load_model
from tropref.network import compress_network

LAST = {"lenet5": "fc2", "lenet300": "fc2", "vgg_small": "fc2"}  # the hidden layer the classifier reads


def _compress(net, keep, **options):
    return compress_network(net, keep, method="tropnnc", seed=0, certify=False, progress=False, **options)


def _scores(net, last: str, k: int, beta: float) -> tuple[float, float]:
    """The certificate's sum and the co-active error of ``last`` merged to ``k`` (module notes)."""
    at = next(i for i, layer in enumerate(net.layers) if getattr(layer, "name", None) == last)
    reader = next(layer for layer in net.layers[at + 1 :] if hasattr(layer, "W"))
    W, b, V = (np.asarray(a, dtype=np.float64) for a in (net.layers[at].W, net.layers[at].b, reader.W))
    res = tropref.compress_layer(W, b, k, W_next=V, seed=0, outgoing=beta)
    R = np.column_stack([W, b]) - res.scale[:, None] * np.column_stack([res.W, res.b])[res.assignment]
    together = sum(np.linalg.norm(V[:, res.assignment == c] @ R[res.assignment == c]) for c in range(res.k))
    return float(np.sum(res.certificate)), float(together)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beta", type=float, default=1.0, help="the `outgoing` weight β (default 1)")
    parser.add_argument("--models", nargs="+", default=list(LAST), choices=list(LAST))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.75, 0.5, 0.3])
    parser.add_argument("--subset", action="store_true", help="the shipped 2,000 test images, not the full split")
    args = parser.parse_args()
    x, y, split = evaluation_data(subset=args.subset)
    b = args.beta
    print(f"test accuracy % on {split}, TropNNC, outgoing β = {b}\n")
    print(
        "| model | layers | kept | default | two-stage | last β | every β | certificate β=0 / β | co-active β=0 / β |\n"
        f"|{'---|' * 9}"
    )
    for model in args.models:
        net, _ = load_model(model)
        last = LAST[model]
        for layers in ("all", "nonuniform"):
            for q in args.fractions:
                keep = keep_rule(net, q, layers)
                small, report = _compress(net, keep)
                widths = {r.name: r.width_after for r in report.layers if r.status == "compressed"}
                first = {name: k for name, k in widths.items() if name != last}
                head = _compress(net, first)[0] if first else net
                two = _compress(head, {last: widths[last]})[0]
                tail = _compress(head, {last: widths[last]}, outgoing=b)[0]
                every = _compress(net, keep, outgoing=b)[0]
                accs = [f"{100 * accuracy(m, x, y):.2f}" for m in (small, two, tail, every)]
                (c0, e0), (c1, e1) = (_scores(head, last, widths[last], beta) for beta in (0.0, b))
                cells = [*accs, f"{c0:.4g} / {c1:.4g}", f"{e0:.4g} / {e1:.4g}"]
                print(f"| {model} | {layers} | {q:.0%} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
