"""Simulation time per image of the NALSM1000 liquid (models/lsm.py), plasticity off / stdp /
nalsm, on Fashion-MNIST test images, 250 ms at dt = 1 ms, batched.

    PYTHONPATH=src python bench/lsm_speed.py [--batch 8] [--duration 250] [--threads 2]

Prints seconds per image and the measured branching factor / rates of each setting (the
measurement runs on the same images afterwards and is not timed).
"""

from __future__ import annotations

import argparse
import gzip
import time

import numpy as np
import torch

from beyondbp import models, rules
from beyondbp.analysis.criticality import liquid_measurements


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--duration", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[: args.batch]
    x = torch.tensor(raw.astype(np.float32) / 255)
    t0 = time.perf_counter()
    model = models.build("lsm", (1, 28, 28), 10, size=args.size, duration=args.duration)
    print(f"build: {time.perf_counter() - t0:.2f} s, {model.liquid.nnz} synapses")
    for rule in (None, "stdp", "nalsm"):
        learner = rules.get(rule).attach(model) if rule else None
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model.liquid.simulate(model.encode(x))
        dt = (time.perf_counter() - t0) / args.batch
        meas = liquid_measurements(model, x)
        print(f"{rule or 'fixed':6s} {dt:.3f} s/image  BF {meas['branching_factor']:.3f}  "
              f"E {meas['rate_exc_hz']:.1f} Hz  I {meas['rate_inh_hz']:.1f} Hz  silent {meas['silent_fraction']:.3f}")
        if learner:
            learner.detach()


if __name__ == "__main__":
    main()
