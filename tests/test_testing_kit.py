"""beyondbp.testing, the rule contract as a public kit (issue 22, item 7): what a rule declares to
the checks lives on ``Rule``, ``check_rule`` names the failing check, ``parametrize_with_rules``
makes one pytest test per rule and check, the kit imports without pytest, and the README's
example external rule passes ``check_rule`` (the block is executed as it stands).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import beyondbp as bbp
from beyondbp.errors import ConfigError
from beyondbp.rules import Rule
from beyondbp.testing import check_rule, parametrize_with_rules, rule_checks

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# -- what a rule declares -------------------------------------------------------------------------


def test_every_registered_rule_declares_whether_a_plain_backward_loop_trains_it():
    """``plain_backward`` is declared by the rule (or its family's base class), not left to
    the inference from ``Learner.step`` that an outside rule may rely on."""
    undeclared = []
    for name in bbp.rules.names():
        cls = bbp.rules.rule_class(name)
        owners = [k for k in cls.__mro__ if "plain_backward" in vars(k) and k is not Rule]
        if not owners or not isinstance(cls.plain_backward, bool):
            undeclared.append(name)
    assert undeclared == []
    declared = {n: bbp.rules.rule_class(n).plain_backward for n in bbp.rules.names()}
    assert {n for n, v in declared.items() if v} == {"backprop", "fa", "usf", "brsf", "frsf", "kp", "pfa", "dfa"}


def test_the_rule_base_declares_the_contract_hooks_with_defaults():
    assert Rule.plain_backward is None and Rule.exact_gradients is False
    assert Rule.example_model((1, 16, 16), 10) is None
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = Rule.example_optimizer(params)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 3e-3
    assert [n for n in bbp.rules.names() if bbp.rules.rule_class(n).exact_gradients] == ["backprop"]
    # the rules that refuse the standard models offer a model of their own, built from the global RNG
    model = bbp.rules.rule_class("ottt").example_model((1, 16, 16), 10)
    assert isinstance(model, torch.nn.Module)


# -- check_rule -----------------------------------------------------------------------------------


def _rng_eating_fa() -> type[Rule]:
    """FA, but drawing from the global RNG at attach (which the contract forbids)."""
    fa = bbp.rules.rule_class("fa")

    class RngEatingFA(fa):
        name = "rng-eating-fa"

        def setup_layer(self, module, index):
            torch.rand(1)
            super().setup_layer(module, index)

    return RngEatingFA


def test_check_rule_names_the_failing_check_and_still_runs_the_others():
    broken = _rng_eating_fa()
    with pytest.raises(AssertionError) as info:
        check_rule(broken, only=["attach_keeps_the_global_rng", "predict_keeps_the_training_mode"])
    message = str(info.value)
    assert "RngEatingFA" in message and "1 of 2" in message
    assert "check 'attach_keeps_the_global_rng' failed" in message and "global torch RNG" in message
    assert "predict_keeps_the_training_mode" not in message
    assert isinstance(info.value.__cause__, AssertionError)


def test_check_rule_reports_what_ran_and_what_did_not_apply():
    fa = bbp.rules.rule_class("fa")
    results = check_rule(fa, only=["attaches", "estimate_is_not_backprop"])
    assert results == {
        "attaches[mlp]": "passed",
        "attaches[lenet]": "passed",
        "attaches[snn-mlp]": "passed",
        "attaches[snn-cnn]": "passed",
        "attaches[wrnn]": "passed",
        "attaches[irnn]": "passed",
        "attaches[elm]": "passed",
        "attaches[branch-elm]": "passed",
        "attaches[deep-linear]": "passed",
        "estimate_is_not_backprop": "passed",
    }

    class Undeclared(bbp.rules.rule_class("il")):
        """An inference-learning variant that leaves ``plain_backward`` to be inferred."""

        name = "il-undeclared"
        plain_backward = None

    results = check_rule(Undeclared, only=["users_own_loop"])
    assert list(results) == ["users_own_loop"] and results["users_own_loop"].startswith("skipped: ")
    assert "owns its step" in results["users_own_loop"]


def test_check_rule_refuses_what_is_not_a_rule_or_not_a_check():
    with pytest.raises(ConfigError, match="subclass of beyondbp.rules.Rule"):
        check_rule(bbp.rules.get("fa"))
    with pytest.raises(ConfigError, match="no check named 'learns_cifar'.*its checks are attaches\\[mlp\\]"):
        check_rule(bbp.rules.rule_class("fa"), only=["learns_cifar"])


def test_the_checks_follow_what_a_rule_declares():
    names = {n: [c.name for c in rule_checks(bbp.rules.rule_class(n))] for n in ("backprop", "fa", "ff", "softhebb")}
    assert "attaches_to_any_module" in names["backprop"] and "refuses_an_unsupported_layer" not in names["backprop"]
    assert "estimate_is_not_backprop" not in names["backprop"] and "estimate_is_not_backprop" in names["fa"]
    assert "rule_seed_changes_the_training" in names["fa"] and "users_own_loop" in names["fa"]
    assert "users_own_loop" not in names["softhebb"]  # declares plain_backward = False
    assert not any("snn" in c for c in names["ff"])  # handles_time_steps = False
    assert [c for c in names["fa"] if c.startswith("learns_digits")] == [
        "learns_digits[mlp]", "learns_digits[lenet]", "learns_digits[snn-mlp]"
    ]


def test_the_sequence_and_deep_linear_models_are_checked_or_skipped_with_the_refusal():
    """Issue 25: the contract covers elm, branch-elm and deep-linear (attach, estimate, detach,
    same seed); a rule that refuses one skips it, the reason being its one-sentence refusal."""
    new = ("elm", "branch-elm", "deep-linear")
    for name in ("fa", "dfa", "elm-online"):
        checks = [c.name for c in rule_checks(bbp.rules.rule_class(name))]
        for family in ("attaches", "estimate_changes_nothing", "detach_restores_the_model", "same_seed_same_numbers"):
            assert all(f"{family}[{k}]" in checks for k in new), (name, family)
    only = [f"{family}[{k}]" for family in ("attaches", "estimate_changes_nothing", "detach_restores_the_model") for k in new]
    results = check_rule(bbp.rules.rule_class("dfa"), only=only + ["same_seed_same_numbers[deep-linear]"])
    assert results["attaches[deep-linear]"] == results["same_seed_same_numbers[deep-linear]"] == "passed"
    for family in ("attaches", "estimate_changes_nothing", "detach_restores_the_model"):
        assert results[f"{family}[deep-linear]"] == "passed"
        for k in ("elm", "branch-elm"):
            reason = results[f"{family}[{k}]"]
            assert reason.startswith(f"skipped: rule dfa refuses the recurrent model {k}: ") and "no path through time" in reason
    results = check_rule(bbp.rules.rule_class("elm-online"), only=["attaches[elm]", "attaches[deep-linear]"])
    assert results["attaches[elm]"] == "passed"
    assert results["attaches[deep-linear]"].startswith("skipped: rule elm-online refuses the model deep-linear: ")


# -- parametrize_with_rules -----------------------------------------------------------------------


def test_parametrize_with_rules_makes_one_test_per_rule_and_check():
    mark = parametrize_with_rules(["fa", bbp.rules.rule_class("ff")])
    argnames, params = mark.args[0], mark.args[1]
    ids = mark.kwargs["ids"]
    assert argnames == ("rule", "check")
    fa, ff = bbp.rules.rule_class("fa"), bbp.rules.rule_class("ff")
    assert len(params) == len(rule_checks(fa)) + len(rule_checks(ff)) == len(ids)
    assert "fa-learns_digits[snn-mlp]" in ids and "ff-learns_digits[mlp]" in ids
    assert all(rule in (fa, ff) and callable(check) for rule, check in params)
    everything = parametrize_with_rules()
    assert {rule.name for rule, _ in everything.args[1]} == set(bbp.rules.names())


def test_the_kit_imports_without_pytest():
    """pytest is a dev dependency only: beyondbp.testing imports and lists its checks without it,
    and ``parametrize_with_rules`` says in one sentence what it needs."""
    script = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'pytest':
            raise ImportError('pytest is blocked')
sys.meta_path.insert(0, Block())
import beyondbp.testing as kit
import beyondbp as bbp
assert 'pytest' not in sys.modules
assert kit.rule_checks(bbp.rules.rule_class('fa'))
try:
    kit.parametrize_with_rules()
except ImportError as exc:
    print('refused:', exc)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=_subprocess_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: beyondbp.testing.parametrize_with_rules needs pytest" in proc.stdout


# -- the README's example rule ----------------------------------------------------------------------


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- example-rule:start -->\s*```python\n(.*?)```\s*<!-- example-rule:end -->", text, re.S)
    assert block, "README.md has no example rule between the example-rule markers"
    return block.group(1)


def test_the_readme_example_rule_passes_check_rule():
    """The block is run as it stands, in a fresh interpreter (it registers its rule), then asked
    what ``check_rule`` returned: every check passed, the user's own loop included."""
    code = readme_example()
    assert "check_rule(MeanSign)" in code
    probe = code + "\nimport json\nprint('RESULTS', json.dumps(results))\nprint('REGISTERED', bbp.rules.get('mean-sign').name)\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=900, env=_subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    results = json.loads(proc.stdout.split("RESULTS ", 1)[1].splitlines()[0])
    assert results and set(results.values()) == {"passed"}
    assert "learns_digits[lenet]" in results and "users_own_loop" in results and "estimate_is_not_backprop" in results
    assert "REGISTERED mean-sign" in proc.stdout


def test_costly_checks_are_not_repeated_on_the_same_example_model():
    """A rule that refuses the kit's models is trained on its example model; the learning and
    determinism checks run on it once per family, not once per refused model kind."""
    from beyondbp import rules
    from beyondbp.testing import rule_checks

    names = [c.name for c in rule_checks(rules.rule_class("nalsm"))]
    assert [n for n in names if n.startswith("learns_digits")] == ["learns_digits[mlp]"]
    # the refused elm, branch-elm and deep-linear run nothing: skips that give the refusal
    seeds = [n for n in names if n.startswith("same_seed_same_numbers")]
    assert seeds == [f"same_seed_same_numbers[{k}]" for k in ("lenet", "elm", "branch-elm", "deep-linear")]
    skipped = check_rule(rules.rule_class("nalsm"), only=seeds[1:])
    assert all(v.startswith("skipped: rule nalsm refuses ") for v in skipped.values()), skipped
    fa = [c.name for c in rule_checks(rules.rule_class("fa"))]  # attaches to every kind: all kept
    assert {"learns_digits[mlp]", "learns_digits[lenet]", "learns_digits[snn-mlp]"} <= set(fa)
