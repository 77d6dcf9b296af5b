"""What keeping a liquid's feature generation resumable costs (training/liquid_resume.py): the
time of one phase-1 initialisation image (``nalsm`` persistent, 20 ms, one image after another)
and of one feature batch (``nalsm`` transient, 250 ms), against the time of saving phase 1's
state (the liquid's weights, every ``INIT_SAVE_EVERY`` images) and a batch's counts, on the
NALSM1000 liquid and Fashion-MNIST test images, one torch thread.

    PYTHONPATH=src python bench/lsm_resume.py [--init-images 40] [--batch 8] [--saves 20] [--dir DIR]

Simulation: process CPU seconds (the steady figure on a shared machine; with one thread, what an
idle core takes). Saving: wall-clock seconds (it is mostly a file write and its fsync), in
``--dir`` (default: a temporary folder). A feature batch of the authors' 250 images is timed as
``--batch`` images scaled to 250 (the time per image does not grow with the batch here).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from beyondbp import models, rules
from beyondbp.training import liquid_resume


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--init-images", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--saves", type=int, default=20)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[: max(args.init_images, args.batch)]
    images = torch.tensor(raw.astype(np.float32) / 255)
    model = models.build("lsm", (1, 28, 28), 10, size=1000)
    liq = model.liquid
    p = model.encode(images)
    print(f"NALSM1000: {liq.nnz} synapses; weights {liq.weight.numel() * 4 / 2**20:.2f} MiB")

    learner = rules.get("nalsm", mode="persistent", decay=1.0).attach(model)
    liq.simulate(p[:1], duration=5)  # untimed: tables, caches
    c0 = time.process_time()
    for i in range(args.init_images):
        liq.input_seed = i
        liq.simulate(p[i:i + 1], duration=20, write_back=True)
    init_s = (time.process_time() - c0) / args.init_images
    learner.detach()

    learner = rules.get("nalsm").attach(model)
    liq.input_seed = 0
    c0 = time.process_time()
    counts = liq.simulate(p[:args.batch], duration=250, write_back=False)["counts"].to(torch.int16)
    batch_s = (time.process_time() - c0) / args.batch * 250
    learner.detach()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        partial = liquid_resume.Partial(Path(tmp) / "k.partial", {"key": "k"})
        partial.digest = "0" * 64
        partial.save_init(0, liq.weight)  # the folder and meta.pt
        walls_init, walls_batch = [], []
        full = counts.repeat(250 // args.batch + 1, 1)[:250]  # a 250-image batch's counts
        for i in range(args.saves):
            w0 = time.perf_counter()
            partial.save_init(i, liq.weight)
            walls_init.append(time.perf_counter() - w0)
            w0 = time.perf_counter()
            partial.save_batch("train", i, full)
            walls_batch.append(time.perf_counter() - w0)
    save_init, save_batch = statistics.median(walls_init), statistics.median(walls_batch)
    every = liquid_resume.INIT_SAVE_EVERY
    print(f"phase 1: {init_s:.4f} CPU s per 20-ms image; saving the state {1e3 * save_init:.1f} ms (median wall of "
          f"{args.saves}); every {every} images: {100 * save_init / (every * init_s):.3f} % of phase 1")
    print(f"phase 2: {batch_s:.1f} CPU s per 250-image batch (from {args.batch} images); saving its counts "
          f"{1e3 * save_batch:.1f} ms: {100 * save_batch / batch_s:.3f} % of phase 2")


if __name__ == "__main__":
    main()
