"""Continual methods, test-time adapters and spiking neurons declare their options once (a nested
``Options`` class, :mod:`beyondbp.options`): the declarations match the constructors, every bad
value is refused with one sentence naming the owner, the option, what it accepts and what was
given, and the inputs refused before the declarations are still refused."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest
import torch

from beyondbp import adapt, continual, options
from beyondbp.adapt.methods import NHL, Tent
from beyondbp.continual import methods as C
from beyondbp.errors import ConfigError
from beyondbp.models.snn import SNNMLP, SNNConv, SpikingOptions
from beyondbp.spiking import ALIF, LIF, LeakyIntegrator, beta_from_tau

SRC = Path(__file__).resolve().parents[1] / "src" / "beyondbp"
MODULES = ("continual/methods.py", "adapt/methods.py", "spiking/neurons.py")


def test_no_hand_written_type_checks_remain_in_the_declared_modules():
    pattern = re.compile(r"isinstance\([^()]*,\s*bool\)\s*or\s+not\s+isinstance\(")
    found = {m: len(pattern.findall((SRC / m).read_text())) for m in MODULES}
    assert found == {m: 0 for m in MODULES}, found


# -- declarations match the constructors -----------------------------------------------------------
NOT_OPTIONS = {"self", "source", "episodic"}


@pytest.mark.parametrize("cls", [C.EWC, C.GPM, C.HLOP, Tent, NHL, LeakyIntegrator])
def test_declared_defaults_are_the_constructor_defaults(cls):
    params = {
        n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
        if n not in NOT_OPTIONS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    fields = cls.Options.model_fields
    assert list(fields) == list(params)
    for name, default in params.items():
        if default is inspect.Parameter.empty:
            assert fields[name].is_required(), name
        else:
            assert fields[name].default == default, name
    assert all(f.description for f in fields.values())


def test_neuron_declarations_match_the_constructors():
    base = inspect.signature(LIF.__init__).parameters
    declared = LIF.Options.model_fields
    assert list(declared) == [n for n in base if n not in ("self", "more")]
    assert declared["time_steps"].is_required()
    for name in list(declared)[1:]:
        assert declared[name].default == base[name].default, name
    alif = inspect.signature(ALIF.__init__).parameters
    assert list(ALIF.Options.model_fields) == list(declared) + ["adapt_decay", "adapt_scale"]
    for name in ("adapt_decay", "adapt_scale"):
        assert ALIF.Options.model_fields[name].default == alif[name].default
    assert options.describe(LIF.Options)[0]["default"] == "required"


def test_methods_without_options_declare_none():
    for name in ("finetune", "multitask"):
        assert C.describe_options(name) == []
    for name in ("source", "norm"):
        assert adapt.describe_options(name) == []
    assert [r["name"] for r in C.describe_options("ewc")] == ["lam", "fisher_samples"]
    assert [r["name"] for r in adapt.describe_options("tent")] == ["lr", "betas", "steps"]


def test_the_spiking_models_reuse_the_neurons_declarations():
    """One bound per neuron option: the model's field is the neuron's (same type, bounds, default
    and help), and ``T`` carries the bound of the neuron's ``time_steps``."""
    for name in ("beta", "threshold", "reset", "detach_reset", "surrogate", "alpha"):
        model_row = next(r for r in options.describe(SpikingOptions) if r["name"] == name)
        neuron_row = next(r for r in options.describe(LIF.Options) if r["name"] == name)
        assert model_row == neuron_row, name
    assert options.accepts(SpikingOptions, "T") == options.accepts(LIF.Options, "time_steps") == "an integer >= 1"
    # the models' own option order is unchanged (T first, the model's own options last)
    assert list(SNNMLP.Options.model_fields) == [
        "T", "beta", "threshold", "reset", "detach_reset", "surrogate", "alpha", "encoder", "readout", "neuron", "widths"]
    assert list(SNNConv.Options.model_fields)[-1] == "channels"
    with pytest.raises(ConfigError) as model_err:
        SNNMLP((1, 4, 4), 3, beta=1.5)
    with pytest.raises(ConfigError) as neuron_err:
        LIF(4, beta=1.5)
    assert str(model_err.value) == "model 'snn-mlp' option beta must be a number > 0 and <= 1, got 1.5"
    assert str(neuron_err.value) == "neuron LIF option beta must be a number > 0 and <= 1, got 1.5"


# -- one bad value each -> one sentence ------------------------------------------------------------
def _sentence(make) -> str:
    with pytest.raises(ConfigError) as info:
        make()
    text = str(info.value)
    assert "\n" not in text and text.count(". ") == 0, text
    return text


@pytest.fixture(scope="module")
def bn_model():
    torch.manual_seed(0)
    return adapt.BNCNN((2, 2, 2))


BAD = [
    (lambda: C.EWC(lam=-1.0), "continual method 'ewc' option lam must be a number >= 0, got -1.0"),
    (lambda: C.EWC(fisher_samples=0), "continual method 'ewc' option fisher_samples must be an integer >= 1, got 0"),
    (lambda: C.GPM(samples=True), "continual method 'gpm' option samples must be an integer >= 1, got True"),
    (lambda: C.GPM(threshold_first=0), "continual method 'gpm' option threshold_first must be a number > 0 and <= 1, got 0"),
    (lambda: C.GPM(threshold=1.5), "continual method 'gpm' option threshold must be a number > 0 and <= 1, got 1.5"),
    (lambda: C.HLOP(lr_first=0.0), "continual method 'hlop' option lr_first must be a number > 0, got 0.0"),
    (lambda: C.HLOP(lr=math.inf), "continual method 'hlop' option lr must be a number > 0, got inf"),
    (lambda: C.HLOP(iterations=2.0), "continual method 'hlop' option iterations must be an integer >= 1, got 2.0"),
    (lambda: C.HLOP(momentum=1), "continual method 'hlop' option momentum must be a number >= 0 and < 1, got 1"),
    (lambda: C.HLOP(clamp=-1), "continual method 'hlop' option clamp must be a number > 0, got -1"),
    (lambda: C.HLOP(sizes=[3, 0]), ("continual method 'hlop' option sizes must be a list of integers >= 1 "
                                    "(one per Linear/Conv2d layer) or null (None), got [3, 0]")),
    (lambda: C.HLOP(increment=-1), "continual method 'hlop' option increment must be an integer >= 0 or null (None), got -1"),
    (lambda: C.HLOP(guard="yes"), "continual method 'hlop' option guard must be true or false, got 'yes'"),
    (lambda: C.make_method("ewc", lamda=1), "continual method 'ewc' has no option lamda; its options: lam, fisher_samples"),
    (lambda: C.make_method("finetune", lam=1), "continual method 'finetune' has no option lam; its options: none"),
    (lambda: LIF(0), "neuron LIF option time_steps must be an integer >= 1, got 0"),
    (lambda: LIF(4, beta=0.0), "neuron LIF option beta must be a number > 0 and <= 1, got 0.0"),
    (lambda: LIF(4, threshold=math.inf), "neuron LIF option threshold must be a number > 0, got inf"),
    (lambda: LIF(4, reset="hard"), "neuron LIF option reset must be one of 'subtract', 'zero', got 'hard'"),
    (lambda: LIF(4, detach_reset=1), "neuron LIF option detach_reset must be true or false, got 1"),
    (lambda: LIF(4, surrogate="erf"), ("neuron LIF option surrogate must be one of 'arctan', 'fast_sigmoid', "
                                       "'sigmoid', 'triangle', 'straight_through', got 'erf'")),
    (lambda: LIF(4, alpha=True), "neuron LIF option alpha must be a number > 0 or null (None), got True"),
    (lambda: LIF(4, constant_input="no"), "neuron LIF option constant_input must be true or false, got 'no'"),
    (lambda: LIF(4, adapt_decay=0.5), ("neuron LIF has no option adapt_decay; its options: time_steps, beta, "
                                       "threshold, reset, detach_reset, surrogate, alpha, constant_input")),
    (lambda: ALIF(4, adapt_decay=1.0), "neuron ALIF option adapt_decay must be a number >= 0 and < 1, got 1.0"),
    (lambda: ALIF(4, adapt_scale=-0.1), "neuron ALIF option adapt_scale must be a number >= 0, got -0.1"),
    (lambda: LeakyIntegrator(True), "neuron LeakyIntegrator option time_steps must be an integer >= 1, got True"),
    (lambda: LeakyIntegrator(3, beta=2), "neuron LeakyIntegrator option beta must be a number > 0 and <= 1, got 2"),
    (lambda: beta_from_tau(0.5), "beta_from_tau option tau must be a number >= 1 (in time steps), got 0.5"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_a_bad_value_is_one_sentence(make, message):
    assert _sentence(make) == message


BAD_ADAPTER = [
    ("tent", {"lr": 0}, "adapter 'tent' option lr must be a number > 0, got 0"),
    ("tent", {"betas": (0.9, 1.0)}, ("adapter 'tent' option betas must be a list of two numbers >= 0 and < 1, "
                                     "such as [0.9, 0.999], got (0.9, 1.0)")),
    ("tent", {"steps": 0}, "adapter 'tent' option steps must be an integer >= 1, got 0"),
    ("nhl", {"hebbian_layer": 1}, "adapter 'nhl' option hebbian_layer must be a string, got 1"),
    ("nhl", {"hebb_lr": True}, "adapter 'nhl' option hebb_lr must be a number > 0, got True"),
    ("nhl", {"t_invert": 0}, "adapter 'nhl' option t_invert must be a number > 0, got 0"),
    ("nhl", {"hebb_power": -1}, "adapter 'nhl' option hebb_power must be a number >= 0, got -1"),
    ("nhl", {"anti_hebbian": "no"}, "adapter 'nhl' option anti_hebbian must be true or false, got 'no'"),
    ("nhl", {"lr": -1e-3}, "adapter 'nhl' option lr must be a number > 0, got -0.001"),
    ("nhl", {"betas": [0.9]}, ("adapter 'nhl' option betas must be a list of two numbers >= 0 and < 1, "
                               "such as [0.9, 0.999], got [0.9]")),
    ("nhl", {"hebbian": 0}, "adapter 'nhl' option hebbian must be true or false, got 0"),
    ("nhl", {"modulate": None}, "adapter 'nhl' option modulate must be true or false, got None"),
    ("source", {"lr": 1e-3}, "adapter 'source' has no option lr; its options: none"),
    ("tent", {"episodes": 1}, "adapter 'tent' has no option episodes; its options: lr, betas, steps"),
]


@pytest.mark.parametrize("name, opts, message", BAD_ADAPTER)
def test_a_bad_adapter_option_is_one_sentence(bn_model, name, opts, message):
    assert _sentence(lambda: adapt.make(name, bn_model, **opts)) == message
    if name != "source" and "has no option" not in message:  # the constructor refuses a bad value the same way
        cls = {"tent": Tent, "nhl": NHL}[name]
        assert _sentence(lambda: cls(bn_model, **opts)) == message


def test_defaults_and_valid_values_are_accepted(bn_model):
    ewc = C.make_method("ewc")
    assert (ewc.lam, ewc.fisher_samples) == (100.0, 200)
    hlop = C.make_method("hlop", sizes=(4, 3), increment=0, guard=False, lr=1)
    assert hlop.sizes_option == [4, 3] and hlop.increment == 0 and hlop.guard is False and hlop.lr == 1.0
    gpm = C.make_method("gpm", threshold=1)
    assert gpm.threshold == 1.0 and isinstance(gpm.threshold, float)
    tent = adapt.make("tent", bn_model, betas=[0.5, 0.9], steps=2)
    assert tent.betas == (0.5, 0.9) and tent.steps == 2
    assert NHL(bn_model).hebb_power == 0.5
    alif = ALIF(3, 1.0, adapt_scale=0)
    assert (alif.time_steps, alif.beta, alif.adapt_decay, alif.adapt_scale) == (3, 1.0, 0.9, 0.0)
    assert beta_from_tau(4) == 0.75


# -- every input refused before the declarations is still refused --------------------------------
STILL_REFUSED = [
    lambda: C.EWC(lam=math.nan), lambda: C.EWC(lam=math.inf), lambda: C.EWC(lam=True), lambda: C.EWC(lam="1"),
    lambda: C.EWC(fisher_samples=True), lambda: C.EWC(fisher_samples=2.0),
    lambda: C.GPM(samples=0), lambda: C.GPM(threshold=0), lambda: C.GPM(threshold_first=math.nan),
    lambda: C.GPM(threshold="0.9"),
    lambda: C.HLOP(lr_first=math.nan), lambda: C.HLOP(clamp=math.inf), lambda: C.HLOP(iterations=True),
    lambda: C.HLOP(momentum=-0.1), lambda: C.HLOP(momentum=math.nan), lambda: C.HLOP(sizes=[True]),
    lambda: C.HLOP(sizes="3"), lambda: C.HLOP(sizes=[2.0]), lambda: C.HLOP(increment=True), lambda: C.HLOP(increment=1.0),
    lambda: C.make_method("finetune", x=1), lambda: C.make_method("multitask", lam=1),
    lambda: LIF(True), lambda: LIF(2.0), lambda: LIF(4, beta=True), lambda: LIF(4, beta=math.nan),
    lambda: LIF(4, threshold=True), lambda: LIF(4, threshold=-1), lambda: LIF(4, alpha=math.inf),
    lambda: LIF(4, alpha=0), lambda: ALIF(4, adapt_decay=True), lambda: ALIF(4, adapt_decay=-0.1),
    lambda: ALIF(4, adapt_scale=math.inf), lambda: LeakyIntegrator(0), lambda: LeakyIntegrator(3, beta=0),
    lambda: beta_from_tau(True), lambda: beta_from_tau(math.inf), lambda: beta_from_tau("2"),
]


@pytest.mark.parametrize("make", STILL_REFUSED)
def test_inputs_refused_before_are_still_refused(make):
    _sentence(make)


@pytest.mark.parametrize("opts", [
    {"lr": 0}, {"lr": math.nan}, {"steps": 0}, {"steps": True}, {"steps": 1.0},
])
def test_tent_refusals_kept(bn_model, opts):
    _sentence(lambda: Tent(bn_model, **opts))


@pytest.mark.parametrize("opts", [
    {"hebb_lr": 0}, {"hebb_lr": True}, {"t_invert": -1}, {"lr": "1e-3"}, {"hebbian_layer": "conv9"},
])
def test_nhl_refusals_kept(bn_model, opts):
    _sentence(lambda: NHL(bn_model, **opts))


@pytest.mark.parametrize("lr, message", [
    (0, "continual learning option lr must be a finite number greater than 0, got 0"),
    (math.nan, "continual learning option lr must be a finite number greater than 0, got nan"),
    (True, "continual learning option lr must be a finite number greater than 0, got True"),
])
def test_run_method_refuses_a_bad_learning_rate_before_training(lr, message):
    seq = continual.build_sequence("permuted-mnist1d:2", train_size=64, test_size=32, seed=0)
    assert _sentence(lambda: C.run_method(seq, "finetune", lr=lr, model_options={"widths": [8]})) == message


def test_cli_method_opt_unknown_key_lists_the_method_options(capsys):
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as info:
        main(["continual", "--methods", "ewc", "--method-opt", "ewc:lamda=10", "--out", "/nonexistent/never"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "continual method 'ewc' has no option lamda; its options: lam, fisher_samples" in err


def test_cli_method_opt_goes_to_the_methods_that_declare_it():
    """``--method-opt lam=10`` with ``--methods finetune,ewc`` reaches EWC only (finetune has no
    options), as compare's ``--rule-opt`` does; a key no listed method declares is one sentence."""
    from beyondbp.cli.continual import _continual_method_options

    assert _continual_method_options(["lam=10"], ["finetune", "ewc"]) == {"finetune": {}, "ewc": {"lam": 10}}
    assert _continual_method_options(["gpm:samples=50"], ["gpm", "hlop"]) == {"gpm": {"samples": 50}, "hlop": {}}
    with pytest.raises(ConfigError, match="no method among finetune, ewc has an option 'nope'"):
        _continual_method_options(["nope=1"], ["finetune", "ewc"])
