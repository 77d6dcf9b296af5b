"""A study's report: one self-contained HTML page, the same content in Markdown, and JSON.

:func:`write_report` judges the records (:func:`beyondbp.study.verdict.judge_study`, unless an
analysis is given) and writes into ``out_dir``:

* ``report.html`` — self-contained: the figures are PNGs inlined as base64 ``data:`` URIs, the
  style sheet is inline, there is no script and nothing is fetched from the network;
* ``report.md`` — the same sections, with the figures as PNG files beside it
  (``frontier.png``, ``loss_law.png``, ``curves.png``, ``alignment.png``; a figure with nothing
  to show is left out of both pages);
* ``report.json`` — ``{"beyondbp_report": 1, "spec": ..., "analysis": ..., "runs": ...,
  "overfitting": ...}``: the analysis, a one-line summary of every run record and the runs
  whose held-out loss rises late.

The page opens with the decision: the verdict table (one row per rule against the baseline:
class, compute range studied, loss difference at its top with its interval, seeds per cell,
cells whose learning-rate search was capped; :mod:`.study_tables`), the verdict sentences (and
their extrapolated counterparts), then every warning and note in one table (kind, where,
detail: best learning rate at the edge of its grid, runs whose held-out loss rises late, i.e.
overfit, as :mod:`beyondbp.study.overfitting` defines it, ...). Then: run counts by status, the
loss-vs-compute scatter of every run (log-log, one colour per label, best-LR runs filled, the
others hollow, diverged runs as crosses along the top) with each label's fitted frontier
(solid over its runs' compute, dashed where extrapolated) and its bootstrap band, the
fitted-parameter table with intervals (or why a fit was not made), the per-size best-LR table,
the L(N, D) iso-loss contours, learning curves of the best-LR runs (colour: compute, with its
colour bar; a run that rises late crossed at its end), gradient alignment to
backprop over training (``cos/all`` from the runs' diagnostics, where recorded), the diverged,
failed and excluded runs, library versions and hosts, the identification table and distance
heatmaps of a ``beyondbp analyze`` output when one is given (``representations``), and the
spec's text.

Writing is all or nothing: every file goes into a temporary sibling of ``out_dir`` (through
:mod:`beyondbp.files`), which replaces ``out_dir`` only once complete. An existing non-empty
``out_dir`` is replaced only when it holds a previous report and nothing else (its
``.beyondbp-manifest.json`` lists every file the previous report wrote; a file the user added
makes a rerun refuse, naming it) or with ``overwrite=True``.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), so the
caller's pyplot state and backend are never touched, and each figure is cleared once saved; their
tick labels are plain numbers or powers of ten, never an offset or "×10^0"
(:func:`beyondbp.reporting.ticks.tidy_axes`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import files
from ..analysis.scaling import Intervals
from ..jsonable import finite_number as _num
from ..jsonable import plain
from ..study.judgement import StudyVerdicts
from ..study.overfitting import LateRise, rising_runs
from ..study.verdict import fmt_compute, judge_study
from .study_tables import head_blocks
from .ticks import tidy_axes

__all__ = ["REPORT_FILES", "write_report", "render"]

#: The text files every report has (figures come beside them as ``*.png``).
REPORT_FILES = ("report.html", "report.md", "report.json")
_MARKER = "beyondbp_report"
_KIND = "report"  # the kind recorded in the folder's manifest (files.MANIFEST)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.warning { color: #8a4b00; } .verdict { font-size: 1.05em; } .muted { color: #666; }
"""


# -- small helpers ------------------------------------------------------------------------------


def _g(value: Any, digits: int = 4) -> str:
    v = _num(value)
    if v is None:
        return "—"
    if v == int(v) and abs(v) < 1e5:
        return str(int(v))
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return fmt_compute(v) if v > 0 else f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _short(value: Any, top: bool = True) -> str:
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}={_short(v, False)}" for k, v in value.items())
        return inner if top else "{" + inner + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v, False) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    tidy_axes(fig)  # plain tick labels: no offset, no "×10^0"
    fig.tight_layout()
    fig.savefig(buf, format="png")
    fig.clear()
    return buf.getvalue()


def _record_compute(rec: Mapping[str, Any]) -> float | None:
    result = rec.get("result") or {}
    fps = _num(result.get("flops_per_step")) or _num(rec.get("flops_per_step"))
    steps = _num(result.get("steps")) or _num(rec.get("diverged_at_step"))
    if fps and steps:
        return fps * steps
    return _num(rec.get("flops_total"))


# -- figures ------------------------------------------------------------------------------------
def _frontier_figure(analysis: StudyVerdicts, records: Sequence[Mapping[str, Any]]) -> bytes | None:
    runs = analysis.runs
    if not runs:
        return None
    labels = list(analysis.labels)
    colours = _colours(labels + sorted({d.label for d in analysis.diverged} - set(labels)))
    fig = _figure(8.5, 5.5)
    ax = fig.subplots()
    for label in labels:
        c = colours[label]
        best = [r for r in runs if r.label == label and r.best_lr]
        other = [r for r in runs if r.label == label and not r.best_lr]
        ax.scatter([r.C for r in best], [r.loss for r in best], color=c, s=22, alpha=0.85, label=f"{label} (best LR)")
        if other:
            ax.scatter([r.C for r in other], [r.loss for r in other], facecolors="none", edgecolors=c, s=22, alpha=0.45,
                       label=f"{label} (other LRs)")  # fmt: skip
        fits = analysis.fits.get(label)
        curve = fits.frontier.curve if fits is not None and fits.frontier.identified else None
        if curve is not None:
            C = np.array(curve.C, dtype=float)
            est = np.array(curve.estimate, dtype=float)
            low = np.array(curve.low, dtype=float)
            high = np.array(curve.high, dtype=float)
            inside = C <= curve.extrapolated_from * (1 + 1e-9)
            ax.plot(C[inside], est[inside], color=c, lw=1.8)
            k = max(int(inside.sum()) - 1, 0)
            ax.plot(C[k:], est[k:], color=c, lw=1.4, ls="--")
            ax.fill_between(C, low, high, color=c, alpha=0.15, lw=0)
    top = None
    diverged = list(analysis.diverged)
    if diverged:
        by_id = {r.get("id"): r for r in records}
        ylo, yhi = ax.get_ylim()
        top = yhi
        xs = [(_record_compute(by_id.get(d.id, {})), d.label) for d in diverged]
        xs = [(x, lab) for x, lab in xs if x]
        for i, (x, lab) in enumerate(xs):
            ax.scatter([x], [top], marker="x", color=colours.get(lab, "k"), s=40,
                       label="diverged (at top)" if i == 0 else None, clip_on=False)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs, measured)")
    ax.set_ylabel(f"final {_loss_text(analysis)} ({analysis.unit})")
    ax.set_title("Loss vs compute: runs, fitted frontiers L(C) = E + A·C^(−α) and bootstrap bands (dashed: extrapolated)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)


def _loss_law_figure(analysis: StudyVerdicts) -> bytes | None:
    fits = analysis.fits
    fitted = [lab for lab in analysis.labels if lab in fits and fits[lab].loss_law.identified]
    if not fitted:
        return None
    fig = _figure(5.0 * len(fitted), 4.5)
    axes = np.atleast_1d(fig.subplots(1, len(fitted)))
    runs = analysis.runs
    for ax, label in zip(axes, fitted):
        ll = fits[label].loss_law
        f = ll.fit
        (n0, n1), (d0, d1) = ll.N_range, ll.D_range
        N = np.geomspace(n0 / 2, n1 * 2, 80)
        D = np.geomspace(d0 / 2, d1 * 2, 80)
        NN, DD = np.meshgrid(N, D)
        with np.errstate(over="ignore"):  # a far corner of a steep fit overflows to inf: not drawn
            Z = f.E + f.A / NN ** f.alpha + f.B / DD ** f.beta
        cs = ax.contour(NN, DD, Z, levels=10, cmap="viridis")
        ax.clabel(cs, fontsize=7, fmt="%.3g")
        mine = [r for r in runs if r.label == label and r.best_lr]
        sc = ax.scatter([r.N for r in mine], [r.D for r in mine], c=[r.loss for r in mine], cmap="viridis",
                        edgecolors="k", s=30, vmin=float(Z.min()), vmax=float(Z.max()))  # fmt: skip
        fig.colorbar(sc, ax=ax, label="final loss")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel("data seen D")
        ax.set_title(f"{label}: L(N, D) iso-loss", fontsize=10)
    return _png(fig)


def _history_x(entry: Mapping[str, Any]) -> float | None:
    return _num(entry.get("tokens")) if entry.get("tokens") is not None else _num(entry.get("step"))


def _curves_figure(analysis: StudyVerdicts, records: Sequence[Mapping[str, Any]], rising: Sequence[LateRise] = ()) -> bytes | None:
    best = {r.id: r.label for r in analysis.runs if r.best_lr}
    by_label: dict[str, list[Mapping[str, Any]]] = {lab: [] for lab in analysis.labels}
    for rec in records:
        if rec.get("id") in best:
            by_label.setdefault(best[rec.get("id")], []).append(rec)
    shown = [lab for lab in analysis.labels if by_label.get(lab)]
    if not shown:
        return None
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, LogNorm

    cmap = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.9, 256)))  # the bright end is hard to see
    computes = [_num(r.C) for r in analysis.runs if r.best_lr]
    lo, hi = min(computes), max(computes)
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 1.001)
    rises = {r.id for r in rising}
    fig = _figure(min(4.5 * len(shown), 16) + 1.2, 4.0)
    grid = fig.add_gridspec(1, len(shown) + 1, width_ratios=[1.0] * len(shown) + [0.04])
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[0, i], sharey=axes[0]) for i in range(1, len(shown))]
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)
    xname, marked = "step", False
    for ax, label in zip(axes, shown):
        for rec in by_label[label]:
            hist = (rec.get("result") or {}).get("history") or []
            key = "val_loss" if any("val_loss" in h for h in hist) else "test_loss"
            pts = [(_history_x(h), _num(h.get(key))) for h in hist]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if not pts:
                continue
            if any(h.get("tokens") is not None for h in hist):
                xname = "tokens"
            colour = cmap(norm(_record_compute(rec) or lo))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, lw=1, marker=".", ms=3, alpha=0.8)
            if rec.get("id") in rises:  # rises late: a cross at its final point
                ax.scatter([pts[-1][0]], [pts[-1][1]], marker="x", color="#c00", s=36, zorder=3,
                           label=None if marked else "loss rises late (overfitting)")  # fmt: skip
                marked = True
        ax.set_title(f"{label} (best-LR runs)", fontsize=9)
        ax.set_xlabel(xname)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    if marked:
        axes[0].legend(fontsize=7)
    axes[0].set_ylabel(f"{_loss_text(analysis)} ({analysis.unit})")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=fig.add_subplot(grid[0, -1]), label="training compute C (FLOPs)")
    return _png(fig)


def _alignment_series(rec: Mapping[str, Any]) -> list[tuple[float, float]]:
    out = []
    for h in (rec.get("result") or {}).get("history") or []:
        diag = h.get("diagnostics") or {}
        v = _num(diag.get("cos/all"))
        if v is None:
            layers = [_num(x) for k, x in diag.items() if k.startswith("cos/")]
            layers = [x for x in layers if x is not None]
            v = sum(layers) / len(layers) if layers else None
        x = _history_x(h)
        if v is not None and x is not None:
            out.append((x, v))
    return out


def _alignment_figure(analysis: StudyVerdicts, records: Sequence[Mapping[str, Any]]) -> bytes | None:
    label_of = {r.id: r.label for r in analysis.runs if r.best_lr}
    series = [(label_of[r.get("id")], _alignment_series(r)) for r in records if r.get("id") in label_of]
    series = [(lab, s) for lab, s in series if s]
    if not series:
        return None
    colours = _colours(list(analysis.labels))
    fig = _figure(8.0, 4.5)
    ax = fig.subplots()
    seen: set[str] = set()
    tokens = any(h.get("tokens") is not None for r in records for h in (r.get("result") or {}).get("history") or [])
    for lab, s in series:
        ax.plot([p[0] for p in s], [p[1] for p in s], color=colours.get(lab, "k"), lw=1, marker=".", ms=3, alpha=0.7,
                label=None if lab in seen else lab)  # fmt: skip
        seen.add(lab)
    ax.axhline(0.0, color="#999", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("tokens" if tokens else "step")
    ax.set_ylabel("cosine to the backprop gradient (cos/all)")
    ax.set_title("Gradient alignment to backprop over training (best-LR runs)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# -- content ------------------------------------------------------------------------------------
# A report is a list of blocks rendered twice (HTML and Markdown): ("h1"|"h2"|"p"|"warn", text),
# ("ul", [text]), ("table", headers, rows), ("img", file name, alt text, png bytes), ("pre", text).


#: Marks an estimate (the fit to all points) that lies outside its own bootstrap interval.
OUTSIDE_MARK = "†"


def _ordered(texts: Sequence[str]) -> bool:
    """Whether printed numbers read low ≤ estimate ≤ high (or one of them is not a number)."""
    try:
        est, lo, hi = (float(t) for t in texts)
    except ValueError:
        return True
    return lo <= est <= hi


def _param(iv: Intervals, name: str) -> str:
    """``estimate (low – high)``. An estimate outside its interval is marked apart with
    :data:`OUTSIDE_MARK`; one inside is printed with as many digits as it takes to read inside
    (a short form can round it past a bound)."""
    est, lo, hi = _num(iv.estimate[name]), _num(iv.low[name]), _num(iv.high[name])
    texts = [_g(est), _g(lo), _g(hi)]
    if est is not None and lo is not None and hi is not None:
        if not lo <= est <= hi:
            texts[0] += OUTSIDE_MARK
        else:
            digits = 4
            while not _ordered(texts) and digits < 17:
                texts = [f"{v:.{digits}g}" for v in (est, lo, hi)]
                digits += 1
    return f"{texts[0]} ({texts[1]} – {texts[2]})"


def _fit_rows(analysis: StudyVerdicts) -> tuple[list[list[str]], list[str], list[list[str]]]:
    """The identified fits' rows, why the others are not reported (not fitted, or fitted but "not
    identified: <reason>"), and the predictive check of every identified fit."""
    rows, reasons, checks = [], [], []
    for label in analysis.labels:
        fr, ll = analysis.fits[label].frontier, analysis.fits[label].loss_law
        if fr.fitted and not fr.identified:
            reasons.append(f"{label}, frontier L(C): not identified: {fr.identification.why}")
        if fr.fitted and fr.identified:
            iv = fr.intervals
            rows.append([label, "L(C) = E + A·C^(−α)", _param(iv, "E"), _param(iv, "A"), _param(iv, "alpha"), "", "",
                         str(fr.fit.n_points), f"{fr.n_resamples} × {fr.resampled}"])  # fmt: skip
        elif not fr.fitted:
            reasons.append(f"{label}, frontier L(C): {fr.reason}")
        if ll.fitted and not ll.identified:
            reasons.append(f"{label}, L(N, D): not identified: {ll.identification.why}")
        if ll.fitted and ll.identified:
            iv = ll.intervals
            rows.append([label, "L(N, D) = E + A/N^α + B/D^β", _param(iv, "E"), _param(iv, "A"), _param(iv, "alpha"),
                         _param(iv, "B"), _param(iv, "beta"), str(ll.fit.n_points),
                         f"{ll.n_resamples} × {ll.resampled}"])  # fmt: skip
        elif not ll.fitted:
            reasons.append(f"{label}, L(N, D): {ll.reason}")
        for law, res in (("L(C)", fr), ("L(N, D)", ll)):
            if res.fitted and res.identified:
                p = res.prediction
                if p is not None and p.passed is not None and p.error is not None:
                    err = f"error {_g(p.error, 3)} ({_g(p.low, 3)} – {_g(p.high, 3)}), {100 * p.relative_error:.2g}%"
                    verdict = "predicted" if p.passed else "not predicted: not used for extrapolation"
                    checks.append([label, law, p.held_out, _g(p.observed), _g(p.predicted), err, verdict])
                else:
                    checks.append([label, law, p.held_out if p else "—", "—", "—", "—",
                                   f"not checked ({p.why if p else 'no check'}): not used for extrapolation"])
    return rows, reasons, checks


def _loss_text(analysis: StudyVerdicts) -> str:
    """The loss's name as the report has always printed it (a mixture prints as a list)."""
    return analysis.loss if isinstance(analysis.loss, str) else str(list(analysis.loss))


def _interval_text(entry: Mapping[str, Any]) -> str:
    iv = entry.get("interval") or [None, None]
    return f"{_g(entry.get('accuracy'), 2)} [{_g(iv[0], 2)}, {_g(iv[1], 2)}]"


def _representation_blocks(result: Mapping[str, Any], figures: Mapping[str, bytes]) -> list[tuple]:
    """The section a ``beyondbp analyze`` output adds: its identification table and the
    per-layer heatmap grids (figures ``heatmaps_<layer>.png``, renamed ``representations_*``)."""
    out: list[tuple] = [("h2", "Representations")]
    nets = result.get("networks") or []
    settings = result.get("settings") or {}
    out.append(("p", (
        f"From `beyondbp analyze`: {len(nets)} networks compared layer by layer on {settings.get('stimuli')} test "
        "stimuli. Identification accuracy: is the nearest other network (nearest neighbour) or the best-scoring rule "
        "(reference identification, Han et al. 2023) the network's own rule? Intervals resample the recordings by "
        "seed; chance in its own column."
    )))  # fmt: skip
    rows = []
    for measure, per_layer in (result.get("identification") or {}).items():
        for layer, r in per_layer.items():
            rows.append([measure, layer, _interval_text(r["nn"]), _g(r["nn"].get("chance"), 2),
                         _interval_text(r["reference"]), _g(r["reference"].get("chance"), 2)])
    if rows:
        out.append(("table", ["measure", "layer", "nearest neighbour", "chance", "reference", "chance"], rows))
    for layer in result.get("layers") or []:
        name = f"heatmaps_{layer}.png"
        if name in figures:
            out.append(("img", f"representations_{layer}.png", f"Network x network distances of every measure, {layer}",
                        figures[name]))
    return out


def _blocks(spec: Any, records: Sequence[Mapping[str, Any]], analysis: StudyVerdicts, figures: Mapping[str, bytes],
            representations: tuple[Mapping[str, Any], Mapping[str, bytes]] | None = None,
            rising: Sequence[LateRise] = ()) -> list[tuple]:
    name = getattr(spec, "name", None) or "study"
    out: list[tuple] = [("h1", f"Study report: {name}")]
    desc = getattr(spec, "description", "") or ""
    if desc:
        out.append(("p", desc))
    level = analysis.settings["level"]
    out.append(("p", (
        f"{analysis.n_records} run records; losses are the final {_loss_text(analysis)} "
        f"({analysis.unit}); compute is measured training FLOPs (FLOPs per step × steps), evaluation not "
        f"included; intervals are {100 * level:g}% bootstrap intervals over seeds ({analysis.settings['n_bootstrap']} resamples); "
        f"baseline: {analysis.baseline}."
    )))  # fmt: skip

    out += head_blocks(analysis, rising)

    out.append(("h2", "Runs by status"))
    counts = analysis.counts
    order = ["done", "diverged", "failed", "running", "pending"]
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    out.append(("table", ["status", "runs"], [[k, str(counts[k])] for k in keys] + [["total", str(sum(counts.values()))]]))

    out.append(("h2", "Loss vs compute"))
    if "frontier.png" in figures:
        out.append(("img", "frontier.png", "Loss vs compute of every run with fitted frontiers", figures["frontier.png"]))
    else:
        out.append(("p", "No finished run to plot."))

    out.append(("h2", "Fitted parameters"))
    rows, reasons, checks = _fit_rows(analysis)
    if rows:
        out.append(("table", ["label", "law", "E", "A", "α", "B", "β", "points", "bootstrap"], rows))
        out.append(("p", f"Each cell: estimate (fit to all points) and the {100 * level:g}% bootstrap interval."))
        if any(OUTSIDE_MARK in cell for row in rows for cell in row):
            out.append(("p", f"{OUTSIDE_MARK} The fit to all points lies outside its own bootstrap interval: the "
                             "resampled refits settle elsewhere, so that parameter is biased or poorly pinned down by "
                             "the data; the estimate and the interval do not describe one fit."))
    if reasons:
        out.append(("ul", ["Not fitted — " + r for r in reasons]))
    out.append(("p", "A fit is reported only when it is identified: exponents in (0, 3], 0 ≤ E < the best observed "
                     "loss, coefficients within reach of an exponent ≤ 3, finite intervals, exponent intervals at most "
                     "2× their estimate wide, at least 3 distinct computes (L(C)) or 3 × 3 sizes and budgets (L(N, D)). "
                     "A label whose L(C) is not identified is judged on its frontier points themselves."))
    if checks:
        out.append(("table", ["label", "law", "held out", "observed", "predicted", "error (interval), relative", "check"], checks))
        out.append(("p", "Predictive check: each law refitted without its largest compute (L(C)) or size (L(N, D)) "
                         "predicts the held-out points; it passes when the error's interval contains 0 or the error is "
                         "at most 2% of the observed loss. Only a law that passes is used for extrapolation."))

    out.append(("h2", "Best learning rate per size and budget"))
    table = analysis.best_lr
    if table:
        body = []
        for r in table:
            tried = ", ".join(f"{x.lr:g}: {x.mean_loss:.4g}" + (f" ({x.n_diverged} diverged)" if x.n_diverged else "")
                              for x in r.mean_loss_by_lr if x.lr is not None)  # fmt: skip
            edge = f"at the {r.edge} edge" if r.edge else ("single LR" if not r.selected else "")
            edge = "; ".join(x for x in (r.search, edge) if x)  # the search's cell state, with [search]
            body.append([r.label, _short(r.axes) or "—", _g(r.N), _g(r.D), fmt_compute(r.C),
                         _g(r.best_lr), f"{r.mean_loss:.4f}", str(r.n_seeds), tried, edge])  # fmt: skip
        out.append(("table", ["label", "other axes", "N", "D", "C (FLOPs)", "best lr", "mean loss", "seeds", "mean loss by lr", "warning"], body))
    else:
        out.append(("p", "No finished runs."))

    out.append(("h2", "L(N, D) iso-loss contours"))
    if "loss_law.png" in figures:
        out.append(("img", "loss_law.png", "Iso-loss contours of the fitted L(N, D) per label", figures["loss_law.png"]))
    else:
        out.append(("p", "No L(N, D) fit to draw (see the reasons under Fitted parameters)."))

    out.append(("h2", "Learning curves"))
    if "curves.png" in figures:
        out.append(("img", "curves.png", "Final-metric loss over training of the best-LR runs", figures["curves.png"]))
    else:
        out.append(("p", "No evaluation history recorded."))

    out.append(("h2", "Gradient alignment to backprop"))
    if "alignment.png" in figures:
        out.append(("img", "alignment.png", "Cosine between each rule's update and the backprop gradient over training", figures["alignment.png"]))
    else:
        out.append(("p", "No run recorded alignment diagnostics (set diagnostics = true in the spec's [execution] table to record them)."))

    problems = []
    for d in analysis.diverged:
        problems.append([d.label, "diverged", _short(d.axes), f"at step {d.diverged_at_step}", str(d.id)])
    for f in analysis.failed:
        problems.append([f.label, "failed", _short(f.axes), str(f.error or "")[:300], str(f.id)])
    for e in analysis.excluded:
        problems.append([e.label, "excluded", "", e.reason, str(e.id)])
    if problems:
        out.append(("h2", "Diverged, failed and excluded runs"))
        out.append(("table", ["label", "status", "axes", "detail", "id"], problems))

    out.append(("h2", "Versions and hosts"))
    envs = Counter()
    for rec in records:
        v = rec.get("versions") or {}
        envs[(str(rec.get("host") or "—"), str(v.get("beyondbp", "—")), str(v.get("torch", "—")), str(v.get("python", "—")))] += 1
    out.append(("table", ["host", "beyondbp", "torch", "python", "runs"], [[*k, str(n)] for k, n in sorted(envs.items())]))

    if representations is not None:
        out.extend(_representation_blocks(*representations))

    text = getattr(spec, "text", None)
    if text:
        out.append(("h2", "The spec"))
        path = getattr(spec, "path", None)
        if path:
            out.append(("p", f"From {path}:"))
        out.append(("pre", text))
    return out


def _html(blocks: Sequence[tuple], title: str) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]  # fmt: skip
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif kind == "warn":
            parts.append(f'<p class="warning">{e(b[1])}</p>')
        elif kind == "ul":
            parts.append("<ul>" + "".join(f'<li class="verdict">{e(x)}</li>' for x in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(b[3]).decode("ascii")
            parts.append(f'<img alt="{e(b[2])}" src="data:image/png;base64,{data}">')
        elif kind == "pre":
            parts.append(f"<pre>{e(b[1])}</pre>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(blocks: Sequence[tuple]) -> str:
    parts = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            parts.append(f"# {b[1]}")
        elif kind == "h2":
            parts.append(f"## {b[1]}")
        elif kind == "p":
            parts.append(b[1])
        elif kind == "warn":
            parts.append(f"> **{b[1]}**")
        elif kind == "ul":
            parts.append("\n".join(f"- {x}" for x in b[1]))
        elif kind == "table":
            lines = ["| " + " | ".join(_md_cell(h) for h in b[1]) + " |", "|" + "|".join("---" for _ in b[1]) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
            parts.append("\n".join(lines))
        elif kind == "img":
            parts.append(f"![{b[2]}]({b[1]})")
        elif kind == "pre":
            fence = "````" if "```" in b[1] else "```"
            parts.append(f"{fence}toml\n{b[1].rstrip()}\n{fence}")
    return "\n\n".join(parts) + "\n"


def _summary(rec: Mapping[str, Any]) -> dict[str, Any]:
    result = rec.get("result") or {}
    final = result.get("final") or {}
    return {
        "id": rec.get("id"), "status": rec.get("status"), "label": rec.get("label"), "axes": rec.get("axes") or {},
        "seed": rec.get("seed"), "n_params": rec.get("n_params"), "flops_per_step": rec.get("flops_per_step"),
        "flops_total": rec.get("flops_total"), "eval_flops": rec.get("eval_flops"),
        "final": {k: v for k, v in final.items() if k != "diagnostics"}, "error": rec.get("error"),
        "diverged_at_step": rec.get("diverged_at_step"), "attempts": rec.get("attempts"), "host": rec.get("host"),
        "versions": rec.get("versions"), "wall_time": rec.get("wall_time"),
        "started_at": rec.get("started_at"), "finished_at": rec.get("finished_at"),
    }  # fmt: skip


def render(spec: Any, records: Sequence[Mapping[str, Any]], analysis: StudyVerdicts,
           representations: tuple[Mapping[str, Any], Mapping[str, bytes]] | None = None) -> dict[str, bytes]:
    """Every file of the report, name -> bytes, in memory (what :func:`write_report` writes);
    ``representations`` = (result, figures) of a ``beyondbp analyze`` output adds its section."""
    figures: dict[str, bytes] = {}
    rising = rising_runs(records)
    for name, draw in (
        ("frontier.png", lambda: _frontier_figure(analysis, records)),
        ("loss_law.png", lambda: _loss_law_figure(analysis)),
        ("curves.png", lambda: _curves_figure(analysis, records, rising)),
        ("alignment.png", lambda: _alignment_figure(analysis, records)),
    ):
        png = draw()
        if png is not None:
            figures[name] = png
    blocks = _blocks(spec, records, analysis, figures, representations, rising)
    for b in blocks:
        if b[0] == "img" and b[1].startswith("representations_"):
            figures[b[1]] = b[3]
    title = f"Study report: {getattr(spec, 'name', None) or 'study'}"
    payload = plain({
        _MARKER: 1,
        "spec": {"name": getattr(spec, "name", None), "description": getattr(spec, "description", None),
                 "path": str(getattr(spec, "path", "") or "") or None, "text": getattr(spec, "text", None)},
        "analysis": analysis.to_dict(),
        "runs": [_summary(r) for r in records],
        "overfitting": [r.to_dict() for r in rising],
        "figures": sorted(figures),
    })  # fmt: skip
    out = {
        "report.html": _html(blocks, title).encode("utf-8"),
        "report.md": _markdown(blocks).encode("utf-8"),
        "report.json": (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode("utf-8"),
    }
    out.update(figures)
    return out


def _check_out_dir(out: Path, overwrite: bool) -> bool:
    """Refuse a symbolic link, a file, the current directory or one containing it, or a
    non-empty directory that is not a previous report (unless ``overwrite``); return whether an
    existing directory is to be replaced."""
    return files.check_output_directory(out, overwrite, "report directory", "report", _KIND)


def write_report(
    spec: Any,
    records: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    analysis: StudyVerdicts | None = None,
    overwrite: bool = False,
    analyze_options: Mapping[str, Any] | None = None,
    representations: tuple[Mapping[str, Any], Mapping[str, bytes]] | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``report.md``, ``report.json`` and the figures into ``out_dir``, all
    or nothing, and return name -> path of every file written. ``analysis`` defaults to
    ``judge_study(records, **analyze_options)``. A non-empty ``out_dir`` is replaced only when it
    holds a previous report, or with ``overwrite=True``; anything else raises ``ConfigError``
    before any work is done."""
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    records = list(records)
    if analysis is None:
        analysis = judge_study(records, **dict(analyze_options or {}))
    contents = render(spec, records, analysis, representations)
    files.write_directory(out, contents, overwrite=overwrite, kind=_KIND, what="report directory", holds="report")
    return {name: out / name for name in contents}
