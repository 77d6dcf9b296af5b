"""The run layer's reusable pieces: seeding, optimizers, learning-rate schedules, divergence.

The run loop (:mod:`beyondbp.training.loop`) and the loops of the satellite families
(:mod:`beyondbp.continual`, :mod:`beyondbp.adapt`) take these from here and add only their own
logic; batching and evaluation over in-memory tensors are in :mod:`beyondbp.training.batches`.
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .config import RunConfig

__all__ = [
    "DIVERGENCE_FACTOR",
    "OPTIMIZERS",
    "build_optimizer",
    "diverged",
    "make_optimizer",
    "make_scheduler",
    "seed_everything",
    "seeded",
]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """:func:`seed_everything` for the body of a ``with`` block only: Python's, NumPy's and
    torch's CPU generators get their states back when it ends, so code that builds something
    from a seed (a model's initial weights) leaves the caller's random streams as they were."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            seed_everything(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


#: The optimizers a run (and a satellite loop) can build, by name.
OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")


def build_optimizer(
    name: str,
    params: Iterable[nn.Parameter],
    *,
    lr: float,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    betas: tuple[float, float] | None = None,
) -> torch.optim.Optimizer:
    """A torch optimizer over ``params`` from its settings, with torch's defaults elsewhere.

    Args:
        name: ``"sgd"``, ``"adam"``, ``"adamw"`` or ``"adadelta"`` (the NALSM authors' readout optimizer).
        params: the parameters (e.g. ``learner.optimizer_parameters()``).
        lr: learning rate.
        momentum: SGD's momentum (``None``: 0); refused by the others unless ``None`` or 0.
        weight_decay: L2 penalty (SGD, Adam) or decoupled decay (AdamW).
        betas: Adam's and AdamW's ``(β1, β2)`` (``None``: torch's default ``(0.9, 0.999)``);
            refused by SGD.
    """
    params = list(params)
    if name == "sgd":
        if betas is not None:
            raise ConfigError("optimizer 'sgd' takes no betas; they belong to 'adam' and 'adamw'")
        return torch.optim.SGD(params, lr=lr, momentum=momentum or 0.0, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        if momentum:
            raise ConfigError(f"optimizer {name!r} takes no momentum (it is SGD's); use betas")
        extra = {} if betas is None else {"betas": tuple(betas)}
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, weight_decay=weight_decay, **extra)
    if name == "adadelta":
        if momentum or betas is not None:
            raise ConfigError("optimizer 'adadelta' takes no momentum or betas; leave them out")
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; optimizers are: {', '.join(OPTIMIZERS)}")


def make_optimizer(config: RunConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimizer: :func:`build_optimizer` with ``config``'s settings."""
    momentum = config.momentum if config.optimizer == "sgd" else None  # only SGD reads it
    return build_optimizer(config.optimizer, params, lr=config.lr, momentum=momentum,
                           weight_decay=config.weight_decay)


def make_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """A per-optimizer-step ``LambdaLR`` implementing ``config.lr_schedule`` over ``total_steps``."""
    total = max(int(total_steps), 1)
    if config.lr_schedule == "step":
        bounds = [m * total for m in config.milestones]

        def factor(step: int) -> float:
            return config.gamma ** sum(step >= b for b in bounds)

    elif config.lr_schedule == "cosine":

        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    else:

        def factor(step: int) -> float:
            return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


#: A finite epoch-mean training loss above this multiple of max(first step's loss, log(classes))
#: marks a run as diverged (see :mod:`beyondbp.training.loop`, step 6).
DIVERGENCE_FACTOR = 100.0


def diverged(train_loss: float, first_loss: float, num_classes: int | None) -> bool:
    """Whether an epoch's mean training loss (cross-entropy) means the run has blown up: not
    finite, or above ``DIVERGENCE_FACTOR · max(first_loss, log(num_classes))``."""
    if not math.isfinite(train_loss):
        return True
    reference = [v for v in (first_loss, math.log(num_classes) if num_classes and num_classes > 1 else math.nan)
                 if math.isfinite(v) and v > 0]
    return bool(reference) and train_loss > DIVERGENCE_FACTOR * max(reference)
