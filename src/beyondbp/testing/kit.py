"""The checks as data: :class:`Check`, :func:`rule_checks` (which apply to a rule class),
:func:`check_rule` (run them) and :func:`parametrize_with_rules` (one pytest test each); see
:mod:`beyondbp.testing`."""

from __future__ import annotations

import contextlib
import unittest
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

from .. import rules as rules_mod
from ..errors import ConfigError, UnsupportedModuleError
from ..rules import Rule
from .checks import (
    check_attach_keeps_the_global_rng,
    check_attaches,
    check_attaches_to_any_module,
    check_attaching_twice_is_refused_until_detached,
    check_deep_copy_is_refused_or_independent,
    check_detach_restores_the_model,
    check_estimate_changes_nothing,
    check_estimate_is_not_backprop,
    check_learns_digits,
    check_predict_keeps_the_training_mode,
    check_refuses_an_unsupported_layer,
    check_rule_seed_changes_the_training,
    check_same_seed_same_numbers,
    check_users_own_loop,
)
from .kinds import KINDS, LEARN_KINDS, OWN_KINDS, SEED_KINDS, SPIKING_KINDS, standard_model

__all__ = ["Check", "check_rule", "parametrize_with_rules", "rule_checks"]


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
    example model, so only the family's first refused kind is kept (a refused kind of
    :data:`OWN_KINDS` runs nothing: it is kept, a skip that gives the rule's refusal)."""
    out, example = [], False
    for kind in family:
        if kind not in kinds:
            continue
        if kind in accepted or kind in OWN_KINDS:
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
