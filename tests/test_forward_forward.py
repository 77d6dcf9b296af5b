"""Forward-Forward (rule ``ff``): defining properties, equations, options, learning."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import data, models
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.rules.forward_forward import FF, FFLearner


@pytest.fixture(scope="module")
def digits():
    ds = data.load("digits")
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def mlp(widths=(64, 64), seed=0, **opts) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (1, 8, 8), 10, widths=widths, **opts)


def train(learner: FFLearner, x, y, epochs: int, lr: float = 0.01, batch: int = 64) -> list[dict]:
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)
    history = []
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            history.append(learner.step((x[idx], y[idx]), opt))
        learner.on_epoch_end(epoch)
    return history


def separation(learner: FFLearner, x, y) -> torch.Tensor:
    """Per layer: the fraction of held-out samples whose goodness with the true label beats
    the goodness with a wrong label (every wrong label counted)."""
    g = learner.goodness(x, None)  # (N, C, L)
    pos = g[torch.arange(len(y)), y]  # (N, L)
    wrong = torch.ones(g.shape[:2], dtype=torch.bool)
    wrong[torch.arange(len(y)), y] = False
    beats = pos[:, None, :] > g  # (N, C, L)
    return beats[wrong].float().reshape(len(y), -1, g.shape[2]).mean(dim=(0, 1))


@pytest.fixture(scope="module")
def trained(digits):
    x, y, _, _ = digits
    model = mlp()
    learner = FF().attach(model)
    history = train(learner, x, y, epochs=8)
    return model, learner, history


# -- the defining properties ----------------------------------------------------------------------


def test_goodness_separates_positive_from_negative_on_held_out_inputs(digits):
    x, y, x_test, y_test = digits
    learner = FF().attach(mlp())
    before = separation(learner, x_test, y_test)
    train(learner, x, y, epochs=8)
    after = separation(learner, x_test, y_test)
    # untrained: the label features barely matter, so positives beat negatives about half the time
    assert (before - 0.5).abs().max() < 0.15, before
    assert (after > 0.9).all(), after
    # and each layer's own probability P(positive) = σ(G − θ) classifies held-out pos / neg data
    g_pos = learner.goodness(x_test, y_test)
    g_neg = learner.goodness(x_test, (y_test + 3) % 10)
    acc = ((g_pos > 0).float().mean(0) + (g_neg < 0).float().mean(0)) / 2
    assert (acc > 0.75).all(), acc  # 0.5 before training (every goodness starts below θ)


def test_no_gradient_crosses_from_a_layers_objective_into_the_layer_below(digits):
    x, y = digits[0][:64], digits[1][:64]
    model = mlp(widths=(32, 32, 32))
    learner = FF().attach(model)
    losses = learner.local_losses((x, y))
    assert set(losses) == {"layer0", "layer1", "layer2", "readout"}
    own = {"layer0": model.fc1, "layer1": model.fc2, "layer2": model.fc3, "readout": model.out}
    for key, loss in losses.items():
        for other_key, module in own.items():
            grads = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, allow_unused=True)
            if other_key == key:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), key
            else:
                assert all(g is None for g in grads), (key, other_key)
    # the update handed to the optimizer is, layer by layer, the gradient of that layer's own loss
    estimate = learner.estimate((x, y))
    generator = torch.Generator().manual_seed(0)
    generator.set_state(learner.generator.get_state())
    losses = learner.local_losses((x, y), generator=generator)
    for key, module in own.items():
        alone = torch.autograd.grad(losses[key], [module.weight])[0]
        name = {"layer0": "fc1", "layer1": "fc2", "layer2": "fc3", "readout": "out"}[key]
        assert torch.allclose(estimate[f"{name}.weight"], alone, rtol=1e-5, atol=1e-7)


def test_length_normalisation_keeps_goodness_from_leaking_upward(digits):
    x = digits[0][:16]
    model = mlp()
    learner = FF().attach(model)
    z = learner.activities(x, 3)
    with torch.no_grad():
        model.fc1.weight.mul_(5.0)
        model.fc1.bias.mul_(5.0)  # ReLU is positively homogeneous: layer 0's output grows 5x
    z_scaled = learner.activities(x, 3)
    assert torch.allclose(z_scaled[0], 5.0 * z[0], rtol=1e-5, atol=1e-5)
    g0, g0_scaled = (z[0] ** 2).sum(1), (z_scaled[0] ** 2).sum(1)
    assert torch.allclose(g0_scaled, 25.0 * g0, rtol=1e-5)
    assert torch.allclose(z_scaled[1], z[1], rtol=1e-4, atol=1e-5)  # the layer above sees no change


def test_layer_loss_and_goodness_follow_the_equations(digits):
    x, y = digits[0][:32].double(), digits[1][:32]
    model = mlp(widths=(16, 16)).double()
    for goodness, normalize in (("sumsq", "rms"), ("norm", "l2")):
        learner = FF(goodness=goodness, normalize=normalize, label_value=1.0, seed=4).attach(model)
        gen = torch.Generator().manual_seed(0)
        gen.set_state(learner.generator.get_state())
        losses = learner.local_losses((x, y), generator=gen)
        gen.set_state(learner.generator.get_state())
        y_neg = (y + torch.randint(1, 10, (32,), generator=gen)) % 10

        def by_hand(labels):
            flat = x.reshape(32, -1).clone()
            flat[:, :10] = 0.0
            flat[torch.arange(32), labels] = 1.0
            h, zs = flat, []
            for layer in (model.fc1, model.fc2):
                if normalize == "rms":
                    h = h / (h.pow(2).mean(1, keepdim=True).sqrt() + 1e-8)
                else:
                    h = h / (h.norm(dim=1, keepdim=True) + 1e-8)
                h = torch.relu(layer(h))
                zs.append(h)
            return zs

        pos, neg = by_hand(y), by_hand(y_neg)
        for k, width in enumerate((16, 16)):
            if goodness == "sumsq":
                gp, gn, theta = pos[k].pow(2).sum(1), neg[k].pow(2).sum(1), float(width)
            else:
                gp, gn, theta = pos[k].norm(dim=1), neg[k].norm(dim=1), math.sqrt(width)
            expected = F.softplus(theta - gp).mean() + F.softplus(gn - theta).mean()
            assert torch.allclose(losses[f"layer{k}"], expected, rtol=1e-10)
        learner.detach()


def test_negatives_carry_a_wrong_label_uniformly_and_reproducibly():
    model = mlp()
    y = torch.arange(10).repeat(500)
    a = FF(seed=3).attach(model)
    neg = a.negative_labels(y)
    assert not (neg == y).any()
    counts = torch.bincount((neg - y).remainder(10), minlength=10)
    assert counts[0] == 0 and (counts[1:] > 500).all() and (counts[1:] < 620).all()
    a.detach()
    b = FF(seed=3).attach(model)
    assert torch.equal(b.negative_labels(y), neg)
    b.detach()
    c = FF(seed=4).attach(model)
    assert not torch.equal(c.negative_labels(y), neg)


def test_label_embedding_writes_the_first_features():
    model = mlp()
    x = torch.randn(5, 1, 8, 8)
    learner = FF().attach(model)
    labels = torch.tensor([0, 3, 9, 3, 1])
    e = learner.embed(x, labels).reshape(5, -1)
    flat = x.reshape(5, -1)
    assert torch.equal(e[:, 10:], flat[:, 10:])
    top = flat[:, 10:].max(dim=1).values
    expected = torch.zeros(5, 10)
    expected[torch.arange(5), labels] = top
    assert torch.equal(e[:, :10], expected)
    neutral = learner.embed(x, None).reshape(5, -1)
    assert torch.allclose(neutral[:, :10], (top / 10)[:, None].expand(5, 10))
    learner.detach()
    fixed = FF(label_value=2.5).attach(model)
    assert torch.equal(fixed.embed(x, labels).reshape(5, -1)[:, :10], expected.ne(0).float() * 2.5)


def test_goodness_prediction_picks_the_label_with_the_largest_summed_goodness(digits):
    x = digits[2][:20]
    model = mlp()
    learner = FF().attach(model)
    scores = learner.predict(x)
    assert scores.shape == (20, 10)
    by_label = torch.stack([learner.goodness(x, c).sum(1) for c in range(10)], dim=1)
    assert torch.allclose(scores, by_label, rtol=1e-5, atol=1e-4)
    total = torch.stack(
        [torch.stack([(z**2).sum(1) for z in learner.activities(x, c)]).sum(0) for c in range(10)], dim=1
    )
    assert torch.equal(scores.argmax(1), total.argmax(1))


def test_readout_prediction_is_the_models_last_linear_on_normalised_activity(digits):
    x = digits[2][:20]
    model = mlp()
    learner = FF(predict="readout").attach(model)
    z = learner.activities(x, None)[-1]
    expected = model.out(z / (z.pow(2).mean(1, keepdim=True).sqrt() + 1e-8))
    assert torch.allclose(learner.predict(x), expected, atol=1e-6)


# -- learning -------------------------------------------------------------------------------------


def test_learns_digits_with_both_predictions(trained, digits):
    _, learner, history = trained
    x_test, y_test = digits[2], digits[3]
    goodness_acc = float((learner.predict(x_test).argmax(1) == y_test).float().mean())
    learner.ff.predict = "readout"
    try:
        readout_acc = float((learner.predict(x_test).argmax(1) == y_test).float().mean())
    finally:
        learner.ff.predict = "goodness"
    assert goodness_acc > 0.8, goodness_acc  # chance is 0.1
    assert readout_acc > 0.8, readout_acc
    first = sum(h["loss"] for h in history[:10]) / 10
    last = sum(h["loss"] for h in history[-10:]) / 10
    assert last < 0.3 * first


@pytest.mark.parametrize(
    "options, lr, floor",
    [
        ({"goodness": "norm"}, 0.01, 0.8),  # θ = sqrt(width) with RMS-normalised inputs
        # Tosato et al.'s combination: unit-length inputs make small pre-activations, so it
        # needs a larger step and learns more slowly in 8 epochs
        ({"goodness": "norm", "normalize": "l2", "threshold": 3.0}, 0.03, 0.5),
    ],
)
def test_norm_goodness_and_l2_normalisation_learn(digits, options, lr, floor):
    x, y, x_test, y_test = digits
    learner = FF(**options).attach(mlp())
    train(learner, x, y, epochs=8, lr=lr)
    acc = float((learner.predict(x_test).argmax(1) == y_test).float().mean())
    assert acc > floor, acc


def test_greedy_training_trains_one_layer_at_a_time(digits):
    x, y, x_test, y_test = digits
    model = mlp()
    learner = FF(train="greedy", epochs_per_layer=3).attach(model)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=0.01)
    fc2_before = model.fc2.weight.detach().clone()
    for epoch in range(3):
        for i in range(0, len(x), 64):
            metrics = learner.step((x[i : i + 64], y[i : i + 64]), opt)
            assert model.fc2.weight.grad is None and model.fc1.weight.grad is not None
            assert "layer1_loss" not in metrics and "layer0_loss" in metrics
        assert learner.on_epoch_end(epoch) == {"ff_active_layer": float((epoch + 1) // 3)}
    assert torch.equal(model.fc2.weight, fc2_before)
    fc1_after = model.fc1.weight.detach().clone()
    for epoch in range(3, 6):
        for i in range(0, len(x), 64):
            learner.step((x[i : i + 64], y[i : i + 64]), opt)
            assert model.fc1.weight.grad is None and model.fc2.weight.grad is not None
        learner.on_epoch_end(epoch)
    assert torch.equal(model.fc1.weight, fc1_after)
    assert not torch.equal(model.fc2.weight, fc2_before)
    acc = float((learner.predict(x_test).argmax(1) == y_test).float().mean())
    assert acc > 0.6, acc


def test_rule_state_round_trip_continues_identically(digits):
    x, y = digits[0][:256], digits[1][:256]
    model_a = mlp(seed=1)
    a = FF(train="greedy").attach(model_a)
    train(a, x, y, epochs=1)
    state = {k: v.clone() for k, v in a.rule_state().items()}
    weights = {k: v.clone() for k, v in model_a.state_dict().items()}
    model_b = mlp(seed=2)
    model_b.load_state_dict(weights)
    b = FF(train="greedy").attach(model_b)
    b.load_rule_state(state)
    assert b.epochs_done == 1 and b.active_layers() == [1]
    assert torch.equal(a.negative_labels(y), b.negative_labels(y))
    with pytest.raises(ConfigError):
        b.load_rule_state({"bogus": torch.zeros(1)})


# -- refusals and options -------------------------------------------------------------------------


def test_refuses_conv_layers_and_non_sequential_models():
    torch.manual_seed(0)
    with pytest.raises(UnsupportedModuleError, match=r"'conv1' of type Conv2d"):
        FF().attach(models.build("lenet", (1, 28, 28), 10))

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp()

        def forward(self, x):
            return self.body(x)

    with pytest.raises(UnsupportedModuleError, match="nn.Sequential"):
        FF().attach(Wrapped())
    with pytest.raises(UnsupportedModuleError, match=r"'norm' of type BatchNorm1d"):
        FF().attach(
            nn.Sequential(OrderedDict(flat=nn.Flatten(), fc=nn.Linear(64, 8), act=nn.ReLU(), norm=nn.BatchNorm1d(8)))
        )


def test_refuses_models_it_cannot_use():
    with pytest.raises(ConfigError, match="hidden Linear"):
        FF().attach(models.build("mlp", (1, 8, 8), 10, widths=()))
    with pytest.raises(ConfigError, match="at least as many features"):
        FF().attach(models.build("mlp", (6,), 10, widths=(8,)))
    headless = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    with pytest.raises(ConfigError, match="readout"):
        FF(predict="readout", num_classes=10).attach(headless)
    with pytest.raises(ConfigError, match="num_classes"):
        FF().attach(nn.Sequential(nn.Linear(20, 8), nn.ReLU()))
    learner = FF(num_classes=5).attach(headless)
    assert learner.readout is None and len(learner.layers) == 2
    assert learner.predict(torch.randn(3, 20)).shape == (3, 5)


def test_refuses_a_layer_used_twice_in_the_chain():
    """The same Linear object at two positions (or a weight tied between two Linears) would get
    two layers' local objectives; FF refuses it by path instead of silently dropping the second use."""
    torch.manual_seed(0)
    shared = nn.Linear(16, 16)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(16, 10)
    )
    with pytest.raises(UnsupportedModuleError, match=r"same Linear object at '3' and at '5'.*must appear once"):
        FF().attach(model)
    a, b = nn.Linear(16, 16), nn.Linear(16, 16)
    b.weight = a.weight
    tied = nn.Sequential(OrderedDict(
        flat=nn.Flatten(), fc1=nn.Linear(64, 16), r1=nn.ReLU(), a=a, r2=nn.ReLU(), b=b, r3=nn.ReLU(), out=nn.Linear(16, 10)
    ))
    with pytest.raises(UnsupportedModuleError, match=r"parameter 'a.weight' is also used as 'b.weight'"):
        FF().attach(tied)
    nested = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 16), nn.ReLU()), nn.Sequential(shared, nn.ReLU()))
    nested.append(nested[2])
    nested.append(nn.Linear(16, 10))
    with pytest.raises(UnsupportedModuleError, match=r"at '2.0' and at '3.0'"):
        FF().attach(nested)


def test_a_parameter_free_module_used_twice_runs_at_both_positions(digits):
    """One Tanh object after both hidden layers: both FF layers have their activation (before,
    the second use was dropped and layer 2 trained on its pre-activation)."""
    torch.manual_seed(0)
    act = nn.Tanh()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), act, nn.Linear(32, 32), act, nn.Linear(32, 10))
    learner = FF().attach(model)
    assert [b.name for b in learner.layers] == ["1", "3"] and learner.readout.name == "5"
    x = digits[0][:16]
    z1, z2 = learner.activities(x, 3)
    with torch.no_grad():
        h = learner.embed(x, 3).flatten(1)
        expect1 = torch.tanh(model[1](learner.normalize(h)))
        expect2 = torch.tanh(model[3](learner.normalize(expect1)))
    torch.testing.assert_close(z1, expect1)
    torch.testing.assert_close(z2, expect2)


def test_dropout_is_accepted_and_off_in_predict(digits):
    x = digits[2][:10]
    model = mlp(dropout=0.5)
    learner = FF().attach(model)
    model.train()
    assert torch.equal(learner.predict(x), learner.predict(x))
    assert model.training


@pytest.mark.parametrize(
    "options",
    [
        {"goodness": "l1"},
        {"threshold": 0},
        {"threshold": -1.0},
        {"normalize": "batch"},
        {"label_value": "min"},
        {"label_value": 0},
        {"train": "layerwise"},
        {"epochs_per_layer": 0},
        {"predict": "softmax"},
        {"num_classes": 1},
        {"seed": -1},
    ],
)
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError):
        bbp.rules.get("ff", **options)


def test_optimizer_must_hold_the_trained_parameters(digits):
    model = mlp()
    learner = FF().attach(model)
    opt = torch.optim.SGD(model.fc1.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="fc2.weight"):
        learner.step((digits[0][:8], digits[1][:8]), opt)


def test_registered_as_a_local_rule():
    assert "ff" in bbp.rules.names()
    entry = next(d for d in bbp.rules.describe() if d["name"] == "ff")
    assert entry["family"] == "local" and "Forward-Forward" in entry["paper"]
