"""Measuring never changes what is measured (every registered rule).

``estimate``, ``backprop_gradients``, ``diagnostics`` (and ``feedback_matrix``) must leave the
weights, every buffer (BatchNorm running statistics), every ``.grad`` the caller had, module
modes, the global RNG and the rule's own generators and state exactly as they were, so that a
run with diagnostics trains bit for bit like one without. The models carry BatchNorm and
dropout, the two things that made measuring leak (running statistics, dropout masks); a rule
that refuses normalisation layers (ff), dropout (il) or ReLU gets the richest variant it accepts.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import beyondbp as bbp
from beyondbp.errors import UnsupportedModuleError
from beyondbp.rules import Learner
from beyondbp.training import RunConfig, run

MEASURES = ["estimate", "backprop_gradients", "diagnostics"]


def build(norm: bool, dropout: float, activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 32)]
    if norm:
        layers.append(nn.BatchNorm1d(32))
    layers += [activation(), nn.Dropout(dropout), nn.Linear(32, 32), activation(), nn.Dropout(dropout), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


#: Test models from richest to plainest: BatchNorm + dropout, dropout, neither; ReLU first, then
#: tanh for rules that need saturating units (as the contract suite falls back to a rule's
#: ``example_model``, this suite falls back along these variants).
VARIANTS = [(norm, dropout, act) for act in (nn.ReLU, nn.Tanh) for norm, dropout in ((True, 0.3), (False, 0.3), (False, 0.0))]


def attach(name: str, seed: int = 0) -> Learner:
    """The rule on the BatchNorm + dropout model, or on the richest variant it accepts."""
    refusals = []
    for norm, dropout, act in VARIANTS:
        torch.manual_seed(seed)
        try:
            return bbp.rules.get(name).attach(build(norm, dropout, act))
        except UnsupportedModuleError as exc:
            refusals.append(str(exc))
    torch.manual_seed(seed)
    model = bbp.rules.rule_class(name).example_model((1, 8, 8), 10)
    if model is not None:  # e.g. ottt, which trains spiking models only
        return bbp.rules.get(name).attach(model)
    raise AssertionError(f"rule {name} refuses every test model: {refusals}")


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    return [(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(n)]


def snapshot(learner: Learner) -> dict:
    model = learner.model
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
        "rule": {k: v.detach().clone() for k, v in learner.rule_state().items()},
        "generators": [g.get_state() for g in learner.generators()],
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), f"state_dict entry {k} changed"
    for k in a["grads"]:
        ga, gb = a["grads"][k], b["grads"][k]
        assert (ga is None) == (gb is None) and (ga is None or torch.equal(ga, gb)), f".grad of {k} changed"
    assert a["modes"] == b["modes"], "module train/eval modes changed"
    assert torch.equal(a["rng"], b["rng"]), "global RNG state changed"
    assert a["rule"].keys() == b["rule"].keys()
    for k in a["rule"]:
        assert torch.equal(a["rule"][k], b["rule"][k]), f"rule state {k} changed"
    assert len(a["generators"]) == len(b["generators"])
    for ga, gb in zip(a["generators"], b["generators"]):
        assert torch.equal(ga, gb), "a rule generator advanced"


def optimizer(learner: Learner) -> torch.optim.Optimizer:
    return torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9)


@pytest.mark.parametrize("method", MEASURES)
@pytest.mark.parametrize("name", bbp.rules.names())
def test_measuring_leaves_model_rng_and_rule_state_exactly_as_they_were(name, method):
    learner = attach(name)
    opt = optimizer(learner)
    data = batches(3)
    torch.manual_seed(7)
    for b in data[:2]:  # running statistics, lazily built feedback, advanced generators exist now
        learner.step(b, opt)
    for i, p in enumerate(learner.model.parameters()):  # the caller's own gradients
        p.grad = None if i == 0 else torch.full_like(p, 0.25)
    learner.model.train()
    before = snapshot(learner)
    # ottt: snn-mlp; stdp, nalsm: the lsm; elm-online: the elm (no BatchNorm there)
    assert any(k.endswith("running_mean") for k in before["state"]) or name in ("ff", "il", "ottt", "stdp", "nalsm", "elm-online")
    getattr(learner, method)(data[2])
    assert_same(before, snapshot(learner))
    learner.model.eval()  # also in eval mode (the run loop's diagnostics)
    before = snapshot(learner)
    getattr(learner, method)(data[2])
    assert_same(before, snapshot(learner))


@pytest.mark.parametrize("name", bbp.rules.names())
def test_training_with_measurements_equals_training_without(name):
    data = batches(4)

    def train(measure: bool) -> dict:
        learner = attach(name)
        opt = optimizer(learner)
        torch.manual_seed(11)
        for b in data:
            if measure:
                learner.estimate(b)
                learner.backprop_gradients(b)
                learner.diagnostics(b)
                for layer in learner.trained_layers():
                    learner.feedback_matrix(layer)
            learner.step(b, opt)
        return snapshot(learner)

    assert_same(train(False), train(True))


def test_feedback_matrix_does_not_advance_brsf_generators():
    learner = attach("brsf")
    layer = next(iter(learner.trained_layers()))
    states = [g.get_state() for g in learner.generators()]
    assert states, "brsf redraws its feedback from generators; they must be listed"
    first = learner.feedback_matrix(layer)
    assert all(torch.equal(s, g.get_state()) for s, g in zip(states, learner.generators()))
    assert torch.equal(first, learner.feedback_matrix(layer))


def test_measuring_restores_state_after_an_error():
    learner = attach("fa")
    learner.step(batches(1)[0], optimizer(learner))
    bad = (torch.zeros(4, 1, 8, 8), torch.full((4,), 99))  # class 99 does not exist
    before = snapshot(learner)
    with pytest.raises(Exception):
        learner.estimate(bad)
    assert_same(before, snapshot(learner))


def test_a_learner_subclass_cannot_override_the_public_measuring_methods():
    for method in MEASURES:
        with pytest.raises(TypeError, match=f"override _{method} instead"):
            type("Sneaky", (Learner,), {method: lambda self, batch: {}})


@pytest.mark.parametrize(
    "rule, model, options",
    [
        ("fa", "mlp", {"widths": [32, 32], "dropout": 0.2}),
        ("dfa", "mlp", {"widths": [32, 32], "dropout": 0.2}),
        ("brsf", "mlp", {"widths": [32, 32], "dropout": 0.2}),
        ("softhebb", "softhebb_mlp", {}),
    ],
)
def test_a_run_with_diagnostics_trains_exactly_like_one_without(rule, model, options):
    base = dict(rule=rule, model=model, data="digits", epochs=2, batch_size=32, n_train=384, n_test=96, seed=3)
    results = [run(RunConfig(**base, model_options=options, diagnostics=d)) for d in (False, True)]
    plain, measured = (r.history for r in results)
    assert any(entry["diagnostics"] for entry in measured)
    keep = ("train_loss", "test_loss", "test_accuracy", "metrics")
    for a, b in zip(plain, measured):
        assert {k: a[k] for k in keep if k in a} == {k: b[k] for k in keep if k in b}
    assert results[0].final["test_accuracy"] == results[1].final["test_accuracy"]
