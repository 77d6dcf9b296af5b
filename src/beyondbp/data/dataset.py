"""The :class:`Dataset` record every data loader returns, and small shared helpers.

A :class:`Dataset` holds a whole data set in memory as tensors (the sets beyondbp uses are
small: the largest, Fashion-MNIST, is about 220 MB as float32) and hands out ordinary
``torch.utils.data.DataLoader`` objects over it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Mapping

import torch
from pydantic import Field
from torch.utils.data import DataLoader, TensorDataset

from beyondbp.errors import ConfigError, DataError

__all__ = ["Dataset", "PathOption"]

#: The type of a data set option that names a file or directory: a non-blank string or a
#: :class:`~pathlib.Path` (declare it with an ``accepts=`` text, e.g. "a file path (a string)").
PathOption = Annotated[str, Field(pattern=r"\S")] | Path

_FEATURE_DTYPES = (torch.float32, torch.int64)
_TARGET_DTYPES = (torch.int64, torch.float32)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A named, in-memory train/test split.

    Attributes:
        name: the registry name (``"fashion-mnist"``, ``"mnist1d"``, ...).
        x_train: inputs, shape ``(N_train, *input_shape)``, float32 (int64 is also accepted,
            for token ids of text sets).
        y_train: integer class labels, int64, shape ``(N_train,)`` (or ``(N_train, ...)`` for
            per-position targets), each in ``[0, num_classes)``; or, for a regression set
            (``adding``), float32 targets, with ``num_classes`` the number of outputs.
        x_test, y_test: the same for the test split.
        input_shape: the shape of one sample, e.g. ``(1, 28, 28)``, ``(40,)``, ``(1, 8, 8)``.
        num_classes: number of classes.
        description: one human-readable line: what the data is, where it came from and how
            it was preprocessed.
        meta: provenance details (source files, normalisation statistics, generator
            arguments, ...); read-only.
        concept_shift: a :class:`~beyondbp.data.shift.ConceptShift` that relabels the stream
            of training samples and the test labels as training goes (``None``: labels fixed).

    The record is validated on construction (dtypes, matching sample counts, per-sample
    shape, label range); an inconsistent record raises :class:`~beyondbp.errors.DataError`.
    Tensors are not copied: :meth:`subset` returns views sharing storage with the original.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    concept_shift: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise DataError(
                f"Data set {self.name!r} has num_classes={self.num_classes!r}; it must be a positive integer."
            )
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise DataError(f"Data set {self.name!r}: x_{split} and y_{split} must be torch tensors.")
            if x.dtype not in _FEATURE_DTYPES:
                raise DataError(
                    f"Data set {self.name!r}: x_{split} has dtype {x.dtype}; it must be torch.float32 "
                    "(or torch.int64 for token ids)."
                )
            if y.dtype not in _TARGET_DTYPES:
                raise DataError(
                    f"Data set {self.name!r}: y_{split} has dtype {y.dtype}; labels must be torch.int64 "
                    "(or torch.float32 regression targets)."
                )
            if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
                raise DataError(
                    f"Data set {self.name!r}: x_{split} has shape {tuple(x.shape)} but y_{split} has shape "
                    f"{tuple(y.shape)}; both need the same number of samples along dimension 0."
                )
            if tuple(x.shape[1:]) != self.input_shape:
                raise DataError(
                    f"Data set {self.name!r}: x_{split} samples have shape {tuple(x.shape[1:])} but "
                    f"input_shape is {self.input_shape}; they must agree."
                )
            if y.dtype == torch.int64 and y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(
                    f"Data set {self.name!r}: y_{split} holds labels from {int(y.min())} to {int(y.max())}, "
                    f"outside the allowed range 0..{self.num_classes - 1}."
                )

    # ------------------------------------------------------------------ sizes
    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    @property
    def is_regression(self) -> bool:
        """Whether the targets are float32 values (a regression set) rather than class labels."""
        return self.y_train.dtype == torch.float32

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )

    # ---------------------------------------------------------------- loaders
    def train_loader(
        self, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False
    ) -> DataLoader:
        """A DataLoader over the training split yielding ``(x, y)`` batches.

        Shuffling draws from a ``torch.Generator`` seeded with ``seed``, so two loaders built
        with the same seed yield the same batches in the same order, epoch after epoch, and do
        not depend on (or disturb) the global torch RNG.
        """
        batch_size = _positive_int(batch_size, "batch_size")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}.")
        generator = torch.Generator()
        generator.manual_seed(seed)
        return DataLoader(
            TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=bool(shuffle),
            drop_last=bool(drop_last),
            generator=generator,
        )

    def test_loader(self, batch_size: int) -> DataLoader:
        """A DataLoader over the test split, in stored order (no shuffling)."""
        batch_size = _positive_int(batch_size, "batch_size")
        return DataLoader(TensorDataset(self.x_test, self.y_test), batch_size=batch_size, shuffle=False)

    # ----------------------------------------------------------------- subset
    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first ``n_train`` training and first ``n_test`` test samples (``None`` keeps all).

        Deterministic (no sampling); the returned tensors are views of this data set's tensors.
        Asking for more samples than exist raises :class:`~beyondbp.errors.ConfigError`.
        """
        sizes = {}
        for split, n, available in (("train", n_train, self.num_train), ("test", n_test, self.num_test)):
            if n is None:
                sizes[split] = available
                continue
            n = _positive_int(n, f"n_{split}")
            if n > available:
                raise ConfigError(
                    f"n_{split}={n} exceeds the {available} {split} samples of {self.name!r}; "
                    f"ask for at most {available}."
                )
            sizes[split] = n
        meta = dict(self.meta)
        meta["subset"] = {"n_train": sizes["train"], "n_test": sizes["test"]}
        return dataclasses.replace(
            self,
            x_train=self.x_train[: sizes["train"]],
            y_train=self.y_train[: sizes["train"]],
            x_test=self.x_test[: sizes["test"]],
            y_test=self.y_test[: sizes["test"]],
            description=f"{self.description} [subset: first {sizes['train']} train / {sizes['test']} test]",
            meta=meta,
        )
