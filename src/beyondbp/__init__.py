"""beyondbp: train PyTorch models with credit-assignment rules beyond backpropagation.

The top level exports the run layer's entry points — :func:`run` (one run),
:class:`RunConfig`, :class:`RunResult` (from :mod:`beyondbp.training`) and :func:`compare` (the
same run under several rules, from :mod:`beyondbp.study.compare`) — the error family, and the
subpackages. Heavy modules (torch and everything that imports it) load on first use, so that
``import beyondbp`` and the command line's help and input errors answer at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import BeyondBPError, CheckpointError, ConfigError, DataError, UnsupportedModuleError

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import checkpoint, compute, data, models, options, reporting, rules, training
    from .study.compare import compare
    from .training import RunConfig, RunResult, run

#: Attribute -> (module, name in it; None for the module itself), loaded on first access.
_LAZY: dict[str, tuple[str, str | None]] = {
    "run": ("beyondbp.training", "run"),
    "RunConfig": ("beyondbp.training", "RunConfig"),
    "RunResult": ("beyondbp.training", "RunResult"),
    "compare": ("beyondbp.study.compare", "compare"),
    **{name: (f"beyondbp.{name}", None) for name in ("checkpoint", "compute", "data", "models", "options", "reporting", "rules", "training")},
}

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
    "compare",
    "compute",
    "data",
    "models",
    "options",
    "reporting",
    "rules",
    "run",
    "training",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        if attr is not None:
            value = getattr(value, attr)
        globals()[name] = value  # later accesses skip this function
        return value
    if not name.startswith("_"):  # any other submodule: beyondbp.sparsity, beyondbp.spiking, ...
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'beyondbp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
