"""The rule registry: names(), get() with options, describe(), and option validation.

Generic checks run over every registered rule (``bbp.rules.names()``), so rules added later are
held to the same standard: defaults are valid, options round-trip through ``get``, unknown
options and values of the wrong type are refused with a :class:`ConfigError`, and the rule's
module docstring names its paper.
"""

from __future__ import annotations

import sys

import pytest
import torch

import beyondbp as bbp
from beyondbp.errors import ConfigError
from beyondbp.rules import Rule

FOUNDATION_RULES = {"backprop", "fa", "usf", "brsf", "frsf", "kp", "dfa"}


class _NotAnOption:
    """A value no rule option can sensibly accept (used to probe validation)."""

    def __repr__(self) -> str:
        return "<not an option>"


def test_names_lists_every_foundation_rule_backprop_first():
    names = bbp.rules.names()
    assert FOUNDATION_RULES <= set(names)
    assert names[0] == "backprop"
    assert len(names) == len(set(names))


def test_names_are_the_class_names():
    for name in bbp.rules.names():
        assert bbp.rules.rule_class(name).name == name


def test_get_returns_a_configured_rule_with_the_given_options():
    rule = bbp.rules.get("fa", seed=3, init="kaiming_normal")
    assert isinstance(rule, Rule) and rule.name == "fa"
    assert rule.options() == {"seed": 3, "init": "kaiming_normal"}
    dfa = bbp.rules.get("dfa", seed=2, shared=True, points=["a", "b"], scale=0.5)
    assert (dfa.seed, dfa.shared, dfa.points, dfa.scale) == (2, True, ["a", "b"], 0.5)
    usf = bbp.rules.get("usf", scale="fan_in")
    assert usf.options() == {"scale": "fan_in"}


def test_get_returns_a_fresh_object_each_time():
    assert bbp.rules.get("fa") is not bbp.rules.get("fa")


def test_unknown_rule_is_a_config_error_listing_the_registered_rules():
    with pytest.raises(ConfigError) as info:
        bbp.rules.get("feedback-alignment")
    message = str(info.value)
    assert "feedback-alignment" in message
    for name in bbp.rules.names():
        assert name in message


def test_unknown_option_is_a_config_error_naming_the_allowed_options():
    with pytest.raises(ConfigError) as info:
        bbp.rules.get("fa", sed=1)
    message = str(info.value)
    assert "sed" in message and "seed" in message and "init" in message


def test_backprop_takes_no_options_and_says_so():
    with pytest.raises(ConfigError) as info:
        bbp.rules.get("backprop", scale=1)
    assert "none" in str(info.value)


@pytest.mark.parametrize("name", bbp.rules.names())
def test_every_rule_accepts_a_seed_as_the_tour_writes_it(name):
    """rules.get(name, seed=0), as the README's tour writes it, works for every rule; a rule
    without randomness ignores it (it is not among its options), and a bad seed is refused alike."""
    rule = bbp.rules.get(name, seed=0)
    declared = "seed" in bbp.rules.rule_class(name).option_names()
    assert rule.options() == bbp.rules.get(name).options() if declared else "seed" not in rule.options()
    if not declared:
        assert bbp.rules.get(name, seed=7).options() == bbp.rules.get(name).options()
    for bad in (-1, 2**32, 1.5, True, "0"):
        with pytest.raises(ConfigError, match=f"rule '{name}' option seed must be an integer"):
            bbp.rules.get(name, seed=bad)


def test_a_seed_given_to_a_rule_without_randomness_does_not_change_the_run_id():
    base = bbp.RunConfig(rule="usf", model="mlp", data="digits", epochs=1)
    assert base.replace(rule_options={"seed": 5}).run_id == base.run_id


@pytest.mark.parametrize(
    "name, options, fragment",
    [
        ("fa", {"seed": -1}, "seed"),
        ("fa", {"seed": 1.5}, "seed"),
        ("fa", {"seed": True}, "seed"),
        ("fa", {"init": "he"}, "xavier_uniform"),
        ("frsf", {"init": "orthogonal"}, "xavier_uniform"),
        ("brsf", {"init": ""}, "xavier_uniform"),
        ("kp", {"seed": "0"}, "seed"),
        ("usf", {"scale": 0}, "scale"),
        ("usf", {"scale": -0.1}, "scale"),
        ("usf", {"scale": "he"}, "xavier"),
        ("usf", {"scale": True}, "scale"),
        ("dfa", {"init": "orthogonal"}, "gaussian"),
        ("dfa", {"scale": 0.0}, "scale"),
        ("dfa", {"shared": "yes"}, "shared"),
        ("dfa", {"points": "blocks"}, "layers"),
        ("dfa", {"points": []}, "points"),
        ("dfa", {"points": [1, 2]}, "points"),
    ],
)
def test_bad_option_values_are_config_errors(name, options, fragment):
    with pytest.raises(ConfigError) as info:
        bbp.rules.get(name, **options)
    assert fragment in str(info.value)


# -- generic checks over every registered rule (later rules included) -----------------------------


@pytest.mark.parametrize("name", bbp.rules.names())
def test_defaults_are_valid_and_options_round_trip(name):
    rule = bbp.rules.get(name)
    options = rule.options()
    assert set(options) == set(bbp.rules.rule_class(name).option_names())
    again = bbp.rules.get(name, **options)
    assert again.options() == options
    assert name in repr(rule) or type(rule).__name__ in repr(rule)


@pytest.mark.parametrize("name", bbp.rules.names())
def test_every_option_refuses_a_value_of_the_wrong_type(name):
    """Options are configuration values (numbers, strings, booleans, lists of names): a rule
    must check them when it is constructed, not fail later inside attach or step."""
    for option in bbp.rules.rule_class(name).option_names():
        with pytest.raises(ConfigError):
            bbp.rules.get(name, **{option: _NotAnOption()})


@pytest.mark.parametrize("name", bbp.rules.names())
def test_options_are_declared_once_with_defaults_and_help(name):
    """A rule declares its options in one ``Options`` class (type, default, bounds, help) and
    writes no constructor of its own; options are passed by keyword only."""
    cls = bbp.rules.rule_class(name)
    assert issubclass(cls.Options, bbp.options.Options)
    assert "__init__" not in vars(cls), f"{name} validates options by hand in __init__; declare them in Options"
    assert cls.option_names() == list(cls.Options.model_fields)
    for option, field in cls.Options.model_fields.items():
        assert not field.is_required(), f"{name}: option {option} needs a default"
        assert field.description and len(field.description.splitlines()) == 1, f"{name}: option {option} needs one line of help"
    with pytest.raises(TypeError):
        cls(0)  # not positional
    rows = cls.describe_options()
    assert [r["name"] for r in rows] == cls.option_names()
    assert all(r["accepts"] and r["help"] for r in rows)


@pytest.mark.parametrize("name", bbp.rules.names())
def test_rule_metadata_and_module_docstring_name_the_paper(name):
    cls = bbp.rules.rule_class(name)
    assert cls.family and cls.summary and cls.paper
    doc = " ".join((sys.modules[cls.__module__].__doc__ or "").split())
    title = " ".join(cls.paper.split(" (")[0].split())
    assert title and title in doc, f"module docstring of {cls.__module__} should name the paper {title!r}"


def test_describe_has_one_entry_per_rule():
    rows = bbp.rules.describe()
    assert [r["name"] for r in rows] == bbp.rules.names()
    for row in rows:
        assert set(row) == {"name", "family", "summary", "paper"}
        assert all(row.values())


def test_register_refuses_a_different_class_under_a_taken_name():
    class Impostor(bbp.rules.rule_class("fa")):
        pass

    with pytest.raises(ConfigError):
        bbp.rules.register(Impostor)
    assert bbp.rules.rule_class("fa") is not Impostor


def test_register_refuses_a_nameless_class():
    class Nameless(Rule):
        name = ""

    with pytest.raises(ConfigError):
        bbp.rules.register(Nameless)
    assert "" not in bbp.rules.names()


def test_get_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for name in bbp.rules.names():
        bbp.rules.get(name)
    assert torch.equal(torch.rand(3), expected)
