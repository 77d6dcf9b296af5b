"""Whether a fitted scaling law is identified by its points, and whether it predicts its own
largest point: the checks that decide if a fit's numbers are reported and if it may be used to
extrapolate.

:func:`identify` applies these checks, in this order, and names every one that fails:

* enough distinct values of every variable: ``L(C)`` needs :data:`MIN_DISTINCT_FRONTIER` distinct
  computes; ``L(N, D)`` needs :data:`MIN_DISTINCT_LAW` distinct sizes **and** as many distinct
  budgets (3 × 3);
* every exponent inside :data:`EXPONENT_RANGE`, ``(0, 3]``;
* the irreducible loss ``E`` finite, ``E ≥ 0`` and below the best (lowest) observed loss;
* every coefficient (``A``, ``B``) finite and at most ``L_max · x_max^3`` — the largest
  coefficient that a term with an exponent of at most 3 could need to reach the largest observed
  loss ``L_max`` anywhere up to the largest value ``x_max`` of its variable; a larger one means
  the term is there only through an implausible exponent (``A = 4.9e44`` on sizes up to 1e7);
* every bootstrap interval finite, and every exponent's interval of relative width
  ``(high − low) / estimate`` at most :data:`MAX_RELATIVE_WIDTH` (2: an exponent of 0.5 may
  have an interval as wide as 0.1 – 1.1, not 0.40 – 12.31 around 0.95).

:func:`predictive_check` summarises a hold-out test: the law refitted without its largest
compute (or size) predicts the held-out points; the error ``observed − predicted`` (mean over the
held-out points) comes with the central interval of the bootstrap refits' errors. The law
*predicts its largest point* when that interval contains 0 or the relative error
``|error| / observed`` is at most :data:`PREDICTION_TOLERANCE` (2 %). A law that does not, or
whose check could not be made (too few points once the largest is held out), is not used for
extrapolation.

NumPy only, like the rest of this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

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
]

#: Plausible exponents: (low, high], low excluded.
EXPONENT_RANGE = (0.0, 3.0)
#: The widest relative width (high − low) / estimate of an exponent's bootstrap interval.
MAX_RELATIVE_WIDTH = 2.0
#: Distinct computes for L(C); distinct sizes and (separately) budgets for L(N, D).
MIN_DISTINCT_FRONTIER = 3
MIN_DISTINCT_LAW = 3
#: The largest relative error |observed − predicted| / observed at the held-out point that
#: still counts as a prediction when the observed loss lies outside the prediction interval.
PREDICTION_TOLERANCE = 0.02

_NAMES = {"alpha": "α", "beta": "β"}


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Identification:
    """The outcome of :func:`identify`: ``identified`` and, when not, ``why`` (every failed check,
    joined by "; "), with the failed checks one by one in ``failed``."""

    identified: bool
    why: str | None = None
    failed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"identified": self.identified, "why": self.why, "failed": list(self.failed)}


def identify(
    fit: Any,
    *,
    variables: Mapping[str, Any],
    losses: Any,
    intervals: Any = None,
) -> Identification:
    """Check a fitted law (``LossLawFit`` or ``FrontierFit``) against the points it was fitted to
    (``variables``: name → values, ``{"C": ...}`` or ``{"N": ..., "D": ...}``; ``losses``) and,
    when given, its bootstrap ``intervals`` (:class:`~beyondbp.analysis.scaling.Intervals`).
    The checks are listed in the module docstring."""
    losses = np.asarray(losses, dtype=float)
    failed: list[str] = []
    law = "L(C)" if set(variables) == {"C"} else "L(N, D)"
    need = MIN_DISTINCT_FRONTIER if law == "L(C)" else MIN_DISTINCT_LAW
    words = {"C": "computes", "N": "sizes (N)", "D": "budgets (D)"}
    few = [f"{len(np.unique(np.asarray(v, dtype=float)))} distinct {words.get(k, k)}" for k, v in variables.items()
           if len(np.unique(np.asarray(v, dtype=float))) < need]
    if few:
        grid = f"{need} distinct computes" if law == "L(C)" else f"{need} × {need} distinct sizes and budgets"
        failed.append(f"only {' and '.join(few)} on the frontier; {law} needs at least {grid}")
    exps = ("alpha", "beta") if hasattr(fit, "beta") else ("alpha",)
    lo_e, hi_e = EXPONENT_RANGE
    for name in exps:
        v = getattr(fit, name)
        if not (_finite(v) and lo_e < v <= hi_e):
            failed.append(f"{_NAMES[name]} = {v:.3g} is outside the plausible range ({lo_e:g}, {hi_e:g}]")
    best = float(losses.min()) if losses.size else math.nan
    E = fit.E
    if not (_finite(E) and E >= 0):
        failed.append(f"E = {E:.3g} is not a finite loss of at least 0")
    elif losses.size and not E < best:
        failed.append(f"E = {E:.3g} is not below the best observed loss {best:.4g}")
    coefs = (("A", "N"), ("B", "D")) if hasattr(fit, "B") else (("A", "C"),)
    worst = float(losses.max()) if losses.size else math.nan
    for coef, var in coefs:
        value = getattr(fit, coef)
        x = np.asarray(variables.get(var, []), dtype=float)
        ceiling = worst * float(x.max()) ** hi_e if x.size else math.inf
        if not _finite(value) or value <= 0:
            failed.append(f"{coef} = {value:.3g} is not a finite positive coefficient")
        elif value > ceiling:
            failed.append(f"{coef} = {value:.3g} exceeds {ceiling:.3g}, the largest coefficient an exponent ≤ {hi_e:g} "
                          f"needs to reach the observed losses up to {var} = {float(x.max()):.3g}")
    if intervals is not None:
        nonfinite = [n for n in intervals.low if not (_finite(intervals.low[n]) and _finite(intervals.high[n]))]
        if nonfinite:
            failed.append(f"the bootstrap interval of {', '.join(_NAMES.get(n, n) for n in nonfinite)} is not finite")
        for name in exps:
            est, lo, hi = getattr(fit, name), intervals.low.get(name), intervals.high.get(name)
            if name in nonfinite or not (_finite(est) and est > 0):
                continue
            width = (hi - lo) / est
            if width > MAX_RELATIVE_WIDTH:
                failed.append(f"the {_NAMES[name]} interval ({lo:.3g} – {hi:.3g}) is {width:.3g} times its estimate "
                              f"{est:.3g} wide (at most {MAX_RELATIVE_WIDTH:g})")
    if failed:
        return Identification(False, "; ".join(failed), tuple(failed))
    return Identification(True)


@dataclass(frozen=True)
class PredictiveCheck:
    """A hold-out test: the law refitted without ``held_out`` (e.g. "the largest compute, 1.8e9")
    predicts those ``n_held_out`` points; ``error`` = observed − predicted (mean over them, in
    loss units) with its bootstrap interval ``low``–``high`` and ``relative_error`` =
    ``|error| / observed``. ``passed`` is None when the check could not be made (``why`` says
    why); else whether the law predicts its largest point (module docstring)."""

    held_out: str
    passed: bool | None
    why: str | None = None
    n_held_out: int = 0
    observed: float | None = None
    predicted: float | None = None
    error: float | None = None
    low: float | None = None
    high: float | None = None
    relative_error: float | None = None
    level: float | None = None
    tolerance: float = PREDICTION_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        out = {"held_out": self.held_out, "passed": self.passed, "why": self.why, "n_held_out": self.n_held_out,
               "observed": self.observed, "predicted": self.predicted, "error": self.error, "low": self.low,
               "high": self.high, "relative_error": self.relative_error, "level": self.level, "tolerance": self.tolerance}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def predictive_check(
    held_out: str,
    observed: Any,
    predicted: Any,
    predicted_samples: Any,
    *,
    level: float = 0.95,
    tolerance: float = PREDICTION_TOLERANCE,
) -> PredictiveCheck:
    """Summarise a hold-out test: ``observed`` losses of the held-out points, the refitted law's
    ``predicted`` losses there, and ``predicted_samples`` (resamples × held-out points) from its
    bootstrap refits. Errors are means over the held-out points."""
    obs = np.atleast_1d(np.asarray(observed, dtype=float))
    pred = np.atleast_1d(np.asarray(predicted, dtype=float))
    samples = np.atleast_2d(np.asarray(predicted_samples, dtype=float))
    error = float(np.mean(obs - pred))
    with np.errstate(invalid="ignore"):
        errs = np.mean(obs[None, :] - samples, axis=1)
    errs = errs[np.isfinite(errs)]
    lo = hi = None
    if errs.size:
        lo = float(np.percentile(errs, 100 * (1 - level) / 2))
        hi = float(np.percentile(errs, 100 * (1 + level) / 2))
    rel = abs(error) / float(np.mean(obs)) if math.isfinite(error) else math.inf
    inside = lo is not None and lo <= 0 <= hi
    passed = bool(math.isfinite(error) and (inside or rel <= tolerance))
    why = None
    if not passed:
        where = "outside" if lo is not None else "without"
        why = (f"refitted without {held_out}, the law predicts {float(np.mean(pred)):.4g} there against "
               f"{float(np.mean(obs)):.4g} observed: an error of {100 * rel:.3g}% (above the {100 * tolerance:g}% "
               f"tolerance), the observed loss {where} the {100 * level:g}% prediction interval")
    return PredictiveCheck(held_out=held_out, passed=passed, why=why, n_held_out=int(obs.size), observed=float(np.mean(obs)),
                           predicted=float(np.mean(pred)), error=error, low=lo, high=hi, relative_error=rel, level=float(level),
                           tolerance=float(tolerance))
