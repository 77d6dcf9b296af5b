"""Scaling-law fits and their bootstrap intervals: :mod:`.laws` fits ``L(N, D) = E + A/N^α + B/D^β``
and the compute frontier ``L(C) = E + A · C^(−α)`` (Chinchilla's approach 3), :mod:`.intervals`
resamples points or seeds for percentile intervals, :mod:`.identification` decides whether a fit
is identified by its points and whether it predicts its own largest point. Every public name of both is importable
from here (``from beyondbp.analysis import scaling; scaling.fit_loss_law(...)``).
"""

from .identification import (
    EXPONENT_RANGE,
    MAX_RELATIVE_WIDTH,
    MIN_DISTINCT_FRONTIER,
    MIN_DISTINCT_LAW,
    PREDICTION_TOLERANCE,
    Identification,
    PredictiveCheck,
    identify,
    predictive_check,
)
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
    "EXPONENT_RANGE",
    "Identification",
    "MAX_RELATIVE_WIDTH",
    "MIN_DISTINCT_FRONTIER",
    "MIN_DISTINCT_LAW",
    "PREDICTION_TOLERANCE",
    "PredictiveCheck",
    "identify",
    "predictive_check",
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
