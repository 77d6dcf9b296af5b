"""Input checks shared by the representation measures (:mod:`.representations`, :mod:`.shape`,
:mod:`.encoding`): responses as float64 numpy arrays, the same stimuli, option choices."""

from __future__ import annotations

from typing import Any

import numpy as np

from beyondbp.errors import ConfigError


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if type(a).__module__.split(".")[0] == "torch":
        a = a.detach().cpu().double().numpy()
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a numeric array, got {type(a).__name__} ({exc}).") from None
    return arr


def _responses(a: Any, name: str, min_stimuli: int = 3, mean_of_3d: bool = False) -> np.ndarray:
    """A checked (n_stimuli, features) float64 array (3-D input averaged over repeats if allowed)."""
    arr = _to_numpy(a, name)
    if arr.ndim == 3 and mean_of_3d:
        _check_finite(arr, name)
        arr = arr.mean(axis=0)
    if arr.ndim != 2:
        raise ConfigError(
            f"{name} must be a 2-D array (n_stimuli, features), got shape {tuple(arr.shape)}."
        )
    if arr.shape[0] < min_stimuli:
        raise ConfigError(
            f"{name} has {arr.shape[0]} stimuli but this measure needs at least {min_stimuli}."
        )
    if arr.shape[1] < 1:
        raise ConfigError(f"{name} has no features (shape {tuple(arr.shape)}); at least 1 is needed.")
    _check_finite(arr, name)
    return arr


def _repeated(a: Any, name: str, min_stimuli: int = 3) -> np.ndarray:
    arr = _to_numpy(a, name)
    if arr.ndim != 3:
        raise ConfigError(
            f"{name} must be a 3-D array (repeats, n_stimuli, features) of repeated responses, "
            f"got shape {tuple(arr.shape)}."
        )
    if arr.shape[0] < 2:
        raise ConfigError(f"{name} has {arr.shape[0]} repeat(s) but the stochastic metric needs at least 2.")
    if arr.shape[1] < min_stimuli:
        raise ConfigError(
            f"{name} has {arr.shape[1]} stimuli but this measure needs at least {min_stimuli}."
        )
    if arr.shape[2] < 1:
        raise ConfigError(f"{name} has no features (shape {tuple(arr.shape)}); at least 1 is needed.")
    _check_finite(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} contains NaN or infinite values; responses must be finite.")


def _same_stimuli(n_x: int, n_y: int, what: str = "X and Y") -> None:
    if n_x != n_y:
        raise ConfigError(
            f"{what} have different numbers of stimuli ({n_x} and {n_y}); both must respond to the same stimuli."
        )


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}.")
    return value


def _subset(n: int, max_stimuli: int | None) -> np.ndarray | None:
    """Evenly spaced stimulus indices (deterministic), or None for all stimuli."""
    if max_stimuli is None or max_stimuli >= n:
        return None
    return np.unique(np.round(np.linspace(0, n - 1, max_stimuli)).astype(np.int64))


def _check_max_stimuli(max_stimuli: Any, minimum: int = 3) -> int | None:
    if max_stimuli is None:
        return None
    if isinstance(max_stimuli, bool) or not isinstance(max_stimuli, (int, np.integer)) or max_stimuli < minimum:
        raise ConfigError(f"max_stimuli must be None or an integer >= {minimum}, got {max_stimuli!r}.")
    return int(max_stimuli)


def _nuclear(m: np.ndarray) -> float:
    if m.size == 0:
        return 0.0
    return float(np.linalg.svd(m, compute_uv=False).sum())


