"""What a run is: :class:`RunConfig` (its settings, validated), its identity and id, and
:class:`RunResult` (what it produced).

Identity and execution. A run's settings fall in two sets:

* the settings that define its result — rule and its options, model and its options, data set
  and its options, budget (``epochs``, ``steps`` or ``tokens``), batch size, optimizer and its
  hyperparameters, learning-rate schedule, seed, sparsity, ``n_train``/``n_test``, a language
  model's ``context`` and ``eval_windows``, ``init_from``;
* the execution settings (:data:`EXECUTION_FIELDS`), which only say how and where it runs:
  ``device``, ``threads``, ``eval_batch_size``, ``diagnostics``, where data and outputs live
  (``data_dir``, ``checkpoint``) and resumption (``state``, ``checkpoint_every``). Data-set
  options declared ``execution=True`` (mnist1d's ``cache`` and ``cache_dir``: where a cache
  lives) and rule options declared so are execution settings too.

:meth:`RunConfig.identity` is the first set in a canonical form: execution settings removed, the
rule's, model's and data set's options completed with their defaults, the rule's ``seed`` filled
in from the run's seed, ``momentum`` dropped (``None``) unless ``optimizer="sgd"`` uses it, run
settings declared ``identity_default=True`` (added after runs were stored, e.g. ``evals_per_epoch``)
left out at their default, all values plain JSON types. :attr:`RunConfig.run_id` is the first 16 hex digits of the SHA-256 of
that identity written as JSON with sorted keys and no spaces (``json.dumps(identity,
sort_keys=True, separators=(",", ":"))``). Two configs that train the same thing therefore have
the same id on any machine and in any process, however they were written; any setting that can
change a result changes the id. Changing the canonical form changes every id (and so breaks the
link between existing run stores and their runs): do it only deliberately.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
from pydantic import ValidationError, field_validator, model_validator

from .. import data as data_mod
from .. import files
from .. import models as models_mod
from .. import options as options_mod
from .. import rules as rules_mod
from ..errors import ConfigError
from ..jsonable import plain
from ..settings import ALLOWED, EXECUTION_FIELDS, MAX_COUNT, NUMBER_KIND, RunSettings, check_count, within

__all__ = [
    "ALLOWED",
    "EXECUTION_FIELDS",
    "INDEPENDENT_SETTINGS",
    "LM_CURVE_WINDOWS",
    "LM_DEFAULT_CONTEXT",
    "LM_DEFAULT_TOKENS",
    "LM_EVALS",
    "MAX_COUNT",
    "RunConfig",
    "RunResult",
    "canonical_rule_options",
    "check_count",
    "effective_data_options",
    "effective_rule_options",
    "lm_context",
]

#: Settings whose validity depends on their own value only and that enter a run's identity only as
#: themselves, save ``seed``, which also fills the rule's ``seed`` option (see
#: :func:`effective_rule_options`) and is read by SET sparsity's check: no check of
#: :class:`RunConfig` relates them to another setting. A study's planning
#: (:mod:`beyondbp.study.spec`) relies on it to validate each of their values once instead of
#: once per combination; a check that reads one of them must take it out of this list.
INDEPENDENT_SETTINGS = ("lr", "weight_decay", "batch_size", "seed")

#: Language-model runs: default token budget, default context, evaluation points and the
#: validation windows used at intermediate evaluation points.
#: The learning-rate controller's settings (:mod:`beyondbp.training.lr_control`); left out of a
#: run's identity while ``lr_control`` is off.
LR_CONTROL_FIELDS = ("lr_control", "lr_control_interval", "lr_control_memory", "lr_control_step", "lr_control_floor")

LM_DEFAULT_TOKENS = 1_000_000
LM_DEFAULT_CONTEXT = 128
LM_EVALS = 10
LM_CURVE_WINDOWS = 64

def _describe_validation_error(exc: ValidationError) -> str:
    """One sentence for the first problem pydantic found."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err.get("loc", ())]
    field_name = loc[0] if loc else ""
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        allowed = ", ".join(RunConfig.model_fields)
        return f"unknown run setting {field_name!r}; allowed settings are: {allowed}"
    if kind == "value_error":
        error = err.get("ctx", {}).get("error")
        if error is not None:
            return str(error)
        return str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "missing":
        return f"the run setting {field_name!r} is required ({ALLOWED.get(field_name, 'see RunConfig')})"
    where = ".".join(loc) if loc else "run config"
    got = err.get("input")
    return f"invalid {where} {got!r}: it must be {ALLOWED.get(field_name, 'valid')}"



class RunConfig(RunSettings):
    """Everything that defines one run. Invalid values raise :class:`ConfigError` (one sentence).

    Give ``epochs`` or ``steps`` (optimizer steps), not both; with neither, ``epochs=10``.
    ``momentum`` is used by ``optimizer="sgd"`` only. ``milestones`` and ``gamma`` are used by
    ``lr_schedule="step"`` only. ``checkpoint`` is where the trained model is saved at the end
    (not after a diverged run); ``init_from`` is a checkpoint whose model and rule state are
    loaded before training — only its weights when another rule trained it (its rule state,
    e.g. KP's learned feedback, is not this rule's; the new rule starts with its own). Its
    optimizer state (momentum buffers, Adam moments) is loaded too
    when it was saved by the same kind of optimizer over the same parameters; the run's own
    ``optimizer``, ``lr``, ``momentum`` and ``weight_decay`` are always the ones used — the
    checkpoint's never replace them — and the result's ``init_from`` records what was loaded.
    ``threads`` (default 1) sets ``torch.set_num_threads`` for the duration of the run and
    restores it after; ``None`` keeps torch's setting. One thread is the default because it
    makes CPU numbers independent of the machine's core count, and because extra threads on a
    busy machine slow small models down (``bench/README.md``, "Threads"); large convolutional
    models on an idle machine may want more.
    """

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe_validation_error(exc)) from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """A config from a mapping of settings; :class:`ConfigError` for anything else."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"a run config must be a mapping of setting names to values, not {type(values).__name__}"
            )
        if any(not isinstance(k, str) for k in values):
            key = next(k for k in values if not isinstance(k, str))
            raise ConfigError(f"run setting names must be strings, got {key!r}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with some settings changed."""
        return RunConfig(**{**self.model_dump(), **changes})

    def identity(self) -> dict[str, Any]:
        """The settings that define this run's result, in canonical form (see the module
        docstring): two configs that train the same thing have the same identity however they
        were written."""
        values = {k: v for k, v in self.model_dump().items() if k not in EXECUTION_FIELDS}
        values = options_mod.omit_at_default(RunSettings, values)  # settings added after runs were stored
        values["rule_options"] = canonical_rule_options(self.rule, effective_rule_options(self))
        model_options = {**models_mod.options(self.model), **self.model_options}
        values["model_options"] = options_mod.omit_at_default(models_mod.options_class(self.model), model_options)
        data_options = {**data_mod.options(self.data), **self.data_options}
        values["data_options"] = _without_execution(data_options, data_mod.options_class(self.data))
        if self.optimizer != "sgd":
            values["momentum"] = None  # only SGD reads it
        if self.lr_control == "none":  # off: left out, so that runs from before it keep their ids
            for name in LR_CONTROL_FIELDS:
                values.pop(name)
        return plain(values)

    @property
    def run_id(self) -> str:
        """A stable 16-hex-digit hash of :meth:`identity` (same settings, same id, on any machine)."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- validators ----------------------------------------------------------------------------
    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, v: Any, info: Any) -> Any:
        """Whole-number and number settings: no booleans, no NaN or infinity, a float with an
        integral value accepted for a whole number, bounds as declared."""
        name = info.field_name
        kind = NUMBER_KIND.get(name)
        if kind is None or v is None:
            return v
        bad = ValueError(f"invalid {name} {v!r}: it must be {ALLOWED[name]}")
        if kind is int:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                else:
                    raise bad
            v = int(v)
            if name != "seed" and v > MAX_COUNT:
                raise ValueError(f"invalid {name} {v!r}: it must be at most 2**40")
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise bad
            v = float(v)
            if not math.isfinite(v):
                raise bad
        if not within(v, cls.model_fields[name].metadata):
            raise bad
        return v

    @field_validator("rule")
    @classmethod
    def _rule_name(cls, v: str) -> str:
        rules_mod.rule_class(v)  # ConfigError (a ValueError) names the registered rules
        return v

    @field_validator("model")
    @classmethod
    def _model_name(cls, v: str) -> str:
        models_mod.options(v)
        return v

    @field_validator("data")
    @classmethod
    def _data_name(cls, v: str) -> str:
        data_mod.options(v)
        return v

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: list[float]) -> list[float]:
        ok = all(0 < m < 1 for m in v) and all(a < b for a, b in zip(v, v[1:]))
        if not ok:
            raise ValueError(f"invalid milestones {v!r}: it must be {ALLOWED['milestones']}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"invalid device {v!r}: it must be {ALLOWED['device']}")
        return v

    # A setting read here (or by identity() beyond its own value) must leave INDEPENDENT_SETTINGS:
    # a study's planning validates those once per value, not per combination.
    @model_validator(mode="after")
    def _budget_and_rule(self) -> "RunConfig":
        if data_mod.is_text(self.data):
            _check_language_model(self)
        elif self.tokens is not None or self.context is not None or self.eval_windows is not None:
            raise ValueError(
                f"tokens, context and eval_windows apply to language-model data ({', '.join(data_mod.TEXT_SETS)}) "
                f"only, not to {self.data!r}"
            )
        elif self.model == "gpt":
            raise ValueError(f"model 'gpt' reads token sequences; use it with {' or '.join(data_mod.TEXT_SETS)}")
        if data_mod.is_scheduled(self.data):
            _check_scheduled(self)
        if self.evals_per_epoch != 1 and (data_mod.is_text(self.data) or data_mod.is_scheduled(self.data)):
            raise ValueError(f"evals_per_epoch={self.evals_per_epoch} applies to classification data evaluated per epoch, "
                             f"not to {self.data!r}; leave it out")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give either epochs or steps as the training budget, not both")
        if self.epochs is None and self.steps is None and self.tokens is None:
            self.epochs = 10
        rules_mod.get(self.rule, **effective_rule_options(self))  # checks option names and values
        if self.sparsity == "set":
            from ..sparsity import SET

            SET(epsilon=self.epsilon, zeta=self.zeta, seed=self.seed)  # checks epsilon and zeta
        else:
            self._refuse_unused(("epsilon", "zeta"), "SET", "sparsity='set' (sparsity is off)")
        if self.lr_control == "none":
            self._refuse_unused(LR_CONTROL_FIELDS[1:], "lr_control", "lr_control='homeostatic' or 'random'")
        elif data_mod.is_text(self.data):
            raise ValueError(f"lr_control scores class guesses; it applies to classification data, not to {self.data!r}")
        if self.lr_schedule != "step":
            self._refuse_unused(
                ("milestones", "gamma"), "step-schedule", f"lr_schedule='step' (it is {self.lr_schedule!r})"
            )
        for name in ("checkpoint", "state"):  # files the run writes: a trailing separator names a folder
            if getattr(self, name) is not None:
                try:
                    files.file_path(getattr(self, name))
                except ConfigError as exc:
                    raise ValueError(f"invalid {name} setting: {exc}") from None
        if self.state is not None and not self.state.strip():
            raise ValueError("invalid state '': it must be a file path (where the run keeps its resume state) or nothing")
        if self.checkpoint_every is not None and self.state is None:
            raise ValueError(
                f"checkpoint_every={self.checkpoint_every} needs state, the file the run's resume state is written "
                "to; give state=PATH or leave checkpoint_every out"
            )
        return self

    def _refuse_unused(self, names: tuple[str, ...], what: str, needs: str) -> None:
        """Settings ``names`` only mean something when another setting turns them on: refuse any
        of them given a value other than its default while that switch is off."""
        fields = type(self).model_fields
        unused = [f"{k}={getattr(self, k)!r}" for k in names if getattr(self, k) != fields[k].default]
        if unused:
            raise ValueError(f"the {what} setting {' and '.join(unused)} needs {needs}; add it or leave it out")


def canonical_rule_options(rule: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Rule ``rule``'s options ``options`` (the effective ones: see :func:`effective_rule_options`)
    as they enter a run's identity: completed with the rule's defaults, execution options left
    out. :class:`ConfigError` for a bad option, as the rule itself raises."""
    rule_cls = rules_mod.rule_class(rule)
    return _without_execution(rule_cls(**options).options(), rule_cls.Options)


def _without_execution(values: dict[str, Any], declaration: type[options_mod.Options]) -> dict[str, Any]:
    """``values`` without the options ``declaration`` marks as execution settings."""
    skip = set(options_mod.execution_names(declaration))
    return {k: v for k, v in values.items() if k not in skip}


def _check_language_model(config: RunConfig) -> None:
    if config.model != "gpt":
        raise ValueError(f"data {config.data!r} is a token stream; train it with model 'gpt', not {config.model!r}")
    if config.epochs is not None:
        raise ValueError("language-model runs are budgeted in tokens (or steps), not epochs; give tokens=...")
    if config.tokens is not None and config.steps is not None:
        raise ValueError("give either tokens or steps as the training budget, not both")
    if config.n_train is not None or config.n_test is not None:
        raise ValueError("n_train and n_test do not apply to language-model data; use tokens and eval_windows")
    if "input_shape" in config.model_options:
        raise ValueError("set a language model's context with context=..., not model option input_shape")
    if config.tokens is None and config.steps is None:
        config.tokens = LM_DEFAULT_TOKENS


def _check_scheduled(config: RunConfig) -> None:
    """A scheduled set (:data:`beyondbp.data.SCHEDULED_SETS`) is one full batch per step for its
    schedule's length: budget ``epochs = 1`` (the default for it: the schedule) or ``steps``."""
    if config.epochs is not None and config.epochs != 1:
        raise ValueError(f"data {config.data!r} trains one schedule of full-batch steps; give epochs = 1 "
                         f"(the schedule, the default) or steps, not epochs = {config.epochs}")
    if config.n_train is not None or config.n_test is not None:
        raise ValueError(f"n_train and n_test do not apply to data {config.data!r} (one full batch per step)")
    if config.epochs is None and config.steps is None:
        config.epochs = 1


def effective_data_options(config: RunConfig) -> dict[str, Any]:
    """``config.data_options``, plus ``seed=config.seed`` for a data set whose ``seed`` option
    defaults to ``None`` ("the run's seed": ``matrix-completion``) when none was given. A run's
    identity keeps ``None`` (the run's seed is in it already)."""
    opts = dict(config.data_options)
    field = data_mod.options_class(config.data).model_fields.get("seed")
    if field is not None and field.default is None and opts.get("seed") is None:
        opts["seed"] = config.seed
    return opts


def lm_context(config: RunConfig) -> int:
    """Tokens per training window of a language-model run."""
    return config.context if config.context is not None else LM_DEFAULT_CONTEXT


def effective_rule_options(config: RunConfig) -> dict[str, Any]:
    """``config.rule_options``, plus ``seed=config.seed`` for rules that take a seed and were not given one."""
    opts = dict(config.rule_options)
    if "seed" not in opts and "seed" in rules_mod.rule_class(config.rule).option_names():
        opts["seed"] = config.seed
    return opts


@dataclass
class RunResult:
    """The outcome of :func:`run`. ``to_dict()`` is JSON-ready (non-finite numbers become ``None``).

    ``history`` holds one entry per epoch: ``epoch``, ``step`` (optimizer steps so far),
    ``train_loss`` (mean over the epoch's steps, weighted by batch size), ``test_loss``,
    ``test_accuracy``, ``lr``, ``elapsed`` (seconds since the start), ``metrics`` (other step
    metrics' means and ``on_epoch_end`` metrics) and ``diagnostics`` (empty unless asked).

    With SET sparsity (``sparsity="set"``) the masks only simulate sparsity: ``flops_per_step``
    is what the dense kernels executed, ``effective_flops_per_step`` what kernels skipping absent
    connections would execute (see :mod:`beyondbp.sparsity`), ``n_active_params`` counts existing
    connections only, and ``sparsity`` records the method, options and densities. Dense runs
    have ``effective_flops_per_step == flops_per_step`` and ``n_active_params == n_params``.

    Language-model runs also fill ``tokens`` (trained), ``flops_per_token`` and
    ``time_per_token``, add ``tokens`` and ``val_loss`` (nats/token) to every history entry and
    ``val_loss`` to ``final``; other runs leave them ``None``.

    A run that blew up has ``status == "diverged"``, ``diverged`` True and
    ``diverged_at_step`` the optimizer step at which it was detected (the end of that epoch or
    evaluation period); it wrote no checkpoint (``checkpoint`` is None). ``init_from`` records,
    for a run started from a checkpoint, its path, whether its optimizer state was loaded (and
    why not) and the optimizer settings the checkpoint had been trained with.

    ``run_id`` is the config's :attr:`RunConfig.run_id`. ``eval_flops`` is the measured FLOP
    count of all the run's evaluations together (test or validation passes; diagnostics are
    not included): each distinct evaluation (the test set; for a language model, the
    intermediate and the final window counts) is counted once under
    ``torch.utils.flop_counter.FlopCounterMode`` and every evaluation adds the count of its
    kind — training compute is ``flops_per_step · steps``, evaluation compute is reported
    apart. ``resumed_from_step`` is the step a resumed run restarted from (``None`` for a run
    that ran in one go).

    ``spikes`` holds, for a model with spiking layers (``snn-mlp``, ``snn-cnn``), each layer's
    mean firing rate and fraction of silent neurons on the test set after training,
    ``{layer: {"rate": ..., "silent": ...}}`` (:func:`beyondbp.spiking.spike_statistics`,
    measured in eval mode with the RNG saved and restored); it is empty for other models.
    """

    config: dict[str, Any]
    rule: str
    rule_options: dict[str, Any]
    history: list[dict[str, Any]]
    final: dict[str, Any]
    flops_per_step: int
    flops_batch_size: int
    time_per_step: float | None
    timed_steps: int
    n_params: int
    steps: int
    epochs: int
    total_time: float
    train_time: float
    status: str = "ok"
    diverged: bool = False
    diverged_at_step: int | None = None
    init_from: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    effective_flops_per_step: int | None = None
    n_active_params: int | None = None
    sparsity: dict[str, Any] = field(default_factory=dict)
    tokens: int | None = None
    flops_per_token: float | None = None
    time_per_token: float | None = None
    run_id: str = ""
    eval_flops: int = 0
    resumed_from_step: int | None = None
    spikes: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunResult":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})

