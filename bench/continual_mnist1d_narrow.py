"""Permuted MNIST-1D on a 32-32 MLP: why ``gpm`` under ``fa`` stayed near chance on task 0.

A user report (2026-12-07): ``beyondbp continual --tasks permuted-mnist1d:N --methods gpm --rule fa
--model-opt widths=[32,32]`` learnt nothing on the first task. This prints, for each recipe, rule
and method, task 0 just after training it (R[0,0], identical for every sequential method: none acts
on task 0), each task just after training it (the diagonal), ACC, BWT, GPM's basis sizes and the
run's notes. The default recipe (the HLOP permuted-MNIST script's: 1 epoch, SGD 0.1, no biases)
gives 63 steps per task on MNIST-1D's 4,000 samples.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/continual_mnist1d_narrow.py
"""

from __future__ import annotations

import argparse

import torch

from beyondbp import continual as C

RECIPES = {
    "default (1 epoch, lr 0.1, no bias)": dict(epochs_per_task=1, lr=0.1, model_options={"widths": [32, 32], "bias": False}),
    "20 epochs, lr 0.1, biases": dict(epochs_per_task=20, lr=0.1, model_options={"widths": [32, 32], "bias": True}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="permuted-mnist1d:3")
    ap.add_argument("--rules", default="backprop,fa")
    ap.add_argument("--methods", default="finetune,ewc,gpm,hlop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seq = C.build_sequence(args.tasks, seed=args.seed)
    runs = [(name, recipe, m, {}) for name, recipe in RECIPES.items() for m in args.methods.split(",")]
    runs.append(("20 epochs, lr 0.1, biases", RECIPES["20 epochs, lr 0.1, biases"], "gpm",
                 {"threshold": 0.9, "threshold_first": 0.8}))
    print("| recipe | rule | method | R[0,0] % | diagonal % | ACC % | BWT pts | GPM bases | notes |")
    print("|---|---|---|---:|---|---:|---:|---|---|")
    for rule in args.rules.split(","):
        for name, recipe, method, opts in runs:
            r = C.run_method(seq, method, rule=rule, method_options=opts, seed=args.seed, **recipe)
            R = r["matrix"]
            diag = " / ".join(f"{R[i][i]:.1f}" for i in range(len(R)))
            label = method + (" " + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
            notes = "; ".join("task 0 barely learnt" if n.startswith("task 0") else "bases fill a layer"
                              for n in r["notes"]) or "—"
            print(f"| {name} | {rule} | {label} | {R[0][0]:.1f} | {diag} | {r['acc']:.1f} | {r['bwt']:+.1f} | "
                  f"{r.get('subspace_sizes', '—')} | {notes} |", flush=True)


if __name__ == "__main__":
    main()
