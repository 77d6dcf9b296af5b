"""Batches of in-memory tensors and their evaluation: the pieces every training loop shares.

The run loop (:class:`~beyondbp.training.tasks.ClassificationTask`), the continual-learning loop
(:func:`beyondbp.continual.methods.run_method`) and the test-time-adaptation source model
(:func:`beyondbp.adapt.source.train_source`) all draw their mini-batches with
:class:`ShuffledBatches` and measure accuracy with :func:`evaluate_tensors`; the adaptation
benchmark streams test batches cut by :func:`batch_slices`.

>>> import torch
>>> batches = ShuffledBatches(10, 4, torch.Generator().manual_seed(0))
>>> [len(idx) for idx in batches.epoch()]
[4, 4, 2]
>>> [len(idx) for idx in ShuffledBatches(9, 4, 0, join_single=True).epoch()]
[4, 5]

Random streams. An epoch's order is one ``torch.randperm(n, generator=...)``. With
``loader_stream=True`` an epoch draws from the generator exactly what
``torch.utils.data.DataLoader(shuffle=True, generator=...)`` draws over one full pass (the
iterator's 64-bit base seed, the permutation, and the second permutation its
``RandomSampler`` starts on the way out): the run loop's stream, so that runs keep the batches
(and results) they had when the loop iterated a ``DataLoader``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["ShuffledBatches", "batch_slices", "evaluate_batches", "evaluate_tensors", "tensor_batches"]


def _count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"invalid {what} {value!r}: it must be a whole number of at least {minimum}")
    return value


def batch_slices(n: int, batch_size: int, *, join_single: bool = False) -> list[slice]:
    """Consecutive slices of ``batch_size`` covering ``range(n)`` (the last one may be shorter).

    Args:
        n: number of samples (0 gives no slice).
        batch_size: samples per slice, at least 1.
        join_single: a final slice of one sample joins the one before it (for BatchNorm, whose
            statistics of one sample are degenerate); a lone sample (``n == 1``) stays one slice.
    """
    _count(n, "number of samples", 0)
    _count(batch_size, "batch size", 1)
    bounds = list(range(0, n, batch_size)) + [n]
    if join_single and len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


class ShuffledBatches:
    """Epochs of shuffled mini-batches of indices into ``n`` in-memory samples.

    Args:
        n: number of samples.
        batch_size: samples per batch (the last batch of an epoch may be shorter).
        generator: a ``torch.Generator`` the order is drawn from, or an ``int`` seed for a fresh
            one. The global RNG is never touched.
        join_single: a final batch of one sample joins the one before it (:func:`batch_slices`).
        loader_stream: draw what a shuffling ``DataLoader`` draws per epoch (module docstring).

    :meth:`epoch` draws one epoch's order and returns its batches (index tensors); same
    generator state, same batches.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | int, *,
                 join_single: bool = False, loader_stream: bool = False) -> None:
        self.n = _count(n, "number of samples", 0)
        self.slices = batch_slices(n, batch_size, join_single=join_single)
        if isinstance(generator, torch.Generator):
            self.generator = generator
        else:
            self.generator = torch.Generator().manual_seed(_count(generator, "seed", 0))
        self.loader_stream = bool(loader_stream)

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.slices)

    def epoch(self) -> list[Tensor]:
        """The next epoch's batches: index tensors into the ``n`` samples, each sample once."""
        g = self.generator
        if self.loader_stream:  # the DataLoader iterator's base seed
            torch.empty((), dtype=torch.int64).random_(generator=g)
        order = torch.randperm(self.n, generator=g)
        if self.loader_stream:  # the RandomSampler's next permutation, started at the end of a pass
            torch.randperm(self.n, generator=g)
        return [order[s] for s in self.slices]


def tensor_batches(x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` in consecutive chunks of ``batch_size``, in stored order."""
    for s in batch_slices(int(x.shape[0]), batch_size):
        yield x[s], y[s]


@torch.no_grad()
def evaluate_batches(
    predict: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    logit_offset: Tensor | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Accuracy (and mean loss) of ``predict`` over ``(x, y)`` batches (a ``DataLoader``, or
    :func:`tensor_batches`).

    Args:
        predict: maps an input batch to logits (``learner.predict``, or a model in eval mode).
        batches: ``(inputs, integer targets)`` pairs; targets of any shape count per element.
        loss_fn: when given, ``loss`` is its mean over the target elements (each batch's mean
            weighted by its elements); otherwise NaN.
        logit_offset: added to the logits before the arg-max (e.g. 0 / −∞ to mask classes).
        device: where each batch is moved before ``predict`` (default: left where it is).

    Returns:
        ``correct`` and ``count`` (target elements), ``accuracy`` (``correct / count``, NaN
        when ``count`` is 0 or the targets are float regression targets) and ``loss``.
    """
    total_loss, correct, count, regression = 0.0, 0, 0, False
    for xb, yb in batches:
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        out = predict(xb)
        n = yb.numel()
        if loss_fn is not None:
            total_loss += float(loss_fn(out, yb)) * n
        count += n
        if yb.is_floating_point():  # regression targets: no accuracy
            regression = True
            continue
        if logit_offset is not None:
            out = out + logit_offset
        correct += int((out.argmax(dim=-1) == yb).sum())
    nan = float("nan")
    return {
        "correct": correct,
        "count": count,
        "accuracy": correct / count if count and not regression else nan,
        "loss": total_loss / count if count and loss_fn is not None else nan,
    }


def evaluate_tensors(
    predict: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1000,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    logit_offset: Tensor | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """:func:`evaluate_batches` over ``(x, y)`` in consecutive chunks of ``batch_size``."""
    return evaluate_batches(predict, tensor_batches(x, y, batch_size), loss_fn=loss_fn,
                            logit_offset=logit_offset, device=device)
