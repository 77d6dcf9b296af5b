"""The rule contract: the checks every credit-assignment rule passes, for any rule class.

beyondbp's own test suite runs these checks on every registered rule
(``tests/test_rules_contract.py``); a rule written outside the package runs the same ones:

>>> from beyondbp.testing import check_rule
>>> check_rule(MyRule)                       # doctest: +SKIP

:func:`check_rule` runs every check that applies and raises one :class:`AssertionError` naming
each failing check; under pytest, :func:`parametrize_with_rules` makes one test per rule and
check instead::

    from beyondbp.testing import parametrize_with_rules

    @parametrize_with_rules([MyRule])
    def test_my_rule(rule, check):
        check(rule)

pytest is needed only by :func:`parametrize_with_rules` (imported when it is called); a check
that does not apply at run time raises :class:`unittest.SkipTest`, which pytest reports as a skip.

The checks train on scikit-learn's ``digits`` (8x8 images upsampled to 1x16x16 so LeNet's two 5x5
conv + pool stages fit), with beyondbp's ``mlp`` (widths 128, 128) and ``lenet``, and the
spiking ``snn-mlp`` (T = 4, one hidden layer of 128) and ``snn-cnn`` (T = 4; not in the learning
check, see :data:`LEARN_KINDS`); the attach, estimate and detach checks also run on ``wrnn``
and ``irnn`` (rows as time steps) for every rule that attaches to them (:data:`RNN_KINDS`).
Each check runs with one torch CPU thread (restored after).

What a rule class declares to tell the checks what applies (:class:`beyondbp.rules.Rule`)
--------------------------------------------------------------------------------------------
``refuses_unknown`` (default True)
    False for rules that train every module type (backprop). Such a rule must attach to a model
    holding an ``nn.LSTM``; every other rule must refuse that model with an
    :class:`UnsupportedModuleError` whose message names the module path and its type, and must
    leave the model untouched.
``handles_time_steps`` (default True)
    False for rules that refuse spiking models; the checks on ``snn-mlp`` and ``snn-cnn`` are
    then left out.
``example_model(input_shape, num_classes)`` (default: ``None``)
    A model the rule can train. The checks first attach the rule to their own MLP and LeNet;
    when attach raises :class:`UnsupportedModuleError` and the hook returns a model, they use
    ``example_model((1, 16, 16), 10)`` instead (built right after ``torch.manual_seed(seed)``,
    so it must take its initial weights from the global RNG). A rule without one must attach to
    both the MLP and LeNet.
``example_optimizer(parameters)`` (default ``Adam(lr=3e-3)``)
    The optimizer of the learning and determinism checks, built from
    ``learner.optimizer_parameters()``.
``plain_backward`` (default ``None``: True when the learner does not override ``Learner.step``)
    Whether a user's own loop — ``optimizer.zero_grad(); loss_fn(model(x), y).backward();
    optimizer.step(); scheduler.step()`` with the model attached and no ``learner.step`` —
    trains exactly as ``learner.step`` does (feedback-path rules).
``exact_gradients`` (default False)
    True only for backprop itself: the checks then do not ask for trained layers, nor for an
    ``estimate`` different from backprop's gradient.
a ``seed`` option
    A rule with one must train differently with another seed.

What every rule is checked for: attaches to the MLP, LeNet and the spiking models (or its
example model) without touching the global RNG; learns digits to >= 0.70 test accuracy after 12
epochs of batch-64 steps (chance is 0.10; backprop reaches ~0.95); same seed gives bit-identical
losses, weights and predictions (LeNet, snn-mlp), and a rule's ``seed`` option changes the
training; refuses an unsupported layer by path and type and leaves the model untouched;
attaching twice is refused until ``detach``; ``estimate`` changes no parameter, buffer or
existing ``.grad`` and (except for backprop) is not backprop's gradient; ``predict`` keeps the
training mode; ``detach`` restores the exact original outputs, gradients, parameters, hooks and
instance attributes; ``copy.deepcopy`` of an attached model is refused or independent; for
``plain_backward`` rules the user's own optimizer + LR scheduler + ``loss.backward()`` loop equals
``learner.step`` bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import unittest
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data, models
from . import rules as rules_mod
from .errors import ConfigError, UnsupportedModuleError
from .rules import Learner, Rule, default_loss
from .rules.base import ATTACHED_FLAG

__all__ = ["Check", "check_rule", "parametrize_with_rules", "rule_checks"]

INPUT_SHAPE = (1, 16, 16)
NUM_CLASSES = 10
BATCH = 64
EPOCHS = 12
MIN_ACCURACY = 0.70
#: The models every check that takes a model runs on.
KINDS = ("mlp", "lenet", "snn-mlp", "snn-cnn", "wrnn", "irnn")
#: Recurrent models (digits read row by row); a rule that refuses them at attach skips them.
RNN_KINDS = ("wrnn", "irnn")
#: The models of the learning check: snn-cnn is left out there (inference learning alone takes
#: ~50 s on it, and SoftHebb reaches 0.63 < 0.70 on it after 12 epochs; beyondbp's
#: tests/test_spiking.py trains it with backprop, fa and kp).
LEARN_KINDS = ("mlp", "lenet", "snn-mlp")
#: The models of the determinism check.
SEED_KINDS = ("lenet", "snn-mlp")
#: Spiking models (beyondbp.spiking): rules with ``handles_time_steps = False`` refuse them.
SPIKING_KINDS = ("snn-mlp", "snn-cnn")


# -- the checks, as data ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One contract check: ``check(rule_cls)`` runs it (with one torch CPU thread), raising
    :class:`AssertionError` when the rule breaks the contract and :class:`unittest.SkipTest` when
    the check turns out not to apply. ``name`` is e.g. ``"learns_digits[lenet]"``."""

    name: str
    function: Callable[..., None]
    kind: str | None = None

    def __call__(self, rule_cls: type[Rule]) -> None:
        _check_rule_class(rule_cls)
        with _one_thread():
            if self.kind is None:
                self.function(rule_cls)
            else:
                self.function(rule_cls, self.kind)

    def __repr__(self) -> str:
        return f"Check({self.name})"


def _accepted_kinds(rule_cls: type[Rule], kinds: list[str]) -> set[str]:
    """The kinds of :func:`standard_model` the rule attaches to (it refuses the others)."""
    accepted = set()
    with torch.random.fork_rng(devices=[]):  # building the models draws from the global RNG
        for kind in kinds:
            try:
                rule_cls().check_model(standard_model(kind))
                accepted.add(kind)
            except UnsupportedModuleError:
                pass
    return accepted


def _distinct(family: tuple[str, ...], kinds: list[str], accepted: set[str]) -> list[str]:
    """The kinds of a costly check family whose runs differ: every refused kind runs on the same
    example model, so only the family's first refused kind is kept."""
    out, example = [], False
    for kind in family:
        if kind not in kinds:
            continue
        if kind in accepted:
            out.append(kind)
        elif not example:
            out.append(kind)
            example = True
    return out


def rule_checks(rule_cls: type[Rule]) -> list[Check]:
    """Every contract check that applies to ``rule_cls``, judged from what the class declares
    (see the module docstring), in a fixed order."""
    _check_rule_class(rule_cls)
    kinds = [k for k in KINDS if rule_cls.handles_time_steps or k not in SPIKING_KINDS]
    out: list[Check] = []
    out += [Check(f"attaches[{k}]", check_attaches, k) for k in kinds]
    out.append(Check("attach_keeps_the_global_rng", check_attach_keeps_the_global_rng))
    out.append(Check("attaching_twice_is_refused_until_detached", check_attaching_twice_is_refused_until_detached))
    if rule_cls.refuses_unknown:
        out.append(Check("refuses_an_unsupported_layer", check_refuses_an_unsupported_layer))
    else:
        out.append(Check("attaches_to_any_module", check_attaches_to_any_module))
    accepted = _accepted_kinds(rule_cls, kinds)
    out += [Check(f"learns_digits[{k}]", check_learns_digits, k) for k in _distinct(LEARN_KINDS, kinds, accepted)]
    out += [Check(f"same_seed_same_numbers[{k}]", check_same_seed_same_numbers, k) for k in _distinct(SEED_KINDS, kinds, accepted)]
    if "seed" in rule_cls.option_names():
        out.append(Check("rule_seed_changes_the_training", check_rule_seed_changes_the_training))
    out += [Check(f"estimate_changes_nothing[{k}]", check_estimate_changes_nothing, k) for k in kinds]
    if not rule_cls.exact_gradients:
        out.append(Check("estimate_is_not_backprop", check_estimate_is_not_backprop))
    out.append(Check("predict_keeps_the_training_mode", check_predict_keeps_the_training_mode))
    out += [Check(f"detach_restores_the_model[{k}]", check_detach_restores_the_model, k) for k in kinds]
    out.append(Check("deep_copy_is_refused_or_independent", check_deep_copy_is_refused_or_independent))
    if rule_cls.plain_backward is not False:
        out.append(Check("users_own_loop", check_users_own_loop))
    return out


def check_rule(rule_cls: type[Rule], *, only: Iterable[str] | None = None) -> dict[str, str]:
    """Run every contract check that applies to ``rule_cls`` (a :class:`beyondbp.rules.Rule`
    subclass; it need not be registered) and return ``{check name: "passed" | "skipped: why"}``.

    Every check runs even after one failed; then one :class:`AssertionError` names each failing
    check with its message (the first failure is its ``__cause__``). ``only`` restricts the run
    to the named checks (``"learns_digits"`` selects every model, ``"learns_digits[mlp]"`` one).
    Learning checks train for real: all checks of one rule take minutes on one CPU thread.

    Args:
        rule_cls: the rule class to check.
        only: names of checks to run instead of all (``rule_checks(rule_cls)`` lists them).

    Returns:
        Each check's name mapped to ``"passed"`` or ``"skipped: <why>"``.

    Raises:
        AssertionError: naming every check that failed.
        ConfigError: ``only`` names a check that does not apply.
    """
    selected = rule_checks(rule_cls)
    if only is not None:
        wanted = [only] if isinstance(only, str) else list(only)
        known = {c.name for c in selected} | {c.name.split("[")[0] for c in selected}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ConfigError(
                f"no check named {', '.join(map(repr, unknown))} applies to rule class {rule_cls.__name__}; "
                f"its checks are {', '.join(c.name for c in selected)}"
            )
        selected = [c for c in selected if c.name in wanted or c.name.split("[")[0] in wanted]
    results: dict[str, str] = {}
    failures: list[tuple[str, BaseException]] = []
    for check in selected:
        try:
            check(rule_cls)
        except unittest.SkipTest as skip:
            results[check.name] = f"skipped: {skip}"
        except Exception as exc:  # an error is a failed check too, named like one
            failures.append((check.name, exc))
            results[check.name] = "failed"
        else:
            results[check.name] = "passed"
    if failures:
        lines = [f"  check '{name}' failed: {type(exc).__name__}: {exc}".rstrip() for name, exc in failures]
        raise AssertionError(
            f"rule class {rule_cls.__name__} ('{rule_cls.name}') fails {len(failures)} of {len(selected)} "
            "contract checks:\n" + "\n".join(lines)
        ) from failures[0][1]
    return results


def parametrize_with_rules(rules: Iterable[type[Rule] | str] | None = None) -> Any:
    """A ``pytest.mark.parametrize`` over ``(rule, check)``: every contract check that applies to
    each rule class (or registered name; default: every registered rule), with test ids like
    ``fa-learns_digits[mlp]``. The test calls ``check(rule)``. Needs pytest (imported here)."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - exercised in a subprocess without pytest
        raise ImportError(
            "beyondbp.testing.parametrize_with_rules needs pytest (pip install pytest); "
            "check_rule runs the same checks without it"
        ) from None
    classes = [
        rules_mod.rule_class(r) if isinstance(r, str) else r
        for r in (rules_mod.names() if rules is None else rules)
    ]
    params, ids = [], []
    for cls in classes:
        for check in rule_checks(cls):
            params.append((cls, check))
            ids.append(f"{cls.name or cls.__name__}-{check.name}")
    return pytest.mark.parametrize(("rule", "check"), params, ids=ids)


# -- helpers ------------------------------------------------------------------------------------------
def _check_rule_class(rule_cls: Any) -> None:
    if not (isinstance(rule_cls, type) and issubclass(rule_cls, Rule)):
        raise ConfigError(f"the rule checks take a subclass of beyondbp.rules.Rule, got {rule_cls!r}")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Small models run fastest on one thread (and the results do not depend on the machine's
    core count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.lru_cache(maxsize=1)
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` of ``digits`` upsampled to 1x16x16."""
    ds = data.load("digits")
    up = lambda x: F.interpolate(x.float(), scale_factor=2, mode="nearest")  # noqa: E731
    return up(ds.x_train), ds.y_train, up(ds.x_test), ds.y_test


_STANDARD = {"mlp": {"widths": (128, 128)}, "snn-mlp": {"T": 4, "widths": (128,)}, "snn-cnn": {"T": 4}, "lenet": {},
             "wrnn": {"channels": 4, "ring": 16}, "irnn": {"hidden": 32}}


def standard_model(kind: str) -> nn.Module:
    kind = kind if kind in _STANDARD else "lenet"
    return models.build(kind, INPUT_SHAPE, NUM_CLASSES, **_STANDARD[kind])


def _skip_if_refused(rule_cls: type[Rule], kind: str) -> None:
    """Rules that declare they do not handle time steps refuse the spiking models; the other
    checks do not apply to them there (:func:`rule_checks` leaves these out)."""
    if kind in SPIKING_KINDS and not rule_cls.handles_time_steps:
        raise unittest.SkipTest(f"rule {rule_cls.name} refuses spiking models (handles_time_steps = False)")
    if kind in RNN_KINDS:  # a refusal at attach, or at the first step (softhebb: a layer run T times)
        with torch.random.fork_rng(devices=[]):
            try:
                rule_cls().attach(standard_model(kind)).estimate((digits()[0][:2], digits()[1][:2]))
            except (UnsupportedModuleError, ConfigError) as exc:
                raise unittest.SkipTest(f"rule {rule_cls.name} refuses the recurrent model {kind}: {exc}") from None


def _example_model(rule_cls: type[Rule], model_seed: int, refusal: UnsupportedModuleError) -> nn.Module:
    torch.manual_seed(model_seed)
    model = rule_cls.example_model(INPUT_SHAPE, NUM_CLASSES)
    if model is None:
        raise refusal
    return model


def attached(rule_cls: type[Rule], kind: str, model_seed: int = 0, **options: Any) -> tuple[nn.Module, Learner]:
    """(model, learner): the checks' model of ``kind``, or the rule's example model if the rule
    refuses it and offers one. ``options`` go to the rule."""
    _skip_if_refused(rule_cls, kind)
    rule = rule_cls(**options)
    torch.manual_seed(model_seed)
    model = standard_model(kind)
    try:
        return model, rule.attach(model)
    except UnsupportedModuleError as exc:
        model = _example_model(rule_cls, model_seed, exc)
    return model, rule.attach(model)


def unattached(rule_cls: type[Rule], kind: str, model_seed: int = 0) -> nn.Module:
    """The model ``attached(rule_cls, kind, model_seed)`` uses, built fresh and not attached."""
    _skip_if_refused(rule_cls, kind)
    torch.manual_seed(model_seed)
    model = standard_model(kind)
    try:
        rule_cls().check_model(model)
        return model
    except UnsupportedModuleError as exc:
        return _example_model(rule_cls, model_seed, exc)


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
