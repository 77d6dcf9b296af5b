"""Study throughput: runs per hour of a grid of tiny runs with 1 and with 2 local workers, and
the run store's overhead per run.

    PYTHONPATH=src python bench/study_throughput.py [--runs 24] [--repeats 3] [--steps 100]

Every repeat runs the same grid (MLP on MNIST-1D, backprop and dfa × seeds) into a fresh store
three ways, side by side in this one process: 1 worker with the executor's default threads
(``cores // 1``), 1 worker with 1 thread, and 2 workers (1 thread each). Throughput is runs
divided by the wall time of ``run_study`` (pool start included; the forkserver, started once
per process, is warmed up before the first measurement). The store's overhead is the time the
driver spent inside :class:`~beyondbp.study.store.Store` calls (``summary["store_seconds"]``,
timed around each call) divided by the workers' time in the runs (``run_seconds``). Goals
(issue 11): 2 workers ≥ 1.7× the throughput of 1; store overhead < 2 % of run time. The
ratios only mean something on an otherwise idle machine: the script prints the load average
before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from beyondbp.study.executors import available_cores  # noqa: E402
from beyondbp.study.runner import run_study  # noqa: E402
from beyondbp.study.spec import load_spec  # noqa: E402

SPEC = """[study]
name = "throughput"

[base]
model = "mlp"
data = "mnist1d"
data_options = {{num_samples = 2000}}
model_options = {{widths = [32]}}
steps = {steps}

[axes]
rule = ["backprop", "dfa"]
seed = {seeds}

[execution]
{execution}
"""


def write(directory: Path, name: str, runs: int, steps: int, threads: int | None) -> Path:
    path = directory / f"{name}.toml"
    execution = f"threads = {threads}" if threads else ""
    path.write_text(SPEC.format(steps=steps, seeds=list(range(runs // 2)), execution=execution))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24, help="runs in the grid (even)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    args = parser.parse_args()
    print(f"cores {available_cores()} · load average before {os.getloadavg()[0]:.2f} · grid of {args.runs} runs "
          f"({args.steps} steps, MLP [32] on MNIST-1D) · {args.repeats} repeats")
    setups = {
        "1 worker, default threads": (1, None),
        "1 worker, 1 thread": (1, 1),
        "2 workers, 1 thread each": (2, 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        warm = load_spec(write(tmp_path, "warm", 2, 5, 1))
        run_study(warm, tmp_path / "warm.db", workers=2)  # starts the forkserver (imports torch once)
        measured: dict[str, list[dict]] = {name: [] for name in setups}
        for repeat in range(args.repeats):
            for name, (workers, threads) in setups.items():
                spec = load_spec(write(tmp_path, f"grid{threads}", args.runs, args.steps, threads))
                summary = run_study(spec, tmp_path / f"{repeat}-{workers}-{threads}.db", workers=workers)
                assert summary["ran"] == args.runs, summary
                measured[name].append(summary)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"{'setup':<28} {'runs/hour':>10} {'s/run (worker)':>15} {'store ms/run':>13} {'store / run time':>17}")
    rates = {}
    for name, summaries in measured.items():
        rate = statistics.median(args.runs / s["wall_time"] * 3600 for s in summaries)
        per_run = statistics.median(s["run_seconds"] / args.runs for s in summaries)
        store_ms = statistics.median(1e3 * s["store_seconds"] / args.runs for s in summaries)
        overhead = statistics.median(s["store_seconds"] / s["run_seconds"] for s in summaries)
        rates[name] = rate
        print(f"{name:<28} {rate:>10,.0f} {per_run:>15.3f} {store_ms:>13.2f} {100 * overhead:>16.2f}%")
    best_one = max(rates["1 worker, default threads"], rates["1 worker, 1 thread"])
    two = rates["2 workers, 1 thread each"]
    print(f"throughput 2 workers / 1 worker: {two / rates['1 worker, default threads']:.2f}× (vs default threads), "
          f"{two / rates['1 worker, 1 thread']:.2f}× (vs 1 thread), {two / best_one:.2f}× (vs the faster of the two); "
          "goal ≥ 1.7×")


if __name__ == "__main__":
    main()
