"""Alignment diagnostics (``beyondbp.analysis.alignment``): gradient cosine against backprop per
layer and over all layers, and the angle / norm ratio between each feedback matrix and ``W``."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import data, models
from beyondbp.analysis.alignment import angle_degrees, cosine, diagnostics, gradient_alignment, weight_alignment


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def mlp(seed=0):
    torch.manual_seed(seed)
    return models.build("mlp", (20,), 5, widths=(32, 24))


def batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 20, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_cosine_and_angle_basics():
    a = torch.tensor([1.0, 0.0])
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, torch.tensor([0.0, 2.0])) == pytest.approx(0.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert angle_degrees(a, torch.tensor([1.0, 1.0])) == pytest.approx(45.0)
    assert angle_degrees(a, -a) == pytest.approx(180.0)
    assert torch.isnan(torch.tensor(cosine(a, torch.zeros(2))))


def test_fa_with_b_equal_to_w_has_cosine_one_and_angle_zero():
    model = mlp()
    learner = bbp.rules.get("fa").attach(model)
    with torch.no_grad():
        for layer in learner.trained_layers().values():
            layer.bbp_feedback.copy_(layer.weight)
    out = learner.diagnostics(batch())
    layers = list(learner.trained_layers())
    assert layers == ["fc1", "fc2", "out"]
    for name in layers:
        assert out[f"cos/{name}"] == pytest.approx(1.0, abs=1e-6)
        assert out[f"angle/{name}"] == pytest.approx(0.0, abs=0.05)
        assert out[f"norm_ratio/{name}"] == pytest.approx(1.0, abs=1e-6)
    assert out["cos/all"] == pytest.approx(1.0, abs=1e-6)


def test_fa_with_random_b_is_misaligned_at_init_except_the_output_layer():
    model = mlp()
    learner = bbp.rules.get("fa", seed=0).attach(model)
    out = learner.diagnostics(batch())
    assert out["cos/out"] == pytest.approx(1.0, abs=1e-6)  # δ_L = e: the output layer is exact
    assert out["cos/fc1"] < 0.9
    for name in ("fc1", "fc2", "out"):
        assert 60.0 < out[f"angle/{name}"] < 120.0  # independent random matrices: near 90°


@pytest.mark.parametrize("name", ["fa", "usf", "brsf", "frsf", "kp", "dfa"])
def test_every_feedback_rule_leaves_the_output_layer_gradient_exact(name):
    model = mlp()
    learner = bbp.rules.get(name).attach(model)
    out = gradient_alignment(learner, batch())
    assert out["cos/out"] == pytest.approx(1.0, abs=1e-6)
    assert set(out) == {"cos/fc1", "cos/fc2", "cos/out", "cos/all"}


@pytest.mark.parametrize("kind", ["mlp", "lenet"])
def test_usf_angle_is_below_90_degrees_at_init(kind):
    torch.manual_seed(0)
    model = mlp() if kind == "mlp" else models.build("lenet", (1, 16, 16), 10)
    learner = bbp.rules.get("usf").attach(model)
    out = weight_alignment(learner)
    angles = {k: v for k, v in out.items() if k.startswith("angle/")}
    assert len(angles) == len(learner.trained_layers())
    assert all(0.0 < a < 90.0 for a in angles.values())


def test_backprop_estimate_equals_backprop_gradients():
    model = mlp()
    learner = bbp.rules.get("backprop").attach(model)
    est = learner.estimate(batch())
    bp = learner.backprop_gradients(batch())
    assert est.keys() == bp.keys() == {n for n, _ in model.named_parameters()}
    assert all(torch.equal(est[n], bp[n]) for n in est)


def test_backprop_gradients_under_a_rule_are_plain_autograd():
    model = mlp()
    x, y = batch()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    learner = bbp.rules.get("kp").attach(model)
    bp = learner.backprop_gradients((x, y))
    assert bp.keys() == plain.keys()  # KP's own parameters are left out
    assert all(torch.allclose(bp[n], plain[n], rtol=1e-6, atol=1e-7) for n in plain)


def test_diagnostics_change_no_parameter_or_grad():
    model = mlp()
    learner = bbp.rules.get("usf").attach(model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    diagnostics(learner, batch())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_kp_weight_angle_falls_during_training():
    model = mlp()
    learner = bbp.rules.get("kp").attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    start = weight_alignment(learner)
    for step in range(60):
        learner.step(batch(step), opt)
    end = weight_alignment(learner)
    for name in learner.trained_layers():
        assert start[f"angle/{name}"] > 80.0  # independent random B at attach
        assert end[f"angle/{name}"] < 45.0  # W − B decays, so B turns towards W


def test_fa_gradients_come_into_alignment_while_learning_digits():
    """Lillicrap et al.'s observation, on a small scale: under FA the hidden layers' updates
    turn towards backprop's (the forward weights align with the fixed feedback)."""
    ds = data.load("digits")
    torch.manual_seed(0)
    model = models.build("mlp", ds.input_shape, ds.num_classes, widths=(64,))
    learner = bbp.rules.get("fa").attach(model)
    probe = (ds.x_test[:200], ds.y_test[:200])
    start = gradient_alignment(learner, probe)["cos/fc1"]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(5):
        for xb, yb in ds.train_loader(64, seed=epoch):
            learner.step((xb, yb), opt)
    end = gradient_alignment(learner, probe)["cos/fc1"]
    assert end > start + 0.2 and end > 0.3


def test_alignment_on_a_nameless_single_layer():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    learner = bbp.rules.get("fa").attach(layer)
    out = diagnostics(learner, (torch.randn(4, 6), torch.tensor([0, 1, 2, 0])))
    assert out["cos/"] == pytest.approx(1.0, abs=1e-6)
    assert "angle/" in out and "norm_ratio/" in out


def test_dfa_diagnostics_have_gradient_cosines_but_no_weight_angles():
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(20, 16), act=nn.ReLU(), out=nn.Linear(16, 5)))
    learner = bbp.rules.get("dfa", points="layers").attach(model)
    out = diagnostics(learner, batch())
    assert set(out) == {"cos/fc1", "cos/out", "cos/all"}
    assert out["cos/out"] == pytest.approx(1.0, abs=1e-6)
