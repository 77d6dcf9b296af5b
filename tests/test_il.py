"""Inference learning (rule ``il``): energy descent, backprop limit, local updates, prox variant."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import data, models
from beyondbp.analysis.alignment import cosine
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.rules.il import IL, ILLearner


@pytest.fixture(scope="module")
def digits():
    ds = data.load("digits")
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def mlp(widths=(32, 32), seed=0, activation="relu", double=False) -> nn.Module:
    torch.manual_seed(seed)
    model = models.build("mlp", (1, 8, 8), 10, widths=widths, activation=activation)
    return model.double() if double else model


def batch64(digits, n=32):
    return digits[0][:n].double(), digits[1][:n]


def train(learner: ILLearner, x, y, epochs: int, opt, batch: int = 32) -> list[dict]:
    order = torch.Generator().manual_seed(0)
    history = []
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            history.append(learner.step((x[idx], y[idx]), opt))
        learner.on_epoch_end(epoch)
    return history


def accuracy(learner, x, y) -> float:
    return float((learner.predict(x).argmax(1) == y).float().mean())


# -- the defining properties ----------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("nudge", [1.0, 0.05])
def test_energy_falls_monotonically_for_a_small_step(digits, activation, nudge):
    model = mlp(widths=(48, 32, 24), activation=activation, double=True)
    learner = IL(iterations=60, step_size=0.05, nudge=nudge).attach(model)
    relax = learner.relax(batch64(digits))
    e = torch.tensor(relax.energies, dtype=torch.float64)
    assert len(e) == 61
    assert (e[1:] <= e[:-1] + 1e-12 * e[0]).all(), e
    assert e[0] - e[-1] > 1e-3 * e[0]  # and it really moved
    assert relax.betas == [nudge] * 61


def test_energy_can_rise_when_the_step_is_too_large(digits):
    """The monotone test above could fail: a step beyond the stable range makes F grow."""
    model = mlp(widths=(48, 32, 24), double=True)
    with torch.no_grad():
        for layer in (model.fc1, model.fc2, model.fc3, model.out):
            layer.weight.mul_(3.0)
    learner = IL(iterations=10, step_size=1.5).attach(model)
    e = learner.relax(batch64(digits)).energies
    assert any(b > a for a, b in zip(e, e[1:]))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_tiny_nudge_local_updates_align_with_backprop(digits, activation):
    model = mlp(widths=(32, 32), activation=activation, double=True)
    learner = IL(nudge=1e-4, iterations=300, step_size=0.2).attach(model)
    batch = batch64(digits)
    estimate = learner.estimate(batch)
    bp = learner.backprop_gradients(batch)
    assert set(estimate) == set(bp)
    for name in bp:
        assert cosine(estimate[name], bp[name]) > 0.99, name
        assert estimate[name].norm() / bp[name].norm() == pytest.approx(1.0, abs=1e-3), name
    # with the target fully clamped the updates are no longer backprop's
    full = IL(nudge=1.0, iterations=300, step_size=0.2)
    learner.detach()
    far = full.attach(model).estimate(batch)
    assert cosine(far["out.weight"], bp["out.weight"]) < 0.95


def test_tiny_nudge_aligns_for_a_convnet_too(digits):
    torch.manual_seed(0)
    x = F.interpolate(digits[0][:16], scale_factor=2, mode="nearest").double()
    model = models.build("lenet", (1, 16, 16), 10).double()
    learner = IL(nudge=1e-4, iterations=200, step_size=0.2).attach(model)
    estimate = learner.estimate((x, digits[1][:16]))
    bp = learner.backprop_gradients((x, digits[1][:16]))
    for name in ("conv1.weight", "conv2.weight", "fc1.weight", "out.weight"):
        assert cosine(estimate[name], bp[name]) > 0.99, name


def test_weight_updates_are_local_prediction_error_times_presynaptic_activity(digits):
    model = mlp(widths=(24, 16), activation="tanh", double=True)
    beta = 0.5
    learner = IL(nudge=beta, iterations=15, step_size=0.1).attach(model)
    x, y = batch64(digits)
    relax = learner.relax((x, y))
    grads = learner.estimate((x, y))
    h0 = x.reshape(len(x), -1)
    h1, h2 = relax.states
    N = len(x)
    for layer, below, above, key in ((model.fc1, h0, h1, "fc1"), (model.fc2, h1, h2, "fc2")):
        a = layer(below)
        eps = above - torch.tanh(a)  # prediction error of this layer
        delta = eps * (1 - torch.tanh(a) ** 2)
        expected_w = -(delta.T @ below) / (beta * N)
        expected_b = -delta.sum(0) / (beta * N)
        assert torch.allclose(grads[f"{key}.weight"], expected_w, rtol=1e-10, atol=1e-12)
        assert torch.allclose(grads[f"{key}.bias"], expected_b, rtol=1e-10, atol=1e-12)
    # output layer: the loss gradient at the relaxed top activity, nothing from further down
    out = model.out(h2)
    err = (torch.softmax(out, 1) - F.one_hot(y, 10).double()) / N
    assert torch.allclose(grads["out.weight"], err.T @ h2, rtol=1e-10, atol=1e-12)
    # the inference dynamics: each hidden layer moved by its own error and the one above only
    assert not torch.allclose(h1, torch.tanh(model.fc1(h0)))


def test_step_hands_the_local_updates_to_the_callers_optimizer(digits):
    model = mlp(double=True)
    learner = IL(iterations=5).attach(model)
    batch = batch64(digits)
    expected = learner.estimate(batch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.3)
    metrics = learner.step(batch, opt)
    for n, p in model.named_parameters():
        assert torch.allclose(p.detach(), before[n] - 0.3 * expected[n], rtol=0, atol=1e-12), n
    assert set(metrics) == {"loss", "energy_start", "energy_end", "nudge"}
    assert metrics["energy_end"] < metrics["energy_start"]
    with torch.no_grad():
        fresh_loss = float(F.cross_entropy(mlp(double=True)(batch[0]), batch[1]))
    assert metrics["loss"] == pytest.approx(fresh_loss)


# -- the proposed (prox) variant ------------------------------------------------------------------


def test_prox_variant_follows_the_implicit_sgd_form(digits):
    model = mlp(widths=(24, 16), activation="relu", double=True)
    eta = 0.7
    learner = IL(variant="prox", eta=eta, iterations=10, step_size=0.1, eps=0.25).attach(model)
    x, y = batch64(digits)
    relax = learner.relax((x, y))
    grads = learner.estimate((x, y))
    h0 = x.reshape(len(x), -1)
    h1, h2 = relax.states
    N = len(x)

    def n_of(h):  # mean squared presynaptic norm + 1 (bias) + eps
        return float(h.pow(2).sum(1).mean()) + 1.0 + 0.25

    n_top = n_of(h2)
    beta = eta * n_top / (1 + eta * n_top)
    assert relax.betas[-1] == pytest.approx(beta, rel=1e-12)
    assert len(set(relax.betas)) > 1  # recomputed as the top activity relaxes
    # output layer: implicit-SGD shrinkage of the loss gradient
    out = model.out(h2)
    err = (torch.softmax(out, 1) - F.one_hot(y, 10).double()) / N
    assert torch.allclose(grads["out.weight"], (err.T @ h2) / (1 + eta * n_top), rtol=1e-9, atol=1e-12)
    # hidden layers: the local gradient normalised by the presynaptic squared norm and η
    for layer, below, above, key in ((model.fc1, h0, h1, "fc1"), (model.fc2, h1, h2, "fc2")):
        a = layer(below)
        delta = (above - torch.relu(a)) * (a > 0)
        expected = -(delta.T @ below) / (eta * N * n_of(below))
        assert torch.allclose(grads[f"{key}.weight"], expected, rtol=1e-9, atol=1e-12)


def test_prox_reads_eta_from_the_optimizer(digits):
    model = mlp(double=True)
    learner = IL(variant="prox", iterations=3).attach(model)
    batch = batch64(digits)
    for lr in (0.2, 5.0):
        opt = torch.optim.SGD(learner.optimizer_parameters(), lr=lr)
        expected = learner.relax(batch, eta=lr).betas[-1]
        assert learner.step(batch, opt)["nudge"] == pytest.approx(expected)
    assert learner.rule_state()["last_lr"].item() == 5.0


def test_prox_is_stable_at_a_learning_rate_where_standard_il_diverges(digits):
    x, y, x_test, y_test = digits
    results = {}
    for variant in ("standard", "prox"):
        model = mlp(widths=(64, 64))
        learner = IL(variant=variant).attach(model)
        opt = torch.optim.SGD(learner.optimizer_parameters(), lr=30.0)
        history = train(learner, x, y, epochs=2, opt=opt)
        finite = all(math.isfinite(h["loss"]) for h in history)
        results[variant] = (finite, accuracy(learner, x_test, y_test))
    assert results["prox"][0] and results["prox"][1] > 0.6, results
    assert not results["standard"][0] or results["standard"][1] < 0.3, results


# -- learning and determinism ---------------------------------------------------------------------


@pytest.mark.parametrize("variant, lr", [("standard", 0.5), ("prox", 1.0)])
def test_learns_digits_with_sgd(digits, variant, lr):
    x, y, x_test, y_test = digits
    model = mlp(widths=(64, 64))
    learner = IL(variant=variant).attach(model)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=lr)
    history = train(learner, x, y, epochs=3, opt=opt)
    acc = accuracy(learner, x_test, y_test)
    assert acc > 0.75, acc  # chance is 0.1
    assert sum(h["loss"] for h in history[-10:]) < 0.7 * sum(h["loss"] for h in history[:10])


def test_same_seed_same_numbers(digits):
    x, y = digits[0][:256], digits[1][:256]
    runs = []
    for _ in range(2):
        model = mlp(seed=7)
        learner = IL(variant="prox").attach(model)
        opt = torch.optim.SGD(learner.optimizer_parameters(), lr=1.0)
        history = train(learner, x, y, epochs=1, opt=opt)
        runs.append(([h["loss"] for h in history], learner.predict(digits[2][:20])))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_step_runs_under_torchs_flop_counter(digits):
    """torch's FlopCounterMode hooks module inputs; IL's relaxation must not hand a leaf tensor
    to a layer, or ``torch.autograd.grad`` fails ("A leaf node was passed to ...")."""
    from torch.utils.flop_counter import FlopCounterMode

    model = mlp()
    learner = IL(iterations=2).attach(model)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    counter = FlopCounterMode(display=False)
    with counter:
        learner.step((digits[0][:8], digits[1][:8]), opt)
    assert counter.get_total_flops() > 0


def test_predict_is_the_feedforward_pass(digits):
    model = mlp()
    learner = IL().attach(model)
    x = digits[2][:10]
    assert torch.equal(learner.predict(x), model(x).detach())


# -- refusals and options -------------------------------------------------------------------------


def test_refuses_dropout_normalisation_and_non_sequential_models():
    torch.manual_seed(0)
    with pytest.raises(UnsupportedModuleError, match=r"'drop1' of type Dropout"):
        IL().attach(models.build("mlp", (1, 8, 8), 10, widths=(16,), dropout=0.2))
    seq = nn.Sequential(OrderedDict(fc=nn.Linear(8, 8), norm=nn.BatchNorm1d(8), out=nn.Linear(8, 3)))
    with pytest.raises(UnsupportedModuleError, match=r"'norm' of type BatchNorm1d"):
        IL().attach(seq)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp()

        def forward(self, x):
            return self.body(x)

    with pytest.raises(UnsupportedModuleError, match="nn.Sequential"):
        IL().attach(Wrapped())
    ok = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 10))
    IL().attach(ok).detach()


def test_refuses_a_layer_used_twice_in_the_chain():
    """The same Linear object at two positions (or a weight tied between two Linears) would need
    the local updates of two layers merged; IL refuses it by path instead of dropping a use."""
    torch.manual_seed(0)
    shared = nn.Linear(16, 16)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(16, 10)
    )
    with pytest.raises(UnsupportedModuleError, match=r"same Linear object at '3' and at '5'.*must appear once"):
        IL().attach(model)
    a, b = nn.Linear(16, 16), nn.Linear(16, 16)
    b.weight = a.weight
    tied = nn.Sequential(OrderedDict(
        flat=nn.Flatten(), fc1=nn.Linear(64, 16), r1=nn.ReLU(), a=a, r2=nn.ReLU(), b=b, r3=nn.ReLU(), out=nn.Linear(16, 10)
    ))
    with pytest.raises(UnsupportedModuleError, match=r"parameter 'a.weight' is also used as 'b.weight'"):
        IL().attach(tied)
    last = nn.Linear(16, 16)  # shared as hidden layer and output layer
    with pytest.raises(UnsupportedModuleError, match=r"at '2' and at '4'"):
        IL().attach(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), last, nn.ReLU(), last))


def test_a_parameter_free_module_used_twice_runs_at_both_positions(digits):
    """One Tanh object after both hidden layers: IL's chain is the model's forward pass (before,
    the second use was dropped, so the energy and the reported loss belonged to another network)."""
    torch.manual_seed(0)
    act = nn.Tanh()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), act, nn.Linear(32, 32), act, nn.Linear(32, 10))
    learner = IL(iterations=0).attach(model)
    x, y = digits[0][:32], digits[1][:32]
    relax = learner.relax((x, y))
    with torch.no_grad():
        h1 = torch.tanh(model[1](x.flatten(1)))
        h2 = torch.tanh(model[3](h1))
        torch.testing.assert_close(relax.states[1], h2)
        assert relax.loss == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"variant": "implicit"},
        {"iterations": -1},
        {"iterations": 2.5},
        {"step_size": 0},
        {"nudge": -0.1},
        {"eta": 0.0},
        {"eps": -1.0},
    ],
)
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError):
        bbp.rules.get("il", **options)


def test_optimizer_must_hold_the_trained_parameters(digits):
    model = mlp()
    learner = IL().attach(model)
    with pytest.raises(ConfigError, match="fc2.weight"):
        learner.step((digits[0][:8], digits[1][:8]), torch.optim.SGD(model.fc1.parameters(), lr=0.1))


def test_registered_as_a_local_rule():
    entry = next(d for d in bbp.rules.describe() if d["name"] == "il")
    assert entry["family"] == "local" and "Inference Learning" in entry["paper"]
