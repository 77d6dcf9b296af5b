"""The source model of test-time adaptation: a small BatchNorm CNN trained on clean data.

``BNCNN`` (28×28 grey input in [0, 1])::

    standardize (fixed mean / std of the clean training pixels, a buffer)
    conv1 3×3, c1 channels, padding 1 -> bn1 -> relu -> maxpool 2      (28 -> 14)
    conv2 3×3, c2 channels, padding 1 -> bn2 -> relu -> maxpool 2      (14 -> 7)
    conv3 3×3, c3 channels, padding 1 -> bn3 -> relu -> adaptive average pool to 3×3
    flatten -> out: Linear(9·c3, 10)

``channels=(32, 64, 64)`` by default (about 62k parameters). (A global average pool before the
classifier trained markedly slower: 25.5% against 20.2% clean test error after one epoch on
20k images.) The standardisation is inside the
model so that corruptions act on pixels in [0, 1], as in CIFAR-10-C.

Why it lives here and not in :mod:`beyondbp.models`: the adaptation methods need BatchNorm
layers (norm and TENT adapt nothing else), and a model registered there becomes part of every
rule's contract suite and of ``beyondbp train``'s model list; no rule of the library needs a
BN CNN, so it stays with the family that does. It is a plain ``nn.Sequential`` with named
layers all the same, and any rule attaches to it.

Training (:func:`train_source`): a plain supervised loop — Adam (lr 1e-3), batch 128 (a final
batch of one sample joins the one before it), cross-entropy, ``epochs`` passes over the clean
training set in an order drawn from ``seed``; seeding, the optimizer, the batches and the
evaluation come from the run layer (:mod:`beyondbp.training`),
BatchNorm in train mode (its running statistics are what ``source`` uses at test time); the
``beyondbp adapt source`` default is 3 epochs. The
checkpoint is a standard beyondbp checkpoint (:mod:`beyondbp.checkpoint`) whose meta records
``kind="adapt-source"``, the channels, the training settings and the clean test error.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint
from ..errors import CheckpointError, ConfigError, DataError
from ..training.batches import ShuffledBatches, evaluate_tensors
from ..training.components import build_optimizer, seeded

__all__ = ["BNCNN", "Standardize", "SOURCE_KIND", "load_source", "save_source", "train_source"]

SOURCE_KIND = "adapt-source"
#: Fashion-MNIST's clean training pixels (mean, std), as beyondbp.data computes them.
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


class Standardize(nn.Module):
    """``(x − mean) / std`` with fixed (buffer) statistics."""

    def __init__(self, mean: float = FASHION_MEAN, std: float = FASHION_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BNCNN(nn.Sequential):
    """Three conv–BatchNorm–ReLU blocks and a linear classifier (see the module docstring)."""

    def __init__(self, channels: Sequence[int] = (32, 64, 64), num_classes: int = 10,
                 mean: float = FASHION_MEAN, std: float = FASHION_STD) -> None:
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or any(c < 1 for c in channels):
            raise ConfigError(f"BNCNN channels must be three positive whole numbers, got {channels}")
        c1, c2, c3 = channels
        super().__init__(
            OrderedDict(
                standardize=Standardize(mean, std),
                conv1=nn.Conv2d(1, c1, 3, padding=1),
                bn1=nn.BatchNorm2d(c1),
                act1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(c1, c2, 3, padding=1),
                bn2=nn.BatchNorm2d(c2),
                act2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
                conv3=nn.Conv2d(c2, c3, 3, padding=1),
                bn3=nn.BatchNorm2d(c3),
                act3=nn.ReLU(),
                pool3=nn.AdaptiveAvgPool2d(3),
                flatten=nn.Flatten(),
                out=nn.Linear(9 * c3, num_classes),
            )
        )
        self.channels = channels
        self.num_classes = num_classes
        self.input_shape = (1, 28, 28)


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 error (fraction) of ``model`` in eval mode; the model's mode is restored."""
    was = model.training
    model.eval()
    try:
        counts = evaluate_tensors(model, x, y, batch_size=batch_size)
    finally:
        model.train(was)
    return (counts["count"] - counts["correct"]) / max(1, len(x))


def train_source(x: torch.Tensor, y: torch.Tensor, *, channels: Sequence[int] = (32, 64, 64), num_classes: int = 10, epochs: int = 2,
                 batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                 progress: Callable[[int, int, float], None] | None = None) -> BNCNN:
    """Train a :class:`BNCNN` on clean images ``x`` (``(N, 1, 28, 28)`` in [0, 1]) and labels ``y``.

    Same inputs and seed -> the same weights (CPU). ``progress(step, steps, loss)`` is called
    after every step when given.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"invalid epochs {epochs!r}: it must be a whole number of at least 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(f"invalid batch size {batch_size!r}: it must be a whole number of at least 2 (BatchNorm)")
    if len(x) < 2 or len(y) != len(x):
        raise DataError(f"train_source needs at least 2 training images and one label per image, got {len(x)} "
                        f"images and {len(y)} labels")
    # a final batch of one sample joins the one before it (BatchNorm needs two)
    batches = ShuffledBatches(len(x), batch_size, torch.Generator().manual_seed(int(seed)), join_single=True)
    with seeded(int(seed)):
        model = BNCNN(channels, num_classes=num_classes)
    opt = build_optimizer("adam", model.parameters(), lr=lr)
    model.train()
    steps, step = epochs * len(batches), 0
    for _ in range(epochs):
        for idx in batches.epoch():
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if progress is not None:
                progress(step, steps, float(loss.detach()))
    model.eval()
    return model


def save_source(path: str | os.PathLike, model: BNCNN, meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` as a beyondbp checkpoint marked ``kind="adapt-source"`` (atomically)."""
    info = {"kind": SOURCE_KIND, "model": "BNCNN", "channels": list(model.channels),
            "num_classes": model.num_classes, **(meta or {})}
    checkpoint.save(path, model, meta=info)


def load_source(path: str | os.PathLike) -> tuple[BNCNN, dict[str, Any]]:
    """The source model in a checkpoint written by :func:`save_source`, in eval mode, and its meta.
    The file is only read."""
    payload = checkpoint.read(path)
    meta = payload["meta"]
    if meta.get("kind") != SOURCE_KIND:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not an adaptation source model (train one with beyondbp adapt source)"
        )
    try:
        # the meta record's sizes are checked against the tensors the file holds before the model
        # is built: built on the meta device (nothing allocated), so that a meta record claiming
        # huge channels cannot make this allocate what the file does not hold
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            skeleton = BNCNN(meta["channels"], num_classes=int(meta["num_classes"]))
    except (KeyError, TypeError, ValueError, ConfigError, OverflowError, RuntimeError):
        raise CheckpointError(f"checkpoint {str(path)!r} has a malformed source-model meta record") from None
    try:
        checkpoint.check_state(payload["model"], skeleton.state_dict(), "model")
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not match its own meta record ({exc})") from None
    model = BNCNN(meta["channels"], num_classes=int(meta["num_classes"]))
    checkpoint.load(payload, model)
    model.eval()
    return model, dict(meta)
