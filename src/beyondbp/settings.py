"""A run's settings, declared once: :class:`RunSettings` lists every setting of a run — type,
default, one line of help, bounds, what it accepts in words, and whether it is an execution
setting (how a run executes, not what it computes: left out of a run's identity). Everything
else reads these declarations:

* :class:`beyondbp.training.RunConfig` (the validated config of one run) is a ``RunSettings``
  with the checks that need the registries of rules, models and data sets;
* :data:`ALLOWED` (error messages), :data:`EXECUTION_FIELDS`, :data:`NUMBER_KIND`;
* the command line's shared flags, their help and their defaults (``beyondbp train --help``);
* a study spec's ``[base]``, ``[axes]`` and ``[execution]`` keys.

This module needs only pydantic, so that the command line can build its flags without
importing torch.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from . import options as options_mod
from .errors import ConfigError
from .options import opt

__all__ = ["ALLOWED", "EXECUTION_FIELDS", "MAX_COUNT", "NUMBER_KIND", "RunSettings", "check_count", "within"]

#: Upper bound of every count setting (batch sizes, budgets, sample counts): beyond it Python's
#: own indexing breaks, long before any machine could run it.
MAX_COUNT = 2**40

_COUNT = "a whole number of at least 1"


def check_count(value: Any, what: str, accepts: str = _COUNT, low: int = 1) -> int:
    """``value`` as a count bounded as a run bounds its own (batch sizes, budgets, sample
    counts): a whole number from ``low`` to :data:`MAX_COUNT`. Otherwise :class:`ConfigError`:
    "invalid <what> <value>: it must be <accepts>" (or "at most 2**40"). The command line checks
    its own count flags (``continual``, ``adapt``, ``sample``) with it.

    Args:
        value: the count to check (an integral float such as ``3.0`` is accepted).
        what: the setting's name, for the message.
        accepts: what the setting accepts, in words, for the message.
        low: the smallest count allowed.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"invalid {what} {value!r}: it must be {accepts}")
    value = int(value)
    if value > MAX_COUNT:
        raise ConfigError(f"invalid {what} {value!r}: it must be at most 2**40")
    if value < low:
        raise ConfigError(f"invalid {what} {value!r}: it must be {accepts}")
    return value


class RunSettings(BaseModel):
    """The declarations of a run's settings (see the module docstring); validated by
    :class:`beyondbp.training.RunConfig`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_default=False)

    # Each setting is declared once, here: type, default, one line of help, bounds, and
    # ``execution=True`` for settings that say how a run executes rather than what it computes
    # (they are left out of :meth:`identity`). :data:`ALLOWED`, :data:`EXECUTION_FIELDS`, the
    # validators below, the command line's shared flags and the study spec's checks all read
    # these declarations.
    rule: str = opt("backprop", "the credit-assignment rule (`beyondbp rules` lists them)", accepts="a registered rule name")
    rule_options: dict[str, Any] = opt({}, "the rule's options", accepts="a mapping of option name to value")
    model: str = opt(..., "the model (`beyondbp models` lists them)", accepts="a registered model name")
    model_options: dict[str, Any] = opt({}, "the model's options", accepts="a mapping of option name to value")
    data: str = opt(..., "the data set (`beyondbp data` lists them)", accepts="a registered data set name")
    data_dir: str | None = opt(None, "directory of the data set's files (default: its standard place)",
                               accepts="a directory path or nothing", execution=True)
    data_options: dict[str, Any] = opt({}, "the data set's options", accepts="a mapping of option name to value")
    epochs: int | None = opt(None, "training budget in passes over the training set (default 10 when no budget is given)",
                             ge=1, le=MAX_COUNT, accepts=_COUNT)
    steps: int | None = opt(None, "training budget in optimizer steps (instead of epochs)", ge=1, le=MAX_COUNT, accepts=_COUNT)
    batch_size: int = opt(64, "training batch size", ge=1, le=MAX_COUNT, accepts=_COUNT)
    eval_batch_size: int = opt(1000, "batch size of evaluation passes (changes no number beyond float rounding)",
                               ge=1, le=MAX_COUNT, accepts=_COUNT, execution=True)
    optimizer: Literal["sgd", "adam", "adamw", "adadelta"] = opt("adam", "the optimizer",
                                                                accepts="one of 'sgd', 'adam', 'adamw', 'adadelta'")
    lr: float = opt(1e-3, "learning rate", gt=0, accepts="a finite number greater than 0")
    momentum: float = opt(0.9, "SGD momentum (used by optimizer sgd only)", ge=0, lt=1, accepts="a number in [0, 1)")
    weight_decay: float = opt(0.0, "weight decay", ge=0, accepts="a finite number of at least 0")
    lr_schedule: Literal["none", "step", "cosine"] = opt("none", "learning-rate schedule over the budget",
                                                         accepts="one of 'none', 'step', 'cosine'")
    milestones: list[float] = opt([0.5, 0.75], "fractions of the budget at which the step schedule multiplies the rate by gamma",
                                  accepts="a list of increasing fractions of the budget, each strictly between 0 and 1")
    gamma: float = opt(0.1, "the step schedule's factor", gt=0, le=1, accepts="a number in (0, 1]")
    seed: int = opt(0, "seed of everything random in the run", ge=0, le=2**32 - 1, accepts="a whole number from 0 to 2**32 - 1")
    n_train: int | None = opt(None, "use the first N training samples (default: all)", ge=1, le=MAX_COUNT,
                              accepts="a whole number of at least 1, or nothing for all samples")
    n_test: int | None = opt(None, "use the first N test samples (default: all)", ge=1, le=MAX_COUNT,
                             accepts="a whole number of at least 1, or nothing for all samples")
    diagnostics: bool = opt(False, "measure each epoch how the rule's update aligns with backprop's (never changes training)",
                            accepts="true or false", execution=True)
    checkpoint: str | None = opt(None, "save the trained model there at the end", accepts="a file path or nothing", execution=True)
    init_from: str | None = opt(None, "start from this checkpoint's model and rule state", accepts="a file path or nothing")
    device: str = opt("cpu", "where to train", accepts="'cpu', 'cuda', 'cuda:N' or 'mps'", execution=True)
    threads: int | None = opt(1, "torch threads during the run (nothing: torch's own setting)", ge=1, le=MAX_COUNT,
                              accepts="a whole number of at least 1, or nothing to keep torch's setting", execution=True)
    sparsity: Literal["set"] | None = opt(None, "sparse evolutionary training (SET) of the weight layers",
                                          accepts="'set' or nothing (dense)")
    epsilon: float = opt(20.0, "SET: density parameter (connections per layer ~ epsilon·(n_in + n_out))", gt=0,
                         accepts="a finite number greater than 0")
    zeta: float = opt(0.3, "SET: fraction of connections pruned and regrown after each epoch", ge=0, lt=1,
                      accepts="a number in [0, 1)")
    lr_control: Literal["none", "homeostatic", "random"] = opt(
        "none", "learning-rate controller around the optimizer step (homeostatic: Man, Damasio & Neven's rule; random: "
        "its random-nudge control)", accepts="one of 'none' (a fixed rate), 'homeostatic', 'random'")
    lr_control_interval: int = opt(10, "training samples between two decisions of lr_control", ge=1, le=MAX_COUNT, accepts=_COUNT)
    lr_control_memory: int = opt(20, "recent training samples each choice of lr_control='homeostatic' is scored on",
                                 ge=1, le=MAX_COUNT, accepts=_COUNT)
    lr_control_step: float = opt(0.1, "size of an lr_control move, as a fraction of lr", gt=0, le=1, accepts="a number in (0, 1]")
    lr_control_floor: float = opt(1e-8, "smallest learning rate lr_control may set", gt=0,
                                  accepts="a finite number greater than 0")
    tokens: int | None = opt(None, "a language model's training budget in tokens", ge=1, le=MAX_COUNT,
                             accepts="a whole number of at least 1 (a language model's training budget), or nothing")
    context: int | None = opt(None, "tokens per training window of a language model", ge=1, le=MAX_COUNT,
                              accepts="a whole number of at least 1 (tokens per training window of a language model), or nothing")
    eval_windows: int | None = opt(None, "validation windows of a language model (default: the whole validation split)",
                                   ge=1, le=MAX_COUNT, accepts="a whole number of at least 1, or nothing for the whole validation split")
    evals_per_epoch: int = opt(1, "evaluations of the test set per epoch, evenly spaced in its steps, the last at its end "
                               "(classification data; each epoch's are listed in its history entry's evals)",
                               ge=1, le=MAX_COUNT, accepts="a whole number of at least 1", identity_default=True)
    state: str | None = opt(None, "file where the run keeps its resume state",
                            accepts="a file path (where the run keeps its resume state) or nothing",
                            execution=True)
    feature_cache: str | None = opt(None, "directory of cached liquid features (model lsm; default: $BEYONDBP_CACHE/lsm-features "
                                    "or ~/.cache/beyondbp/lsm-features; a study's: beside its store)",
                                    accepts="a directory path or nothing", execution=True)
    feature_workers: int | None = opt(None, "processes that generate a liquid's features (model lsm; same features "
                                      "whatever the number; default: 2 on a machine with 2 cores or more, 1 for small runs "
                                      "and inside a study's workers)", ge=1, le=MAX_COUNT,
                                      accepts="a whole number of at least 1, or nothing to let the run choose", execution=True)
    checkpoint_every: int | None = opt(None, "write the resume state every N optimizer steps (needs state)", ge=1, le=MAX_COUNT,
                                       accepts="a whole number of optimizer steps of at least 1 (needs state), or nothing",
                                       execution=True)


#: The kind of number each numeric setting holds (``int`` or ``float``), read off the declarations.
NUMBER_KIND: dict[str, type] = {
    name: kind
    for name, field in RunSettings.model_fields.items()
    for kind in (int, float)
    if field.annotation in (kind, kind | None)
}
#: What each setting accepts, in words (error messages, the CLI's help), read off the declarations.
ALLOWED: dict[str, str] = {name: options_mod.accepts(RunSettings, name) for name in RunSettings.model_fields}
#: Settings that say how a run executes, not what it computes; left out of a run's identity
#: (:meth:`beyondbp.training.RunConfig.identity`). ``eval_batch_size`` only groups the
#: evaluation's samples (its numbers agree up to float rounding); ``diagnostics`` are measured
#: without changing training.
EXECUTION_FIELDS = frozenset(options_mod.execution_names(RunSettings))


def within(value: float, metadata: list[Any]) -> bool:
    """Whether ``value`` meets the declared bounds (pydantic's ``Ge``/``Gt``/``Le``/``Lt``)."""
    for m in metadata:
        for attr, ok in (("ge", value.__ge__), ("gt", value.__gt__), ("le", value.__le__), ("lt", value.__lt__)):
            bound = getattr(m, attr, None)
            if type(m).__name__ == attr.capitalize() and bound is not None and not ok(bound):
                return False
    return True
