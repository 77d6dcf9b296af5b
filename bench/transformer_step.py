"""Step cost of every feedback-path rule on the causal GPT, as ratios to backprop.

For each model size (by default 4 and 8 blocks, d_model 128, context 128, batch 16) every rule
is attached to its own copy of the same initial model, and one training step on the same batch
is measured:

* FLOPs per token — counted by ``torch.utils.flop_counter`` (matmuls and attention kernels
  that actually ran, forward + backward; element-wise work is not counted), divided by the
  number of tokens in the batch;
* wall time per token — the median of ``--repeats`` timed steps, interleaved round-robin across
  rules so that changes in machine load hit them alike (``beyondbp.compute.measure_steps``).

Both are printed with their ratio to backprop. ``plain-loop`` is a hand-written PyTorch loop
(``zero_grad``, forward, cross-entropy, ``backward``, ``step``) without any beyondbp learner:
backprop should match it. The DFA rows: ``dfa`` (macro: a feedback point
at each block output), ``dfa-micro`` (three per block), ``dfa-layers`` (Nøkland's placement:
the input of every Linear, one shared matrix). The issue's target for ``dfa`` is < 0.85×
backprop; the FLOP column shows whether a placement can reach it at all (see the README).

    python bench/transformer_step.py                       # 4 and 8 blocks
    python bench/transformer_step.py --layers 4 --repeats 5 --d-model 128 --context 128
    python bench/transformer_step.py --device cuda --json out.json   # on a GPU; rows also as JSON

On a GPU the timer synchronises the device before each clock reading (``StepTimer``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from beyondbp import rules
from beyondbp.compute import measure_steps
from beyondbp.models.gpt import GPT


class PlainLoop:
    """The plain PyTorch training step, shaped like a learner for ``measure_steps``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def optimizer_parameters(self) -> list:
        return list(self.model.parameters())

    def step(self, batch, optimizer) -> dict:
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}


VARIANTS: dict[str, tuple[str, dict]] = {
    "backprop": ("backprop", {}),
    "plain-loop": ("backprop", {}),
    "dfa": ("dfa", {}),
    "dfa-micro": ("dfa", {"points": "micro"}),
    "dfa-layers": ("dfa", {"points": "layers", "shared": True}),
    "fa": ("fa", {}),
    "usf": ("usf", {}),
    "brsf": ("brsf", {}),
    "frsf": ("frsf", {}),
    "kp": ("kp", {}),
    "pfa": ("pfa", {}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", default="4,8", help="comma-separated block counts (default 4,8)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=65, help="vocabulary size (65: tiny-shakespeare)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per rule (interleaved)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rules", default=",".join(VARIANTS), help="comma-separated rows of the table")
    p.add_argument("--attention", default="explicit", choices=["explicit", "sdpa"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave PyTorch's default)")
    p.add_argument("--device", default="cpu", help="where the models and the batch live: cpu, cuda, cuda:N")
    p.add_argument("--json", default=None, help="also write the rows (FLOPs and time ratios to backprop) to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch sees no CUDA GPU here")
    rows_out: list[dict] = []
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = [r for r in args.rules.split(",") if r]
    unknown = [r for r in wanted if r not in VARIANTS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(VARIANTS)}")
    available = [r for r in wanted if VARIANTS[r][0] in rules.names()]
    if "backprop" not in available:
        available.insert(0, "backprop")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, attention={args.attention}, device={device}")
    for n_layer in [int(x) for x in args.layers.split(",")]:
        torch.manual_seed(0)
        base = GPT((args.context,), args.vocab, n_layer=n_layer, n_head=args.n_head, d_model=args.d_model,
                   attention=args.attention).to(device)
        gen = torch.Generator().manual_seed(1)
        x = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen).to(device)
        y = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen).to(device)
        tokens = x.numel()
        learners = {}
        for row in available:
            name, opts = VARIANTS[row]
            if row == "plain-loop":
                learners[row] = PlainLoop(copy.deepcopy(base))
            else:
                learners[row] = rules.get(name, **opts).attach(copy.deepcopy(base))
        start = time.perf_counter()
        meas = measure_steps(
            learners, (x, y), lambda ps: torch.optim.AdamW(ps, lr=1e-4), repeats=args.repeats, warmup=args.warmup
        )
        elapsed = time.perf_counter() - start
        bp = meas["backprop"]
        print(
            f"\nGPT n_layer={n_layer} d_model={args.d_model} context={args.context} batch={args.batch} "
            f"({base.num_parameters():,} parameters; {args.repeats} interleaved steps per rule, {elapsed:.0f} s)"
        )
        print(f"{'rule':<11} {'MFLOP/token':>12} {'× bp':>7} {'ms/ktoken':>10} {'× bp':>7}")
        for row, m in meas.items():
            fpt = m.flops / tokens
            tpt = m.median_time / tokens
            print(
                f"{row:<11} {fpt / 1e6:>12.3f} {m.flops / bp.flops:>7.3f} {tpt * 1e6:>10.3f} "
                f"{m.median_time / bp.median_time:>7.3f}"
            )
            rows_out.append({"n_layer": n_layer, "rule": row, "device": str(device), "tokens": tokens, "flops_per_token": fpt,
                             "flops_ratio": m.flops / bp.flops, "seconds_per_token": tpt,
                             "time_ratio": m.median_time / bp.median_time})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows_out, f, indent=1)


if __name__ == "__main__":
    main()
