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
overfit, as :mod:`beyondbp.study.overfitting` defines it, counted once per cell, ...). Then: run counts by status, the
loss-vs-compute scatter of every run (log-log, one colour per label, best-LR runs filled, the
others hollow, diverged runs as crosses along the top) with each label's fitted frontier
(solid over its runs' compute, dashed where extrapolated) and its bootstrap band, the
fitted-parameter table with intervals (or why a fit was not made), the per-size best-LR table,
the L(N, D) iso-loss contours, learning curves of the best-LR runs (colour: compute, with its
colour bar; a run that rises late crossed at its end), gradient alignment to
backprop over training (``cos/all`` from the runs' diagnostics, where recorded), the diverged,
failed and excluded runs, every run that overfits (one by one, collapsed), library versions and
hosts, the identification table and distance heatmaps of a ``beyondbp analyze`` output when one
is given (``representations``), and the spec's text.

This module draws the figures and writes the files; the blocks of content and their HTML and
Markdown are :mod:`beyondbp.reporting.study_page`'s.

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

import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import files
from ..jsonable import finite_number as _num
from ..jsonable import plain
from ..study.judgement import StudyVerdicts
from ..study.overfitting import LateRise, rising_runs
from ..study.verdict import judge_study
from .study_page import OUTSIDE_MARK as OUTSIDE_MARK  # re-exported: the report's names stay importable here
from .study_page import _param as _param
from .study_page import html_page, loss_text, markdown_page, page_blocks
from .ticks import tidy_axes

__all__ = ["REPORT_FILES", "write_report", "render"]

#: The text files every report has (figures come beside them as ``*.png``).
REPORT_FILES = ("report.html", "report.md", "report.json")
_MARKER = "beyondbp_report"
_KIND = "report"  # the kind recorded in the folder's manifest (files.MANIFEST)


# -- small helpers ------------------------------------------------------------------------------
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
    ax.set_ylabel(f"final {loss_text(analysis)} ({analysis.unit})")
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
    axes[0].set_ylabel(f"{loss_text(analysis)} ({analysis.unit})")
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
    blocks = page_blocks(spec, records, analysis, figures, representations, rising)
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
        "report.html": html_page(blocks, title).encode("utf-8"),
        "report.md": markdown_page(blocks).encode("utf-8"),
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
