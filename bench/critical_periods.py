"""Critical learning periods in deep linear networks (Kleinman, Achille & Soatto, ICLR 2024): a slice
of ``examples/critical_periods.toml`` run through beyondbp, with means and intervals over seeds.

    python bench/critical_periods.py --depths 1,3 --deficits 0,40000 --seeds 5
    python bench/critical_periods.py --rules fa,dfa,kp,usf --depths 1,2,3 --seeds 3 --figures bench/results
    python bench/critical_periods.py --report-only            # the table from the results file

Every run of the spec whose rule, depth, deficit length T (``data_options.deficit_steps``) and
seed are in the slice is trained by :func:`beyondbp.training.run` (one thread) unless the results
file (``--results``, JSON lines, one per run id) has it already, so an interrupted sweep resumes.

Printed: per (rule, depth, T) the mean final test loss (MSE over all entries) over seeds with a
95 % Student-t interval, and per (rule, depth) the paired difference "T = largest minus T = 0"
over the seeds that have both, with its interval; then when the window closes: per intermediate
T the paired "T minus T = 0" and "largest minus T" (:func:`closing`). ``--figures DIR`` writes one figure per rule:
test loss against deficit length, one line per depth, with the intervals as error bars.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from beyondbp.study.spec import load_spec
from beyondbp.training import run

ROOT = Path(__file__).resolve().parent.parent


def t_quantile(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (two-sided 95 %)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
    if df in table:
        return table[df]
    below = max(k for k in table if k < df) if df > 1 else 1
    return table[below] if df < 30 else 1.96


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (NaN with fewer than two values)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, math.nan
    return m, t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def tail_change(curve: list, window: int = 5000) -> float:
    """How much the test loss moved over the last ``window`` steps of a run's curve ([step, loss]
    pairs): |loss at the last step − loss at the last evaluation ≤ last step − window| (NaN when
    the curve is shorter than the window). Near 0: the run ended on a plateau."""
    if not curve:
        return math.nan
    last_step, last = curve[-1]
    before = [loss for step, loss in curve if step <= last_step - window]
    return abs(last - before[-1]) if before else math.nan


def numbers(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["run_id"]: r for r in rows}


def sweep(args: argparse.Namespace, results: dict[str, dict]) -> None:
    spec = load_spec(args.spec)
    rules, depths, deficits = set(args.rules.split(",")), set(numbers(args.depths)), set(numbers(args.deficits))
    seeds = sorted({p.config.seed for p in spec.runs()})[: args.seeds] if args.seeds else None
    todo = [p for p in spec.runs()
            if p.label in rules and p.config.model_options["depth"] in depths
            and p.config.data_options["deficit_steps"] in deficits and (seeds is None or p.config.seed in seeds)]
    # cheapest first, so the smallest complete grid is done early
    todo.sort(key=lambda p: (p.config.data_options["deficit_steps"], p.config.model_options["depth"], p.config.seed),
              reverse=args.reverse)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for i, planned in enumerate(todo, 1):
        results.update(load_results(args.results))  # another process may share the file (--reverse)
        if planned.id in results:
            continue
        config = planned.config.replace(threads=1)
        t0 = time.perf_counter()
        result = run(config)
        row = {
            "run_id": planned.id, "rule": planned.label, "depth": config.model_options["depth"],
            "T": config.data_options["deficit_steps"], "seed": config.seed, "status": result.status,
            "test_loss": result.final["test_loss"], "unobserved_loss": result.history[-1].get("unobserved_loss"),
            "train_loss": result.final["train_loss"], "steps": result.steps,
            "time_per_step": result.time_per_step, "seconds": round(time.perf_counter() - t0, 2),
            "curve": [(h["step"], h["test_loss"]) for h in result.history],
        }
        results[planned.id] = row
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{i}/{len(todo)}] {row['rule']} depth {row['depth']} T {row['T']} seed {row['seed']}: "
              f"test loss {row['test_loss']:.4f} ({row['seconds']:.0f} s)", flush=True)


def report(args: argparse.Namespace, results: dict[str, dict]) -> None:
    rules = args.rules.split(",")
    depths, deficits = set(numbers(args.depths)), set(numbers(args.deficits))
    cells: dict[tuple, dict[int, float]] = defaultdict(dict)
    tails: dict[tuple, list[float]] = defaultdict(list)
    for r in results.values():
        if r["rule"] in rules and r["depth"] in depths and r["T"] in deficits:
            if r["status"] != "ok" or not math.isfinite(r["test_loss"]):
                print(f"not ok: {r['rule']} depth {r['depth']} T {r['T']} seed {r['seed']}: status {r['status']}, "
                      f"test loss {r['test_loss']}")
                continue
            cells[(r["rule"], r["depth"], r["T"])][r["seed"]] = r["test_loss"]
            tails[(r["rule"], r["depth"], r["T"])].append(tail_change(r.get("curve") or []))
    print("\nfinal test loss (MSE over all entries), mean ± 95% t-interval over seeds;"
          " tail: largest change over the last 5000 steps")
    print(f"{'rule':>9} {'depth':>5} {'T':>7} {'n':>3} {'mean':>7} {'±':>6} {'tail':>7}   seeds")
    for key in sorted(cells, key=lambda k: (rules.index(k[0]), k[1], k[2])):
        values = [cells[key][s] for s in sorted(cells[key])]
        m, h = mean_interval(values)
        tail = max((t for t in tails[key] if not math.isnan(t)), default=math.nan)
        print(f"{key[0]:>9} {key[1]:>5} {key[2]:>7} {len(values):>3} {m:7.3f} {h:6.3f} {tail:7.4f}   "
              + " ".join(f"{v:.3f}" for v in values))
    print("\npaired difference, T = largest minus T = 0 (same seeds)")
    for rule in rules:
        for depth in sorted(depths):
            ts = sorted(t for (ru, d, t) in cells if ru == rule and d == depth)
            if len(ts) < 2 or ts[0] != 0:
                continue
            low, high = cells[(rule, depth, 0)], cells[(rule, depth, ts[-1])]
            common = sorted(set(low) & set(high))
            if not common:
                continue
            m, h = mean_interval([high[s] - low[s] for s in common])
            verdict = "above 0" if m - h > 0 else ("below 0" if m + h < 0 else "contains 0")
            print(f"{rule:>9} depth {depth}: T={ts[-1]} − T=0 = {m:+.4f} ± {h:.4f} (n={len(common)}; interval {verdict})")
    closing(cells, rules, depths)
    if args.figures:
        figures(args, cells, rules)


def closing(cells: dict[tuple, dict[int, float]], rules: list[str], depths: set[int]) -> None:
    """When the window closes: per intermediate T, how much of the largest deficit's damage a
    deficit of T already does — the paired differences "T minus T = 0" (damage so far) and
    "largest minus T" (damage still to come; an interval above 0: still open at T)."""
    rows = []
    for rule in rules:
        for depth in sorted(depths):
            ts = sorted(t for (ru, d, t) in cells if ru == rule and d == depth)
            if len(ts) < 3 or ts[0] != 0:
                continue
            low, high = cells[(rule, depth, 0)], cells[(rule, depth, ts[-1])]
            for t in ts[1:-1]:
                mid = cells[(rule, depth, t)]
                common = sorted(set(low) & set(mid) & set(high))
                if len(common) < 2:
                    continue
                done = mean_interval([mid[s] - low[s] for s in common])
                left = mean_interval([high[s] - mid[s] for s in common])
                verdict = "contains 0" if abs(left[0]) <= left[1] else ("above 0" if left[0] > 0 else "below 0")
                rows.append(f"{rule:>9} {depth:>5} {t:>7} {len(common):>3} {done[0]:+8.3f} ± {done[1]:.3f} "
                            f"{left[0]:+8.3f} ± {left[1]:.3f}   {verdict}")
    if rows:
        print(f"\nclosing: paired T − 0 (damage done) and T = largest − T (still to come), same seeds\n"
              f"{'rule':>9} {'depth':>5} {'T':>7} {'n':>3} {'T − 0':>16} {'largest − T':>16}   (largest − T)")
        print("\n".join(rows))


def figures(args: argparse.Namespace, cells: dict[tuple, dict[int, float]], rules: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    for rule in rules:
        keys = [k for k in cells if k[0] == rule]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for depth in sorted({k[1] for k in keys}):
            ts = sorted(k[2] for k in keys if k[1] == depth)
            stats = [mean_interval(list(cells[(rule, depth, t)].values())) for t in ts]
            ax.errorbar([t / 1000 for t in ts], [s[0] for s in stats], yerr=[0 if math.isnan(s[1]) else s[1] for s in stats],
                        marker="o", markersize=3, capsize=2, label=f"depth {depth}")
        ax.set_xscale("symlog", linthresh=1)  # T = 0 at the origin, 1k…100k spread out
        ticks = sorted({k[2] / 1000 for k in keys})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.set_xlabel("deficit length T (thousands of steps, symlog)")
        ax.set_ylabel("final test loss")
        ax.set_ylim(bottom=0)
        ax.set_title(f"critical period under {rule}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"critical_periods_{rule}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "examples" / "critical_periods.toml")
    parser.add_argument("--rules", default="backprop", help="comma-separated rule labels of the spec")
    parser.add_argument("--depths", default="1,3")
    parser.add_argument("--deficits", default="0,40000", help="deficit lengths T (data_options.deficit_steps)")
    parser.add_argument("--seeds", type=int, default=5, help="the first N seeds of the spec (0: all)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "critical_periods.jsonl")
    parser.add_argument("--figures", default=None, help="folder for one figure per rule")
    parser.add_argument("--report-only", action="store_true", help="print the table from the results file")
    parser.add_argument("--reverse", action="store_true",
                        help="costliest runs first (a second process sharing the results file takes them)")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if not args.report_only:
        sweep(args, results)
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
