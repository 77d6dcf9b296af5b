"""``study status`` of a spec with ``[search]`` on a store of many finished runs: what reading the
store costs the search planner.

    PYTHONPATH=src python bench/status_search_scale.py [--runs 20000] [--history 20]

The spec is rule (backprop, dfa) × widths × steps × lr (5 rates) × seed (5), with ``[search] lr``
and ``seeds``, sized to about ``--runs`` runs. The store is synthetic: every run inserted as
the study inserts it (``Store.add_runs``), then recorded ``done`` with a result shaped as
``RunResult.to_dict()`` (``--history`` evaluations in its ``history``, about 4 kB at 20), whose
final test loss is a bowl in log lr (best rate interior, so every cell is bracketed) — no training.

Times, each the best of ``--repeat``: reading the store the two ways (``Store.records()``: every
column, every JSON parsed; ``Store.search_records()``: the slim projection the planner reads),
:func:`~beyondbp.study.search.plan_search` from each (its plans must be identical), and
:func:`~beyondbp.study.inspection.study_status` (spec loaded). The seed search judges the
finished study once (:func:`~beyondbp.study.verdict.judge_study`, 200 resamples); that
judgement is remembered within a process, so the plans after the first are timed without it
and the first plan's time is reported apart. Then ``beyondbp study status`` in a fresh process,
the spec loaded (it judges once), and, once the plan is kept in the store as ``study run``
keeps it (:mod:`beyondbp.study.status_plan`), answered from it. Wall and CPU seconds (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

from spec_scale import cli_status  # bench/ is the script's folder, first on sys.path

from beyondbp.study import search as search_mod
from beyondbp.study.inspection import study_status
from beyondbp.study.search import plan_search
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Store

SPEC = """[study]
name = "status-search"

[base]
model = "mlp"
data = "mnist1d"
batch_size = 64

[axes]
rule = ["backprop", "dfa"]
model_options = {widths}
steps = [100, 200, 400, 800]
lr = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
seed = [0, 1, 2, 3, 4]

[search]
lr = {{factor = 3, max_rounds = 3}}
seeds = {{min = 5, max = 6}}
"""


def write(directory: Path, runs: int) -> Path:
    n_widths = max(1, runs // (2 * 4 * 5 * 5))
    widths = "[" + ", ".join(f"{{widths = [{w}]}}" for w in range(16, 16 + n_widths)) + "]"
    path = directory / "status_search.toml"
    path.write_text(SPEC.format(widths=widths))
    return path


def result(config: dict, history: int) -> dict:
    """A ``RunResult.to_dict()``-shaped result: loss a bowl in log lr around 1e-3, lower with
    more steps and width, dfa worse by 0.05, seeds apart by 0.001."""
    width = config["model_options"]["widths"][0]
    steps = int(config["steps"])
    loss = 0.3 + 20 / steps + 2 / width + 0.05 * (config["rule"] == "dfa") + 0.1 * math.log(config["lr"] / 1e-3) ** 2
    loss += 0.001 * int(config["seed"])
    fps = 1000 * width * (3 if config["rule"] == "backprop" else 2)
    hist = [{"step": int(steps * (i + 1) / history), "epoch": i + 1, "train_loss": loss + 0.5 / (i + 1),
             "test_loss": loss + 0.4 / (i + 1), "test_accuracy": 0.9 - 0.3 / (i + 1), "time": 0.01 * (i + 1),
             "flops": fps * int(steps * (i + 1) / history)} for i in range(history)]
    return {
        "config": config, "rule": config["rule"], "rule_options": {}, "history": hist,
        "final": {"train_loss": loss - 0.01, "test_loss": loss, "test_accuracy": 0.9, "diagnostics": {}},
        "flops_per_step": fps, "flops_batch_size": 64, "time_per_step": 4e-4, "timed_steps": steps - 2,
        "n_params": 50 * width, "steps": steps, "epochs": None, "total_time": 1.9, "train_time": 0.05,
        "status": "ok", "diverged": False, "diverged_at_step": None, "init_from": {},
        "data": {"name": "mnist1d", "n_train": 4000, "n_test": 1000, "shape": [40], "classes": 10},
        "environment": {"beyondbp": "0.1.0", "torch": "2.13.0+cpu", "device": "cpu", "threads": 1},
        "checkpoint": None, "effective_flops_per_step": fps, "n_active_params": 50 * width, "sparsity": {},
        "tokens": None, "flops_per_token": None, "time_per_token": None, "run_id": "x", "eval_flops": 384000,
        "resumed_from_step": None, "spikes": {},
    }


def fill(store_path: Path, spec, history: int) -> int:
    """Every run of the spec's plan (no search records: its grid and the seeds ``min`` adds), done."""
    runs = plan_search(spec, []).runs
    dumps = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))  # noqa: E731
    with Store(store_path, create=True, study=spec.name) as store:
        store.add_runs(runs)
        rows = []
        for run in runs:
            config = run.config.model_dump()
            res = result(config, history)
            rows.append((dumps(res), dumps(res["final"]), res["n_params"], res["flops_per_step"],
                         res["flops_per_step"] * res["steps"], res["eval_flops"], run.id))
        store._conn.executemany(
            "UPDATE runs SET status = 'done', result = ?, final = ?, n_params = ?, flops_per_step = ?, flops_total = ?, "
            "eval_flops = ?, wall_time = 1.5, versions = '{}', host = 'bench', attempts = 1 WHERE id = ?", rows)
        store._conn.commit()
        size = os.path.getsize(store_path)
    return size


def best(fn, repeat: int):
    times = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return out, min(times)


def show(t: tuple[float, float]) -> str:
    return f"{t[0]:.2f} s (CPU {t[1]:.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--history", type=int, default=20, help="evaluations in each result's history")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(write(Path(tmp), args.runs))
        store_path = Path(tmp) / "status_search.db"
        size = fill(store_path, spec, args.history)
        with Store(store_path, study=spec.name) as store:
            n = len(store.statuses())
            print(f"store: {n:,} done runs, {size / 1e6:.0f} MB ({args.history} evaluations per result)")
            full, t_full = best(store.records, args.repeat)
            print(f"Store.records() (every column):         {show(t_full)}")
            slim = None
            if hasattr(store, "search_records"):
                slim, t_slim = best(store.search_records, args.repeat)
                print(f"Store.search_records() (the planner's): {show(t_slim)}  ({t_full[0] / t_slim[0]:.1f}x)")
        search_mod._JUDGED.clear()
        first, t_first = best(lambda: plan_search(spec, full, "backprop"), 1)
        print(f"plan_search, first (judges the study once): {show(t_first)}; "
              f"{first.added} runs added, states {first.state_counts()}")
        plan, t_plan = best(lambda: plan_search(spec, full, "backprop"), args.repeat)
        print(f"plan_search (judgement remembered):          {show(t_plan)}")
        if slim is not None:
            plan_slim = plan_search(spec, slim, "backprop")
            same = [r.id for r in plan_slim.runs] == [r.id for r in plan.runs] and plan_slim.summary() == plan.summary()
            print(f"plans from records and from search_records identical: {same}")
        _, t_status = best(lambda: study_status(spec, store_path), args.repeat)
        print(f"study_status (spec loaded, judgement remembered): {show(t_status)}")
        search_mod._JUDGED.clear()
        _, t_cold = best(lambda: study_status(spec, store_path), 1)
        print(f"study_status, first in a process (judges once):   {show(t_cold)}")
        loaded = cli_status(spec.path, store_path, "fresh process, the spec loaded")
        if hasattr(Store, "save_status_plan"):  # keep the plan as `study run` does when it plans, then answer from it
            from beyondbp.study.runner import _plan_kept

            with Store(store_path, create=True, study=spec.name) as store:
                _, t_keep = best(lambda: _plan_kept(spec, store), 1)
            print(f"plan kept in the store (as `study run` keeps it; judgement remembered): {show(t_keep)}")
            for _ in range(args.repeat):
                kept = cli_status(spec.path, store_path, "fresh process, from the kept plan")
            print(f"  output identical to the spec-loading path: {kept == loaded}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
