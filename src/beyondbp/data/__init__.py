"""Named data sets, loaded from disk (or generated locally); nothing is ever downloaded.

>>> from beyondbp import data
>>> data.names()  # doctest: +NORMALIZE_WHITESPACE
['adding', 'copy', 'digits', 'fashion-mnist', 'fashion-mnist-shift', 'fmnist-adding', 'matrix-completion',
 'mnist', 'mnist1d', 'psfmnist', 'sfmnist', 'shakespeare-char', 'text']
>>> ds = data.load("digits")
>>> ds.x_train.shape, ds.num_classes
(torch.Size([1437, 1, 8, 8]), 10)

``load(name, data_dir=None, **opts)`` returns a :class:`Dataset`. ``data_dir`` points at the
files of sets read from disk and is ignored by sets that are generated or bundled, so one
``--data-dir`` can be passed to every set of a study.

Each set declares its options once, in an :class:`~beyondbp.options.Options` class (type,
default, bounds and one line of help each): :func:`options_class` returns it,
:func:`options` the defaults, :func:`describe_options` one row per option; :func:`load`
validates ``opts`` against it (a one-sentence :class:`~beyondbp.errors.ConfigError` naming
the set and the option otherwise).

============== ========================================================================
name           what it is (options class)
============== ========================================================================
digits         scikit-learn's bundled 8x8 digits (no options)
fashion-mnist  IDX files; data_dir defaults to ``/usr/share/datasets/fashion-mnist``
               (:class:`~beyondbp.data.vision.IdxOptions`)
mnist          IDX files; data_dir is required (:class:`~beyondbp.data.vision.IdxOptions`)
mnist1d        generated locally (:class:`~beyondbp.data.vision.Mnist1dOptions`)
text           any file at byte level, given by ``path`` or ``data_dir``
               (:class:`~beyondbp.data.text.TextOptions`)
adding, copy   long-horizon memory tasks at a length ``T``, generated; sequences
               ``(N, T, channels)`` (:mod:`beyondbp.data.sequences`)
sfmnist,       sequential / permuted-sequential Fashion-MNIST, one pixel per step,
psfmnist       ``size=28`` or ``14`` (:mod:`beyondbp.data.sequences`)
fmnist-adding  two Fashion-MNIST images as spike rasters in sequence, label = sum
============== ========================================================================

``adding`` is a regression set: its targets are float32 and ``num_classes`` is the number of
outputs (1); the default loss is then the mean squared error and accuracy is not defined (NaN).

``fashion-mnist-shift`` (:class:`~beyondbp.data.shift.ShiftOptions`) is Fashion-MNIST with concept
shift: two random classes swap labels ``swaps_per_epoch`` times per epoch (see
:mod:`beyondbp.data.shift`).

``shakespeare-char`` (:class:`~beyondbp.data.text.ShakespeareOptions`) is character-level
tiny-shakespeare; ``data_dir`` may be the file or its directory, and by default the copy shipped
inside the package is read (origin in :mod:`beyondbp.data.text`). The two language-model sets return a
:class:`TextDataset` (a token stream with random windows; runs are measured in tokens)
instead of a :class:`Dataset`; see :mod:`beyondbp.data.text`.

``matrix-completion`` (:class:`~beyondbp.data.matrix.MatrixCompletionOptions`) is generated: a
low-rank target whose observed entries switch at a given step (Kleinman et al.'s critical-period
experiment). It returns a :class:`ScheduledDataset`, whose training batch is a function of the
step and which brings its own loss (½·MSE over the observed entries); see
:mod:`beyondbp.data.matrix`. ``hierarchy`` (:class:`~beyondbp.data.hierarchy.HierarchyOptions`) is
the same paper's multi-pathway task: Saxe et al.'s 8-item hierarchy, full batch, with a window in
which a pathway of the model does not learn; see :mod:`beyondbp.data.hierarchy`.

See :mod:`beyondbp.data.vision` for the preprocessing details.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from beyondbp import options as options_mod
from beyondbp.data.dataset import Dataset
from beyondbp.data.hierarchy import Hierarchy, HierarchyOptions, load_hierarchy
from beyondbp.data.matrix import MatrixCompletion, MatrixCompletionOptions, ScheduledDataset, load_matrix_completion
from beyondbp.data.sequences import (
    AddingOptions,
    CopyOptions,
    FmnistAddingOptions,
    PermutedSeqFmnistOptions,
    SeqFmnistOptions,
    load_adding,
    load_copy,
    load_fmnist_adding,
    load_psfmnist,
    load_sfmnist,
)
from beyondbp.data.shift import ShiftOptions, load_fashion_mnist_shift
from beyondbp.data.text import ShakespeareOptions, TextDataset, TextOptions, load_shakespeare_char, load_text
from beyondbp.data.vision import (
    DigitsOptions,
    IdxOptions,
    Mnist1dOptions,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_mnist1d,
)
from beyondbp.errors import ConfigError

__all__ = [
    "SCHEDULED_SETS",
    "TEXT_SETS",
    "Dataset",
    "Hierarchy",
    "MatrixCompletion",
    "ScheduledDataset",
    "TextDataset",
    "describe",
    "describe_options",
    "is_scheduled",
    "is_text",
    "load",
    "names",
    "options",
    "options_class",
]

# name -> (loader, its options declaration). Every loader takes ``data_dir`` and the options as
# keywords and validates the options against the declaration itself (``options.parse``).
_SETS: dict[str, tuple[Callable[..., Dataset | TextDataset | ScheduledDataset], type[options_mod.Options]]] = {
    "adding": (load_adding, AddingOptions),
    "copy": (load_copy, CopyOptions),
    "digits": (load_digits, DigitsOptions),
    "fashion-mnist": (load_fashion_mnist, IdxOptions),
    "fmnist-adding": (load_fmnist_adding, FmnistAddingOptions),
    "fashion-mnist-shift": (load_fashion_mnist_shift, ShiftOptions),
    "hierarchy": (load_hierarchy, HierarchyOptions),
    "matrix-completion": (load_matrix_completion, MatrixCompletionOptions),
    "mnist": (load_mnist, IdxOptions),
    "mnist1d": (load_mnist1d, Mnist1dOptions),
    "psfmnist": (load_psfmnist, PermutedSeqFmnistOptions),
    "sfmnist": (load_sfmnist, SeqFmnistOptions),
    "shakespeare-char": (load_shakespeare_char, ShakespeareOptions),
    "text": (load_text, TextOptions),
}


#: Sets that load as a :class:`TextDataset` (language modelling, token budgets).
TEXT_SETS = ("shakespeare-char", "text")

#: Sets that load as a :class:`ScheduledDataset` (a full batch per step, their own loss).
SCHEDULED_SETS = ("hierarchy", "matrix-completion")

#: One line per set, for ``beyondbp data``.
_SUMMARIES = {
    "adding": "the adding problem at length T, generated (regression: MSE; solved at MSE <= 0.05)",
    "copy": "the copy task: recall 10 symbols after T steps, generated (a class per step)",
    "fmnist-adding": "two Fashion-MNIST images as Poisson spike rasters in sequence, label = sum (19 classes)",
    "psfmnist": "permuted-sequential Fashion-MNIST: pixels one per step in a fixed random order (size 28 or 14)",
    "sfmnist": "sequential Fashion-MNIST: pixels one per step in raster order (size 28 or 14)",
    "digits": "scikit-learn's bundled 8x8 digits, 1437 / 360 (nothing to download)",
    "fashion-mnist": "Fashion-MNIST IDX files, 60000 / 10000 (Debian's dataset-fashion-mnist, or --data-dir)",
    "fashion-mnist-shift": "Fashion-MNIST whose labels drift: two random classes swap swaps_per_epoch times per epoch",
    "hierarchy": "8 items x 15 hierarchical features, a pathway frozen for a window (multi-pathway critical period)",
    "matrix-completion": "rank-5 100x100 target, 1000 then 1500 observed entries (critical periods; generated)",
    "mnist": "MNIST IDX files, 60000 / 10000 (--data-dir pointing at the four files)",
    "mnist1d": "MNIST-1D generated locally, 4000 / 1000, length 40 (nothing to download)",
    "shakespeare-char": "tiny-shakespeare at character level, shipped inside the package (language models)",
    "text": "any file at byte level, given by --data-dir (language models)",
}


def names() -> list[str]:
    """The names :func:`load` accepts, sorted."""
    return sorted(_SETS)


def is_text(name: str) -> bool:
    """Whether ``name`` is a language-model set (loads as a :class:`TextDataset`)."""
    return isinstance(name, str) and _canonical(name) in TEXT_SETS


def is_scheduled(name: str) -> bool:
    """Whether ``name`` loads as a :class:`ScheduledDataset` (batches by step, its own loss)."""
    return isinstance(name, str) and _canonical(name) in SCHEDULED_SETS


def _canonical(name: Any) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"A data set name must be a string, got {name!r}; valid names are: {', '.join(names())}.")
    return name.strip().lower().replace("_", "-")


def _key(name: Any) -> str:
    key = _canonical(name)
    if key not in _SETS:
        raise ConfigError(f"Unknown data set {name!r}; valid names are: {', '.join(names())}.")
    return key


def describe() -> list[dict[str, str]]:
    """Name, one-line summary and option names of every data set, sorted by name."""
    return [{"name": n, "summary": _SUMMARIES[n], "options": ", ".join(_SETS[n][1].model_fields)} for n in names()]


def options_class(name: str) -> type[options_mod.Options]:
    """The declaration of the options of data set ``name`` (``data_dir`` is not an option)."""
    return _SETS[_key(name)][1]


def options(name: str) -> dict[str, Any]:
    """The options :func:`load` accepts for ``name``, with their defaults, in declaration order."""
    return {option: field.default for option, field in options_class(name).model_fields.items()}


def describe_options(name: str) -> list[dict[str, str]]:
    """One row per option of data set ``name``: name, what it accepts, default, help."""
    return options_mod.describe(options_class(name))


def load(name: str, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset | TextDataset | ScheduledDataset:
    """Load the data set called ``name`` (see :func:`names`) as an in-memory :class:`Dataset`.

    Raises :class:`~beyondbp.errors.ConfigError` for an unknown name and for an unknown or bad
    option (checked against the set's declaration, :func:`options_class`), and
    :class:`~beyondbp.errors.DataError` when the files are missing or corrupt.
    """
    return _SETS[_key(name)][0](data_dir=data_dir, **opts)
