"""A study's search (issue 23 §1, §2): learning-rate bracketing, warm start across sizes and seeds
on demand, as pure functions of the spec and the finished runs (beyondbp.study.search), run by
run_study until nothing is added, shown by `study status` and the report, refused when its
settings are wrong. The search logic is tested exactly with a fake executor whose loss is a
known function of the learning rate; one study trains for real."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from beyondbp.cli import main
from beyondbp.errors import ConfigError
from beyondbp.study import runner, search
from beyondbp.study.inspection import check_study, study_records, study_status
from beyondbp.study.runner import run_study
from beyondbp.study.search import annotate_analysis, plan_search
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Store
from beyondbp.study.verdict import judge_study

BASE = """
model = "mlp"
data = "mnist1d"
data_options = {num_samples = 400}
model_options = {widths = [8]}
steps = 10
"""


def write(path: Path, axes: str, search: str = "", base: str = BASE, name: str = "srch") -> Path:
    path.write_text(f'[study]\nname = "{name}"\n\n[base]\n{base}\n[axes]\n{axes}\n\n[search]\n{search}\n')
    return path


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


# -- a fake executor: the loss is a known function of the learning rate -------------------------
def optimum(config: dict) -> float:
    """lr* of a cell: 0.01 for width 8, smaller for wider models (lr* ∝ width^-1), × 0.5 for dfa."""
    width = (config.get("model_options") or {}).get("widths", [8])[0]
    return 0.01 * (8 / width) * (0.5 if config.get("rule") == "dfa" else 1.0)


class FakePool:
    """In-process stand-in for the local executor: loss = 1 + 10/steps + (ln lr − ln lr*)² + 0.01·seed;
    a run with lr ≥ ``FakePool.diverge`` diverges. Counts the runs it trains."""

    diverge = math.inf
    trained: list[dict] = []

    def __init__(self, *args, **kwargs):
        self.handles: dict[int, dict] = {}

    def submit(self, config, lease=None):
        FakePool.trained.append(config)
        lr, seed = float(config["lr"]), int(config.get("seed") or 0)
        width = (config.get("model_options") or {}).get("widths", [8])[0]
        steps = int(config.get("steps") or 10)
        loss = 1 + 10 / steps + (math.log(lr) - math.log(optimum(config))) ** 2 + 0.01 * seed
        result = {"status": "done", "final": {"test_loss": loss}, "n_params": 100 * width, "steps": steps,
                  "flops_per_step": 1000 * width}
        if lr >= FakePool.diverge:
            result.update(status="diverged", diverged_at_step=3, final={"test_loss": None})
        handle = len(self.handles)
        self.handles[handle] = {"result": result, "wall_time": 0.01, "host": "fake", "versions": {}}
        return handle

    def wait(self, handles, timeout):
        return list(handles)

    def outcome(self, handle):
        return self.handles[handle]

    def cancel(self, handles):
        pass

    def close(self, cancel=False):
        pass

    def lost(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(runner, "_Local", FakePool)
    monkeypatch.setattr(search, "SEED_BOOTSTRAP", 40)  # the seed decisions' judgement: cheaper
    FakePool.trained = []
    FakePool.diverge = math.inf
    return FakePool


def cells(summary: dict) -> dict:
    return {(c["label"], json.dumps(c["axes"], sort_keys=True)): c for c in summary["search"]["cells"]}


# -- bracketing ---------------------------------------------------------------------------------
def test_an_edge_best_rate_is_extended_until_interior(tmp_path, fake):
    # lr* = 0.01; the spec's rates 1e-4, 3e-4 have their best at the largest edge
    spec = load_spec(write(tmp_path / "s.toml", "lr = [1e-4, 3e-4]\nseed = [0]", "lr = {factor = 3, max_rounds = 6}"))
    summary = run_study(spec)
    (cell,) = summary["search"]["cells"]
    assert cell["state"] == "bracketed"
    # 3e-4 × 3^k: 9e-4, 0.0027, 0.0081 (best, ln distance 0.21), 0.0243 (worse): 4 rounds
    assert cell["lrs"] == [1e-4, 3e-4, 9e-4, 0.0027, 0.0081, 0.0243]
    assert cell["best_lr"] == 0.0081 and cell["rounds"] == 4 and cell["added"] == 4
    assert summary["counts"]["done"] == 6 and summary["total"] == 6
    # the report's best-LR table agrees: the best is interior, no edge warning
    records = study_records(spec)
    assert len(records) == 6
    (row,) = judge_study(records, loss_law=False).best_lr
    assert row.best_lr == 0.0081 and row.edge is None


def test_an_interior_best_rate_adds_nothing_and_downward_extension_works(tmp_path, fake):
    spec = load_spec(write(tmp_path / "s.toml", "lr = [3e-3, 1e-2, 3e-2]", "lr = {factor = 3}"))
    summary = run_study(spec)
    assert summary["search"]["added"] == 0 and summary["search"]["cells"][0]["state"] == "bracketed"
    assert len(fake.trained) == 3
    low = load_spec(write(tmp_path / "low.toml", "lr = [0.3, 1.0]", "lr = {factor = 10}", name="low"))
    (cell,) = run_study(low)["search"]["cells"]
    # 0.3 / 10 = 0.03, then 0.003 (ln distances 1.10 and 1.20 from lr* = 0.01): 0.03 is interior
    assert cell["lrs"] == [0.003, 0.03, 0.3, 1.0]
    assert cell["state"] == "bracketed" and cell["best_lr"] == 0.03 and cell["rounds"] == 2


def test_a_rate_beyond_that_diverges_bounds_the_search(tmp_path, fake):
    fake.diverge = 0.005  # below lr* = 0.01: the loss falls until the rate diverges
    spec = load_spec(write(tmp_path / "s.toml", "lr = [1e-3, 2e-3]\nseed = [0, 1]", "lr = {factor = 2, max_rounds = 5}"))
    summary = run_study(spec)
    (cell,) = summary["search"]["cells"]
    assert cell["state"] == "bounded by divergence"
    assert cell["lrs"] == [1e-3, 2e-3, 4e-3, 8e-3] and cell["best_lr"] == 4e-3
    assert summary["counts"]["diverged"] == 2 and summary["counts"]["done"] == 6


def test_a_capped_cell_says_so_in_status_report_and_verdict(tmp_path, fake, capsys):
    axes = 'rule = ["backprop", "dfa"]\nlr = [1e-5, 2e-5]\nseed = [0, 1, 2]\nsteps = [10, 20, 40]'
    path = write(tmp_path / "s.toml", axes, "lr = {factor = 2, max_rounds = 2}")
    spec = load_spec(path)
    summary = run_study(spec)
    states = {c["state"] for c in summary["search"]["cells"]}
    assert states == {"capped at 2 rounds"}
    assert all(c["lrs"] == [1e-5, 2e-5, 4e-5, 8e-5] for c in summary["search"]["cells"])
    status = study_status(spec)
    assert status["search"]["states"] == {"capped at 2 rounds": 6} and status["search"]["rounds"] == 2
    assert status["search"]["added"] == 6 * 2 * 3 and status["total"] == 6 * 4 * 3 and status["missing"] == 0
    code, out, _ = cli(capsys, "study", "status", path)
    assert code == 0
    assert "search: 2 rounds" in out and "capped at 2 rounds: 6 cells" in out and "36 runs added by the search" in out
    assert "not bracketed" in out
    with Store(tmp_path / "s.db") as store:
        plan = plan_search(spec, store.records())
    analysis = annotate_analysis(judge_study(study_records(spec), loss_law=False, n_bootstrap=40), plan)
    verdict = analysis.verdicts["dfa"]
    assert len(verdict.capped) == 6 and "capped at 2 rounds" in verdict.sentence
    assert all(row.search == "capped at 2 rounds" for row in analysis.best_lr)
    assert any("capped at 2 rounds before its learning rate was bracketed" in w for w in analysis.warnings)
    code, out, err = cli(capsys, "study", "report", path)
    assert code == 0, err
    assert "capped" in out
    report = json.loads((tmp_path / "s-report" / "report.json").read_text())["analysis"]
    assert report["verdicts"]["dfa"]["capped"] and report["best_lr"][0]["search"] == "capped at 2 rounds"
    assert "capped at 2 rounds" in (tmp_path / "s-report" / "report.md").read_text()


def test_refine_adds_the_geometric_midpoints_around_the_best_rate(tmp_path, fake):
    spec = load_spec(write(tmp_path / "s.toml", "lr = [1e-3, 1e-2, 1e-1]", "lr = {factor = 10, refine = true}"))
    (cell,) = run_study(spec)["search"]["cells"]
    assert cell["lrs"] == [1e-3, 0.00316228, 1e-2, 0.0316228, 1e-1]
    assert cell["state"] == "bracketed" and cell["best_lr"] == 1e-2 and cell["rounds"] == 1


def test_the_margin_extends_a_flat_side(tmp_path, fake):
    # 8e-3 and 1.25e-2 around lr* = 1e-2 are worse by (ln 1.25)² ≈ 0.05 (relative to the best's
    # 1 + 10/steps = 2): within a margin of 0.05 both sides stay open, and one more rate each side
    # (6.4e-3, 1.5625e-2: worse by 0.2, 0.1 relative) closes them; without it, nothing is added
    axes = "lr = [8e-3, 1e-2, 1.25e-2]"
    (cell,) = run_study(load_spec(write(tmp_path / "s.toml", axes, "lr = {factor = 1.25, margin = 0.05}")))["search"]["cells"]
    assert cell["lrs"] == [6.4e-3, 8e-3, 1e-2, 1.25e-2, 1.5625e-2] and cell["state"] == "bracketed"
    (cell,) = run_study(load_spec(write(tmp_path / "n.toml", axes, "lr = {factor = 1.25}", name="n")))["search"]["cells"]
    assert cell["lrs"] == [8e-3, 1e-2, 1.25e-2]


def test_warm_start_centres_a_larger_models_rates_on_the_trend(tmp_path, fake):
    axes = ("lr = [0.005, 0.01, 0.02]\nmodel_options = [{widths = [8]}, {widths = [16]}, {widths = [64]}]")
    spec = load_spec(write(tmp_path / "s.toml", axes, "lr = {factor = 2, max_rounds = 6, warm_start = true}"))
    plan = plan_search(spec, [])
    # only the two smallest sizes start; the largest waits for them
    assert [c.state for c in plan.cells] == ["searching", "searching", "waiting for smaller sizes"]
    assert len(plan.runs) == 6
    summary = run_study(spec)
    by_width = {c["axes"]["model_options"]["widths"][0]: c for c in summary["search"]["cells"]}
    assert by_width[8]["best_lr"] == 0.01 and by_width[16]["best_lr"] == 0.005
    # the trend lr* ∝ width^-1 through (N8, 0.01), (N16, 0.005) points at ≈ 0.00125 for width 64:
    # its first rates are the spec's three, centred there — it needs no extension
    big = by_width[64]
    assert big["state"] == "bracketed" and big["rounds"] == 0 and len(big["lrs"]) == 3
    assert big["best_lr"] == pytest.approx(0.00125, rel=0.05)
    # without warm start the largest size walks down from the spec's list: more runs
    cold = load_spec(write(tmp_path / "c.toml", axes, "lr = {factor = 2, max_rounds = 6}", name="cold"))
    assert run_study(cold)["total"] > summary["total"]


def test_bracketing_on_one_seed_runs_the_other_seeds_at_the_best_rate_only(tmp_path, fake):
    axes = "lr = [1e-4, 3e-4]\nseed = [0, 1, 2]"
    full = load_spec(write(tmp_path / "f.toml", axes, "lr = {factor = 3, max_rounds = 6}", name="f"))
    (whole,) = run_study(full)["search"]["cells"]
    trained_full = len(fake.trained)
    fake.trained = []
    spec = load_spec(write(tmp_path / "s.toml", axes, "lr = {factor = 3, max_rounds = 6, seeds = 1}"))
    assert len(plan_search(spec, []).runs) == 2  # the first seed at the first rates; nothing else yet
    summary = run_study(spec)
    (cell,) = summary["search"]["cells"]
    # the same bracket as on every seed (the fake's seeds shift the loss equally), from 6 + 2 runs, not 18
    assert cell["state"] == "bracketed" and cell["lrs"] == whole["lrs"] and cell["best_lr"] == whole["best_lr"] == 0.0081
    assert trained_full == 18 and len(fake.trained) == 8 and summary["counts"]["done"] == 8
    others = sorted((c["lr"], c["seed"]) for c in fake.trained if c["seed"] != 0)
    assert others == [(0.0081, 1), (0.0081, 2)]
    (row,) = judge_study(study_records(spec), loss_law=False).best_lr
    assert row.best_lr == 0.0081 and row.n_seeds == 3 and row.edge is None
    assert check_study(spec) == []  # the spec's runs the search left out are not missing
    assert study_status(spec)["counts"] == {"done": 8, "running": 0, "failed": 0, "diverged": 0, "pending": 0}


def test_seeds_beyond_lr_seeds_at_a_best_rate_of_the_spec_are_run_too(tmp_path, fake):
    # the best rate (0.01) is one of the spec's: its seeds 1 and 2 are spec runs the search left
    # out at first; the study must not end before it has run them
    spec = load_spec(write(tmp_path / "s.toml", "lr = [3e-3, 1e-2, 3e-2]\nseed = [0, 1, 2]", "lr = {seeds = 1}"))
    summary = run_study(spec)
    (cell,) = summary["search"]["cells"]
    assert cell["state"] == "bracketed" and cell["best_lr"] == 0.01 and cell["seeds"] == 3
    assert summary["counts"] == {"done": 5, "running": 0, "failed": 0, "diverged": 0, "pending": 0}
    assert sorted((c["lr"], c["seed"]) for c in fake.trained) == [(3e-3, 0), (1e-2, 0), (1e-2, 1), (1e-2, 2), (3e-2, 0)]


def test_the_best_rate_is_ranked_on_the_seeds_every_rate_has():
    from beyondbp.study.selection import best_lr_table

    def point(i, lr, seed, loss):
        return {"index": i, "id": str(i), "label": "backprop", "N": 10, "D": 10, "C": 100.0, "loss": loss,
                "seed": seed, "lr": lr, "axes": {}, "steps": 10}

    # 0.01 has three seeds (two added at it), 0.1 one: on seed 0, 0.01 is better (1.0 < 1.2);
    # the mean over every seed would pick 0.1 (1.37 > 1.2)
    points = [point(0, 0.01, 0, 1.0), point(1, 0.01, 1, 1.5), point(2, 0.01, 2, 1.6), point(3, 0.1, 0, 1.2)]
    (row,), _, kept = best_lr_table(points, [])
    assert row.best_lr == 0.01 and row.n_seeds == 3 and kept == {0, 1, 2}
    assert row.mean_loss == pytest.approx((1.0 + 1.5 + 1.6) / 3)
    # what the report shows for each rate is the mean the rank rests on (seed 0), and it says so
    assert row.ranked_seeds == ("0",)
    assert {x.lr: (x.ranked_loss, x.n_seeds) for x in row.mean_loss_by_lr} == {0.01: (1.0, 3), 0.1: (1.2, 1)}
    assert list(row.to_dict()["ranked_seeds"]) == ["0"]
    from beyondbp.reporting.study_page import best_lr_blocks, markdown_page

    text = markdown_page(best_lr_blocks([row]))
    assert "0.01: 1, 0.1: 1.2 (on seed 0)" in text and "which is what ranks the rates" in text
    # a cell whose rates all have the same seeds shows plain means and no note
    even = [point(0, 0.01, 0, 1.0), point(1, 0.01, 1, 1.5), point(2, 0.1, 0, 1.2), point(3, 0.1, 1, 1.4)]
    (row,), _, _ = best_lr_table(even, [])
    assert row.ranked_seeds is None and "ranked_seeds" not in row.to_dict()
    text = markdown_page(best_lr_blocks([row]))
    assert "0.01: 1.25, 0.1: 1.3" in text and "(on seed" not in text and "which is what ranks" not in text


def test_search_is_deterministic_across_an_interruption(tmp_path, fake):
    axes = 'rule = ["backprop", "dfa"]\nlr = [1e-4, 3e-4]\nseed = [0, 1]'
    search = "lr = {factor = 3, max_rounds = 6, refine = true}"
    whole = run_study(load_spec(write(tmp_path / "a.toml", axes, search, name="same")))
    spec = load_spec(write(tmp_path / "b.toml", axes, search, name="same"))
    seen = []

    def stop(event, info):
        if event == "finished":
            seen.append(info["id"])
            if len(seen) == 11:  # in the middle of the second round
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(spec, progress=stop)
    with Store(tmp_path / "b.db") as store:
        assert 0 < sum(1 for s in store.statuses().values() if s == "done") < whole["total"]
    resumed = run_study(spec)

    def rows(path):
        with Store(path) as store:
            return sorted((r["id"], r["status"], r["label"], json.dumps(r["axes"], sort_keys=True)) for r in store.records())

    assert rows(tmp_path / "a.db") == rows(tmp_path / "b.db")
    assert resumed["search"] == whole["search"]
    assert check_study(spec) == []


def test_dry_run_lists_the_search_runs_known_so_far(tmp_path, fake, capsys):
    path = write(tmp_path / "s.toml", "lr = [1e-4, 3e-4]", "lr = {factor = 3, max_rounds = 6}\nseeds = {min = 2, max = 3}")
    code, out, _ = cli(capsys, "study", "run", path, "--dry-run")
    assert code == 0 and "4 runs" in out and not (tmp_path / "s.db").exists()  # 2 rates × 2 seeds (min)
    run_study(load_spec(path))
    code, out, _ = cli(capsys, "study", "run", path, "--dry-run")
    assert code == 0 and "0 of" in out


# -- seeds on demand ----------------------------------------------------------------------------
def test_seeds_are_added_to_frontier_cells_while_undecided_up_to_max(tmp_path, fake):
    # fa and backprop have the same loss (the fake's lr* differs only for dfa): undecided at any seed count
    axes = 'rule = ["backprop", "fa"]\nlr = [1e-3, 1e-2]\nsteps = [10, 20, 40]\nseed = [0]'
    spec = load_spec(write(tmp_path / "s.toml", axes, "seeds = {min = 2, max = 4}"))
    plan = plan_search(spec, [])
    assert {c.seeds for c in plan.cells} == {2} and len(plan.runs) == 2 * 2 * 3 * 2  # min seeds from the start
    summary = run_study(spec)
    got = {c["seeds"] for c in summary["search"]["cells"]}
    assert max(got) == 4 and summary["search"]["seed_rounds"] == 2
    assert judge_study(study_records(spec), loss_law=False, n_bootstrap=40).verdicts["fa"].cls == "undecided"
    extra = [r for r in study_records(spec) if r["config"]["seed"] >= 2]  # added seeds: at the best rate only
    assert extra and all(r["config"]["lr"] == 1e-2 for r in extra)
    # dfa's best rate (1e-2, lr* 5e-3) is worse by (ln 2)²: undecided with 2 seeds, D with 3: one round
    axes = axes.replace('"fa"', '"dfa"')
    spec = load_spec(write(tmp_path / "d.toml", axes, "seeds = {min = 2, max = 6}", name="d"))
    summary = run_study(spec)
    assert {c["seeds"] for c in summary["search"]["cells"]} == {3} and summary["search"]["seed_rounds"] == 1
    assert judge_study(study_records(spec), loss_law=False, n_bootstrap=40).verdicts["dfa"].cls == "D"


def test_a_verdict_from_fewer_than_three_seeds_is_undecided(tmp_path, monkeypatch, fake):
    real_submit = FakePool.submit

    def submit(self, config, lease=None):
        handle = real_submit(self, config, lease)
        steps = int(config["steps"])
        self.handles[handle]["result"]["final"]["test_loss"] = (
            1 + 10 / steps + (0.5 if config["rule"] == "dfa" else 0) + 0.001 * config["seed"])
        return handle

    monkeypatch.setattr(FakePool, "submit", submit)
    axes = 'rule = ["backprop", "dfa"]\nlr = [1e-2]\nsteps = [10, 20, 40, 80]\nseed = [0, 1]'
    spec = load_spec(write(tmp_path / "s.toml", axes))
    run_study(spec)
    verdict = judge_study(study_records(spec), loss_law=False, n_bootstrap=40).verdicts["dfa"]
    assert verdict.cls == "undecided" and verdict.point_estimate_class == "D"
    assert "undecided" in verdict.sentence and "fewer than 3 seeds" in verdict.sentence


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("search, place, words", [
    ("lr = {factor = 1}", "[search] lr.factor", "must be a number greater than 1"),
    ("lr = {factor = 0.5}", "[search] lr.factor", "got 0.5"),
    ("lr = {max_rounds = -1}", "[search] lr.max_rounds", "from 0 to"),
    ("lr = {refine = 1}", "[search] lr.refine", "true or false"),
    ("lr = {margin = -0.1}", "[search] lr.margin", "from 0 to 1"),
    ("lr = {seeds = 0}", "[search] lr.seeds", "a whole number of at least 1"),
    ("lr = {factr = 3}", "[search] lr.factr", "unknown key; [search] lr takes factor"),
    ("lr = 3", "[search] lr", "must be a table"),
    ("seeds = {min = 5, max = 3}", "[search] seeds.max", "from min to"),
    ("seeds = {min = 0}", "[search] seeds.min", "at least 1"),
    ("seeds = {min = 2, max = 2}", "[search] seeds.max", "fewer than the 3 seeds of [axes] seed"),
    ("seeds = {baseline = 'fa'}", "[search] seeds.baseline", "not a rule label"),
    ("steps = {factor = 2}", "[search] steps", "not a searchable axis"),
])
def test_bad_search_settings_are_one_line_exit_2_nothing_written(tmp_path, capsys, search, place, words):
    path = write(tmp_path / "s.toml", 'rule = ["backprop", "dfa"]\nlr = [1e-3]\nseed = [0, 1, 2]', search)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"s.toml: {place}: ") and words in str(info.value)
    code, out, err = cli(capsys, "study", "run", path)
    assert code == 2 and place in err and not (tmp_path / "s.db").exists()


def test_a_search_on_an_lr_axis_the_spec_lacks_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\[search\] lr: the spec has no lr axis"):
        load_spec(write(tmp_path / "s.toml", "seed = [0]", "lr = {factor = 3}"))


# -- for real -----------------------------------------------------------------------------------
def test_a_real_tiny_study_brackets_its_learning_rate(tmp_path):
    spec = load_spec(write(tmp_path / "s.toml", "lr = [1e-4, 1e-3]", "lr = {factor = 10, max_rounds = 3}",
                           base=BASE.replace("steps = 10", "steps = 30")))
    summary = run_study(spec)
    (cell,) = summary["search"]["cells"]
    # sgd at 1e-4 and 1e-3 barely moves in 30 steps: the best is at the largest edge, so larger
    # rates are tried until one is worse or diverges
    assert cell["added"] >= 1 and max(cell["lrs"]) >= 1e-2
    assert cell["state"] in ("bracketed", "bounded by divergence", "capped at 3 rounds")
    assert summary["counts"]["pending"] == 0 and summary["total"] == len(cell["lrs"])
    assert cell["best_lr"] is not None and cell["best_lr"] > 1e-3
