"""beyondbp: train PyTorch models with credit-assignment rules beyond backpropagation."""

from . import rules
from . import checkpoint, compute, data, models, options, report, train
from .train import RunConfig, RunResult, run
from .errors import BeyondBPError, CheckpointError, ConfigError, DataError, UnsupportedModuleError

from ._version import __version__

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
