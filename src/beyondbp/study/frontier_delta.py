"""A label's frontier on any grid of computes, and the loss difference between two of them.

:class:`Curves` evaluates a label's compute-efficient frontier on a grid of computes, once per
bootstrap resample and as the estimate: from its fitted law ``L(C) = E + A · C^(−α)``
(:meth:`Curves.from_law`) or, when that law is not identified, from the frontier points
themselves, each seed's joined log-linearly and seeds resampled (:meth:`Curves.from_points`).
:func:`delta_on` takes two labels' curves on one grid and returns the loss difference
``Δ(C) = L_rule(C) − L_baseline(C)`` as a :class:`~beyondbp.study.judgement.DeltaCurve`: its
median and central interval per compute, the sign where the interval excludes 0, the class
(:func:`classify`) and the crossover. The rules are in :mod:`beyondbp.study.verdict`'s
docstring, whose :func:`~beyondbp.study.verdict.judge_study` builds the verdicts on these.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .judgement import Crossover, DeltaCurve, FrontierResult

__all__ = ["Curves", "classify", "curve_band", "delta_on", "frontier_samples"]


def curve_band(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``samples`` (resamples × computes): the median and the central ``level`` interval."""
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    with np.errstate(invalid="ignore"):
        return np.nanmedian(samples, axis=0), np.nanpercentile(samples, lo_q, axis=0), np.nanpercentile(samples, hi_q, axis=0)


def frontier_samples(samples: Mapping[str, np.ndarray], C: np.ndarray) -> np.ndarray:
    """Each resample's frontier evaluated at computes ``C``: shape (resamples, len(C))."""
    E, A, alpha = (np.asarray(samples[k], dtype=float)[:, None] for k in ("E", "A", "alpha"))
    with np.errstate(over="ignore", invalid="ignore"):
        return E + A * np.exp(-alpha * np.log(C)[None, :])


def classify(C: Sequence[float], low: Sequence[float], high: Sequence[float]) -> tuple[str, str]:
    """The outcome class (``A``, ``B``, ``C``, ``D`` or ``undecided``) of a loss difference
    ``Δ = L_rule − L_baseline`` whose interval is ``[low, high]`` at computes ``C`` (increasing),
    and why (the rule in :mod:`beyondbp.study.verdict`'s docstring)."""
    C, low, high = (np.asarray(x, dtype=float) for x in (C, low, high))
    s = np.where(high < 0, -1, np.where(low > 0, 1, 0))
    R, P = s == -1, s == 1
    if not R.any() and not P.any():
        return "undecided", "the intervals overlap at every compute"
    if not R.any():
        if s[-1] == 1:
            return "D", "the baseline is better wherever the intervals separate, including the largest compute"
        return "undecided", "the baseline is better at some computes, but the intervals overlap at the largest compute"
    if not P.any():
        if s[-1] == -1:
            return "A", "the rule is better wherever the intervals separate, including the largest compute"
        return "undecided", "the rule is better at some computes, but the intervals overlap at the largest compute"
    if C[P].max() < C[R].min():
        return "B", "the baseline is better at small compute and the rule at larger compute"
    if C[R].max() < C[P].min():
        return "C", "the rule is better at small compute and the baseline at larger compute"
    return "undecided", "the sign of the difference changes more than once"


def _crossings(C: np.ndarray, delta: np.ndarray) -> list[float]:
    """Computes where ``delta`` changes sign (log-linear interpolation)."""
    out = []
    logc = np.log(C)
    for i in range(len(C) - 1):
        a, b = delta[i], delta[i + 1]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        if a == 0 and i == 0:
            out.append(float(C[0]))
        if (a < 0 < b) or (b < 0 < a) or (b == 0 and a != 0):
            t = a / (a - b)
            out.append(float(np.exp(logc[i] + t * (logc[i + 1] - logc[i]))))
    return out


def _crossover(C: np.ndarray, med: np.ndarray, samples: np.ndarray, level: float) -> Crossover:
    median_cross = _crossings(C, med)
    firsts = []
    for row in samples:
        xs = _crossings(C, row)
        if xs:
            firsts.append(xs[0])
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return Crossover(
        median=tuple(median_cross),
        low=float(np.percentile(firsts, lo_q)) if firsts else None,
        high=float(np.percentile(firsts, hi_q)) if firsts else None,
        fraction_of_resamples=len(firsts) / len(samples) if len(samples) else 0.0,
    )


def delta_on(C: np.ndarray, rule: Curves, base: Curves, level: float, **extra: Any) -> DeltaCurve:
    rs, er = rule.at(C)
    bs, eb = base.at(C)
    n = min(len(rs), len(bs))
    d = rs[:n] - bs[:n]
    med, low, high = curve_band(d, level)
    estimate = er - eb
    cls, why = classify(C, low, high)
    sign = np.where(high < 0, -1, np.where(low > 0, 1, 0))
    return DeltaCurve(C=C, estimate=estimate, median=med, low=low, high=high, sign=sign, cls=cls, why=why,
                      crossover=_crossover(C, med, d, level), **extra)  # fmt: skip


class Curves:
    """A label's frontier on any grid of computes: per bootstrap resample (rows) and as the
    estimate, from the fitted law (``basis`` None) or from the frontier points themselves."""

    def __init__(self, at: Any, distinct: int | None, basis: str | None = None, covered: tuple[float, float] | None = None) -> None:
        self.at, self.distinct, self.basis, self.covered = at, distinct, basis, covered  # covered: what every seed reaches

    @classmethod
    def from_law(cls, s: Mapping[str, np.ndarray], distinct: int | None) -> Curves:
        E, A, alpha = s["_fit"]

        def at(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return frontier_samples(s, C), E + A * C ** (-alpha)

        return cls(at, distinct)

    @classmethod
    def from_points(cls, fr: FrontierResult, n_bootstrap: int, seed: int, basis: str) -> Curves:
        """Each seed's frontier points joined log-linearly in compute (undefined outside that
        seed's points); a resample draws seeds with replacement and averages their curves."""
        by_seed: dict[str, list[tuple[float, float]]] = {}
        for p in fr.points:
            by_seed.setdefault(p.seed, []).append((p.C, p.loss))
        keys = sorted(by_seed)
        # compared only where every seed's curve is defined (beyond, fewer seeds: a false, narrow interval)
        covered = (max(min(c for c, _ in v) for v in by_seed.values()), min(max(c for c, _ in v) for v in by_seed.values()))
        draws = np.random.default_rng(seed).integers(0, len(keys), size=(n_bootstrap, len(keys)))
        distinct = len({tuple(sorted(r)) for r in draws.tolist()})

        def at(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = []
            for k in keys:
                pts = sorted(by_seed[k])
                rows.append(np.interp(np.log(C), np.log([c for c, _ in pts]), [v for _, v in pts], left=np.nan, right=np.nan))
            M = np.array(rows)
            with warnings.catch_warnings():  # a compute no drawn seed reaches stays NaN: not separated there
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.array([np.nanmean(M[d], axis=0) for d in draws]), np.nanmean(M, axis=0)

        return cls(at, distinct, basis, covered)
