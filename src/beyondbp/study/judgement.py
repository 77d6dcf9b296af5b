"""What :func:`beyondbp.study.verdict.judge_study` returns: small frozen dataclasses, one per part
of a study's analysis (as Optuna's ``FrozenTrial``).

Each holds the computed values as they are (NumPy arrays, floats that may be NaN, the typed fits
of :mod:`beyondbp.analysis.scaling`); ``to_dict()`` is their only serialisation, JSON-ready
(arrays as lists, NaN and ±inf as ``None``) with the keys in a fixed order — what ``report.json``
holds under ``analysis``. Optional parts (a fit that was not made, a verdict without an
extrapolation) are ``None`` and left out of the dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis.scaling import FrontierFit, Identification, Intervals, LossLawFit, PredictiveCheck
from ..jsonable import plain

__all__ = [
    "AnalysedRun",
    "BestLR",
    "Crossover",
    "DeltaCurve",
    "DivergedRun",
    "ExcludedRun",
    "FailedRun",
    "FrontierCurve",
    "FrontierPoint",
    "FrontierResult",
    "LRLoss",
    "LabelFits",
    "LossLawResult",
    "StudyVerdicts",
    "Verdict",
]


def _lists(value: Any) -> Any:
    """NumPy arrays and typed results (anywhere inside) as lists and dicts, so :func:`plain`
    can take the rest."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _json(items: Mapping[str, Any]) -> dict[str, Any]:
    return plain(_lists(dict(items)))


def _intervals(iv: Intervals) -> dict[str, Any]:
    return iv.to_dict()["intervals"]


def _checks(out: dict[str, Any], result: Any) -> None:
    """The identification and predictive-check keys of a fitted result (added after today's keys)."""
    if result.identification is not None:
        out["identified"] = result.identification.identified
        out["identification"] = result.identification
    if result.prediction is not None:
        out["prediction"] = result.prediction
    out["used_for_extrapolation"] = result.extrapolates


# -- runs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalysedRun:
    """A done run as the analysis sees it: ``N`` parameters, ``D`` data seen, ``C`` training
    FLOPs, the final ``loss`` (named ``loss_name``), and whether it is a best-LR run."""

    id: Any
    label: str
    N: float
    D: float
    C: float
    eval_flops: float | None
    loss: float
    loss_name: str
    seed: Any
    lr: float | None
    axes: Mapping[str, Any]
    best_lr: bool

    def to_dict(self) -> dict[str, Any]:
        return _json({"id": self.id, "label": self.label, "N": self.N, "D": self.D, "C": self.C,
                      "eval_flops": self.eval_flops, "loss": self.loss, "loss_name": self.loss_name,
                      "seed": self.seed, "lr": self.lr, "axes": self.axes, "best_lr": self.best_lr})


@dataclass(frozen=True)
class DivergedRun:
    id: Any
    label: str
    axes: Mapping[str, Any]
    lr: float | None
    seed: Any
    diverged_at_step: Any

    def to_dict(self) -> dict[str, Any]:
        return _json({"id": self.id, "label": self.label, "axes": self.axes, "lr": self.lr, "seed": self.seed,
                      "diverged_at_step": self.diverged_at_step})


@dataclass(frozen=True)
class FailedRun:
    id: Any
    label: str
    axes: Mapping[str, Any]
    error: Any

    def to_dict(self) -> dict[str, Any]:
        return _json({"id": self.id, "label": self.label, "axes": self.axes, "error": self.error})


@dataclass(frozen=True)
class ExcludedRun:
    """A done run left out of the fits, and why."""

    id: Any
    label: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return _json({"id": self.id, "label": self.label, "reason": self.reason})


# -- best learning rate -------------------------------------------------------------------------
@dataclass(frozen=True)
class LRLoss:
    """One learning rate of a best-LR group: its mean-over-seeds final loss (``mean_loss``, over
    its ``n_seeds`` seeds) and the mean its rank rests on (``ranked_loss``: over the seeds every
    rate of the group has, :attr:`BestLR.ranked_seeds`; the same number when no rate has more, and
    then left out of :meth:`to_dict`)."""

    lr: float | None
    mean_loss: float
    n_seeds: int
    n_diverged: int
    ranked_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        ranked = {} if self.ranked_loss is None or self.ranked_loss == self.mean_loss else {"ranked_loss": self.ranked_loss}
        return _json({"lr": self.lr, "mean_loss": self.mean_loss, "n_seeds": self.n_seeds, "n_diverged": self.n_diverged,
                      **ranked})


@dataclass(frozen=True)
class BestLR:
    """A best-LR group (a label and the values of its other axes): the learning rate kept, and
    ``edge`` (``"smallest"``/``"largest"``) when it lies at an edge of the grid; ``search``: the
    state of its learning-rate search (:mod:`beyondbp.study.search`) when the spec has one."""

    label: str
    axes: Mapping[str, Any]
    N: float
    D: float
    C: float
    best_lr: float | None
    mean_loss: float
    n_seeds: int
    lr_grid: tuple[float, ...]
    mean_loss_by_lr: tuple[LRLoss, ...]
    edge: str | None
    selected: bool
    search: str | None = None
    #: The seeds the rates were ranked on when some rate has more seeds than others (e.g. the
    #: best rate's added seeds under ``[search] lr.seeds``); None when every rate has the same.
    ranked_seeds: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _json({"label": self.label, "axes": self.axes, "N": self.N, "D": self.D, "C": self.C,
                      "best_lr": self.best_lr, "mean_loss": self.mean_loss, "n_seeds": self.n_seeds,
                      "lr_grid": self.lr_grid, "mean_loss_by_lr": self.mean_loss_by_lr, "edge": self.edge,
                      "selected": self.selected, **({"search": self.search} if self.search else {}),
                      **({"ranked_seeds": self.ranked_seeds} if self.ranked_seeds else {})})


# -- fits ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrontierPoint:
    C: float
    loss: float
    seed: str

    def to_dict(self) -> dict[str, Any]:
        return _json({"C": self.C, "loss": self.loss, "seed": self.seed})


@dataclass(frozen=True, eq=False)
class FrontierCurve:
    """The fitted frontier on a grid of computes: the fit to all points (``estimate``) and the
    bootstrap ``median``/``low``/``high``; beyond ``extrapolated_from`` it is extrapolated."""

    C: np.ndarray
    estimate: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    extrapolated_from: float

    def to_dict(self) -> dict[str, Any]:
        return _json({"C": self.C, "estimate": self.estimate, "median": self.median, "low": self.low,
                      "high": self.high, "extrapolated_from": self.extrapolated_from})


class _Checked:
    """What a fit's checks (``identification``, ``prediction``) allow: reporting its numbers and
    extrapolating with it."""

    fitted: bool
    identification: Identification | None
    prediction: PredictiveCheck | None

    @property
    def identified(self) -> bool:
        """Fitted and identified (:func:`beyondbp.analysis.scaling.identify`): its numbers are reported."""
        return self.fitted and self.identification is not None and self.identification.identified

    @property
    def extrapolates(self) -> bool:
        """Identified and predicts its own largest point (compute for L(C), size for L(N, D)):
        the only fit used beyond the data."""
        return self.identified and self.prediction is not None and self.prediction.passed is True


@dataclass(frozen=True, eq=False)
class FrontierResult(_Checked):
    """A label's frontier ``L(C) = E + A · C^(−α)``: the efficient-frontier points and, when
    ``fitted``, the fit, its bootstrap intervals and curve; else the ``reason`` (and the
    degenerate ``fit``, where one was made)."""

    points: tuple[FrontierPoint, ...]
    n_seeds: int
    fitted: bool
    reason: str | None = None
    fit: FrontierFit | None = None
    distinct_resamples: int | None = None
    resampled: str | None = None
    note: str | None = None
    intervals: Intervals | None = None
    level: float | None = None
    n_resamples: int | None = None
    curve: FrontierCurve | None = None
    identification: Identification | None = None
    prediction: PredictiveCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"points": self.points, "n_seeds": self.n_seeds, "fitted": self.fitted}
        if not self.fitted:
            if self.fit is not None:
                out["fit"] = self.fit
            out["reason"] = self.reason
            return _json(out)
        assert self.intervals is not None
        out.update(distinct_resamples=self.distinct_resamples, resampled=self.resampled, note=self.note, fit=self.fit,
                   intervals=_intervals(self.intervals), level=self.level, n_resamples=self.n_resamples, curve=self.curve)
        _checks(out, self)
        return _json(out)


@dataclass(frozen=True)
class LossLawResult(_Checked):
    """A label's ``L(N, D) = E + A/N^α + B/D^β``: when ``fitted``, the fit and its bootstrap
    intervals over the ``N_range`` × ``D_range`` studied; else the ``reason`` (and the degenerate
    ``fit``, where one was made)."""

    fitted: bool
    reason: str | None = None
    fit: LossLawFit | None = None
    resampled: str | None = None
    note: str | None = None
    intervals: Intervals | None = None
    level: float | None = None
    n_resamples: int | None = None
    n_points: int | None = None
    N_range: tuple[float, float] | None = None
    D_range: tuple[float, float] | None = None
    identification: Identification | None = None
    prediction: PredictiveCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        if not self.fitted:
            out: dict[str, Any] = {"fitted": False}
            if self.fit is not None:
                out["fit"] = self.fit
            out["reason"] = self.reason
            return _json(out)
        assert self.intervals is not None
        out = {"fitted": True, "resampled": self.resampled, "note": self.note, "fit": self.fit,
               "intervals": _intervals(self.intervals), "level": self.level, "n_resamples": self.n_resamples,
               "n_points": self.n_points, "N_range": self.N_range, "D_range": self.D_range}
        _checks(out, self)
        return _json(out)


@dataclass(frozen=True, eq=False)
class LabelFits:
    """Every fit of one label, made on its best-LR runs."""

    n_runs: int
    compute_range: tuple[float, float]
    frontier_range: tuple[float, float]
    frontier: FrontierResult
    loss_law: LossLawResult

    def to_dict(self) -> dict[str, Any]:
        return _json({"n_runs": self.n_runs, "compute_range": self.compute_range, "frontier_range": self.frontier_range,
                      "frontier": self.frontier, "loss_law": self.loss_law})


# -- the verdict --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crossover:
    """Where the median loss difference changes sign (``median``: every crossing), and the
    interval of each resample's first crossing (``low``/``high``; None when no resample
    crosses) with the fraction of resamples that cross."""

    median: tuple[float, ...]
    low: float | None
    high: float | None
    fraction_of_resamples: float

    def to_dict(self) -> dict[str, Any]:
        return _json({"median": self.median, "low": self.low, "high": self.high,
                      "fraction_of_resamples": self.fraction_of_resamples})


@dataclass(frozen=True, eq=False)
class DeltaCurve:
    """The loss difference ``Δ(C) = L_rule(C) − L_baseline(C)`` on a grid of computes: the fits'
    ``estimate``, the bootstrap ``median``/``low``/``high``, ``sign`` (−1 rule better, +1
    baseline better, 0 not separated), the outcome class and why, and the crossover. An
    extrapolated curve also has ``from_``/``to`` (keys ``from``/``to``) and, when the intervals
    were unusable, the ``point_estimate_class``."""

    C: np.ndarray
    estimate: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    sign: np.ndarray
    cls: str
    why: str
    crossover: Crossover
    from_: float | None = None
    to: float | None = None
    point_estimate_class: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"C": self.C, "estimate": self.estimate, "median": self.median, "low": self.low, "high": self.high,
               "sign": self.sign, "class": self.cls, "why": self.why, "crossover": self.crossover}
        if self.from_ is not None:
            out.update({"from": self.from_, "to": self.to})
        if self.point_estimate_class is not None:
            out["point_estimate_class"] = self.point_estimate_class
        return _json(out)


@dataclass(frozen=True, eq=False)
class Verdict:
    """A label against the baseline: the outcome class (``cls``: ``A``, ``B``, ``C``, ``D`` or
    ``undecided``), why, the one-sentence ``sentence``, and — when both frontiers were fitted
    and their ranges overlap — the studied ``range`` and the difference curve ``studied``, with
    the ``extrapolated`` one beside it. ``capped``: the cells it depends on whose learning-rate
    search was capped before bracketing (:func:`beyondbp.study.search.annotate_analysis`)."""

    label: str
    baseline: str
    level: float
    cls: str
    reason: str
    sentence: str
    range: tuple[float, float] | None = None
    studied: DeltaCurve | None = None
    point_estimate_class: str | None = None
    caveat: str | None = None
    extrapolated: DeltaCurve | None = None
    extrapolated_sentence: str | None = None
    basis: str | None = None
    capped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "baseline": self.baseline, "level": self.level,
                               "class": self.cls, "reason": self.reason}
        if self.capped:
            out["capped"] = list(self.capped)
        if self.studied is not None:
            out.update({"range": self.range, "studied": self.studied})
        out["sentence"] = self.sentence
        for key in ("point_estimate_class", "caveat", "extrapolated", "extrapolated_sentence", "basis"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return _json(out)


@dataclass(frozen=True, eq=False)
class StudyVerdicts:
    """A study's analysis (:func:`beyondbp.study.verdict.judge_study`): the runs and what became
    of them, the best learning rates, the fits and verdicts per label, warnings, notes and the
    settings. ``to_dict()`` is ``report.json``'s ``analysis``."""

    counts: Mapping[str, int]
    n_records: int
    runs: tuple[AnalysedRun, ...]
    diverged: tuple[DivergedRun, ...]
    failed: tuple[FailedRun, ...]
    excluded: tuple[ExcludedRun, ...]
    best_lr: tuple[BestLR, ...]
    labels: tuple[str, ...]
    baseline: str
    loss: str | tuple[str, ...]
    unit: str
    fits: Mapping[str, LabelFits]
    verdicts: Mapping[str, Verdict]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    settings: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return _json({"counts": self.counts, "n_records": self.n_records, "runs": self.runs, "diverged": self.diverged,
                      "failed": self.failed, "excluded": self.excluded, "best_lr": self.best_lr, "labels": self.labels,
                      "baseline": self.baseline, "loss": self.loss, "unit": self.unit, "fits": self.fits,
                      "verdicts": self.verdicts, "warnings": self.warnings, "notes": self.notes,
                      "settings": self.settings})
