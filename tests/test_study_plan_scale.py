"""Planning a study at scale (issue 23 §7): grids are planned by parts (each axis value and each
distinct combination of the other settings validated once, ids from canonical fragments), and
the result must be exactly what planning every combination through ``RunConfig`` gives — the
same runs, ids, configs, labels and axes in the same order, and the same refusals. Nothing here
measures time (bench/spec_scale.py does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beyondbp.errors import ConfigError
from beyondbp.study import spec as spec_mod
from beyondbp.study.inspection import study_status
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Store

MIXED = """\
[study]
name = "mixed"

[base]
model = "mlp"
data = "mnist1d"
data_options = {num_samples = 500}
model_options = {activation = "tanh"}
weight_decay = 1e-4

[axes]
rule = ["backprop", {name = "dfa", label = "dfa-uniform", options = {init = "uniform"}},
        {name = "dfa", label = "dfa-seeded", options = {seed = 7}}, "fa", "kp"]
lr = {backprop = [1e-3, 3e-3], dfa-uniform = [1e-4, 1], dfa-seeded = [2e-4], fa = [1e-3], kp = [5e-4, 1e-3]}
seed = [0, 1, 2, 4294967295]
model_options = [{widths = [16]}, {widths = [32, 32], activation = "relu"}]
steps = [5, 10]
batch_size = [16, 32.0]
optimizer = ["adam", "sgd"]
"""

FLAT = """\
[study]
name = "flat"

[base]
model = "mlp"
data = "mnist1d"
epochs = 2
rule = "dfa"
rule_options = {init = "uniform"}

[axes]
weight_decay = [0, 1e-3]
seed = [3, 1, 2]
lr = [1e-3, 3e-3, 0.01]
data_options = [{num_samples = 400}, {num_samples = 800}]
"""

SPARSE = """\
[study]
name = "sparse"

[base]
model = "mlp"
data = "mnist1d"
steps = 5
sparsity = "set"

[axes]
rule = ["backprop", "dfa"]
seed = [0, 1, 2]
lr = [1e-3, 1e-2]
"""


def plan(path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(spec_mod, "_fast_planning", fast)
    return load_spec(path)


def same_plan(path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    fast = plan(path, True, monkeypatch).runs()
    slow = plan(path, False, monkeypatch).runs()
    assert [r.id for r in fast] == [r.id for r in slow]
    assert [r.label for r in fast] == [r.label for r in slow]
    assert [r.axes for r in fast] == [r.axes for r in slow]
    for a, b in zip(fast, slow):
        assert a.config.model_dump() == b.config.model_dump()
        assert a.config == b.config
        assert a.config.model_fields_set == b.config.model_fields_set
        assert a.config.run_id == a.id  # the id of the config it carries, computed the slow way
    return len(fast)


@pytest.mark.parametrize("text", [MIXED, FLAT, SPARSE], ids=["mixed", "flat", "sparse"])
def test_planning_by_parts_gives_the_runs_planning_every_combination_gives(tmp_path, monkeypatch, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    calls = []
    real = spec_mod.plan_by_parts

    def spy(grid, planned_run):
        out = real(grid, planned_run)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(spec_mod, "plan_by_parts", spy)
    n = same_plan(path, monkeypatch)
    assert calls == [True]  # the fast path planned it (the second plan went the slow way)
    assert n == {"mixed": 8 * 4 * 2 * 2 * 2 * 2, "flat": 2 * 3 * 3 * 2, "sparse": 2 * 3 * 2}[text.split('"')[1]]


def test_a_refused_combination_is_reported_as_planning_every_combination_reports_it(tmp_path, monkeypatch):
    bad_lr = MIXED.replace("fa = [1e-3]", "fa = [-1e-3]")
    repeat = FLAT.replace("weight_decay = [0, 1e-3]", "weight_decay = [0, 1e-3]\nrule_options = [{}, {init = 'uniform'}]")
    bad_seed = FLAT.replace("seed = [3, 1, 2]", "seed = [3, 1, -2]")
    lm = FLAT.replace("epochs = 2", "epochs = 2\ntokens = 100")
    for text in (bad_lr, repeat, bad_seed, lm):
        path = tmp_path / "spec.toml"
        path.write_text(text)
        messages = []
        for fast in (True, False):
            with pytest.raises(ConfigError) as info:
                plan(path, fast, monkeypatch)
            messages.append(str(info.value))
        assert messages[0] == messages[1]
        assert "spec.toml: " in messages[0]


def test_status_counts_a_store_read_in_one_pass(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text(FLAT)
    spec = load_spec(path)
    runs = spec.runs()
    store_path = tmp_path / "flat.db"
    with Store(store_path, create=True, study=spec.name) as store:
        store.add_runs(runs[:30])
        conn = store._conn
        conn.execute("UPDATE runs SET status = 'done', wall_time = 2.0 WHERE position < 20")
        conn.execute("UPDATE runs SET status = 'failed', wall_time = 1.0, error = 'boom\nmore' WHERE position = 20")
        conn.execute("UPDATE runs SET status = 'bogus' WHERE position = 21")
        conn.commit()
        assert store.progress()[runs[0].id] == ("done", 2.0)
        assert [r["id"] for r in store.rows(("failed",))] == [runs[20].id]
        assert len(store.rows()) == 30
    status = study_status(spec, store_path)
    assert status["counts"] == {"pending": len(runs) - 22, "running": 0, "done": 20, "failed": 1, "diverged": 0}
    assert status["missing"] == len(runs) - 30
    assert status["unknown_status"] == 1
    assert status["time_spent"] == 41.0 and status["mean_wall_time"] == 2.0
    assert status["failed"] == [{"id": runs[20].id, "label": runs[20].label, "axes": runs[20].axes, "error": "boom"}]
