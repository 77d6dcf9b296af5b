"""A short learning check of ``snn-mlp`` on Fashion-MNIST: BPTT (``backprop``) against ``fa``.

The setting of snnTorch's tutorial 5 (784-1000-10 LIF network, T = 25 steps, β = 0.95, direct
input of the image at every step, threshold 1, subtract reset, arctan surrogate α = 2, Adam
lr 5e-4, batch 128, one epoch; snnTorch reports 93.9 % on MNIST with it), on Fashion-MNIST (MNIST
is not available here), trained by beyondbp's run loop: the spike-count readout with
cross-entropy on the counts, Fashion-MNIST standardised (the library's default).

Prints, per rule: test accuracy after the epoch, median time per training step and its ratio to
BPTT's, FLOPs per step (matmuls, forward + backward), and the spike statistics of each layer on
the test set. Both runs are in one process, one after the other, on the same thread count.

    python bench/snn_learning_check.py                       # backprop and fa, 1 epoch, 1 thread
    python bench/snn_learning_check.py --rules backprop,fa,kp --epochs 1 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from beyondbp.run import RunConfig, run


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
    args = parser.parse_args()

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

    base = rows[0][1].time_per_step
    print(f"snn-mlp 784-1000-10 on fashion-mnist, T={args.T}, beta={args.beta}, Adam lr {args.lr:g}, "
          f"batch {args.batch_size}, {args.epochs} epoch(s), seed {args.seed}, {args.threads} thread(s), {args.device}")
    print(f"{'rule':10s} {'test acc':>9s} {'ms/step':>9s} {'ratio':>7s} {'GFLOP/step':>11s} {'total s':>8s}  spikes (rate, silent)")
    for rule, r, total in rows:
        tps = r.time_per_step
        ratio = "-" if tps is None or base is None else f"{tps / base:.2f}x"
        spikes = " · ".join(f"{k} {v['rate']:.3f}, {100 * v['silent']:.1f}%" for k, v in r.spikes.items())
        print(f"{rule:10s} {100 * r.final['test_accuracy']:8.2f}% {1e3 * (tps or float('nan')):9.2f} {ratio:>7s} "
              f"{r.flops_per_step / 1e9:11.3f} {total:8.1f}  {spikes}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
