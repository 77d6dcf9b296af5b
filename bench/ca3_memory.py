"""The spiking CA3 content-addressable memory: capacity against the number of cues, spikes per
operation, and content -> cue recall before and after every cue is re-learned.

For each number of cue neurons C (one-hot cues) and content size K: items ``0, 1, …, C + 4`` are
stored one at a time, item ``i`` on cue ``i mod C`` with a seeded random content (bits 1 with
probability 0.3, at least one), every stored item recalled from its cue after each store
(:func:`beyondbp.memory.ca3.exact_capacity`). Then a fresh memory stores C items, recalls every
item from its full content and from one of its bits (the right answer: every cue whose content
shares an active bit), re-learns every cue with a new content and recalls from the new contents
again, with ``relearn="published"`` (the paper's circuit) and ``relearn="overwrite"``
(:func:`beyondbp.memory.ca3.relearn_exactness`). Writes ``ca3-memory.json`` and ``ca3-memory.md``
into ``--out``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ca3_memory.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from beyondbp.memory import CA3Memory
from beyondbp.memory.ca3 import exact_capacity, random_contents, relearn_exactness


def _by_content(mem: CA3Memory, queries: torch.Tensor, contents: torch.Tensor) -> float:
    """Fraction of queries whose recalled cue set is exactly the cues sharing a bit with them."""
    expected = ((queries @ contents.T) > 0).float()
    return float((mem.recall_from_content(queries) == expected).all(dim=1).float().mean())


def content_recall(cues: int, bits: int, seed: int) -> dict:
    mem = CA3Memory(cues, bits)
    eye = torch.eye(cues)
    first = random_contents(cues, bits, seed=seed, p=0.3)
    mem.store(eye, first)
    one_bit = torch.zeros(cues, bits)
    one_bit[torch.arange(cues), first.argmax(dim=1)] = 1.0
    row = {"full": _by_content(mem, first, first), "one_bit": _by_content(mem, one_bit, first)}
    n = len(mem.reports)
    row["spikes_per_recall_content"] = sum(op.spikes for op in mem.reports[n - 2 * cues:]) / (2 * cues)
    second = random_contents(cues, bits, seed=seed + 1000, p=0.3)
    mem.store(eye, second)
    row["after_relearn_cue"] = float((mem.recall(eye) == second).all(dim=1).float().mean())
    row["after_relearn_content"] = _by_content(mem, second, second)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cues", default="4,8,16,32")
    p.add_argument("--bits", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    a = p.parse_args()
    torch.set_num_threads(1)
    start = time.process_time()
    rows = []
    for c in [int(x) for x in a.cues.split(",")]:
        cap = exact_capacity(c, a.bits, max_items=c + 4, seed=a.seed)
        fixed = relearn_exactness(c, a.bits, seed=a.seed, relearn="overwrite")
        published = relearn_exactness(c, a.bits, seed=a.seed)
        rows.append({**cap, **content_recall(c, a.bits, a.seed), "stale": published["stale"],
                     "forgotten": published["forgotten"], "overwrite_cue": fixed["cue_to_content"],
                     "overwrite_content": fixed["content_to_cue"], "overwrite_stale": fixed["stale"]})
    cpu = time.process_time() - start
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "ca3-memory.json").write_text(json.dumps({"rows": rows, "cpu_s": cpu, "bits": a.bits}, indent=1))
    lines = ["| cues C | capacity (items all exact) | exact after C+1…C+4 stores | spikes / store | spikes / recall (cue) "
             "| spikes / recall (content) | content→cue exact: full / one bit | after re-learning: cue→content / content→cue "
             "| forgotten synapses ≥ 1 nA | after re-learning, relearn=overwrite: cue→content / content→cue |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["cues"]
        lines.append(f"| {c} | {r['capacity']} | {' '.join(str(x) for x in r['exact'][c:])} | {r['spikes_per_store']:.1f} "
                     f"| {r['spikes_per_recall']:.1f} | {r['spikes_per_recall_content']:.1f} | {r['full']:.2f} / {r['one_bit']:.2f} "
                     f"| {r['after_relearn_cue']:.2f} / {r['after_relearn_content']:.2f} | {r['stale']} of {r['forgotten']} "
                     f"| {r['overwrite_cue']:.2f} / {r['overwrite_content']:.2f} |")
    (a.out / "ca3-memory.md").write_text("\n".join(lines) + f"\n\nCPU time {cpu:.1f} s\n")


if __name__ == "__main__":
    main()
