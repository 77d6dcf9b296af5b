"""Peak memory of liquid feature generation against liquid size and batch size.

    PYTHONPATH=src python bench/lsm_memory.py [--sizes 1000,8000] [--batches 1,8,32,64] [--rules fixed,nalsm]
        [--duration 50] [--threads 2]

Each (size, batch, rule) runs in a fresh Python process (the peak resident set size,
``resource.getrusage(...).ru_maxrss``, is a per-process high-water mark): the process imports
torch and beyondbp, builds the ``lsm`` model, encodes Fashion-MNIST test images and simulates
``duration`` ms with the rule's transient plasticity (``fixed``: none). Printed per row: the
resident set after the imports (baseline), the liquid's share after building (RSS growth), the
peak during the simulation above the baseline, and what the library counts before allocating
(``Liquid.plastic_bytes`` for the per-sample weights and event rows, 0 without plasticity).
Memory does not grow with the duration (nothing is recorded per ms), so a short one suffices.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(size: int, batch: int, rule: str, duration: int, threads: int) -> dict:
    import gzip
    import resource
    import time

    import numpy as np
    import torch

    from beyondbp import models, rules

    torch.set_num_threads(threads)
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:batch]
    x = torch.tensor(raw.astype(np.float32) / 255)
    base = rss_mib()
    model = models.build("lsm", (1, 28, 28), 10, size=size, duration=duration)
    if rule != "fixed":
        rules.get(rule).attach(model)
    liq = model.liquid
    liq.event_tables()
    built = rss_mib()
    counted = liq.plastic_bytes(batch) / 2**20 if rule != "fixed" else 0.0
    t0 = time.perf_counter()
    with torch.no_grad():
        liq.simulate(model.encode(x))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(size=size, batch=batch, rule=rule, synapses=liq.nnz, base_mib=base, liquid_mib=built - base,
                peak_above_base_mib=peak - base, counted_mib=counted, s_per_image=seconds / batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,8000")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--rules", default="fixed,nalsm")
    ap.add_argument("--duration", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=3, metavar=("SIZE", "BATCH", "RULE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), int(args.one[1]), args.one[2], args.duration, args.threads)))
        return
    print("size  synapses  rule   B   | baseline MiB | liquid MiB | peak above baseline MiB | counted MiB | s/image")
    for size in (int(s) for s in args.sizes.split(",")):
        for rule in args.rules.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                cmd = [sys.executable, __file__, "--one", str(size), str(batch), rule,
                       "--duration", str(args.duration), "--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    print(f"{size:5d} {rule:6s} {batch:3d}: failed: {res.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                r = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"{size:5d} {r['synapses']:9d} {rule:6s} {batch:3d} | {r['base_mib']:12.0f} | {r['liquid_mib']:10.1f} | "
                      f"{r['peak_above_base_mib']:23.1f} | {r['counted_mib']:11.1f} | {r['s_per_image']:.3f}", flush=True)


if __name__ == "__main__":
    main()
