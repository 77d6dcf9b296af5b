"""The NALSM readout recipe on cached liquid features, a training subset of them, and on the raw
pixels: is a liquid better than no liquid at all?

Every ``--liquid LABEL=SOURCE`` names one liquid's cached features (SOURCE: a run's output
folder, its results.json, or a feature cache file ``<feature_cache>/<key>.pt``; see
beyondbp.training.liquid_features.load_features). ``--pixels`` adds the raw Fashion-MNIST pixels
(784 values, standardised as the `fashion-mnist` data set gives them) as one more "liquid". Each gets the authors' readout as ``beyondbp train``
runs it for model ``lsm``: one zero-initialised Linear layer on the features (``--features``,
default ``authors``: spike counts ÷ the image's total ÷ the training maximum; pixels are used as
they are), softmax cross-entropy, Adadelta (``--lr`` 0.1, weight decay ``--weight-decay`` 5e-10),
batches of ``--batch`` 256 in a fresh random order per epoch, ``--epochs`` 300, trained on the
first ``--n-train`` training images (default: all the liquid has) and tested on all its test
images. Printed: test accuracy after the last epoch, its mean over the last 30 epochs and the
best epoch (the best is an optimistic figure: it is chosen on the test set).

The features are only read; nothing is written unless ``--json`` names a file.

    python bench/lsm_readout.py --liquid nalsm-s0=/work/s6/nalsm/seed0 --n-train 10000 --pixels
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch
from torch import nn

from beyondbp import data as data_mod
from beyondbp.errors import BeyondBPError
from beyondbp.training.liquid_features import load_features


def readout(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
            lr: float, weight_decay: float, batch: int, epochs: int, seed: int) -> dict:
    """Train the authors' linear readout (zero-initialised; the batch order from its own generator
    seeded with ``seed``, the global random state untouched); test accuracy per epoch, CPU seconds."""
    layer = nn.utils.skip_init(nn.Linear, x_train.shape[1], int(max(y_train.max(), y_test.max())) + 1)  # no RNG draw
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.Adadelta(layer.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n, accs, t0 = x_train.shape[0], [], time.process_time()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(layer(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            accs.append(float((layer(x_test).argmax(1) == y_test).float().mean()))
    best = max(range(epochs), key=lambda e: accs[e])
    return {"last": accs[-1], "mean_last30": sum(accs[-30:]) / len(accs[-30:]), "best": accs[best],
            "best_epoch": best + 1, "cpu_s": time.process_time() - t0, "features": int(x_train.shape[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--liquid", action="append", default=[], metavar="LABEL=SOURCE")
    parser.add_argument("--pixels", action="store_true", help="also the raw Fashion-MNIST pixels")
    parser.add_argument("--features", default="authors", help="authors, l1 or counts (liquids only)")
    parser.add_argument("--n-train", type=int, default=None, help="first N training images (default: all)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not args.liquid and not args.pixels:
        parser.error("give at least one --liquid LABEL=SOURCE or --pixels")
    torch.set_num_threads(args.threads)
    rows = []
    try:
        sources = []
        for item in args.liquid:
            label, sep, source = item.partition("=")
            if not sep or not label or not source:
                parser.error(f"--liquid {item!r} is not LABEL=SOURCE")
            sources.append((label, source))
        loaded = []
        for label, source in sources:  # every source read (and refused) before any training
            feats = load_features(source)
            if feats.labels_train is None:
                raise BeyondBPError(f"{source!r} holds no labels (a cache file written before 2026-12-07); "
                                    "give its run's output folder")
            loaded.append((label, feats))
        for label, feats in loaded:
            n = feats.counts_train.shape[0] if args.n_train is None else min(args.n_train, feats.counts_train.shape[0])
            sub = dataclasses.replace(feats, counts_train=feats.counts_train[:n])
            x_train, x_test = sub.features(args.features)
            rows.append((label, n, readout(x_train, feats.labels_train[:n].long(), x_test, feats.labels_test.long(),
                                           lr=args.lr, weight_decay=args.weight_decay, batch=args.batch,
                                           epochs=args.epochs, seed=args.seed)))
        if args.pixels:
            ds = data_mod.load("fashion-mnist")
            n = ds.num_train if args.n_train is None else min(args.n_train, ds.num_train)
            x_train = ds.x_train[:n].reshape(n, -1).float()
            x_test = ds.x_test.reshape(ds.num_test, -1).float()
            rows.append(("pixels", n, readout(x_train, ds.y_train[:n].long(), x_test, ds.y_test.long(),
                                              lr=args.lr, weight_decay=args.weight_decay, batch=args.batch,
                                              epochs=args.epochs, seed=args.seed)))
    except BeyondBPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| features | training images | inputs to the readout | test acc, last epoch | mean of last 30 | best (epoch) | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for label, n, r in rows:
        print(f"| {label} | {n} | {r['features']} | {100 * r['last']:.2f} % | {100 * r['mean_last30']:.2f} % | "
              f"{100 * r['best']:.2f} % ({r['best_epoch']}) | {r['cpu_s']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{"label": label, "n_train": n, **r} for label, n, r in rows], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
