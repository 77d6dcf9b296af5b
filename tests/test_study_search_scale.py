"""A study's search at scale: the slim records it is planned from (Store.search_records: SQLite
extracts the few fields the planner reads, so `study status` of a searched study never parses
every run's whole result) give the same plan, points, skipped and refused rows as the full
records; and a search whose worst case exceeds the run limit (spec.MAX_RUNS) is refused when the
spec is loaded, the bound it is checked against holding (and reached) for a search that never
settles. A fake executor stands in for training (its loss is a known function of the rate)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from beyondbp.errors import ConfigError
from beyondbp.study import runner, search
from beyondbp.study.runner import run_study
from beyondbp.study.search import plan_search
from beyondbp.study.selection import record_label, record_lr, record_seed, run_point
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from test_study_search import FakePool  # noqa: E402 - wait, outcome, cancel, close, lost

SPEC = """[study]
name = "slim"

[base]
model = "mlp"
data = "mnist1d"
data_options = {num_samples = 400}
model_options = {widths = [8]}
steps = 10

[axes]
rule = ["backprop", "dfa"]
lr = [1e-3, 1e-2]
steps = [10, 20, 40]
seed = [0]

[search]
lr = {factor = 3, max_rounds = 2}
seeds = {min = 2, max = 3}
"""


class Pool(FakePool):
    """Loss 1 + 10/steps + (ln lr − ln 0.01)² (+0.3 for dfa) + 0.01·seed, a full-size history;
    dfa at lr ≥ 0.02 diverges; dfa at steps 20, lr 1e-3, seed 1 fails."""

    def submit(self, config, lease=None):
        lr, seed, steps, dfa = float(config["lr"]), int(config["seed"]), int(config["steps"]), config["rule"] == "dfa"
        loss = 1 + 10 / steps + (math.log(lr) - math.log(0.01)) ** 2 + 0.3 * dfa + 0.01 * seed
        result = {"status": "done", "final": {"test_loss": loss, "test_accuracy": 0.5}, "n_params": 800, "steps": steps,
                  "flops_per_step": 2000 if dfa else 3000, "tokens": None, "eval_flops": 100,
                  "history": [{"step": s, "test_loss": loss + 1 / s} for s in range(1, steps + 1)]}
        outcome = {"result": result, "wall_time": 0.01, "host": "fake", "versions": {}}
        if dfa and lr >= 0.02:
            result.update(status="diverged", diverged_at_step=3, final={"test_loss": None})
        if dfa and steps == 20 and lr == 1e-3 and seed == 1:
            outcome = {"error": "boom\nline 2", "wall_time": 0.01, "host": "fake", "versions": {}}
        self.handles[len(self.handles)] = outcome
        return len(self.handles) - 1


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_Local", Pool)
    monkeypatch.setattr(search, "SEED_BOOTSTRAP", 40)
    path = tmp_path / "slim.toml"
    path.write_text(SPEC)
    spec = load_spec(path)
    run_study(spec)
    return spec, tmp_path / "slim.db"


def test_the_slim_records_give_the_same_plan_and_points_as_the_full_ones(study):
    spec, store_path = study
    with Store(store_path, study=spec.name) as store:
        full, slim = store.records(), store.search_records()
    assert {r["status"] for r in full} == {"done", "diverged", "failed"}
    assert [(r["id"], r["status"]) for r in slim] == [(r["id"], r["status"]) for r in full]
    for a, b in zip(full, slim):
        assert "history" in (a["result"] or {"history": 1}) and "history" not in (b["result"] or {})  # slim
        assert run_point(b) == run_point(a)
        assert (record_label(b), record_lr(b), record_seed(b)) == (record_label(a), record_lr(a), record_seed(a))
        assert (b["error"], b["diverged_at_step"], b["axes"]) == (a["error"], a["diverged_at_step"], a["axes"])
    # the plan mid-search (the first k records, as if the rest had not finished) and at the end
    for k in (0, 6, 13, 24, len(full)):
        want, got = plan_search(spec, full[:k], "backprop"), plan_search(spec, slim[:k], "backprop")
        assert [r.id for r in got.runs] == [r.id for r in want.runs] and got.summary() == want.summary()
    end = plan_search(spec, slim, "backprop")
    assert end.added > 0 and end.seed_rounds >= 1  # the search extended rates and added seeds


def test_the_slim_records_skip_and_refuse_the_rows_the_full_ones_do(study):
    spec, store_path = study
    with Store(store_path, study=spec.name) as store:
        ids = [r["id"] for r in store.records()]
    with Store(store_path, create=True, study=spec.name) as store:
        store._conn.execute("UPDATE runs SET result = '[1, 2]' WHERE id = ?", (ids[0],))
        store._conn.execute("UPDATE runs SET status = 'odd' WHERE id = ?", (ids[1],))
        store._conn.commit()
    with Store(store_path, study=spec.name) as store:
        full = store.records()
        skipped = list(store.skipped)
        slim = store.search_records()
        assert store.skipped == skipped and len(skipped) == 2
        assert [r["id"] for r in slim] == [r["id"] for r in full]
    with Store(store_path, create=True, study=spec.name) as store:
        store._conn.execute("UPDATE runs SET result = '{\"steps\": 3' WHERE id = ?", (ids[2],))
        store._conn.commit()
    with Store(store_path, study=spec.name) as store:
        with pytest.raises(ConfigError) as full_error:
            store.records()
        with pytest.raises(ConfigError) as slim_error:
            store.search_records()
    assert str(slim_error.value) == str(full_error.value) and ids[2] in str(slim_error.value)


def test_status_of_a_searched_study_reads_the_slim_records(study, monkeypatch):
    from beyondbp.study.inspection import study_status

    spec, store_path = study
    want = study_status(spec, store_path)

    def refuse(self, status=None):
        raise AssertionError("status read every run's whole record")

    monkeypatch.setattr(Store, "records", refuse)
    got = study_status(spec, store_path)
    assert got == want and got["search"]["added"] > 0


# -- the run limit ------------------------------------------------------------------------------
LIMIT_SPEC = """[study]
name = "limit"

[base]
model = "mlp"
data = "mnist1d"
data_options = {{num_samples = 400}}
model_options = {{widths = [8]}}

[axes]
steps = {steps}
lr = [1e-3]

[search]
lr = {{max_rounds = 4}}
seeds = {{min = 3, max = 1000}}
"""


def test_a_search_that_could_grow_past_the_run_limit_is_refused_at_load(tmp_path, capsys):
    from beyondbp.cli import main
    from beyondbp.study.spec import MAX_RUNS

    # each cell: 1 rate + 2 per round × 4 rounds = 9 rates × 3 seeds, + 997 more seeds = 1,024 runs at most
    fits = tmp_path / "fits.toml"
    fits.write_text(LIMIT_SPEC.format(steps=list(range(10, 10 + 97))))
    assert len(load_spec(fits).runs()) == 97 and 97 * 1024 <= MAX_RUNS
    path = tmp_path / "limit.toml"
    path.write_text(LIMIT_SPEC.format(steps=list(range(10, 10 + 98))))  # 98 × 1,024 = 100,352
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith("limit.toml: [search]: the search may grow the study to 100,352 runs ")
    assert "98 cells × up to 9 rates × 3 seeds, + up to 997 more seeds each" in message
    assert f"at most {MAX_RUNS:,}" in message and "\n" not in message
    with pytest.raises(SystemExit) as code:
        main(["study", "run", str(path)])
    _, err = capsys.readouterr()
    assert code.value.code == 2 and "[search]: the search may grow" in err
    assert not (tmp_path / "limit.db").exists() and not (tmp_path / "limit.states").exists()


def test_the_run_bound_holds_and_is_reached_by_a_search_that_never_settles(tmp_path, monkeypatch):
    from beyondbp.study.search_settings import search_run_bound

    # a flat loss (margin 1: no rate is twice as bad): every cell extends both sides every round,
    # is capped, and (backprop and fa equal: undecided) gets seeds up to max
    monkeypatch.setattr(runner, "_Local", Pool)
    monkeypatch.setattr(search, "SEED_BOOTSTRAP", 40)
    path = tmp_path / "flat.toml"
    path.write_text(SPEC.replace('"dfa"', '"fa"').replace("lr = [1e-3, 1e-2]", "lr = [1e-2]")
                    .replace("lr = {factor = 3, max_rounds = 2}", "lr = {factor = 1.2, max_rounds = 2, margin = 1.0}"))
    spec = load_spec(path)
    summary = run_study(spec)
    bound, cells, rates, seeds = search_run_bound(spec.search, spec.runs())
    assert (cells, rates, seeds) == (6, 5, 2)
    assert {c["state"] for c in summary["search"]["cells"]} == {"capped at 2 rounds"}
    assert summary["total"] <= bound
    assert summary["total"] == bound == 6 * (5 * 2 + 1)
