"""A short learning check of ``snn-mlp`` on Fashion-MNIST: BPTT (``backprop``) against ``fa``.

The setting of snnTorch's tutorial 5 (784-1000-10 LIF network, T = 25 steps, β = 0.95, direct
input of the image at every step, threshold 1, subtract reset, arctan surrogate α = 2, Adam
lr 5e-4, batch 128, one epoch; snnTorch reports 93.9 % on MNIST with it), on Fashion-MNIST (MNIST
is not available here), trained by beyondbp's run loop: the spike-count readout with
cross-entropy on the counts, Fashion-MNIST standardised (the library's default).

Prints, per rule: test accuracy after the epoch, the run's median time per training step, FLOPs
per step (matmuls, forward + backward), and the spike statistics of each layer on the test set.
The runs are in one process, one after the other, so their step times also feel any change of
load on a shared machine; the step-time *ratio* to the first rule is therefore measured apart,
side by side: a fresh model per rule, ``--warmup`` untimed steps, then ``--rounds`` rounds of
``--steps`` timed steps per rule on the same batch, the rules' order rotated each round; the
ratio is the median over rounds of (rule's mean step time / first rule's, same round).

    python bench/snn_learning_check.py                       # backprop and fa, 1 epoch, 1 thread
    python bench/snn_learning_check.py --rules backprop,fa,kp --epochs 1 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from beyondbp.training import RunConfig, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="backprop,fa")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--T", type=int, default=25)
    parser.add_argument("--beta", type=float, default=0.95)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for rule in args.rules.split(","):
        config = RunConfig(
            rule=rule, model="snn-mlp", model_options={"T": args.T, "beta": args.beta}, data="fashion-mnist",
            epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=args.lr, seed=args.seed,
            threads=args.threads, device=args.device, n_train=args.n_train,
        )
        t0 = time.perf_counter()
        result = run(config)
        rows.append((rule, result, time.perf_counter() - t0))

    ratios = side_by_side(args, [rule for rule, _, _ in rows])
    print(f"snn-mlp 784-1000-10 on fashion-mnist, T={args.T}, beta={args.beta}, Adam lr {args.lr:g}, "
          f"batch {args.batch_size}, {args.epochs} epoch(s), seed {args.seed}, {args.threads} thread(s), {args.device}")
    base_acc, base_flops = rows[0][1].final["test_accuracy"], rows[0][1].flops_per_step
    print(f"ratios and differences are to the first rule, {rows[0][0]}; 'time x' is measured side by side")
    print(f"{'rule':10s} {'test acc':>9s} {'acc x':>6s} {'Δ points':>9s} {'ms/step':>9s} {'time x':>7s} "
          f"{'GFLOP/step':>11s} {'FLOPs x':>8s} {'total s':>8s}  spikes (rate, silent)")
    for rule, r, total in rows:
        tps = r.time_per_step
        acc = r.final["test_accuracy"]
        spikes = " · ".join(f"{k} {v['rate']:.3f}, {100 * v['silent']:.1f}%" for k, v in r.spikes.items())
        print(f"{rule:10s} {100 * acc:8.2f}% {acc / base_acc:5.2f}x {100 * (acc - base_acc):+9.2f} "
              f"{1e3 * (tps or float('nan')):9.2f} {ratios[rule]:6.2f}x {r.flops_per_step / 1e9:11.3f} "
              f"{r.flops_per_step / base_flops:7.2f}x {total:8.1f}  {spikes}")


def side_by_side(args: argparse.Namespace, rules: list[str]) -> dict[str, float]:
    """Step-time ratio of every rule to the first, measured in rotated rounds (see the docstring)."""
    from beyondbp import models
    from beyondbp import rules as rules_mod

    torch.manual_seed(args.seed)
    x, y = torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    learners = {}
    for rule in rules:
        torch.manual_seed(args.seed)
        model = models.build("snn-mlp", (1, 28, 28), 10, T=args.T, beta=args.beta).to(args.device)
        learner = rules_mod.get(rule).attach(model)
        learners[rule] = (learner, torch.optim.Adam(learner.optimizer_parameters(), lr=args.lr))
    batch = (x.to(args.device), y.to(args.device))
    for learner, opt in learners.values():
        for _ in range(args.warmup):
            learner.step(batch, opt)
    per_round = []
    for r in range(args.rounds):
        order = rules[r % len(rules):] + rules[: r % len(rules)]
        times = {}
        for rule in order:
            learner, opt = learners[rule]
            if args.device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                learner.step(batch, opt)
            if args.device != "cpu":
                torch.cuda.synchronize()
            times[rule] = (time.perf_counter() - t0) / args.steps
        per_round.append({rule: times[rule] / times[rules[0]] for rule in rules})
    return {rule: float(torch.tensor([p[rule] for p in per_round]).median()) for rule in rules}


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
