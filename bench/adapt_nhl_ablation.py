"""NHL's two parts on Fashion-MNIST-C: which one moves the error.

Runs, on the same corrupted test images and from the same source checkpoint (written by
``beyondbp adapt source``), ``norm`` and four NHL variants of
:class:`beyondbp.adapt.methods.NHL`:

* ``nhl``            soft-Hebbian front layer + entropy-tuned neuromodulator (the default)
* ``hebbian only``   the Hebbian step alone (``modulate=False``)
* ``modulator only`` the neuromodulator alone (``hebbian=False``)
* ``nhl hebb_lr×10`` the default with a ten times larger Hebbian rate (sensitivity)

and prints the top-1 error per corruption and the mean, plus each variant's time per batch as a
ratio to ``norm``'s, measured side by side in this process. Online adaptation, batch 128, in the
test set's order.

    python bench/adapt_nhl_ablation.py --checkpoint source.pt --severity 5 --n-test 2000
"""

from __future__ import annotations

import argparse
import time

import torch

from beyondbp import adapt, data
from beyondbp.adapt.methods import NHL, Norm, stream_error


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--severity", type=int, default=5)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, meta = adapt.load_source(args.checkpoint)
    ds = data.load("fashion-mnist", normalize=False)
    x, y = ds.x_test[: args.n_test], ds.y_test[: args.n_test]
    variants = {
        "norm": lambda: Norm(model),
        "nhl": lambda: NHL(model),
        "hebbian only": lambda: NHL(model, modulate=False),
        "modulator only": lambda: NHL(model, hebbian=False),
        "nhl hebb_lr×10": lambda: NHL(model, hebb_lr=1e-2),
    }
    names = adapt.parse_corruptions(args.corruptions)
    errors = {v: {} for v in variants}
    seconds = {v: 0.0 for v in variants}
    for c in names:
        xc = adapt.corrupt(x, c, args.severity, seed=args.seed)
        for v, build in variants.items():
            r = stream_error(build(), xc, y, batch_size=args.batch_size)
            errors[v][c] = r["error"]
            seconds[v] += r["seconds_per_batch"]
    print(f"NHL ablation, severity {args.severity}, {len(x)} test images, batch {args.batch_size}, online; "
          f"source clean error {100 * meta.get('clean_test_error', float('nan')):.2f}% "
          f"({time.strftime('%Y-%m-%d', time.gmtime())})\n")
    short = [c.replace("_noise", "").replace("_blur", "").replace("_transform", "") for c in names]
    print("| variant | " + " | ".join(short) + " | mean | time/batch vs norm |")
    print("|---|" + "---:|" * (len(names) + 2))
    for v in variants:
        mean = sum(errors[v].values()) / len(names)
        cells = " | ".join(f"{100 * errors[v][c]:.1f}" for c in names)
        print(f"| {v} | {cells} | **{100 * mean:.1f}** | {seconds[v] / seconds['norm']:.2f}× |")


if __name__ == "__main__":
    main()
