"""SoftHebb next to backprop on the same architecture: accuracy, and the Hebbian phase's time.

For every data set (``--data``: ``fashion-mnist``, ``mnist1d``) and SoftHebb preset
(``--models``: ``mlp`` = ``softhebb-mlp`` of width ``--width``; ``conv`` = ``softhebb-conv`` with
``--channels``, images only) three runs start from copies of one initial model (seeded):

``softhebb``   the rule's defaults: 1 Hebbian epoch (no labels), then the classifier alone by
               cross-entropy for the remaining ``--epochs − 1`` epochs (Adam ``--lr``).
``frozen-init`` control: ``hebbian_epochs=0`` — the same classifier training, for all
               ``--epochs`` epochs, on the frozen *initial* layers (random features). The gap
               between this row and ``softhebb`` is what the Hebbian epoch contributed.
``backprop``   every layer of the same architecture trained end to end for ``--epochs`` epochs
               (Adam ``--lr``). ``--bp-init default`` (the default) first re-initialises the
               Hebbian-layer weights with PyTorch's default init — the authors' norm-25 init is
               there for the Hebbian rule, and backprop trains poorly from it; ``--bp-init same``
               keeps the identical initial weights.

All runs use batch ``--batch``, the same data order, ``--n-train`` / ``--n-test`` first samples.

Time. The Hebbian epoch's wall-clock is divided by the median epoch of the backprop run (same
architecture, data, batch size, process): "Hebbian epoch / backprop epoch" (issue target
<= 0.5x). The same ratio from CPU time (``time.process_time``, one thread) is printed too; it
is less disturbed by other processes on a shared machine. Per-sample ratios equal per-epoch
ones (same samples, same batch size). By arithmetic a Hebbian step costs one forward pass plus
one weight-gradient-sized product per layer (``yᵀx``, for a convolution the same kernel as
backprop's weight gradient), while backprop adds the input-gradient products of every layer but
the first, so the FLOP ratio is ~0.5-0.75 depending on how much of the network's cost sits in
the first layer; elementwise work (softmax, per-unit norms) comes on top.

    python bench/softhebb.py --epochs 5 --n-train 10000            # both data sets, both presets
    python bench/softhebb.py --data mnist1d --models mlp --epochs 20
    python bench/softhebb.py --data fashion-mnist --models conv --channels 32,128,512 --n-train 5000
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from torch import nn

import beyondbp as bbp
from beyondbp import data
from beyondbp.models.softhebb import SoftHebbConv, SoftHebbMLP


def parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def load(name: str, n_train: int | None, n_test: int | None):
    ds = data.load(name)
    n_train = min(n_train, ds.num_train) if n_train else None
    n_test = min(n_test, ds.num_test) if n_test else None
    return ds.subset(n_train, n_test)


def accuracy(learner, x: torch.Tensor, y: torch.Tensor, chunk: int = 500) -> float:
    correct = 0
    for i in range(0, len(x), chunk):
        correct += int((learner.predict(x[i : i + chunk]).argmax(1) == y[i : i + chunk]).sum())
    return correct / len(x)


def train(learner, ds, epochs: int, batch: int, lr: float, seed: int, first_batch: int | None = None) -> dict:
    """Train with the library protocol; per-epoch wall-clock and CPU seconds, final loss.
    ``first_batch`` is the batch size of the first epoch (default ``batch``)."""
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=lr)
    wall, cpu, losses = [], [], []
    for epoch in range(epochs):
        learner.model.train()
        size = first_batch if (epoch == 0 and first_batch) else batch
        t0, c0 = time.perf_counter(), time.process_time()
        learner.on_epoch_start(epoch)
        for x, y in ds.train_loader(size, shuffle=True, seed=seed + epoch):
            losses.append(learner.step((x, y), opt)["loss"])
        learner.on_epoch_end(epoch)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    tail = losses[-20:]
    return {"wall": wall, "cpu": cpu, "loss": sum(tail) / len(tail)}


def build(kind: str, ds, args) -> nn.Module | None:
    torch.manual_seed(args.seed)
    if kind == "mlp":
        return SoftHebbMLP(ds.input_shape, ds.num_classes, width=args.width)
    if len(ds.input_shape) != 3:
        return None
    return SoftHebbConv(ds.input_shape, ds.num_classes, channels=args.channels)


def compare(data_name: str, kind: str, args) -> None:
    ds = load(data_name, args.n_train, args.n_test)
    base = build(kind, ds, args)
    if base is None:
        print(f"\n## {data_name} / softhebb-{kind}: n/a (the conv preset needs (C, H, W) images)")
        return
    arch = (f"softhebb-mlp width {args.width}" if kind == "mlp"
            else f"softhebb-conv channels {','.join(map(str, args.channels))}")
    print(f"\n## {data_name} ({ds.num_train} train / {ds.num_test} test), {arch}, {args.epochs} epochs, "
          f"batch {args.batch}, Adam lr {args.lr}, seed {args.seed}")
    results = {}
    runs = [("softhebb", {}), ("frozen-init", {"hebbian_epochs": 0}), ("backprop", None)]
    for name, options in runs:
        model = copy.deepcopy(base)
        if options is None:
            if args.bp_init == "default":
                torch.manual_seed(args.seed + 1)
                for m in model.modules():
                    if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not model.out:
                        m.reset_parameters()
            learner = bbp.rules.get("backprop").attach(model)
        else:
            learner = bbp.rules.get("softhebb", **options).attach(model)
        first = args.hebb_batch if name == "softhebb" else None
        run = train(learner, ds, args.epochs, args.batch, args.lr, args.seed, first_batch=first)
        run["acc"] = accuracy(learner, ds.x_test, ds.y_test)
        if options is not None:
            run["norm_dev"] = learner.norm_deviation()
        results[name] = run

    print(f"{'run':<12} {'test acc':>9} {'final loss':>11} {'s/epoch':>9}  notes")
    for name, run in results.items():
        note = ""
        if "norm_dev" in run:
            devs = ", ".join(f"{k} {v:.3g}" for k, v in run["norm_dev"].items())
            note = f"mean |‖W‖−1| after training: {devs}"
        print(f"{name:<12} {run['acc']:9.4f} {run['loss']:11.4f} {statistics.median(run['wall']):9.2f}  {note}")
    bp = results["backprop"]
    hebb_wall, hebb_cpu = results["softhebb"]["wall"][0], results["softhebb"]["cpu"][0]
    bp_wall, bp_cpu = statistics.median(bp["wall"]), statistics.median(bp["cpu"])
    print(f"Hebbian epoch / backprop epoch: wall-clock {hebb_wall / bp_wall:.3f}x "
          f"({hebb_wall:.2f} s / {bp_wall:.2f} s), CPU time {hebb_cpu / bp_cpu:.3f}x (target <= 0.5x)")
    print(f"accuracy: softhebb − backprop {results['softhebb']['acc'] - bp['acc']:+.4f}, "
          f"softhebb − frozen-init {results['softhebb']['acc'] - results['frozen-init']['acc']:+.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="fashion-mnist,mnist1d", help="comma-separated: fashion-mnist, mnist1d")
    p.add_argument("--models", default="mlp,conv", help="comma-separated: mlp, conv")
    p.add_argument("--epochs", type=int, default=5, help="total epochs per run (softhebb: 1 Hebbian + the rest)")
    p.add_argument("--n-train", type=int, default=None, help="first N training samples (default: all)")
    p.add_argument("--n-test", type=int, default=None, help="first N test samples (default: all)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hebb-batch", type=int, default=None,
                   help="batch size of softhebb's Hebbian epoch (default --batch; the authors used 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (classifier; backprop)")
    p.add_argument("--width", type=int, default=2000, help="softhebb-mlp width (authors: 2000)")
    p.add_argument("--channels", type=parse_ints, default=(96, 384, 1536), help="softhebb-conv widths")
    p.add_argument("--bp-init", choices=("default", "same"), default="default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2 (softhebb spends the first on Hebbian learning)")
    if len(args.channels) != 3:
        raise SystemExit("--channels takes three widths, e.g. 96,384,1536")
    torch.set_num_threads(args.threads)
    print(f"# softhebb bench: {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M')}")
    for data_name in [d.strip() for d in args.data.split(",") if d.strip()]:
        for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
            if kind not in ("mlp", "conv"):
                raise SystemExit(f"unknown model {kind!r}; choose mlp or conv")
            compare(data_name, kind, args)


if __name__ == "__main__":
    main()
