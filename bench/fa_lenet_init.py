"""FA (and backprop) on LeNet Fashion-MNIST under BioTorch's protocol, with BioTorch's initialisation.

Used to find out why ``fa`` measures 15.36 % test error after BioTorch's 100-epoch protocol
against BioTorch's published 13.06 % (see ``bench/README.md``). Each ``VARIANT`` is
``RULE:INIT:LR[:WEIGHT_DECAY[:SEED]]`` and is trained by ``beyondbp.training.run`` with the protocol
of ``fashion_mnist_lenet.py`` (LeNet-5, Fashion-MNIST zero-padded to 32x32, SGD momentum 0.9,
batch 64, learning rate /10 at 50 % and 75 % of ``--epochs``; weight decay 1e-3 unless the
variant gives one; seed 0 unless given). ``INIT`` is one of:

* ``pytorch`` — beyondbp as it is: the model keeps PyTorch's default layer init (weights
  U(±1/sqrt(fan_in)), biases U(±1/sqrt(fan_in))); FA draws ``B`` with its default
  ``init="kaiming_uniform"``, the same law.
* ``biotorch`` — BioTorch 0.0.16's ``init: "xavier"`` (its default, and what its LeNet configs
  use), read from ``biotorch/layers/fa_constructor/{linear,conv}.py``: every layer's weight
  and FA's ``B`` drawn independently from Xavier uniform U(±sqrt(6/(fan_in+fan_out))), biases 0.
  BioTorch's LeNet computes the 400->120 layer as ``Conv2d(16, 120, 5)`` on a 5x5 map, so its
  Xavier fans are (400, 3000), not (400, 120): bound 0.042 instead of 0.107. beyondbp's
  ``fc1`` is the same map as a ``Linear``, so its weight and ``B`` get the conv's bound here.
* ``xavier-linear`` — as ``biotorch`` but ``fc1`` with a ``Linear``'s fans (bound 0.107), i.e.
  what ``nn.init.xavier_uniform_`` and FA's ``init="xavier_uniform"`` give on beyondbp's LeNet.

The re-initialisation happens between building the model and training it, through a wrapper
around ``beyondbp.training.prepare`` (it draws from the seeded global RNG, so runs are
reproducible). ``--diagnostics`` records ``beyondbp.analysis.alignment`` after every epoch
(on the first 64 test images; it never changes the training) and prints the last epoch's.
``--at-init`` trains nothing and prints, per layer, the norm of the rule's update over the
norm of backprop's gradient (and both norms) at initialisation on the first 512 training images.
``--no-divergence-stop`` lets a run whose loss blows up keep going (BioTorch's
trainer never stops a run). Printed per variant: epochs run, final and best-epoch test error,
last epoch's training loss, status, wall time, and the test error after every epoch.

    python bench/fa_lenet_init.py --epochs 15 fa:pytorch:1e-2 fa:biotorch:1e-3 backprop:biotorch:1e-2
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch import nn

import beyondbp.training as train
from beyondbp.training import RunConfig, run

INITS = ("pytorch", "pytorch-xavier-b", "biotorch", "xavier-linear")
_STATE = {"init": "pytorch"}
_prepare = train.prepare

#: BioTorch's LeNet-MNIST computes beyondbp's fc1 (400 -> 120) as Conv2d(16, 120, 5): Xavier fans.
BIOTORCH_CONV_FANS = {"fc1": (16 * 25, 120 * 25)}


def _prepare_with_init(config, dataset=None):
    setup = _prepare(config, dataset)
    init = _STATE["init"]
    if init not in ("biotorch", "xavier-linear"):
        return setup
    with torch.no_grad():
        for name, module in setup.model.named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                module.bias.zero_()
            if init == "biotorch" and name in BIOTORCH_CONV_FANS:
                fan_in, fan_out = BIOTORCH_CONV_FANS[name]
                linear_in, linear_out = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                module.weight.uniform_(-bound, bound)
                # FA drew B with init="xavier_uniform" on the Linear's fans: same law, rescaled.
                feedback = getattr(module, "bbp_feedback", None)
                if isinstance(feedback, torch.Tensor):
                    feedback.mul_(bound / math.sqrt(6.0 / (linear_in + linear_out)))
    return setup


def print_at_init(spec: str, config: RunConfig) -> None:
    setup = train.prepare(config)
    try:
        batch = (setup.dataset.x_train[:512], setup.dataset.y_train[:512])
        rule_grads = setup.learner.estimate(batch)
        bp_grads = setup.learner.backprop_gradients(batch)
        cells = []
        for name in setup.learner.trained_layers():
            key = f"{name}.weight"
            ratio = float(rule_grads[key].norm() / bp_grads[key].norm())
            w = float(setup.model.get_parameter(key).detach().norm())
            cells.append(f"{name} {ratio:.2f} (|g_bp| {float(bp_grads[key].norm()):.3g}, |W| {w:.3g})")
        print(f"{spec:<28} at init, |update|/|bp grad|: " + "  ".join(cells), flush=True)
    finally:
        setup.learner.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="+", metavar="RULE:INIT:LR[:WD[:SEED]]")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-divergence-stop", action="store_true", help="never stop a run for a blown-up loss")
    p.add_argument("--diagnostics", action="store_true",
                   help="also print the last epoch's per-layer alignment (cosine of the rule's update with "
                        "backprop's gradient, angle between B and W, |B|/|W|; beyondbp.analysis.alignment)")
    p.add_argument("--n-train", type=int, default=None, help="first N training images only (default: all)")
    p.add_argument("--at-init", action="store_true",
                   help="train nothing: print, per layer, |rule's update| / |backprop's gradient| and |W| at "
                        "initialisation, on the first 512 training images")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    if args.no_divergence_stop:
        train.DIVERGENCE_FACTOR = math.inf  # non-finite losses still stop a run
    train.prepare = _prepare_with_init
    print(f"# {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, threads {args.threads}, {time.strftime('%Y-%m-%d %H:%M')}")
    for spec in args.variants:
        parts = spec.split(":")
        if not 3 <= len(parts) <= 5 or parts[1] not in INITS:
            raise SystemExit(f"variant must be RULE:INIT:LR[:WD[:SEED]] with INIT in {INITS}, got {spec!r}")
        rule, init, lr = parts[0], parts[1], float(parts[2])
        wd = float(parts[3]) if len(parts) > 3 else 1e-3
        seed = int(parts[4]) if len(parts) > 4 else 0
        _STATE["init"] = init
        started = time.perf_counter()
        xavier_b = init != "pytorch" and rule == "fa"
        config = RunConfig(
            rule=rule, rule_options={"init": "xavier_uniform"} if xavier_b else {},
            model="lenet", data="fashion-mnist", data_dir=args.data_dir,
            data_options={"pad_to_32": True}, epochs=args.epochs, batch_size=64,
            optimizer="sgd", lr=lr, momentum=0.9, weight_decay=wd,
            lr_schedule="step", milestones=[0.5, 0.75], gamma=0.1, seed=seed, threads=args.threads,
            n_train=args.n_train, diagnostics=args.diagnostics,
        )
        if args.at_init:
            print_at_init(spec, config)
            continue
        result = run(config)
        errs = [100 * (1 - h["test_accuracy"]) for h in result.history if h.get("test_accuracy") is not None]
        loss = result.history[-1].get("train_loss") if result.history else float("nan")
        print(f"{spec:<28} epochs {result.epochs:3d}  final {100 * (1 - result.final['test_accuracy']):6.2f}  "
              f"best {min(errs):6.2f}  train loss {loss:9.3g}  {result.status:<8} {time.perf_counter() - started:5.0f}s"
              f"  | {' '.join(f'{e:.1f}' for e in errs)}", flush=True)
        if args.diagnostics:
            diag = result.final.get("diagnostics", {})
            print("    " + "  ".join(f"{k} {v:.3g}" for k, v in diag.items()), flush=True)


if __name__ == "__main__":
    main()
