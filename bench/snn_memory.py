"""Peak memory of one training step of ``snn-mlp`` against the number of time steps T: BPTT vs OTTT.

What is measured, per (rule, T), each point in a *fresh subprocess* (so that no earlier point's
allocations or allocator caches are in the numbers):

* **saved MiB** — the most bytes held at once by the tensors autograd saved for the backward pass
  during one ``learner.step`` (``torch.autograd.graph.saved_tensors_hooks``: every packed tensor
  is counted from when it is saved until autograd frees it). This is the memory BPTT keeps
  over the sequence and OTTT does not; it includes the weights saved by the matmuls (a constant).
  Exact and independent of the allocator; the primary column.
* **RSS MiB** (CPU) — how much the step raised the process's peak resident set size
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the step minus before it; model, data and
  optimizer are built, and one untimed step of a 1-step copy is run, before the "before" reading).
  Includes everything the step allocates (activations, gradients, Adam's state at the first
  step, the allocator's slack); an increase can only be seen above the peak the process had
  already reached, so small steps may read 0.
* **CUDA MiB** (``--device cuda``) — ``torch.cuda.max_memory_allocated`` during the step minus the
  memory allocated before it.

Model: ``snn-mlp`` 784-1000-10 (snnTorch tutorial 5: β = 0.95, direct input, spike-count readout),
batch 128 of random 1×28×28 inputs, Adam (lr 5e-4), one ``learner.step`` (zero_grad, forward,
backward, optimizer step). BPTT is ``backprop``; OTTT is ``ottt`` with its defaults (OTTT_A).

    python bench/snn_memory.py                         # T = 4 8 16 32 64, backprop and ottt, CPU
    python bench/snn_memory.py --T 4 16 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import weakref

import torch


def peak_saved_bytes(fn) -> int:
    """Most bytes held at once by tensors saved for backward while ``fn`` runs."""
    live, peak = [0], [0]

    class Held:
        __slots__ = ("tensor", "__weakref__")

        def __init__(self, tensor):
            self.tensor = tensor

    def release(n: int) -> None:
        live[0] -= n

    def pack(t):
        n = t.numel() * t.element_size()
        live[0] += n
        peak[0] = max(peak[0], live[0])
        held = Held(t)
        weakref.finalize(held, release, n)
        return held

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda held: held.tensor):
        fn()
    return peak[0]


def point(rule: str, T: int, batch: int, device: str) -> dict[str, float]:
    """One measurement (run in a fresh process by :func:`main`)."""
    import beyondbp as bbp
    from beyondbp import models

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(batch, 1, 28, 28, device=device), torch.randint(0, 10, (batch,), device=device)
    # warm the code paths (first-call allocations of torch) on a 1-step model, outside the measurement
    warm = models.build("snn-mlp", (1, 28, 28), 10, T=1).to(device)
    bbp.rules.get(rule).attach(warm).step((x, y), torch.optim.Adam(warm.parameters(), lr=5e-4))
    del warm
    model = models.build("snn-mlp", (1, 28, 28), 10, T=T).to(device)
    learner = bbp.rules.get(rule).attach(model)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=5e-4)
    out: dict[str, float] = {}
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved = peak_saved_bytes(lambda: learner.step((x, y), opt))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["saved_mib"] = saved / 2**20
    out["rss_mib"] = (after - before) / 1024  # ru_maxrss is in KiB on Linux
    if device == "cuda":
        torch.cuda.synchronize()
        out["cuda_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--rules", default="backprop,ottt")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--point", nargs=2, metavar=("RULE", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(point(args.point[0], int(args.point[1]), args.batch_size, args.device)))
        return
    rules = args.rules.split(",")
    results: dict[tuple[str, int], dict[str, float]] = {}
    for T in args.T:
        for rule in rules:
            cmd = [sys.executable, __file__, "--point", rule, str(T), "--batch-size", str(args.batch_size), "--device", args.device]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[rule, T] = json.loads(done.stdout.strip().splitlines()[-1])
    cols = ["saved_mib", "rss_mib"] + (["cuda_mib"] if args.device == "cuda" else [])
    print(f"snn-mlp 784-1000-10, batch {args.batch_size}, Adam, one learner.step per fresh process, {args.device}, "
          f"torch {torch.__version__}")
    head = " ".join(f"{rule + ' ' + c.replace('_mib', ''):>16s}" for rule in rules for c in cols)
    print(f"{'T':>4s} {head}")
    for T in args.T:
        row = " ".join(f"{results[rule, T][c]:16.1f}" for rule in rules for c in cols)
        print(f"{T:4d} {row}")


if __name__ == "__main__":
    main()
