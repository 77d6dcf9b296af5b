"""`study status` from the plan `study run` keeps in the store (beyondbp.study.status_plan): it
answers without loading the spec (no torch) while the spec file is unchanged, and says exactly
what loading the spec says — for a plain grid, a searched study with extended cells, runs
finished or added since — and falls back to loading the spec when the spec was edited, a
searched study's finished runs changed, or the store has no kept plan. A fake executor stands in
for training (test_study_search's; its loss is a known function of the rate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import beyondbp
from beyondbp.cli import main
from beyondbp.study import inspection, runner, search, status_plan
from beyondbp.study.runner import run_study
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Owner, Store

sys.path.insert(0, str(Path(__file__).parent))
from test_study_search import FakePool, write  # noqa: E402

GRID = 'rule = ["backprop", "fa"]\nlr = [1e-3, 1e-2, 1e-1]\nseed = [0, 1]'
SEARCHED = ('rule = ["backprop", "dfa"]\nlr = [1e-4, 3e-4]\nseed = [0, 1]\nsteps = [10, 20]',
            "lr = {factor = 3, max_rounds = 6}\nseeds = {min = 2, max = 3}")


class FailingPool(FakePool):
    """FakePool whose runs at lr 0.1 fail (an error, as a worker reports one)."""

    def submit(self, config, lease=None):
        handle = super().submit(config, lease)
        if float(config["lr"]) == 0.1:
            self.handles[handle] = {"error": "ValueError: boom\nsecond line", "wall_time": 0.02, "host": "fake"}
        return handle


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(runner, "_Local", FailingPool)
    monkeypatch.setattr(search, "SEED_BOOTSTRAP", 40)
    FakePool.trained = []
    return FailingPool


@pytest.fixture
def answered(monkeypatch):
    """Which path each `study status` took: True (the kept plan) or False (the spec loaded)."""
    seen: list[bool] = []
    quick = status_plan.quick_status

    def spy(*args, **kwargs):
        out = quick(*args, **kwargs)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(status_plan, "quick_status", spy)
    return seen


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def both(capsys, monkeypatch, answered, *args) -> tuple[list, list]:
    """`study status ARGS` as it answers, then with the kept plan ignored (the spec loaded):
    (code, stdout, stderr) each, for the text and the --json forms."""
    now = [cli(capsys, "study", "status", *args), cli(capsys, "study", "status", *args, "--json")]
    with monkeypatch.context() as m:
        m.setattr(status_plan, "quick_status", lambda *a, **k: None)
        loaded = [cli(capsys, "study", "status", *args), cli(capsys, "study", "status", *args, "--json")]
    return now, loaded


def test_a_plain_grid_is_answered_from_the_kept_plan_as_loading_the_spec_answers(tmp_path, fake, capsys, monkeypatch,
                                                                                   answered):
    path = write(tmp_path / "g.toml", GRID)
    spec = load_spec(path)
    summary = run_study(spec)
    assert summary["counts"]["done"] == 8 and summary["counts"]["failed"] == 4
    with Store(tmp_path / "g.db", create=True) as store:  # one run left running by a dead driver
        assert store.status_plan()["runs"] == 12 and store.status_plan()["state"] is None
        store.reset_failed([store.rows(("failed",))[0]["id"]])
        dead = Owner("nowhere-host", 1, "gone")
        assert store.claim(dead, lease_seconds=-1.0) is not None
    now, loaded = both(capsys, monkeypatch, answered, path, "--workers", "2")
    assert answered == [True, True]
    assert now == loaded
    code, out, _ = now[0]
    assert code == 0 and "failed: " in out and "boom" in out and "marked running by a process that is gone" in out
    status = json.loads(now[1][1])
    assert status["counts"] == {"pending": 0, "running": 1, "done": 8, "failed": 3, "diverged": 0}
    assert status["stale"] == 1 and len(status["failed"]) == 3 and status["failed"][0]["axes"]["lr"] == 0.1
    # the library's two paths agree too, and a status writes nothing
    before = (tmp_path / "g.db").read_bytes()
    assert status_plan.quick_status(path) == inspection.study_status(spec)
    assert (tmp_path / "g.db").read_bytes() == before and not (tmp_path / "g.db-wal").exists()


def test_a_searched_study_with_extended_cells_is_answered_from_the_kept_plan(tmp_path, fake, capsys, monkeypatch,
                                                                            answered):
    path = write(tmp_path / "s.toml", *SEARCHED)
    summary = run_study(load_spec(path))
    assert summary["search"]["added"] > 0 and summary["search"]["rounds"] >= 2  # cells were extended
    with Store(tmp_path / "s.db") as store:
        assert store.status_plan()["search"] == summary["search"]
    now, loaded = both(capsys, monkeypatch, answered, path)
    assert answered == [True, True]
    assert now == loaded and "runs added by the search" in now[0][1]
    assert json.loads(now[1][1])["search"] == summary["search"]


def test_a_spec_edited_after_the_run_is_loaded_again(tmp_path, fake, capsys, monkeypatch, answered):
    path = write(tmp_path / "g.toml", GRID)
    run_study(load_spec(path))
    path.write_text(path.read_text().replace("lr = [1e-3, 1e-2, 1e-1]", "lr = [1e-3, 1e-2, 1e-1, 0.3]"))
    now, loaded = both(capsys, monkeypatch, answered, path)
    assert answered == [False, False]
    assert now == loaded and "4 runs of the spec not yet in the store" in now[0][1]
    path.write_text(path.read_text() + "\n# a comment only\n")  # any change of the bytes: loaded again
    assert status_plan.quick_status(path) is None


def test_runs_finished_or_added_since_the_plan_was_kept(tmp_path, fake, capsys, monkeypatch, answered):
    # a plain grid: its plan does not depend on the store, so its status stays quick and current
    path = write(tmp_path / "g.toml", GRID)
    spec = load_spec(path)
    with Store(tmp_path / "g.db", create=True, study=spec.name) as store:
        store.add_runs(spec.runs())  # as `study run` adds them, without keeping a plan yet
    cli(capsys, "study", "status", path)
    assert answered == [False]  # no kept plan: the spec is loaded
    run_study(spec)
    other = load_spec(write(tmp_path / "o.toml", GRID.replace("1e-1]", "1e-1, 0.3]"), name="srch"))
    with Store(tmp_path / "g.db", create=True, study=spec.name) as store:  # runs added by another spec of the study
        store.add_runs(other.runs())
    answered.clear()
    now, loaded = both(capsys, monkeypatch, answered, path)
    assert answered == [True, True] and now == loaded
    assert "4 runs in the store no longer in the spec" in now[0][1]
    # a searched study: a run recorded since (here a finished run changed) means planning again
    path = write(tmp_path / "s.toml", *SEARCHED)
    run_study(load_spec(path))
    with Store(tmp_path / "s.db", create=True) as store:
        store._conn.execute("UPDATE runs SET status = 'failed', error = 'lost' WHERE position = 0")
    answered.clear()
    now, loaded = both(capsys, monkeypatch, answered, path)
    assert answered == [False, False] and now == loaded and "failed: " in now[0][1]


def test_a_store_without_a_kept_plan_is_answered_by_loading_the_spec(tmp_path, fake, capsys, monkeypatch, answered):
    path = write(tmp_path / "s.toml", *SEARCHED)
    run_study(load_spec(path))
    with Store(tmp_path / "s.db", create=True) as store:  # as a store written before plans were kept
        store._conn.execute("DROP TABLE status_plan")
    now, loaded = both(capsys, monkeypatch, answered, path)
    assert answered == [False, False] and now == loaded and now[0][0] == 0


def _status_in_a_fresh_process(path: Path, *args: str) -> tuple[str, bool]:
    """`beyondbp study status PATH ARGS` run by the command line's entry point in a new
    interpreter: its output, and whether torch was imported."""
    code = ("import sys\nfrom beyondbp.cli import main\n"
            "try:\n    main(['study', 'status', *sys.argv[1:]])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "finally:\n    print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n")
    src = str(Path(beyondbp.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", code, str(path), *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    flag = done.stderr.strip().splitlines()[-1]
    assert flag in ("TORCH True", "TORCH False")
    return done.stdout, flag == "TORCH True"


def test_status_from_the_kept_plan_imports_no_torch(tmp_path, fake):
    path = write(tmp_path / "g.toml", GRID)
    run_study(load_spec(path))
    quick, imported = _status_in_a_fresh_process(path)
    assert not imported and "done" in quick
    path.write_text(path.read_text() + "\n")  # edited: the spec is loaded, which imports torch
    loaded, imported = _status_in_a_fresh_process(path)
    assert imported and loaded == quick


def test_status_json_from_the_kept_plan_imports_no_torch(tmp_path, fake):
    """--json converts the status with beyondbp.jsonable.plain (the one conversion), which
    imports neither numpy nor torch, and says what loading the spec says."""
    path = write(tmp_path / "g.toml", GRID)
    run_study(load_spec(path))
    quick, imported = _status_in_a_fresh_process(path, "--json")
    assert not imported and json.loads(quick)["counts"]["done"] == 8
    path.write_text(path.read_text() + "\n")
    loaded, imported = _status_in_a_fresh_process(path, "--json")
    assert imported and json.loads(loaded) == json.loads(quick)


def test_jsonable_imports_neither_numpy_nor_torch_and_still_converts_their_scalars():
    code = "import sys, beyondbp.jsonable; print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"
    src = str(Path(beyondbp.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    import numpy as np
    import torch

    from beyondbp.jsonable import plain

    value = {"a": np.float32(0.5), "b": torch.tensor(3), "c": torch.Size([2, 3]), "d": (np.int64(4), np.bool_(True)),
             "e": float("nan"), "f": Path("x")}
    assert plain(value) == {"a": 0.5, "b": 3, "c": [2, 3], "d": [4, True], "e": None, "f": "x"}
    with pytest.raises(TypeError, match="has no JSON form"):
        plain({"x": object()})


def test_a_spec_that_is_not_a_regular_file_is_refused_without_being_read(tmp_path):
    """A FIFO given as the spec: the kept-plan path must not open it (it would wait for a writer);
    the refusal is the one loading the spec gives, exit 2."""
    fifo = tmp_path / "s.toml"
    os.mkfifo(fifo)
    code = "import sys\nfrom beyondbp.cli import main\nmain(['study', 'status', sys.argv[1], *sys.argv[2:]])\n"
    src = str(Path(beyondbp.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
    for extra in ([], ["--json"]):
        done = subprocess.run([sys.executable, "-c", code, str(fifo), *extra], capture_output=True, text=True, env=env,
                              timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert "does not exist or is not a file" in lines[0] and done.stdout == ""
