"""SET sparsity (``beyondbp.sparsity.SET``): masks, evolution, composition with every rule, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import beyondbp as bbp
from beyondbp import data, models
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.sparsity import SET, SparseLearner, er_probability

RULES = bbp.rules.names()


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def mlp(widths=(128, 128), seed=0, inputs=(1, 8, 8)) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", inputs, 10, widths=widths)


def sparse(rule: str = "backprop", epsilon: float = 5, zeta: float = 0.3, seed: int = 0, model=None, **rule_opts):
    model = model if model is not None else mlp()
    return SET(epsilon=epsilon, zeta=zeta, seed=seed).wrap(bbp.rules.get(rule, **rule_opts).attach(model))


def attach_any(name: str) -> tuple[nn.Module, object]:
    """The rule on the digits MLP, or on its own example model when it refuses the MLP."""
    rule = bbp.rules.get(name)
    model = mlp(widths=(32, 32))
    try:
        return model, rule.attach(model)
    except UnsupportedModuleError:
        torch.manual_seed(0)
        model = type(rule).example_model((1, 8, 8), 10)
        return model, rule.attach(model)


def assert_absent_are_zero(learner: SparseLearner, optimizer=None) -> None:
    for name, layer in learner.sparse_layers.items():
        w = layer.module.weight
        assert torch.all(w.detach()[~layer.mask] == 0), f"{name}: an absent weight is not zero"
        if optimizer is not None:
            for key, value in optimizer.state.get(w, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == w.shape:
                    assert torch.all(value[~layer.mask] == 0), f"{name}: optimizer state {key} is non-zero at an absent weight"


def run_epochs(learner, optimizer, digits, epochs, n=512):
    x, y = digits.x_train[:n], digits.y_train[:n]
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            learner.step((x[idx], y[idx]), optimizer)
        learner.on_epoch_end(epoch)


# -- options, initial topology ----------------------------------------------------------------


@pytest.mark.parametrize(
    "opts", [{"epsilon": 0}, {"epsilon": -3}, {"epsilon": float("inf")}, {"zeta": 1.0}, {"zeta": -0.1},
             {"seed": -1}, {"include_conv": "yes"}, {"rescale": 1}],
)
def test_bad_options_are_refused(opts):
    with pytest.raises(ConfigError):
        SET(**opts)


def test_defaults_are_the_papers():
    s = SET()
    assert (s.epsilon, s.zeta, s.seed, s.include_conv, s.rescale) == (20.0, 0.3, 0, False, True)


def test_er_probability_formula():
    assert er_probability(20, 784, 1000) == pytest.approx(20 * 1784 / 784000)
    assert er_probability(13, 1000, 10) == 1.0  # clipped: a small output layer stays dense


def test_initial_topology_is_erdos_renyi_with_the_papers_probability():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 300), nn.ReLU(), nn.Linear(300, 10))
    learner = SET(epsilon=13).wrap(bbp.rules.get("backprop").attach(model))
    for name, layer in learner.sparse_layers.items():
        n_out, n_in = layer.module.weight.shape
        p = er_probability(13, n_in, n_out)
        count = int(layer.mask.sum())
        expected, sd = p * n_in * n_out, math.sqrt(n_in * n_out * p * (1 - p))
        assert abs(count - expected) <= 5 * sd + 1e-9, name
        # rows and columns are hit uniformly (no structure): every row of a big sparse layer has
        # about p·n_in connections
        if p < 1:
            per_row = layer.mask.sum(1).float()
            assert abs(per_row.mean().item() - p * n_in) < 0.05 * p * n_in
    assert learner.density()["4"] == 1.0 and not learner.sparse_layers["4"].evolve


def test_masks_depend_on_the_seed_only():
    a, b, c = sparse(seed=3), sparse(seed=3, model=mlp(seed=5)), sparse(seed=4)
    for name in a.sparse_layers:
        assert torch.equal(a.sparse_layers[name].mask, b.sparse_layers[name].mask)
    assert any(not torch.equal(a.sparse_layers[n].mask, c.sparse_layers[n].mask) for n in a.sparse_layers)


def test_wrap_zeroes_absent_weights_and_rescales_kept_ones():
    dense = mlp()
    kept = {n: m.weight.detach().clone() for n, m in dense.named_modules() if isinstance(m, nn.Linear)}
    learner = sparse(model=dense)
    for name, layer in learner.sparse_layers.items():
        w, mask = layer.module.weight.detach(), layer.mask
        assert torch.all(w[~mask] == 0)
        scale = math.sqrt(mask.numel() / int(mask.sum())) if not mask.all() else 1.0
        assert torch.allclose(w[mask], kept[name][mask] * scale)
    plain = SET(epsilon=5, rescale=False).wrap(bbp.rules.get("backprop").attach(mlp()))
    for name, layer in plain.sparse_layers.items():
        assert torch.equal(layer.module.weight.detach()[layer.mask], kept[name][layer.mask])


def test_conv_layers_stay_dense_unless_asked():
    torch.manual_seed(0)
    lenet = models.build("lenet", (1, 28, 28), 10)
    default = SET(epsilon=2).wrap(bbp.rules.get("backprop").attach(lenet))
    assert all(isinstance(l.module, nn.Linear) for l in default.sparse_layers.values())
    default.detach()
    with_conv = SET(epsilon=2, include_conv=True).wrap(bbp.rules.get("backprop").attach(lenet))
    convs = {n: l for n, l in with_conv.sparse_layers.items() if isinstance(l.module, nn.Conv2d)}
    assert convs
    for layer in convs.values():
        c_out, c_in, kh, kw = layer.module.weight.shape
        assert layer.mask.shape == layer.module.weight.shape
        p = er_probability(2, c_in * kh * kw, c_out)
        assert with_conv.density()[layer.name] == pytest.approx(p, abs=0.15) if p < 1 else True


def test_wrapping_twice_is_refused_and_nothing_to_sparsify_is_an_error():
    learner = sparse()
    with pytest.raises(ConfigError):
        SET().wrap(learner.inner)
    conv_only = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ConfigError):
        SET().wrap(bbp.rules.get("backprop").attach(conv_only))


# -- evolution --------------------------------------------------------------------------------


def test_density_is_constant_to_the_connection_and_topology_evolves(digits):
    learner = sparse()
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    counts0, masks0 = learner.n_connections(), learner.masks()
    params0 = learner.n_active_params()
    for epoch in range(4):
        run_epochs(learner, opt, digits, 1)
        learner.evolve()
        assert learner.n_connections() == counts0
        assert learner.n_active_params() == params0
    masks = learner.masks()
    for name in ("fc1", "fc2"):
        changed = int((masks[name] != masks0[name]).sum())
        assert changed > 0, name
    assert len(learner.history) == 4


def test_zeta_zero_is_static_sparse(digits):
    learner = sparse(zeta=0.0)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9)
    masks0 = learner.masks()
    run_epochs(learner, opt, digits, 2)
    learner.evolve()
    assert all(torch.equal(masks0[n], m) for n, m in learner.masks().items())


def test_pruning_removes_the_weights_closest_to_zero_and_regrowth_uses_empty_positions(digits):
    learner = sparse(zeta=0.3)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    run_epochs(learner, opt, digits, 2)
    learner._pending = False  # inspect one evolution by hand
    before = {n: (l.mask.clone(), l.module.weight.detach().clone()) for n, l in learner.sparse_layers.items()}
    momenta = {n: opt.state[l.module.weight]["momentum_buffer"].clone() for n, l in learner.sparse_layers.items()}
    learner.evolve()
    for name, layer in learner.sparse_layers.items():
        mask0, w0 = before[name]
        mask1, w1 = layer.mask, layer.module.weight.detach()
        if not layer.evolve:
            assert torch.equal(mask0, mask1)
            continue
        removed, added = mask0 & ~mask1, ~mask0 & mask1
        assert int(removed.sum()) == int(added.sum()) > 0
        # the removed ones: ⌊ζ n_pos⌋ smallest positive and ⌊ζ n_neg⌋ largest negative weights
        pos, neg = w0[mask0 & (w0 > 0)], w0[mask0 & (w0 < 0)]
        k_pos, k_neg = int(0.3 * pos.numel()), int(0.3 * neg.numel())
        assert int((removed & (w0 > 0)).sum()) == k_pos and int((removed & (w0 < 0)).sum()) == k_neg
        assert w0[removed & (w0 > 0)].max() <= w0[mask0 & ~removed & (w0 > 0)].min()
        assert w0[removed & (w0 < 0)].min() >= w0[mask0 & ~removed & (w0 < 0)].max()
        # regrown positions were empty before, and start at zero, as do the pruned ones
        assert not torch.any(mask0[added])
        assert torch.all(w1[added] == 0) and torch.all(w1[removed] == 0)
        # weights that stay are untouched
        assert torch.equal(w1[mask0 & mask1], w0[mask0 & mask1])
        # momentum is zeroed where the topology changed and kept elsewhere
        buf = opt.state[layer.module.weight]["momentum_buffer"]
        assert torch.all(buf[removed | added] == 0)
        assert torch.equal(buf[mask0 & mask1], momenta[name][mask0 & mask1])


def test_evolution_waits_for_the_next_step(digits):
    """on_epoch_end schedules the rewiring; the network evaluated after an epoch is the trained one."""
    learner = sparse()
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9)
    run_epochs(learner, opt, digits, 1)
    masks = learner.masks()
    metrics = learner.on_epoch_end(1)
    assert metrics["set/density"] == pytest.approx(learner.overall_density())
    assert all(torch.equal(masks[n], m) for n, m in learner.masks().items())
    learner.step((digits.x_train[:8], digits.y_train[:8]), opt)
    assert any(not torch.equal(masks[n], m) for n, m in learner.masks().items())


# -- absent weights receive no update, from any rule and optimizer -------------------------------


@pytest.mark.parametrize("name", RULES)
def test_absent_weights_stay_exactly_zero_under_every_rule(name, digits):
    model, inner = attach_any(name)
    learner = SET(epsilon=3, zeta=0.3).wrap(inner)
    assert learner.sparse_layers, name
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.02, momentum=0.9, weight_decay=1e-2)
    x, y = digits.x_train[:256], digits.y_train[:256]
    if tuple(x.shape[1:]) != tuple(getattr(model, "input_shape", x.shape[1:])):
        pytest.skip(f"rule {name}'s example model takes another input shape")
    for epoch in range(3):
        for i in range(0, 256, 64):
            learner.step((x[i : i + 64], y[i : i + 64]), opt)
            assert_absent_are_zero(learner, opt)
        learner.on_epoch_end(epoch)
    assert_absent_are_zero(learner, opt)
    est = learner.estimate((x[:32], y[:32]))
    for layer_name, layer in learner.sparse_layers.items():
        key = f"{layer_name}.weight"
        if key in est:
            assert torch.all(est[key][~layer.mask] == 0), f"{name}: estimate has updates at absent weights"


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
        lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.1),
    ],
    ids=["sgd-nesterov", "adam", "adamw"],
)
def test_absent_weights_and_optimizer_state_stay_zero_under_each_optimizer(make_opt, digits):
    learner = sparse("fa")
    opt = make_opt(learner.optimizer_parameters())
    run_epochs(learner, opt, digits, 3, n=256)
    learner.evolve()
    run_epochs(learner, opt, digits, 1, n=256)
    assert_absent_are_zero(learner, opt)


def test_users_own_loop_with_a_hooked_optimizer(digits):
    """wrap(learner, optimizer): plain loss.backward(); optimizer.step() keeps the sparsity too."""
    model = mlp()
    inner = bbp.rules.get("dfa").attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    learner = SET(epsilon=5).wrap(inner, optimizer=opt)
    x, y = digits.x_train[:256], digits.y_train[:256]
    for i in range(0, 256, 32):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()
    assert_absent_are_zero(learner, opt)
    assert any(float(l.module.weight.detach().abs().sum()) > 0 for l in learner.sparse_layers.values())


def test_grads_written_by_hand_are_masked_before_the_step():
    learner = sparse()
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1, momentum=0.9)
    learner._hook_optimizer(opt)
    for p in learner.model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert_absent_are_zero(learner, opt)


def test_kolen_pollack_feedback_gets_the_masked_gradient(digits):
    learner = sparse("kp")
    est = learner.estimate((digits.x_train[:32], digits.y_train[:32]))
    for name, layer in learner.sparse_layers.items():
        g_w, g_b = est[f"{name}.weight"], est[f"{name}.bbp_feedback"]
        assert torch.equal(g_w, g_b)
        assert torch.all(g_b[~layer.mask] == 0)


def test_detach_restores_dense_gradients(digits):
    model = mlp()
    learner = sparse(model=model)
    learner.detach()
    assert not learner.inner.model.__dict__.get("_beyondbp_sparsity", False)
    for p in model.parameters():
        p.grad = None
    nn.functional.cross_entropy(model(digits.x_train[:32]), digits.y_train[:32]).backward()
    assert all(bool((m.weight.grad != 0).float().mean() > 0.5) for m in model.modules() if isinstance(m, nn.Linear))
    with pytest.raises(ConfigError):
        learner.step((digits.x_train[:8], digits.y_train[:8]), torch.optim.SGD(model.parameters(), lr=0.1))
    # the model can be attached and sparsified again
    SET().wrap(bbp.rules.get("backprop").attach(model))


def test_rule_state_round_trip(digits):
    a = sparse("dfa")
    opt = torch.optim.SGD(a.optimizer_parameters(), lr=0.05, momentum=0.9)
    run_epochs(a, opt, digits, 2, n=256)
    state = a.rule_state()
    b = sparse("dfa", seed=7)
    b.model.load_state_dict(a.model.state_dict())
    b.load_rule_state(state)
    for name in a.sparse_layers:
        assert torch.equal(a.sparse_layers[name].mask, b.sparse_layers[name].mask)
    assert a.evolve() == b.evolve()  # same weights and generator state → same rewiring
    assert all(torch.equal(a.sparse_layers[n].mask, b.sparse_layers[n].mask) for n in a.sparse_layers)


# -- learning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["backprop", "dfa"])
def test_sparse_networks_learn_digits_well_above_chance(rule, digits):
    learner = sparse(rule, epsilon=5)
    assert learner.overall_density() < 0.2
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for epoch in range(8):
        for xb, yb in digits.train_loader(64, seed=epoch):
            learner.step((xb, yb), opt)
        learner.on_epoch_end(epoch)
    acc = float((learner.predict(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert acc > 0.75, f"SET + {rule}: {acc:.3f}"


def test_inference_learning_trains_a_sparse_mlp_with_masks_kept(digits):
    """SET + IL (which relaxes activities with ``torch.autograd.grad`` and writes ``.grad``
    itself): the FLOP-counted step the run loop makes used to crash inside ``autograd.grad``.
    Absent weights and the momentum there stay exactly zero through steps and rewirings."""
    learner = sparse("il", epsilon=5)
    assert learner.overall_density() < 0.2
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.1, momentum=0.9)
    for epoch in range(4):
        for i, (xb, yb) in enumerate(digits.train_loader(32, seed=epoch)):
            if epoch == 0 and i == 1:
                learner.count_flops((xb, yb), opt)  # a real step, under the FLOP counters
            else:
                learner.step((xb, yb), opt)
        assert_absent_are_zero(learner, opt)
        learner.on_epoch_end(epoch)
    assert len(learner.history) == 3 and all(sum(h["rewired"].values()) > 0 for h in learner.history)
    assert_absent_are_zero(learner, opt)
    acc = float((learner.predict(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert acc > 0.75, f"SET + il: {acc:.3f}"  # chance is 0.1; measured 0.86-0.89 over seeds 0-2


# -- parameters and FLOPs ---------------------------------------------------------------------


def test_parameter_counts():
    learner = sparse("kp")
    model = learner.model
    dense = sum(p.numel() for n, p in model.named_parameters() if "bbp_" not in n)
    assert learner.n_params() == dense
    absent = sum(int((~l.mask).sum()) for l in learner.sparse_layers.values())
    assert learner.n_active_params() == dense - absent


@pytest.mark.parametrize("rule", ["backprop", "fa", "dfa"])
def test_effective_flops_scale_the_products_that_involve_sparse_weights(rule, digits):
    """MLP 64-128-128-10, batch n: forward FLOPs F_l = 2·n·in·out. The measured (dense) step is
    backprop's 2F₁+3F₂+3F₃ (FA the same; DFA 2F per layer plus its projections). The effective
    count scales forward and weight-gradient products by density, and the error product only
    when it goes through W (backprop)."""
    learner = sparse(rule)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.01)
    n = 40
    report = learner.count_flops((digits.x_train[:n], digits.y_train[:n]), opt)
    dims = [(64, 128), (128, 128), (128, 10)]
    F = [2 * n * a * b for a, b in dims]
    d = [learner.density()[k] for k in ("fc1", "fc2", "out")]
    assert report["forward_flops"] == sum(F)
    if rule == "dfa":
        projections = 2 * n * 10 * (128 + 128)
        assert report["flops_per_step"] == 2 * sum(F) + projections
        expected = sum(2 * f * dl for f, dl in zip(F, d)) + projections
    else:
        assert report["flops_per_step"] == 2 * F[0] + 3 * F[1] + 3 * F[2]
        if rule == "backprop":
            expected = 2 * F[0] * d[0] + 3 * F[1] * d[1] + 3 * F[2] * d[2]
        else:  # FA's feedback matrix B is dense: its error product is counted in full
            expected = 2 * F[0] * d[0] + (2 * d[1] + 1) * F[1] + (2 * d[2] + 1) * F[2]
    assert report["effective_flops_per_step"] == pytest.approx(expected, abs=2)
    assert report["effective_flops_per_step"] < report["flops_per_step"]


@pytest.mark.parametrize("rule", ["il", "ff"])
def test_effective_flops_of_rules_that_call_layers_one_by_one(rule, digits):
    """IL (T=3 iterations) and FF call the layers themselves, several times per step, and build
    layer-local graphs. Every product of their step goes through a sparse weight, so the
    effective count scales all of it by density. IL: the feedforward states (F₁+F₂), T+1
    energies (F₂+F₃ each), T gradients to the states (F₂+F₃), the final energy and its weight
    gradients (2F per layer). FF: positive, negative and neutral passes and two weight
    gradients per hidden layer; the readout's forward and weight gradient. (Before, the
    per-layer counts were lost: a leaf-tensor crash for IL, layers named by type for FF.)"""
    learner = sparse(rule, **({"iterations": 3} if rule == "il" else {}))
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.01)
    n = 40
    report = learner.count_flops((digits.x_train[:n], digits.y_train[:n]), opt)
    F = [2 * n * a * b for a, b in [(64, 128), (128, 128), (128, 10)]]
    d = [learner.density()[k] for k in ("fc1", "fc2", "out")]
    times = [3, 2 * 3 + 4, 2 * 3 + 3] if rule == "il" else [5, 5, 2]
    assert report["forward_flops"] == sum(F)
    assert report["flops_per_step"] == sum(k * f for k, f in zip(times, F))
    expected = sum(k * f * dl for k, f, dl in zip(times, F, d))
    assert report["effective_flops_per_step"] == pytest.approx(expected, abs=2)


# -- the run loop and the command line -------------------------------------------------------

RUN = dict(model="mlp", data="digits", epochs=2, optimizer="sgd", lr=0.05, n_train=512, n_test=200, threads=1)


def test_run_config_validates_sparsity_options():
    from beyondbp.training import RunConfig

    assert RunConfig(**RUN).sparsity is None
    cfg = RunConfig(**RUN, sparsity="set", epsilon=13, zeta=0.2)
    assert (cfg.sparsity, cfg.epsilon, cfg.zeta) == ("set", 13.0, 0.2)
    for bad in ({"sparsity": "rigl"}, {"sparsity": "set", "epsilon": 0}, {"sparsity": "set", "zeta": 1.0}, {"epsilon": "x"}):
        with pytest.raises(ConfigError):
            RunConfig(**RUN, **bad)


@pytest.mark.parametrize("rule", ["dfa", "pfa"])
def test_run_with_set_reports_active_parameters_and_effective_flops(rule):
    from beyondbp.training import RunConfig, run

    dense = run(RunConfig(**RUN, rule=rule))
    result = run(RunConfig(**RUN, rule=rule, sparsity="set", epsilon=5))
    # masks simulate sparsity: the kernels that ran, and so the measured FLOPs, are the dense ones
    assert result.flops_per_step == dense.flops_per_step
    assert dense.effective_flops_per_step == dense.flops_per_step and dense.n_active_params == dense.n_params
    assert result.effective_flops_per_step < result.flops_per_step
    assert result.n_params == dense.n_params and result.n_active_params < 0.2 * result.n_params
    sp = result.sparsity
    assert sp["method"] == "set" and sp["epsilon"] == 5 and sp["zeta"] == 0.3 and 0 < sp["density"] < 0.2
    assert sp["rewirings"] == 1  # evolution after epoch 1 ran at the first step of epoch 2; none after the last
    assert "masks" in sp["kernels"]
    assert result.final["test_accuracy"] > 0.3
    assert result.history[-1]["metrics"]["set/density"] == pytest.approx(sp["density"])


def test_cli_train_and_compare_take_sparsity_flags(capsys, tmp_path):
    from beyondbp.cli import main

    def cli(*args):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return info.value.code, out, err

    tiny = ["--model", "mlp", "--data", "digits", "--n-train", "256", "--n-test", "100", "--epochs", "1", "--threads", "1"]
    code, out, err = cli("train", "--rule", "dfa", "--sparsity", "set", "--epsilon", "5", "--zeta", "0.2", *tiny)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "SET sparsity (ε=5, ζ=0.2)" in flat and "effective" in flat and "active parameters" in flat
    code, out, err = cli("compare", "--rules", "backprop,fa", "--sparsity", "set", *tiny, "--out", tmp_path / "cmp")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "backprop: SET sparsity" in flat and "fa: SET sparsity" in flat
    code, out, err = cli("train", "--sparsity", "dense", *tiny)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "sparsity" in err
    code, out, err = cli("train", "--rule", "il", "--sparsity", "set", "--epsilon", "5", *tiny)
    assert code == 0, err  # crashed in torch.autograd.grad under the FLOP counter
    assert "SET sparsity (ε=5" in " ".join(out.split())
