"""Scale of the study harness: the time to load, validate and plan a spec of 100,000 runs, and
the time of ``study status`` on a store holding them.

    PYTHONPATH=src python bench/spec_scale.py [--runs 100000] [--slow]

The grid is rule (backprop, dfa with options, fa) × lr × seed × model_options (widths), sized to
``--runs`` (at most :data:`~beyondbp.study.spec.MAX_RUNS`). The store is synthetic: every run
inserted as the study would insert it (``Store.add_runs``), then most rows set to ``done`` with a
wall time, some ``failed`` and some ``running`` in one SQL update each (no training). Status is
timed with the spec already loaded (:func:`~beyondbp.study.inspection.study_status`) and end to
end as the command line answers it (``beyondbp study status``: spec, store and rendering, in a
fresh process; then twice more once the plan is kept in the store as ``study run`` keeps it,
answered from it: :mod:`beyondbp.study.status_plan`). ``--slow`` also plans the grid the way
every run was planned before (one ``RunConfig`` and one ``run_id`` per combination,
``spec._fast_planning = False``) in this process, checks that the ids agree and prints the ratio. Goals (issue 23 §7): load and plan
< 2 s, status < 1 s. Times are wall and CPU seconds: on a shared machine the CPU time is the
steadier figure; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from beyondbp.study import spec as spec_mod
from beyondbp.study.inspection import study_status
from beyondbp.study.spec import MAX_RUNS, load_spec
from beyondbp.study.store import Store

SPEC = """[study]
name = "scale"

[base]
model = "mlp"
data = "mnist1d"
steps = 100

[axes]
rule = ["backprop", {{name = "dfa", label = "dfa-linear", options = {{init = "uniform"}}}}, "fa"]
lr = {lrs}
seed = {seeds}
model_options = {widths}
"""


def write(directory: Path, runs: int) -> Path:
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    widths = [{"widths": [w]} for w in range(16, 16 + 40)]
    seeds = max(1, runs // (3 * len(lrs) * len(widths)))
    toml_widths = "[" + ", ".join(f"{{widths = [{w['widths'][0]}]}}" for w in widths) + "]"
    path = directory / "scale.toml"
    path.write_text(SPEC.format(lrs=lrs, seeds=list(range(seeds)), widths=toml_widths))
    return path


def timed(fn, *args):
    """``fn(*args)``, and its wall time and this process's CPU time (the machine may be shared)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def show(seconds: tuple[float, float]) -> str:
    return f"{seconds[0]:.2f} s (CPU {seconds[1]:.2f} s)"


def cli_status(path: Path, store_path: Path, what: str) -> str:
    """``beyondbp study status`` in a fresh process: its wall and CPU time printed, its output returned."""
    env = {**os.environ, "COLUMNS": "120"}
    before = os.times()
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "beyondbp", "study", "status", str(path), "--store", str(store_path)],
                          capture_output=True, text=True, env=env)
    cli = time.perf_counter() - t0
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    print(f"beyondbp study status ({what}): {cli:.2f} s (CPU {cpu:.2f} s), exit {done.returncode}")
    if done.returncode:
        print(done.stderr)
    return done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=MAX_RUNS, help="about this many runs in the grid")
    parser.add_argument("--slow", action="store_true", help="also plan every run through RunConfig, as before")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), min(args.runs, MAX_RUNS))
        spec, load = timed(load_spec, path)
        runs = spec.runs()
        print(f"spec: {spec.summary()}")
        print(f"load, validate and plan: {show(load)} ({len(runs):,} runs)")
        if args.slow:
            spec_mod._fast_planning = False
            try:
                slow_spec, slow = timed(load_spec, path)
            finally:
                spec_mod._fast_planning = True
            same = [r.id for r in slow_spec.runs()] == [r.id for r in runs]
            print(f"  every combination through RunConfig (as before): {show(slow)}, ids identical: {same}; "
                  f"ratio {slow[0] / load[0]:.1f}× (CPU {slow[1] / load[1]:.1f}×)")
        store_path = Path(tmp) / "scale.db"
        with Store(store_path, create=True, study=spec.name) as store:
            _, insert = timed(store.add_runs, runs)
            conn = store._conn
            conn.execute("UPDATE runs SET status = 'done', wall_time = 1.5 + (position % 7) WHERE position % 10 < 8")
            conn.execute("UPDATE runs SET status = 'failed', wall_time = 0.5, error = 'boom\nline 2' WHERE position % 100 = 95")
            conn.execute("UPDATE runs SET status = 'running', lease_host = 'elsewhere', lease_pid = 1, "
                         "lease_expires = 1e12, heartbeat = 1e12 WHERE position % 1000 = 999")
            conn.commit()
        print(f"store: {len(runs):,} runs inserted in {show(insert)} (not a goal)")
        for _ in range(2):  # the first read also brings the file into the page cache
            status, took = timed(study_status, spec, store_path)
            print(f"study_status (spec loaded): {show(took)}; counts {status['counts']}")
        plain = cli_status(path, store_path, "fresh process: imports, spec load and status")
        if hasattr(Store, "save_status_plan"):  # keep the plan as `study run` does, then answer from it
            from beyondbp.study.status_plan import spec_key

            with Store(store_path, create=True, study=spec.name) as store:
                _, keep = timed(store.save_status_plan, spec_key(spec.text.encode("utf-8")), runs)
            print(f"plan kept in the store (as `study run` keeps it): {show(keep)} (not a goal)")
            for _ in range(2):
                kept = cli_status(path, store_path, "fresh process, from the kept plan")
            print(f"  output identical to the spec-loading path: {kept == plain}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
