"""Training-step time and FLOPs of every registered rule, as ratios to backprop.

Models (as in the issue): MLP 784-1024-1024-1024-10 and LeNet-5 on 1x32x32 inputs, batch 128,
random inputs and labels (the cost of a step does not depend on the values). Every rule gets
its own deep copy of the same initial model and its own SGD optimizer (momentum 0.9, a tiny
learning rate so hundreds of steps stay finite) built from ``learner.optimizer_parameters()``.

Time. After ``--warmup`` untimed steps per rule, ``--rounds`` rounds are run; in each round
every rule does ``--steps`` consecutive timed ``learner.step`` calls, and the order of the rules
is rotated from round to round, so that load changes on a shared machine hit all rules alike
and no rule always runs right after the same neighbour. A rule's ratio is the median over
rounds of (its median step time in the round / backprop's in the same round); the IQR of those
per-round ratios is printed too; "met" compares that wall-clock ratio with the target. The
same ratio computed from the process's CPU time (``time.process_time``; with ``--threads 1``
the step's own compute) is printed as "CPU ratio": it is less disturbed when other processes
take the cores, so a large gap between the two columns means the machine was busy. Times are
also given per training sample (step time / batch size), the unit to compare in when a rule's
step consumes its batch differently.

Page faults. The last column is the process's minor page faults per timed step (from
``getrusage``): a step that allocates fresh W-sized tensors (sign(W), random magnitudes,
gradients) can pay for first-touching that memory when the allocator has returned it to the
OS, which costs real time on a VM and varies with the allocator's state, not only the rule.

FLOPs. One step per rule under ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions that actually ran, forward + backward; element-wise work and the optimizer's
update are not counted).

Targets printed next to the measured ratios: DFA <= 0.75x backprop (theory ~0.67x: the
weight gradients cost one forward, the skipped W^T delta chain another); FA, uSF, brSF, frSF,
KP <= 1.05x. For reference, BioTorch 0.0.16 measures FA 0.98x, DFA 1.10x, uSF 1.18x on the same
MLP. Rules without a target (added later) are printed with "-". PFA (the issue's target
<= 1.3x) has extra rows for its variants — ``pfa-k1`` (random B, expansion 1), ``pfa-ortho``,
``pfa-identity`` — when they are named in ``--rules``; by multiply-add count its default
expansion k = 10 costs about 11x backprop on the MLP (R's gradient alone is k·min(batch, N_out)
/ (3·batch) of a backprop step per layer, see ``beyondbp.rules.pfa``), so 1.3x is out of
reach there; k = 1 costs ~1.8x, the identity variant (= Kolen-Pollack) ~1x.

SoftHebb: the ``softhebb`` row times its Hebbian step (this script never ends an epoch, so the
rule stays in its first, unsupervised phase): forward pass, soft-WTA and the ``yᵀx``-sized
update of every Hebbian layer, no backward pass. Target <= 0.5x (the issue's, for the Hebbian
phase); by multiply-add count it is ~0.73x on both models (forward + one weight-sized product per
layer, against backprop's forward + weight gradient + input gradient of every layer but the
first), plus the soft-WTA's element-wise work. ``softhebb-classifier`` (named in ``--rules``)
times the second phase instead: forward through the frozen layers, backward into the classifier.

    python bench/step_time.py                         # all registered rules, both models
    python bench/step_time.py --rules backprop,fa,dfa --models mlp --threads 1
    python bench/step_time.py --profile brsf --models mlp   # where a rule's step time goes

Rows come from ``beyondbp.rules.names()``; a rule that cannot attach to a model (e.g. a local
rule needing its own architecture) is printed as "n/a" with the reason.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import statistics
import sys
import time

import torch

import beyondbp as bbp
from beyondbp import models
from beyondbp.compute import count_flops
from beyondbp.errors import BeyondBPError

#: Targets from the issue: the step-time ratio to backprop a rule must not exceed.
TARGETS: dict[str, float] = {"dfa": 0.75, "fa": 1.05, "usf": 1.05, "brsf": 1.05, "frsf": 1.05, "kp": 1.05}
TARGETS.update({"pfa": 1.3, "pfa-k1": 1.3, "pfa-ortho": 1.3, "pfa-identity": 1.3})
TARGETS.update({"softhebb": 0.5})

#: Extra row names: (registered rule, options).
VARIANTS: dict[str, tuple[str, dict]] = {
    "pfa-k1": ("pfa", {"expansion": 1}),
    "pfa-ortho": ("pfa", {"variant": "orthogonal"}),
    "pfa-identity": ("pfa", {"variant": "identity"}),
    "softhebb-classifier": ("softhebb", {"hebbian_epochs": 0}),
}

MODELS = {
    "mlp": ("MLP 784-1024-1024-1024-10", (1, 28, 28), lambda shape: models.build("mlp", shape, 10, widths=(1024, 1024, 1024))),
    "lenet": ("LeNet-5, 1x32x32", (1, 32, 32), lambda shape: models.build("lenet", shape, 10)),
}


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def make_learners(model_key: str, rule_names: list[str], seed: int):
    """{rule: (learner, optimizer)} on copies of one initial model, plus {rule: reason} for refusals."""
    _, shape, build = MODELS[model_key]
    torch.manual_seed(seed)
    base = build(shape)
    learners, refused = {}, {}
    for name in rule_names:
        model = copy.deepcopy(base)
        try:
            rule_name, options = VARIANTS.get(name, (name, {}))
            learner = bbp.rules.get(rule_name, **options).attach(model)
        except BeyondBPError as exc:
            refused[name] = str(exc)
            continue
        opt = torch.optim.SGD(learner.optimizer_parameters(), lr=1e-5, momentum=0.9)
        learners[name] = (learner, opt)
    return shape, learners, refused


def measure(model_key: str, rule_names: list[str], args) -> None:
    title = MODELS[model_key][0]
    shape, learners, refused = make_learners(model_key, rule_names, args.seed)
    if "backprop" not in learners:
        raise SystemExit("backprop must be among the rules: every ratio is relative to it")
    g = torch.Generator().manual_seed(args.seed)
    batch = (torch.randn(args.batch, *shape, generator=g), torch.randint(0, 10, (args.batch,), generator=g))

    for name, (learner, opt) in learners.items():
        for _ in range(args.warmup):
            learner.step(batch, opt)
    flops: dict[str, int | None] = {}
    flop_errors: dict[str, str] = {}
    for name, (learner, opt) in learners.items():
        try:
            flops[name] = count_flops(learner.step, batch, opt)
        except RuntimeError as exc:  # e.g. autograd.grad inside a step under the FLOP counter
            flops[name] = None
            flop_errors[name] = str(exc).splitlines()[0]

    names = list(learners)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    cpu_round: dict[str, list[float]] = {n: [] for n in names}
    all_times: dict[str, list[float]] = {n: [] for n in names}
    faults: dict[str, int] = {n: 0 for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            learner, opt = learners[name]
            times, cpu = [], []
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(args.steps):
                c0, t0 = time.process_time(), time.perf_counter()
                learner.step(batch, opt)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            per_round[name].append(statistics.median(times))
            cpu_round[name].append(statistics.median(cpu))
            all_times[name].extend(times)

    bp_rounds, bp_cpu = per_round["backprop"], cpu_round["backprop"]
    print(f"\n## {title}, batch {args.batch}")
    print(f"{'rule':<10} {'ms/step':>8} {'us/sample':>10} {'time ratio':>11} {'IQR':>13} {'target':>7} {'met':>4}"
          f" {'CPU ratio':>9} {'MFLOP/step':>11} {'FLOP ratio':>10} {'faults/step':>11}")
    for name in rule_names:
        if name in refused:
            print(f"{name:<10} n/a: {refused[name]}")
            continue
        ratios = [t / b for t, b in zip(per_round[name], bp_rounds)]
        ratio = statistics.median(ratios)
        med = statistics.median(all_times[name])
        target = TARGETS.get(name)
        met = "-" if target is None else ("yes" if ratio <= target else "NO")
        tgt = "-" if target is None else f"<={target:.2f}"
        iqr = f"[{quantile(ratios, 0.25):.3f},{quantile(ratios, 0.75):.3f}]"
        if flops[name] is None:
            flop_text = f" {'n/a':>11} {'n/a':>10}"
        else:
            flop_text = f" {flops[name] / 1e6:11.1f} {flops[name] / flops['backprop']:9.3f}x"
        fault_text = f" {faults[name] / (args.rounds * args.steps):11.0f}"
        cpu_ratio = statistics.median([c / b for c, b in zip(cpu_round[name], bp_cpu)])
        print(f"{name:<10} {med * 1e3:8.2f} {med / args.batch * 1e6:10.1f} {ratio:10.3f}x {iqr:>13} {tgt:>7} {met:>4}"
              f" {cpu_ratio:8.3f}x" + flop_text + fault_text)
    for name, reason in flop_errors.items():
        print(f"  FLOPs of {name} could not be counted: {reason}")


def profile(model_key: str, rule: str, args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    shape, learners, refused = make_learners(model_key, ["backprop", rule] if rule != "backprop" else [rule], args.seed)
    if rule in refused:
        raise SystemExit(f"{rule}: {refused[rule]}")
    g = torch.Generator().manual_seed(args.seed)
    batch = (torch.randn(args.batch, *shape, generator=g), torch.randint(0, 10, (args.batch,), generator=g))
    for name, (learner, opt) in learners.items():
        for _ in range(args.warmup):
            learner.step(batch, opt)
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.rounds):
                learner.step(batch, opt)
        print(f"\n## profile of {name} on {MODELS[model_key][0]}: {args.rounds} steps")
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40, max_shapes_column_width=50))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rules", default=",".join(bbp.rules.names()), help="comma-separated rule names (default: all registered)")
    p.add_argument("--models", default="mlp,lenet", help="comma-separated: mlp, lenet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per rule per round (default 4)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per rule first (default 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", metavar="RULE", help="instead of the table, profile RULE and backprop (torch.profiler)")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    rule_names = [r.strip() for r in args.rules.split(",") if r.strip()]
    unknown = [r for r in rule_names if r not in bbp.rules.names() and r not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown rules {unknown}; registered: {', '.join(bbp.rules.names())}")
    if "backprop" not in rule_names:
        rule_names.insert(0, "backprop")
    model_keys = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in model_keys:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(MODELS)}")

    print(f"# step time: {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    for m in model_keys:
        if args.profile:
            profile(m, args.profile, args)
        else:
            measure(m, rule_names, args)


if __name__ == "__main__":
    main()
