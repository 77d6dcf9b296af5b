"""Time of the scaling-law fit (``beyondbp.analysis.scaling``) on Epoch AI's Chinchilla points.

Measures, in one process on one core: (1) the plain way — ``scipy.optimize.minimize`` (L-BFGS-B,
analytic gradient) started from every ``--every``-th start of Chinchilla's 4,500-point grid, one
start after the other, time per start and the extrapolated time for the whole grid; (2) the
library's ``fit_loss_law`` over the whole grid (batched L-BFGS over all starts, then L-BFGS-B
polish of the best end points); (3) ``bootstrap`` with ``--resamples`` resamples. Prints the
fitted parameters of both ways and the time ratio.

    OMP_NUM_THREADS=1 python bench/scaling_fit.py --every 10 --resamples 200
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from beyondbp.analysis import scaling
from beyondbp.analysis.scaling import laws

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_svg_extracted_data.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=10, help="time the plain loop on every k-th start of the grid")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples to time")
    args = parser.parse_args()

    rows = list(csv.DictReader(open(DATA, newline="")))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    D = C / (6 * N)
    keep = np.argsort(-loss, kind="stable")[5:]
    X, y = np.log(np.stack([N[keep], D[keep]], axis=1)), np.log(loss[keep])
    grid = scaling.default_starts()

    sub = grid[:: args.every]
    t0 = time.perf_counter()
    best = None
    for theta0 in sub:
        res = minimize(laws._value_and_grad, theta0, args=(X, y, 1e-3), jac=True, method="L-BFGS-B", options=laws._OPTIONS)
        if best is None or res.fun < best.fun:
            best = res
    plain = time.perf_counter() - t0
    per_start = plain / len(sub)

    t0 = time.perf_counter()
    fit = scaling.fit_loss_law(N, D, loss, exclude_top=5)
    batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    iv = scaling.bootstrap(N, D, loss, exclude_top=5, fit=fit, n_resamples=args.resamples, seed=0)
    boot = time.perf_counter() - t0

    a, b, e, al, be = best.x
    print(f"plain L-BFGS-B loop: {len(sub)} starts in {plain:.2f} s = {1e3 * per_start:.2f} ms/start; "
          f"whole grid ≈ {per_start * len(grid):.1f} s; best α {al:.4f} β {be:.4f} E {np.exp(e):.4f}")
    print(f"fit_loss_law (all {len(grid)} starts): {batched:.2f} s; α {fit.alpha:.4f} β {fit.beta:.4f} E {fit.E:.4f} "
          f"A {fit.A:.1f} B {fit.B:.1f} objective {fit.objective:.10g}")
    print(f"ratio plain/fit_loss_law for the whole grid: {per_start * len(grid) / batched:.1f}x")
    print(f"bootstrap ({args.resamples} resamples, 5 starts each): {boot:.2f} s; 95 % intervals: "
          + ", ".join(f"{k} [{iv.low[k]:.4g}, {iv.high[k]:.4g}]" for k in iv.low))


if __name__ == "__main__":
    main()
