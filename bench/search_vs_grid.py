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

With `--spec PATH` it takes an existing spec with a `[search]` and its finished search store
(`--store`, default beside the spec) instead: it copies the store into `--dir`, writes the grid
spec (the spec without `[search]`, `lr` = every rate the search tried in any cell of the label,
`seed` = every seed the search used in any cell), runs only the grid's missing runs and compares.
`--estimate` trains nothing: the grid's training FLOPs are then computed, not measured, from the
store (a run's FLOPs are FLOPs per step × steps, the same at every rate and seed of a (rule, model,
budget) cell; a grid run the store lacks is counted at the FLOPs of a finished, not diverged run
of its cell, which is exact unless it would have diverged early), and the grid's classes are not
known.

    python bench/search_vs_grid.py --spec examples/dfa_vs_bp_mlp.toml --estimate
    python bench/search_vs_grid.py --spec examples/dfa_vs_bp_mlp.toml --workers 2 --dir /tmp/svg

Goal (issue 23 §5): the search reaches the grid's verdict classes with ≤ 60 % of its FLOPs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from beyondbp.study.inspection import search_plan, study_records
from beyondbp.study.runner import run_study
from beyondbp.study.search import BOUNDED, BRACKETED
from beyondbp.study.selection import other_axes, record_label
from beyondbp.study.spec import default_store_path, load_spec
from beyondbp.study.store import Store
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


def measure(spec_path: Path, workers: int, train: bool = True) -> dict:
    spec = load_spec(spec_path)
    t0 = time.perf_counter()
    if train:
        summary = run_study(spec, workers=workers)
    else:
        with Store(default_store_path(spec_path), study=spec.name) as store:
            summary = {"search": search_plan(spec, store).summary()} if spec.search is not None else {}
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


def _toml(value: object) -> str:
    """``value`` (a string, number, bool, list or table of them) as a TOML value, tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def grid_text(spec_path: Path, tried: dict[str, list[float]], seeds: list) -> str:
    """The spec at ``spec_path`` as an exhaustive grid: no ``[search]``, ``lr`` = the rates in
    ``tried`` (label -> rates; one list for all labels when the spec's ``lr`` is one list),
    ``seed`` = ``seeds``; the study's name is kept, so the search's store is the grid's too."""
    tables = tomllib.loads(spec_path.read_text())
    tables.pop("search", None)
    axes = tables["axes"]
    if isinstance(axes["lr"], dict):
        axes["lr"] = {label: tried[label] for label in axes["lr"]}
    else:
        axes["lr"] = sorted({lr for rates in tried.values() for lr in rates})
    axes["seed"] = seeds
    lines = [f"# The exhaustive grid of {spec_path} over its search's span (bench/search_vs_grid.py)."]
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def estimate_grid(grid_path: Path) -> dict:
    """The grid's runs and training FLOPs, computed from its store without training (see the docstring)."""
    spec = load_spec(grid_path)
    with Store(default_store_path(grid_path), study=spec.name) as store:
        records = store.records()
    by_id = {r["id"]: r for r in records}
    per_cell: dict[tuple, float] = {}
    for r in records:
        if r["status"] == "done" and r.get("flops_total"):
            key = (record_label(r), json.dumps(other_axes(r), sort_keys=True, default=str))
            per_cell[key] = max(per_cell.get(key, 0.0), float(r["flops_total"]))
    flops, stored = 0.0, 0
    for run in spec.runs():
        rec = by_id.get(run.id)
        if rec is not None and rec["status"] in ("done", "diverged", "failed"):
            flops += float(rec["flops_total"] or 0)
            stored += 1
            continue
        axes = {k: v for k, v in run.axes.items() if k not in ("lr", "seed", "rule")}
        flops += per_cell[(run.label, json.dumps(axes, sort_keys=True, default=str))]
    return {"runs": len(spec.runs()), "runs_in_store": stored, "flops": flops, "classes": None, "edges": None}


def from_spec(args: argparse.Namespace, folder: Path) -> int:
    """``--spec``: the spec's finished search against the exhaustive grid of its span."""
    spec = load_spec(args.spec)
    source = args.store or default_store_path(args.spec)
    with Store(source, study=spec.name) as store:
        plan = search_plan(spec, store)
    if spec.search is None or plan.state_counts().get("searching") or plan.state_counts().get("waiting for smaller sizes"):
        print(f"{args.spec}: not a finished search (cells: {plan.state_counts()}); run `beyondbp study run` to the end first")
        return 2
    searched = folder / "search.toml"
    searched.write_text(args.spec.read_text())
    _copy_store(source, folder / "search.db")
    result = {"search": measure(searched, args.workers, train=False)}
    tried: dict[str, set[float]] = {}
    for cell in plan.cells:
        tried.setdefault(cell.label, set()).update(cell.lrs)
    span = {label: sorted(rates) for label, rates in tried.items()}
    seeds = sorted({r["axes"]["seed"] for r in study_records(load_spec(searched))})
    grid = folder / "grid.toml"
    grid.write_text(grid_text(args.spec, span, seeds))
    _copy_store(folder / "search.db", folder / "grid.db")  # shared runs: same ids, not trained again
    result["grid"] = estimate_grid(grid) if args.estimate else measure(grid, args.workers)
    result.update(span=span, seeds=seeds, flops_ratio=result["search"]["flops"] / result["grid"]["flops"],
                  same_classes=None if args.estimate else result["search"]["classes"] == result["grid"]["classes"])
    cells = result["search"]["search"]["cells"]
    settled = sum(1 for c in cells if c["state"] in (BRACKETED, BOUNDED))
    print(f"{args.spec}; rates tried: {', '.join(f'{x:g}' for x in sorted(set().union(*span.values())))}; seeds {seeds}")
    print(f"{'':8} {'runs':>6} {'train FLOPs':>12}  verdict classes")
    for name in ("search", "grid"):
        r = result[name]
        note = " (computed from the store, not trained)" if name == "grid" and args.estimate else ""
        print(f"{name:8} {r['runs']:>6} {r['flops']:>12.3e}  {r['classes']}{note}")
    print(f"search / grid FLOPs: {result['flops_ratio']:.2f} · same classes: {result['same_classes']} · "
          f"cells bracketed or bounded: {settled} of {len(cells)} · {result['search']['search']['states']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


def _copy_store(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite store ``source`` (its write-ahead log included)."""
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a smoke run on tiny data and models")
    parser.add_argument("--spec", type=Path, help="an existing spec with [search] and its finished store")
    parser.add_argument("--store", type=Path, help="with --spec: its store (default: beside the spec)")
    parser.add_argument("--estimate", action="store_true", help="with --spec: compute the grid's FLOPs, train nothing")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where the specs and stores go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.spec is not None:
        folder = args.dir or Path(tempfile.mkdtemp(prefix="search-vs-grid-"))
        folder.mkdir(parents=True, exist_ok=True)
        return from_spec(args, folder)
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
