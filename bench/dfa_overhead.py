"""Where DFA's training step goes on the step_time MLP, and the ratio its arithmetic allows.

Model and batch as in ``step_time.py``: MLP 784-1024-1024-1024-10 (ReLU), batch 128, random
inputs and labels, SGD (momentum 0.9, lr 1e-5) on each rule's own copy of one initial model.

Four steps are timed side by side in one process, in rotating order (``--rounds`` rounds of
``--steps`` steps each, after ``--warmup`` untimed steps):

* ``backprop`` and ``dfa``: ``learner.step`` of the registered rules, as in ``step_time.py``;
* ``manual-bp`` and ``manual-dfa``: the same computations written out as plain tensor
  operations under ``torch.no_grad()`` — no autograd graph, no hooks, no custom Function — in the
  order autograd runs them, timed group by group with ``time.perf_counter``: forward (the four
  ``addmm`` and ReLUs), loss gradient (softmax − one-hot), weight gradients (``δᵀh`` and the bias
  sums), input gradients ``δ W`` (backprop only), projections ``e B_k`` (DFA only), ReLU
  masks, optimizer step. Before timing, ``manual-dfa``'s gradients are checked against the DFA
  learner's (same matrices ``B_k``), so both run the same arithmetic.

Printed: each step's median time, its ratio to the backprop learner's (median of per-round
ratios, wall clock and CPU time), the groups' median times, and two derived figures:

* *learner / its manual step*: what the hooks, the autograd engine and DFA's custom Function
  add to the arithmetic (median of per-round ratios), next to the same ratio for backprop;
* *equal-cost bound*: the DFA/backprop ratio if every DFA operation cost exactly what the same
  operation costs inside backprop's step, i.e. (manual-bp − input gradients + projections) /
  manual-bp. No implementation of the same update that keeps the forward pass, the weight
  gradients and the optimizer as they are can be expected below it.

    python bench/dfa_overhead.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

import beyondbp as bbp
from beyondbp import models

GROUPS = ("forward", "loss grad", "weight grads", "input grads", "projections", "relu masks", "optimizer")


def manual_step(model, opt, batch, mode: str, Bs: list[torch.Tensor], times: dict[str, float]) -> None:
    """One SGD step of backprop (``mode="bp"``) or DFA (``"dfa"``) by explicit tensor operations."""
    x, y = batch
    layers = [model.fc1, model.fc2, model.fc3, model.out]
    t = time.perf_counter()

    def lap(group: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[group] += now - t
        t = now

    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        hs = [x.flatten(1)]
        for i, layer in enumerate(layers):
            a = F.linear(hs[-1], layer.weight, layer.bias)
            hs.append(a.relu() if i < 3 else a)
        lap("forward")
        e = (hs[-1].softmax(1) - F.one_hot(y, hs[-1].shape[1])) / x.shape[0]
        lap("loss grad")
        delta = e
        projections = [e @ B for B in Bs] if mode == "dfa" else None
        if mode == "dfa":
            lap("projections")
        for i in reversed(range(4)):
            layer = layers[i]
            if mode == "bp" and i > 0:
                upstream = delta.mm(layer.weight)
                lap("input grads")
            layer.weight.grad = delta.t().mm(hs[i])
            layer.bias.grad = delta.sum(0)
            lap("weight grads")
            if i > 0:
                upstream = projections[i - 1] if mode == "dfa" else upstream
                delta = torch.ops.aten.threshold_backward(upstream, hs[i], 0)
                lap("relu masks")
    opt.step()
    lap("optimizer")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    base = models.build("mlp", (1, 28, 28), 10, widths=(1024, 1024, 1024))
    g = torch.Generator().manual_seed(args.seed)
    batch = (torch.randn(args.batch, 1, 28, 28, generator=g), torch.randint(0, 10, (args.batch,), generator=g))

    def sgd(params):
        return torch.optim.SGD(params, lr=1e-5, momentum=0.9)

    learners = {}
    for name in ("backprop", "dfa"):
        model = copy.deepcopy(base)
        learner = bbp.rules.get(name).attach(model)
        learners[name] = (learner, sgd(learner.optimizer_parameters()))
    dfa = learners["dfa"][0]
    check = dfa.estimate(batch)  # draws the matrices; the direction of the first step
    Bs = [dfa.rule_state()[f"matrix.{k}"] for k in range(3)]
    checked = copy.deepcopy(base)
    manual_step(checked, sgd(checked.parameters()), batch, "dfa", Bs, defaultdict(float))
    for n, param in checked.named_parameters():
        assert torch.allclose(param.grad, check[n], rtol=1e-4, atol=1e-7), f"manual DFA differs from the learner at {n}"
    manual = {}
    for name, mode in (("manual-bp", "bp"), ("manual-dfa", "dfa")):
        model = copy.deepcopy(base)
        manual[name] = (model, sgd(model.parameters()), mode)

    def runner(name):
        if name in learners:
            learner, opt = learners[name]
            return lambda times: learner.step(batch, opt)
        model, opt, mode = manual[name]
        return lambda times: manual_step(model, opt, batch, mode, Bs if mode == "dfa" else [], times)

    names = ["backprop", "dfa", "manual-bp", "manual-dfa"]
    run = {n: runner(n) for n in names}
    scratch = defaultdict(float)
    for n in names:
        for _ in range(args.warmup):
            run[n](scratch)
    wall, cpu = defaultdict(list), defaultdict(list)
    groups = {n: defaultdict(list) for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            ws, cs = [], []
            per_step = defaultdict(list)
            for _ in range(args.steps):
                times = defaultdict(float)
                c0, t0 = time.process_time(), time.perf_counter()
                run[n](times)
                ws.append(time.perf_counter() - t0)
                cs.append(time.process_time() - c0)
                for k, v in times.items():
                    per_step[k].append(v)
            wall[n].append(statistics.median(ws))
            cpu[n].append(statistics.median(cs))
            for k, v in per_step.items():
                groups[n][k].append(statistics.median(v))

    print(f"# DFA overhead: {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"\n## MLP 784-1024-1024-1024-10, batch {args.batch}, {args.rounds} rounds x {args.steps} steps")
    print(f"{'step':<11} {'ms/step':>8} {'time ratio':>11} {'CPU ratio':>10}")
    med = {n: statistics.median(wall[n]) for n in names}
    for n in names:
        ratio = statistics.median([a / b for a, b in zip(wall[n], wall["backprop"])])
        cratio = statistics.median([a / b for a, b in zip(cpu[n], cpu["backprop"])])
        print(f"{n:<11} {med[n] * 1e3:8.2f} {ratio:10.3f}x {cratio:9.3f}x")
    print(f"\n{'group (ms)':<14} {'manual-bp':>10} {'manual-dfa':>11}")
    gm = {n: {k: statistics.median(v) for k, v in groups[n].items()} for n in ("manual-bp", "manual-dfa")}
    for k in GROUPS:
        cells = [f"{gm[n][k] * 1e3:.2f}" if k in gm[n] else "-" for n in ("manual-bp", "manual-dfa")]
        print(f"{k:<14} {cells[0]:>10} {cells[1]:>11}")
    bp_total = sum(gm["manual-bp"].values())
    bound = (bp_total - gm["manual-bp"]["input grads"] + gm["manual-dfa"]["projections"]) / bp_total
    def per_round(a: str, b: str, series) -> float:
        return statistics.median([u / v for u, v in zip(series[a], series[b])])

    print(f"\nlearner / its manual step (median of per-round ratios, wall / CPU): "
          f"dfa {per_round('dfa', 'manual-dfa', wall):.3f} / {per_round('dfa', 'manual-dfa', cpu):.3f}, "
          f"backprop {per_round('backprop', 'manual-bp', wall):.3f} / {per_round('backprop', 'manual-bp', cpu):.3f}")
    print(f"equal-cost bound (manual-bp - input grads + projections) / manual-bp: {bound:.3f}x")


if __name__ == "__main__":
    main()
