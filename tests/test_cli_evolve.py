"""``beyondbp evolve``: the history and the figure of a tiny evolution, plastic and control;
bad input refused in one line with exit status 2 and nothing written; no overwriting unasked."""

from __future__ import annotations

import json

import pytest

from beyondbp.cli import main

TINY = ["--population", "4", "--generations", "2", "--trials", "40", "--scored", "5", "--test-every", "1",
        "--test-lifetimes", "2", "--quiet"]


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_evolve_writes_the_history_and_the_figure_of_both_arms(tmp_path, capsys):
    out = tmp_path / "evo"
    code, stdout, err = run(["evolve", *TINY, "--control", "--seed", "1", "--out", out], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "success.png"]
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "history.json").read_text())
    assert doc["settings"]["population"] == 4 and doc["settings"]["seed"] == 1
    assert doc["settings"]["task_schedule"] == "halves" and doc["settings"]["init_alpha"] == 0.5
    assert doc["settings"]["lr_cut_generation"] is None and doc["settings"]["lr_cut_factor"] == 5.0
    assert "dms" not in doc["settings"]["train_tasks"] and "dnms" not in doc["settings"]["train_tasks"]
    assert set(doc["arms"]) == {"plastic", "control"}
    for arm in doc["arms"].values():
        assert len(arm["loss"]) == len(arm["success"]) == 2 and set(arm["tests"]) == {"0", "1"}
        assert len(arm["final_test"]) == 2 and 0 <= arm["final_test_success"] <= 1 and arm["cpu_seconds"] > 0
    assert "plastic" in stdout and "control" in stdout and "history.json" in stdout
    # the same command again: refused, the folder left as it was
    before = (out / "history.json").read_bytes()
    code, _, err = run(["evolve", *TINY, "--control", "--seed", "1", "--out", out], capsys)
    assert code == 2 and err.count("\n") == 1 and "pass --overwrite to replace it" in err
    assert (out / "history.json").read_bytes() == before


@pytest.mark.parametrize("extra, words", [
    (["--population", "1"], "population must be an even number of at least 2"),
    (["--population", "3"], "population must be an even number"),
    (["--generations", "0"], "invalid --generations 0"),
    (["--train-tasks", "and,xor"], "unknown task 'xor'"),
    (["--train-tasks", "and,dms"], "must not contain the withheld tasks"),
    (["--train-tasks", "and,and"], "names a task twice"),
    (["--test-task", "dmx"], "unknown task 'dmx'"),
    (["--trials", "10"], "invalid --trials 10"),
    (["--scored", "0"], "invalid --scored 0"),
    (["--test-lifetimes", "0"], "invalid --test-lifetimes 0"),
    (["--sigma", "0"], "sigma must be positive"),
    (["--task-schedule", "blocks"], "task_schedule must be one of halves, uniform"),
    (["--init-alpha", "-1"], "init_alpha must be at least 0"),
    (["--lr-cut-generation", "-3"], "lr_cut_generation must be at least 0"),
    (["--lr-cut-factor", "0"], "lr_cut_factor must be at least 1"),
    (["--lr-cut-factor", "inf"], "invalid --lr-cut-factor inf: it must be a finite number"),
    (["--lr-cut-factor", "nan"], "invalid --lr-cut-factor nan: it must be a finite number"),
    (["--lr", "inf"], "invalid --lr inf: it must be a finite number"),
    (["--sigma", "inf"], "invalid --sigma inf: it must be a finite number"),
    (["--init-alpha", "inf"], "invalid --init-alpha inf: it must be a finite number"),
    (["--lr-cut-generation", "2"], "invalid --lr-cut-generation 2: it must be below --generations (2)"),
    (["--lr-cut-generation", "7"], "invalid --lr-cut-generation 7: it must be below --generations (2)"),
    (["--workers", "0"], "invalid number of workers 0"),
    (["--workers", "100000"], "the CPU cores this process may use"),
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--address", "127.0.0.1:6379"], "an address applies to the ray executor only"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, extra, words):
    out = tmp_path / "evo"
    code, stdout, err = run(["evolve", *TINY, *extra, "--out", out], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_the_ray_executor_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    out = tmp_path / "evo"
    code, _, err = run(["evolve", *TINY, "--executor", "ray", "--out", out], capsys)
    assert code == 2 and err.count("\n") == 1 and "install beyondbp[ray]" in err and not out.exists()
