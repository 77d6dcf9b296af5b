"""Starting a run from a checkpoint (``init_from``): the run's optimizer, and what of the
checkpoint's model, rule state and optimizer state it takes.

:func:`start_optimizer` builds the optimizer over the learner's parameters and, with
``init_from``, loads the checkpoint: everything when it was trained by the same rule (the
optimizer state only when it fits this run's optimizer and parameters), the weights alone when
another rule trained it (:func:`init_from_other_rule`). The config's hyperparameters always win
over the checkpoint's. Split out of :mod:`beyondbp.training.loop`, which calls it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import rules as rules_mod
from .components import make_optimizer
from .config import RunConfig

__all__ = ["init_from_other_rule", "start_optimizer"]


def start_optimizer(
    config: RunConfig, model: nn.Module, learner: rules_mod.Learner
) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    """The run's optimizer over the learner's parameters and, with ``init_from``, the model,
    rule state and (when compatible) optimizer state loaded from that checkpoint, plus the
    record of what was loaded. The config's hyperparameters always win over the checkpoint's."""
    optimizer = make_optimizer(config, learner.optimizer_parameters())
    if config.init_from is None:
        return optimizer, {}
    record: dict[str, Any] = {"path": str(config.init_from)}
    payload = ckpt.read(config.init_from)  # read once: inspected here, loaded below
    saved_state = payload.get("optimizer")
    other_rule = init_from_other_rule(payload, config)
    reason = _optimizer_mismatch(saved_state, optimizer)
    if other_rule is not None:
        # another rule's state (KP's learned feedback, DFA's B, ...) is not this rule's: weights only
        meta = ckpt.load(payload, model, weights_only=True)
        record["loaded"] = "weights only"
        record["checkpoint_rule"] = other_rule
        record["rule_state"] = (
            f"not loaded: the checkpoint was trained by rule '{other_rule}', this run's rule '{config.rule}' "
            "starts with its own state"
        )
        record["optimizer_state"] = f"not loaded: the checkpoint was trained by rule '{other_rule}'"
    elif reason is None:
        chosen = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        meta = ckpt.load(payload, model, learner, optimizer)
        for group, settings in zip(optimizer.param_groups, chosen):
            # what the user asked for, not what the checkpoint ran with (nor its scheduler's
            # ``initial_lr``, which a new LR schedule would otherwise start from)
            for key in [k for k in group if k != "params" and k not in settings]:
                del group[key]
            group.update(settings)
        record["loaded"] = "weights and rule state"
        record["optimizer_state"] = "loaded"
    else:
        meta = ckpt.load(payload, model, learner)
        record["loaded"] = "weights and rule state"
        record["optimizer_state"] = f"not loaded: {reason}"
    saved_config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    record["checkpoint_optimizer"] = {k: saved_config[k] for k in ("optimizer", "lr", "momentum", "weight_decay") if k in saved_config}
    return optimizer, record


def init_from_other_rule(payload: Mapping[str, Any], config: RunConfig) -> str | None:
    """The rule that trained an ``init_from`` checkpoint when it is not ``config.rule`` (then only
    the weights are loaded), else None (also when the checkpoint does not name its rule)."""
    saved = payload["meta"].get("rule")
    return saved if isinstance(saved, str) and saved != config.rule else None


def _optimizer_mismatch(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    """Why a checkpoint's optimizer state cannot seed ``optimizer`` (None when it can)."""
    if not saved:
        return "the checkpoint holds no optimizer state"
    ours = optimizer.state_dict()["param_groups"]
    theirs = saved.get("param_groups", [])
    if len(ours) != len(theirs) or any(len(a["params"]) != len(b["params"]) for a, b in zip(ours, theirs)):
        return "it was saved for different parameters"

    def keys(groups: list[dict[str, Any]]) -> list[list[str]]:
        return [sorted(k for k in g if k not in ("params", "initial_lr")) for g in groups]

    if keys(ours) != keys(theirs) or any(
        a.get("decoupled_weight_decay") != b.get("decoupled_weight_decay") for a, b in zip(ours, theirs)
    ):
        return f"it was saved by a different optimizer than this run's {type(optimizer).__name__}"
    return None
