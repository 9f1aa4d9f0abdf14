"""The main job: compress the shipped models with TropNNC and five baselines, in about two minutes.

    python examples/demo.py [--out DIR]        # or, installed: tropref demo

Uses only what ships with tropref: the four Fashion-MNIST models in ``tropref/assets/``
(LeNet-300-100, LeNet-5, a small VGG-style net, a ResNet-20) and the first 2,000 test images. Every
hidden layer of each model keeps 75 %, 50 % and 25 % of its units (neurons or channels),
with TropNNC (data-free, certified), CUP and Neuron Merging (data-free) and L1-norm pruning; no
fine-tuning. Prints a table of test accuracy, parameters, the network certificate (a bound
on the change of the logits over the box of the test inputs; composed layer by layer, so
loose) and the measured change, then where the time went (compression, certificate,
measured error, evaluation: most of it is evaluating ResNet-20 on the 2,000 images, 18
times); writes demo.md, demo.json and demo.png to ``--out``. 121 s on the 2-core
development machine with nothing else running.
"""

import argparse
import time

from tropref.experiments import demo

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tropref-demo")
    args = ap.parse_args()
    t0 = time.perf_counter()
    demo(out_dir=args.out)
    print(f"done in {time.perf_counter() - t0:.0f} s")
