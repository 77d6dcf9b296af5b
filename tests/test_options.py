"""Options declared once (``beyondbp.options``): one declaration per rule gives validation with
one-sentence errors, ``--rule-opt`` parsing and ``beyondbp rules --options NAME``."""

from __future__ import annotations

import math

import pytest

import beyondbp as bbp
from beyondbp.cli import main
from beyondbp.errors import ConfigError


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("name", bbp.rules.names())
def test_rules_options_lists_every_declared_option(capsys, name):
    code, out, err = cli(capsys, "rules", "--options", name, "--markdown")
    assert code == 0 and err == ""
    cls = bbp.rules.rule_class(name)
    if not cls.option_names():
        assert out.strip() == f"rule '{name}' takes no options"
    for row in cls.describe_options():
        assert f"| `{row['name']}` | {row['accepts']} | `{row['default']}` |" in out


def test_rules_options_of_an_unknown_rule_is_one_line_exit_2(capsys):
    code, out, err = cli(capsys, "rules", "--options", "nope")
    assert code == 2 and out == "" and err.startswith("error: unknown rule 'nope'") and len(err.splitlines()) == 1


@pytest.mark.parametrize("name, options, words", [
    ("fa", {"seed": -1}, "rule 'fa' option seed must be an integer >= 0 and < 4294967296, got -1"),
    ("fa", {"seed": True}, "rule 'fa' option seed must be an integer >= 0 and < 4294967296, got True"),
    ("fa", {"seed": "1"}, "must be an integer >= 0 and < 4294967296, got '1'"),
    ("fa", {"init": "he"}, "option init must be one of 'xavier_uniform'"),
    ("fa", {"colour": 1}, "rule 'fa' has no option colour; its options: seed, init"),
    ("dfa", {"scale": math.nan}, "option scale must be a number > 0, got nan"),
    ("dfa", {"scale": math.inf}, "option scale must be a number > 0, got inf"),
    ("dfa", {"points": []}, "non-empty list of module names, got []"),
    ("dfa", {"error": "hidden", "error_at": "head"}, "error_at names the error point itself"),
    ("usf", {"scale": -2.0}, "option scale must be 'xavier', 'fan_in' or a positive number, got -2.0"),
    ("ff", {"num_classes": 1}, "option num_classes must be an integer >= 2 or null (None), got 1"),
    ("pfa", {"variant": "identity", "expansion": 3}, "uses a square B, so expansion must be 1"),
    ("softhebb", {"t_invert": [1.0, -2.0]}, "option t_invert must be a number > 0, a non-empty list"),
    ("il", {"iterations": 2.5}, "option iterations must be an integer >= 0, got 2.5"),
])
def test_bad_options_are_one_sentence_errors(name, options, words):
    with pytest.raises(ConfigError) as info:
        bbp.rules.get(name, **options)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_sequences_take_lists_and_tuples_and_defaults_are_derived():
    assert bbp.rules.get("dfa", points=("a", "b")).points == ["a", "b"]
    assert bbp.rules.get("softhebb", t_invert=(2.0, 3.0)).t_invert == (2.0, 3.0)
    assert bbp.rules.get("pfa").expansion == 10 and bbp.rules.get("pfa", variant="identity").expansion == 1
    assert bbp.rules.get("usf", scale=2).scale == 2.0  # an integer is a number


def test_cli_rule_opt_goes_through_the_declaration(capsys):
    code, out, err = cli(capsys, "train", "--rule", "dfa", "--model", "mlp", "--data", "digits",
                         "--rule-opt", "scale=0", "--epochs", "1")
    assert code == 2 and "option scale must be a number > 0, got 0" in err and out == ""


# -- models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", bbp.models.names())
def test_every_model_declares_its_options_once_with_defaults_and_help(name):
    import inspect

    cls = bbp.models._MODELS[name]
    assert issubclass(cls.Options, bbp.options.Options)
    fields = cls.Options.model_fields
    assert bbp.models.options(name) == {k: f.default for k, f in fields.items()}
    for option, field in fields.items():
        assert not field.is_required() and field.description and "\n" not in field.description, option
    # the constructor's keyword defaults are the declared ones (one source of truth for both)
    params = inspect.signature(cls.__init__).parameters
    for option, field in fields.items():
        assert params[option].default == field.default, option
    rows = bbp.models.describe_options(name)
    assert [r["name"] for r in rows] == list(fields)


@pytest.mark.parametrize("name, options, words", [
    ("mlp", {"widths": [0]}, "model 'mlp' option widths must be a list of integers >= 1"),
    ("mlp", {"widths": "256"}, "option widths must be a list of integers >= 1, such as [256, 256], got '256'"),
    ("mlp", {"dropout": 1.0}, "option dropout must be a number >= 0 and < 1, got 1.0"),
    ("mlp", {"activation": "swish"}, "option activation must be one of 'relu'"),
    ("mlp", {"depth": 3}, "model 'mlp' has no option depth; its options: widths, activation, bias, dropout"),
    ("lenet", {"padding": -1}, "option padding must be an integer >= 0 or null (None), got -1"),
    ("cnn1d", {"channels": True}, "option channels must be an integer >= 1, got True"),
    ("gpt", {"d_model": 30, "n_head": 4}, "d_model (30) must be divisible by n_head (4)"),
    ("gpt", {"emb_std": math.nan}, "option emb_std must be a number > 0, got nan"),
    ("softhebb-conv", {"channels": [8, 8]}, "option channels must be three integers >= 1, got [8, 8]"),
    ("softhebb-mlp", {"power": 0}, "option power must be a number > 0, got 0"),
    ("snn-mlp", {"alpha": 0}, "option alpha must be a number > 0 or null (None), got 0"),
])
def test_bad_model_options_are_one_sentence_errors(name, options, words):
    shape = (16,) if name == "gpt" else (1, 16, 16)
    with pytest.raises(ConfigError) as info:
        bbp.models.build(name, shape, 10, **options)
    assert words in str(info.value) and "\n" not in str(info.value)
    cls = bbp.models._MODELS[name]
    if set(options) <= set(cls.Options.model_fields):  # direct construction: the same declaration
        with pytest.raises(ConfigError):
            cls(shape, 10, **options)


def test_parse_names_keeps_order_and_expands_all():
    from beyondbp.options import parse_names

    assert parse_names(" b, a ", "method", ["a", "b", "c"]) == ["b", "a"]
    assert parse_names("all", "method", ("a", "b"), allow_all=True) == ["a", "b"]


@pytest.mark.parametrize("text, allow_all, message", [
    ("", False, "malformed list of methods ''"),
    ("a,,b", False, "malformed list of methods 'a,,b'"),
    ("a,z", False, "unknown method 'z'; known methods: a, b, c"),
    ("all", False, "unknown method 'all'; known methods: a, b, c"),
    ("z", True, "unknown method 'z'; known methods: a, b, c (or 'all')"),
    ("a,b,a", False, "method 'a' is listed twice in 'a,b,a'; name each once"),
])
def test_parse_names_refuses_in_one_sentence(text, allow_all, message):
    from beyondbp.options import parse_names

    with pytest.raises(ConfigError) as info:
        parse_names(text, "method", ["a", "b", "c"], allow_all=allow_all)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_run_settings_are_declared_once():
    """Every RunConfig setting carries its help, and what it accepts, the execution set and the
    study's [execution] keys are read off those declarations (no second table to keep in step)."""
    from beyondbp import options
    from beyondbp.study.spec_tables import EXECUTION_KEYS
    from beyondbp.training import ALLOWED, EXECUTION_FIELDS, RunConfig

    fields = RunConfig.model_fields
    assert all(f.description for f in fields.values()), [k for k, f in fields.items() if not f.description]
    assert ALLOWED == {k: options.accepts(RunConfig, k) for k in fields}
    assert EXECUTION_FIELDS == set(options.execution_names(RunConfig))
    assert {"device", "threads", "state", "checkpoint"} <= EXECUTION_FIELDS and "lr" not in EXECUTION_FIELDS
    assert set(EXECUTION_KEYS) == (EXECUTION_FIELDS - {"checkpoint", "state"}) | {"keep_models", "workers_per_gpu"}
    # a declared bound is enforced with the declared words
    with pytest.raises(ConfigError, match=r"invalid zeta 1\.0: it must be a number in \[0, 1\)"):
        RunConfig(model="mlp", data="mnist1d", sparsity="set", zeta=1.0)
