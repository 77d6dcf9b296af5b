"""beyondbp: train PyTorch models with credit-assignment rules beyond backpropagation."""

from . import rules
from .errors import BeyondBPError, CheckpointError, ConfigError, DataError, UnsupportedModuleError

__version__ = "0.1.0"

__all__ = [
    "BeyondBPError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "UnsupportedModuleError",
    "rules",
]
