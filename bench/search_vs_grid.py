"""Learning-rate bracketing against the exhaustive grid of the same span (issue 23 §1, §5).

Runs a reduced `examples/dfa_vs_bp_mlp.toml` (backprop and DFA × 2 widths × 2 epoch budgets,
3 seeds, Adam) with `[search] lr` bracketing from the spec's three rates, then the exhaustive
grid: every cell at every rate the search tried in any cell (the same span). The grid's store
starts as a copy of the search's (the runs they share have the same ids and are not trained
again), so both are measured on the same runs. Prints, for each, the runs, the training FLOPs
(`flops_total` summed over the study's runs, as recorded in the store), each cell's best rate
and the verdict classes (`judge_study`, no L(N, D) fit); `--out` writes them as JSON.

    python bench/search_vs_grid.py --workers 2            # the reduced study (about an hour on 2 cores)
    python bench/search_vs_grid.py --tiny                 # a smoke run (tiny data and models, seconds)

Goal (issue 23 §5): the search reaches the grid's verdict classes with ≤ 60 % of its FLOPs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from beyondbp.study.inspection import study_records
from beyondbp.study.runner import run_study
from beyondbp.study.spec import load_spec
from beyondbp.study.verdict import judge_study

FULL = {
    "base": 'model = "mlp"\ndata = "mnist1d"\noptimizer = "adam"\nbatch_size = 64\n',
    "widths": ["[32, 32]", "[128, 128]"],
    "epochs": [6, 18],
    "lr": [5e-4, 2e-3, 8e-3],
    "search": "factor = 4, max_rounds = 4",
}
TINY = {
    "base": 'model = "mlp"\ndata = "mnist1d"\ndata_options = {num_samples = 400}\noptimizer = "adam"\nbatch_size = 64\n',
    "widths": ["[8]", "[16]"],
    "epochs": [1, 2],
    "lr": [1e-3, 1e-2],
    "search": "factor = 4, max_rounds = 3",
}


def spec_text(size: dict, lrs: list[float], search: bool) -> str:
    widths = ", ".join(f"{{widths = {w}}}" for w in size["widths"])
    text = (f'[study]\nname = "search-vs-grid"\n\n[base]\n{size["base"]}\n[axes]\nrule = ["backprop", "dfa"]\n'
            f"model_options = [{widths}]\nepochs = {size['epochs']}\nlr = [{', '.join(repr(x) for x in lrs)}]\n"
            "seed = [0, 1, 2]\n")
    return text + (f"\n[search]\nlr = {{{size['search']}}}\n" if search else "")


def measure(spec_path: Path, workers: int) -> dict:
    spec = load_spec(spec_path)
    t0 = time.perf_counter()
    summary = run_study(spec, workers=workers)
    records = study_records(spec)
    flops = sum(float(r["flops_total"] or 0) for r in records)
    analysis = judge_study(records, loss_law=False)
    return {
        "runs": len(records),
        "flops": flops,
        "wall_s": time.perf_counter() - t0,
        "classes": {label: v.cls for label, v in analysis.verdicts.items()},
        "best_lr": {f"{row.label} {json.dumps(row.axes, sort_keys=True)}": row.best_lr for row in analysis.best_lr},
        "edges": sum(1 for row in analysis.best_lr if row.edge),
        "search": summary.get("search"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a smoke run on tiny data and models")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where the specs and stores go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    folder = args.dir or Path(tempfile.mkdtemp(prefix="search-vs-grid-"))
    folder.mkdir(parents=True, exist_ok=True)
    searched = folder / "search.toml"
    searched.write_text(spec_text(size, size["lr"], search=True))
    result = {"search": measure(searched, args.workers)}
    span = sorted({lr for cell in result["search"]["search"]["cells"] for lr in cell["lrs"]})
    grid = folder / "grid.toml"
    grid.write_text(spec_text(size, span, search=False))
    shutil.copyfile(folder / "search.db", folder / "grid.db")  # shared runs: same ids, not trained again
    result["grid"] = measure(grid, args.workers)
    result["span"] = span
    result["flops_ratio"] = result["search"]["flops"] / result["grid"]["flops"]
    result["same_classes"] = result["search"]["classes"] == result["grid"]["classes"]
    states = result["search"]["search"]["states"]
    print(f"{'tiny smoke run' if args.tiny else 'reduced dfa_vs_bp_mlp'}; rates tried: {', '.join(f'{x:g}' for x in span)}")
    print(f"{'':8} {'runs':>6} {'train FLOPs':>12} {'cells at an edge':>17}  verdict classes")
    for name in ("search", "grid"):
        r = result[name]
        print(f"{name:8} {r['runs']:>6} {r['flops']:>12.3e} {r['edges']:>17}  {r['classes']}")
    print(f"search / grid FLOPs: {result['flops_ratio']:.2f} · same classes: {result['same_classes']} · "
          f"cells: {states} · search rounds: {result['search']['search']['rounds']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
