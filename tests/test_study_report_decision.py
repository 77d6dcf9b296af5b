"""Issue 23 §4, the report as a decision: the verdict table first, every warning in one table,
runs whose held-out loss rises late flagged (and marked in the curves), a colour bar on the
curves, and tick labels without offsets or "×10^0"."""

import dataclasses
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from beyondbp.reporting import study as report_mod
from beyondbp.reporting.study import write_report
from beyondbp.reporting.study_tables import VERDICT_HEADERS, capped_cells, verdict_rows, warning_rows
from beyondbp.reporting.ticks import tick_text, tidy_axes
from beyondbp.study.overfitting import late_rise, rising_runs
from beyondbp.study.spec import load_spec
from beyondbp.study.verdict import judge_study

sys.path.insert(0, str(Path(__file__).parent))
from test_study_analysis import records_for  # noqa: E402
from test_study_report import SPEC, STARTS  # noqa: E402

#: Runs (by id) whose held-out loss falls, then rises 30 % by the end.
RISING = {"0000000000000000", "0000000000000005", "00000000000003e8"}


def small_loss_records():
    """A study whose losses lie between 1 and 10 nats (a log axis within one decade, where
    matplotlib's labels read "4×10^0"), with three runs whose loss rises late."""
    rng = np.random.default_rng(1)
    bp = lambda N, D, C: 1.3 + 40.0 / N**0.35 + 60.0 / D**0.3  # noqa: E731
    dfa = lambda N, D, C: 1.6 + 90.0 / N**0.4 + 70.0 / D**0.28  # noqa: E731
    lrs = (1e-3, 1e-2)
    recs = records_for("backprop", bp, lrs=lrs, rng=rng, lr_loss=lambda lr: 0.2 * (lr == 1e-2))
    recs += records_for("dfa", dfa, lrs=lrs, rng=rng, start=1000, lr_loss=lambda lr: 0.2 * (lr == 1e-3))
    for r in recs:
        steps, loss = r["result"]["steps"], r["result"]["final"]["test_loss"]
        at = [steps * k // 8 for k in range(1, 9)]
        if r["id"] in RISING:  # the minimum at evaluation 3 of 8, the final 30 % above it
            ys = [loss * f for f in (1.6, 1.2, 1 / 1.3, 0.8, 0.85, 0.9, 0.95, 1.0)]
        else:
            ys = [loss * (1 + 0.5 / (i + 1) - 0.5 / 8) for i in range(8)]
        cos = 1.0 if r["label"] == "backprop" else 0.3
        r["result"]["history"] = [{"epoch": i + 1, "step": s, "test_loss": y, "diagnostics": {"cos/all": cos}}
                                  for i, (s, y) in enumerate(zip(at, ys))]  # fmt: skip
    return recs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    recs = small_loss_records()
    return load_spec(path), recs, judge_study(recs, n_bootstrap=10, loss_law_starts=STARTS)


@pytest.fixture(scope="module")
def figures(study, tmp_path_factory):
    """Every figure of the report, caught as drawn (tick labels, colour bars, legends), and the report."""
    spec, recs, analysis = study
    caught = {}
    original = report_mod._png

    def spy(fig):
        clear = fig.clear

        def read_then_clear(*args, **kwargs):
            caught[len(caught)] = _read(fig)
            return clear(*args, **kwargs)

        fig.clear = read_then_clear
        return original(fig)

    report_mod._png = spy
    try:
        out = tmp_path_factory.mktemp("rep") / "report"
        write_report(spec, recs, out, analysis=analysis)
    finally:
        report_mod._png = original
    return caught, out


def _read(fig):
    """What a drawn figure shows: per axes its tick labels (major and minor), offset texts,
    colour-bar label and legend texts."""
    out = []
    for ax in fig.axes:
        labels, offsets = [], []
        for axis in (ax.xaxis, ax.yaxis):
            labels += [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_text()]
            offsets.append(axis.get_offset_text().get_text())
        legend = ax.get_legend()
        out.append({"labels": labels, "offsets": offsets, "colorbar": getattr(ax, "_colorbar", None) is not None,
                    "ylabel": ax.get_ylabel(), "legend": [t.get_text() for t in legend.get_texts()] if legend else []})
    return out


# -- 1. the verdict table, first ---------------------------------------------------------------
def test_the_verdict_table_comes_first(figures, study):
    _, out = figures
    _, _, analysis = study
    html = (out / "report.html").read_text()
    first_table = html.index("<table>")
    assert first_table < html.index("<img") and first_table < html.index("Warnings and notes")
    head = "".join(f"<th>{h}</th>" for h in VERDICT_HEADERS)
    assert html[first_table:].startswith(f"<table><thead><tr>{head}</tr></thead>")
    rows = verdict_rows(analysis)
    v = analysis.verdicts["dfa"]
    assert rows == [[
        "dfa vs backprop", v.cls, rows[0][2], rows[0][3], "3", "—",
    ]]
    assert rows[0][2].count("e") == 2 and " – " in rows[0][2]  # the compute range studied
    m, lo, hi = v.studied.median[-1], v.studied.low[-1], v.studied.high[-1]
    assert rows[0][3].startswith(f"{m:+.3g} ({lo:+.3g} to {hi:+.3g}) nats at ")
    md = (out / "report.md").read_text()
    assert md.index("| rule vs baseline | class |") < md.index("![")


def test_undecided_is_written_plainly_and_capped_cells_light_up(study):
    _, _, analysis = study
    v = analysis.verdicts["dfa"]
    undecided = dataclasses.replace(v, cls="undecided", point_estimate_class="D")
    changed = dataclasses.replace(analysis, verdicts={"dfa": undecided})
    assert verdict_rows(changed)[0][1] == "undecided (point estimates: D)"
    assert capped_cells(v, analysis) is None  # no learning-rate search recorded: "—"
    assert capped_cells(SimpleNamespace(capped_cells=("a", "b")), analysis) == ("a", "b")
    rows = [SimpleNamespace(label=r.label, state="capped at 4 rounds" if i < 3 else "bracketed", n_seeds=r.n_seeds)
            for i, r in enumerate(analysis.best_lr)]
    searched = SimpleNamespace(best_lr=rows)
    assert len(capped_cells(v, searched)) == 3


# -- 2. warnings as one table -------------------------------------------------------------------
def test_warnings_are_one_table_with_nothing_dropped(figures, study):
    _, out = figures
    _, recs, analysis = study
    html = (out / "report.html").read_text()
    assert 'class="warning"' not in html  # no paragraph per warning
    rising = rising_runs(recs)
    rows = warning_rows(analysis, rising)
    cells = {(r.label, r.axes["model_options"]["widths"][0], r.axes["steps"]) for r in rising}
    assert len(cells) == 2  # runs 0 and 5 share a cell: one row counts both
    assert len(rows) == len(analysis.warnings) + len(cells) + len(analysis.notes)
    edge = [r for r in rows if r[0] == "learning rate at grid edge"]
    assert edge and len(edge) == sum(1 for b in analysis.best_lr if b.edge)
    # the same words: "where: detail" is the warning, cell by cell
    assert [f"{w}: {d}" if w != "study" else d for k, w, d in rows[: len(analysis.warnings)]] == list(analysis.warnings)
    section = html.split("<h2>Warnings and notes</h2>")[1].split("<h2>")[0]
    assert section.count("<table>") == 1 and section.count("<tr>") == len(rows) + 1
    for note in analysis.notes:
        assert note[1:] in section


# -- 3. overfitting ----------------------------------------------------------------------------
def test_late_rise_definition():
    assert late_rise([3.0, 2.0, 1.0, 1.1, 1.2]) == 2  # minimum at 3 of 5, final 20 % above
    assert late_rise([3.0, 2.0, 1.5, 1.2, 1.0]) is None  # falls to the end
    assert late_rise([3.0, 2.0, 1.0, 1.02, 1.04]) is None  # rises 4 %: noise, not flagged
    assert late_rise([5, 4, 3, 2, 1.5, 1.3, 1.2, 1.0, 1.2]) is None  # the minimum in the last quarter: too late to tell
    assert late_rise([5, 4, 3, 2, 1.5, 1.3, 1.0, 1.1, 1.2]) == 6
    assert late_rise([1.0, 2.0]) is None  # too few evaluations
    assert late_rise([3.0, float("nan"), 1.0, 2.0]) is None


def test_runs_that_rise_late_are_flagged_and_marked(figures, study):
    caught, out = figures
    _, recs, analysis = study
    rising = rising_runs(recs)
    assert {r.id for r in rising} == RISING
    assert all(abs(r.rise - 0.3) < 1e-9 and r.at == 2 and r.n_evaluations == 8 for r in rising)
    md = (out / "report.md").read_text()
    flagged = [line for line in md.splitlines() if line.startswith("| overfitting |")]
    assert len(flagged) == 2 and all("30% above its minimum" in line for line in flagged)  # one row per cell
    assert sorted(line.split(" | ")[2].split(" run")[0] for line in flagged) == ["1 of 6", "2 of 6"]
    payload = json.loads((out / "report.json").read_text())
    assert {r["id"] for r in payload["overfitting"]} == RISING  # every run, in the JSON
    html = (out / "report.html").read_text()
    listed = html.split(f"<details><summary>Every run that overfits ({len(RISING)})</summary>")[1].split("</details>")[0]
    assert all(i in listed for i in RISING) and listed.count("<tr>") == len(RISING) + 1  # and collapsed in the page
    best = {r.id for r in analysis.runs if r.best_lr}
    legends = [t for axes in caught.values() for a in axes for t in a["legend"]]
    assert ("loss rises late (overfitting)" in legends) == bool(RISING & best)
    assert RISING & best  # the fixture has a best-LR run that rises


# -- 4. colour bars ----------------------------------------------------------------------------
def test_the_curves_have_a_colour_bar(figures):
    caught, _ = figures
    bars = [a for axes in caught.values() for a in axes if a["colorbar"]]
    assert any(a["ylabel"] == "training compute C (FLOPs)" for a in bars)


# -- 5. tick labels ----------------------------------------------------------------------------
def _plain_or_far(text):
    """A plain number, or a power of ten of exponent at least 3 away from 0."""
    found = re.search(r"10\^\{(−|-)?(\d+)\}", text)
    if found:
        return int(found.group(2)) >= 3
    float(text.replace("\u2212", "-"))
    return True


def test_no_offset_or_times_ten_to_the_zero_tick_labels(figures):
    caught, _ = figures
    assert len(caught) == 4, [a["ylabel"] for axes in caught.values() for a in axes]  # frontier, loss law, curves, alignment
    labels = [t for axes in caught.values() for a in axes for t in a["labels"]]
    offsets = [t for axes in caught.values() for a in axes for t in a["offsets"]]
    assert labels and offsets
    assert [t for t in labels if "10^{0}" in t or not _plain_or_far(t)] == []
    assert [t for t in offsets if t] == []


def test_tidy_axes_on_one_decade_and_close_values():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    ax, near = fig.subplots(1, 2)
    ax.plot([2.0, 8.0], [1.5, 4.0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    near.plot([0, 1], [3.9001, 3.9004])
    tidy_axes(fig)
    fig.canvas.draw()
    texts = [t.get_text() for a in fig.axes for axis in (a.xaxis, a.yaxis) for t in axis.get_ticklabels(which="both")]
    texts = [t for t in texts if t]
    assert "2" in texts and "3" in texts and not any("times" in t for t in texts)
    assert len(set(near.yaxis.get_ticklabels())) == len(near.get_yticks())
    y = [t.get_text() for t in near.yaxis.get_ticklabels() if t.get_text()]
    assert len(set(y)) == len(y) and any(t.startswith("3.900") for t in y)  # told apart without an offset
    assert near.yaxis.get_offset_text().get_text() == ""
    assert [tick_text(v) for v in (1e15, 3e-5, 0.4, -0.5, 9999.9)] == [
        "$\\mathdefault{10^{15}}$", "$\\mathdefault{3\\times10^{-5}}$", "0.4", "\u22120.5", "$\\mathdefault{10^{4}}$"]
