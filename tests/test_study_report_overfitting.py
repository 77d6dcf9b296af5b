"""The warnings table counts the runs that overfit by cell (one row per rule × other axes, naming
how many and at which learning rates and seeds); every run stays listed, collapsed in the page
and in report.json."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from beyondbp.reporting.study_page import html_page, markdown_page
from beyondbp.reporting.study_tables import RISING_RUN_HEADERS, rising_run_rows, warning_rows
from beyondbp.study.overfitting import rising_runs
from beyondbp.study.selection import other_axes

sys.path.insert(0, str(Path(__file__).parent))
from test_study_analysis import bp_law, records_for  # noqa: E402


def _records():
    """Backprop at 2 rates × 3 seeds per cell: every run of the smallest cell rises late (by
    20 %), and one run (seed 1, lr 0.01) of the next cell (by 40 %)."""
    recs = records_for("backprop", bp_law, lrs=(1e-3, 1e-2), rng=np.random.default_rng(0))
    first = recs[0]["axes"]
    for r in recs:
        a = r["axes"]
        same = (a["model_options"], a["steps"]) == (first["model_options"], first["steps"])
        other = (a["model_options"], a["steps"]) == (first["model_options"], 300) and a["seed"] == 1 and a["lr"] == 1e-2
        rise = 1.2 if same else 1.4 if other else None
        ys = [2.0, 1.5, 1.0, 1.0 * (rise or 0.9), 1.0 * (rise or 0.8)]
        r["result"]["history"] = [{"step": 10 * (i + 1), "test_loss": y} for i, y in enumerate(ys)]
    return recs


def _analysis(recs):
    """What warning_rows reads of an analysis: its runs (label and other axes), no warning or note."""
    runs = [SimpleNamespace(label=r["label"], axes=other_axes(r)) for r in recs]
    return SimpleNamespace(runs=runs, best_lr=(), warnings=(), notes=())


def test_many_overfitting_runs_in_one_cell_give_one_row_naming_the_count():
    recs = _records()
    rising = rising_runs(recs)
    assert len(rising) == 7
    rows = warning_rows(_analysis(recs), rising)
    assert [r[0] for r in rows] == ["overfitting", "overfitting"]  # two cells, not seven runs
    (kind, where, detail), (_, where2, detail2) = rows
    assert where == "backprop model_options={widths=[10]}, steps=100"
    assert detail.startswith("6 of 6 runs overfit: final test_loss 20% above its minimum (at evaluation 3 of 5)")
    assert "at lr 0.001 (seeds 0, 1, 2), lr 0.01 (seeds 0, 1, 2)" in detail
    assert where2 == "backprop model_options={widths=[10]}, steps=300"
    assert detail2.startswith("1 of 6 runs overfit: final test_loss 40% above") and "at lr 0.01 (seed 1)" in detail2


def test_every_overfitting_run_is_still_listed_collapsed():
    rising = rising_runs(_records())
    rows = rising_run_rows(rising)
    assert len(rows) == 7 and len(RISING_RUN_HEADERS) == len(rows[0])
    assert sorted(r.id for r in rising) == sorted(row[-1] for row in rows)
    block = ("details", "Every run that overfits (7)", RISING_RUN_HEADERS, rows)
    page = html_page([("h1", "t"), block], "t")
    assert page.count("<details><summary>Every run that overfits (7)</summary><table>") == 1
    assert page.count("<tr>") == 8 and "</table></details>" in page
    md = markdown_page([block])
    assert md.startswith("<details><summary>Every run that overfits (7)</summary>\n\n| cell | lr |") and "</details>" in md
