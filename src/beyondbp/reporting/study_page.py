"""The content of a study's report (:mod:`beyondbp.reporting.study`), and that content as HTML
and as Markdown.

A report is a list of blocks (:func:`page_blocks`), rendered twice: :func:`html_page` (one
self-contained page, the style sheet inline, the figures as ``data:`` URIs, no script) and
:func:`markdown_page` (the figures as PNG files beside it). The blocks are the verdict table,
verdict sentences and warnings table (:func:`beyondbp.reporting.study_tables.head_blocks`), the
run counts, the figures, the fitted parameters with their identification and predictive checks,
the best learning rate per cell, the diverged, failed and excluded runs, versions and hosts,
the representations of a ``beyondbp analyze`` output when one is given, and the spec's text.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from typing import Any, Mapping, Sequence

from ..analysis.scaling import Intervals
from ..jsonable import finite_number as _num
from ..study.judgement import StudyVerdicts
from ..study.overfitting import LateRise
from ..study.verdict import fmt_compute
from .study_tables import RISING_RUN_HEADERS, head_blocks, rising_run_rows

__all__ = ["OUTSIDE_MARK", "html_page", "loss_text", "markdown_page", "page_blocks"]

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


# -- content ------------------------------------------------------------------------------------
# A report is a list of blocks rendered twice (HTML and Markdown): ("h1"|"h2"|"p"|"warn", text),
# ("ul", [text]), ("table", headers, rows), ("details", summary, headers, rows) (a table shown
# collapsed), ("img", file name, alt text, png bytes), ("pre", text).


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


def loss_text(analysis: StudyVerdicts) -> str:
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


def best_lr_blocks(table: Sequence[Any]) -> list[tuple]:
    """The best-LR table's blocks: a row per cell, each rate's mean over the seeds every rate of
    the cell has (what ranks them, named where some rate has more seeds) and a note saying so."""
    out: list[tuple] = []
    if table:
        body = []
        for r in table:
            shown = [x for x in r.mean_loss_by_lr if x.lr is not None]
            tried = ", ".join(f"{x.lr:g}: {x.mean_loss if x.ranked_loss is None else x.ranked_loss:.4g}"
                              + (f" ({x.n_diverged} diverged)" if x.n_diverged else "") for x in shown)  # fmt: skip
            if r.ranked_seeds:
                tried += f" (on seed{'s' if len(r.ranked_seeds) > 1 else ''} {', '.join(r.ranked_seeds)})"
            edge = f"at the {r.edge} edge" if r.edge else ("single LR" if not r.selected else "")
            edge = "; ".join(x for x in (r.search, edge) if x)  # the search's cell state, with [search]
            body.append([r.label, _short(r.axes) or "—", _g(r.N), _g(r.D), fmt_compute(r.C),
                         _g(r.best_lr), f"{r.mean_loss:.4f}", str(r.n_seeds), tried, edge])  # fmt: skip
        out.append(("table", ["label", "other axes", "N", "D", "C (FLOPs)", "best lr", "mean loss", "seeds", "mean loss by lr", "warning"], body))
        if any(r.ranked_seeds for r in table):
            out.append(("p", "Mean loss: the best rate's mean over all its seeds. Mean loss by lr: each rate's mean over "
                             "the seeds every rate of the cell has (named in brackets where some rate has more, e.g. the "
                             "seeds added at the best rate only), which is what ranks the rates."))
    else:
        out.append(("p", "No finished runs."))
    return out


def page_blocks(spec: Any, records: Sequence[Mapping[str, Any]], analysis: StudyVerdicts, figures: Mapping[str, bytes],
            representations: tuple[Mapping[str, Any], Mapping[str, bytes]] | None = None,
            rising: Sequence[LateRise] = ()) -> list[tuple]:
    name = getattr(spec, "name", None) or "study"
    out: list[tuple] = [("h1", f"Study report: {name}")]
    desc = getattr(spec, "description", "") or ""
    if desc:
        out.append(("p", desc))
    level = analysis.settings["level"]
    out.append(("p", (
        f"{analysis.n_records} run record{'s' if analysis.n_records != 1 else ''}; losses are the final {loss_text(analysis)} "
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
    out.extend(best_lr_blocks(analysis.best_lr))

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

    if rising:
        out.append(("h2", "Runs that overfit"))
        out.append(("p", f"{len(rising)} done run(s) whose held-out loss rises late (the warnings table counts them by "
                         "cell), one by one; report.json lists them under \"overfitting\"."))
        out.append(("details", f"Every run that overfits ({len(rising)})", RISING_RUN_HEADERS, rising_run_rows(rising)))

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


def html_page(blocks: Sequence[tuple], title: str) -> str:
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
        elif kind in ("table", "details"):
            headers, body = b[-2], b[-1]
            head = "".join(f"<th>{e(h)}</th>" for h in headers)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            parts.append(table if kind == "table" else f"<details><summary>{e(b[1])}</summary>{table}</details>")
        elif kind == "img":
            data = base64.b64encode(b[3]).decode("ascii")
            parts.append(f'<img alt="{e(b[2])}" src="data:image/png;base64,{data}">')
        elif kind == "pre":
            parts.append(f"<pre>{e(b[1])}</pre>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_page(blocks: Sequence[tuple]) -> str:
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
        elif kind in ("table", "details"):
            headers, body = b[-2], b[-1]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
            table = "\n".join(lines)
            parts.append(table if kind == "table" else f"<details><summary>{html.escape(b[1])}</summary>\n\n{table}\n\n</details>")
        elif kind == "img":
            parts.append(f"![{b[2]}]({b[1]})")
        elif kind == "pre":
            fence = "````" if "```" in b[1] else "```"
            parts.append(f"{fence}toml\n{b[1].rstrip()}\n{fence}")
    return "\n\n".join(parts) + "\n"
