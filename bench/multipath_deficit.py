"""The multi-pathway critical period (Kleinman, Achille & Soatto, ICLR 2024, Figs. 2–3; their
``multipath/``) run through beyondbp under several rules: how the learned map splits between two
pathways after a window in which pathway b does not learn.

    python bench/multipath_deficit.py                                        # the authors' setting (lr 0.01)
    python bench/multipath_deficit.py --rules backprop,fa,dfa,kp,usf --lr 0.002 --time-scale 5 \\
        --figure bench/results/multipath_deficit.png

Setting (the authors' ``configs/multipath-depth4-analytical.yaml``): ``deep-linear`` with
``pathways=2``, depth 4, width 100, the task-aligned initialisation (mode strengths 0.01 · (1 +
0.1 z)), the ``hierarchy`` set (8 items × 15 features), full-batch SGD on ½·Σ squared error,
1000 steps at lr 0.01, a deficit of 150 steps starting at ``onset`` (theirs: 0, 400, 750).
``--time-scale k`` multiplies the steps, the onsets and the deficit length by ``k`` (use it with
``lr / k``: the same learning time lr × steps). Each (rule, onset, seed) is one
:func:`beyondbp.training.run` (one thread); results are kept in ``--results`` (JSON lines, by run
id) so an interrupted sweep resumes.

Printed: per rule and onset ("none": no deficit) pathway b's final share of the task's modes
(``share_b`` = Σ_α K_bα / Σ_α (K_aα + K_bα)), mean and range over seeds, the same minus the
no-deficit run of the same seed (paired: a random feedback rule splits the task unevenly even
without a deficit), and the largest final loss.
``--figure`` writes one panel per rule: the final share against the onset (in the authors' steps,
i.e. divided by the time scale), one point per seed, the no-deficit mean as a dashed line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from beyondbp.training import RunConfig, run

ROOT = Path(__file__).resolve().parent.parent
ONSETS = (0, 50, 100, 150, 200, 300, 400, 550, 750)


def config(rule: str, onset: int | None, seed: int, lr: float, scale: int, length: int) -> RunConfig:
    opts = {"train_steps": 1000 * scale, "eval_every": 250 * scale}
    opts.update({"deficit_length": 0} if onset is None else {"deficit_start": onset * scale,
                                                            "deficit_length": length * scale})
    return RunConfig(rule=rule, model="deep-linear", model_options={"depth": 4, "width": 100, "pathways": 2},
                     data="hierarchy", data_options=opts, optimizer="sgd", lr=lr, momentum=0.0, epochs=1,
                     seed=seed, threads=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", default="backprop,fa,kp")
    p.add_argument("--onsets", default=",".join(map(str, ONSETS)), help="deficit onsets, in the authors' steps")
    p.add_argument("--length", type=int, default=150, help="deficit length, in the authors' steps")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--time-scale", type=int, default=1)
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "multipath_deficit.jsonl")
    p.add_argument("--figure", type=Path, default=None)
    a = p.parse_args(argv)
    rules = a.rules.split(",")
    onsets: list[int | None] = [None, *(int(s) for s in a.onsets.split(","))]
    a.results.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if a.results.exists():
        for line in a.results.read_text().splitlines():
            rec = json.loads(line)
            done[rec["run_id"]] = rec
    cells: dict[tuple[str, int | None], list[dict]] = {}
    for rule in rules:
        for onset in onsets:
            for seed in range(a.seeds):
                cfg = config(rule, onset, seed, a.lr, a.time_scale, a.length)
                rec = done.get(cfg.run_id)
                if rec is None:
                    t0 = time.perf_counter()
                    r = run(cfg)
                    rec = {"run_id": cfg.run_id, "rule": rule, "onset": onset, "seed": seed, "lr": a.lr,
                           "time_scale": a.time_scale, "status": r.status, "share_b": r.final.get("share_b"),
                           "test_loss": r.final["test_loss"], "seconds": round(time.perf_counter() - t0, 2),
                           "K_a": [r.history[-1].get(f"K_a_{i}") for i in range(8)],
                           "K_b": [r.history[-1].get(f"K_b_{i}") for i in range(8)]}
                    with a.results.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                    done[cfg.run_id] = rec
                cells.setdefault((rule, onset), []).append(rec)
    print(f"lr {a.lr}, time scale {a.time_scale} ({1000 * a.time_scale} steps, deficit {a.length * a.time_scale} steps); "
          f"pathway b's final share of the task's modes, mean [min, max] over {a.seeds} seeds")
    print(f"{'rule':9s} {'onset':>6s} {'share_b':>8s} {'range':>16s} {'minus none':>11s} {'range':>16s} "
          f"{'max loss':>9s} {'status':>10s}")
    for (rule, onset), recs in cells.items():
        ok = [r for r in recs if r["status"] == "ok"]
        shares = [r["share_b"] for r in ok]
        status = "ok" if len(ok) == len(recs) else f"{len(recs) - len(ok)} diverged"
        base = {r["seed"]: r["share_b"] for r in cells[(rule, None)] if r["status"] == "ok"}
        diffs = [r["share_b"] - base[r["seed"]] for r in ok if r["seed"] in base]  # paired by seed
        if shares:
            print(f"{rule:9s} {('none' if onset is None else onset):>6} {statistics.fmean(shares):8.3f} "
                  f"[{min(shares):6.3f}, {max(shares):6.3f}] {statistics.fmean(diffs):+11.3f} "
                  f"[{min(diffs):+6.3f}, {max(diffs):+6.3f}] {max(r['test_loss'] for r in ok):9.2e} {status:>10s}")
        else:
            print(f"{rule:9s} {('none' if onset is None else onset):>6} {'-':>8s} {'':16s} {'-':>9s} {status:>10s}")
    if a.figure is not None:
        figure(cells, rules, onsets, a)
    return 0


def figure(cells: dict, rules: list[str], onsets: list, a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rules), figsize=(2.6 * len(rules), 2.6), sharey=True, squeeze=False)
    for ax, rule in zip(axes[0], rules):
        for onset in onsets[1:]:
            ys = [r["share_b"] for r in cells[(rule, onset)] if r["status"] == "ok"]
            ax.scatter([onset] * len(ys), ys, s=12, color="C0")
        none = [r["share_b"] for r in cells[(rule, None)] if r["status"] == "ok"]
        if none:
            ax.axhline(statistics.fmean(none), color="gray", linestyle="--", linewidth=1, label="no deficit")
        ax.set_title(rule)
        ax.set_xlabel(f"deficit onset (steps at lr {a.lr * a.time_scale:g})")
        ax.set_ylim(-0.05, 0.75)
    axes[0][0].set_ylabel("pathway b's final share")
    axes[0][0].legend(frameon=False, fontsize=7, loc="lower right")
    fig.tight_layout()
    a.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.figure, dpi=120)
    print(f"figure: {a.figure}")


if __name__ == "__main__":
    sys.exit(main())
