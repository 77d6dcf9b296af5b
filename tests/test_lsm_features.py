"""A liquid run's cached features read back (training/liquid_features.py) and compared by the
representation measures (bench/lsm_representations.py). Tiny liquids on the 8×8 digits
(100 neurons, 40 ms, ≤ 24 images)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from beyondbp.cli import main
from beyondbp.errors import ConfigError
from beyondbp.training import RunConfig, prepare, run
from beyondbp.training.liquid_features import load_features

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "lsm_representations.py"
LIQUID = {"grid": [5, 5, 4], "duration": 40, "feature_batch": 8}


def config(cache: Path, rule: str = "nalsm", **kw) -> RunConfig:
    values = dict(rule=rule, model="lsm", data="digits", n_train=24, n_test=12, epochs=1, batch_size=16,
                  feature_cache=str(cache), model_options=dict(LIQUID))
    if rule == "nalsm":
        values["rule_options"] = {"init_images": 3}
    values.update(kw)
    return RunConfig(**values)


def load_bench(path: Path, name: str):
    """A bench script loaded as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lr():
    return load_bench(SCRIPT, "bench_lsm_representations")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A NALSM and a fixed liquid on the same 12 test images (one cache), and their configs."""
    cache = tmp_path_factory.mktemp("features")
    nalsm, fixed = config(cache), config(cache, "backprop")
    results = {"nalsm": run(nalsm), "fixed": run(fixed)}
    return cache, {"nalsm": nalsm, "fixed": fixed}, results


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_load_features_returns_what_the_run_trained_on(runs):
    cache, configs, results = runs
    path = Path(results["nalsm"].data["liquid"]["cache"])
    before = sha(path), path.stat().st_mtime_ns
    by_config, by_path = load_features(configs["nalsm"]), load_features(path)
    stored = torch.load(path, weights_only=True)
    for lf in (by_config, by_path):
        assert lf.counts_train.shape == (24, 100) and lf.counts_test.shape == (12, 100) and lf.neurons == 100
        assert torch.equal(lf.counts_train, stored["counts_train"]) and torch.equal(lf.counts_test, stored["counts_test"])
        assert torch.equal(lf.weight, stored["weight"]) and lf.record["init_images"] == 3
        assert lf.measurements == pytest.approx(results["nalsm"].spikes["liquid"], nan_ok=True)
    setup = prepare(configs["nalsm"])  # what the readout trains and is tested on (the cached entry)
    try:
        train, test = by_config.features()  # the model's default features="authors"
        assert torch.equal(train, setup.dataset.x_train) and torch.equal(test, setup.dataset.x_test)
        assert torch.equal(by_config.labels_test, setup.dataset.y_test)
        assert torch.equal(by_path.labels_train, setup.dataset.y_train)
    finally:
        setup.learner.detach()
    assert by_path.stimuli == by_config.stimuli and by_config.stimuli["n_test"] == 12
    assert torch.equal(by_config.features("counts")[1], stored["counts_test"].float())
    assert (sha(path), path.stat().st_mtime_ns) == before  # reading never writes
    assert len(list(cache.glob("*.pt"))) == 2


def test_load_features_reads_a_runs_output_folder(capsys, tmp_path):
    cache, out = tmp_path / "features", tmp_path / "out"
    args = ["train", "--rule", "backprop", "--model", "lsm", "--data", "digits", "--n-train", "16", "--n-test", "8",
            "--epochs", "1", "--model-opt", "grid=[5,5,4]", "--model-opt", "duration=40", "--feature-cache", cache,
            "--out", out]
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    assert info.value.code == 0, capsys.readouterr().err
    lf = load_features(out)
    entry = torch.load(next(cache.glob("*.pt")), weights_only=True)
    assert torch.equal(lf.counts_test, entry["counts_test"]) and lf.labels_test.shape == (8,)
    assert lf.record["config"]["n_test"] == 8 and load_features(out / "results.json").stimuli == lf.stimuli
    with pytest.raises(ConfigError, match="run=3"):
        load_features(out, run=3)
    with pytest.raises(ConfigError, match="run=True"):  # a bool is not a run index
        load_features(out, run=True)


def test_a_missing_entry_is_refused_in_one_sentence_unless_asked_to_generate(tmp_path):
    cfg = config(tmp_path / "cache", "backprop")
    with pytest.raises(ConfigError, match="not cached") as exc:
        load_features(cfg)
    text = str(exc.value)
    assert "\n" not in text and text.count(". ") == 0 and "beyondbp train" in text and "generate=True" in text
    assert not (tmp_path / "cache").exists()  # nothing written
    state = torch.random.get_rng_state()
    made = load_features(cfg, generate=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG untouched
    assert made.counts_test.shape == (12, 100) and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert torch.equal(load_features(cfg).counts_test, made.counts_test)


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "nope.pt", "no liquid feature cache file"),
    (lambda d: d, "without results.json"),
    (lambda d: (d / "x.pt").write_bytes(b"not torch") and d / "x.pt", "not a liquid feature cache file"),
    (lambda d: (d / "r.json").write_text("{}") and d / "r.json", "not a readable beyondbp results.json"),
    (lambda d: (d / "r.json").write_text('{"runs": [{"data": {"liquid": {"cache": "x.pt"}}}]}') and d / "r.json",
     "not a readable beyondbp results.json"),  # a liquid run without its config
    (lambda d: (d / "r.json").write_text('{"runs": [{"data": {"liquid": {}}, "config": {}}]}') and d / "r.json",
     "not a readable beyondbp results.json"),  # ... without its cache
])
def test_bad_sources_are_refused_in_one_sentence(tmp_path, make, match):
    with pytest.raises(ConfigError, match=match) as exc:
        load_features(make(tmp_path))
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="has no liquid"):
        load_features(RunConfig(rule="backprop", model="mlp", data="digits"))


def test_comparison_gives_cka_one_for_a_liquid_with_itself(runs, lr):
    _, configs, _ = runs
    nalsm, fixed = load_features(configs["nalsm"]), load_features(configs["fixed"])
    pixels = lr.input_pixels(nalsm)
    same = lr.compare([("a", nalsm), ("b", nalsm), ("fixed", fixed)], stimuli=2000, pixels=pixels)
    assert same["stimuli"] == 12 and "identical input spike trains" in same["note"]
    row = {(r["a"], r["b"]): r for r in same["rows"]}
    assert row["a", "b"]["CKA (unbiased)"] == pytest.approx(1.0, abs=1e-9)
    assert row["a", "b"]["RSA (Spearman)"] == pytest.approx(1.0, abs=1e-9)
    assert row["a", "b"]["Procrustes angle (rad)"] == pytest.approx(0.0, abs=1e-6)
    assert row["a", "fixed"]["CKA (unbiased)"] < 0.999  # a plastic and a fixed liquid differ
    assert {("a", lr.PIXELS), ("a", lr.LABELS), (lr.PIXELS, lr.LABELS)} <= set(row)
    text = lr.markdown(same)
    assert "| a | b | 1.000 | 1.000 | 0.000 |" in text and "| fixed |" in text


def test_comparison_refuses_liquids_fed_other_stimuli(runs, lr, tmp_path):
    _, configs, _ = runs
    nalsm = load_features(configs["nalsm"])
    fewer = load_features(config(tmp_path, "backprop", n_test=8), generate=True)
    with pytest.raises(ConfigError, match="8 test images"):
        lr.compare([("nalsm", nalsm), ("fewer", fewer)])
    shuffled = dataclasses.replace(nalsm, labels_test=nalsm.labels_test.flip(0))
    with pytest.raises(ConfigError, match="other test labels"):
        lr.compare([("nalsm", nalsm), ("shuffled", shuffled)])
    other = dataclasses.replace(nalsm, stimuli={**nalsm.stimuli, "test_samples": "0" * 64})
    with pytest.raises(ConfigError, match="other test images"):
        lr.compare([("nalsm", nalsm), ("other", other)])
    old = dataclasses.replace(nalsm, labels_test=None, stimuli=None)  # a cache file from before the labels
    with pytest.raises(ConfigError, match="holds no labels"):
        lr.compare([("nalsm", nalsm), ("old", old)])
    reseeded = dataclasses.replace(nalsm, stimuli={**nalsm.stimuli, "seed": 1})
    assert "seed differ" in lr.compare([("nalsm", nalsm), ("reseeded", reseeded)])["note"]


def test_bench_cli_exits_2_on_bad_input(runs, lr, capsys, tmp_path):
    cache, _, results = runs
    path = results["nalsm"].data["liquid"]["cache"]
    for argv in (["--liquid", "no-equals-sign"], ["--liquid", f"a={tmp_path / 'missing.pt'}"],
                 ["--liquid", f"a={path}", "--liquid", f"a={path}"], ["--liquid", f"a={path}", "--stimuli", "2"]):
        assert lr.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert lr.main(["--liquid", f"nalsm={path}", "--liquid", f"again={path}", "--no-pixels"]) == 0
    assert "| nalsm | again | 1.000 |" in capsys.readouterr().out


def test_a_relative_feature_cache_is_recorded_as_an_absolute_path(runs, monkeypatch, tmp_path):
    cache, configs, results = runs
    monkeypatch.chdir(cache.parent)
    again = run(configs["nalsm"].model_copy(update={"feature_cache": cache.name}))  # finds the fixture's entry
    recorded = Path(again.data["liquid"]["cache"])
    assert again.data["liquid"]["cached"] and recorded.is_absolute()
    assert recorded == Path(results["nalsm"].data["liquid"]["cache"]).absolute()
    monkeypatch.chdir(tmp_path)  # read back from elsewhere: the recorded path still names the entry
    assert torch.equal(load_features(recorded).counts_test, load_features(configs["nalsm"]).counts_test)


def test_feature_kinds_are_the_lsm_options_and_each_one_is_computed():
    import typing

    from beyondbp.models.lsm import LSM
    from beyondbp.training import liquid
    from beyondbp.training.liquid_features import LiquidFeatures

    kinds = liquid.feature_kinds()
    assert kinds == typing.get_args(LSM.Options.model_fields["features"].annotation) and "authors" in kinds
    counts = torch.tensor([[1, 3], [0, 2]])
    lf = LiquidFeatures(counts, counts[:1], None, None, torch.zeros(1), {}, None, {})
    for kind in kinds:  # every kind the model accepts is one LiquidFeatures.features computes
        train, test = lf.features(kind)
        assert torch.equal(train, liquid.readout_features(counts, kind)[0]) and test.shape == (1, 2)
    assert torch.allclose(lf.features("authors")[0], torch.tensor([[0.25, 0.75], [0.0, 1.0]]))
    with pytest.raises(ConfigError, match="'nope' is not one of " + ", ".join(kinds)):
        lf.features("nope")


READOUT = Path(__file__).resolve().parent.parent / "bench" / "lsm_readout.py"


@pytest.fixture(scope="module")
def ro():
    return load_bench(READOUT, "bench_lsm_readout")


def test_bench_readout_learns_a_separable_problem_and_leaves_its_inputs_alone(ro):
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (200, 2), generator=g)
    x = torch.randn(200, 6, generator=g)
    x[:, :2] = (2 * bits - 1) * (0.5 + x[:, :2].abs())  # 4 classes, separable with a margin
    y = bits[:, 0] + 2 * bits[:, 1]
    before, state = x.clone(), torch.get_rng_state()
    r = ro.readout(x[:150], y[:150], x[150:], y[150:], lr=1.0, weight_decay=0.0, batch=16, epochs=40, seed=0)
    assert r["last"] >= 0.9 and r["best"] >= r["last"] and 1 <= r["best_epoch"] <= 40
    assert r["features"] == 6 and torch.equal(x, before)
    again = ro.readout(x[:150], y[:150], x[150:], y[150:], lr=1.0, weight_decay=0.0, batch=16, epochs=40, seed=0)
    assert again["last"] == r["last"] and again["mean_last30"] == r["mean_last30"]  # deterministic
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is left alone


def test_bench_readout_on_a_liquid_subset_and_bad_input(runs, ro, capsys, tmp_path):
    cache, _, results = runs
    path = results["nalsm"].data["liquid"]["cache"]
    out = tmp_path / "r.json"
    assert ro.main(["--liquid", f"nalsm={path}", "--n-train", "10", "--epochs", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())[0]
    assert row["label"] == "nalsm" and row["n_train"] == 10 and row["features"] == 100
    assert "| nalsm | 10 | 100 |" in capsys.readouterr().out
    # a missing source is refused before anything is trained or written
    assert ro.main(["--liquid", f"a={path}", "--liquid", f"b={tmp_path / 'missing.pt'}",
                    "--json", str(tmp_path / "no.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and not (tmp_path / "no.json").exists()
    for argv in ([], ["--liquid", "no-equals-sign"]):
        with pytest.raises(SystemExit) as exc:
            ro.main(argv)
        assert exc.value.code == 2
