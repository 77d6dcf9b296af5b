"""The learning gate: parameters that must not learn at a step, whatever the rule.

A scheduled data set (:class:`~beyondbp.data.ScheduledDataset`) may name, for each step,
parameter-name prefixes that do not learn there (``frozen(step)``; e.g. ``hierarchy``'s pathway
deficit, ``paths.b``), and all the prefixes it may ever name (``gated``). A prefix names a
parameter of the model when it is the parameter's full name or a leading run of its dotted
parts (``paths.b`` names ``paths.b.fc1.weight`` and a rule's ``paths.b.fc1.bbp_feedback`` — KP's
learned feedback — but not ``paths.bb.fc1.weight``).

How the gate holds for every rule. The rule computes its update as usual (backprop's gradient,
FA's or KP's feedback path, DFA's projected error written into ``.grad``, …); when it calls
``optimizer.step()``, the gate first sets ``.grad = None`` on every frozen parameter. Every torch
optimizer skips a parameter without a gradient entirely — no step, no momentum or Adam moment
update, no weight decay, no step count — so a frozen parameter and its optimizer state are left
bit for bit as they were, for SGD with or without momentum and weight decay, Adam, AdamW and
Adadelta alike (for plain SGD this is exactly the authors' ``detach`` of the pathway's output:
the other parameters' gradients do not depend on it). After the step the gate checks that the
frozen parameters did not move; a rule that writes weights outside the optimizer (a Hebbian
phase) would move them, and the run stops with a :class:`~beyondbp.errors.ConfigError` saying
the gate cannot hold for that rule, rather than report a deficit that did not happen.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.linear import PATHWAY_NAMES
from ..rules.base import is_rule_tensor

__all__ = ["LearningGate", "make_gate", "matches"]


def matches(name: str, prefix: str) -> bool:
    """Whether ``prefix`` names parameter ``name`` (itself, or a leading run of its dotted parts)."""
    return name == prefix or name.startswith(prefix + ".")


def _names_none(owner: str, prefix: str, names: list[str]) -> str:
    """The sentence for a gated ``prefix`` that names none of the model's parameters ``names``:
    what the model has at the deepest level the prefix does reach (its pathways for
    ``paths.c`` on a two-pathway model), and how to get the pathway the prefix asks for."""
    parts = prefix.split(".")
    depth = next((k for k in range(len(parts) - 1, 0, -1) if any(matches(n, ".".join(parts[:k])) for n in names)), 0)
    base = ".".join(parts[:depth])
    has = list(dict.fromkeys(".".join(n.split(".")[:depth + 1]) for n in names if not base or matches(n, base)))
    shown = ", ".join(repr(h) for h in has[:8]) + (", ..." if len(has) > 8 else "")
    where = f"under {base!r} it has {shown}" if base else f"its parameters are under {shown}"
    text = (f"{owner} freezes the parameters named {prefix!r}, but the model has none ({where}); "
            "name one of those or a parameter's full name")
    pathway = len(parts) == 2 and parts[0] == "paths" and len(parts[1]) == 1 and parts[1] in PATHWAY_NAMES
    needed = max(2, PATHWAY_NAMES.index(parts[1]) + 1) if pathway else 2
    if base != "paths" and not any(matches(n, "paths") for n in names):
        return text + f"; for the pathway deficit use model 'deep-linear' with pathways >= {needed}"
    if pathway and base == "paths":
        return text + f", or give model 'deep-linear' pathways >= {needed}"
    return text


class LearningGate:
    """The gate of one run over ``model``'s parameters; ``gated`` are all the prefixes the data
    may freeze (each must name at least one parameter), ``owner`` names the data in messages."""

    def __init__(self, model: nn.Module, gated: Iterable[str], owner: str) -> None:
        self.owner = owner
        named = list(model.named_parameters())
        self._params: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for prefix in gated:
            hits = [(n, p) for n, p in named if matches(n, prefix)]
            if not hits:
                raise ConfigError(_names_none(owner, prefix, [n for n, _ in named if not is_rule_tensor(n)]))
            self._params[prefix] = hits

    def parameters(self, prefixes: Iterable[str]) -> list[tuple[str, nn.Parameter]]:
        """The (name, parameter) pairs the prefixes name, each once."""
        seen: dict[int, tuple[str, nn.Parameter]] = {}
        for prefix in prefixes:
            for name, p in self._params[prefix]:
                seen.setdefault(id(p), (name, p))
        return list(seen.values())

    def around(self, optimizer: Any, prefixes: tuple[str, ...]) -> "_Gated":
        """``optimizer`` for one step in which the parameters ``prefixes`` name do not learn."""
        return _Gated(self, optimizer, self.parameters(prefixes))


class _Gated:
    """The run's optimizer for one gated step: ``step`` drops the frozen parameters' gradients
    first; :meth:`check` (after the rule's step) verifies that they did not move."""

    def __init__(self, gate: LearningGate, optimizer: Any, frozen: list[tuple[str, nn.Parameter]]) -> None:
        self._gate, self._optimizer, self._frozen = gate, optimizer, frozen
        self._before: list[Tensor] = [p.detach().clone() for _, p in frozen]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)

    def step(self, closure: Any = None) -> Any:
        for _, p in self._frozen:
            p.grad = None
        return self._optimizer.step(closure)

    @torch.no_grad()
    def check(self, rule: str) -> None:
        for (name, p), before in zip(self._frozen, self._before):
            if not torch.equal(p.detach(), before):
                raise ConfigError(
                    f"rule {rule!r} changed {name!r} while {self._gate.owner} freezes it: the rule writes weights "
                    "outside the optimizer, so the learning gate cannot hold for it; use a rule that learns through "
                    "the optimizer (backprop, fa, dfa, kp, usf, ...)"
                )


def make_gate(dataset: Any, model: nn.Module, owner: str, config: Any = None) -> LearningGate | None:
    """The run's gate when its data set freezes parameters at some step (``gated``), else None;
    :class:`ConfigError` when a prefix names no parameter of ``model``, or when ``config`` asks
    for SET sparsity that rewires (``zeta > 0``): its prune-and-regrow changes weights outside
    the optimizer, the frozen ones included."""
    gated = tuple(getattr(dataset, "gated", ()) or ())
    if not gated:
        return None
    gate = LearningGate(model, gated, owner)
    if config is not None and getattr(config, "sparsity", None) == "set" and (config.zeta or 0) > 0:
        raise ConfigError(
            f"sparsity 'set' with zeta={config.zeta} would rewire the parameters {owner} freezes "
            f"({', '.join(map(repr, gated))}) while they are frozen; use zeta=0 (static sparse) or no sparsity"
        )
    return gate

