"""Credit-assignment rules, registered by name.

>>> import beyondbp as bbp
>>> rule = bbp.rules.get("dfa", seed=1)
>>> learner = rule.attach(model)              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .backprop import Backprop
from .base import Learner, Rule, default_loss
from .dfa import DFA
from .drtp import DRTP
from .elm_online import ELMOnline
from .feedback_alignment import BRSF, FA, FRSF, KP, USF
from .forward_forward import FF
from .il import IL
from .nalsm import NALSM, STDP
from .ottt import OTTT
from .pfa import PFA
from .softhebb import SoftHebb

_REGISTRY: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Add a rule class to the registry under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ConfigError(f"rule class {cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigError(f"a different rule is already registered as '{cls.name}'")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Every registered rule name, backprop first."""
    return sorted(_REGISTRY, key=lambda n: (n != "backprop", n))


def rule_class(name: str) -> type[Rule]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown rule {name!r}; registered rules: {', '.join(names())}") from None


def get(name: str, **options: Any) -> Rule:
    """A configured rule; ``options`` are checked against the rule's declared ``Options``
    (one-sentence :class:`ConfigError` for an unknown option or a bad value).

    Args:
        name: a registered rule name (:func:`names` lists them).
        **options: the rule's options (``beyondbp rules --options NAME`` lists them); ``seed``
            is accepted by every rule, and ignored by those without randomness.

    Returns:
        The rule; ``rule.attach(model)`` gives the learner that trains ``model`` with it.
    """
    return rule_class(name)(**options)


def describe() -> list[dict[str, str]]:
    """Name, family, one-line summary and paper of every rule."""
    return [
        {"name": n, "family": _REGISTRY[n].family, "summary": _REGISTRY[n].summary, "paper": _REGISTRY[n].paper}
        for n in names()
    ]


for _cls in (Backprop, FA, USF, BRSF, FRSF, KP, DFA, DRTP, PFA):
    register(_cls)
register(OTTT)  # online rule for spiking models (memory constant in the number of time steps)
register(ELMOnline)  # online rule for the ELM's leaky memory (memory constant in T)
for _cls in (FF, IL, SoftHebb):  # local rules: Forward-Forward, inference learning, SoftHebb
    register(_cls)
for _cls in (STDP, NALSM):  # plasticity of a spiking liquid (model lsm)
    register(_cls)

__all__ = ["Learner", "Rule", "default_loss", "describe", "get", "names", "register", "rule_class"]
