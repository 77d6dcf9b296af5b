"""SoftHebb: the rule's equations, its defining properties, the presets, and that it learns.

Defining properties (issue 4): no gradient from the label loss reaches a Hebbian weight; the
weight norms move toward 1; a unit that never wins gets an anti-Hebbian update.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import data
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.models.softhebb import SoftHebbConv, SoftHebbMLP, Triangle
from beyondbp.plasticity.softhebb import adaptive_lr, plasticity, scaled_update, soft_wta, unit_norms
from beyondbp.rules.softhebb import SoftHebb


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def hebbian_net(d_in=6, units=5, classes=3, radius=3.0, dtype=torch.float64, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, units, bias=False), nn.ReLU(), nn.Linear(units, classes)).to(dtype)
    with torch.no_grad():
        net[0].weight.normal_(0, radius / math.sqrt(d_in))
    return net


def explicit_update(x, w, t_invert, anti_hebbian=True):
    """ΔW_i = Σ_n y_ni (x_n − u_ni W_i), written sample by sample and unit by unit."""
    delta = torch.zeros_like(w)
    for n in range(x.shape[0]):
        u = w @ x[n]
        s = torch.softmax(t_invert * u, dim=0)
        winner = int(u.argmax())
        for i in range(w.shape[0]):
            y = s[i] if (i == winner or not anti_hebbian) else -s[i]
            delta[i] += y * (x[n] - u[i] * w[i])
    return delta


# -- the equations -------------------------------------------------------------------------------


def test_soft_wta_is_a_softmax_with_negated_losers():
    torch.manual_seed(0)
    u = torch.randn(7, 5, dtype=torch.float64)
    y = soft_wta(u, 2.0)
    s = torch.softmax(2.0 * u, dim=1)
    winner = u.argmax(dim=1)
    for n in range(7):
        for i in range(5):
            expected = s[n, i] if i == winner[n] else -s[n, i]
            assert y[n, i] == expected
    assert torch.equal(soft_wta(u, 2.0, anti_hebbian=False), s)
    assert torch.allclose(y.abs().sum(dim=1), torch.ones(7, dtype=torch.float64))


def test_soft_wta_competes_across_channels_at_every_position():
    torch.manual_seed(0)
    u = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    y = soft_wta(u, 1.0)
    assert torch.allclose(y.abs().sum(dim=1), torch.ones(2, 3, 3, dtype=torch.float64))
    assert ((y > 0).sum(dim=1) == 1).all()  # exactly one Hebbian (winning) channel per position
    assert torch.equal(y.argmax(dim=1), u.argmax(dim=1))


def test_linear_plasticity_matches_the_equation():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4, bias=False).double()
    x = torch.randn(9, 6, dtype=torch.float64)
    u = layer(x).detach()
    for anti in (True, False):
        delta = plasticity(layer, x, u, soft_wta(u, 1.5, anti))
        expected = explicit_update(x, layer.weight.detach(), 1.5, anti)
        assert torch.allclose(delta, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, padding=2, padding_mode="reflect"),
        dict(kernel_size=(3, 2), stride=2, dilation=(1, 2)),
        dict(kernel_size=3, padding=1, groups=2),
    ],
)
def test_conv2d_plasticity_matches_the_equation_per_patch(kwargs):
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 6, bias=False, **kwargs).double()
    x = torch.randn(3, 4, 7, 8, dtype=torch.float64)
    u = layer(x).detach()
    y = soft_wta(u, 0.7)
    delta = plasticity(layer, x, u, y)
    # explicit: every output position sees one input patch; sum y_i (patch − u_i W_i) over all
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    xp = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)
    g = layer.groups
    patches = F.unfold(xp, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)
    patches = patches.view(3, g, -1, patches.shape[-1])  # (N, groups, C/g*kh*kw, L)
    w = layer.weight.detach().reshape(6, -1)
    yf, uf = y.flatten(2), u.flatten(2)  # (N, O, L)
    per_group = 6 // g
    expected = torch.zeros_like(w)
    for i in range(6):
        p = patches[:, i // per_group]  # (N, K, L)
        expected[i] = torch.einsum("nl,nkl->k", yf[:, i], p) - (yf[:, i] * uf[:, i]).sum() * w[i]
    assert torch.allclose(delta.reshape(6, -1), expected, rtol=1e-10, atol=1e-10)


def test_conv1d_plasticity_matches_the_equation_per_patch():
    torch.manual_seed(0)
    layer = nn.Conv1d(2, 3, 5, stride=2, padding=1, bias=False).double()
    x = torch.randn(4, 2, 11, dtype=torch.float64)
    u = layer(x).detach()
    y = soft_wta(u, 1.0)
    delta = plasticity(layer, x, u, y)
    patches = F.unfold(F.pad(x, (1, 1)).unsqueeze(2), (1, 5), stride=(1, 2))  # (N, 2*5, L)
    w = layer.weight.detach().reshape(3, -1)
    expected = torch.einsum("nil,nkl->ik", y, patches) - (y * u).sum(dim=(0, 2))[:, None] * w
    assert torch.allclose(delta.reshape(3, -1), expected, rtol=1e-10, atol=1e-10)


def test_a_hebbian_step_applies_the_norm_dependent_learning_rate_exactly():
    net = hebbian_net()
    w0 = net[0].weight.detach().clone()
    x = torch.rand(8, 6, dtype=torch.float64)
    learner = SoftHebb(t_invert=2.0, lr=0.3, lr_power=0.5, init_radius=None).attach(net)
    learner.step((x, torch.zeros(8, dtype=torch.long)), torch.optim.SGD(learner.optimizer_parameters(), lr=0.1))
    delta = explicit_update(x, w0, 2.0)
    norms = w0.norm(dim=1)
    rate = 0.3 * ((norms - 1).abs() + 1e-10) ** 0.5
    expected = w0 + rate[:, None] * delta / delta.abs().max()
    assert torch.allclose(net[0].weight.detach(), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(adaptive_lr(w0, 0.3, 0.5).flatten(), rate)


# -- defining property 1: no label gradient reaches a Hebbian weight -----------------------------


def test_no_gradient_from_the_label_loss_reaches_a_hebbian_weight():
    torch.manual_seed(0)
    net = SoftHebbConv((1, 12, 12), 4, channels=(4, 6, 8))
    learner = SoftHebb(hebbian_epochs=0).attach(net)
    hebbian = {n: m.weight for n, m in learner.hebbian.items()}
    before = {n: w.detach().clone() for n, w in hebbian.items()}
    classifier_before = net.out.weight.detach().clone()
    # even an optimizer that holds every parameter of the model cannot move a Hebbian weight
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 4, (16,))
    for _ in range(3):
        assert learner.step((x, y), opt)["hebbian_phase"] == 0.0
    for n, w in hebbian.items():
        assert w.grad is None and not w.requires_grad, n
        assert torch.equal(w.detach(), before[n]), n
    assert not torch.equal(net.out.weight.detach(), classifier_before)
    # the label loss's autograd graph reaches the classifier's parameters and nothing else
    loss = F.cross_entropy(net(x), y)
    leaves, stack, seen = set(), [loss.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.add(id(fn.variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    assert leaves == {id(p) for p in net.out.parameters()}
    assert [id(p) for p in learner.optimizer_parameters()] == [id(p) for p in net.out.parameters()]


def test_labels_play_no_part_in_the_hebbian_update():
    x = torch.rand(10, 6, dtype=torch.float64)
    finals = []
    for labels in (torch.zeros(10, dtype=torch.long), torch.arange(10) % 3):
        net = hebbian_net()
        learner = SoftHebb(lr=0.2).attach(net)
        opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
        for _ in range(3):
            learner.step((x, labels), opt)
        finals.append(net[0].weight.detach().clone())
    assert torch.equal(finals[0], finals[1])


# -- defining property 2: the weight norms move toward 1 -----------------------------------------


def test_the_update_is_orthogonal_to_the_sphere_except_for_the_norm_term():
    """W_i · ΔW_i = (Σ y_i u_i)(1 − ‖W_i‖²): a unit with Σ y_i u_i > 0 moves toward norm 1."""
    torch.manual_seed(1)
    layer = nn.Linear(5, 6, bias=False).double()
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([0.2, 0.5, 0.9, 1.5, 3.0, 6.0], dtype=torch.float64)[:, None])
    x = torch.randn(12, 5, dtype=torch.float64)
    u = layer(x).detach()
    y = soft_wta(u, 1.0)
    delta = plasticity(layer, x, u, y)
    w = layer.weight.detach()
    yu = (y * u).sum(dim=0)
    assert torch.allclose((w * delta).sum(dim=1), yu * (1 - (w * w).sum(dim=1)), rtol=1e-10, atol=1e-12)
    # and a small step along it shrinks |‖W_i‖ − 1| for every unit with Σ y_i u_i > 0
    step = scaled_update(delta, w, 1e-3, 0.5)
    moved = ((unit_norms(w + step) - 1).abs() < (unit_norms(w) - 1).abs())
    assert moved[yu > 0].all() and (yu > 0).any()


def test_winning_units_converge_to_unit_norm_on_the_cluster_centres():
    torch.manual_seed(0)
    d, k = 16, 4
    centres = F.normalize(torch.randn(k, d), dim=1)
    gen = torch.Generator().manual_seed(1)

    def batch(n=32):
        c = torch.randint(0, k, (n,), generator=gen)
        return centres[c] * 4 + 0.2 * torch.randn(n, d, generator=gen), c

    net = nn.Sequential(nn.Linear(d, 8, bias=False), nn.ReLU(), nn.Linear(8, k))
    learner = SoftHebb(t_invert=1.0, lr=0.05, init_radius=25.0, hebbian_steps=600).attach(net)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    learner.step(batch(), opt)
    start = (unit_norms(net[0].weight.detach()) - 1).abs()
    assert (start > 20).all()  # rescaled to norm 25 by the first step, far from 1
    for _ in range(599):
        learner.step(batch(), opt)
    w = net[0].weight.detach()
    x, _ = batch(512)
    winners = (x @ w.T).argmax(dim=1).unique()
    assert len(winners) == k  # one unit per cluster
    assert ((unit_norms(w[winners]) - 1).abs() < 1e-2).all()
    cos = F.normalize(w[winners], dim=1) @ centres.T
    assert (cos.max(dim=1).values > 0.99).all()


def test_norm_deviation_shrinks_during_the_hebbian_epoch_on_digits():
    ds = data.load("digits")
    torch.manual_seed(0)
    net = SoftHebbMLP(ds.input_shape, 10, width=64)
    learner = SoftHebb(lr=0.2).attach(net)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)
    first = None
    for x, y in ds.train_loader(32, seed=0):
        metrics = learner.step((x, y), opt)
        first = metrics["norm_dev/hebb1"] if first is None else first
    assert metrics["norm_dev/hebb1"] < 0.6 * first


# -- defining property 3: a unit that never wins gets an anti-Hebbian update ---------------------


def test_a_unit_that_never_wins_gets_the_negated_hebbian_update():
    torch.manual_seed(0)
    net = hebbian_net(d_in=6, units=4, radius=2.0)
    with torch.no_grad():
        net[0].weight[2] = -0.8 * torch.ones(6, dtype=torch.float64)  # u_2 < 0 on positive inputs
    x = torch.rand(20, 6, dtype=torch.float64) + 0.1
    w0 = net[0].weight.detach().clone()
    u = x @ w0.T
    assert (u.argmax(dim=1) != 2).all()  # unit 2 loses on every sample
    learner = SoftHebb(t_invert=1.0, lr=0.5, init_radius=None).attach(net)
    learner.step((x, torch.zeros(20, dtype=torch.long)), torch.optim.SGD(learner.optimizer_parameters(), lr=0.1))
    applied = net[0].weight.detach()[2] - w0[2]
    s = torch.softmax(u, dim=1)[:, 2]
    hebbian = (s[:, None] * (x - u[:, 2:3] * w0[2])).sum(dim=0)  # the plain Hebbian soft-WTA update
    full = explicit_update(x, w0, 1.0)
    rate = 0.5 * ((w0[2].norm() - 1).abs() + 1e-10) ** 0.5
    assert torch.allclose(applied, -rate * hebbian / full.abs().max(), rtol=1e-12, atol=1e-14)
    assert (soft_wta(u, 1.0)[:, 2] < 0).all()


def test_a_loser_learns_to_respond_less_and_the_winner_more():
    """For unit-norm weights, one sample: Δu_i = ΔW_i·x = y_i (‖x‖² − u_i²), whose sign is y_i's."""
    torch.manual_seed(3)
    layer = nn.Linear(8, 5, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(F.normalize(layer.weight, dim=1))
    x = torch.randn(1, 8, dtype=torch.float64)
    u = layer(x).detach()
    delta = plasticity(layer, x, u, soft_wta(u, 2.0))
    du = (delta @ x[0])
    winner = int(u.argmax())
    assert du[winner] > 0
    assert (du[torch.arange(5) != winner] < 0).all()


# -- phases, protocol ------------------------------------------------------------------------------


def test_phases_follow_epochs_and_steps():
    net = hebbian_net(dtype=torch.float32)
    learner = SoftHebb(hebbian_epochs=1).attach(net)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-2)
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    hebb0, cls0 = net[0].weight.detach().clone(), net[2].weight.detach().clone()
    learner.on_epoch_start(0)  # a loop that reports its epochs: the paper's protocol
    m = learner.step((x, y), opt)
    assert m["hebbian_phase"] == 1.0 and math.isfinite(m["loss"])
    assert {"norm_dev/0", "winners/0"} <= set(m)
    assert not torch.equal(net[0].weight, hebb0) and torch.equal(net[2].weight, cls0)
    assert learner.on_epoch_end(0)["hebbian_phase"] == 1.0
    hebb1 = net[0].weight.detach().clone()
    assert learner.step((x, y), opt)["hebbian_phase"] == 0.0
    assert torch.equal(net[0].weight, hebb1) and not torch.equal(net[2].weight, cls0)

    by_steps = SoftHebb(hebbian_steps=2).attach(hebbian_net(dtype=torch.float32))
    opt = torch.optim.Adam(by_steps.optimizer_parameters())
    phases = [by_steps.step((x, y), opt)["hebbian_phase"] for _ in range(4)]
    assert phases == [1.0, 1.0, 0.0, 0.0]
    state = by_steps.rule_state()
    fresh = SoftHebb(hebbian_steps=2).attach(hebbian_net(dtype=torch.float32))
    assert fresh.hebbian_phase
    fresh.load_rule_state(state)
    assert not fresh.hebbian_phase


def test_the_first_hebbian_step_zeroes_biases_and_rescales_units():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    learner = SoftHebb(lr=1e-9, init_radius=7.0).attach(net)
    assert net[0].bias.abs().sum() > 0  # attaching changes nothing
    learner.step((torch.rand(4, 6), torch.zeros(4, dtype=torch.long)), torch.optim.SGD(learner.optimizer_parameters(), lr=0.1))
    assert torch.equal(net[0].bias, torch.zeros(5))
    assert torch.allclose(unit_norms(net[0].weight.detach()), torch.full((5,), 7.0), atol=1e-4)


def test_estimate_is_minus_the_hebbian_step_and_the_classifier_gradient():
    torch.manual_seed(0)
    net = SoftHebbConv((1, 10, 10), 3, channels=(3, 4, 5), dropout=0.0)
    learner = SoftHebb().attach(net)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    x, y = torch.randn(6, 1, 10, 10), torch.randint(0, 3, (6,))
    learner.step((x, y), opt)  # past the first step's rescale
    est = learner.estimate((x, y))
    before = {n: m.weight.detach().clone() for n, m in learner.hebbian.items()}
    # classifier: the cross-entropy gradient on the frozen features (BatchNorm on running stats)
    net.eval()
    ref = torch.autograd.grad(F.cross_entropy(net(x), y), [net.out.weight])[0]
    net.train()
    assert torch.allclose(est["out.weight"], ref)
    learner.step((x, y), opt)
    for n, w0 in before.items():
        assert torch.allclose(w0 - est[f"{n}.weight"], learner.hebbian[n].weight, rtol=1e-6, atol=1e-6), n
    assert set(est) == {"conv1.weight", "conv2.weight", "conv3.weight", "out.weight", "out.bias"}


def test_classifier_estimate_matches_cross_entropy_gradient_without_dropout():
    torch.manual_seed(0)
    net = SoftHebbMLP((1, 4, 4), 3, width=8, batchnorm=True)
    learner = SoftHebb().attach(net)
    x, y = torch.randn(5, 1, 4, 4), torch.randint(0, 3, (5,))
    learner.step((x, y), torch.optim.SGD(learner.optimizer_parameters(), lr=0.1))
    est = learner.estimate((x, y))
    net.eval()
    ref = torch.autograd.grad(F.cross_entropy(net(x), y), [net.out.weight, net.out.bias])
    assert torch.allclose(est["out.weight"], ref[0]) and torch.allclose(est["out.bias"], ref[1])


def test_backprop_gradients_cover_every_parameter_and_leave_the_freeze_in_place():
    net = hebbian_net(dtype=torch.float32)
    learner = SoftHebb().attach(net)
    grads = learner.backprop_gradients((torch.rand(4, 6), torch.zeros(4, dtype=torch.long)))
    assert set(grads) == {n for n, _ in net.named_parameters()}
    assert not net[0].weight.requires_grad
    learner.detach()
    assert net[0].weight.requires_grad


def test_the_optimizer_must_hold_the_classifier():
    net = hebbian_net(dtype=torch.float32)
    learner = SoftHebb(hebbian_epochs=0).attach(net)
    with pytest.raises(ConfigError, match="optimizer_parameters"):
        learner.step((torch.rand(2, 6), torch.zeros(2, dtype=torch.long)), torch.optim.SGD([net[0].weight], lr=0.1))


def test_refuses_what_it_cannot_train():
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.Flatten(), nn.Linear(2, 3))
    with pytest.raises(UnsupportedModuleError, match=r"'0'.*Conv3d"):
        SoftHebb().attach(net)
    with pytest.raises(ConfigError, match="at least two weight layers"):
        SoftHebb().attach(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ConfigError, match="Hebbian layers"):
        SoftHebb(lr=[0.1, 0.2]).attach(hebbian_net())


@pytest.mark.parametrize(
    "options",
    [
        dict(t_invert=0),
        dict(lr=-1.0),
        dict(lr="fast"),
        dict(lr_power=-1),
        dict(anti_hebbian="yes"),
        dict(hebbian_epochs=-1),
        dict(hebbian_steps=1.5),
        dict(init_radius=0),
        dict(init_radius="big"),
    ],
)
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError):
        bbp.rules.get("softhebb", **options)


def test_registered_as_a_local_rule():
    assert "softhebb" in bbp.rules.names()
    entry = next(r for r in bbp.rules.describe() if r["name"] == "softhebb")
    assert entry["family"] == "local" and "Hebbian Deep Learning Without Feedback" in entry["paper"]


# -- presets ---------------------------------------------------------------------------------------


def test_triangle_subtracts_the_channel_mean_then_relu_and_power():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    out = Triangle(1.4)(x)
    centred = x - x.mean(dim=1, keepdim=True)
    assert torch.allclose(out, torch.where(centred > 0, centred.abs() ** 1.4, torch.zeros_like(x)))
    assert torch.equal(Triangle(1.0)(x), torch.relu(centred))
    with pytest.raises(ConfigError):
        Triangle(0)


def test_conv_preset_on_28x28_keeps_every_position_and_cifar_geometry():
    torch.manual_seed(0)
    net = SoftHebbConv((1, 28, 28), 10, channels=(4, 8, 16))
    sizes = []
    x = torch.randn(2, 1, 28, 28)
    for name, layer in net.named_children():
        x = layer(x)
        if name.startswith("pool"):
            sizes.append(tuple(x.shape[-2:]))
    assert sizes == [(14, 14), (7, 7), (4, 4)]
    assert net.out.in_features == 16 * 4 * 4 and x.shape == (2, 10)
    assert all(c.bias is None and c.padding_mode == "reflect" for c in (net.conv1, net.conv2, net.conv3))
    assert net.conv1.in_channels == 1 and net.conv1.kernel_size == (5, 5)
    assert SoftHebbConv((3, 32, 32), 10, channels=(4, 8, 16)).out.in_features == 16 * 4 * 4
    learner = SoftHebb().attach(net)
    assert learner.t_invert == (1.0, 0.65, 0.25) and learner.lr == (0.08, 0.005, 0.01)
    assert list(learner.hebbian) == ["conv1", "conv2", "conv3"] and learner.classifier_name == "out"
    with pytest.raises(ConfigError):
        SoftHebbConv((28, 28), 10)


def test_mlp_preset_is_the_authors_mnist_shape():
    torch.manual_seed(0)
    net = SoftHebbMLP((1, 28, 28), 10)
    assert net.hebb1.weight.shape == (2000, 784) and net.hebb1.bias is None
    norms = unit_norms(net.hebb1.weight.detach())
    assert abs(float(norms.mean()) - 25.0) < 0.5  # N(0, (25/sqrt(fan_in))²)
    learner = SoftHebb().attach(net)
    assert learner.t_invert == (12.0,) and learner.lr == (0.045,) and learner.init_radius == 25.0
    assert SoftHebb(t_invert=3.0).attach(SoftHebbMLP((4,), 2, width=3)).t_invert == (3.0,)


# -- learning and determinism -----------------------------------------------------------------------


def test_learns_digits_with_the_mlp_preset():
    ds = data.load("digits")
    torch.manual_seed(0)
    net = SoftHebbMLP(ds.input_shape, ds.num_classes, width=256)
    learner = SoftHebb().attach(net)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)
    for epoch in range(8):
        for batch in ds.train_loader(64, seed=epoch):
            learner.step(batch, opt)
        learner.on_epoch_end(epoch)
    acc = float((learner.predict(ds.x_test).argmax(1) == ds.y_test).float().mean())
    assert acc >= 0.85, acc  # chance is 0.10


def test_same_seed_same_numbers_with_the_conv_preset():
    ds = data.load("digits").subset(256, 64)
    runs = []
    for _ in range(2):
        torch.manual_seed(4)
        net = SoftHebbConv(ds.input_shape, 10, channels=(4, 8, 8))
        learner = SoftHebb().attach(net)
        opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)
        losses = []
        for epoch in range(2):
            for batch in ds.train_loader(32, seed=epoch):
                losses.append(learner.step(batch, opt)["loss"])
            learner.on_epoch_end(epoch)
        runs.append((losses, {k: v.clone() for k, v in net.state_dict().items()}, learner.predict(ds.x_test)))
    (l1, s1, p1), (l2, s2, p2) = runs
    assert l1 == l2 and all(torch.equal(s1[k], s2[k]) for k in s1) and torch.equal(p1, p2)


def test_disabled_steps_are_plain_backprop_through_every_layer():
    net = hebbian_net(dtype=torch.float32)
    learner = SoftHebb().attach(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    w0 = net[0].weight.detach().clone()
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    reference = hebbian_net(dtype=torch.float32)
    F.cross_entropy(reference(x), y).backward()
    with learner.disabled():
        learner.step((x, y), opt)
    assert torch.allclose(net[0].weight, w0 - 0.1 * reference[0].weight.grad)
    assert not net[0].weight.requires_grad and learner.hebbian_phase  # freeze and phase untouched


# -- the user's own loop (issue 9, part 3, item 7) ---------------------------------------------------


def plain_step(model, optimizer, x, y):
    """One step of a user's own loop: no learner.step, no on_epoch_end."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def test_a_plain_backward_loop_learns_digits():
    ds = data.load("digits")
    torch.manual_seed(0)
    net = SoftHebbMLP(ds.input_shape, ds.num_classes, width=128)
    learner = SoftHebb().attach(net)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)
    start = unit_norms(net.hebb1.weight.detach()).sub(1).abs().mean()
    steps = 0
    for epoch in range(8):
        for x, y in ds.train_loader(64, seed=epoch):
            plain_step(net, opt, x, y)
            steps += 1
    # every training forward pass was a Hebbian step (23 per epoch, under the default 1000)
    assert learner.hebbian_steps_done == steps == 184 and learner.hebbian_phase
    norm_dev = unit_norms(net.hebb1.weight.detach()).sub(1).abs().mean()
    assert start > 20 and norm_dev < 0.7 * start  # measured 24.1 -> 14.7: the norms move toward 1
    assert learner.plain_steps_done == 184
    acc = float((learner.predict(ds.x_test).argmax(1) == ds.y_test).float().mean())
    assert acc >= 0.85, acc  # measured 0.92; chance is 0.10


def test_a_plain_loop_switches_phase_after_hebbian_steps():
    ds = data.load("digits")
    torch.manual_seed(0)
    net = SoftHebbMLP(ds.input_shape, ds.num_classes, width=128)
    learner = SoftHebb(hebbian_steps=23).attach(net)  # one epoch of digits at batch 64
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)
    for epoch in range(8):
        for x, y in ds.train_loader(64, seed=epoch):
            plain_step(net, opt, x, y)
        if epoch == 0:
            hebbian_after_first_epoch = net.hebb1.weight.detach().clone()
            assert not learner.hebbian_phase
    assert torch.equal(net.hebb1.weight, hebbian_after_first_epoch)  # frozen after the switch
    assert learner.hebbian_steps_done == 23
    acc = float((learner.predict(ds.x_test).argmax(1) == ds.y_test).float().mean())
    assert acc >= 0.85, acc  # measured 0.94


def test_a_plain_loop_takes_the_same_hebbian_steps_as_learner_step():
    """Bit for bit: Hebbian weights and BatchNorm statistics; then, in the classifier phase, the
    plain loop's steps equal learner.step's (BatchNorm on its running statistics)."""
    torch.manual_seed(0)
    xs = [torch.randn(16, 1, 4, 4) for _ in range(6)]
    ys = [torch.randint(0, 3, (16,)) for _ in range(6)]
    nets = []
    for plain in (False, True):
        torch.manual_seed(1)
        net = SoftHebbMLP((1, 4, 4), 3, width=8, batchnorm=True)
        learner = SoftHebb(hebbian_steps=3).attach(net)
        opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
        for i, (x, y) in enumerate(zip(xs, ys)):
            if i == 3:  # start the classifier phase from the same classifier
                with torch.no_grad():
                    net.out.weight.fill_(0.1)
                    net.out.bias.zero_()
                opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
            if plain:
                plain_step(net, opt, x, y)
            else:
                learner.step((x, y), opt)
            if i == 2:
                after_hebbian = {k: v.clone() for k, v in net.state_dict().items() if k[:4] != "out."}
        assert learner.hebbian_steps_done == 3 and not learner.hebbian_phase
        nets.append((after_hebbian, {k: v.clone() for k, v in net.state_dict().items()}))
    (h_step, s_step), (h_plain, s_plain) = nets
    assert h_step.keys() == h_plain.keys() and all(torch.equal(h_step[k], h_plain[k]) for k in h_step)
    assert all(torch.equal(s_step[k], s_plain[k]) for k in s_step)
    # the classifier phase moved neither the Hebbian weights nor the BatchNorm statistics
    assert all(torch.equal(h_plain[k], s_plain[k]) for k in h_plain)


def test_a_learner_step_loop_that_reports_no_epochs_learns_digits():
    """The README's loop (learner.step over epochs, no on_epoch_start / on_epoch_end) gets the
    plain-loop protocol: the classifier trains from the first step (issue 21: it stayed at
    chance, 0.10, in a Hebbian phase that never ended)."""
    ds = data.load("digits")
    torch.manual_seed(0)
    net = SoftHebbMLP(ds.input_shape, ds.num_classes, width=128)
    learner = SoftHebb().attach(net)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)
    for epoch in range(5):
        for x, y in ds.train_loader(64, seed=epoch):
            learner.step((x, y), opt)
    assert learner.plain_steps_done == learner.hebbian_steps_done == 115 and learner.hebbian_phase
    acc = float((learner.predict(ds.x_test).argmax(1) == ds.y_test).float().mean())
    assert acc >= 0.8, acc  # chance is 0.10


def test_a_learner_step_loop_that_reports_no_epochs_ends_the_phase_after_the_documented_steps(monkeypatch):
    monkeypatch.setattr("beyondbp.rules.softhebb.PLAIN_LOOP_HEBBIAN_STEPS", 3)
    net = hebbian_net(dtype=torch.float32)
    learner = SoftHebb().attach(net)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    phases = [learner.step((x, y), opt)["hebbian_phase"] for _ in range(5)]
    assert phases == [1.0, 1.0, 1.0, 0.0, 0.0] and learner.hebbian_steps_done == 3
    # a loop that reports its epochs is governed by hebbian_epochs, whatever its step count
    reporting = SoftHebb().attach(hebbian_net(dtype=torch.float32))
    opt = torch.optim.SGD(reporting.optimizer_parameters(), lr=0.1)
    reporting.on_epoch_start(0)
    phases = [reporting.step((x, y), opt)["hebbian_phase"] for _ in range(5)]
    reporting.on_epoch_end(0)
    reporting.on_epoch_start(1)
    assert phases == [1.0] * 5 and reporting.step((x, y), opt)["hebbian_phase"] == 0.0


def test_the_plain_loop_default_switch_and_what_counts_as_a_step(monkeypatch):
    monkeypatch.setattr("beyondbp.rules.softhebb.PLAIN_LOOP_HEBBIAN_STEPS", 3)
    net = hebbian_net(dtype=torch.float32)
    learner = SoftHebb().attach(net)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net(x)  # no autograd: not a training step
    net.eval()
    net(x)  # eval mode: not a training step
    net.train()
    learner.predict(x)
    learner.estimate((x, y))
    assert learner.hebbian_steps_done == 0 and torch.equal(net[0].weight, w0)
    for _ in range(3):
        plain_step(net, opt, x, y)
    assert not learner.hebbian_phase
    w3 = net[0].weight.detach().clone()
    plain_step(net, opt, x, y)
    assert torch.equal(net[0].weight, w3) and learner.hebbian_steps_done == 3
    # an epoch end, reported by the loop, also ends the phase (hebbian_epochs=1)
    other = SoftHebb().attach(hebbian_net(dtype=torch.float32))
    plain_step(other.model, torch.optim.SGD(other.optimizer_parameters(), lr=0.1), x, y)
    other.on_epoch_end(0)
    assert not other.hebbian_phase
    state = learner.rule_state()
    assert int(state["plain_steps_done"]) == 3


# -- layers the user froze ---------------------------------------------------------------------------


def test_layers_the_user_froze_stay_bit_identical():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)
    )
    net[0].requires_grad_(False)  # a frozen Hebbian layer (weight and bias)
    net[2].bias.requires_grad_(False)  # a frozen bias of a learning Hebbian layer
    frozen = {"0.weight", "0.bias", "2.bias"}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner = SoftHebb(hebbian_steps=2).attach(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)  # even an optimizer holding every parameter
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    learner.step((x, y), opt)
    plain_step(net, opt, x, y)
    learner.step((x, y), opt)  # classifier phase
    plain_step(net, opt, x, y)
    for k in frozen:
        assert torch.equal(net.state_dict()[k], before[k]), k
    assert torch.equal(net[4].bias, torch.zeros(4))  # a trainable Hebbian bias is zeroed
    with learner.disabled():
        learner.step((x, y), opt)  # plain backprop through what the user left trainable
    after = net.state_dict()
    for k in frozen:
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["2.weight"], before["2.weight"])
    assert learner.frozen == {"0"} and list(learner.trained_layers()) == ["2", "4", "6"]
    assert set(learner.estimate((x, y))) == {"2.weight", "4.weight", "6.weight", "6.bias"}
    learner.detach()
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["0.weight", "0.bias", "2.bias"]


# -- which layer is the classifier ---------------------------------------------------------------------


class RegisteredOutOfOrder(nn.Module):
    """The classifier is registered first but runs last."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.body = nn.Linear(6, 8)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class Untraceable(RegisteredOutOfOrder):
    def forward(self, x):
        if float(x.sum()) > -1e9:  # data-dependent Python control flow: torch.fx cannot trace it
            x = torch.relu(self.body(x))
        return self.head(x)


def test_the_classifier_is_the_layer_that_runs_last():
    torch.manual_seed(0)
    net = RegisteredOutOfOrder()
    learner = SoftHebb(hebbian_steps=1).attach(net)
    assert learner.classifier_name == "head" and list(learner.hebbian) == ["body"]
    assert [id(p) for p in learner.optimizer_parameters()] == [id(p) for p in net.head.parameters()]
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    head0, body0 = net.head.weight.detach().clone(), net.body.weight.detach().clone()
    learner.on_epoch_start(0)  # the paper's protocol
    learner.step((x, y), opt)  # Hebbian: the body learns, the head does not
    assert not torch.equal(net.body.weight, body0) and torch.equal(net.head.weight, head0)
    body1 = net.body.weight.detach().clone()
    plain_step(net, opt, x, y)  # classifier phase: the head learns, the body does not
    assert torch.equal(net.body.weight, body1) and not torch.equal(net.head.weight, head0)


def test_a_model_whose_order_cannot_be_known_before_running_is_checked_on_the_first_forward():
    net = Untraceable()
    learner = SoftHebb().attach(net)  # fx fails: registration order (head, body), to be checked
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    x, y = torch.rand(4, 6), torch.zeros(4, dtype=torch.long)
    for step in (lambda: plain_step(net, opt, x, y), lambda: learner.step((x, y), opt)):
        with pytest.raises(ConfigError, match=r"order \['head', 'body'\].*ran \['body', 'head'\]"):
            step()
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # nothing changed

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(torch.relu(self.a(x))))

    with pytest.raises(ConfigError, match="'a', which the forward pass runs 2 times"):
        SoftHebb().attach(Twice())


# -- layers nothing would train ------------------------------------------------------------------------


def test_a_trainable_embedding_is_refused_and_a_frozen_one_is_kept():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(UnsupportedModuleError, match=r"module '0' of type Embedding"):
        SoftHebb().attach(net)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    net[0].weight.requires_grad_(False)
    learner = SoftHebb(hebbian_steps=1).attach(net)
    x, y = torch.randint(0, 10, (8, 3)), torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1)
    for _ in range(3):
        learner.step((x, y), opt)
        plain_step(net, opt, x, y)
    assert torch.equal(net[0].weight, state["0.weight"])
    assert not torch.equal(net[2].weight, state["2.weight"])
