"""Study specs: the grid a spec plans, and one-line errors naming their place for every kind of
malformed spec (validation only: nothing here trains)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from beyondbp.errors import ConfigError
from beyondbp.study.spec import MAX_RUNS, PlannedRun, default_store_path, load_spec
from beyondbp.training import RunConfig

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
[study]
name = "demo"
description = "a small grid"

[base]
model = "mlp"
data = "mnist1d"
steps = 20
model_options = {widths = [32], activation = "tanh"}

[axes]
rule = ["backprop", {name = "dfa", label = "dfa-uniform", options = {init = "uniform"}}]
lr = {backprop = [1e-3, 3e-3], dfa-uniform = [1e-4]}
seed = [0, 1]
model_options = [{widths = [32]}, {widths = [64, 64]}]

[execution]
threads = 1
checkpoint_every = 10
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_spec(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message and message.startswith("spec.toml: "), message
    return message


def minimal(base: str = "", axes: str = "", extra: str = "") -> str:
    return f'[study]\nname = "s"\n\n[base]\nmodel = "mlp"\ndata = "mnist1d"\nsteps = 5\n{base}\n[axes]\n{axes}\n{extra}'


# -- what a good spec plans --------------------------------------------------------------------
def test_a_spec_plans_every_combination_with_per_rule_lrs_labels_and_merged_tables(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    runs = spec.runs()
    assert len(runs) == (2 + 1) * 2 * 2  # lr per rule, seeds, sizes
    assert all(isinstance(r, PlannedRun) and r.id == r.config.run_id for r in runs)
    assert len({r.id for r in runs}) == len(runs)
    first = runs[0]
    assert first.axes == {"rule": "backprop", "lr": 1e-3, "seed": 0, "model_options": {"widths": [32]}}
    assert first.label == "backprop"
    dfa = [r for r in runs if r.label == "dfa-uniform"]
    assert {r.config.lr for r in dfa} == {1e-4} and len(dfa) == 4
    assert all(r.config.rule == "dfa" and r.config.rule_options == {"init": "uniform"} for r in dfa)
    wide = [r for r in runs if r.axes["model_options"] == {"widths": [64, 64]}]
    assert all(r.config.model_options == {"widths": [64, 64], "activation": "tanh"} for r in wide)  # merged
    assert all(r.config.threads == 1 for r in runs)
    assert spec.execution == {"device": "cpu", "threads": 1, "checkpoint_every": 10, "data_dir": None,
                              "diagnostics": False, "eval_batch_size": None, "keep_models": False,
                              "workers_per_gpu": 1, "feature_cache": None,
                              "feature_workers": None}
    assert spec.name == "demo" and spec.description == "a small grid" and spec.text == GOOD
    assert default_store_path(spec.path) == tmp_path / "spec.db"


def test_an_axis_overrides_base_and_a_spec_without_axes_is_one_run(tmp_path):
    spec = load_spec(write(tmp_path, minimal(base="lr = 0.5", axes="lr = [0.1, 0.2]")))
    assert [r.config.lr for r in spec.runs()] == [0.1, 0.2]
    one = load_spec(write(tmp_path, '[study]\nname = "one"\n[base]\nmodel = "mlp"\ndata = "mnist1d"\nrule = "fa"\n'))
    (run,) = one.runs()
    assert run.axes == {} and run.label == "fa" and run.config == RunConfig(model="mlp", data="mnist1d", rule="fa")


def test_execution_settings_reach_the_runs_but_not_their_ids(tmp_path):
    plain = load_spec(write(tmp_path, minimal(axes="seed = [0, 1]"), "a.toml"))
    data = tmp_path / "data"
    executed = load_spec(write(tmp_path, minimal(axes="seed = [0, 1]", extra=(
        '[execution]\ndevice = "cpu"\nthreads = 2\ndata_dir = "data"\ndiagnostics = true\neval_batch_size = 50\n')), "b.toml"))
    assert [r.id for r in plain.runs()] == [r.id for r in executed.runs()]
    config = executed.runs()[0].config
    assert (config.threads, config.data_dir, config.diagnostics, config.eval_batch_size) == (2, str(data), True, 50)
    assert executed.execution["data_dir"] == str(data)  # relative to the spec's folder


def test_fingerprint_is_the_name_so_a_grown_grid_is_the_same_study(tmp_path):
    small = load_spec(write(tmp_path, minimal(axes="seed = [0, 1]"), "a.toml"))
    grown = load_spec(write(tmp_path, minimal(axes="seed = [0, 1, 2]"), "b.toml"))
    other = load_spec(write(tmp_path, minimal(axes="seed = [0, 1]").replace('name = "s"', 'name = "t"'), "c.toml"))
    assert small.fingerprint == grown.fingerprint != other.fingerprint
    assert len(small.fingerprint) == 16
    assert {r.id for r in small.runs()} < {r.id for r in grown.runs()}  # only the new runs are new


def test_describe_and_summary_count_runs_and_axis_values(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    d = spec.describe()
    assert d["runs"] == 12 and d["labels"] == ["backprop", "dfa-uniform"]
    assert d["axes"] == {"rule": 2, "lr": {"backprop": 2, "dfa-uniform": 1}, "seed": 2, "model_options": 2}
    assert d["fingerprint"] == spec.fingerprint and d["name"] == "demo"
    assert spec.summary() == "demo: 12 runs (rule 2 × lr 2/1 per rule × seed 2 × model_options 2)"


def test_the_shipped_example_specs_load(tmp_path):
    mlp = load_spec(ROOT / "examples" / "dfa_vs_bp_mlp.toml")
    assert {r.label for r in mlp.runs()} == {"backprop", "dfa", "fa", "usf"}
    assert {r.config.seed for r in mlp.runs()} == {0, 1, 2}
    assert {r.config.data for r in mlp.runs()} == {"mnist1d"}
    gpt = load_spec(ROOT / "examples" / "rules_gpt.toml")
    assert {r.label for r in gpt.runs()} == {"backprop", "dfa-macro", "dfa-linear", "fa", "pfa"}
    assert len({(r.config.model_options["n_layer"], r.config.model_options["d_model"]) for r in gpt.runs()}) >= 4
    assert len({r.config.tokens for r in gpt.runs()}) >= 3
    assert {r.config.rule_options.get("points") for r in gpt.runs() if r.config.rule == "dfa"} == {"macro", "layers"}
    assert all(r.config.model == "gpt" and r.config.data == "shakespeare-char" for r in gpt.runs())


# -- malformed specs: one line each, naming the place ------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file; give the path of a study spec"):
        load_spec(tmp_path / "nope.toml")


def test_a_directory(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match=r"dir\.toml: is a directory"):
        load_spec(tmp_path / "dir.toml")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode (chmod 000 does not stop it)")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, GOOD)
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match=r"^spec\.toml: cannot be read \(permission denied\)"):
            load_spec(path)
    finally:
        path.chmod(0o644)


def test_unreadable_file_without_chmod(tmp_path, monkeypatch):
    """The same refusal where chmod cannot make a file unreadable (root): the read itself fails."""
    path = write(tmp_path, GOOD)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError, match=r"^spec\.toml: cannot be read \(permission denied\); make it readable"):
        load_spec(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_bytes(b'[study]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"^spec\.toml: line 2: byte 0xe9 is not UTF-8 text; save the spec as UTF-8$"):
        load_spec(path)


def test_not_toml_names_line_and_column(tmp_path):
    message = error(tmp_path, '[study]\nname = "s"\n[base]\nmodel = mlp\n')
    assert message.startswith("spec.toml: line 4, column 9: not valid TOML (")


def test_toml_errors_at_the_end_of_the_file_and_repeated_keys(tmp_path):
    assert error(tmp_path, '[study]\nname = "s\n').startswith("spec.toml: line 2, column ")
    assert error(tmp_path, '[study]\nname = "s"\n[axes]\nseed = [0,\n') == (
        "spec.toml: end of file: not valid TOML (Invalid value); see https://toml.io for the syntax")
    assert error(tmp_path, '[study]\nname = "s"\n[axes]\nseed = [0]\nseed = [1]\n').startswith(
        "spec.toml: line 5, column ")  # the repeated key's line


def test_unknown_top_level_table(tmp_path):
    assert error(tmp_path, GOOD + "\n[extra]\nx = 1\n").startswith(
        "spec.toml: [extra]: unknown top-level entry; a spec has the tables [study], [base], [axes], [execution] and [search]")


def test_missing_study_table_and_missing_name(tmp_path):
    assert error(tmp_path, '[base]\nmodel = "mlp"\n').startswith("spec.toml: [study]: missing;")
    assert error(tmp_path, '[study]\ndescription = "x"\n').startswith("spec.toml: [study] name: missing; give the study a name")
    assert error(tmp_path, "[study]\nname = 3\n") == "spec.toml: [study] name: must be a string, got 3"


@pytest.mark.parametrize("name", ["", "   ", "a/b", "../up", "x" * 65, "-lead", "tab\tname"])
def test_blank_or_unfit_study_name(tmp_path, name):
    text = GOOD.replace('name = "demo"', f"name = {name!r}".replace("'", '"').replace("\t", "\\t"))
    assert error(tmp_path, text).startswith("spec.toml: [study] name: ") and "is not a usable study name" in error(tmp_path, text)


def test_unknown_key_in_study_and_execution(tmp_path):
    assert error(tmp_path, GOOD.replace("[study]\n", "[study]\nowner = 'me'\n")) == (
        "spec.toml: [study] owner: unknown key; [study] takes name and description")
    message = error(tmp_path, GOOD + "retries = 3\n")
    assert message == ("spec.toml: [execution] retries: unknown execution setting; [execution] takes data_dir, eval_batch_size, "
                       "diagnostics, device, threads, feature_cache, feature_workers, checkpoint_every, keep_models, "
                       "workers_per_gpu")
    assert error(tmp_path, GOOD + "lr = 0.1\n").startswith(
        "spec.toml: [execution] lr: lr is a run setting, not an execution setting; put it in [base] or [axes]")


@pytest.mark.parametrize("key, value", [("device", '"cpu"'), ("threads", "2"), ("data_dir", '"d"'),
                                         ("diagnostics", "true"), ("eval_batch_size", "100")])
def test_execution_settings_in_base_or_as_axes_are_sent_to_execution(tmp_path, key, value):
    assert error(tmp_path, minimal(base=f"{key} = {value}")) == (
        f"spec.toml: [base] {key}: {key} says how runs execute, not what they compute; put it in [execution]")
    assert error(tmp_path, minimal(axes=f"{key} = [{value}]")) == (
        f"spec.toml: [axes] {key}: {key} says how runs execute, not what they compute; put it in [execution]")


@pytest.mark.parametrize("key", ["checkpoint", "state", "init_from"])
def test_checkpoint_state_and_init_from_are_refused_everywhere(tmp_path, key):
    for text, place in [(minimal(base=f'{key} = "x"'), "[base]"), (minimal(axes=f'{key} = ["x"]'), "[axes]"),
                        (minimal(extra=f'[execution]\n{key} = "x"'), "[execution]")]:
        message = error(tmp_path, text)
        assert message.startswith(f"spec.toml: {place} {key}: ") and "leave it out" in message


def test_unknown_setting_in_base_or_as_axis(tmp_path):
    message = error(tmp_path, minimal(base="learning_rate = 0.1"))
    assert message.startswith("spec.toml: [base] learning_rate: unknown run setting")
    assert "run settings are: rule, rule_options, model" in message
    assert error(tmp_path, minimal(axes="lrr = [0.1]")).startswith(
        "spec.toml: [axes] lrr: unknown run setting (did you mean 'lr'?), so it cannot be an axis;")


def test_checkpoint_every_must_be_a_positive_whole_number(tmp_path):
    for bad in ("0", "-5", "1.5", '"10"', "true"):
        assert error(tmp_path, minimal(extra=f"[execution]\ncheckpoint_every = {bad}")).startswith(
            "spec.toml: [execution] checkpoint_every: must be a whole number of at least 1")


def test_wrong_types_reuse_runconfigs_words(tmp_path):
    assert error(tmp_path, minimal(base='seed = "a"')) == (
        "spec.toml: [base] seed: invalid seed 'a': it must be a whole number from 0 to 2**32 - 1")
    assert error(tmp_path, minimal(axes='lr = [0.1, "x"]')) == (
        "spec.toml: [axes] lr[1]: invalid lr 'x': it must be a finite number greater than 0")
    assert error(tmp_path, minimal(extra='[execution]\ndevice = "gpu"')).startswith("spec.toml: [execution] device: invalid device 'gpu'")


def test_an_axis_must_be_a_list(tmp_path):
    assert error(tmp_path, minimal(axes="seed = 3")) == (
        "spec.toml: [axes] seed: must be a list of values to try, got 3; e.g. seed = [3]")
    assert error(tmp_path, minimal(axes="model_options = {widths = [32]}")).startswith(
        "spec.toml: [axes] model_options: must be a list of tables to try, got a table")
    assert error(tmp_path, minimal(axes="model_options = [[32]]")).startswith(
        "spec.toml: [axes] model_options[0]: must be a table of options merged into [base]'s model_options, got a list")
    assert error(tmp_path, minimal(axes="lr = 0.1")).startswith("spec.toml: [axes] lr: must be a list of values to try")


def test_an_empty_axis(tmp_path):
    assert error(tmp_path, minimal(axes="seed = []")).startswith("spec.toml: [axes] seed: is empty; an axis needs at least one value")
    assert error(tmp_path, minimal(axes="rule = []")).startswith("spec.toml: [axes] rule: is empty")


def test_duplicate_values_compare_normalised(tmp_path):
    assert error(tmp_path, minimal(axes="seed = [0, 1, 1.0]")) == (
        "spec.toml: [axes] seed[2]: 1.0 repeats seed[1]; each value of an axis must be different")
    assert error(tmp_path, minimal(axes="model_options = [{widths = [32]}, {widths = [32.0]}]")).startswith(
        "spec.toml: [axes] model_options[1]: ")
    assert error(tmp_path, minimal(axes='rule = ["fa"]\nlr = {fa = [0.1, 0.1]}')).startswith(
        "spec.toml: [axes] lr.fa[1]: 0.1 repeats lr.fa[0];")


def test_unknown_rule_name(tmp_path):
    message = error(tmp_path, minimal(axes='rule = ["dfa", "dfx"]'))
    assert message.startswith("spec.toml: [axes] rule[1] 'dfx': unknown rule 'dfx'; registered rules: backprop")
    assert error(tmp_path, minimal(base='rule = "dfx"')).startswith("spec.toml: [base] rule: unknown rule 'dfx'")


def test_bad_rule_options_in_a_rule_table(tmp_path):
    assert error(tmp_path, minimal(axes='rule = ["fa", {name = "dfa", options = {pointz = "macro"}}]')).startswith(
        "spec.toml: [axes] rule[1] 'dfa': rule 'dfa' has no option pointz; its options: seed,")
    assert error(tmp_path, minimal(axes='rule = [{name = "dfa", options = {scale = -1.0}}]')).startswith(
        "spec.toml: [axes] rule[0] 'dfa': ")
    assert error(tmp_path, minimal(axes='rule = [{name = "dfa", option = {}}]')) == (
        "spec.toml: [axes] rule[0] option: unknown key; a rule entry takes name, label and options")
    assert error(tmp_path, minimal(axes='rule = [{label = "x"}]')) == (
        "spec.toml: [axes] rule[0] name: missing; a rule entry needs the rule's name")
    assert error(tmp_path, minimal(axes="rule = [3]")).startswith("spec.toml: [axes] rule[0]: must be a rule name or a table")
    assert error(tmp_path, minimal(base='rule_options = {seed = 1}', axes='rule = ["fa"]')).startswith(
        "spec.toml: [base] rule_options: with a rule axis, give each rule's options in its entry")


def test_duplicate_or_unfit_rule_labels(tmp_path):
    assert error(tmp_path, minimal(axes='rule = ["dfa", {name = "dfa", options = {init = "uniform"}}]')) == (
        "spec.toml: [axes] rule[1] 'dfa': label 'dfa' is already used by rule[0]; give each entry its own label = ... "
        "(labels differing only in case count as the same)")
    assert error(tmp_path, minimal(axes='rule = ["fa", {name = "dfa", label = "FA"}]')).startswith(
        "spec.toml: [axes] rule[1] 'FA': label 'FA' is already used by rule[0];")
    assert error(tmp_path, minimal(axes='rule = [{name = "dfa", label = "dfa/macro"}]')).startswith(
        "spec.toml: [axes] rule[0]: label 'dfa/macro' is not fit for file names and reports;")


def test_per_rule_lr_table_must_match_the_rule_labels(tmp_path):
    axes = 'rule = ["backprop", {name = "dfa", label = "dfa-m"}]\n'
    assert error(tmp_path, minimal(axes=axes + "lr = {backprop = [0.1], dfa = [0.1]}")).startswith(
        "spec.toml: [axes] lr.dfa: 'dfa' is not a rule label of this study; per-rule learning rates are keyed by the labels backprop, dfa-m")
    assert error(tmp_path, minimal(axes=axes + "lr = {backprop = [0.1]}")).startswith(
        "spec.toml: [axes] lr: no learning rates for rule label 'dfa-m';")
    assert error(tmp_path, minimal(axes=axes + "lr = {backprop = 0.1, dfa-m = [0.1]}")).startswith(
        "spec.toml: [axes] lr.backprop: must be a list of learning rates, got 0.1")
    assert error(tmp_path, minimal(axes=axes + "lr = {backprop = [], dfa-m = [0.1]}")).startswith("spec.toml: [axes] lr.backprop: is empty")
    assert error(tmp_path, minimal(axes=axes + "lr = {backprop = [0.1], dfa-m = [-0.1]}")) == (
        "spec.toml: [axes] lr.dfa-m[0]: invalid lr -0.1: it must be a finite number greater than 0")
    # without a rule axis the only label is [base]'s rule
    assert len(load_spec(write(tmp_path, minimal(base='rule = "fa"', axes="lr = {fa = [0.1, 0.2]}"))).runs()) == 2


@pytest.mark.parametrize("budget", ["steps", "epochs"])
def test_zero_or_negative_budgets(tmp_path, budget):
    text = minimal(axes=f"{budget} = [10, -1]").replace("steps = 5\n", "")
    assert error(tmp_path, text) == f"spec.toml: [axes] {budget}[1]: invalid {budget} -1: it must be a whole number of at least 1"
    text = minimal(base=f"{budget} = 0").replace("steps = 5\n", "")
    assert error(tmp_path, text) == f"spec.toml: [base] {budget}: invalid {budget} 0: it must be a whole number of at least 1"


def test_zero_token_budget(tmp_path):
    text = '[study]\nname = "lm"\n[base]\nmodel = "gpt"\ndata = "shakespeare-char"\n[axes]\ntokens = [1000, 0]\n'
    assert error(tmp_path, text).startswith("spec.toml: [axes] tokens[1]: invalid tokens 0: it must be a whole number of at least 1")


def test_negative_lr(tmp_path):
    assert error(tmp_path, minimal(axes="lr = [0.1, 0.01, -0.1]")) == (
        "spec.toml: [axes] lr[2]: invalid lr -0.1: it must be a finite number greater than 0")


def test_cross_setting_errors_name_the_entries_involved(tmp_path):
    # a budget kind in [base] and another as an axis
    assert error(tmp_path, minimal(axes="epochs = [1, 2]")) == (
        "spec.toml: [base] steps and [axes] epochs[0]: give either epochs or steps as the training budget, not both")
    # a setting that does not fit [base]'s data
    assert error(tmp_path, minimal(base="tokens = 100")).startswith("spec.toml: [base] tokens: tokens, context and eval_windows apply")
    # an error only a combination of two axis values makes
    text = minimal(axes='rule = ["fa", "dfa"]\nrule_options = [{}, {points = "macro"}]')
    assert error(tmp_path, text).startswith("spec.toml: [axes] rule='fa', rule_options[1]: rule 'fa' has no option points")


def test_model_and_data_options_are_checked_against_their_declarations(tmp_path):
    assert error(tmp_path, minimal(axes="model_options = [{widths = [32]}, {width = [32]}]")).startswith(
        "spec.toml: [axes] model_options[1]: model 'mlp' has no option width; its options: widths")
    assert error(tmp_path, minimal(base="model_options = {widths = 'x'}")).startswith(
        "spec.toml: [base] model_options: model 'mlp' option widths must be")
    assert error(tmp_path, minimal(axes="data_options = [{bogus = 1}]")).startswith(
        "spec.toml: [axes] data_options[0]: data set 'mnist1d' has no option bogus")


def test_two_entries_giving_the_same_run_are_refused_naming_both(tmp_path):
    text = minimal(axes='rule = ["dfa", {name = "dfa", label = "dfa-default", options = {init = "gaussian"}}]')
    message = error(tmp_path, text)
    assert message.startswith("spec.toml: [axes] rule[0] 'dfa' and rule[1] 'dfa-default': give the same run (id ")
    assert "keep one of them" in message
    text = minimal(axes='rule_options = [{}, {seed = 0}]', base='rule = "fa"')  # the rule's seed defaults to the run's
    assert error(tmp_path, text).startswith("spec.toml: [axes] rule_options[0] and rule_options[1]: give the same run")


def test_an_absurdly_large_grid_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    import beyondbp.study.spec as spec_mod

    def no_config(*args, **kwargs):
        raise AssertionError("a RunConfig was built for a grid that is refused")

    monkeypatch.setattr(spec_mod, "RunConfig", no_config)
    axes = "seed = [" + ", ".join(str(i) for i in range(1000)) + "]\nlr = [" + ", ".join(f"{i + 1}e-4" for i in range(101)) + "]"
    message = error(tmp_path, minimal(axes=axes))
    assert message == (f"spec.toml: [axes]: the grid has 101,000 runs (seed 1000 × lr 101); a study may have at most "
                       f"{MAX_RUNS:,}, so drop values or split it")


def test_the_readme_example_spec_loads(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Studies", 1)[1]
    text = section.split("```toml\n", 1)[1].split("```", 1)[0]
    spec = load_spec(write(tmp_path, text))
    assert spec.describe()["runs"] == (2 + 1 + 2) * 2 * 2 * 3
    assert spec.execution["checkpoint_every"] == 200


def test_errors_of_base_model_and_data(tmp_path):
    without = '[study]\nname = "s"\n[base]\ndata = "mnist1d"\n[axes]\nseed = [1, 2]\n'
    assert error(tmp_path, without) == "spec.toml: [base]: the run setting 'model' is required (a registered model name)"
    assert error(tmp_path, minimal(axes="seed = [1]").replace('"mlp"', '"mlpx"')).startswith(
        "spec.toml: [base] model: Unknown model 'mlpx'; valid names are:")
    assert error(tmp_path, minimal().replace('"mlp"', '"gpt"')).startswith(
        "spec.toml: [base] model, data: model 'gpt' reads token sequences")


@pytest.mark.parametrize("text, expected", [
    ('study = "x"\n', "spec.toml: [study]: must be a table, got a string"),
    ('axes = [1]\n[study]\nname = "s"\n', "spec.toml: [axes]: must be a table, got a list"),
    ('name = "s"\n', "spec.toml: name: unknown top-level entry;"),
    ('[study]\nname = "s"\ndescription = 3\n', "spec.toml: [study] description: must be a string, got 3"),
    (minimal(axes='rule = [{name = "dfa", label = 3}]'), "spec.toml: [axes] rule[0] label: must be a string, got 3"),
    (minimal(axes='rule = [{name = "dfa", options = 3}]'), "spec.toml: [axes] rule[0] options: must be a table of the rule's options, got 3"),
    (minimal(extra="[execution]\nthreads = 0"), "spec.toml: [execution] threads: invalid threads 0:"),
    (minimal(base="epsilon = 5.0"), "spec.toml: [base] epsilon: the SET setting epsilon=5.0 needs sparsity='set'"),
    (minimal(axes="optimizer = ['adam', 'lbfgs']"), "spec.toml: [axes] optimizer[1]: invalid optimizer 'lbfgs'"),
    (minimal(axes="milestones = [[0.5], [0.9, 0.3]]", base='lr_schedule = "step"'), "spec.toml: [axes] milestones[1]: invalid milestones"),
])
def test_more_malformed_kinds(tmp_path, text, expected):
    assert error(tmp_path, text).startswith(expected)


# -- every mistake at once ---------------------------------------------------------------------
def _problems(tmp_path: Path, text: str) -> list[str]:
    from beyondbp.errors import ConfigErrors

    with pytest.raises(ConfigErrors) as info:
        load_spec(write(tmp_path, text))
    assert str(info.value) == "\n".join(info.value.problems)
    assert all("\n" not in p and p.startswith("spec.toml: ") for p in info.value.problems)
    return info.value.problems


def test_spec_errors_in_several_tables_are_reported_together(tmp_path):
    text = ('[study]\nname = "s"\ncolour = "red"\n\n[base]\nmodel = "mlp"\ndata = "mnist1d"\nsteps = 5\nlearning_rate = 0.1\n\n'
            '[axes]\nseed = [0]\n\n[execution]\nthreads = 1\nspeed = 3\n')
    problems = _problems(tmp_path, text)
    assert len(problems) == 3
    assert problems[0].startswith("spec.toml: [study] colour: unknown key")
    assert problems[1].startswith("spec.toml: [base] learning_rate: unknown run setting")
    assert problems[2].startswith("spec.toml: [execution] speed: unknown execution setting")


def test_spec_errors_in_several_axes_and_values_are_reported_together(tmp_path):
    problems = _problems(tmp_path, minimal(axes='seed = 3\nrule = [1]\nmodel_options = [7]\n'))
    assert [p.split(": ")[1] for p in problems] == ["[axes] rule[0]", "[axes] seed", "[axes] model_options[0]"]
    problems = _problems(tmp_path, minimal(axes="lr = [1e-3, -0.1]\nepochs = [1, 0]\n", base="steps = 5"
                                           ).replace("steps = 5\n", "", 1).replace("steps = 5", ""))
    places = sorted(p.split(": ")[1] for p in problems)
    assert places == ["[axes] epochs[1]", "[axes] lr[1]"], problems
    assert any("invalid lr -0.1" in p for p in problems) and any("epochs" in p and "0" in p for p in problems)


def test_cli_prints_every_spec_error_on_its_own_line(tmp_path, capsys):
    from beyondbp.cli import main

    spec = write(tmp_path, minimal(axes="lr = [1e-3, -0.1]\nbatch_size = [64, 0]\n"))
    with pytest.raises(SystemExit) as info:
        main(["study", "run", str(spec)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert info.value.code == 2 and out == "" and len(lines) == 2
    assert all(line.startswith("error: spec.toml: [axes] ") for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]
