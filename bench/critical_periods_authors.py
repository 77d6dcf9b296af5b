"""The authors' matrix-completion script run side by side with ``bench/critical_periods.py``
(benchmark only: their code is never imported by beyondbp nor committed here).

Kleinman, Achille & Soatto, "Critical Learning Periods Emerge Even in Deep Linear Networks"
(ICLR 2024), code at https://github.com/mjkleinman/CriticalPeriodDeepLinearNets (tested at commit
c3c1f47). Obtain it and point this driver at the checkout:

    git clone https://github.com/mjkleinman/CriticalPeriodDeepLinearNets /tmp/kleinman
    python bench/critical_periods_authors.py /tmp/kleinman --depth 3 --deficits 0,40000 --seeds 5

Per (seed, T) this writes a config with their values (``configs/rebuttal_iclr/num-examples-depth.yaml``:
1000 then 1500 observed entries, 30,000 steps after the deficit, SGD lr 0.2, Gaussian init scale
0.001, rank 5, 100×100) and ``T_critical_list: [T]``, runs ``python main-num-examples.py -c CONFIG
--depth D`` in their ``matrixcompletion/`` folder with one thread (its stdout, a line every 10 steps,
is discarded; their figures land in a temporary folder), and reads the final test loss from the
``info.pth`` it saves. Their script loops over T with the same data and the same re-seeded init for
every T, so one T per process gives the numbers their T list would. Results are appended to
``--results`` (JSON lines) and reused, so an interrupted sweep resumes.

Printed: per T their mean ± 95 % t-interval over seeds next to ours (backprop cells of
``bench/results/critical_periods.jsonl``) and whether our mean lies inside their interval; the
paired difference "T = largest minus T = 0" for both.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_critical_periods", ROOT / "bench" / "critical_periods.py")
cp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cp)

# configs/rebuttal_iclr/num-examples-depth.yaml of the authors' repository (the issue's setting)
AUTHORS_CONFIG = {
    "ntrain_samples": 1000, "ntrain_samples2": 1500, "rank1": 5, "rank2": 5, "epoch_continue": 30000,
    "sgd_lr": 0.2, "init_scale": 0.001, "matrix_dim": 100, "hidden_dim": 100,
    "initialization": "gaussian", "optimizer": "sgd",
}


def script_folder(path: Path) -> Path:
    """Their ``matrixcompletion/`` folder, given the repository root or that folder itself."""
    for folder in (path / "matrixcompletion", path):
        if (folder / "main-num-examples.py").is_file() and (folder / "model_utils.py").is_file():
            return folder
    raise ValueError(f"{path} holds no matrixcompletion/main-num-examples.py; pass a checkout of "
                     "https://github.com/mjkleinman/CriticalPeriodDeepLinearNets (or its matrixcompletion/ folder)")


def config_text(depth: int, deficit: int, seed: int, output_dir: str) -> str:
    values = dict(AUTHORS_CONFIG, depth=depth, seed=seed, output_dir=output_dir)
    lines = [f"{k}: {json.dumps(v)}" for k, v in values.items()]  # JSON scalars are YAML scalars
    return "\n".join(lines) + f"\nT_critical_list: [{deficit}]\n"


def run_theirs(folder: Path, depth: int, deficit: int, seed: int) -> float:
    """One run of their script (one T); the final test loss it saved."""
    import torch

    with tempfile.TemporaryDirectory(prefix="clp-authors-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(config_text(depth, deficit, seed, str(Path(tmp) / "out")))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
        done = subprocess.run([sys.executable, "main-num-examples.py", "-c", str(config), "--depth", str(depth)],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"their script failed (depth {depth}, T {deficit}, seed {seed}):\n{done.stderr[-2000:]}")
        (info,) = Path(tmp, "out").glob("*/info.pth")
        saved = torch.load(info, weights_only=False)  # their own file: argparse Namespace + list of losses
        return float(saved["losses_critical"][0])


def compare(theirs: dict[tuple, dict[int, float]], ours: dict[tuple, dict[int, float]], depth: int) -> None:
    print(f"\ndepth {depth}: final test loss, mean ± 95% t-interval over seeds")
    print(f"{'T':>7} {'theirs':>17} {'n':>3} {'ours':>17} {'n':>3}   ours inside theirs?")
    deficits = sorted(t for (d, t) in theirs if d == depth)
    for t in deficits:
        tm, th = cp.mean_interval(list(theirs[(depth, t)].values()))
        row = f"{t:>7} {tm:8.3f} ± {th:6.3f} {len(theirs[(depth, t)]):>3}"
        if ours.get((depth, t)):
            om, oh = cp.mean_interval(list(ours[(depth, t)].values()))
            inside = "yes" if abs(om - tm) <= th else "no"
            row += f" {om:8.3f} ± {oh:6.3f} {len(ours[(depth, t)]):>3}   {inside}"
        print(row)
    if len(deficits) >= 2 and deficits[0] == 0:
        for name, cells in (("theirs", theirs), ("ours", ours)):
            low, high = cells.get((depth, 0), {}), cells.get((depth, deficits[-1]), {})
            common = sorted(set(low) & set(high))
            if len(common) >= 2:
                m, h = cp.mean_interval([high[s] - low[s] for s in common])
                print(f"{name:>7}: T={deficits[-1]} − T=0 = {m:+.3f} ± {h:.3f} (n={len(common)}; "
                      f"interval [{m - h:.2f}, {m + h:.2f}])")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("authors", type=Path, help="checkout of mjkleinman/CriticalPeriodDeepLinearNets")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--deficits", default="0,40000")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N (ours are 1..5)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "critical_periods_authors.jsonl")
    parser.add_argument("--ours", type=Path, default=ROOT / "bench" / "results" / "critical_periods.jsonl")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    deficits = cp.numbers(args.deficits)
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()] \
        if args.results.exists() else []
    have = {(r["depth"], r["T"], r["seed"]) for r in rows}
    if not args.report_only:
        try:
            folder = script_folder(args.authors)
        except ValueError as e:
            parser.error(str(e))  # exit status 2
        args.results.parent.mkdir(parents=True, exist_ok=True)
        for deficit in deficits:
            for seed in range(1, args.seeds + 1):
                if (args.depth, deficit, seed) in have:
                    continue
                t0 = time.perf_counter()
                loss = run_theirs(folder, args.depth, deficit, seed)
                row = {"depth": args.depth, "T": deficit, "seed": seed, "test_loss": loss,
                       "seconds": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"theirs depth {args.depth} T {deficit} seed {seed}: test loss {loss:.4f} "
                      f"({row['seconds']:.0f} s)", flush=True)
    theirs: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r["T"] in deficits and r["seed"] <= args.seeds:
            theirs.setdefault((r["depth"], r["T"]), {})[r["seed"]] = r["test_loss"]
    ours: dict[tuple, dict[int, float]] = {}
    for r in cp.load_results(args.ours).values():
        if r["rule"] == "backprop" and r["status"] == "ok" and r["seed"] <= args.seeds:
            ours.setdefault((r["depth"], r["T"]), {})[r["seed"]] = r["test_loss"]
    compare(theirs, ours, args.depth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
