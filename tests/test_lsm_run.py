"""Liquid-state-machine runs (training/liquid.py): the two-phase protocol through the run loop,
the feature cache, the readout rules, the per-run measurements, bad input. Tiny liquids on the
8×8 digits (100 neurons, ≤ 80 ms, ≤ 64 images)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from beyondbp import checkpoint, models, rules
from beyondbp.cli import main
from beyondbp.errors import BeyondBPError, ConfigError
from beyondbp.training import RunConfig, run

LIQUID = {"grid": [5, 5, 4], "duration": 80, "feature_batch": 16}


def config(cache: Path, rule: str = "nalsm", model_options=None, **kw) -> RunConfig:
    values = dict(rule=rule, model="lsm", data="digits", n_train=48, n_test=24, epochs=2, batch_size=16, lr=0.05,
                  feature_cache=str(cache), model_options={**LIQUID, **(model_options or {})})
    if rule in ("nalsm", "stdp"):
        values["rule_options"] = {"init_images": 6}
    values.update(kw)
    return RunConfig(**values)


def curve(result):
    return [(h["train_loss"], h["test_loss"], h["test_accuracy"]) for h in result.history]


def test_cached_features_train_exactly_like_freshly_generated_ones(tmp_path):
    first = run(config(tmp_path / "a"))
    again = run(config(tmp_path / "a"))  # loads the cache entry
    fresh = run(config(tmp_path / "b"))  # generates it anew elsewhere
    assert first.data["liquid"]["cached"] is False and again.data["liquid"]["cached"] is True
    assert curve(first) == curve(again) == curve(fresh)
    assert first.spikes == again.spikes == fresh.spikes
    assert len(list((tmp_path / "a").glob("*.pt"))) == 1
    assert not [p for p in (tmp_path / "a").iterdir() if p.suffix != ".pt"]  # no temporaries left
    # the readout learned on the features (epochs did not re-simulate: one generation)
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]


def test_readout_rules_share_one_fixed_liquid_and_feedback_alignment_trains_a_two_layer_readout(tmp_path):
    two_layer = {"readout_hidden": 16}
    bp = run(config(tmp_path, "backprop", two_layer, epochs=4))
    fa = run(config(tmp_path, "fa", two_layer, epochs=4))
    assert len(list(tmp_path.glob("*.pt"))) == 1  # the readout's rule is not part of the features
    assert fa.data["liquid"]["cached"] and fa.data["liquid"]["rule"] == "fixed"
    assert fa.history[-1]["train_loss"] < fa.history[0]["train_loss"] - 0.05
    assert curve(bp) != curve(fa)
    # a plastic liquid's readout trained by FA: the rule option readout_rule
    nalsm_fa = run(config(tmp_path, "nalsm", two_layer, rule_options={"init_images": 6, "readout_rule": "fa"}))
    assert nalsm_fa.data["liquid"]["rule"] == "nalsm" and len(list(tmp_path.glob("*.pt"))) == 2


def test_each_run_records_the_liquids_measurements(tmp_path):
    result = run(config(tmp_path))
    liquid = result.spikes["liquid"]
    assert set(liquid) >= {"branching_factor", "rate_exc_hz", "rate_inh_hz", "rate_input_hz", "silent_fraction",
                           "rate", "silent"}
    assert math.isfinite(liquid["branching_factor"]) and liquid["branching_factor"] > 0
    assert 0 <= liquid["silent"] <= 1 and liquid["rate_input_hz"] > 0 and 0 < liquid["rate"] < 1
    assert result.data["liquid"]["measurements"] == liquid
    json.dumps(result.to_dict())  # recorded like any result field


def test_phase_one_sets_w_ini_and_a_fixed_liquid_keeps_its_weights(tmp_path):
    fresh = models.build("lsm", (1, 8, 8), 10, **LIQUID).liquid.weight.detach().clone()
    plastic = run(config(tmp_path, checkpoint=str(tmp_path / "n.pt")))
    fixed = run(config(tmp_path, "backprop", checkpoint=str(tmp_path / "b.pt")))
    assert plastic.data["liquid"]["init_images"] == 6 and fixed.data["liquid"]["init_images"] == 0
    for path, changed in (("n.pt", True), ("b.pt", False)):
        model = models.build("lsm", (1, 8, 8), 10, **LIQUID)
        meta = checkpoint.load(tmp_path / path, model, weights_only=True)
        assert meta["input_shape"] == [1, 8, 8]
        assert (not torch.equal(model.liquid.weight, fresh)) == changed, path


def test_w_liquid_scales_the_recurrent_synapses_only():
    liq = models.build("lsm", (1, 8, 8), 3, grid=[4, 4, 3], w_liquid=0.5).liquid
    rec = liq.kind != 2
    assert (liq.weight[rec].abs() == 0.5).all() and (liq.weight[~rec].abs() == 3.0).all()


def test_w_init_scales_every_synapse_the_authors_fixed_liquid_scale():
    # the authors' INTIAL_ABS_W_SCLR: one magnitude for E→E, E→I, I→E, I→I and input→liquid
    liq = models.build("lsm", (1, 8, 8), 3, grid=[4, 4, 3], w_init=0.7).liquid
    for kind in (0, 1, 2):
        assert (liq.weight[liq.kind == kind].abs() == 0.7).all()
    assert {bool(e) for e in liq.is_exc[liq.post[liq.kind == 0]]} == {True, False}  # E→E and E→I present


def test_adadelta_is_a_run_optimizer(tmp_path):
    result = run(config(tmp_path, "backprop", optimizer="adadelta", lr=1.0, weight_decay=5e-10))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("changes, match", [
    (dict(data="mnist1d", n_train=32, n_test=8), "images"),
    (dict(rule_options={"readout_rule": "stdp"}), "readout"),
    (dict(rule_options={"mode": "persistent"}), "transient"),
    (dict(rule_options={"readout_rule": "nope"}), "nope"),
    (dict(init_from="x.pt"), "init_from"),
])
def test_bad_liquid_runs_are_refused_before_anything_is_simulated(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match) as exc:
        run(config(tmp_path / "cache", **changes))
    assert "\n" not in str(exc.value) and not (tmp_path / "cache").exists()


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


TINY = ["--model", "lsm", "--data", "digits", "--n-train", "32", "--n-test", "16", "--epochs", "1",
        "--model-opt", "grid=[5,5,4]", "--model-opt", "duration=80", "--rule-opt", "init_images=4"]


def test_cli_trains_a_liquid_and_shows_its_measurements(capsys, tmp_path):
    cache, out_dir = tmp_path / "features", tmp_path / "out"
    code, out, err = cli(capsys, "train", "--rule", "nalsm", *TINY, "--feature-cache", cache, "--out", out_dir)
    assert code == 0, err
    assert "nalsm · lsm · digits" in out and "branching factor" in out and "excitatory" in out
    payload = json.loads((out_dir / "results.json").read_text())
    assert "branching_factor" in payload["runs"][0]["spikes"]["liquid"]
    assert len(list(cache.glob("*.pt"))) == 1


@pytest.mark.parametrize("args, match", [
    (["--rule", "nalsm", *TINY, "--model-opt", "tau_v=0"], "tau_v"),
    (["--rule", "nalsm", *TINY, "--model-opt", "tau_u=-1"], "tau_u"),
    (["--rule", "nalsm", "--model", "mlp", "--data", "digits", "--epochs", "1"], "liquid"),
    (["--rule", "backprop", "--model", "lsm", "--data", "mnist1d", "--epochs", "1", "--n-train", "32"], "images"),
    (["--rule", "backprop", "--model", "lsm", "--data", "shakespeare-char", "--steps", "1"], "gpt"),
])
def test_cli_refuses_bad_liquid_input_in_one_sentence(capsys, tmp_path, args, match):
    cache, out_dir = tmp_path / "features", tmp_path / "out"
    code, out, err = cli(capsys, "train", *args, "--feature-cache", cache, "--out", out_dir)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not cache.exists() and not out_dir.exists()


def test_plasticity_rules_on_other_models_stay_refused():
    with pytest.raises(BeyondBPError, match="liquid"):
        rules.get("nalsm").attach(models.build("snn-mlp", (1, 8, 8), 3))


def test_a_study_caches_features_beside_its_store(tmp_path):
    from beyondbp.study.runner import _worker_config, feature_dir

    store = tmp_path / "s.sqlite"
    values = _worker_config({"feature_cache": None}, "r", 1, None, None, None, feature_dir(store))
    assert values["feature_cache"] == str(tmp_path / "s.features")
    kept = _worker_config({"feature_cache": "/x"}, "r", 1, None, None, None, feature_dir(store))
    assert kept["feature_cache"] == "/x"
