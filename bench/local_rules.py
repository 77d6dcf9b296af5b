"""Forward-Forward and inference learning next to backprop: accuracy, sparsity, LR stability.

Three parts, each printed as a table (``--parts`` picks them):

``ff`` — FF vs backprop on the same MLP (``--widths``, default 3 x 500 ReLU) and Fashion-MNIST
    (``--n-train`` / ``--n-test`` first samples, ``--epochs``). Both start from a copy of one
    initial model. Backprop: Adam ``--bp-lr``. FF: Adam ``--ff-lr``, the rule's defaults
    (sum-of-squares goodness, RMS-normalised layer inputs, θ = layer width, simultaneous
    training). Printed: test accuracy (FF with both predictions: summed goodness over the 10
    candidate labels, and the linear readout) and, per hidden layer, the representation
    sparsity on the test set, for FF with the true label embedded (positive data), FF with
    the neutral label, backprop, and the shared initial model:
      * ``active``: the fraction of a layer's units whose ReLU output is > 0 for an input,
        averaged over inputs;
      * ``strong``: the fraction whose output exceeds 10 % of the largest output in that layer
        for that input (a relative threshold that ignores tiny positive activities);
      * ``dead``: the fraction of units that are active for no test input at all.
``il-sweep`` — IL's stability across learning rates: plain SGD at each of ``--sweep-lrs``
    (default 0.01, 0.1, 1, 10, 100 — the paper's grid without 2.5) for standard IL, the prox
    variant and backprop, MLP ``--sweep-widths`` (256-256) on ``--sweep-data`` (default
    MNIST-1D, 4000 train / 1000 test; ``--sweep-n-train`` first samples), batch
    ``--sweep-batch`` (default 1, as in the paper's stability runs), ``--sweep-epochs``
    (default 1). A run "diverged" if any training loss was not finite; its accuracy is then the
    final one (usually chance).
``il`` — IL on Fashion-MNIST next to backprop, same MLP and subset as ``ff``: backprop (Adam
    ``--bp-lr``), standard IL (Adam ``--bp-lr``), prox IL (SGD ``--prox-lr``; η is that LR),
    prox IL with Adam ``--bp-lr`` and ``eta=--prox-eta`` (the authors' "IL-prox Adam": η then
    only sets the output target), backprop (SGD ``--bp-sgd-lr``).

Everything is seeded (``--seed``); with one thread (``--threads``, default 1) reruns print the
same accuracies. Wall-clock per epoch is printed for orientation only (``bench/step_time.py``
measures step-time ratios properly).

    python bench/local_rules.py --epochs 3 --n-train 10000            # all three parts
    python bench/local_rules.py --parts il-sweep --sweep-lrs 0.01,0.1,1,10,100
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time

import torch
from torch import nn

import beyondbp as bbp
from beyondbp import data, models
from beyondbp.rules.common import split_sequential


def parse_floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def train(learner, ds, epochs: int, batch: int, optimizer, seed: int) -> dict:
    """Train with the library's protocol (learner.step, on_epoch_end); report loss and time."""
    diverged, seconds, last_losses = False, 0.0, []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        learner.on_epoch_start(epoch)
        for x, y in ds.train_loader(batch, shuffle=True, seed=seed + epoch):
            loss = learner.step((x, y), optimizer)["loss"]
            if not math.isfinite(loss):
                diverged = True
            last_losses.append(loss)
        learner.on_epoch_end(epoch)
        seconds += time.perf_counter() - t0
    tail = last_losses[-20:]
    return {"diverged": diverged, "s_per_epoch": seconds / max(epochs, 1), "final_loss": sum(tail) / len(tail)}


def accuracy(learner, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> float:
    correct = 0
    for i in range(0, len(x), chunk):
        out = learner.predict(x[i : i + chunk])
        correct += int((out.argmax(1) == y[i : i + chunk]).sum())
    return correct / len(x)


def hidden_activities(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Post-activation outputs of every hidden block of a plain MLP (eval mode, no grad)."""
    prefix, blocks = split_sequential(model, "backprop", (nn.Linear,))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            h = x
            for _, m in prefix:
                h = m(h)
            outs = []
            for block in blocks[:-1]:
                h = block(h)
                outs.append(h.flatten(1))
            return outs
    finally:
        model.train(was)


def sparsity(acts: list[torch.Tensor]) -> list[dict[str, float]]:
    rows = []
    for a in acts:
        active = a > 0
        strong = a > 0.1 * a.max(dim=1, keepdim=True).values.clamp_min(1e-12)
        rows.append({
            "active": float(active.float().mean()),
            "strong": float(strong.float().mean()),
            "dead": float((~active.any(dim=0)).float().mean()),
        })
    return rows


def load(name: str, n_train: int | None, n_test: int | None):
    ds = data.load(name)
    n_train = min(n_train, ds.num_train) if n_train else None
    n_test = min(n_test, ds.num_test) if n_test else None
    return ds.subset(n_train, n_test)


def build_mlp(ds, widths, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", ds.input_shape, ds.num_classes, widths=tuple(widths))


# ------------------------------------------------------------------------------------------------
def part_ff(args) -> None:
    ds = load("fashion-mnist", args.n_train, args.n_test)
    base = build_mlp(ds, args.widths, args.seed)
    x_test, y_test = ds.x_test, ds.y_test
    print(f"\n## FF vs backprop: Fashion-MNIST ({ds.num_train} train / {ds.num_test} test), "
          f"MLP {'-'.join(map(str, args.widths))} ReLU, {args.epochs} epochs, batch {args.batch}")

    init_sparsity = sparsity(hidden_activities(base, x_test))

    bp_model = copy.deepcopy(base)
    bp = bbp.rules.get("backprop").attach(bp_model)
    bp_run = train(bp, ds, args.epochs, args.batch, torch.optim.Adam(bp.optimizer_parameters(), lr=args.bp_lr), args.seed)
    bp_acc = accuracy(bp, x_test, y_test)
    bp_sparsity = sparsity(hidden_activities(bp_model, x_test))

    ff_model = copy.deepcopy(base)
    ff = bbp.rules.get("ff", seed=args.seed).attach(ff_model)
    ff_run = train(ff, ds, args.epochs, args.batch, torch.optim.Adam(ff.optimizer_parameters(), lr=args.ff_lr), args.seed)
    ff_acc = accuracy(ff, x_test, y_test)
    ff.ff.predict = "readout"
    ff_readout_acc = accuracy(ff, x_test, y_test)
    ff.ff.predict = "goodness"
    pos_acts = [torch.cat(parts) for parts in zip(*[
        ff.activities(x_test[i : i + 1000], y_test[i : i + 1000]) for i in range(0, len(x_test), 1000)
    ])]
    neu_acts = [torch.cat(parts) for parts in zip(*[
        ff.activities(x_test[i : i + 1000], None) for i in range(0, len(x_test), 1000)
    ])]
    ff_pos, ff_neu = sparsity(pos_acts), sparsity(neu_acts)

    print(f"\n{'model':<34} {'test acc':>9} {'s/epoch':>8} {'diverged':>9}")
    print(f"{'backprop (Adam ' + str(args.bp_lr) + ')':<34} {bp_acc:9.4f} {bp_run['s_per_epoch']:8.1f} {str(bp_run['diverged']):>9}")
    print(f"{'ff, summed goodness (Adam ' + str(args.ff_lr) + ')':<34} {ff_acc:9.4f} {ff_run['s_per_epoch']:8.1f} {str(ff_run['diverged']):>9}")
    print(f"{'ff, linear readout':<34} {ff_readout_acc:9.4f} {'':>8} {'':>9}")

    print("\nsparsity per hidden layer (test set): active = fraction of units > 0 per input; "
          "strong = fraction > 10% of the layer's max for that input; dead = units never active")
    print(f"{'representation':<28} " + " ".join(f"{'L' + str(k + 1) + ' active':>10} {'strong':>7} {'dead':>6}" for k in range(len(args.widths))))
    for label, rows in (("initial model (shared)", init_sparsity), ("backprop", bp_sparsity),
                        ("ff, true label (positive)", ff_pos), ("ff, neutral label", ff_neu)):
        print(f"{label:<28} " + " ".join(f"{r['active']:10.3f} {r['strong']:7.3f} {r['dead']:6.3f}" for r in rows))


def part_il_sweep(args) -> None:
    ds = load(args.sweep_data, args.sweep_n_train, None)
    print(f"\n## IL learning-rate stability: {args.sweep_data} ({ds.num_train} train / {ds.num_test} test), "
          f"MLP {'-'.join(map(str, args.sweep_widths))} ReLU, plain SGD, batch {args.sweep_batch}, "
          f"{args.sweep_epochs} epochs; cell = test accuracy (D = a training loss went non-finite)")
    lrs = args.sweep_lrs
    print(f"{'rule':<14} " + " ".join(f"{'lr ' + format(lr, 'g'):>10}" for lr in lrs))
    for label, rule, options in (("backprop", "backprop", {}), ("il standard", "il", {}), ("il prox", "il", {"variant": "prox"})):
        cells = []
        for lr in lrs:
            model = build_mlp(ds, args.sweep_widths, args.seed)
            learner = bbp.rules.get(rule, **options).attach(model)
            opt = torch.optim.SGD(learner.optimizer_parameters(), lr=lr)
            run = train(learner, ds, args.sweep_epochs, args.sweep_batch, opt, args.seed)
            acc = accuracy(learner, ds.x_test, ds.y_test)
            cells.append(f"{acc:.3f}{' D' if run['diverged'] else '  '}")
        print(f"{label:<14} " + " ".join(f"{c:>10}" for c in cells))
        sys.stdout.flush()


def part_il(args) -> None:
    ds = load("fashion-mnist", args.n_train, args.n_test)
    base = build_mlp(ds, args.widths, args.seed)
    print(f"\n## IL vs backprop: Fashion-MNIST ({ds.num_train} train / {ds.num_test} test), "
          f"MLP {'-'.join(map(str, args.widths))} ReLU, {args.il_epochs} epochs, batch {args.batch}")
    print(f"{'rule':<34} {'test acc':>9} {'s/epoch':>8} {'diverged':>9}")
    for label, rule, options, make_opt in (
        (f"backprop (Adam {args.bp_lr})", "backprop", {}, lambda p: torch.optim.Adam(p, lr=args.bp_lr)),
        (f"il standard (Adam {args.bp_lr})", "il", {}, lambda p: torch.optim.Adam(p, lr=args.bp_lr)),
        (f"il prox (SGD {args.prox_lr})", "il", {"variant": "prox"}, lambda p: torch.optim.SGD(p, lr=args.prox_lr)),
        (f"il prox (Adam {args.bp_lr}, eta {args.prox_eta:g})", "il", {"variant": "prox", "eta": args.prox_eta},
         lambda p: torch.optim.Adam(p, lr=args.bp_lr)),
        (f"backprop (SGD {args.bp_sgd_lr})", "backprop", {}, lambda p: torch.optim.SGD(p, lr=args.bp_sgd_lr)),
    ):
        model = copy.deepcopy(base)
        learner = bbp.rules.get(rule, **options).attach(model)
        run = train(learner, ds, args.il_epochs, args.batch, make_opt(learner.optimizer_parameters()), args.seed)
        print(f"{label:<34} {accuracy(learner, ds.x_test, ds.y_test):9.4f} {run['s_per_epoch']:8.1f} {str(run['diverged']):>9}")
        sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="ff,il-sweep,il", help="comma-separated: ff, il-sweep, il")
    p.add_argument("--epochs", type=int, default=3, help="FF / backprop epochs on Fashion-MNIST (default 3)")
    p.add_argument("--il-epochs", type=int, default=None, help="IL part epochs (default: --epochs)")
    p.add_argument("--n-train", type=int, default=10000, help="first N Fashion-MNIST training samples (0: all)")
    p.add_argument("--n-test", type=int, default=10000, help="first N test samples (0: all)")
    p.add_argument("--widths", type=parse_ints, default=(500, 500, 500), help="hidden widths (default 500,500,500)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--bp-lr", type=float, default=1e-3)
    p.add_argument("--bp-sgd-lr", type=float, default=0.1)
    p.add_argument("--ff-lr", type=float, default=3e-3)
    p.add_argument("--prox-lr", type=float, default=1.0, help="SGD learning rate (= η) of the prox row")
    p.add_argument("--prox-eta", type=float, default=100.0, help="η of the prox + Adam row (the authors' IL-prox Adam)")
    p.add_argument("--sweep-data", default="mnist1d")
    p.add_argument("--sweep-widths", type=parse_ints, default=(256, 256))
    p.add_argument("--sweep-lrs", type=parse_floats, default=[0.01, 0.1, 1.0, 10.0, 100.0])
    p.add_argument("--sweep-batch", type=int, default=1, help="default 1, as in the paper's stability test")
    p.add_argument("--sweep-epochs", type=int, default=1)
    p.add_argument("--sweep-n-train", type=int, default=0, help="first N training samples of the sweep set (0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.il_epochs is None:
        args.il_epochs = args.epochs
    torch.set_num_threads(args.threads)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = set(parts) - {"ff", "il-sweep", "il"}
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from ff, il-sweep, il")
    print(f"# local rules: {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M')}")
    for part in parts:
        {"ff": part_ff, "il-sweep": part_il_sweep, "il": part_il}[part](args)


if __name__ == "__main__":
    main()
