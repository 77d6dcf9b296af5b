"""Product feedback alignment (rule ``pfa``): defining equations, variants, routes, learning.

The shared contract (attach, learn, determinism, detach, ...) is checked for ``pfa`` by
``tests/test_rules_contract.py``; this file checks what is specific to PFA.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import data, models
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.rules.pfa import PFA, choose_route

VARIANTS = [("random", {}), ("random", {"expansion": 3}), ("orthogonal", {}), ("identity", {})]


def small_net(conv: str = "2d") -> nn.Module:
    """Conv → conv (stride 2) → Linear → Linear, float64."""
    if conv == "1d":
        body = [nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 5, 3, stride=2), nn.ReLU(),
                nn.Flatten(), nn.Linear(5 * 3, 12)]
    else:
        body = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, bias=False), nn.ReLU(),
                nn.Flatten(), nn.Linear(6 * 3 * 3, 12)]
    return nn.Sequential(*body, nn.Tanh(), nn.Linear(12, 5)).double()


def batch(conv: str = "2d", n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    shape = (n, 2, 8) if conv == "1d" else (n, 1, 8, 8)
    return torch.randn(shape, generator=gen, dtype=torch.float64), torch.randint(0, 5, (n,), generator=gen)


def set_path_to_weights(learner) -> None:
    """R := B⁺ W, so that B·R = W exactly (B has full row rank)."""
    with torch.no_grad():
        for module in learner.layers.values():
            R = torch.linalg.pinv(module.bbp_B) @ module.weight.flatten(1)
            module.bbp_R.copy_(R.view_as(module.bbp_R))


# -- options and registration -----------------------------------------------------------------


def test_registered_with_documented_defaults():
    rule = bbp.rules.get("pfa")
    assert isinstance(rule, PFA)
    assert rule.options() == {"seed": 0, "variant": "random", "expansion": 10, "init": "kaiming_uniform", "route": "auto"}
    assert bbp.rules.get("pfa", variant="identity").expansion == 1
    assert bbp.rules.get("pfa", variant="orthogonal").expansion == 1
    assert "Weight Symmetry" in PFA.paper


@pytest.mark.parametrize(
    "opts",
    [{"variant": "mirror"}, {"expansion": 0}, {"expansion": 2.5}, {"expansion": True}, {"variant": "identity", "expansion": 2},
     {"variant": "orthogonal", "expansion": 10}, {"route": "fastest"}, {"init": "zeros"}, {"seed": -1}],
)
def test_bad_options_are_refused(opts):
    with pytest.raises(ConfigError):
        bbp.rules.get("pfa", **opts)


def test_registers_R_as_parameter_and_B_as_buffer_with_the_population_shapes():
    torch.manual_seed(0)
    model = small_net()
    learner = bbp.rules.get("pfa", expansion=3).attach(model)
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for name, module in learner.layers.items():
        n_out = module.weight.shape[0]
        assert params[f"{name}.bbp_R"].shape == (3 * n_out, *module.weight.shape[1:])
        assert buffers[f"{name}.bbp_B"].shape == (n_out, 3 * n_out)
        assert f"{name}.bbp_B" not in params
    assert "0.bbp_R" in model.state_dict() and "0.bbp_B" in model.state_dict()
    learner.detach()
    assert not any("bbp_" in k for k in model.state_dict())


def test_B_statistics_follow_the_authors_init():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 200), nn.ReLU(), nn.Linear(200, 40))
    learner = bbp.rules.get("pfa").attach(model)  # k = 10
    for module in learner.layers.values():
        B = module.bbp_B
        n_out, n_mid = B.shape
        # Xavier-uniform with gain sqrt((1+1/k)/2): uniform on ±sqrt(3/n_mid), variance 1/n_mid
        bound = math.sqrt((1 + 1 / 10) / 2) * math.sqrt(6 / (n_out + n_mid))
        assert bound == pytest.approx(math.sqrt(3 / n_mid))
        assert B.abs().max() <= bound
        assert B.var().item() == pytest.approx(1 / n_mid, rel=0.1)
        # hence B Bᵀ ≈ I
        gram = B @ B.t()
        assert (gram.diagonal() - 1).abs().mean() < 0.1
        assert (gram - torch.diag(gram.diagonal())).abs().mean() < 0.1
    ortho = bbp.rules.get("pfa", variant="orthogonal").attach(nn.Sequential(nn.Linear(6, 9))).layers["0"]
    assert torch.allclose(ortho.bbp_B @ ortho.bbp_B.t(), torch.eye(9), atol=1e-5)
    ident = bbp.rules.get("pfa", variant="identity").attach(nn.Sequential(nn.Linear(6, 9))).layers["0"]
    assert torch.equal(ident.bbp_B, torch.eye(9))


def test_no_weight_is_transported_at_attach():
    """B·R is drawn from its own generators: unrelated to W (angle near 90°), whatever the seed."""
    torch.manual_seed(0)
    model = models.build("mlp", (64,), 10, widths=(128,))
    learner = bbp.rules.get("pfa").attach(model)
    diag = learner.diagnostics((torch.randn(16, 64), torch.randint(0, 10, (16,))))
    for name in learner.layers:
        assert 75 < diag[f"path_angle/{name}"] < 105
    torch.manual_seed(0)
    other = bbp.rules.get("pfa", seed=1).attach(models.build("mlp", (64,), 10, widths=(128,)))
    assert not torch.equal(other.layers["fc1"].bbp_R, learner.layers["fc1"].bbp_R)


@pytest.mark.parametrize("variant,opts", VARIANTS)
def test_default_R_gives_the_path_the_scale_of_a_default_initialised_W(variant, opts):
    """R ~ PyTorch's default layer init on its own shape, Var(B) = 1/N_mid: Var(B·R) = Var(W)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 300), nn.ReLU(),
                          nn.Linear(300, 200))
    learner = bbp.rules.get("pfa", variant=variant, **opts).attach(model)
    x = torch.randn(4, 3, 6, 6)
    diag = learner.diagnostics((x, torch.randint(0, 200, (4,))))
    for name in learner.layers:
        assert 0.85 < diag[f"path_norm_ratio/{name}"] < 1.15, (name, diag[f"path_norm_ratio/{name}"])
    xavier = bbp.rules.get("pfa", variant=variant, init="xavier_uniform", **opts)
    torch.manual_seed(0)
    other = xavier.attach(nn.Sequential(nn.Linear(300, 300)))
    ratio = float(other.feedback_matrix("0").norm() / other.layers["0"].weight.detach().norm())
    assert ratio > 1.15 if variant != "random" or opts else ratio < 1.0


def test_grouped_convolution_is_refused():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedModuleError, match="groups"):
        bbp.rules.get("pfa").attach(model)


# -- the defining equations -------------------------------------------------------------------


@pytest.mark.parametrize("conv", ["2d", "1d"])
@pytest.mark.parametrize("route", ["auto", "population", "product"])
@pytest.mark.parametrize("variant,opts", VARIANTS)
def test_with_BR_equal_to_W_the_gradients_are_backprops(variant, opts, route, conv):
    torch.manual_seed(1)
    model = small_net(conv)
    learner = bbp.rules.get("pfa", variant=variant, route=route, **opts).attach(model)
    set_path_to_weights(learner)
    for name, module in learner.layers.items():
        assert torch.allclose(learner.feedback_matrix(name), module.weight, atol=1e-12)
    x, y = batch(conv)
    rule, bp = learner.estimate((x, y)), learner.backprop_gradients((x, y))
    assert set(bp) <= set(rule)
    for key in bp:
        assert torch.allclose(rule[key], bp[key], rtol=1e-10, atol=1e-12), key
    diag = learner.diagnostics((x, y))
    for name in learner.layers:
        assert diag[f"path_angle/{name}"] == pytest.approx(0.0, abs=1e-4)
        assert diag[f"path_norm_ratio/{name}"] == pytest.approx(1.0, abs=1e-10)
        assert diag[f"cos/{name}"] == pytest.approx(1.0, abs=1e-10)


def test_linear_layer_equations_by_hand():
    """δ_r = δB, dL/dx = δ_r R, ∂L/∂R = δ_rᵀx, ∂L/∂W = δᵀx, ∂L/∂b = Σδ — checked on one layer."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    _learner = bbp.rules.get("pfa", expansion=3).attach(nn.Sequential(layer))
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, 4, dtype=torch.float64)
    a = layer(x)
    loss = 0.5 * ((a - target) ** 2).sum()
    loss.backward()
    delta = (a - target).detach()
    B, R = layer.bbp_B, layer.bbp_R.detach()
    delta_r = delta @ B
    assert torch.allclose(x.grad, delta_r @ R, atol=1e-12)
    assert torch.allclose(layer.bbp_R.grad, delta_r.t() @ x.detach(), atol=1e-12)
    assert torch.allclose(layer.weight.grad, delta.t() @ x.detach(), atol=1e-12)
    assert torch.allclose(layer.bias.grad, delta.sum(0), atol=1e-12)
    # and R's update is Bᵀ times W's: B·R moves by B Bᵀ times W's step
    assert torch.allclose(layer.bbp_R.grad, B.t() @ layer.weight.grad, atol=1e-12)
    assert B.grad is None and not B.requires_grad


@pytest.mark.parametrize("conv", ["2d", "1d"])
def test_conv_population_is_a_pointwise_B_then_R_as_a_kernel(conv):
    """For a conv layer: dL/dx is the transposed conv of (B applied per position to δ) with R."""
    torch.manual_seed(0)
    Conv = nn.Conv1d if conv == "1d" else nn.Conv2d
    layer = Conv(3, 4, 3, stride=2, padding=1).double()
    _learner = bbp.rules.get("pfa", expansion=2).attach(nn.Sequential(layer))
    shape = (2, 3, 9) if conv == "1d" else (2, 3, 9, 9)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    B, R = layer.bbp_B, layer.bbp_R.detach()
    g_r = torch.einsum("bo...,om->bm...", g, B)
    transposed = F.conv_transpose1d if conv == "1d" else F.conv_transpose2d
    ref_x = transposed(g_r, R, stride=2, padding=1)
    assert ref_x.shape == x.shape
    assert torch.allclose(x.grad, ref_x, atol=1e-12)
    conv_fn = F.conv1d if conv == "1d" else F.conv2d
    R_leaf = R.clone().requires_grad_(True)
    grad_R = torch.autograd.grad(conv_fn(x.detach(), R_leaf, stride=2, padding=1), R_leaf, g_r)[0]
    assert torch.allclose(layer.bbp_R.grad, grad_R, atol=1e-12)


@pytest.mark.parametrize("variant,opts", VARIANTS)
def test_routes_agree_on_unaligned_paths(variant, opts):
    """Population and product orders compute the same numbers (B·R ≠ W here)."""
    x, y = batch()
    results = []
    for route in ("population", "product", "auto"):
        torch.manual_seed(2)
        learner = bbp.rules.get("pfa", variant=variant, route=route, **opts).attach(small_net())
        results.append(learner.estimate((x, y)))
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for key in results[0]:
            assert torch.allclose(other[key], results[0][key], rtol=1e-10, atol=1e-13), key


def test_identity_variant_is_kolen_pollack():
    """B = I: the path is R itself and R receives exactly W's gradient, as KP's B does."""
    x, y = batch()
    torch.manual_seed(3)
    pfa_model = small_net()
    pfa = bbp.rules.get("pfa", variant="identity").attach(pfa_model)
    torch.manual_seed(3)
    kp_model = small_net()
    kp = bbp.rules.get("kp").attach(kp_model)
    with torch.no_grad():
        for name, module in kp.layers.items():
            module.bbp_feedback.copy_(pfa.layers[name].bbp_R)
    g_pfa, g_kp = pfa.estimate((x, y)), kp.estimate((x, y))
    for key, value in g_kp.items():
        pfa_key = key.replace("bbp_feedback", "bbp_R")
        assert torch.allclose(g_pfa[pfa_key], value, rtol=1e-12, atol=1e-14), key


def test_route_choice_follows_the_multiply_add_counts():
    # wide Linear layer, small batch: the population route is cheaper for both
    assert choose_route(128, 256, 2560, 256, True, True, True) == ("pop", "pop")
    # conv-like: many rows (batch × positions), few channels: form B·R and use W's gradient
    assert choose_route(128 * 784, 6, 60, 25, True, True, True) == ("prod", "prod")
    # a first layer (no input gradient) with a huge batch: R from W's gradient
    assert choose_route(10_000, 32, 320, 64, False, True, True)[1] == "prod"
    # forced routes
    assert choose_route(1, 1, 1, 1, True, True, True, "product") == ("prod", "prod")
    assert choose_route(10**6, 1, 1, 1, True, True, True, "population") == ("pop", "pop")


def test_optimizer_without_R_is_refused():
    torch.manual_seed(0)
    model = models.build("mlp", (16,), 3, widths=(8,))
    learner = bbp.rules.get("pfa").attach(model)
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if "bbp_" not in n], lr=0.1)
    with pytest.raises(ConfigError, match="bbp_R"):
        learner.step((torch.randn(4, 16), torch.randint(0, 3, (4,))), opt)


def test_forward_is_unchanged_and_eval_uses_the_plain_layer():
    torch.manual_seed(0)
    model = small_net()
    x, _ = batch()
    ref = model(x).detach()
    bbp.rules.get("pfa").attach(model)
    assert torch.equal(model(x).detach(), ref)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


# -- learning ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.mark.parametrize("variant,opts", [("random", {}), ("orthogonal", {})])
def test_path_alignment_improves_while_learning_digits(digits, variant, opts):
    """Over a short run with weight decay the angle between B·R and W shrinks a lot in every
    layer, the path norm ratio stays finite, and the net learns far above chance."""
    torch.manual_seed(0)
    model = models.build("mlp", digits.input_shape, 10, widths=(64, 64))
    learner = bbp.rules.get("pfa", variant=variant, **opts).attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    probe = (digits.x_train[:256], digits.y_train[:256])
    before = learner.diagnostics(probe)
    for epoch in range(6):
        for xb, yb in digits.train_loader(64, seed=epoch):
            learner.step((xb, yb), opt)
    after = learner.diagnostics(probe)
    for name in learner.layers:
        assert before[f"path_angle/{name}"] > 75
        assert after[f"path_angle/{name}"] < before[f"path_angle/{name}"] - 20, name
        assert 0.1 < after[f"path_norm_ratio/{name}"] < 10
    assert after["cos/all"] > before["cos/all"] + 0.3
    acc = float((learner.predict(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert acc > 0.85


def test_without_weight_decay_the_mismatch_does_not_decay(digits):
    """The authors rely on weight decay: with it ‖B·R − W‖ shrinks, without it it does not."""
    ratios = {}
    for wd in (0.0, 1e-2):
        torch.manual_seed(0)
        model = models.build("mlp", digits.input_shape, 10, widths=(64,))
        learner = bbp.rules.get("pfa").attach(model)

        def gaps():
            return {n: float((learner.feedback_matrix(n) - m.weight.detach()).norm()) for n, m in learner.layers.items()}

        start = gaps()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=wd)
        for epoch in range(4):
            for xb, yb in digits.train_loader(64, seed=epoch):
                learner.step((xb, yb), opt)
        ratios[wd] = {n: g / start[n] for n, g in gaps().items()}
    for name in ratios[0.0]:
        assert ratios[0.0][name] > 0.95, name
        assert ratios[1e-2][name] < ratios[0.0][name] - 0.2, name


def test_path_metrics_reach_the_run_results_and_the_report():
    from beyondbp.reporting import runs as report
    from beyondbp.training import RunConfig, run

    result = run(RunConfig(rule="pfa", model="mlp", data="digits", steps=3, diagnostics=True, n_train=200,
                           n_test=50, batch_size=32, threads=1))
    diag = result.final["diagnostics"]
    for layer in ("fc1", "fc2", "out"):
        assert 0 <= diag[f"path_angle/{layer}"] <= 180 and diag[f"path_norm_ratio/{layer}"] > 0
    row = report.comparison_table([result])[0]
    angles = [diag[f"path_angle/{layer}"] for layer in ("fc1", "fc2", "out")]
    assert row["angle_mean"] == pytest.approx(sum(angles) / 3)
