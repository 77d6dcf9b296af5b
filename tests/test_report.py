"""The comparison table, its Markdown, the curves PNG and the JSON, from synthetic results."""

from __future__ import annotations

import json

import pytest

from beyondbp.reporting import runs as report


def fake(rule, acc, loss, flops, time, diag=None, epochs=3, status="ok"):
    return {
        "rule": rule,
        "status": status,
        "final": {"test_accuracy": acc, "train_loss": loss, "test_loss": loss + 0.1, "diagnostics": diag or {}},
        "flops_per_step": flops,
        "time_per_step": time,
        "history": [
            {"epoch": e, "train_loss": loss * (epochs + 1 - e), "test_accuracy": acc * e / epochs}
            for e in range(1, epochs + 1)
        ],
    }


RESULTS = [
    fake("fa", 0.60, 0.8, 1000, 0.012, {"cos/fc1": 0.2, "cos/out": 1.0, "cos/all": 0.5, "angle/fc1": 80.0, "angle/out": 40.0}),
    fake("backprop", 0.80, 0.4, 1000, 0.010),
    fake("dfa", 0.50, 1.0, 700, None, {"cos/fc1": 0.1, "cos/fc2": 0.3, "cos/out": 1.0, "cos/all": 0.6}),
]


def test_ratios_are_relative_to_backprop_wherever_it_is():
    rows = {r["rule"]: r for r in report.comparison_table(RESULTS)}
    assert all(r["baseline"] == "backprop" for r in rows.values())
    fa, bp, dfa = rows["fa"], rows["backprop"], rows["dfa"]
    assert fa["accuracy_ratio"] == pytest.approx(0.75)
    assert fa["loss_ratio"] == pytest.approx(2.0)
    assert fa["flops_ratio"] == pytest.approx(1.0)
    assert fa["time_ratio"] == pytest.approx(1.2)
    assert dfa["flops_ratio"] == pytest.approx(0.7)
    assert dfa["accuracy_ratio"] == pytest.approx(0.625)
    assert dfa["time_ratio"] is None  # no time measured: no ratio, not a made-up one
    assert bp["flops_ratio"] == bp["time_ratio"] == bp["accuracy_ratio"] == 1.0
    assert fa["test_loss"] == pytest.approx(0.9)


def test_diagnostic_summaries():
    rows = {r["rule"]: r for r in report.comparison_table(RESULTS)}
    assert rows["fa"]["cos_all"] == 0.5
    assert rows["fa"]["cos_mean"] == pytest.approx(0.6)  # (0.2 + 1.0) / 2, cos/all excluded
    assert rows["fa"]["angle_mean"] == pytest.approx(60.0)
    assert rows["dfa"]["cos_mean"] == pytest.approx((0.1 + 0.3 + 1.0) / 3)
    assert rows["dfa"]["angle_mean"] is None
    assert rows["backprop"]["cos_all"] is None


def test_without_backprop_the_first_row_is_the_baseline_and_the_note_says_so():
    rows = report.comparison_table([RESULTS[2], RESULTS[0]])
    assert [r["baseline"] for r in rows] == ["dfa", "dfa"]
    assert rows[1]["flops_ratio"] == pytest.approx(1000 / 700)
    assert rows[1]["accuracy_ratio"] == pytest.approx(0.6 / 0.5)
    md = report.render_markdown(rows)
    assert "No backprop row" in md and "(dfa)" in md


def test_markdown_table_shape_and_formatting():
    md = report.render_markdown(report.comparison_table(RESULTS))
    lines = md.splitlines()
    assert lines[0].startswith("| rule | test acc |") and "cos/all" in lines[0]
    assert len(lines[0].split("|")) == len(lines[1].split("|")) == len(lines[2].split("|"))
    fa_line = next(l for l in lines if l.startswith("| fa "))
    assert "60.0%" in fa_line and "0.75×" in fa_line and "1.20×" in fa_line and "60.0°" in fa_line
    dfa_line = next(l for l in lines if l.startswith("| dfa "))
    assert "0.70×" in dfa_line and "—" in dfa_line
    assert "divided by backprop's" in md


def test_diverged_run_is_marked_and_its_nan_is_not_a_number():
    rows = report.comparison_table([RESULTS[1], fake("dfa", float("nan"), float("nan"), 700, 0.01, status="diverged")])
    assert rows[1]["test_accuracy"] is None and rows[1]["accuracy_ratio"] is None
    assert "dfa (diverged)" in report.render_markdown(rows)


def test_write_json_round_trip_with_nan_as_null(tmp_path):
    results = RESULTS + [fake("usf", float("nan"), 0.5, 1000, 0.01)]
    path = report.write_json(results, tmp_path / "sub" / "results.json")
    text = path.read_text()
    payload = json.loads(text)  # strict JSON: no NaN tokens
    assert "NaN" not in text
    assert [r["rule"] for r in payload["runs"]] == ["fa", "backprop", "dfa", "usf"]
    assert payload["runs"][3]["final"]["test_accuracy"] is None
    assert payload["table"][0]["time_ratio"] == pytest.approx(1.2)
    assert report.read_json(path)[1]["flops_per_step"] == 1000
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_plot_curves_writes_a_png(tmp_path):
    path = report.plot_curves(RESULTS, tmp_path / "curves.png", title="synthetic")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_empty_table():
    assert report.comparison_table([]) == []
    assert report.render_markdown([]).splitlines()[1].startswith("|---|")
    assert len(report.render_markdown([]).splitlines()) == 2
