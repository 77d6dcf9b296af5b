"""The one conversion of beyondbp's records to plain JSON-ready Python.

Results (``RunResult.to_dict``), ``results.json`` and checkpoint meta all pass through
:func:`plain`: mappings become dicts with string keys, tuples and lists become lists, NumPy and
0-d torch scalars become Python numbers, paths and ``torch.Size`` become strings and lists, and
non-finite floats (NaN, ±inf, which JSON cannot hold) become ``None``. Anything else is an
error, so nothing unreadable is written silently.

Neither NumPy nor torch is imported here: a value can only be an array scalar or a tensor when
its library is already imported, so they are looked up in ``sys.modules`` (``study status
--json`` answers from the kept plan through :func:`plain` without importing torch).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Mapping

__all__ = ["finite_number", "plain"]


def plain(value: Any) -> Any:
    """``value`` as plain JSON-ready Python (see the module docstring); ``TypeError`` for a
    type that has no such form."""
    if value is None or isinstance(value, (bool, str)):
        return value
    np = sys.modules.get("numpy")
    if isinstance(value, int) or (np is not None and isinstance(value, np.integer)):
        return int(value)
    if isinstance(value, float) or (np is not None and isinstance(value, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if np is not None and isinstance(value, np.bool_):
        return bool(value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0:
        return plain(value.item())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if torch is not None and isinstance(value, torch.Size):
        return [int(v) for v in value]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} has no JSON form (only numbers, strings, lists, dicts and None)")


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is missing, a bool, not a number, or
    NaN/±inf (how reports and analyses read numbers out of JSON records)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
