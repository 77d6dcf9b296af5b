"""Permuted Fashion-MNIST, 10 tasks: fine-tuning, EWC, GPM, HLOP and multitask under several rules.

The goal run of issue 14: HLOP's BWT ≥ −3 points where fine-tuning forgets tens of points, HLOP's
ACC ≥ GPM's and within 3 points of multitask — under backprop, reported for FA and uSF too.
Settings are the official HLOP permuted-MNIST script's (784-800-800-10 without biases, SGD lr 0.1,
batch 64, 1 epoch per task) on a ReLU MLP; ``--train-size`` / ``--test-size`` take a seeded subset
per task when the full sets do not fit the time available. Results are appended to ``--out``
(JSON, rewritten after every run, so a stopped bench keeps what finished), and a Markdown table
and the matrix heatmaps are written next to it.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/continual_permuted.py --rules backprop \\
        --methods finetune,hlop,gpm,multitask,ewc --out bench/results/continual-backprop.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import torch

from beyondbp import continual as C
from beyondbp.reporting import continual as continual_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="permuted-fashion-mnist:10")
    ap.add_argument("--rules", default="backprop")
    ap.add_argument("--methods", default="finetune,hlop,gpm,multitask,ewc")
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--test-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ewc-lam", type=float, default=100.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seq = C.build_sequence(args.tasks, seed=args.seed, train_size=args.train_size, test_size=args.test_size)
    results = []
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(seq.describe(), "started", started, flush=True)
    for rule in args.rules.split(","):
        for method in args.methods.split(","):
            opts = {"lam": args.ewc_lam} if method == "ewc" else {}
            t0 = time.perf_counter()

            def progress(t, row, method=method, rule=rule):
                print(f"  {method}/{rule} after task {t}: " + " ".join(f"{v:.1f}" for v in row), flush=True)

            res = C.run_method(seq, method, rule=rule, method_options=opts, lr=args.lr, seed=args.seed,
                               progress=progress)
            res["method_options"] = opts
            res["command"] = " ".join(sys.argv)
            res["date"] = started
            res["train_size"], res["test_size"] = args.train_size, args.test_size
            results.append(res)
            fmt = lambda v: "—" if v is None else f"{v:.2f}"
            print(f"{method:9s} {rule:9s} ACC {fmt(res['acc'])} BWT {fmt(res['bwt'])} FWT {fmt(res['fwt'])} "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
            clean = json.loads(json.dumps(results, default=float).replace("NaN", "null"))
            tmp = args.out + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(clean, fh, indent=1)
            os.replace(tmp, args.out)
    title = f"{seq.describe()}, seed {args.seed}"
    base = os.path.splitext(args.out)[0]
    with open(base + ".md", "w") as fh:
        fh.write(continual_report.markdown_table(results, title))
    continual_report.plot_matrices(results, base + ".png", title)


if __name__ == "__main__":
    main()
