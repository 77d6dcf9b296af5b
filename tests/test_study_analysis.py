"""The study analysis: best learning rate per group, frontier and L(N, D) fits per label with
bootstrap over seeds, the A/B/C/D/undecided verdict against backprop (synthetic records drawn from
known laws, shaped like ``Store.records()``)."""

import copy
import json
import math

import numpy as np
import pytest

from beyondbp.errors import ConfigError
from beyondbp.study.verdict import classify, judge_study

BATCH = 10
SIZES = (1_000, 3_000, 10_000, 30_000)
STEPS = (100, 300, 1_000)


def bp_law(N, D, C):
    return 1.0 + 100.0 * C**-0.2


def record(i, label, N, steps, seed, lr, loss, status="done"):
    """One record as ``Store.records()`` gives it: a classifier run of N parameters, ``steps``
    steps of BATCH samples, ``6 N BATCH`` FLOPs per step."""
    fps = 6 * N * BATCH
    result = {
        "status": "ok" if status == "done" else status,
        "final": {"test_loss": loss, "test_accuracy": 0.5},
        "history": [{"epoch": 1, "step": steps, "test_loss": loss}],
        "flops_per_step": fps, "steps": steps, "n_params": N, "n_active_params": N, "tokens": None,
    }  # fmt: skip
    return {
        "id": f"{i:016x}", "status": status, "label": label,
        "axes": {"rule": label, "model_options": {"widths": [N // 100]}, "steps": steps, "seed": seed, "lr": lr},
        "config": {"rule": label, "batch_size": BATCH, "steps": steps, "seed": seed, "lr": lr},
        "result": result if status in ("done", "diverged") else None,
        "error": "boom" if status == "failed" else None, "attempts": 1, "host": "h",
        "versions": {"beyondbp": "0.1.0", "torch": "2", "python": "3"}, "wall_time": 1.0, "n_params": N,
        "flops_per_step": fps, "flops_total": fps * steps, "eval_flops": 0, "seed": seed,
        "diverged_at_step": steps if status == "diverged" else None, "started_at": 0, "finished_at": 1,
    }  # fmt: skip


def records_for(label, law, *, seeds=(0, 1, 2), lrs=(1e-3,), noise=0.01, lr_loss=None, sizes=SIZES, steps=STEPS, rng, start=0):
    out = []
    for N in sizes:
        for s in steps:
            for seed in seeds:
                for lr in lrs:
                    C = 6.0 * N * BATCH * s
                    loss = law(N, s * BATCH, C) * math.exp(noise * rng.standard_normal())
                    if lr_loss is not None:
                        loss += lr_loss(lr)
                    out.append(record(start + len(out), label, N, s, seed, lr, loss))
    return out


def study(rule_law, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    recs = records_for("backprop", bp_law, noise=noise, rng=rng)
    return recs + records_for("rule", rule_law, noise=noise, rng=rng, start=1000)


LAWS = {
    "A": lambda N, D, C: 1.0 + 75.0 * C**-0.2,
    "D": lambda N, D, C: 1.0 + 130.0 * C**-0.2,
    # both cross backprop's frontier near C = 1e8 (the middle of the range 6e6 .. 1.8e9)
    "B": lambda N, D, C: 0.5 + 756.6 * C**-0.3,
    "C": lambda N, D, C: 1.5 + 12.69 * C**-0.1,
}


@pytest.mark.parametrize("outcome", ["A", "B", "C", "D"])
def test_outcome_classes(outcome):
    a = judge_study(study(LAWS[outcome]), n_bootstrap=30, loss_law=False)
    v = a.verdicts["rule"]
    assert v.cls == outcome, v.sentence
    assert v.sentence.startswith(f"rule vs backprop: {outcome} — ")
    if outcome in ("B", "C"):
        (cross,) = v.studied.crossover.median
        assert 5e7 < cross < 2e8
    else:
        assert v.studied.crossover.median == ()
        assert "no crossover" in v.sentence
    assert v.extrapolated is not None and v.extrapolated.to == pytest.approx(10 * v.range[1])
    data = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert data["verdicts"]["rule"]["class"] == outcome and data["verdicts"]["rule"]["sentence"] == v.sentence
    assert data["verdicts"]["rule"]["extrapolated"]["to"] == v.extrapolated.to


def test_undecided_when_noise_is_too_large():
    a = judge_study(study(lambda N, D, C: 1.0 + 102.0 * C**-0.2, noise=0.3, seed=1), n_bootstrap=30, loss_law=False)
    v = a.verdicts["rule"]
    assert v.cls == "undecided", v.sentence


def test_classify_rule():
    C = [1.0, 2.0, 3.0, 4.0]
    assert classify(C, [1, 1, 1, 1], [2, 2, 2, 2])[0] == "D"
    assert classify(C, [-1, 1, 1, 1], [2, 2, 2, 2])[0] == "D"  # overlap at small compute only
    assert classify(C, [1, 1, 1, -1], [2, 2, 2, 2])[0] == "undecided"  # overlap at the largest
    assert classify(C, [-2] * 4, [-1] * 4)[0] == "A"
    assert classify(C, [1, -1, -2, -2], [2, 1, -1, -1])[0] == "B"
    assert classify(C, [-2, -1, 1, 1], [-1, 1, 2, 2])[0] == "C"
    assert classify(C, [1, -2, 1, -2], [2, -1, 2, -1])[0] == "undecided"
    assert classify(C, [-1] * 4, [1] * 4)[0] == "undecided"


def test_recovers_known_frontier():
    a = judge_study(study(LAWS["D"], noise=0.003), n_bootstrap=30, loss_law=False)
    fr = a.fits["backprop"].frontier
    assert fr.fitted and fr.resampled == "seeds"
    assert fr.fit.E == pytest.approx(1.0, abs=0.15)
    assert fr.fit.alpha == pytest.approx(0.2, abs=0.03)
    assert fr.fit.A == pytest.approx(100.0, rel=0.5)
    assert fr.intervals.low["alpha"] <= fr.intervals.estimate["alpha"] <= fr.intervals.high["alpha"]
    assert a.fits["rule"].frontier.fit.alpha == pytest.approx(0.2, abs=0.03)


def test_recovers_known_loss_law():
    rng = np.random.default_rng(3)
    law = lambda N, D, C: 1.5 + 400.0 / N**0.35 + 600.0 / D**0.3  # noqa: E731
    recs = records_for("backprop", law, noise=0.002, rng=rng, steps=(100, 300, 1000, 3000))
    a = judge_study(recs, n_bootstrap=20).to_dict()
    ll = a["fits"]["backprop"]["loss_law"]
    assert ll["fitted"], ll
    assert ll["fit"]["E"] == pytest.approx(1.5, abs=0.3)
    assert ll["fit"]["alpha"] == pytest.approx(0.35, abs=0.08)
    assert ll["fit"]["beta"] == pytest.approx(0.3, abs=0.08)
    assert set(ll["intervals"]) == {"E", "A", "B", "alpha", "beta"}
    assert a["verdicts"] == {}  # no other label


def test_best_lr_selection_and_edge_warning():
    rng = np.random.default_rng(4)
    lrs = (1e-4, 1e-3, 1e-2)
    middle = records_for("backprop", bp_law, lrs=lrs, rng=rng, lr_loss=lambda lr: 0.3 * (math.log10(lr) + 3) ** 2)
    edge = records_for("dfa", bp_law, lrs=lrs, rng=rng, start=1000, lr_loss=lambda lr: 0.3 * (math.log10(lr) + 1) ** 2)
    a = judge_study(middle + edge, n_bootstrap=10, loss_law=False).to_dict()
    rows = {(r["label"], r["N"], r["D"]): r for r in a["best_lr"]}
    assert len(rows) == 2 * len(SIZES) * len(STEPS)
    for (label, _, _), row in rows.items():
        assert row["n_seeds"] == 3 and row["lr_grid"] == list(lrs) and row["selected"]
        assert row["best_lr"] == (1e-3 if label == "backprop" else 1e-2)
        assert row["edge"] == (None if label == "backprop" else "largest")
    edge_warnings = [w for w in a["warnings"] if "not trustworthy" in w]
    assert len(edge_warnings) == len(SIZES) * len(STEPS) and all(w.startswith("dfa ") for w in edge_warnings)
    assert sum(r["best_lr"] for r in a["runs"]) == 2 * 3 * len(SIZES) * len(STEPS)
    assert not any("single learning rate" in n for n in a["notes"])


def test_single_lr_is_said():
    a = judge_study(study(LAWS["D"]), n_bootstrap=10, loss_law=False).to_dict()
    assert any("single learning rate" in n for n in a["notes"])
    assert all(not r["selected"] and r["edge"] is None for r in a["best_lr"])
    assert not any("not trustworthy" in w for w in a["warnings"])


def test_too_few_points_give_reasons_not_errors():
    rng = np.random.default_rng(5)
    recs = records_for("backprop", bp_law, rng=rng, sizes=(1_000, 3_000), steps=(100,))
    recs += records_for("dfa", LAWS["D"], rng=rng, sizes=(1_000, 3_000), steps=(100,), start=100)
    a = judge_study(recs, n_bootstrap=10).to_dict()
    for label in ("backprop", "dfa"):
        assert not a["fits"][label]["frontier"]["fitted"]
        assert "too few frontier points" in a["fits"][label]["frontier"]["reason"]
        assert "too few distinct (N, D) points" in a["fits"][label]["loss_law"]["reason"]
    v = a["verdicts"]["dfa"]
    assert v["class"] == "undecided" and "no frontier fit" in v["sentence"]
    json.dumps(a, allow_nan=False)


def test_empty_and_baseline_missing():
    a = judge_study([]).to_dict()
    assert a["verdicts"] == {} and a["labels"] == [] and a["runs"] == []
    rng = np.random.default_rng(6)
    a = judge_study(records_for("dfa", bp_law, rng=rng), n_bootstrap=10, loss_law=False).to_dict()
    assert a["verdicts"] == {} and any("no finished runs of the baseline" in w for w in a["warnings"])


def test_one_seed_resamples_points():
    rng = np.random.default_rng(7)
    a = judge_study(records_for("backprop", bp_law, rng=rng, seeds=(0,)), n_bootstrap=10, loss_law=False).to_dict()
    fr = a["fits"]["backprop"]["frontier"]
    assert fr["fitted"] and fr["resampled"] == "points" and "one seed" in fr["note"]


def test_diverged_and_failed_runs_are_listed_never_fitted():
    recs = study(LAWS["D"])
    # diverged runs with absurdly low losses: if they were fitted they would move the frontier
    bad = [record(5000 + i, "rule", 30_000, 1000, 0, 1e-3, 1e-3, status="diverged") for i in range(3)]
    bad += [record(6000, "rule", 30_000, 1000, 1, 1e-3, 1e-3, status="failed")]
    bad += [record(6001, "rule", 30_000, 1000, 2, 1e-3, 1e-3, status="pending")]
    ref = judge_study(recs, n_bootstrap=10, loss_law=False).to_dict()
    a = judge_study(recs + bad, n_bootstrap=10, loss_law=False).to_dict()
    assert a["counts"] == {"done": len(recs), "diverged": 3, "failed": 1, "pending": 1}
    assert len(a["diverged"]) == 3 and a["diverged"][0]["diverged_at_step"] == 1000
    assert len(a["failed"]) == 1 and a["failed"][0]["error"] == "boom"
    assert {r["id"] for r in a["runs"]} == {r["id"] for r in recs}
    assert a["fits"]["rule"]["frontier"]["fit"] == ref["fits"]["rule"]["frontier"]["fit"]
    assert any("diverged" in n for n in a["notes"])


def test_done_run_without_a_loss_is_excluded_with_reason():
    recs = study(LAWS["D"])
    broken = copy.deepcopy(recs[0])
    broken["id"] = "broken"
    broken["result"]["final"]["test_loss"] = None
    a = judge_study(recs + [broken], n_bootstrap=10, loss_law=False).to_dict()
    assert a["excluded"] == [{"id": "broken", "label": "backprop", "reason": "no finite positive loss in the result"}]


def test_language_model_records_use_tokens_and_val_loss():
    recs = study(LAWS["D"])
    for r in recs:
        r["result"]["tokens"] = r["result"]["steps"] * 640
        r["result"]["final"]["val_loss"] = r["result"]["final"].pop("test_loss")
    a = judge_study(recs, n_bootstrap=10, loss_law=False).to_dict()
    run = a["runs"][0]
    assert run["loss_name"] == "val_loss" and run["D"] == recs[0]["result"]["tokens"]
    assert a["unit"] == "nats/token" and "nats/token" in a["verdicts"]["rule"]["sentence"]


def test_does_not_mutate_input():
    recs = study(LAWS["B"]) + [record(9000, "rule", 1000, 100, 0, 1e-3, 5.0, status="diverged")]
    recs += [record(9001, "rule", 1000, 100, 1, 1e-3, 5.0, status="failed")]
    before = copy.deepcopy(recs)
    judge_study(recs, n_bootstrap=10, loss_law_starts=[[5.0, 5.0, 0.0, 0.3, 0.3]])
    assert recs == before


def test_degenerate_or_failing_fits_give_reasons(monkeypatch):
    from beyondbp.analysis.scaling import FrontierFit, LossLawFit
    from beyondbp.study import verdict as analysis_mod

    # a fit whose irreducible loss underflowed to 0 (seen on data where the loss depends on N x D only)
    monkeypatch.setattr(analysis_mod, "fit_loss_law", lambda *a, **k: LossLawFit(0.0, 80.0, 90.0, 0.4, 0.5, 1e-3, 36, 1, 1e-3))
    monkeypatch.setattr(analysis_mod, "fit_frontier", lambda *a, **k: FrontierFit(0.0, 80.0, 0.4, 1e-3, 10, 1, 1e-3))
    a = judge_study(study(LAWS["B"]), n_bootstrap=10).to_dict()
    for label in ("backprop", "rule"):
        assert "degenerate: E went to 0" in a["fits"][label]["loss_law"]["reason"]
        assert "degenerate: E went to 0" in a["fits"][label]["frontier"]["reason"]
    # the verdict rests on the frontier points themselves (law B: backprop better small, the rule at scale)
    v = a["verdicts"]["rule"]
    assert v["class"] == "B" and "frontier points" in v["basis"] and "not identified" in v["sentence"], v["sentence"]
    assert "extrapolated" not in v and v["extrapolated_sentence"].startswith("Not extrapolated beyond")
    json.dumps(a, allow_nan=False)

    # Python's own words for a failed evaluation ("math domain error", "math range error") are
    # turned into what they mean for the law; any other message is passed on as it is
    for exc, said in ((ValueError("math domain error"), "left the range where the law is defined (math domain error)"),
                      (OverflowError("math range error"), "values too large to evaluate (overflow)"),
                      (ValueError("no finite start"), "no finite start")):
        def fails(*args, exc=exc, **kwargs):
            raise exc

        monkeypatch.setattr(analysis_mod, "fit_loss_law", fails)
        monkeypatch.setattr(analysis_mod, "fit_frontier", fails)
        a = judge_study(study(LAWS["B"]), n_bootstrap=10).to_dict()
        assert a["fits"]["rule"]["loss_law"]["reason"].startswith("the L(N, D) fit failed: ")
        assert said in a["fits"]["rule"]["loss_law"]["reason"]
        assert a["fits"]["rule"]["frontier"]["reason"].startswith("the frontier fit failed: ")
        assert said in a["fits"]["rule"]["frontier"]["reason"]


def test_bad_arguments():
    for kwargs in ({"extrapolate": 0.5}, {"n_bootstrap": 1}, {"level": 1.0}, {"baseline": ""}, {"seed": -1}):
        with pytest.raises(ConfigError):
            judge_study([], **kwargs)


def test_few_seeds_give_a_caution():
    rng = np.random.default_rng(8)
    recs = records_for("backprop", bp_law, rng=rng, seeds=(0, 1))
    recs += records_for("rule", LAWS["D"], rng=rng, seeds=(0, 1), start=1000)
    v = judge_study(recs, n_bootstrap=10, loss_law=False).verdicts["rule"]
    assert "few seeds (rule: 2, backprop: 2)" in v.caveat and "(caution: few seeds" in v.sentence
    assert "caveat" in v.to_dict()
    enough = judge_study(study(LAWS["D"]), n_bootstrap=10, loss_law=False).verdicts["rule"]
    assert enough.caveat is None and "caveat" not in enough.to_dict()


def test_disjoint_compute_ranges_are_undecided():
    rng = np.random.default_rng(9)
    recs = records_for("backprop", bp_law, rng=rng, sizes=(1_000, 3_000))
    recs += records_for("rule", LAWS["A"], rng=rng, sizes=(100_000, 300_000), start=1000)
    v = judge_study(recs, n_bootstrap=10, loss_law=False).verdicts["rule"]
    assert v.cls == "undecided" and "do not overlap" in v.sentence
    assert list(v.to_dict()) == ["label", "baseline", "level", "class", "reason", "sentence"]


def test_a_learning_rate_with_a_diverged_run_ranks_last():
    rng = np.random.default_rng(10)
    lrs = (1e-3, 1e-2)
    recs = records_for("backprop", bp_law, lrs=lrs, rng=rng, sizes=(1_000,), steps=(100,), lr_loss=lambda lr: 0.5 * (lr == 1e-3))
    a = judge_study(recs, n_bootstrap=10, loss_law=False)
    assert a.best_lr[0].best_lr == 1e-2
    # one more seed at lr 1e-2 diverged: 1e-3 wins although its finished runs are worse
    recs.append(record(99, "backprop", 1_000, 100, 3, 1e-2, 5.0, status="diverged"))
    (row,) = judge_study(recs, n_bootstrap=10, loss_law=False).best_lr
    assert row.best_lr == 1e-3 and row.edge == "smallest"
    assert {x.lr: x.n_diverged for x in row.mean_loss_by_lr} == {1e-3: 0, 1e-2: 1}


def test_a_bootstrap_without_distinct_resamples_gives_undecided():
    """One seed and four frontier points per label: every admissible resample is the full data,
    so the intervals have no width; the verdict must not claim a class from them."""
    recs = []
    for label, E in (("backprop", 1.0), ("dfa", 1.5)):
        for i, C in enumerate([1e6, 1e7, 1e8, 1e9]):
            loss = E + 50.0 * C ** -0.3
            recs.append(_four_point_record(label, C, loss, i))
    out = judge_study(recs, n_bootstrap=30, loss_law=False)
    v = out.verdicts["dfa"]
    assert out.fits["dfa"].frontier.distinct_resamples < 3
    assert v.cls == "undecided" and v.point_estimate_class == "D"
    assert "too few distinct resamples" in v.sentence and "point estimates alone would say D" in v.sentence
    # holding out the largest compute leaves 3 points: the predictive check cannot be made, so no extrapolation
    assert v.extrapolated is None and "could not be checked against its own largest compute" in v.extrapolated_sentence
    data = v.to_dict()  # today's keys in today's order
    assert list(data) == ["label", "baseline", "level", "class", "reason", "range", "studied", "sentence",
                          "point_estimate_class", "caveat", "extrapolated_sentence"]


def _four_point_record(label, C, loss, i):
    N = 1000 * (i + 1)
    steps = int(C / (6 * N * 32)) or 1
    return {
        "id": f"{label}-{i}", "status": "done", "label": label,
        "axes": {"rule": label, "model_options": {"widths": [i]}},
        "config": {"rule": label, "lr": 1e-3, "seed": 0, "batch_size": 32, "steps": steps, "data": "mnist1d"},
        "result": {"status": "ok", "n_params": N, "flops_per_step": C / steps, "steps": steps,
                   "final": {"test_loss": loss}, "history": []},
        "error": None, "n_params": N, "flops_per_step": C / steps, "flops_total": C, "eval_flops": 0,
        "seed": 0, "diverged_at_step": None,
    }


def test_the_studied_range_ends_where_a_label_stopped_improving():
    """Runs beyond a label's last frontier point did worse: the fitted law there is an
    extrapolation, so the verdict's studied range stops at that point."""
    recs = []
    for seed in (0, 1, 2):
        for i, C in enumerate([1e6, 1e7, 1e8, 1e9, 1e10]):
            recs.append(_four_point_record("backprop", C, 1.0 + 50.0 * C ** -0.3 + 0.001 * seed, i) | {"seed": seed})
            worse = 1.2 + 50.0 * min(C, 1e8) ** -0.3 + (0.5 if C > 1e8 else 0.0) + 0.001 * seed
            recs.append(_four_point_record("dfa", C, worse, i) | {"seed": seed})
    for r in recs:
        r["config"] = dict(r["config"], seed=r["seed"])
        r["id"] = f"{r['id']}-{r['seed']}"
    out = judge_study(recs, n_bootstrap=20, loss_law=False)
    assert out.fits["dfa"].frontier_range[1] == pytest.approx(1e8, rel=0.01)
    assert out.fits["dfa"].compute_range[1] == pytest.approx(1e10, rel=0.01)
    assert out.verdicts["dfa"].range[1] == pytest.approx(1e8, rel=0.01)
