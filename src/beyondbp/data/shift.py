"""Concept shift: two random classes swap labels ``k`` times per epoch (data set
``fashion-mnist-shift``), as in "Need is All You Need: Homeostatic Neural Networks Adapt to
Concept Shift" (Man, Damasio, Neven).

The schedule. With ``N`` training samples and ``k = swaps_per_epoch``, swap ``p`` of an epoch
(``p = 1..k``) happens at stream position ``⌊p·N/k⌋`` of that epoch: the training sample at
position ``s`` of epoch ``e`` (its place in the epoch's shuffled order, from 0) carries the
labels after ``e·k + #{p : ⌊p·N/k⌋ ≤ s}`` swaps, so the ``k``-th swap falls at the end of the
epoch and is the first thing the next epoch sees. A swap exchanges two classes ``a ≠ b`` of
the labels as they are at that point (every sample labelled ``a`` is now ``b`` and vice versa);
the pairs are drawn in order from a ``torch.Generator`` seeded with ``shift_seed``, so the
whole schedule is fixed by ``(N, k, shift_seed)`` and does not depend on the run's seed or on
the training. The test labels follow the same relabelling: an evaluation uses the labels in
force at the stream position where it happens (after an epoch: all its ``k`` swaps done), as the
authors' validation does. ``k = 0`` leaves every label as it is.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..options import opt, parse
from .dataset import Dataset
from .vision import FASHION_MNIST_DEFAULT_DIR, IdxOptions, _load_idx_dataset

__all__ = ["ConceptShift", "ShiftOptions", "load_fashion_mnist_shift"]


class ShiftOptions(IdxOptions):
    """Options of ``fashion-mnist-shift``: :class:`~beyondbp.data.vision.IdxOptions` and the shift's."""

    swaps_per_epoch: int = opt(0, "times per epoch two random classes swap labels (0: no concept shift)", ge=0,
                               le=2**40, accepts="a whole number of at least 0")
    shift_seed: int = opt(0, "seed of the sequence of swapped class pairs", ge=0, le=2**32 - 1,
                          accepts="a whole number from 0 to 2**32 - 1")


@dataclass
class ConceptShift:
    """The relabelling schedule of a data set (see the module docstring)."""

    swaps_per_epoch: int
    seed: int
    num_classes: int
    _maps: list[Tensor] = field(default_factory=list, repr=False)  # label map after t swaps, t = 0, 1, ...
    _generator: torch.Generator | None = field(default=None, repr=False)

    def boundaries(self, n: int) -> Tensor:
        """The ``k`` stream positions of an epoch of ``n`` samples at which a swap happens."""
        k = self.swaps_per_epoch
        return torch.tensor([(p * n) // k for p in range(1, k + 1)], dtype=torch.int64)

    def swaps_before(self, epoch: int, positions: Tensor, n: int) -> Tensor:
        """Swaps done before the samples at ``positions`` of epoch ``epoch`` (from 0) are drawn."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        if self.swaps_per_epoch == 0:
            return torch.zeros_like(positions)
        done = torch.searchsorted(self.boundaries(n), positions, right=True)
        return epoch * self.swaps_per_epoch + done

    def label_map(self, swaps: int) -> Tensor:
        """``map[c]``: the label that class ``c`` of the original data carries after ``swaps`` swaps."""
        if not self._maps:
            self._maps.append(torch.arange(self.num_classes))
            self._generator = torch.Generator().manual_seed(int(self.seed))
        while len(self._maps) <= swaps:
            a, b = (int(c) for c in torch.randperm(self.num_classes, generator=self._generator)[:2])
            previous = self._maps[-1]
            current = previous.clone()
            current[previous == a] = b
            current[previous == b] = a
            self._maps.append(current)
        return self._maps[int(swaps)]

    def relabel(self, y: Tensor, swaps: Tensor | int) -> Tensor:
        """Original labels ``y`` as they read after ``swaps`` swaps (one count, or one per sample)."""
        counts, which = torch.unique(torch.as_tensor(swaps, dtype=torch.int64), return_inverse=True)
        maps = torch.stack([self.label_map(int(t)) for t in counts]).to(y.device)
        return maps[which.to(y.device).expand_as(y), y]


def load_fashion_mnist_shift(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset:
    """Fashion-MNIST (as :func:`~beyondbp.data.vision.load_fashion_mnist`) with a concept shift:
    two random classes swap labels ``swaps_per_epoch`` times per epoch (:class:`ShiftOptions`)."""
    o = parse(ShiftOptions, opts, "data set 'fashion-mnist-shift'")
    idx = {name: getattr(o, name) for name in IdxOptions.model_fields}
    ds = _load_idx_dataset("fashion-mnist", "Fashion-MNIST", data_dir, FASHION_MNIST_DEFAULT_DIR, idx)
    shift = ConceptShift(o.swaps_per_epoch, o.shift_seed, ds.num_classes)
    return dataclasses.replace(
        ds, name="fashion-mnist-shift", concept_shift=shift,
        description=f"{ds.description}; two random classes swap labels {o.swaps_per_epoch} times per epoch "
                    f"(shift_seed {o.shift_seed})",
        meta={**ds.meta, "swaps_per_epoch": o.swaps_per_epoch, "shift_seed": o.shift_seed},
    )
