"""Bootstrap intervals of the scaling-law fits (:mod:`beyondbp.analysis.scaling.laws`).

:func:`bootstrap` and :func:`bootstrap_frontier` resample the points — or whole groups of
points, given ``groups`` (for example the seed of each run) — with replacement, refit each
resample from the full fit's optimum and a small neighbourhood of it (four starts around it:
exponents ±0.1, log coefficients ±1), and report percentile intervals (95 % by default) for every
parameter. A resample is a vector of counts used as weights of the Huber terms, so every resample
and start runs in one batched L-BFGS. A seed makes them reproducible. The memory a bootstrap
needs is counted before any work (:func:`bootstrap_bytes`), against half of what the machine has
available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from .laws import (
    _CHUNK,
    DEFAULT_DELTA,
    FrontierFit,
    LossLawFit,
    _batch_lbfgs,
    _check_options,
    _features,
    _keep_mask,
    fit_frontier,
    fit_loss_law,
)

__all__ = ["MAX_RESAMPLES", "Intervals", "bootstrap", "bootstrap_bytes", "bootstrap_frontier"]

#: At most this many bootstrap resamples (each refits from five starts).
MAX_RESAMPLES = 100_000


@dataclass
class Intervals:
    """Bootstrap percentile intervals: ``estimate`` (the fit to all the data) and ``low``/``high``
    per parameter name; ``samples`` holds every resample's fitted parameters (rows). A
    percentile interval need not contain the estimate (:meth:`outside`)."""

    fit: Any
    level: float
    n_resamples: int
    seed: int | None
    low: dict[str, float]
    high: dict[str, float]
    samples: dict[str, np.ndarray] = field(repr=False)
    by_groups: bool = False

    @property
    def estimate(self) -> dict[str, float]:
        return {name: float(getattr(self.fit, name)) for name in self.low}

    def outside(self, name: str) -> bool:
        """Whether the fit to all the points lies outside its own percentile interval (the
        resampled refits settle elsewhere: a biased or poorly identified parameter). Shown
        apart wherever the estimate is printed beside its interval."""
        return not (self.low[name] <= self.estimate[name] <= self.high[name])

    def to_dict(self) -> dict[str, Any]:
        return {
            "fit": self.fit.to_dict(),
            "level": self.level,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "resampled": "groups" if self.by_groups else "points",
            "intervals": {n: {"estimate": self.estimate[n], "low": self.low[n], "high": self.high[n],
                              "estimate_outside": self.outside(n)} for n in self.low},
        }


def _neighbourhood(theta: np.ndarray, k: int) -> np.ndarray:
    """The optimum and four starts around it: exponents ±0.1, log coefficients ±1."""
    rows = [theta.copy()]
    for sign in (-1.0, 1.0):
        t = theta.copy()
        t[k + 1 :] = np.maximum(theta[k + 1 :] + 0.1 * sign, 0.0)
        rows.append(t)
        t = theta.copy()
        t[:k] = theta[:k] + 1.0 * sign
        rows.append(t)
    return np.array(rows)


def _resample(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    fit_theta: np.ndarray,
    delta: float,
    n_resamples: int,
    seed: int | None,
    min_points: int,
) -> np.ndarray:
    """Fitted parameters (rows) of ``n_resamples`` bootstrap resamples. A resample is a vector of
    counts (how often each point was drawn), used as weights of the Huber terms, so every
    resample and start runs in one batched L-BFGS."""
    rng = np.random.default_rng(seed)
    n, k = len(y), X.shape[1]
    starts = _neighbourhood(fit_theta, k)
    if groups is not None:
        _, inverse = np.unique(groups, return_inverse=True)
        n_groups = int(inverse.max()) + 1
    counts = np.zeros((n_resamples, n))
    for i in range(n_resamples):
        for _ in range(100):
            if groups is None:
                c = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(float)
            else:
                drawn = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
                c = drawn[inverse].astype(float)
            if np.count_nonzero(c) >= min_points:
                break
        counts[i] = c
    T0 = np.tile(starts, (n_resamples, 1))
    W = np.repeat(counts, len(starts), axis=0)
    ends, values = _batch_lbfgs(T0, X, y, delta, W, ftol=1e-13)
    values = np.where(np.isfinite(values), values, np.inf).reshape(n_resamples, len(starts))
    best = values.argmin(axis=1)
    return ends.reshape(n_resamples, len(starts), -1)[np.arange(n_resamples), best]


def bootstrap_bytes(n_points: int, n_resamples: int, n_params: int) -> int:
    """An upper estimate of the memory (bytes) a bootstrap of ``n_resamples`` resamples of
    ``n_points`` points takes, for a law of ``n_params`` parameters: five starts per resample,
    each with its weights, its L-BFGS history (10 pairs) and working vectors, plus one chunk of
    the batched objective."""
    starts = 5 * int(n_resamples)
    per_start = 8 * (2 * n_points + 2 * 10 * n_params + 10 + 12 * n_params)
    chunk = 8 * 12 * _CHUNK
    return starts * per_start + int(n_resamples) * n_points * 8 + chunk


def _memory_budget() -> int:
    """Half the memory this machine has available now (8 GiB when that cannot be read)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _check_memory(n_points: int, n_resamples: int, n_params: int) -> None:
    need, budget = bootstrap_bytes(n_points, n_resamples, n_params), _memory_budget()
    if need > budget:
        raise ConfigError(
            f"{n_resamples} bootstrap resamples of {n_points} points would need about {need / 2**30:.1f} GiB of memory, "
            f"more than the {budget / 2**30:.1f} GiB this run may use; ask for fewer resamples"
        )


def _check_bootstrap(n_resamples: int, level: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or not 1 <= n_resamples <= MAX_RESAMPLES:
        raise ConfigError(
            f"invalid number of bootstrap resamples {n_resamples!r}: it must be a whole number from 1 to {MAX_RESAMPLES}"
        )
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ConfigError(f"invalid interval level {level!r}: it must lie strictly between 0 and 1, e.g. 0.95")


def _groups_array(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"groups must give one label per point ({n}); got shape {arr.shape}")
    if len(np.unique(arr)) < 2:
        raise DataError("groups must hold at least 2 distinct labels to resample them")
    return arr


def _intervals(fit: Any, samples: dict[str, np.ndarray], level: float, n: int, seed: int | None, by_groups: bool) -> Intervals:
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    low = {name: float(np.percentile(s, lo_q)) for name, s in samples.items()}
    high = {name: float(np.percentile(s, hi_q)) for name, s in samples.items()}
    return Intervals(fit=fit, level=float(level), n_resamples=n, seed=seed, low=low, high=high, samples=samples, by_groups=by_groups)


def bootstrap(
    N: Any,
    D: Any,
    loss: Any,
    *,
    n_resamples: int = 200,
    groups: Any = None,
    level: float = 0.95,
    seed: int | None = 0,
    delta: float = DEFAULT_DELTA,
    starts: Any = None,
    exclude_top: int = 0,
    fit: LossLawFit | None = None,
) -> Intervals:
    """Percentile intervals for every parameter of :func:`fit_loss_law`.

    Fits all the points (or uses ``fit``), then ``n_resamples`` times draws the points — or, given
    ``groups`` (one label per point, e.g. the run's seed), whole groups — with replacement from a
    generator seeded with ``seed``, refits from the optimum and a small neighbourhood of it, and
    returns the ``level`` central percentile interval of E, A, B, alpha and beta.
    ``exclude_top`` is applied once, before resampling.
    """
    _check_options(delta, exclude_top)
    _check_bootstrap(n_resamples, level)
    X, y = _features([N, D], loss)
    g = _groups_array(groups, len(y))
    keep = _keep_mask(y, int(exclude_top), 5)
    _check_memory(int(keep.sum()), int(n_resamples), 5)
    if fit is None:
        fit = fit_loss_law(N, D, loss, delta=delta, starts=starts, exclude_top=exclude_top)
    thetas = _resample(X[keep], y[keep], None if g is None else g[keep], fit.params, float(delta), int(n_resamples), seed, 6)
    samples = {
        "E": np.exp(thetas[:, 2]), "A": np.exp(thetas[:, 0]), "B": np.exp(thetas[:, 1]),
        "alpha": thetas[:, 3], "beta": thetas[:, 4],
    }  # fmt: skip
    return _intervals(fit, samples, level, int(n_resamples), seed, g is not None)


def bootstrap_frontier(
    C: Any,
    loss: Any,
    *,
    n_resamples: int = 200,
    groups: Any = None,
    level: float = 0.95,
    seed: int | None = 0,
    delta: float = DEFAULT_DELTA,
    starts: Any = None,
    exclude_top: int = 0,
    fit: FrontierFit | None = None,
) -> Intervals:
    """Percentile intervals for E, A and alpha of :func:`fit_frontier`, resampling points (or
    ``groups``) as :func:`bootstrap` does."""
    _check_options(delta, exclude_top)
    _check_bootstrap(n_resamples, level)
    X, y = _features([C], loss, names=("C",))
    g = _groups_array(groups, len(y))
    keep = _keep_mask(y, int(exclude_top), 3)
    _check_memory(int(keep.sum()), int(n_resamples), 3)
    if fit is None:
        fit = fit_frontier(C, loss, delta=delta, starts=starts, exclude_top=exclude_top)
    thetas = _resample(X[keep], y[keep], None if g is None else g[keep], fit.params, float(delta), int(n_resamples), seed, 4)
    samples = {"E": np.exp(thetas[:, 1]), "A": np.exp(thetas[:, 0]), "alpha": thetas[:, 2]}
    return _intervals(fit, samples, level, int(n_resamples), seed, g is not None)
