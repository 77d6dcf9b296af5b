"""Gradient signal-to-noise ratio per layer (``beyondbp.analysis.gradients``).

The formula on hand-made updates with a known answer; backprop's learner against an independent
``torch.autograd`` computation (ratio exactly 1, also with dropout, whose masks the rule and
backprop share per minibatch); finite positive SNRs for every trained layer of a tiny MLP under
each rule; measuring leaves weights, buffers, grads, modes, rule state, the rule's generators and
the global torch / NumPy / Python RNGs bit for bit as they were; the documented edge cases
(zero noise, missing layers, rules without an estimate) and bad input.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import models
from beyondbp.analysis import gradient_snr, snr_table
from beyondbp.analysis.gradients import snr, snr_ratio
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.jsonable import plain
from beyondbp.rules import Learner
from beyondbp.rules.base import Rule

RULES = [n for n in ("backprop", "fa", "dfa", "pfa", "kp", "brsf", "softhebb", "ff", "il") if n in bbp.rules.names()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_batches(n: int, size: int = 16, seed: int = 123, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (1, 8, 8), 10, widths=[16, 16])


# -- a hand-made learner: the updates are given, so the SNR is known exactly ----------------------

#: Updates of a (1, 2) weight on minibatches 0, 1, 2. Rule: mean (2, 1), ‖ḡ‖² = 5, deviations
#: (−1, −1), (1, −1), (0, 2) → mean squared deviation 8/3 → SNR 15/8. Backprop: mean (1, 1/3),
#: ‖ḡ‖² = 10/9, deviations (0, 2/3), (0, 2/3), (0, −4/3) → 8/9 → SNR 5/4. Ratio 3/2.
RULE_UPDATES = [[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]]
BP_UPDATES = [[1.0, 1.0], [1.0, 1.0], [1.0, -1.0]]


class GivenRule(Rule):
    name = "given"
    refuses_unknown = False

    def _make_learner(self, model, loss_fn):
        return GivenLearner(self, model, loss_fn)


class GivenLearner(Learner):
    """Returns ``RULE_UPDATES[i]`` / ``BP_UPDATES[i]`` for the minibatch whose inputs are all ``i``;
    ``omit`` names weights its estimate leaves out; ``unable`` makes it have no estimate."""

    omit: tuple[str, ...] = ()
    unable = False

    def trained_layers(self):
        return {"a": self.model.a, "b": self.model.b}

    def _updates(self, batch, table):
        i = int(batch[0].flatten()[0])
        return {"a.weight": torch.tensor([table[i]]), "b.weight": torch.tensor([table[i]]) * 2}

    def _estimate(self, batch):
        if self.unable:
            raise NotImplementedError
        return {k: v for k, v in self._updates(batch, RULE_UPDATES).items() if k not in self.omit}

    def _backprop_gradients(self, batch):
        return self._updates(batch, BP_UPDATES)


def given_learner() -> GivenLearner:
    model = nn.Module()
    model.a = nn.Linear(2, 1)
    model.b = nn.Linear(2, 1)
    return GivenRule().attach(model)


def index_batches(n: int = 3, size: int = 4):
    return [(torch.full((size, 2), float(i)), torch.zeros(size, dtype=torch.long)) for i in range(n)]


def test_snr_formula_on_hand_made_updates():
    result = gradient_snr(given_learner(), index_batches())
    assert result["batches"] == 3 and result["batch_size"] == 4 and result["skipped"] == {}
    assert list(result["layers"]) == ["a.weight", "b.weight"]
    for name in ("a.weight", "b.weight"):  # b's updates are a's times 2: the SNR is scale-free
        row = result["layers"][name]
        assert row["rule"] == pytest.approx(15 / 8, rel=1e-14, abs=0)
        assert row["backprop"] == pytest.approx(5 / 4, rel=1e-14, abs=0)
        assert row["ratio"] == pytest.approx(3 / 2, rel=1e-14, abs=0)
    assert snr([torch.tensor(u) for u in RULE_UPDATES]) == pytest.approx(15 / 8, rel=1e-14, abs=0)


def test_snr_equals_the_two_pass_definition_on_random_updates():
    g = torch.Generator().manual_seed(0)
    updates = [torch.randn(7, 5, generator=g, dtype=torch.float64) + 0.3 for _ in range(9)]
    stacked = np.stack([u.numpy().ravel() for u in updates])
    mean = stacked.mean(axis=0)
    expected = float(mean @ mean) / float(((stacked - mean) ** 2).sum(axis=1).mean())
    assert snr(updates) == pytest.approx(expected, rel=1e-12, abs=0)


def test_zero_noise_gives_inf_and_all_zero_updates_give_nan():
    same = [torch.tensor([1.0, -2.0])] * 3
    assert snr(same) == math.inf
    assert math.isnan(snr([torch.zeros(2)] * 2))
    assert snr_ratio(math.inf, math.inf) != snr_ratio(math.inf, math.inf)  # nan
    assert math.isnan(snr_ratio(0.0, 0.0)) and math.isnan(snr_ratio(math.nan, 1.0)) and math.isnan(snr_ratio(1.0, math.nan))
    assert snr_ratio(2.0, 0.0) == math.inf and snr_ratio(math.inf, 2.0) == math.inf
    assert snr_ratio(2.0, math.inf) == 0.0 and snr_ratio(3.0, 2.0) == 1.5
    # the same minibatch three times: zero noise, for the rule and for backprop
    learner = bbp.rules.get("fa").attach(tiny_mlp())
    batch = make_batches(1)[0]
    result = gradient_snr(learner, [batch, batch, batch])
    for row in result["layers"].values():
        assert row["rule"] == math.inf and row["backprop"] == math.inf and math.isnan(row["ratio"])
    assert plain(result)["layers"]["fc1.weight"] == {"rule": None, "backprop": None, "ratio": None}


def test_a_rules_own_randomness_counts_as_noise():
    """brSF redraws its feedback every minibatch: on one minibatch repeated, its update still
    varies (finite SNR) where backprop's does not (inf); the output layer gets no feedback."""
    learner = bbp.rules.get("brsf").attach(tiny_mlp())
    batch = make_batches(1)[0]
    result = gradient_snr(learner, [batch] * 4)["layers"]
    for name in ("fc1.weight", "fc2.weight"):
        assert math.isfinite(result[name]["rule"]) and result[name]["rule"] > 0
        assert result[name]["backprop"] == math.inf and result[name]["ratio"] == 0.0
    assert result["out.weight"]["rule"] == math.inf


def test_dropout_masks_differ_between_minibatches_and_are_shared_with_backprop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    learner = bbp.rules.get("backprop").attach(model)
    batch = make_batches(1)[0]
    model.train()
    result = gradient_snr(learner, [batch] * 4)["layers"]
    for row in result.values():  # fresh masks per minibatch: finite; the same masks for both: ratio 1
        assert math.isfinite(row["rule"]) and row["rule"] == row["backprop"] and row["ratio"] == 1.0
    model.eval()  # no dropout in eval mode: the repeated minibatch has no noise
    assert all(row["rule"] == math.inf for row in gradient_snr(learner, [batch] * 4)["layers"].values())


# -- backprop against an independent autograd computation -----------------------------------------


def test_backprop_learner_gives_ratio_one_and_matches_autograd():
    model = tiny_mlp().double()
    batches = make_batches(5, dtype=torch.float64)
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    expected = {}
    per_batch = {n: [] for n in weights}
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(weights.values()))
        for n, g in zip(weights, grads):
            per_batch[n].append(g.numpy().ravel())
    for n, gs in per_batch.items():
        stacked = np.stack(gs)
        mean = stacked.mean(axis=0)
        expected[n] = float(mean @ mean) / float(((stacked - mean) ** 2).sum(axis=1).mean())

    learner = bbp.rules.get("backprop").attach(model)
    result = gradient_snr(learner, batches)
    assert list(result["layers"]) == ["fc1.weight", "fc2.weight", "out.weight"]
    assert result["batches"] == 5 and result["batch_size"] == 16 and result["skipped"] == {}
    for n, row in result["layers"].items():
        assert row["ratio"] == 1.0 and row["rule"] == row["backprop"]
        assert row["backprop"] == pytest.approx(expected[n], rel=1e-10, abs=0)
    # asking for some layers by name gives the same numbers for those
    only = gradient_snr(learner, batches, layers=["fc2.weight"])["layers"]
    assert list(only) == ["fc2.weight"] and only["fc2.weight"] == result["layers"]["fc2.weight"]
    bias = gradient_snr(learner, batches, layers=["fc1.bias"])["layers"]["fc1.bias"]
    assert bias["ratio"] == 1.0 and math.isfinite(bias["rule"]) and bias["rule"] > 0


# -- every rule on a tiny MLP -----------------------------------------------------------------------


@pytest.mark.parametrize("name", RULES)
def test_every_rule_gives_finite_positive_snrs_for_every_trained_layer(name):
    learner = bbp.rules.get(name).attach(tiny_mlp())
    result = gradient_snr(learner, make_batches(4))
    trained = learner.trained_layers() or {"fc1": None, "fc2": None, "out": None}
    assert set(result["layers"]) == {f"{layer}.weight" for layer in trained}
    assert result["skipped"] == {}
    for row in result["layers"].values():
        for key in ("rule", "backprop", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, row)


# -- measuring changes nothing ----------------------------------------------------------------------


def build(norm: bool, dropout: float, activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 32)]
    if norm:
        layers.append(nn.BatchNorm1d(32))
    layers += [activation(), nn.Dropout(dropout), nn.Linear(32, 32), activation(), nn.Dropout(dropout), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


VARIANTS = [(norm, dropout, act) for act in (nn.ReLU, nn.Tanh) for norm, dropout in ((True, 0.3), (False, 0.3), (False, 0.0))]


def attach_richest(name: str) -> Learner:
    """The rule on a BatchNorm + dropout model, or the richest variant it accepts."""
    for norm, dropout, act in VARIANTS:
        torch.manual_seed(0)
        try:
            return bbp.rules.get(name).attach(build(norm, dropout, act))
        except UnsupportedModuleError:
            continue
    raise AssertionError(f"rule {name} refuses every test model")


def snapshot(learner: Learner) -> dict:
    model = learner.model
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
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
    assert torch.equal(a["rng"], b["rng"]), "global torch RNG state changed"
    na, nb = a["numpy"], b["numpy"]
    assert na[0] == nb[0] and np.array_equal(na[1], nb[1]) and na[2:] == nb[2:], "NumPy RNG changed"
    assert a["python"] == b["python"], "Python random state changed"
    assert a["rule"].keys() == b["rule"].keys()
    for k in a["rule"]:
        assert torch.equal(a["rule"][k], b["rule"][k]), f"rule state {k} changed"
    assert len(a["generators"]) == len(b["generators"])
    for ga, gb in zip(a["generators"], b["generators"]):
        assert torch.equal(ga, gb), "a rule generator advanced"


@pytest.mark.parametrize("name", RULES)
def test_measuring_leaves_model_rule_generators_and_rngs_exactly_as_they_were(name):
    learner = attach_richest(name)
    model = learner.model
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9)
    batches = make_batches(4, size=8)
    torch.manual_seed(7)
    for b in batches[:2]:  # running statistics, lazily built feedback, advanced generators exist now
        learner.step(b, opt)
    for i, p in enumerate(model.parameters()):  # the caller's own gradients
        p.grad = None if i == 0 else torch.full_like(p, 0.25)
    np.random.seed(5)
    random.seed(5)
    model.train()
    if name == "brsf":
        assert learner.generators() and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
    before = snapshot(learner)
    gradient_snr(learner, batches)
    assert_same(before, snapshot(learner))
    model.eval()
    before = snapshot(learner)
    gradient_snr(learner, batches)
    assert_same(before, snapshot(learner))


def test_training_after_measuring_equals_training_without():
    def train(measure: bool) -> dict:
        learner = attach_richest("brsf")
        opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9)
        batches = make_batches(3, size=8)
        torch.manual_seed(11)
        for b in batches:
            if measure:
                gradient_snr(learner, batches)
            learner.step(b, opt)
        return snapshot(learner)

    assert_same(train(False), train(True))


class BumpingLearner(GivenLearner):
    """A careless estimate: it bumps a buffer, flips the mode and leaves a .grad, and its update
    is the buffer's value (so a leak from one minibatch into the next would show as noise)."""

    def _estimate(self, batch):
        self.model.count += 1
        self.model.a.weight.grad = torch.ones_like(self.model.a.weight)
        self.model.eval()
        return {"a.weight": self.model.count.reshape(1, 1).expand(1, 2).clone()}

    def _backprop_gradients(self, batch):
        return self._estimate(batch)


def test_every_minibatch_sees_the_same_model_state():
    model = nn.Module()
    model.a, model.b = nn.Linear(2, 1), nn.Linear(2, 1)
    model.register_buffer("count", torch.zeros(()))
    learner = BumpingLearner(GivenRule(), model, F.cross_entropy)
    model.train()
    result = gradient_snr(learner, index_batches(), layers=["a.weight"])
    assert result["layers"]["a.weight"]["rule"] == math.inf  # the update is 1 on every minibatch
    assert float(model.count) == 0 and model.training and model.a.weight.grad is None


# -- documented edge cases -------------------------------------------------------------------------


def test_a_layer_missing_from_the_rules_update_is_skipped_by_default_and_refused_by_name():
    learner = given_learner()
    learner.omit = ("b.weight",)
    result = gradient_snr(learner, index_batches())
    assert list(result["layers"]) == ["a.weight"]
    assert result["skipped"] == {"b.weight": "the rule's update has no entry for it on minibatch 0"}
    with pytest.raises(ConfigError, match=r"layer weight 'b.weight' cannot be measured: the rule's update has no entry"):
        gradient_snr(learner, index_batches(), layers=["b.weight"])


def test_a_learner_without_an_estimate_is_refused():
    learner = given_learner()
    learner.unable = True
    with pytest.raises(ConfigError, match=r"rule 'given' gives no update estimate"):
        gradient_snr(learner, index_batches())


@pytest.mark.parametrize(
    "batches, message",
    [
        ([], r"at least 2 minibatches, got 0"),
        ("one", r"batches must be a list of \(inputs, targets\) minibatches, got str"),
        (None, r"got NoneType"),
        ("single", r"at least 2 minibatches, got 1"),
        ("not_pair", r"minibatch 1 is not a pair \(inputs, targets\) of tensors"),
        ("sizes", r"every minibatch must have the same size .* got sizes \[3, 4\]"),
        ("mismatch", r"minibatch 0 must hold at least one example with as many targets as inputs"),
    ],
)
def test_bad_batches_are_one_sentence_config_errors(batches, message):
    good = index_batches()
    cases = {
        "single": good[:1],
        "not_pair": [good[0], (good[1][0],)],
        "sizes": [good[0], (good[1][0][:3], good[1][1][:3])],
        "mismatch": [(good[0][0], good[0][1][:2]), good[1]],
    }
    batches = cases.get(batches, batches) if isinstance(batches, str) else batches
    with pytest.raises(ConfigError, match=message) as info:
        gradient_snr(given_learner(), batches)
    assert "\n" not in str(info.value)


def test_bad_layers_learner_and_detached_learner_are_refused():
    learner = given_learner()
    with pytest.raises(ConfigError, match=r"unknown layer weight\(s\) \['c.weight'\]; this learner's trained layer weights are \['a.weight', "
        r"'b.weight'\]"):
        gradient_snr(learner, index_batches(), layers=["c.weight"])
    with pytest.raises(ConfigError, match=r"layers must be a non-empty list"):
        gradient_snr(learner, index_batches(), layers=[])
    with pytest.raises(ConfigError, match=r"layers must be a non-empty list"):
        gradient_snr(learner, index_batches(), layers="a.weight")
    with pytest.raises(ConfigError, match=r"expects an attached beyondbp Learner, got Sequential"):
        gradient_snr(nn.Sequential(), index_batches())
    learner.detach()
    with pytest.raises(ConfigError, match=r"detached"):
        gradient_snr(learner, index_batches())


# -- the Markdown table ----------------------------------------------------------------------------


def test_snr_table_markdown():
    result = {
        "layers": {
            "fc1.weight": {"rule": 0.123456, "backprop": 2.0, "ratio": 0.061728},
            "out.weight": {"rule": math.inf, "backprop": math.inf, "ratio": math.nan},
        },
        "batches": 4,
        "batch_size": 16,
    }
    assert snr_table(result) == (
        "| layer | rule SNR | backprop SNR | ratio |\n"
        "| --- | ---: | ---: | ---: |\n"
        "| fc1.weight | 0.123 | 2 | 0.0617 |\n"
        "| out.weight | inf | inf | nan |\n"
    )
    read_back = plain(result)  # inf/nan -> None in JSON: shown as a dash
    assert snr_table({"dfa-0": read_back}, title="SNR") == (
        "**SNR**\n\n"
        "| network | layer | rule SNR | backprop SNR | ratio |\n"
        "| --- | --- | ---: | ---: | ---: |\n"
        "| dfa-0 | fc1.weight | 0.123 | 2 | 0.0617 |\n"
        "| dfa-0 | out.weight | – | – | – |\n"
    )
    with pytest.raises(ConfigError, match=r"entry 'x' is not a gradient_snr result"):
        snr_table({"x": 3})
    with pytest.raises(ConfigError, match=r"snr_table expects"):
        snr_table([result])
