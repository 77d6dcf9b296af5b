"""Named data sets, loaded from disk (or generated locally); nothing is ever downloaded.

>>> from beyondbp import data
>>> data.names()
['digits', 'fashion-mnist', 'mnist', 'mnist1d', 'shakespeare-char', 'text']
>>> ds = data.load("digits")
>>> ds.x_train.shape, ds.num_classes
(torch.Size([1437, 1, 8, 8]), 10)

``load(name, data_dir=None, **opts)`` returns a :class:`Dataset`. ``data_dir`` points at the
files of sets read from disk and is ignored by sets that are generated or bundled, so one
``--data-dir`` can be passed to every set of a study. Options per set:

============== ========================================================================
name           options (defaults)
============== ========================================================================
digits         (none)
fashion-mnist  ``normalize=True``, ``pad_to_32=False``; data_dir defaults to
               ``/usr/share/datasets/fashion-mnist``
mnist          ``normalize=True``, ``pad_to_32=False``; data_dir is required
mnist1d        ``num_samples=5000``, ``train_split=0.8``, ``length=40``, ``seed=42``,
               ``shuffle_seq=False``, ``cache=True``, ``cache_dir=None``
text           any file at byte level; ``path=None``, ``val_fraction=0.1``; the file is
               given by ``path`` or ``data_dir``
============== ========================================================================

``shakespeare-char`` (options ``path=None``, ``val_fraction=0.1``) is character-level
tiny-shakespeare; ``data_dir`` may be the file or its directory, and by default the copy shipped
inside the package is read (origin in :mod:`beyondbp.data.text`). The two language-model sets return a
:class:`TextDataset` (a token stream with random windows; runs are measured in tokens)
instead of a :class:`Dataset`; see :mod:`beyondbp.data.text`.

See :mod:`beyondbp.data.vision` for the preprocessing details.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from beyondbp.data.dataset import Dataset
from beyondbp.data.text import TextDataset, load_shakespeare_char, load_text
from beyondbp.data.vision import load_digits, load_fashion_mnist, load_mnist, load_mnist1d
from beyondbp.errors import ConfigError

__all__ = ["TEXT_SETS", "Dataset", "TextDataset", "is_text", "load", "names"]

# name -> loader. Every loader takes keyword-only arguments, ``data_dir`` among them.
_LOADERS: dict[str, Callable[..., Dataset | TextDataset]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "mnist1d": load_mnist1d,
    "shakespeare-char": load_shakespeare_char,
    "text": load_text,
}


#: Sets that load as a :class:`TextDataset` (language modelling, token budgets).
TEXT_SETS = ("shakespeare-char", "text")


def names() -> list[str]:
    """The names :func:`load` accepts, sorted."""
    return sorted(_LOADERS)


def is_text(name: str) -> bool:
    """Whether ``name`` is a language-model set (loads as a :class:`TextDataset`)."""
    return isinstance(name, str) and _canonical(name) in TEXT_SETS


def _canonical(name: Any) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"A data set name must be a string, got {name!r}; valid names are: {', '.join(names())}.")
    return name.strip().lower().replace("_", "-")


def options(name: str) -> dict[str, Any]:
    """The options :func:`load` accepts for ``name``, with their defaults (``data_dir`` excluded)."""
    key = _canonical(name)
    if key not in _LOADERS:
        raise ConfigError(f"Unknown data set {name!r}; valid names are: {', '.join(names())}.")
    params = inspect.signature(_LOADERS[key]).parameters
    return {p.name: p.default for p in params.values() if p.name != "data_dir"}


def load(name: str, data_dir: str | os.PathLike | None = None, **opts: Any) -> Dataset | TextDataset:
    """Load the data set called ``name`` (see :func:`names`) as an in-memory :class:`Dataset`.

    Raises :class:`~beyondbp.errors.ConfigError` for an unknown name or option, and
    :class:`~beyondbp.errors.DataError` when the files are missing or corrupt.
    """
    allowed = options(name)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        listed = ", ".join(allowed) if allowed else "none"
        raise ConfigError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for data set "
            f"{_canonical(name)!r}; allowed options are: {listed}."
        )
    return _LOADERS[_canonical(name)](data_dir=data_dir, **opts)
