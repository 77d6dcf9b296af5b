"""beyondbp: train PyTorch models with credit-assignment rules beyond backpropagation.

The submodules and the names below are imported on first use (``beyondbp.rules``,
``beyondbp.RunConfig``, ...), so that ``import beyondbp`` — and the command line's ``--help``
— do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import BeyondBPError, CheckpointError, ConfigError, DataError, UnsupportedModuleError

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from . import checkpoint, compute, data, models, options, report, rules, train
    from .train import RunConfig, RunResult, run

_FROM_TRAIN = ("RunConfig", "RunResult", "run")

__all__ = [
    "BeyondBPError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "RunConfig",
    "RunResult",
    "UnsupportedModuleError",
    "__version__",
    "checkpoint",
    "compute",
    "data",
    "models",
    "options",
    "report",
    "rules",
    "run",
    "train",
]


class _Package(types.ModuleType):
    """The package module: its attribute ``run`` is always the function ``run(config)``, never the
    subpackage ``beyondbp.run`` that the import system would set there on first import (import
    that one with ``from beyondbp.run import ...``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "run" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _FROM_TRAIN:
        value = getattr(importlib.import_module(f"{__name__}.train"), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # any submodule: beyondbp.rules, beyondbp.sparsity, ...
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
