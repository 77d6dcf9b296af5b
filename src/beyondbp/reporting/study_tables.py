"""The tables at the head of a study's report: the verdicts, and every warning in one table.

* :func:`verdict_rows` — one row per rule compared with the baseline: the verdict's class
  (``undecided`` written as such; with the point estimates' class beside it when the
  intervals left it undecided), the compute range studied, the loss difference
  ``L_rule − L_baseline`` at the top of that range with its bootstrap interval (negative: the
  rule is better), the seeds per cell (fewest–most over the best-LR cells of both labels) and
  the cells whose learning-rate search was capped (:func:`capped_cells`).
* :func:`warning_rows` — the analysis's warnings and notes and the runs whose held-out loss
  rises late (:mod:`beyondbp.study.overfitting`) as rows ``(kind, where, detail)``: the same
  words as the paragraphs they replace, the cell they concern moved to its own column. Runs
  that rise late take one row per cell (:func:`rising_rows`: how many of its runs, by how much,
  at which learning rates and seeds); :func:`rising_run_rows` lists them one by one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from ..study.judgement import BestLR, StudyVerdicts, Verdict
from ..study.overfitting import EARLY_FRACTION, RISE, LateRise
from ..study.selection import _short
from ..study.verdict import fmt_compute

__all__ = ["RISING_RUN_HEADERS", "VERDICT_HEADERS", "WARNING_HEADERS", "capped_cells", "rising_rows", "rising_run_rows",
           "verdict_rows", "warning_rows"]

VERDICT_HEADERS = ["rule vs baseline", "class", "compute studied (FLOPs)", "loss difference at the top",
                   "seeds per cell", "cells capped"]  # fmt: skip
WARNING_HEADERS = ["kind", "where", "detail"]


def _cells(analysis: StudyVerdicts, verdict: Verdict) -> list[BestLR]:
    return [row for row in analysis.best_lr if row.label in (verdict.label, verdict.baseline)]


def capped_cells(verdict: Verdict, analysis: StudyVerdicts) -> tuple[Any, ...] | None:
    """The cells of the verdict's two labels whose learning-rate search stopped at its cap of
    rounds (a verdict that depends on one says so), or None when the study records no search
    states. Read from the verdict's ``capped_cells`` where it has one, else from the best-LR
    rows' ``state`` (``"capped at N rounds"``); a study without a learning-rate search has
    neither, and the report prints "—"."""
    given = getattr(verdict, "capped_cells", None)
    if given is not None:
        return tuple(given)
    states = [(row, getattr(row, "state", None)) for row in _cells(analysis, verdict)]
    if all(state is None for _, state in states):
        return None
    return tuple(row for row, state in states if isinstance(state, str) and state.startswith("capped"))


def _seeds(rows: Sequence[BestLR]) -> str:
    counts = [row.n_seeds for row in rows]
    if not counts:
        return "—"
    lo, hi = min(counts), max(counts)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _difference(verdict: Verdict, unit: str) -> str:
    d = verdict.studied
    if d is None or not len(d.median):
        return "—"
    m, lo, hi = (float(v[-1]) for v in (d.median, d.low, d.high))
    return f"{m:+.3g} ({lo:+.3g} to {hi:+.3g}) {unit} at {fmt_compute(float(d.C[-1]))}"


def verdict_rows(analysis: StudyVerdicts) -> list[list[str]]:
    """One row per verdict, in :data:`VERDICT_HEADERS`' order."""
    rows = []
    for v in analysis.verdicts.values():
        cls = v.cls
        if cls == "undecided" and v.point_estimate_class:
            cls += f" (point estimates: {v.point_estimate_class})"
        span = f"{fmt_compute(v.range[0])} – {fmt_compute(v.range[1])}" if v.range is not None else "—"
        capped = capped_cells(v, analysis)
        rows.append([f"{v.label} vs {v.baseline}", cls, span, _difference(v, analysis.unit),
                     _seeds(_cells(analysis, v)), "—" if capped is None else str(len(capped))])  # fmt: skip
    return rows


def _where(label: str, axes: Mapping[str, Any]) -> str:
    """A cell as :func:`beyondbp.study.selection.best_lr_table`'s warnings name it."""
    return label + (" " + ", ".join(f"{k}={_short(v)}" for k, v in axes.items()) if axes else "")


def _kind(text: str) -> str:
    if "the best learning rate" in text and "of the grid" in text:
        return "learning rate at grid edge"
    if "not comparable" in text:
        return "losses not comparable"
    if "baseline" in text:
        return "no baseline"
    return "warning"


def _rising_cell(run: LateRise) -> str:
    """The cell of a run that rises late: its label and every axis but the rule, the learning
    rate and the seed (as the best-LR table groups runs)."""
    return _where(run.label, {k: v for k, v in run.axes.items() if k not in ("rule", "lr", "seed")})


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}–{format(hi, fmt)}"


def _lr_seeds(runs: Sequence[LateRise]) -> str:
    """``lr 0.002 (seeds 0, 2), lr 0.008 (seed 1)``: the learning rates of the runs, and their seeds."""
    by_lr: dict[Any, list[Any]] = {}
    for run in runs:
        by_lr.setdefault(run.lr, []).append(run.seed)
    parts = []
    for lr in sorted(by_lr, key=lambda v: (v is None, v if v is not None else 0.0)):
        seeds = sorted(by_lr[lr], key=str)
        which = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(str(x) for x in seeds)}"
        parts.append(f"lr {'?' if lr is None else _short(lr)} ({which})")
    return ", ".join(parts)


def rising_rows(analysis: StudyVerdicts, rising: Sequence[LateRise]) -> list[list[str]]:
    """One ``["overfitting", cell, detail]`` row per cell (label × the axes other than learning
    rate and seed) with runs that rise late: how many of the cell's runs do, by how much, and at
    which learning rates and seeds (every run apart: :func:`rising_run_rows`)."""
    cells: dict[str, list[LateRise]] = {}
    for run in rising:
        cells.setdefault(_rising_cell(run), []).append(run)
    sizes = Counter(_where(r.label, r.axes) for r in analysis.runs)
    rows = []
    for where, runs in cells.items():
        n = max(sizes.get(where, 0), len(runs))
        names = sorted({r.loss_name for r in runs})
        evals = sorted({r.n_evaluations for r in runs})
        of = str(evals[0]) if len(evals) == 1 else f"{evals[0]}–{evals[-1]}"
        detail = (f"{len(runs)} of {n} run{'s' if n != 1 else ''} overfit{'s' if n == 1 else ''}: final {'/'.join(names)} "
                  f"{_span([100 * r.rise for r in runs], '.0f')}% above its minimum (at evaluation "
                  f"{_span([r.at + 1 for r in runs], 'd')} of {of}), at {_lr_seeds(runs)}: the loss rises late")  # fmt: skip
        rows.append(["overfitting", where, detail])
    return rows


RISING_RUN_HEADERS = ["cell", "lr", "seed", "final", "minimum", "above", "at evaluation", "id"]


def rising_run_rows(rising: Sequence[LateRise]) -> list[list[str]]:
    """Every run that rises late, one row each (:data:`RISING_RUN_HEADERS`)."""
    rows = []
    for run in rising:
        at = f"{run.at + 1} of {run.n_evaluations}" + (f" ({run.x_name} {run.at_x:g})" if run.at_x is not None else "")
        rows.append([_rising_cell(run), "—" if run.lr is None else _short(run.lr), str(run.seed),
                     f"{run.loss_name} {run.final:.4g}", f"{run.minimum:.4g}", f"{100 * run.rise:.0f}%", at,
                     str(run.id)])  # fmt: skip
    return rows


def warning_rows(analysis: StudyVerdicts, rising: Sequence[LateRise] = ()) -> list[list[str]]:
    """Every warning, then the cells with runs that rise late (one row per cell:
    :func:`rising_rows`), then every note, as ``[kind, where, detail]`` (:data:`WARNING_HEADERS`);
    a warning about one cell has the cell under "where"."""
    cells = sorted({_where(row.label, row.axes) for row in analysis.best_lr}, key=len, reverse=True)
    rows = []
    for text in analysis.warnings:
        cell = next((c for c in cells if text.startswith(c + ": ")), None)
        if cell is None:
            rows.append([_kind(text), "study", text])
        else:
            rows.append([_kind(text), cell, text[len(cell) + 2 :]])
    rows += rising_rows(analysis, rising)
    rows += [["note", "study", n[0].upper() + n[1:] + "."] for n in analysis.notes]
    return rows


#: The sentence under the warnings table that defines "overfitting".
RISING_TEXT = (
    f"Overfitting: a done run whose held-out loss curve has its minimum in the first "
    f"{100 * EARLY_FRACTION:.0f}% of its evaluations (at least 3) and ends more than {100 * RISE:.0f}% above "
    "that minimum; such runs are marked × at their final point in the learning curves. One row per cell: every "
    "run is listed under “Runs that overfit” below, and in report.json (\"overfitting\")."
)


def head_blocks(analysis: StudyVerdicts, rising: Sequence[LateRise] = ()) -> list[tuple]:
    """The report's first blocks (:mod:`beyondbp.reporting.study`'s block list): the verdict
    table, the verdict sentences and the classes, then the warnings table."""
    out: list[tuple] = [("h2", "Verdict")]
    verdicts = analysis.verdicts
    if verdicts:
        out.append(("table", VERDICT_HEADERS, verdict_rows(analysis)))
        level = 100 * float(analysis.settings.get("level", 0.95))
        out.append(("p", (
            f"Loss difference: L_rule − L_baseline ({analysis.unit}) at the largest compute studied, the median over "
            f"bootstrap resamples and its {level:g}% interval (negative: the rule is better). Seeds per cell: the fewest "
            "and most seeds of a best-LR cell of either label. Cells capped: cells whose learning-rate search stopped at "
            "its cap of rounds (— where the study has no search)."
        )))  # fmt: skip
        items = []
        for v in verdicts.values():
            items.append(v.sentence)
            if v.extrapolated_sentence:
                items.append(v.extrapolated_sentence)
        out.append(("ul", items))
        out.append(("p", (
            "Classes (Filipovich et al. 2022): A, the rule reaches a lower loss than backprop over the whole compute range; "
            "B, backprop better at small compute, the rule at scale; C, the rule better at small compute, backprop at scale; "
            "D, backprop better over the whole range; undecided, the intervals do not separate where it matters. The class "
            "is decided on the studied range (the overlap of both labels' efficient frontiers: from the cheapest best-LR run "
            "to the compute where the label last improved; past that point the fitted law is an extrapolation); the "
            "extrapolated class is reported apart."
        )))  # fmt: skip
    else:
        out.append(("p", "No verdict: it needs finished runs of the baseline and of at least one other label."))
    rows = warning_rows(analysis, rising)
    if rows:
        out.append(("h2", "Warnings and notes"))
        out.append(("table", WARNING_HEADERS, rows))
        if rising:
            out.append(("p", RISING_TEXT))
    return out
