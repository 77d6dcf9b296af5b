"""Evolved plasticity (issue 27, Miconi ICML 2023) at CPU size: the plastic network vs the
non-plastic control (α = 0, plasticity off), same population and generations, on one thread.

Reports per arm and seed the success rate of the evolved parameters on the withheld DMS task
over the last scored trials of fresh lifetimes and over their first trials (before plasticity
starts: the difference is what was learned within a lifetime), the tests during evolution and
the CPU time.

    python bench/evolved_plasticity.py --population 64 --generations 200 --trials 150 --scored 50 --test-every 20 --seeds 0,1,2

``--final-tests k`` tests the final parameters on ``k`` more sets of lifetimes, each set with its own
kick sequence (CPU not counted in the evolution's). ``--workers k`` (``--executor ray``) spreads each generation over the study executors; the
numbers are the same, the CPU time then counts the workers' too.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from beyondbp.evolution.es import ESConfig, evolve, test_lifetimes
from beyondbp.evolution.plastic_rnn import PlasticRNNConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", type=int, default=64)
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--scored", type=int, default=50)
    ap.add_argument("--test-every", type=int, default=20)
    ap.add_argument("--test-lifetimes", type=int, default=32)
    ap.add_argument("--init-alpha", type=float, default=0.5,
                    help="initial plasticity coefficients (the paper's 0.5 suits its 400-trial lifetimes)")
    ap.add_argument("--task-schedule", default="halves", help="halves (the authors') or uniform")
    ap.add_argument("--lr-cut-generation", type=int, default=None,
                    help="generation at which Adam's rate is divided by --lr-cut-factor (default: never)")
    ap.add_argument("--lr-cut-factor", type=float, default=5.0)
    ap.add_argument("--final-tests", type=int, default=0,
                    help="also test the evolved parameters on this many more sets of --test-lifetimes lifetimes, each"
                         " with its own kicks (the evolution's own final test shares one kick sequence)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--arms", default="plastic,control")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="workers per generation (the result does not depend on it)")
    ap.add_argument("--executor", default="local", help="local or ray")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            net = PlasticRNNConfig(trials=args.trials, scored_trials=args.scored, plastic=arm == "plastic",
                                   init_alpha=args.init_alpha)
            es = ESConfig(population=args.population, generations=args.generations, seed=seed,
                          test_every=args.test_every, test_lifetimes=args.test_lifetimes,
                          task_schedule=args.task_schedule, lr_cut_generation=args.lr_cut_generation,
                          lr_cut_factor=args.lr_cut_factor)

            def progress(g, info, arm=arm, seed=seed):
                if info["test"] is not None:
                    print(f"{arm} seed {seed} gen {g}: train loss {info['loss']:.3f} success {info['success']:.3f}"
                          f" | DMS test {info['test']:.3f}", flush=True)

            out = evolve(es, net, progress, workers=args.workers, executor=args.executor)
            s = out.summary()
            row = {"arm": arm, "seed": seed, "dms_success": s["final_test_success"],
                   "dms_early_success": s["final_test_early_success"], "cpu_s": s["cpu_seconds"],
                   "tests": s["tests"], "final_train_loss": s["last_train_loss"],
                   "final_train_success": out.success[-1] if out.success else None,
                   "population": args.population, "generations": args.generations, "trials": args.trials,
                   "scored": args.scored, "init_alpha": args.init_alpha,
                   "task_schedule": args.task_schedule, "lr_cut_generation": args.lr_cut_generation,
                   "lr_cut_factor": args.lr_cut_factor}
            if args.final_tests:  # measured after the evolution, on its final parameters: changes nothing in it
                sets = [test_lifetimes(out.weights, out.alphas, "dms", args.test_lifetimes, 7919 * (seed + 1) + k, net)
                        for k in range(args.final_tests)]
                row["dms_success_more"] = float(torch.cat([t["success"] for t in sets]).mean())
                row["dms_early_success_more"] = float(torch.cat([t["early_success"] for t in sets]).mean())
                row["dms_success_per_set"] = [float(t["success"].mean()) for t in sets]
                row["more_lifetimes"] = args.final_tests * args.test_lifetimes
                print(f"RESULT+ {arm} seed {seed}: DMS success {row['dms_success_more']:.3f} last, "
                      f"{row['dms_early_success_more']:.3f} first, over {row['more_lifetimes']} more lifetimes; per set "
                      + " ".join(f"{v:.2f}" for v in row["dms_success_per_set"]), flush=True)
            rows.append(row)
            print(f"RESULT {arm} seed {seed}: DMS success {row['dms_success']:.3f} over the last {args.scored} trials"
                  f" ({row['dms_early_success']:.3f} over the first {net.plastic_from}) of {args.test_lifetimes} lifetimes;"
                  f" CPU {row['cpu_s']:.0f} s", flush=True)
            if args.json:  # after every row: a long run that is stopped keeps what it finished
                with open(args.json, "w", encoding="utf-8") as fh:
                    json.dump(rows, fh, indent=1)
    json.dump(rows, sys.stdout)
    print()


if __name__ == "__main__":
    main()
