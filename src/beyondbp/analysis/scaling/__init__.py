"""Scaling-law fits and their bootstrap intervals: :mod:`.laws` fits ``L(N, D) = E + A/N^α + B/D^β``
and the compute frontier ``L(C) = E + A · C^(−α)`` (Chinchilla's approach 3), :mod:`.intervals`
resamples points or seeds for percentile intervals. Every public name of both is importable
from here (``from beyondbp.analysis import scaling; scaling.fit_loss_law(...)``).
"""

from .intervals import (
    MAX_RESAMPLES,
    Intervals,
    bootstrap,
    bootstrap_bytes,
    bootstrap_frontier,
)
from .laws import (
    DEFAULT_DELTA,
    FrontierFit,
    LossLawFit,
    default_frontier_starts,
    default_starts,
    degenerate,
    efficient_frontier,
    fit_frontier,
    fit_loss_law,
    huber_objective,
)

__all__ = [
    "DEFAULT_DELTA",
    "FrontierFit",
    "Intervals",
    "LossLawFit",
    "MAX_RESAMPLES",
    "bootstrap",
    "bootstrap_bytes",
    "bootstrap_frontier",
    "degenerate",
    "default_frontier_starts",
    "default_starts",
    "efficient_frontier",
    "fit_frontier",
    "fit_loss_law",
    "huber_objective",
]
