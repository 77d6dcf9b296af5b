"""Phase 2 of a liquid run (feature generation) in one process vs over N worker processes
(the run's ``feature_workers``, training/liquid_pool.py), side by side in one process on the same
NALSM1000 liquid, Fashion-MNIST test images, seeds and batches, with the ratio and a check that
the spike counts are identical.

    PYTHONPATH=src python bench/lsm_workers.py [--images 512] [--batch 64] [--workers 2] [--repeats 1]
        [--duration 250] [--rule nalsm]

Wall-clock seconds per image (several processes: wall-clock is the figure; on a shared machine
read it with the load average printed before and after), and each worker's CPU seconds (from
/proc; their sum over the one process's CPU seconds is the cost of splitting, 1 when free). The pool's time includes starting its
workers (forkserver, one model transfer per worker), as a run pays it once. One torch thread in
this process and in every worker.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time

import numpy as np
import torch

from beyondbp import models, rules
from beyondbp.training.liquid_pool import FeaturePool, batch_counts


def sequential(model, p, duration, batch, seed):
    out = [batch_counts(model.liquid, p[s:s + batch], duration, seed, "bench", c)
           for c, s in enumerate(range(0, len(p), batch))]
    return torch.cat(out)


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pooled(model, rule, workers, p, duration, batch, seed):
    """The counts, and the CPU seconds of each worker (read before the pool ends)."""
    with FeaturePool(model, rule, workers) as pool:
        counts = torch.cat(pool.counts({"bench": p}, duration, batch, seed)["bench"])
        cpu = [cpu_seconds(pid) for pid in pool.pool._processes]
    return counts, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--duration", type=int, default=250)
    ap.add_argument("--rule", default="nalsm", help="nalsm, stdp or fixed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[: args.images]
    images = torch.tensor(raw.astype(np.float32) / 255)
    model = models.build("lsm", (1, 28, 28), 10, size=1000, duration=args.duration)
    p = model.encode(images)
    rule = None if args.rule == "fixed" else (args.rule, {})
    print(f"{model.liquid.nnz} synapses, {args.images} images × {args.duration} ms, batch {args.batch}, rule "
          f"{args.rule}, cores {len(os.sched_getaffinity(0))}, load average before {os.getloadavg()}", flush=True)
    for r in range(args.repeats):
        learner = rules.get(args.rule).attach(model) if rule else None
        w0, c0 = time.perf_counter(), time.process_time()
        one = sequential(model, p, args.duration, args.batch, seed=r)
        w1, c1 = time.perf_counter() - w0, time.process_time() - c0
        if learner:
            learner.detach()
        w0 = time.perf_counter()
        many, cpu = pooled(model, rule, args.workers, p, args.duration, args.batch, seed=r)
        wn = time.perf_counter() - w0
        print(f"repeat {r}: 1 process {w1 / len(p):.4f} s/img wall ({c1 / len(p):.4f} CPU) | {args.workers} workers "
              f"{wn / len(p):.4f} s/img wall, worker CPU s {', '.join(f'{c:.1f}' for c in cpu)} (sum / 1 process "
              f"{sum(cpu) / c1:.2f}) | wall speed-up {w1 / wn:.2f}x | same counts {torch.equal(one, many)} | "
              f"load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
