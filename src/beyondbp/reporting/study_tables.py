"""The tables at the head of a study's report: the verdicts, and every warning in one table.

* :func:`verdict_rows` — one row per rule compared with the baseline: the verdict's class
  (``undecided`` written as such; with the point estimates' class beside it when the
  intervals left it undecided), the compute range studied, the loss difference
  ``L_rule − L_baseline`` at the top of that range with its bootstrap interval (negative: the
  rule is better), the seeds per cell (fewest–most over the best-LR cells of both labels) and
  the cells whose learning-rate search was capped (:func:`capped_cells`).
* :func:`warning_rows` — the analysis's warnings and notes and the runs whose held-out loss
  rises late (:mod:`beyondbp.study.overfitting`) as rows ``(kind, where, detail)``: the same
  words as the paragraphs they replace, the cell they concern moved to its own column.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..study.judgement import BestLR, StudyVerdicts, Verdict
from ..study.overfitting import EARLY_FRACTION, RISE, LateRise
from ..study.selection import _short
from ..study.verdict import fmt_compute

__all__ = ["VERDICT_HEADERS", "WARNING_HEADERS", "capped_cells", "verdict_rows", "warning_rows"]

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


def _rising_row(run: LateRise) -> list[str]:
    axes = {k: v for k, v in run.axes.items() if k != "rule"}
    where = _where(run.label, {**axes, "seed": run.seed} if "seed" not in axes else axes)
    at = f", {run.x_name} {run.at_x:g}" if run.at_x is not None else ""
    detail = (f"final {run.loss_name} {run.final:.4g} is {100 * run.rise:.0f}% above its minimum {run.minimum:.4g} "
              f"(evaluation {run.at + 1} of {run.n_evaluations}{at}): the loss rises late, the run overfits")  # fmt: skip
    return ["overfitting", where, detail]


def warning_rows(analysis: StudyVerdicts, rising: Sequence[LateRise] = ()) -> list[list[str]]:
    """Every warning, then every run that rises late, then every note, as ``[kind, where,
    detail]`` (:data:`WARNING_HEADERS`); a warning about one cell has the cell under "where"."""
    cells = sorted({_where(row.label, row.axes) for row in analysis.best_lr}, key=len, reverse=True)
    rows = []
    for text in analysis.warnings:
        cell = next((c for c in cells if text.startswith(c + ": ")), None)
        if cell is None:
            rows.append([_kind(text), "study", text])
        else:
            rows.append([_kind(text), cell, text[len(cell) + 2 :]])
    rows += [_rising_row(run) for run in rising]
    rows += [["note", "study", n[0].upper() + n[1:] + "."] for n in analysis.notes]
    return rows


#: The sentence under the warnings table that defines "overfitting".
RISING_TEXT = (
    f"Overfitting: a done run whose held-out loss curve has its minimum in the first "
    f"{100 * EARLY_FRACTION:.0f}% of its evaluations (at least 3) and ends more than {100 * RISE:.0f}% above "
    "that minimum; such runs are marked × at their final point in the learning curves."
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
