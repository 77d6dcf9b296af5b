"""The event-driven plastic kernels (``Liquid.kernel = "event"``, models/lsm_kernels.py,
rules/nalsm.py) against the dense reference (``"dense"``) on the NALSM1000 liquid: Fashion-MNIST
test images, 250 ms, ``input_seed`` 0, transient ``nalsm`` and ``stdp``, a batch of 3 and one
image alone. Prints whether the spike rasters (every neuron, every ms), the final weights and
traces are equal, the largest drive difference (the event kernel adds its plasticity's drive
changes in another order: float rounding) and the process CPU seconds of each kernel.

    PYTHONPATH=src python bench/lsm_kernel_check.py [--images 3] [--duration 250]
"""

from __future__ import annotations

import argparse
import gzip
import time

import numpy as np
import torch

from beyondbp import models, rules


def run(rule: str, kernel: str, x: torch.Tensor, duration: int):
    m = models.build("lsm", (1, 28, 28), 10, input_seed=0, duration=duration)
    rules.get(rule).attach(m)
    liq = m.liquid
    liq.kernel = kernel
    plast, seen = liq.plasticity, {}
    plast.end = lambda s: seen.update(w=s.w.clone(), x=plast.x.clone(), drive=s.drive.clone())
    c0 = time.process_time()
    out = liq.simulate(m.encode(x), record=True)
    return liq, out, seen, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--duration", type=int, default=250)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    x = torch.tensor(raw[:args.images].astype(np.float32) / 255)
    print("rule  batch  liquid spikes  raster equal  weights equal  traces equal  max |drive diff|  "
          "synapses changed  CPU s dense / event")
    for rule in ("nalsm", "stdp"):
        for b in (len(x), 1):
            liq, d, ds, td = run(rule, "dense", x[:b], args.duration)
            _, e, es, te = run(rule, "event", x[:b], args.duration)
            print(f"{rule:5s} {b:5d} {int(d['counts'].sum()):14d} {str(torch.equal(d['raster'], e['raster'])):>13s} "
                  f"{str(torch.equal(ds['w'], es['w'])):>14s} {str(torch.equal(ds['x'], es['x'])):>13s} "
                  f"{float((ds['drive'] - es['drive']).abs().max()):17.2e} "
                  f"{int((ds['w'] != liq.weight).any(0).sum()):17d}   {td:.1f} / {te:.1f}", flush=True)


if __name__ == "__main__":
    main()
