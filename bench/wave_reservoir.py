"""The frozen wave reservoir (readout only) against the liquid state machine (issue 25).

A reservoir whose recurrence and encoder are frozen (``wrnn`` / ``irnn`` with
``freeze_recurrence=True, freeze_encoder=True``) is a fixed function of the image: its last
hidden state is the same every epoch. ``beyondbp train`` re-simulates it at every epoch (the
``lsm`` model has a feature cache, the recurrent models have none); this script simulates it
once (``torch.no_grad``, the model's own forward with its readout swapped for the identity),
then trains the model's own ``readout`` (its initial weights, as ``beyondbp train`` builds them
with the same seed) on those features with the run loop's batch order
(:class:`beyondbp.training.batches.ShuffledBatches`, ``loader_stream=True``, the run's seed). The
readout sees exactly what it sees inside ``beyondbp train --model wrnn --model-opt
freeze_recurrence=true --model-opt freeze_encoder=true``, so the figures are that run's, at the
cost of one simulation instead of one per epoch (``--check-epochs`` prints the curve to compare
with the CLI).

    # frozen wave reservoir (5 rings of 196 = 980 units), frozen iRNN (980 units) and linear
    # readouts of the raw pixels, the LSM's reduced protocol: first 10,000 training images, all
    # 10,000 test images, Adadelta lr 0.1, weight decay 5e-10, batch 256, 300 epochs
    python bench/wave_reservoir.py --models wrnn irnn pixels14 pixels28 \\
        --grid adadelta:0.1 adadelta:1.0 adam:0.001 --epochs 300

Inputs: ``wrnn`` / ``irnn`` / ``pixels14`` read ``sfmnist`` with ``size=14`` (196 steps of one
standardised pixel, raster order; ``pixels14`` is a linear readout of those 196 values);
``pixels28`` is a linear readout of the 784 standardised pixels of ``fashion-mnist`` (what the
LSM's Poisson spike trains encode). A grid point ending in ``:z`` standardises every feature
with the training features' mean and std first (the same linear readout, reparametrised: only the
optimisation's conditioning changes; the LSM's readout also rescales its spike counts). One JSON line per (model, optimizer, lr) on stdout; one
torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from beyondbp import data, models, rules
from beyondbp.training.batches import ShuffledBatches


def _sequences(args):
    return data.load("sfmnist", size=14).subset(args.n_train, args.n_test)


def features(name: str, args):
    """``(F_train, F_test, y_train, y_test, readout, info)`` for one model or pixel baseline."""
    c0 = time.process_time()
    if name == "pixels28":
        ds = data.load("fashion-mnist").subset(args.n_train, args.n_test)
        f_train, f_test = ds.x_train.flatten(1), ds.x_test.flatten(1)
        info = {"input": "28x28 image, 784 standardised pixels at once", "hidden_units": 0}
    else:
        ds = _sequences(args)
        if name == "pixels14":
            f_train, f_test = ds.x_train.flatten(1), ds.x_test.flatten(1)
            info = {"input": "14x14 image, 196 standardised pixels at once", "hidden_units": 0}
        else:
            torch.manual_seed(args.seed)  # as beyondbp train builds it: same initial readout
            size = ({"channels": args.channels, "ring": args.ring} if name == "wrnn" else {"hidden": args.hidden})
            model = models.build(name, ds.input_shape, 10, freeze_recurrence=True, freeze_encoder=True, **size)
            readout, model.readout = model.readout, nn.Identity()
            with torch.no_grad():
                f_train, f_test = (torch.cat([model(x) for x in xs.split(args.sim_batch)])
                                   for xs in (ds.x_train, ds.x_test))
            model.readout = readout
            units = f_train.shape[1]
            info = {"input": "14x14 sequential, 196 steps of one pixel", "hidden_units": units, **size,
                    "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
                    "silent_units": int((f_train.abs().sum(0) == 0).sum()),
                    "feature_mean": round(float(f_train.mean()), 4), "feature_max": round(float(f_train.max()), 4)}
            info["sim_cpu_s"] = round(time.process_time() - c0, 1)
            return f_train, f_test, ds.y_train, ds.y_test, readout, info
    torch.manual_seed(args.seed)
    readout = nn.Linear(f_train.shape[1], 10)
    info["sim_cpu_s"] = round(time.process_time() - c0, 1)
    return f_train, f_test, ds.y_train, ds.y_test, readout, info


def _accuracy(readout: nn.Module, f: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((readout(f).argmax(-1) == y).float().mean())


def train_readout(readout: nn.Module, f_train, y_train, f_test, y_test, optimizer: str, lr: float, args) -> dict:
    params = list(readout.parameters())
    if optimizer == "adadelta":
        opt = torch.optim.Adadelta(params, lr=lr, weight_decay=args.weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=args.weight_decay)
    else:
        raise SystemExit(f"optimizer must be adadelta or adam, not {optimizer!r}")
    batches = ShuffledBatches(f_train.shape[0], args.batch, args.seed, loader_stream=True)
    curve, c0 = {}, time.process_time()
    for epoch in range(1, args.epochs + 1):
        for idx in batches.epoch():
            opt.zero_grad(set_to_none=True)
            rules.default_loss(readout(f_train[idx]), y_train[idx]).backward()
            opt.step()
        if epoch % args.eval_every == 0 or epoch == args.epochs or epoch <= args.check_epochs:
            curve[epoch] = round(_accuracy(readout, f_test, y_test), 4)
    return {"test_accuracy": curve[args.epochs], "train_accuracy": round(_accuracy(readout, f_train, y_train), 4),
            "best_test_seen": max(curve.values()), "curve": curve, "readout_cpu_s": round(time.process_time() - c0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["wrnn", "irnn", "pixels14", "pixels28"],
                        choices=["wrnn", "irnn", "pixels14", "pixels28"])
    parser.add_argument("--grid", nargs="+", default=["adadelta:0.1"],
                        help="OPTIMIZER:LR pairs (adadelta, adam); OPTIMIZER:LR:z first standardises each feature "
                             "with the training features' mean and std (a fixed affine map before the readout)")
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--ring", type=int, default=196)
    parser.add_argument("--hidden", type=int, default=980)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--weight-decay", type=float, default=5e-10)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--check-epochs", type=int, default=0, help="also evaluate after each of the first N epochs")
    parser.add_argument("--sim-batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        f_train, f_test, y_train, y_test, readout, info = features(name, args)
        start = {k: v.detach().clone() for k, v in readout.state_dict().items()}
        mean, std = f_train.mean(0), f_train.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))  # a silent unit stays 0
        for point in args.grid:
            optimizer, lr, *z = point.split(":")
            readout.load_state_dict(start)
            fz_train, fz_test = ((f_train - mean) / std, (f_test - mean) / std) if z == ["z"] else (f_train, f_test)
            result = train_readout(readout, fz_train, y_train, fz_test, y_test, optimizer, float(lr), args)
            print(json.dumps({"model": name, **info, "trained": "readout",
                              "trained_params": sum(p.numel() for p in readout.parameters()),
                              "optimizer": optimizer, "lr": float(lr), "standardised": z == ["z"],
                              "weight_decay": args.weight_decay,
                              "batch": args.batch, "epochs": args.epochs, "n_train": f_train.shape[0],
                              "n_test": f_test.shape[0], **result}), flush=True)


if __name__ == "__main__":
    main()
