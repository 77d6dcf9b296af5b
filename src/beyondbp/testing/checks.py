"""The contract checks, one function each (``check_<what>(rule_cls[, kind])``); see
:mod:`beyondbp.testing` for what each asks of a rule, and :mod:`beyondbp.testing.kit` for how
they are selected and run."""

from __future__ import annotations

import copy
import math
import unittest
from typing import Any

import torch
from torch import Tensor, nn

from .. import rules as rules_mod
from ..errors import ConfigError, UnsupportedModuleError
from ..rules import Learner, Rule, default_loss
from ..rules.base import ATTACHED_FLAG
from .kinds import BATCH, EPOCHS, INPUT_SHAPE, MIN_ACCURACY, NUM_CLASSES, attached, digits, standard_model, unattached


# -- helpers ------------------------------------------------------------------------------------------
def make_optimizer(learner: Learner) -> torch.optim.Optimizer:
    return type(learner.rule).example_optimizer(learner.optimizer_parameters())


def plain_backward(learner: Learner) -> bool:
    declared = type(learner.rule).plain_backward
    if declared is not None:
        return bool(declared)
    return type(learner).step is Learner.step


def train(learner: Learner, x: Tensor, y: Tensor, epochs: int, seed: int = 0) -> list[float]:
    optimizer = make_optimizer(learner)
    order = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        learner.on_epoch_start(epoch)  # the run loop's protocol (SoftHebb's paper order)
        for i in range(0, len(x), BATCH):
            idx = perm[i : i + BATCH]
            metrics = learner.step((x[idx], y[idx]), optimizer)
            assert isinstance(metrics["loss"], float) and math.isfinite(metrics["loss"]), (
                f"learner.step must return a finite float 'loss', got {metrics.get('loss')!r}"
            )
            losses.append(metrics["loss"])
        learner.on_epoch_end(epoch)
    return losses


def accuracy(learner: Learner, x: Tensor, y: Tensor) -> float:
    return float((learner.predict(x).argmax(1) == y).float().mean())


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def bp_reference(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Outputs and plain-autograd gradients of ``model`` (its .grad is left as None)."""
    for p in model.parameters():
        p.grad = None
    out = model(x)
    default_loss(out, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for p in model.parameters():
        p.grad = None
    return out.detach(), grads


def hook_counts(model: nn.Module) -> list[tuple[str, int, int, int, list[str]]]:
    """Per module: hook counts and the instance attributes (an attached rule may add e.g. a
    ``forward``; detach must take everything away again)."""
    return [
        (n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), sorted(m.__dict__))
        for n, m in model.named_modules()
    ]


# -- attaching ------------------------------------------------------------------------------------------
def check_attaches(rule_cls: type[Rule], kind: str) -> None:
    name = rule_cls.name
    x = digits()[0][:8]
    model, learner = attached(rule_cls, kind)
    assert getattr(model, ATTACHED_FLAG) == name
    assert learner.model is model and learner.rule.name == name
    layers = learner.trained_layers()
    modules = dict(model.named_modules())
    assert all(modules.get(path) is module for path, module in layers.items()), (
        "trained_layers() must map module paths to the model's own modules"
    )
    if not rule_cls.exact_gradients:
        assert layers, f"rule {name} trains no layer of the {kind}"
    param_ids = {id(p) for p in model.parameters()}
    assert all(id(p) in param_ids for p in learner.optimizer_parameters()), (
        "optimizer_parameters() must be parameters of the model"
    )
    out = learner.predict(x)
    assert out.shape == (8, NUM_CLASSES) and torch.isfinite(out).all()


def check_attach_keeps_the_global_rng(rule_cls: type[Rule]) -> None:
    torch.manual_seed(0)
    model = standard_model("mlp")
    state = torch.random.get_rng_state()
    try:
        rule_cls().attach(model)
    except UnsupportedModuleError:
        model = rule_cls.example_model(INPUT_SHAPE, NUM_CLASSES)
        if model is None:
            raise
        state = torch.random.get_rng_state()
        rule_cls().attach(model)
    assert torch.equal(torch.random.get_rng_state(), state), "attach consumed the global torch RNG"


def check_attaching_twice_is_refused_until_detached(rule_cls: type[Rule]) -> None:
    name = rule_cls.name
    model, learner = attached(rule_cls, "mlp")
    try:
        rule_cls().attach(model)
    except ConfigError as exc:
        assert name in str(exc), f"the refusal must name the attached rule '{name}': {exc}"
    else:
        raise AssertionError("attaching the rule to a model that already has it attached was not refused")
    try:
        rules_mod.get("backprop").attach(model)
    except ConfigError:
        pass
    else:
        raise AssertionError("attaching backprop to a model with the rule attached was not refused")
    learner.detach()
    again = rule_cls().attach(model)
    assert getattr(model, ATTACHED_FLAG) == name
    again.detach()
    assert not hasattr(model, ATTACHED_FLAG)


def check_refuses_an_unsupported_layer(rule_cls: type[Rule]) -> None:
    torch.manual_seed(0)
    model = standard_model("mlp")
    try:
        rule_cls().check_model(model)
    except UnsupportedModuleError:
        model = rule_cls.example_model(INPUT_SHAPE, NUM_CLASSES)
        if model is None:
            raise
    model.add_module("extra", nn.Sequential())
    model.extra.add_module("rnn", nn.LSTM(4, 4))
    before_state, before_hooks = snapshot(model), hook_counts(model)
    try:
        rule_cls().attach(model)
    except UnsupportedModuleError as exc:
        message = str(exc)
    else:
        raise AssertionError("attach accepted a model holding an nn.LSTM (declare refuses_unknown = False if that is right)")
    assert "extra.rnn" in message and "LSTM" in message, f"the refusal must name the path and type: {message}"
    # nothing was installed: the model is as it was and can take another rule
    assert not hasattr(model, ATTACHED_FLAG)
    assert hook_counts(model) == before_hooks
    after_state = snapshot(model)
    assert after_state.keys() == before_state.keys()
    assert all(torch.equal(after_state[k], before_state[k]) for k in before_state)
    rules_mod.get("backprop").attach(model).detach()


class _WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = standard_model("mlp")
        self.extra = nn.Sequential()
        self.extra.add_module("rnn", nn.LSTM(4, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.extra.rnn(torch.zeros(len(x), 1, 4))[0].sum() * 0


def check_attaches_to_any_module(rule_cls: type[Rule]) -> None:
    x, y = digits()[0][:4], digits()[1][:4]
    torch.manual_seed(0)
    model = _WithLSTM()
    learner = rule_cls().attach(model)
    grads = learner.estimate((x, y))
    assert "extra.rnn.weight_hh_l0" in grads and "body.fc1.weight" in grads


# -- learning -------------------------------------------------------------------------------------------
def check_learns_digits(rule_cls: type[Rule], kind: str) -> None:
    x, y, x_test, y_test = digits()
    model, learner = attached(rule_cls, kind)
    losses = train(learner, x, y, EPOCHS)
    acc = accuracy(learner, x_test, y_test)
    assert acc >= MIN_ACCURACY, f"{rule_cls.name} on {kind}: test accuracy {acc:.3f} < {MIN_ACCURACY}"
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first, f"{rule_cls.name} on {kind}: the loss did not fall ({first:.4f} -> {last:.4f})"


def check_same_seed_same_numbers(rule_cls: type[Rule], kind: str) -> None:
    x, y, x_test, _ = digits()
    x, y = x[:512], y[:512]
    runs = []
    for _ in range(2):
        model, learner = attached(rule_cls, kind, model_seed=3)
        losses = train(learner, x, y, epochs=1, seed=5)
        runs.append((losses, snapshot(model), learner.predict(x_test[:50])))
    (l1, s1, p1), (l2, s2, p2) = runs
    assert l1 == l2, "the same seed gave different losses"
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1), "the same seed gave different weights"
    assert torch.equal(p1, p2), "the same seed gave different predictions"


def check_rule_seed_changes_the_training(rule_cls: type[Rule]) -> None:
    x, y = digits()[0][:256], digits()[1][:256]
    finals = []
    for rule_seed in (0, 1):
        model, learner = attached(rule_cls, "mlp", model_seed=0, seed=rule_seed)
        train(learner, x, y, epochs=1)
        finals.append(snapshot(model))
    common = [k for k in finals[0] if k in finals[1] and not k.rsplit(".", 1)[-1].startswith("bbp_")]
    assert common
    assert any(not torch.equal(finals[0][k], finals[1][k]) for k in common), "the rule's seed option changed nothing"


# -- estimate, predict, detach --------------------------------------------------------------------------
def check_estimate_changes_nothing(rule_cls: type[Rule], kind: str) -> None:
    x, y = digits()[0][:32], digits()[1][:32]
    model, learner = attached(rule_cls, kind)
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    state_before = snapshot(model)
    model.train()
    estimate = learner.estimate((x, y))
    assert model.training
    state_after = snapshot(model)
    assert all(torch.equal(state_after[k], state_before[k]) for k in state_before), "estimate changed the model's state"
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, grads_before[n]), f"estimate changed the .grad of {n}"
    params = dict(model.named_parameters())
    assert estimate, "estimate returned no update direction"
    for n, g in estimate.items():
        assert n in params and g.shape == params[n].shape and torch.isfinite(g).all(), n
    assert any(g.abs().sum() > 0 for g in estimate.values()), "estimate is zero everywhere"
    for layer in learner.trained_layers():
        assert f"{layer}.weight" in estimate, f"estimate has no direction for the trained layer {layer}"


def check_estimate_is_not_backprop(rule_cls: type[Rule]) -> None:
    x, y = digits()[0][:32], digits()[1][:32]
    _, learner = attached(rule_cls, "mlp")
    rule_grads = learner.estimate((x, y))
    bp_grads = learner.backprop_gradients((x, y))
    shared = [n for n in rule_grads if n in bp_grads]
    assert shared
    assert any(not torch.allclose(rule_grads[n], bp_grads[n], rtol=1e-3, atol=1e-6) for n in shared), (
        "estimate equals backprop's gradient (declare exact_gradients = True if that is right)"
    )


def check_predict_keeps_the_training_mode(rule_cls: type[Rule]) -> None:
    x = digits()[0][:16]
    model, learner = attached(rule_cls, "mlp")
    model.train()
    out = learner.predict(x)
    assert model.training and all(m.training for m in model.modules()), "predict left a module in eval mode"
    assert out.shape == (16, NUM_CLASSES) and not out.requires_grad
    model.eval()
    out_eval = learner.predict(x)
    assert not model.training and not any(m.training for m in model.modules()), "predict left a module in training mode"
    assert torch.equal(out, out_eval)


def check_detach_restores_the_model(rule_cls: type[Rule], kind: str) -> None:
    x, y = digits()[0][:32], digits()[1][:32]
    model = unattached(rule_cls, kind)
    out0, grads0 = bp_reference(model, x, y)
    names0, hooks0, state0 = [n for n, _ in model.named_parameters()], hook_counts(model), snapshot(model)

    learner = rule_cls().attach(model)
    learner.estimate((x, y))
    if plain_backward(learner):
        # feedback-path rules change only the backward pass: the forward is the original one
        model.train()
        assert torch.equal(model(x).detach(), out0), "plain_backward rule changed the forward pass"
    learner.detach()

    assert not hasattr(model, ATTACHED_FLAG)
    assert [n for n, _ in model.named_parameters()] == names0
    assert hook_counts(model) == hooks0, "detach left hooks or instance attributes behind"
    state1 = snapshot(model)
    assert state1.keys() == state0.keys() and all(torch.equal(state1[k], state0[k]) for k in state0)
    out1, grads1 = bp_reference(model, x, y)
    assert torch.equal(out1, out0), "after detach the model computes other outputs"
    assert grads1.keys() == grads0.keys() and all(torch.equal(grads1[k], grads0[k]) for k in grads0), (
        "after detach the model has other gradients"
    )
    try:
        learner.step((x, y), torch.optim.SGD(model.parameters(), lr=0.1))
    except ConfigError:
        pass
    else:
        raise AssertionError("a detached learner still stepped")
    learner.detach()  # a second detach is harmless


def check_deep_copy_is_refused_or_independent(rule_cls: type[Rule]) -> None:
    """Never silently wrong: either ``copy.deepcopy`` refuses with a ConfigError, or the copy
    computes with its own weights."""
    x = digits()[0][:4]
    model, _ = attached(rule_cls, "mlp")
    model.eval()
    with torch.no_grad():
        before = model(x)
    try:
        clone = copy.deepcopy(model)
    except ConfigError as exc:
        assert "detach" in str(exc), f"the refusal must tell the user to detach: {exc}"
        return
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(0.5)
        assert not torch.allclose(clone(x), before), "the deep copy does not compute with its own weights"
        assert torch.equal(model(x), before), "changing the deep copy's weights changed the original's outputs"


# -- the user's own loop --------------------------------------------------------------------------------
def check_users_own_loop(rule_cls: type[Rule]) -> None:
    """For feedback-path rules the user keeps their loop: ``loss.backward(); opt.step();
    sched.step()`` with the model attached trains exactly as ``learner.step`` does."""
    x, y = digits()[0][:640], digits()[1][:640]
    model_a, learner_a = attached(rule_cls, "mlp")
    if not plain_backward(learner_a):
        raise unittest.SkipTest(f"rule {rule_cls.name} owns its step (its learner overrides Learner.step)")
    model_b, learner_b = attached(rule_cls, "mlp")

    def setup(model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)

    opt_a, sched_a = setup(model_a)
    opt_b, sched_b = setup(model_b)
    losses = []
    for epoch in range(4):
        for i in range(0, len(x), BATCH):
            xb, yb = x[i : i + BATCH], y[i : i + BATCH]
            learner_a.step((xb, yb), opt_a)
            sched_a.step()
            opt_b.zero_grad()
            loss = default_loss(model_b(xb), yb)
            loss.backward()
            opt_b.step()
            sched_b.step()
            losses.append(float(loss.detach()))
    assert math.isclose(opt_b.param_groups[0]["lr"], 3e-3 * 0.5**2, rel_tol=1e-6)
    sa, sb = snapshot(model_a), snapshot(model_b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "the user's own loop trained differently from learner.step"
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, "the user's own loop did not learn"
    # the loop trained by the rule, not by backprop
    if not rule_cls.exact_gradients:
        model_bp = unattached(rule_cls, "mlp")
        opt_c, sched_c = setup(model_bp)
        for epoch in range(4):
            for i in range(0, len(x), BATCH):
                opt_c.zero_grad()
                default_loss(model_bp(x[i : i + BATCH]), y[i : i + BATCH]).backward()
                opt_c.step()
                sched_c.step()
        sc = snapshot(model_bp)
        assert any(not torch.equal(sb[k], sc[k]) for k in sc), "the user's own loop trained by backprop, not by the rule"
