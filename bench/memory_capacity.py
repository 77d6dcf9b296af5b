"""Recall quality of the associative memories on Fashion-MNIST against N stored and query noise.

Every memory of :mod:`beyondbp.memory` stores the first N of a seeded random choice of training
images (±1 pixels for all but the sparse-code memory, 0/1 for it; thresholded at 0.5) and is
queried with up to ``--queries`` of them after flipping or masking 10–30 % of the pixels.
Writes ``memory-<noise mode>.md`` / ``.json`` and one ``memory-<memory>-<mode>.png`` per memory
into ``--out``, plus ``memory-sparse-overlap.json`` (the sparse code's code-overlap vs
input-overlap Spearman correlation on ``--overlap-items`` images).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/memory_capacity.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from beyondbp.memory import measure, names
from beyondbp.reporting.memory import markdown_table, plot_recall

#: options per memory (the delta rule gets few epochs: each epoch revisits every stored item)
OPTIONS = {"key-value-delta": {"epochs": 5}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stored", default="10,30,100,300,1000")
    p.add_argument("--noise", default="0,0.1,0.2,0.3")
    p.add_argument("--modes", default="flip,mask")
    p.add_argument("--memories", default=",".join(names()))
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--overlap-items", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    a = p.parse_args()
    torch.set_num_threads(1)
    ns = [int(v) for v in a.stored.split(",")]
    levels = [float(v) for v in a.noise.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    for mode in a.modes.split(","):
        rows = []
        for name in a.memories.split(","):
            kind = measure.DEFAULT_KIND[name]
            pats, labels = measure.fashion_mnist_patterns(max(ns), kind, seed=a.seed)
            t0 = time.perf_counter()
            got = measure.recall_quality(name, pats, labels, stored=ns, noise=levels, mode=mode, kind=kind,
                                         queries=a.queries, seed=a.seed, options=OPTIONS.get(name, {}))
            for r in got:
                r["seconds"] = time.perf_counter() - t0
            rows += got
            plot_recall(got, a.out / f"memory-{name}-{mode}.png", f"{name} on Fashion-MNIST, {mode} noise")
        title = f"Fashion-MNIST recall quality, {mode} noise, seed {a.seed}"
        (a.out / f"memory-{mode}.md").write_text(markdown_table(rows, title))
        (a.out / f"memory-{mode}.json").write_text(json.dumps(rows, indent=1))
    x, _ = measure.fashion_mnist_patterns(a.overlap_items, "binary", seed=a.seed)
    overlap = {"default": measure.similarity_preservation(x, seed=a.seed, pairs=20000),
               "novelty=0.3": measure.similarity_preservation(x, seed=a.seed, pairs=20000, novelty=0.3)}
    (a.out / "memory-sparse-overlap.json").write_text(json.dumps(overlap, indent=1))


if __name__ == "__main__":
    main()
