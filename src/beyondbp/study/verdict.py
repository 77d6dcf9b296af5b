"""A study's analysis: each rule at its best learning rate, scaling-law fits, the verdict.

:func:`judge_study` takes the run records of a study (the dicts of ``Store.records()``) and returns
a :class:`~beyondbp.study.judgement.StudyVerdicts` (frozen dataclasses throughout; ``to_dict()``
is the JSON a report writes). It never changes the records.

Which runs. Only runs with status ``done`` are fitted. Diverged runs are counted and listed
(never fitted); failed runs are listed with their error; pending and running ones are counted.
A done run without a finite positive loss, compute, size or data amount is listed under
``excluded`` with the reason.

Per run. ``label`` (the rule's label), ``N`` = ``n_active_params`` (else ``n_params``), ``D`` =
the data seen (language models: tokens; classification: samples = steps × batch size),
``C`` = the measured training compute, ``flops_per_step × steps`` (evaluation FLOPs, where the
run recorded them, are reported apart as ``eval_flops`` and not included), ``loss`` = the final
validation loss (``val_loss`` for language models, else ``test_loss``), ``seed``, ``lr`` and the
other axes.

Best learning rate. Runs are grouped by (label, the values of every axis except ``lr`` and
``seed``); in each group the learning rate with the lowest mean final loss over the seeds that
every learning rate of the group has is kept (extra seeds at one rate do not change the ranking;
a learning rate at which some run diverged ranks after every learning rate at which none did).
When the kept learning rate is the smallest or the largest of the group's grid (and the grid
has more than one value) a warning says the comparison is not trustworthy: a learning rate
beyond the grid might do better. With a single learning rate nothing is selected, and the
analysis says so. The fits below use the best-LR runs only, every seed.

Fits per label.

* The compute-efficient frontier ``L(C) = E + A · C^(−α)``: for each seed, the efficient
  frontier of that seed's runs (:func:`~beyondbp.analysis.scaling.efficient_frontier`); the
  frontiers of all seeds are fitted together (:func:`~beyondbp.analysis.scaling.fit_frontier`),
  so the curve estimates the expected frontier, and :func:`bootstrap_frontier` resamples whole
  seeds (``groups=seed``) for the intervals (with one seed it resamples points, and says so).
  It needs at least :data:`FRONTIER_MIN_COMPUTES` distinct compute values and
  :data:`FRONTIER_MIN_POINTS` points.
* ``L(N, D) = E + A/N^α + B/D^β`` (:func:`fit_loss_law`, bootstrap over seeds), when there are at
  least :data:`LOSS_LAW_MIN_POINTS` distinct (N, D) pairs, with at least two distinct N and two
  distinct D.

A fit that cannot be made is recorded as ``fitted=False`` with its ``reason``, never an error.
(The frontier curves on a grid of computes, the loss difference, its class and crossover are
computed in :mod:`beyondbp.study.frontier_delta`; this module fits, selects and words them.)

Identification and prediction. Every fit made is checked by
:func:`~beyondbp.analysis.scaling.identify` (exponents in (0, 3], 0 ≤ E < best observed loss,
coefficients within reach of an exponent ≤ 3, finite intervals, exponent intervals at most 2×
their estimate wide, ≥ 3 distinct computes for L(C), ≥ 3 × 3 sizes and budgets for L(N, D):
``identification`` on the result, ``identified`` in its dict) and by a predictive check (the law
refitted without its largest compute, or size, predicting the held-out points:
``prediction``, :func:`~beyondbp.analysis.scaling.predictive_check`). A label whose L(C) was
fitted but is not identified is judged on its **frontier points themselves** (each seed's points
joined log-linearly in compute, seeds resampled; the verdict's ``basis`` says so). Only a law
that is identified and predicts its own largest point is extrapolated (``extrapolates``); else
``extrapolated_sentence`` says "Not extrapolated beyond …" and why.

The verdict, per label against the baseline (``backprop`` by default). The studied range is
the overlap of the two labels' efficient frontiers, ``[C_lo, C_hi]``: each from its cheapest
frontier point to the last compute at which the label's best-LR runs still improved (beyond
it the data's frontier is flat, and the fitted law would be extrapolated; a label whose largest
runs did worse than its smaller ones is judged only as far as it improved); on
:data:`GRID_POINTS` log-spaced computes in it, and on a second grid from ``C_hi`` to
``extrapolate × C_hi`` (marked extrapolated), the loss difference
``Δ(C) = L_rule(C) − L_baseline(C)`` is computed for every bootstrap resample pair (resample
``i`` of the rule with resample ``i`` of the baseline) and summarised by its median and central
``level`` interval. At a compute C the rule is *better* when the interval lies entirely below 0,
the baseline is better when it lies entirely above 0; otherwise the two are not separated there.

The class is decided on the **studied range only** (the extrapolated grid gets its own class,
reported apart as ``extrapolated``, and never changes the main one). With R the computes where
the rule is better and P those where the baseline is better:

* neither R nor P: ``undecided`` (the intervals overlap everywhere);
* P only: ``D`` if the baseline is better at ``C_hi`` (the largest compute studied), else
  ``undecided``;
* R only: ``A`` if the rule is better at ``C_hi``, else ``undecided``;
* both: ``B`` if every compute in P lies below every compute in R (the baseline better at small
  compute, the rule at scale), ``C`` if every compute in R lies below every compute in P,
  else ``undecided`` (the sign changes more than once).

These are the outcomes of Filipovich et al., "Scaling Laws Beyond Backpropagation" (2022): A, the
rule better over the whole range; B, better at scale; C, better at small compute only; D,
backprop better over the whole range. A class says where the intervals separate; the verdict
sentence says over which part of the range they do.

With fewer than :data:`MIN_SEEDS` seeds for either label the verdict is ``undecided`` (its class
kept as ``point_estimate_class``) and carries a ``caveat`` (also in its sentence): a bootstrap over
two seeds has only three distinct resamples, so its intervals understate the uncertainty. When a label's frontier bootstrap has fewer than
:data:`MIN_DISTINCT_RESAMPLES` distinct resamples (one seed and four frontier points, say:
every resample must keep all four, so every resample is the full data) its intervals have no
width to speak of, and the verdict is ``undecided`` whatever the point estimates say; the
sentence still reports the point estimates, marked as such.

The crossover compute is where the median Δ changes sign on the grid (log-linear interpolation
between grid points); its interval is the central ``level`` interval of the first sign change
of each resample that changes sign on the same grid (with the fraction of resamples that do).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ..analysis.scaling import (
    PredictiveCheck,
    bootstrap,
    bootstrap_frontier,
    efficient_frontier,
    fit_frontier,
    fit_loss_law,
    identify,
    predictive_check,
)
from ..errors import BeyondBPError, ConfigError
from .frontier_delta import Curves as _Curves
from .frontier_delta import classify
from .frontier_delta import curve_band as _curve_band
from .frontier_delta import delta_on as _delta_on
from .frontier_delta import frontier_samples as _frontier_samples
from .judgement import (
    AnalysedRun,
    Crossover,
    DeltaCurve,
    DivergedRun,
    ExcludedRun,
    FailedRun,
    FrontierCurve,
    FrontierPoint,
    FrontierResult,
    LabelFits,
    LossLawResult,
    StudyVerdicts,
    Verdict,
)
from .selection import best_lr_table, record_label, record_lr, record_seed, run_point

__all__ = ["FRONTIER_MIN_COMPUTES", "FRONTIER_MIN_POINTS", "GRID_POINTS", "LOSS_LAW_MIN_POINTS", "MIN_SEEDS", "classify",
           "fmt_compute", "judge_study"]

#: Distinct (N, D) pairs needed to fit L(N, D) (five parameters).
LOSS_LAW_MIN_POINTS = 6
#: Distinct compute values, and points, needed to fit the frontier L(C) (three parameters).
FRONTIER_MIN_COMPUTES = 3
FRONTIER_MIN_POINTS = 4
#: Computes on the studied grid of the verdict (the extrapolated grid has half as many).
GRID_POINTS = 41
#: Fewer seeds than this per label: the verdict is undecided, with a caution (too few distinct resamples).
MIN_SEEDS = 3
#: a frontier bootstrap with fewer distinct resamples than this gives no usable interval
MIN_DISTINCT_RESAMPLES = 3
#: Computes on each frontier's plotted curve.
CURVE_POINTS = 60

_CLASS_MEANING = {
    "A": "{rule} better over the whole range",
    "B": "{base} better at small compute, {rule} better at scale",
    "C": "{rule} better at small compute, {base} better at scale",
    "D": "{base} better over the whole range",
    "undecided": "the intervals do not separate where it matters",
}


# -- helpers ------------------------------------------------------------------------------------
def fmt_compute(c: float | None) -> str:
    """A compute (or any positive number) in short scientific notation: ``1.2e9``."""
    if c is None or not math.isfinite(c):
        return "—"
    mant, exp = f"{c:.1e}".split("e")
    return f"{mant}e{int(exp)}"


# -- fits ---------------------------------------------------------------------------------------
def _fit_frontier(pts: list[dict[str, Any]], n_bootstrap: int, seed: int, level: float,
                  extrapolate: float) -> tuple[FrontierResult, dict[str, np.ndarray] | None]:
    fc, fl, fg = [], [], []
    seeds = sorted({p["seed"] for p in pts}, key=str)
    for s in seeds:
        mine = [p for p in pts if p["seed"] == s]
        c, l_ = efficient_frontier([p["C"] for p in mine], [p["loss"] for p in mine])
        fc += list(c)
        fl += list(l_)
        fg += [str(s)] * len(c)
    points = tuple(FrontierPoint(C=c, loss=l_, seed=g) for c, l_, g in zip(fc, fl, fg))
    n_distinct = len(set(fc))
    if n_distinct < FRONTIER_MIN_COMPUTES or len(fc) < FRONTIER_MIN_POINTS:
        return FrontierResult(points, len(seeds), fitted=False, reason=(
            f"too few frontier points to fit L(C): {len(fc)} point(s) at {n_distinct} distinct compute value(s); "
            f"the fit needs at least {FRONTIER_MIN_POINTS} points at {FRONTIER_MIN_COMPUTES} distinct computes"
        )), None  # fmt: skip
    try:
        fit = fit_frontier(fc, fl)
        bad = [name for name in ("E", "A") if not (math.isfinite(getattr(fit, name)) and getattr(fit, name) > 0)]
        if bad:
            return FrontierResult(points, len(seeds), fitted=False, fit=fit, reason=(
                f"the frontier fit is degenerate: {', '.join(bad)} went to {getattr(fit, bad[0]):g}, so the points do not "
                "pin down the law")), None  # fmt: skip
        by_seed = len(seeds) >= 2
        iv = bootstrap_frontier(fc, fl, n_resamples=n_bootstrap, groups=fg if by_seed else None, level=level, seed=seed, fit=fit)
    except (BeyondBPError, ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        return FrontierResult(points, len(seeds), fitted=False, reason=f"the frontier fit failed: {_why_failed(exc)}"), None
    lo, hi = min(fc), max(fc)
    grid = np.geomspace(lo, hi * extrapolate, CURVE_POINTS) if hi > lo else np.array([lo])
    med, low, high = _curve_band(_frontier_samples(iv.samples, grid), level)
    rows = np.column_stack([np.asarray(iv.samples[k], dtype=float) for k in ("E", "A", "alpha")])
    distinct = len({tuple(np.round(r, 9)) for r in rows[np.all(np.isfinite(rows), axis=1)]})
    ident = identify(fit, variables={"C": fc}, losses=fl, intervals=iv)
    pred = _frontier_prediction(fc, fl, fg, n_bootstrap, seed, level)
    out = FrontierResult(
        points,
        len(seeds),
        fitted=True,
        identification=ident,
        prediction=pred,
        distinct_resamples=distinct,
        resampled="seeds" if by_seed else "points",
        note=None if by_seed else "one seed only: the intervals resample frontier points, not seeds",
        fit=fit,
        intervals=iv,
        level=level,
        n_resamples=n_bootstrap,
        curve=FrontierCurve(C=grid, estimate=fit.predict(grid), median=med, low=low, high=high, extrapolated_from=hi),
    )  # fmt: skip
    return out, {k: np.asarray(v, dtype=float) for k, v in iv.samples.items()} | {"_fit": np.array([fit.E, fit.A, fit.alpha])}


_FIT_ERRORS = (BeyondBPError, ArithmeticError, ValueError, np.linalg.LinAlgError)


def _frontier_prediction(fc: list[float], fl: list[float], fg: list[str], n_bootstrap: int, seed: int,
                         level: float) -> PredictiveCheck:
    """The frontier refitted without its largest compute, predicting the points held out there."""
    top = max(fc)
    held = f"the largest compute ({fmt_compute(top)} FLOPs)"
    keep = [i for i, c in enumerate(fc) if c < top]
    rest_c, rest_l, rest_g = [fc[i] for i in keep], [fl[i] for i in keep], [fg[i] for i in keep]
    if len(set(rest_c)) < FRONTIER_MIN_COMPUTES or len(rest_c) < FRONTIER_MIN_POINTS:
        return PredictiveCheck(held, None, why=(
            f"too few frontier points once {held} is held out: {len(rest_c)} point(s) at {len(set(rest_c))} distinct "
            f"compute(s), and the fit needs {FRONTIER_MIN_POINTS} at {FRONTIER_MIN_COMPUTES}"))  # fmt: skip
    observed = [l_ for c, l_ in zip(fc, fl) if c == top]
    try:
        fit = fit_frontier(rest_c, rest_l)
        groups = rest_g if len(set(rest_g)) >= 2 else None
        iv = bootstrap_frontier(rest_c, rest_l, n_resamples=n_bootstrap, groups=groups, level=level, seed=seed, fit=fit)
    except _FIT_ERRORS as exc:
        return PredictiveCheck(held, None, why=f"the refit without {held} failed: {exc}")
    samples = _frontier_samples(iv.samples, np.array([top]))
    return predictive_check(held, observed, [float(fit.predict(top))] * len(observed), np.repeat(samples, len(observed), axis=1),
                            level=level)


def _loss_law_prediction(N: list[float], D: list[float], L: list[float], seeds: list[str], n_bootstrap: int, seed: int,
                         level: float, starts: Any) -> PredictiveCheck:
    """L(N, D) refitted without its largest size, predicting the runs held out there."""
    top = max(N)
    held = f"the largest size (N = {top:.3g})"
    keep = [i for i, n in enumerate(N) if n < top]
    rn, rd, rl, rs = ([x[i] for i in keep] for x in (N, D, L, seeds))
    pairs = {(a, b) for a, b in zip(rn, rd)}
    if len(pairs) < LOSS_LAW_MIN_POINTS or len(set(rn)) < 2 or len(set(rd)) < 2:
        return PredictiveCheck(held, None, why=(
            f"too few runs once {held} is held out: {len(pairs)} distinct (N, D) pair(s) from {len(set(rn))} size(s); "
            f"the fit needs {LOSS_LAW_MIN_POINTS} pairs from at least 2 sizes and 2 budgets"))  # fmt: skip
    out_n = np.array([n for n in N if n == top])
    out_d = np.array([d for n, d in zip(N, D) if n == top])
    observed = [l_ for n, l_ in zip(N, L) if n == top]
    try:
        fit = fit_loss_law(rn, rd, rl, starts=starts)
        groups = rs if len(set(rs)) >= 2 else None
        iv = bootstrap(rn, rd, rl, n_resamples=n_bootstrap, groups=groups, level=level, seed=seed, fit=fit)
    except _FIT_ERRORS as exc:
        return PredictiveCheck(held, None, why=f"the refit without {held} failed: {exc}")
    E, A, B, a, b = (np.asarray(iv.samples[k], dtype=float)[:, None] for k in ("E", "A", "B", "alpha", "beta"))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        samples = E + A / out_n[None, :] ** a + B / out_d[None, :] ** b
    return predictive_check(held, observed, fit.predict(out_n, out_d), samples, level=level)


def _why_failed(exc: BaseException) -> str:
    """A fit's failure in words a reader can act on (Python's own are "math range error" and
    "math domain error")."""
    if isinstance(exc, OverflowError):
        return ("a coefficient or exponent ran off to values too large to evaluate (overflow), so the points do not "
                "pin down the law")
    if isinstance(exc, ValueError) and str(exc) == "math domain error":
        return ("a coefficient or exponent left the range where the law is defined (math domain error), so the points "
                "do not pin down the law")
    return str(exc)


def _fit_loss_law(pts: list[dict[str, Any]], n_bootstrap: int, seed: int, level: float, starts: Any) -> LossLawResult:
    pairs = {(p["N"], p["D"]) for p in pts}
    ns, ds = {p["N"] for p in pts}, {p["D"] for p in pts}
    if len(pairs) < LOSS_LAW_MIN_POINTS or len(ns) < 2 or len(ds) < 2:
        return LossLawResult(fitted=False, reason=(
            f"too few distinct (N, D) points to fit L(N, D): {len(pairs)} pair(s) from {len(ns)} size(s) and "
            f"{len(ds)} data amount(s); the fit needs at least {LOSS_LAW_MIN_POINTS} pairs with at least 2 of each"
        ))  # fmt: skip
    N = [p["N"] for p in pts]
    D = [p["D"] for p in pts]
    L = [p["loss"] for p in pts]
    seeds = [str(p["seed"]) for p in pts]
    by_seed = len(set(seeds)) >= 2
    try:
        fit = fit_loss_law(N, D, L, starts=starts)
        bad = [name for name in ("E", "A", "B") if not (math.isfinite(getattr(fit, name)) and getattr(fit, name) > 0)]
        if bad:
            return LossLawResult(fitted=False, fit=fit, reason=(
                f"the L(N, D) fit is degenerate: {', '.join(bad)} went to {getattr(fit, bad[0]):g}, so the data do not "
                "pin down every term of the law (for example when the loss depends on N × D only)"))  # fmt: skip
        iv = bootstrap(N, D, L, n_resamples=n_bootstrap, groups=seeds if by_seed else None, level=level, seed=seed, fit=fit)
    except (BeyondBPError, ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        return LossLawResult(fitted=False, reason=f"the L(N, D) fit failed: {_why_failed(exc)}")
    ident = identify(fit, variables={"N": N, "D": D}, losses=L, intervals=iv)
    pred = _loss_law_prediction(N, D, L, seeds, n_bootstrap, seed, level, starts)
    return LossLawResult(
        fitted=True,
        identification=ident,
        prediction=pred,
        resampled="seeds" if by_seed else "points",
        note=None if by_seed else "one seed only: the intervals resample runs, not seeds",
        fit=fit,
        intervals=iv,
        level=level,
        n_resamples=n_bootstrap,
        n_points=len(pts),
        N_range=(min(ns), max(ns)),
        D_range=(min(ds), max(ds)),
    )


# -- the verdict --------------------------------------------------------------------------------
def _range_text(C: np.ndarray, mask: np.ndarray) -> str:
    if mask.all():
        return f"at every compute studied ({fmt_compute(C[0])}–{fmt_compute(C[-1])} FLOPs)"
    lo, hi = C[mask].min(), C[mask].max()
    return f"from {fmt_compute(lo)} to {fmt_compute(hi)} FLOPs (of {fmt_compute(C[0])}–{fmt_compute(C[-1])} studied; the intervals overlap elsewhere)"


def _diff_text(rule: str, d: DeltaCurve, i: int, unit: str) -> str:
    c = fmt_compute(d.C[i])
    m, lo, hi = d.median[i], d.low[i], d.high[i]
    if m >= 0:
        return f"at {c} {rule}'s loss is {m:.3g} ({lo:.3g} to {hi:.3g}) {unit} higher"
    return f"at {c} {rule}'s loss is {-m:.3g} ({-hi:.3g} to {-lo:.3g}) {unit} lower"


def _cross_text(cross: Crossover) -> str:
    if not cross.median:
        return "no crossover"
    where = ", ".join(fmt_compute(c) for c in cross.median)
    text = f"median crossover at {where} FLOPs"
    if cross.low is not None:
        text += (f" ({fmt_compute(cross.low)}–{fmt_compute(cross.high)} from the "
                 f"{100 * cross.fraction_of_resamples:.0f}% of resamples that cross)")  # fmt: skip
    return text


def _sentence(rule: str, base: str, d: DeltaCurve, unit: str) -> str:
    C, s, cls = d.C, d.sign, d.cls
    head = f"{rule} vs {base}: {cls} — "
    last = len(C) - 1
    if cls == "D":
        body = f"{base} reaches lower loss {_range_text(C, s == 1)}"
    elif cls == "A":
        body = f"{rule} reaches lower loss {_range_text(C, s == -1)}"
    elif cls == "B":
        body = (f"{base} reaches lower loss at small compute (up to {fmt_compute(C[s == 1].max())} FLOPs), "
                f"{rule} at scale (from {fmt_compute(C[s == -1].min())} FLOPs)")  # fmt: skip
    elif cls == "C":
        body = (f"{rule} reaches lower loss at small compute (up to {fmt_compute(C[s == -1].max())} FLOPs), "
                f"{base} at scale (from {fmt_compute(C[s == 1].min())} FLOPs)")  # fmt: skip
    else:
        why = d.why.replace("the rule", rule).replace("the baseline", base)
        body = f"{why} (studied {fmt_compute(C[0])}–{fmt_compute(C[-1])} FLOPs)"
    return f"{head}{body}; {_diff_text(rule, d, last, unit)}; {_cross_text(d.crossover)}."


def _verdict(rule: str, base: str, fr: FrontierResult, fb: FrontierResult, sr: _Curves | None, sb: _Curves | None,
             range_r: tuple[float, float], range_b: tuple[float, float], extrapolate: float, level: float, unit: str) -> Verdict:
    head = {"label": rule, "baseline": base, "level": level}
    missing = [name for name, f in ((rule, fr), (base, fb)) if (sr if name == rule else sb) is None]
    if missing:
        reasons = "; ".join(f"{name}: {(fr if name == rule else fb).reason}" for name in missing)
        reason = f"no frontier fit for {' and '.join(missing)} ({reasons})"
        return Verdict(**head, cls="undecided", reason=reason, sentence=f"{rule} vs {base}: undecided — {reason}.")
    lo, hi = max(range_r[0], range_b[0]), min(range_r[1], range_b[1])
    if not lo < hi:
        reason = (f"the compute ranges do not overlap ({rule}: {fmt_compute(range_r[0])}–{fmt_compute(range_r[1])}, "
                  f"{base}: {fmt_compute(range_b[0])}–{fmt_compute(range_b[1])} FLOPs)")  # fmt: skip
        return Verdict(**head, cls="undecided", reason=reason, sentence=f"{rule} vs {base}: undecided — {reason}.")
    studied = _delta_on(np.geomspace(lo, hi, GRID_POINTS), sr, sb, level)
    cls, reason, estimate, caveat = studied.cls, studied.why, None, None
    sentence = _sentence(rule, base, studied, unit)
    assert sr is not None and sb is not None
    bases = [c.basis for c in (sr, sb) if c.basis]
    basis = None
    if bases:
        basis = "frontier points (joined log-linearly, resampled by seed) instead of the fitted law: " + "; ".join(bases)
        sentence = sentence[:-1] + f" (compared on the {basis})."
    thin = {name: MIN_DISTINCT_RESAMPLES if c.distinct is None else c.distinct for name, c in ((rule, sr), (base, sb))}
    thin = {name: n for name, n in thin.items() if n < MIN_DISTINCT_RESAMPLES}
    if thin:
        estimate = cls
        reason = (
            f"the frontier bootstrap has too few distinct resamples for an interval "
            f"({', '.join(f'{name}: {n}' for name, n in thin.items())}; at least {MIN_DISTINCT_RESAMPLES} needed): "
            "more seeds, sizes or budgets are needed"
        )
        cls = "undecided"
        text = sentence.split(" — ", 1)[1] if " — " in sentence else sentence
        sentence = f"{rule} vs {base}: undecided — {reason}; the point estimates alone would say {estimate}: {text}"
    few = {name: f.n_seeds for name, f in ((rule, fr), (base, fb)) if f.n_seeds < MIN_SEEDS}
    if few:
        caveat = (
            f"few seeds ({', '.join(f'{name}: {n}' for name, n in few.items())}): a bootstrap over so few seeds has "
            "only a handful of distinct resamples, so the intervals understate the uncertainty"
        )
        if cls != "undecided":  # never a class from fewer than MIN_SEEDS seeds: the point estimate only
            estimate, cls, text = cls, "undecided", sentence.split(" — ", 1)[-1]
            sentence = f"{rule} vs {base}: undecided (fewer than {MIN_SEEDS} seeds) — its intervals, too narrow, would say {estimate}: {text}"
        sentence = sentence[:-1] + f" (caution: {caveat})."
    ext = ext_sentence = None
    unusable = [_no_extrapolation(name, f) for name, f in ((rule, fr), (base, fb)) if not f.extrapolates]
    if extrapolate > 1 and unusable:
        ext_sentence = f"Not extrapolated beyond {fmt_compute(hi)} FLOPs: {'; '.join(unusable)}."
    elif extrapolate > 1:
        grid = np.concatenate([studied.C, np.geomspace(hi, hi * extrapolate, GRID_POINTS // 2 + 1)[1:]])
        ext = _delta_on(grid, sr, sb, level, from_=hi, to=hi * extrapolate)
        if thin or few:  # no usable interval: the class is undecided here too
            ext = replace(ext, cls="undecided", point_estimate_class=ext.cls)
        i = len(grid) - 1
        later = [c for c in ext.crossover.median if c > hi]
        beyond = f"median crossover beyond the data at {', '.join(fmt_compute(c) for c in later)} FLOPs" if later else "no crossover beyond the data"
        shown = ext.cls if not (thin or few) else f"undecided (point estimates: {ext.point_estimate_class})"
        ext_sentence = (
            f"Extrapolated to {fmt_compute(hi * extrapolate)} FLOPs ({extrapolate:g}× the largest compute studied; "
            f"beyond the data): {shown}; {_diff_text(rule, ext, i, unit)}; {beyond}."
        )
    return Verdict(**head, cls=cls, reason=reason, sentence=sentence, range=(lo, hi), studied=studied,
                   point_estimate_class=estimate, caveat=caveat, extrapolated=ext, extrapolated_sentence=ext_sentence,
                   basis=basis)


def _no_extrapolation(name: str, f: FrontierResult) -> str:
    """Why a label's frontier law is not used beyond the data."""
    if not f.identified:
        why = f.identification.why if f.identification is not None else f.reason
        return f"{name}'s L(C) is not identified ({why})"
    p = f.prediction
    if p is None or p.passed is None:
        return f"{name}'s L(C) could not be checked against its own largest compute ({p.why if p else 'no check'})"
    return f"{name}'s L(C) does not predict its own largest compute ({p.why})"


# -- the analysis -------------------------------------------------------------------------------
def _check_args(baseline: Any, extrapolate: Any, n_bootstrap: Any, seed: Any, level: Any) -> None:
    if not isinstance(baseline, str) or not baseline:
        raise ConfigError(f"invalid baseline {baseline!r}: give a rule label such as 'backprop'")
    if isinstance(extrapolate, bool) or not isinstance(extrapolate, (int, float)) or not math.isfinite(extrapolate) or extrapolate < 1:
        raise ConfigError(f"invalid extrapolate {extrapolate!r}: it must be a number of at least 1 (1 means no extrapolation)")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 2:
        raise ConfigError(f"invalid n_bootstrap {n_bootstrap!r}: it must be a whole number of at least 2")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"invalid seed {seed!r}: it must be a whole number of at least 0")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ConfigError(f"invalid level {level!r}: it must lie strictly between 0 and 1, e.g. 0.95")


def judge_study(
    records: Iterable[Mapping[str, Any]],
    baseline: str = "backprop",
    extrapolate: float = 10.0,
    n_bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
    loss_law: bool = True,
    loss_law_starts: Any = None,
) -> StudyVerdicts:
    """Best learning rates, frontier and L(N, D) fits per label, and each label's verdict
    against ``baseline`` (see the module docstring), as a :class:`~beyondbp.study.judgement.StudyVerdicts`
    (``counts``, ``runs``, ``diverged``, ``failed``, ``excluded``, ``best_lr``, ``labels``,
    ``fits``, ``verdicts``, ``warnings``, ``notes``, ``settings``; ``to_dict()`` is its JSON).

    ``n_bootstrap`` resamples (generator seeded with ``seed``) give every interval, at ``level``;
    ``extrapolate`` (≥ 1) sets how far beyond the largest compute studied the extrapolated
    verdict looks. ``loss_law=False`` skips the L(N, D) fits (the slowest part: Chinchilla's
    4,500 starts per label, or the rows ``(a, b, e, alpha, beta)`` of ``loss_law_starts``)."""
    _check_args(baseline, extrapolate, n_bootstrap, seed, level)
    records = list(records)
    counts = Counter(str(r.get("status", "?")) for r in records)
    diverged = [r for r in records if r.get("status") == "diverged"]
    failed = [r for r in records if r.get("status") == "failed"]
    points: list[dict[str, Any]] = []
    excluded: list[ExcludedRun] = []
    for rec in records:
        if rec.get("status") != "done":
            continue
        p, why = run_point(rec)
        if p is None:
            excluded.append(ExcludedRun(id=rec.get("id"), label=record_label(rec), reason=why))
        else:
            p["index"] = len(points)
            points.append(p)
    warnings: list[str] = []
    notes: list[str] = []
    table, lr_warnings, kept = best_lr_table(points, diverged)
    warnings += lr_warnings
    all_lrs = {p["lr"] for p in points} | {record_lr(r) for r in diverged}
    if len(all_lrs) <= 1 and points:
        notes.append("the study has a single learning rate: no learning-rate selection was made")
    elif points and not any(row.selected for row in table):
        notes.append("every group has a single learning rate: no learning-rate selection was made")
    labels: list[str] = []
    for p in points:
        if p["label"] not in labels:
            labels.append(p["label"])
    if baseline in labels:
        labels.remove(baseline)
        labels.insert(0, baseline)
    loss_names = sorted({p["loss_name"] for p in points})
    if len(loss_names) > 1:
        warnings.append("the runs mix language models (val_loss) and classifiers (test_loss); their losses are not comparable")
    unit = "nats/token" if loss_names == ["val_loss"] else "nats"
    fits: dict[str, LabelFits] = {}
    samples: dict[str, _Curves | None] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for label in labels:
        mine = [p for p in points if p["label"] == label and p["index"] in kept]
        ranges[label] = (min(p["C"] for p in mine), max(p["C"] for p in mine))
        frontier, law = _fit_frontier(mine, n_bootstrap, seed, level, extrapolate)
        if law is not None and frontier.identified:
            samples[label] = _Curves.from_law(law, frontier.distinct_resamples)
        elif frontier.fit is not None and frontier.points:  # a fit was made but is not identified
            why = frontier.identification.why if frontier.identification is not None else frontier.reason
            samples[label] = _Curves.from_points(frontier, n_bootstrap, seed, f"{label}'s L(C) is not identified ({why})")
        else:
            samples[label] = None
        if frontier.points:  # beyond a label's last frontier point its runs stopped improving:
            # the data's frontier is flat there, so the fitted law is an extrapolation
            front = [q.C for q in frontier.points]
            ranges[label] = (min(front), max(front)) if getattr(samples[label], "covered", None) is None else samples[label].covered
        fits[label] = LabelFits(
            n_runs=len(mine),
            compute_range=(min(p["C"] for p in mine), max(p["C"] for p in mine)),
            frontier_range=ranges[label],
            frontier=frontier,
            loss_law=_fit_loss_law(mine, n_bootstrap, seed, level, loss_law_starts) if loss_law
            else LossLawResult(fitted=False, reason="not asked for (loss_law=False)"),
        )
    verdicts: dict[str, Verdict] = {}
    if baseline not in labels:
        if labels:
            warnings.append(f"no finished runs of the baseline {baseline!r}: no verdicts")
    else:
        for label in labels[1:]:
            verdicts[label] = _verdict(
                label, baseline, fits[label].frontier, fits[baseline].frontier, samples[label], samples[baseline],
                ranges[label], ranges[baseline], float(extrapolate), float(level), unit,
            )  # fmt: skip
    if diverged:
        notes.append(f"{len(diverged)} diverged run(s) are listed and never fitted")
    runs = tuple(
        AnalysedRun(**{k: p[k] for k in ("id", "label", "N", "D", "C", "eval_flops", "loss", "loss_name", "seed", "lr", "axes")},
                    best_lr=p["index"] in kept)
        for p in points
    )
    return StudyVerdicts(
        counts=dict(counts),
        n_records=len(records),
        runs=runs,
        diverged=tuple(DivergedRun(id=r.get("id"), label=record_label(r), axes=r.get("axes") or {}, lr=record_lr(r), seed=record_seed(r),
                                   diverged_at_step=r.get("diverged_at_step")) for r in diverged),
        failed=tuple(FailedRun(id=r.get("id"), label=record_label(r), axes=r.get("axes") or {}, error=r.get("error")) for r in failed),
        excluded=tuple(excluded),
        best_lr=tuple(table),
        labels=tuple(labels),
        baseline=baseline,
        loss=loss_names[0] if len(loss_names) == 1 else tuple(loss_names),
        unit=unit,
        fits=fits,
        verdicts=verdicts,
        warnings=tuple(warnings),
        notes=tuple(notes),
        settings={"baseline": baseline, "extrapolate": extrapolate, "n_bootstrap": n_bootstrap, "seed": seed,
                  "level": level, "loss_law": loss_law, "classification": "studied range only; the extrapolated class is reported apart"},
    )  # fmt: skip
