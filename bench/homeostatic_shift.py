"""Homeostatic learning rates under concept shift (issue 26; "Need is All You Need: Homeostatic
Neural Networks Adapt to Concept Shift", Man, Damasio, Neven).

Fashion-MNIST whose labels drift (``fashion-mnist-shift``: two random classes swap labels k
times per epoch), the authors' MLP 784-80-60-10 with ELU at batch size 10, and four arms:
fixed-η SGD, random nudges (``lr_control="random"``), homeostatic (``lr_control="homeostatic"``)
and Adam. For every (arm, k, seed) the figure is the mean validation (test-set) accuracy over
the evaluations made during training, labels read as they are at each evaluation — one per epoch
(the authors' 50 epochs give 50), or ``--evals-per-epoch M`` evenly spaced in each epoch's steps
(the run's ``evals_per_epoch``; the last at the epoch's end); then, per (arm, k), the mean over
seeds with a 95% t-interval, and the paired difference homeostatic − fixed SGD per k.

    python bench/homeostatic_shift.py --epochs 3 --n-train 3000 --n-test 2000 --seeds 0 1 2 --out /tmp/hs

Under another rule, with the gap to a backprop run of the same sizes and seeds (its runs.json;
rows "<arm> − backprop sgd", paired by seed, which also fixes the swap schedule):

    python bench/homeostatic_shift.py --rule fa --epochs 3 --n-train 3000 --n-test 2000 --seeds 0 1 2 \
        --baseline /tmp/hs/runs.json --out /tmp/hs_fa

The full-size setting of the authors (60,000 samples, 50 epochs, lr 1e-3, 5 seeds) is the
study spec ``examples/homeostatic_shift.toml``; this script is the reduced version whose
figures are in bench/README.md. One thread.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from beyondbp.training import RunConfig, run

ARMS = {
    "sgd": {"optimizer": "sgd", "momentum": 0.0},
    "random": {"optimizer": "sgd", "momentum": 0.0, "lr_control": "random"},
    "homeostatic": {"optimizer": "sgd", "momentum": 0.0, "lr_control": "homeostatic"},
    "adam": {"optimizer": "adam"},
}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def val_accuracies(history: list[dict]) -> list[float]:
    """Every validation accuracy measured during a run, in order: each epoch's ``evals`` when the
    run evaluated within epochs (``evals_per_epoch`` > 1), else its one end-of-epoch evaluation."""
    return [e["test_accuracy"] for h in history for e in h.get("evals", [h])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ks", type=int, nargs="+", default=[0, 1, 10, 100])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--rule", default="backprop")
    ap.add_argument("--lr", type=float, default=0.01, help="SGD arms' η₀ (Adam: --adam-lr)")
    ap.add_argument("--adam-lr", type=float, default=1e-3)
    ap.add_argument("--init", choices=["default", "he-normal"], default="default",
                    help="he-normal: the authors' initialisation (weights N(0, 2/fan_in), biases N(0, 1))")
    ap.add_argument("--evals-per-epoch", type=int, default=1,
                    help="validation evaluations per epoch, evenly spaced in its steps, all averaged")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--baseline", type=Path, help="runs.json of a backprop run with the same sizes and seeds: "
                    "adds each arm's paired gap to its sgd arm (several files: their runs together)", nargs="+")
    ap.add_argument("--metric", choices=["mean_val_acc", "final_val_acc"], default="mean_val_acc",
                    help="the table's figure: the mean over every evaluation (default) or the last one alone")
    ap.add_argument("--report-from", type=Path, nargs="+",
                    help="train nothing: the table from these runs.json files together (e.g. two seed ranges)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    init_options = {"init": "he-normal", "bias_std": 1.0} if args.init == "he-normal" else {}
    rows = []
    if args.report_from:
        rows = [r for f in args.report_from for r in json.loads(f.read_text()) if r["seed"] in args.seeds]
    for k in args.ks if not args.report_from else []:
        for seed in args.seeds:
            for arm in args.arms:
                config = RunConfig(
                    rule=args.rule, model="mlp", model_options={"widths": [80, 60], "activation": "elu", **init_options},
                    data="fashion-mnist-shift", data_options={"swaps_per_epoch": k, "normalize": False, "shift_seed": seed},
                    epochs=args.epochs, n_train=args.n_train, n_test=args.n_test, batch_size=10,
                    lr=args.adam_lr if arm == "adam" else args.lr, seed=seed, threads=1,
                    evals_per_epoch=args.evals_per_epoch, **ARMS[arm],
                )
                t0 = time.perf_counter()
                result = run(config)
                accs = val_accuracies(result.history)
                rows.append({"arm": arm, "k": k, "seed": seed, "mean_val_acc": statistics.fmean(accs),
                             "final_val_acc": accs[-1], "accs": accs, "status": result.status,
                             "eval_steps": [e["step"] for h in result.history for e in h.get("evals", [h])],
                             "lr_controlled": [h["metrics"].get("lr_controlled") for h in result.history],
                             "seconds": time.perf_counter() - t0})
                (args.out / "runs.json").write_text(json.dumps(rows, indent=1))
    lines = ["| arm | " + " | ".join(f"k = {k}" for k in args.ks) + " |", "|---|" + "---|" * len(args.ks)]
    for arm in args.arms:
        cells = []
        for k in args.ks:
            mean, half = interval([r[args.metric] for r in rows if r["arm"] == arm and r["k"] == k])
            cells.append(f"{100 * mean:.1f} ± {100 * half:.1f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if {"homeostatic", "sgd"} <= set(args.arms):
        cells = []
        for k in args.ks:
            by = {(r["arm"], r["seed"]): r[args.metric] for r in rows if r["k"] == k}
            mean, half = interval([by[("homeostatic", s)] - by[("sgd", s)] for s in args.seeds])
            cells.append(f"{100 * mean:+.1f} ± {100 * half:.1f}")
        lines.append("| homeostatic − sgd (paired) | " + " | ".join(cells) + " |")
    if args.baseline is not None:
        base = {(r["k"], r["seed"]): r[args.metric] for f in args.baseline for r in json.loads(f.read_text())
                if r["arm"] == "sgd"}
        for arm in args.arms:
            cells = []
            for k in args.ks:
                by = {r["seed"]: r[args.metric] for r in rows if r["arm"] == arm and r["k"] == k}
                mean, half = interval([by[s] - base[(k, s)] for s in args.seeds])
                cells.append(f"{100 * mean:+.1f} ± {100 * half:.1f}")
            lines.append(f"| {arm} − backprop sgd (paired) | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
