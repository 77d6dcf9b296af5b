"""The run loop: one (rule, model, data, budget, seed) trained and measured, whatever the rule.

>>> from beyondbp.train import RunConfig, run
>>> config = RunConfig(rule="dfa", model="mlp", data="mnist1d", epochs=5, seed=0)
>>> result = run(config)                                        # doctest: +SKIP
>>> result.final["test_accuracy"], result.flops_per_step, result.time_per_step  # doctest: +SKIP

What :func:`run` does, in order:

1. seeds Python's ``random``, NumPy and torch with ``config.seed``;
2. loads the data set (``data.load``), keeping the first ``n_train`` / ``n_test`` samples if
   asked, and builds the model (``models.build``) right after seeding, so the same seed gives
   the same initial weights;
3. attaches the rule (``rules.get(rule, **rule_options).attach(model)``). A rule with a
   ``seed`` option (the random feedback matrices of FA, DFA, ...) gets the run's seed unless
   ``rule_options`` sets one, so a seed sweep varies the feedback too; with
   ``sparsity="set"`` the learner is wrapped by :class:`beyondbp.sparsity.SET` (``epsilon``,
   ``zeta``, the run's seed), which composes with any rule;
4. builds the optimizer over ``learner.optimizer_parameters()`` and the learning-rate
   schedule (``"step"``: multiply by ``gamma`` at each milestone, given as a fraction of the
   budget; ``"cosine"``: cosine decay to 0 over the budget; both advance once per optimizer
   step, so they mean the same thing under an epoch or a step budget);
5. trains epoch by epoch with ``learner.step((x, y), optimizer)`` on shuffled batches (the
   shuffling order comes from ``seed``), then per epoch merges ``learner.on_epoch_end(epoch)``,
   evaluates test loss and accuracy with ``learner.predict`` and, if ``diagnostics``, records
   ``learner.diagnostics(batch)`` on the first ``batch_size`` test samples, with the model in
   eval mode (dropout off, BatchNorm statistics frozen, so the rule's update and backprop's
   gradient come from the same forward pass) and the RNG state saved and restored, so
   diagnostics never change the training;
6. stops early, marking the run ``"diverged"``, when an epoch's training loss is not finite or
   exceeds ``DIVERGENCE_FACTOR`` (100) times ``max(first step's loss, log(num_classes))``:
   ``log(num_classes)`` is the cross-entropy of a uniform guess, so a mean loss a hundred times
   that means logits wrong by hundreds of nats — a blow-up, not slow learning. The first step's loss (measured
   before any update) keeps a model that starts above chance from being flagged by its own start.

Language models (data ``shakespeare-char`` or ``text``, model ``gpt``) are budgeted in tokens:
``tokens`` (default 10⁶) or ``steps``, never ``epochs``. A step trains on ``batch_size`` random
windows of ``context`` tokens (default 128) drawn from the training split by a generator
seeded with ``seed``, so ``steps = ceil(tokens / (batch_size · context))``. The run is
evaluated at 10 evenly spaced points (each a history entry; ``epoch`` is the evaluation's
index, ``tokens`` the tokens seen): validation loss in nats/token (``val_loss``, also stored
as ``test_loss``) and next-token accuracy (``test_accuracy``), on 64 evenly spaced
validation windows except at the end, where ``eval_windows`` windows (default: the whole
validation split) are used; ``learner.on_epoch_end`` is called at each evaluation point. The
result adds ``tokens``, ``flops_per_token`` and ``time_per_token`` (per step, divided by the
tokens of one batch) and records the uniform / unigram / bigram baselines in ``data``;
a checkpoint's meta carries the vocabulary (``codec``) for ``beyondbp sample``.

Measurements. ``flops_per_step`` is counted on one real training step (the second; the first
when the budget is one step) run under ``torch.utils.flop_counter.FlopCounterMode``: that step
trains like any other but is left out of the timing. ``time_per_step`` is the median
``time.perf_counter`` duration of the remaining steps after the first (warm-up) step; the
data transfer of a batch is outside the timed region. With fewer than three steps it falls
back to whatever untimed steps exist, or ``None``.

The library never prints: pass ``progress=callback`` to receive ``(event, info)`` calls —
``"start"`` (rule, total_steps, steps_per_epoch), ``"step"`` (step, total_steps, loss),
``"epoch"`` (the history entry) and ``"end"`` (result).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from torch import Tensor, nn

from . import checkpoint as ckpt
from . import files
from .jsonable import plain
from .rules.base import is_rule_tensor
from . import data as data_mod
from . import models as models_mod
from . import rules as rules_mod
from .compute import StepTimer, run_counted, synchronize
from .data.text import TextDataset
from .errors import ConfigError
from .sparsity import SparseLearner

__all__ = [
    "Progress",
    "RunConfig",
    "RunResult",
    "Setup",
    "check",
    "compare",
    "effective_rule_options",
    "evaluate",
    "load_dataset",
    "make_optimizer",
    "make_scheduler",
    "prepare",
    "run",
    "seed_everything",
]

Progress = Callable[[str, dict[str, Any]], None]

#: What each setting accepts, for error messages.
ALLOWED: dict[str, str] = {
    "rule": "a registered rule name",
    "rule_options": "a mapping of option name to value",
    "model": "a registered model name",
    "model_options": "a mapping of option name to value",
    "data": "a registered data set name",
    "data_dir": "a directory path or nothing",
    "data_options": "a mapping of option name to value",
    "epochs": "a whole number of at least 1",
    "steps": "a whole number of at least 1",
    "batch_size": "a whole number of at least 1",
    "eval_batch_size": "a whole number of at least 1",
    "optimizer": "one of 'sgd', 'adam', 'adamw'",
    "lr": "a finite number greater than 0",
    "momentum": "a number in [0, 1)",
    "weight_decay": "a finite number of at least 0",
    "lr_schedule": "one of 'none', 'step', 'cosine'",
    "milestones": "a list of increasing fractions of the budget, each strictly between 0 and 1",
    "gamma": "a number in (0, 1]",
    "seed": "a whole number from 0 to 2**32 - 1",
    "n_train": "a whole number of at least 1, or nothing for all samples",
    "n_test": "a whole number of at least 1, or nothing for all samples",
    "diagnostics": "true or false",
    "checkpoint": "a file path or nothing",
    "init_from": "a file path or nothing",
    "device": "'cpu', 'cuda', 'cuda:N' or 'mps'",
    "threads": "a whole number of at least 1, or nothing to keep torch's setting",
    "sparsity": "'set' or nothing (dense)",
    "epsilon": "a finite number greater than 0",
    "zeta": "a number in [0, 1)",
    "tokens": "a whole number of at least 1 (a language model's training budget), or nothing",
    "context": "a whole number of at least 1 (tokens per training window of a language model), or nothing",
    "eval_windows": "a whole number of at least 1, or nothing for the whole validation split",
}

#: Language-model runs: default token budget, default context, evaluation points and the
#: validation windows used at intermediate evaluation points.
LM_DEFAULT_TOKENS = 1_000_000
LM_DEFAULT_CONTEXT = 128
LM_EVALS = 10
LM_CURVE_WINDOWS = 64

_INT_FIELDS = (
    "epochs", "steps", "batch_size", "eval_batch_size", "seed", "n_train", "n_test", "threads",
    "tokens", "context", "eval_windows",
)
_FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "gamma")


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



#: Upper bound of every count setting (batch sizes, budgets, sample counts): beyond it Python's
#: own indexing breaks, long before any machine could run it.
MAX_COUNT = 2**40


#: Settings that say how a run executes, not what it computes; left out of ``RunConfig.identity``.
EXECUTION_FIELDS = frozenset({"data_dir", "diagnostics", "checkpoint", "device", "threads", "eval_batch_size"})


class RunConfig(BaseModel):
    """Everything that defines one run. Invalid values raise :class:`ConfigError` (one sentence).

    Give ``epochs`` or ``steps`` (optimizer steps), not both; with neither, ``epochs=10``.
    ``momentum`` is used by ``optimizer="sgd"`` only. ``milestones`` and ``gamma`` are used by
    ``lr_schedule="step"`` only. ``checkpoint`` is where the trained model is saved at the end
    (not after a diverged run); ``init_from`` is a checkpoint whose model and rule state are
    loaded before training. Its optimizer state (momentum buffers, Adam moments) is loaded too
    when it was saved by the same kind of optimizer over the same parameters; the run's own
    ``optimizer``, ``lr``, ``momentum`` and ``weight_decay`` are always the ones used — the
    checkpoint's never replace them — and the result's ``init_from`` records what was loaded.
    ``threads`` (default 1) sets ``torch.set_num_threads`` for the duration of the run and
    restores it after; ``None`` keeps torch's setting. One thread is the default because it
    makes CPU numbers independent of the machine's core count, and because extra threads on a
    busy machine slow small models down (``bench/README.md``, "Threads"); large convolutional
    models on an idle machine may want more.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_default=False)

    rule: str = "backprop"
    rule_options: dict[str, Any] = {}
    model: str
    model_options: dict[str, Any] = {}
    data: str
    data_dir: str | None = None
    data_options: dict[str, Any] = {}
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 1000
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: Literal["none", "step", "cosine"] = "none"
    milestones: list[float] = [0.5, 0.75]
    gamma: float = 0.1
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    diagnostics: bool = False
    checkpoint: str | None = None
    init_from: str | None = None
    device: str = "cpu"
    threads: int | None = 1
    sparsity: Literal["set"] | None = None
    epsilon: float = 20.0
    zeta: float = 0.3
    tokens: int | None = None
    context: int | None = None
    eval_windows: int | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe_validation_error(exc)) from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with some settings changed."""
        return RunConfig(**{**self.model_dump(), **changes})

    def identity(self) -> dict[str, Any]:
        """The settings that define this run's result, normalised: everything except the
        execution settings (:data:`EXECUTION_FIELDS`: where data and outputs live, device,
        threads, diagnostics), with the rule's, model's and data set's options completed with
        their defaults (and the rule's ``seed`` filled from the run's), so two configs that train
        the same thing have the same identity however they were written."""
        values = {k: v for k, v in self.model_dump().items() if k not in EXECUTION_FIELDS}
        rule_cls = rules_mod.rule_class(self.rule)
        values["rule_options"] = rule_cls(**effective_rule_options(self)).options()
        values["model_options"] = {**models_mod.options(self.model), **self.model_options}
        values["data_options"] = {**data_mod.options(self.data), **self.data_options}
        return plain(values)

    @property
    def run_id(self) -> str:
        """A stable 16-hex-digit hash of :meth:`identity` (same settings, same id, on any machine)."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- validators ----------------------------------------------------------------------------
    @field_validator(*_INT_FIELDS, mode="before")
    @classmethod
    def _whole(cls, v: Any, info: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ValueError(f"invalid {info.field_name} {v!r}: it must be {ALLOWED[info.field_name]}")
        v = int(v)
        low = 0 if info.field_name == "seed" else 1
        if v > MAX_COUNT and info.field_name != "seed":
            raise ValueError(f"invalid {info.field_name} {v!r}: it must be at most 2**40")
        if v < low or (info.field_name == "seed" and v >= 2**32):
            raise ValueError(f"invalid {info.field_name} {v!r}: it must be {ALLOWED[info.field_name]}")
        return v

    @field_validator(*_FLOAT_FIELDS, mode="before")
    @classmethod
    def _number(cls, v: Any, info: Any) -> Any:
        name = info.field_name
        bad = ValueError(f"invalid {name} {v!r}: it must be {ALLOWED[name]}")
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise bad
        v = float(v)
        if not math.isfinite(v):
            raise bad
        ok = {
            "lr": v > 0,
            "momentum": 0 <= v < 1,
            "weight_decay": v >= 0,
            "gamma": 0 < v <= 1,
        }[name]
        if not ok:
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
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give either epochs or steps as the training budget, not both")
        if self.epochs is None and self.steps is None and self.tokens is None:
            self.epochs = 10
        rules_mod.get(self.rule, **effective_rule_options(self))  # checks option names and values
        if self.sparsity == "set":
            from .sparsity import SET

            SET(epsilon=self.epsilon, zeta=self.zeta, seed=self.seed)  # checks epsilon and zeta
        else:
            self._refuse_unused(("epsilon", "zeta"), "SET", "sparsity='set' (sparsity is off)")
        if self.lr_schedule != "step":
            self._refuse_unused(
                ("milestones", "gamma"), "step-schedule", f"lr_schedule='step' (it is {self.lr_schedule!r})"
            )
        return self

    def _refuse_unused(self, names: tuple[str, ...], what: str, needs: str) -> None:
        """Settings ``names`` only mean something when another setting turns them on: refuse any
        of them given a value other than its default while that switch is off."""
        fields = type(self).model_fields
        unused = [f"{k}={getattr(self, k)!r}" for k in names if getattr(self, k) != fields[k].default]
        if unused:
            raise ValueError(f"the {what} setting {' and '.join(unused)} needs {needs}; add it or leave it out")


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


def lm_context(config: RunConfig) -> int:
    """Tokens per training window of a language-model run."""
    return config.context if config.context is not None else LM_DEFAULT_CONTEXT


def effective_rule_options(config: RunConfig) -> dict[str, Any]:
    """``config.rule_options``, plus ``seed=config.seed`` for rules that take a seed and were not given one."""
    opts = dict(config.rule_options)
    if "seed" not in opts and "seed" in rules_mod.rule_class(config.rule).option_names():
        opts["seed"] = config.seed
    return opts


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_dataset(config: RunConfig) -> data_mod.Dataset:
    """The run's data set, cut to ``n_train`` / ``n_test`` samples when asked."""
    ds = data_mod.load(config.data, config.data_dir, **config.data_options)
    if config.n_train is not None or config.n_test is not None:
        ds = ds.subset(config.n_train, config.n_test)
    return ds


@dataclass
class Setup:
    """What :func:`prepare` builds: the data, the seeded model and the attached learner."""

    config: RunConfig
    dataset: data_mod.Dataset
    model: nn.Module
    learner: rules_mod.Learner
    device: torch.device


def _device(config: RunConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} was asked for but torch sees no CUDA GPU; use 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but it is not available; use 'cpu'")
    return device


def prepare(config: RunConfig, dataset: data_mod.Dataset | None = None) -> Setup:
    """Seed, load data (or use ``dataset``, already cut to size), build the model, attach the rule."""
    device = _device(config)
    seed_everything(config.seed)
    ds = dataset if dataset is not None else load_dataset(config)
    input_shape = (lm_context(config),) if isinstance(ds, TextDataset) else ds.input_shape
    model = models_mod.build(config.model, input_shape, ds.num_classes, **config.model_options)
    model.to(device)
    rule = rules_mod.get(config.rule, **effective_rule_options(config))
    learner = rule.attach(model)
    if config.sparsity == "set":
        from .sparsity import SET

        learner = SET(epsilon=config.epsilon, zeta=config.zeta, seed=config.seed).wrap(learner)
    return Setup(config=config, dataset=ds, model=model, learner=learner, device=device)


#: A finite epoch-mean training loss above this multiple of max(first step's loss, log(classes))
#: marks a run as diverged (see the module docstring, step 6).
DIVERGENCE_FACTOR = 100.0


def diverged(train_loss: float, first_loss: float, num_classes: int | None) -> bool:
    """Whether an epoch's mean training loss (cross-entropy) means the run has blown up: not
    finite, or above ``DIVERGENCE_FACTOR · max(first_loss, log(num_classes))``."""
    if not math.isfinite(train_loss):
        return True
    reference = [v for v in (first_loss, math.log(num_classes) if num_classes and num_classes > 1 else math.nan)
                 if math.isfinite(v) and v > 0]
    return bool(reference) and train_loss > DIVERGENCE_FACTOR * max(reference)


def check(config: RunConfig, dataset: data_mod.Dataset | None = None) -> None:
    """Everything :func:`run` would refuse, found without training: names, options, files,
    the model/rule fit, and the ``init_from`` checkpoint's shapes."""
    setup = prepare(config, dataset)
    try:
        if config.init_from is not None:
            ckpt.load(config.init_from, setup.model, setup.learner)
        if config.checkpoint is not None:
            files.check_writable(config.checkpoint, "checkpoint path")
    finally:
        setup.learner.detach()


def make_optimizer(config: RunConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    params = list(params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """A per-optimizer-step ``LambdaLR`` implementing ``config.lr_schedule`` over ``total_steps``."""
    total = max(int(total_steps), 1)
    if config.lr_schedule == "step":
        bounds = [m * total for m in config.milestones]

        def factor(step: int) -> float:
            return config.gamma ** sum(step >= b for b in bounds)

    elif config.lr_schedule == "cosine":

        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    else:

        def factor(step: int) -> float:
            return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate(learner: rules_mod.Learner, loader: Any, device: torch.device) -> dict[str, float]:
    """Mean loss and accuracy of ``learner.predict`` over ``loader`` (per target element)."""
    total_loss = 0.0
    correct = 0
    count = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = learner.predict(x)
            n = y.numel()
            total_loss += float(learner.loss_fn(out, y)) * n
            correct += int((out.argmax(dim=-1) == y).sum())
            count += n
    if count == 0:
        return {"test_loss": float("nan"), "test_accuracy": float("nan")}
    return {"test_loss": total_loss / count, "test_accuracy": correct / count}


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

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunResult":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


def _emit(progress: Progress | None, event: str, info: dict[str, Any]) -> None:
    if progress is not None:
        progress(event, info)


def run(
    config: RunConfig | Mapping[str, Any],
    progress: Progress | None = None,
    *,
    dataset: data_mod.Dataset | None = None,
) -> RunResult:
    """Train and measure one run (see the module docstring). ``dataset``, if given, is used
    instead of loading ``config.data`` (it must already be cut to ``n_train``/``n_test``)."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    if config.threads is None:
        return _run(config, progress, dataset)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run(config, progress, dataset)
    finally:
        torch.set_num_threads(previous)


def _run(config: RunConfig, progress: Progress | None, dataset: data_mod.Dataset | None) -> RunResult:
    started = time.perf_counter()
    setup = prepare(config, dataset)
    if isinstance(setup.dataset, TextDataset):
        return _run_language_model(config, progress, setup, started)
    ds, model, learner, device = setup.dataset, setup.model, setup.learner, setup.device
    optimizer, init_record = _optimizer(config, setup)

    loader = ds.train_loader(config.batch_size, shuffle=True, seed=config.seed)
    test_loader = ds.test_loader(config.eval_batch_size)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(f"data set {config.data!r} has no training samples")
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    scheduler = make_scheduler(config, optimizer, total_steps)
    diag_batch = (ds.x_test[: config.batch_size].to(device), ds.y_test[: config.batch_size].to(device))

    _emit(progress, "start", {
        "rule": config.rule, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
        "epochs": math.ceil(total_steps / steps_per_epoch),
    })
    meter = _StepMeter(device, total_steps)
    flops_batch = 0
    history: list[dict[str, Any]] = []
    status = "ok"
    first_loss = math.nan
    step = 0
    epoch = 0
    while step < total_steps:
        epoch += 1
        model.train()
        sums: dict[str, float] = defaultdict(float)
        seen = 0
        for x, y in loader:
            if step >= total_steps:
                break
            x, y = x.to(device), y.to(device)
            metrics = meter.step(step, learner, (x, y), optimizer)
            if step == meter.flop_step:
                flops_batch = int(x.shape[0])
            _scheduler_step(scheduler)
            if step == 0:
                first_loss = float(metrics["loss"])
            step += 1
            n = int(x.shape[0])
            seen += n
            for key, value in metrics.items():
                sums[key] += float(value) * n
            _emit(progress, "step", {"step": step, "total_steps": total_steps, "loss": float(metrics["loss"])})
        train_loss, extra = _period_metrics(sums, seen, learner, epoch)
        head = {"epoch": epoch, "step": step, "train_loss": train_loss, **evaluate(learner, test_loader, device)}
        _record(config, progress, setup, optimizer, history, head, extra, started, diag_batch)
        if diverged(train_loss, first_loss, ds.num_classes):
            status = "diverged"
            break

    return _finish(
        config, progress, setup, optimizer, meter, history, status, started,
        checkpoint_meta=lambda: _checkpoint_meta(config, list(ds.input_shape), ds.num_classes, epoch=epoch, step=step),
        flops_batch_size=flops_batch,
        steps=step,
        epochs=epoch,
        init_from=init_record,
        data={
            "name": ds.name,
            "description": ds.description,
            "n_train": ds.num_train,
            "n_test": ds.num_test,
            "input_shape": list(ds.input_shape),
            "num_classes": ds.num_classes,
        },
    )


def _scheduler_step(scheduler: Any) -> None:
    """``scheduler.step()`` without torch's "lr_scheduler.step() before optimizer.step()"
    warning: rules that own their update (SoftHebb's Hebbian phase) may skip the optimizer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


def _optimizer(config: RunConfig, setup: Setup) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    """The run's optimizer over the learner's parameters and, with ``init_from``, the model,
    rule state and (when compatible) optimizer state loaded from that checkpoint, plus the
    record of what was loaded. The config's hyperparameters always win over the checkpoint's."""
    optimizer = make_optimizer(config, setup.learner.optimizer_parameters())
    if config.init_from is None:
        return optimizer, {}
    record: dict[str, Any] = {"path": str(config.init_from)}
    payload = ckpt.read(config.init_from)  # read once: inspected here, loaded below
    saved_state = payload.get("optimizer")
    reason = _optimizer_mismatch(saved_state, optimizer)
    if reason is None:
        chosen = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        meta = ckpt.load(payload, setup.model, setup.learner, optimizer)
        for group, settings in zip(optimizer.param_groups, chosen):
            # what the user asked for, not what the checkpoint ran with (nor its scheduler's
            # ``initial_lr``, which a new LR schedule would otherwise start from)
            for key in [k for k in group if k != "params" and k not in settings]:
                del group[key]
            group.update(settings)
        record["optimizer_state"] = "loaded"
    else:
        meta = ckpt.load(payload, setup.model, setup.learner)
        record["optimizer_state"] = f"not loaded: {reason}"
    saved_config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    record["checkpoint_optimizer"] = {k: saved_config[k] for k in ("optimizer", "lr", "momentum", "weight_decay") if k in saved_config}
    return optimizer, record


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


class _StepMeter:
    """Runs a run's training steps and measures them: step ``flop_step`` (the second, or the only
    one) under the FLOP counter, step 0 (warm-up) timed apart, every other one by a
    :class:`~beyondbp.compute.StepTimer`."""

    def __init__(self, device: torch.device, total_steps: int) -> None:
        self.device = device
        self.flop_step = 1 if total_steps > 1 else 0
        self.timer = StepTimer(device)
        self.untimed: list[float] = []
        self.flops = 0
        self.effective_flops = 0

    def step(
        self, step: int, learner: rules_mod.Learner, batch: tuple[Tensor, Tensor], optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        if step == self.flop_step:
            t0 = time.perf_counter()
            if isinstance(learner, SparseLearner):  # also counts what sparse kernels would run
                metrics, counted = learner.counted_step(batch, optimizer)
                self.flops, self.effective_flops = counted["flops_per_step"], counted["effective_flops_per_step"]
            else:
                metrics, self.flops = run_counted(learner.step, batch, optimizer)
                self.effective_flops = self.flops
            synchronize(self.device)
            self.untimed.append(time.perf_counter() - t0)
        elif step == 0:
            t0 = time.perf_counter()
            metrics = learner.step(batch, optimizer)
            synchronize(self.device)
            self.untimed.append(time.perf_counter() - t0)
        else:
            with self.timer:
                metrics = learner.step(batch, optimizer)
        return metrics

    def time_per_step(self) -> float | None:
        """Median timed step; the median of the untimed ones when no step was timed."""
        time_per_step = self.timer.median()
        if time_per_step is None and self.untimed:
            time_per_step = float(np.median(self.untimed))
        return time_per_step


def _period_metrics(
    sums: Mapping[str, float], seen: int, learner: rules_mod.Learner, index: int
) -> tuple[float, dict[str, float]]:
    """The mean training loss of an epoch (or evaluation period) from the metric sums over
    ``seen`` (weights), and the other metrics' means merged with ``on_epoch_end(index)``."""
    means = {k: v / max(seen, 1) for k, v in sums.items()}
    train_loss = means.pop("loss", float("nan"))
    extra = dict(means)
    extra.update({k: float(v) for k, v in learner.on_epoch_end(index).items()})
    return train_loss, extra


def _record(
    config: RunConfig,
    progress: Progress | None,
    setup: Setup,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, Any]],
    head: dict[str, Any],
    extra: dict[str, float],
    started: float,
    diag_batch: tuple[Tensor, ...],
) -> None:
    """Append a history entry (``head``, then ``lr``, ``elapsed``, ``metrics`` and ``diagnostics``)
    and emit it as an ``"epoch"`` event."""
    entry: dict[str, Any] = {
        **head,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "elapsed": time.perf_counter() - started,
        "metrics": extra,
        "diagnostics": {},
    }
    if config.diagnostics:
        # eval mode: the rule's update and backprop's gradient see the same forward pass
        # (no dropout masks, BatchNorm's running statistics); ``measuring`` puts every module's
        # mode, every buffer, the RNG and the rule's generators back afterwards, so diagnostics
        # never change the training that follows
        model, learner = setup.model, setup.learner
        with learner.measuring():
            model.eval()
            entry["diagnostics"] = {k: float(v) for k, v in learner.diagnostics(diag_batch).items()}
    history.append(entry)
    _emit(progress, "epoch", dict(entry))


def _finish(
    config: RunConfig,
    progress: Progress | None,
    setup: Setup,
    optimizer: torch.optim.Optimizer,
    meter: _StepMeter,
    history: list[dict[str, Any]],
    status: str,
    started: float,
    *,
    checkpoint_meta: Callable[[], dict[str, Any]],
    flops_batch_size: int,
    steps: int,
    epochs: int,
    data: dict[str, Any],
    final_keys: Sequence[str] = ("train_loss", "test_loss", "test_accuracy"),
    tokens_per_step: int | None = None,
    init_from: dict[str, Any] | None = None,
) -> RunResult:
    """The end of a run: save the checkpoint if asked (never after divergence: a blown-up
    model must not replace a good checkpoint), assemble the :class:`RunResult`, detach the
    learner and emit ``"end"``. ``final`` takes ``final_keys`` and the diagnostics from the
    last history entry; with ``tokens_per_step`` (language models) the token fields are filled."""
    model, learner = setup.model, setup.learner
    diverged_run = status == "diverged"
    saved_to = None
    if config.checkpoint is not None and not diverged_run:
        ckpt.save(config.checkpoint, model, learner, optimizer, meta=checkpoint_meta())
        saved_to = config.checkpoint

    time_per_step = meter.time_per_step()
    last = history[-1]
    final = {key: last[key] for key in final_keys}
    final["diagnostics"] = dict(last["diagnostics"])
    # the model proper: a rule's own ``bbp_`` tensors (feedback matrices, ...) are not counted
    n_params = int(sum(p.numel() for n, p in model.named_parameters() if not is_rule_tensor(n)))
    sparse = isinstance(learner, SparseLearner)
    tokens: dict[str, Any] = {}
    if tokens_per_step is not None:
        tokens = {
            "tokens": steps * tokens_per_step,
            "flops_per_token": meter.flops / tokens_per_step,
            "time_per_token": None if time_per_step is None else time_per_step / tokens_per_step,
        }
    result = RunResult(
        config=config.model_dump(),
        rule=config.rule,
        rule_options=effective_rule_options(config),
        history=history,
        final=final,
        flops_per_step=int(meter.flops),
        flops_batch_size=flops_batch_size,
        time_per_step=time_per_step,
        timed_steps=len(meter.timer),
        n_params=n_params,
        steps=steps,
        epochs=epochs,
        total_time=time.perf_counter() - started,
        train_time=meter.timer.total + sum(meter.untimed),
        status=status,
        data=data,
        environment=_environment(setup.device),
        checkpoint=saved_to,
        diverged=diverged_run,
        diverged_at_step=steps if diverged_run else None,
        init_from=dict(init_from or {}),
        effective_flops_per_step=int(meter.effective_flops),
        n_active_params=int(learner.n_active_params()) if sparse else n_params,
        sparsity=learner.summary() if sparse else {},
        **tokens,
    )
    learner.detach()
    _emit(progress, "end", {"result": result})
    return result


def _checkpoint_meta(config: RunConfig, input_shape: list[int], num_classes: int, **position: Any) -> dict[str, Any]:
    """A checkpoint's ``meta``: the run's rule, model and data, then ``position`` (where training
    stopped: epoch/step, or context/codec/step/tokens for a language model), then the config."""
    return {
        "rule": config.rule,
        "rule_options": effective_rule_options(config),
        "sparsity": config.sparsity,
        "model": config.model,
        "model_options": dict(config.model_options),
        "data": config.data,
        "input_shape": input_shape,
        "num_classes": num_classes,
        **position,
        "config": config.model_dump(),
    }


def _environment(device: torch.device) -> dict[str, Any]:
    from ._version import __version__

    return {
        "beyondbp": __version__,
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def compare(
    config: RunConfig,
    rules: Sequence[str],
    rule_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
) -> list[RunResult]:
    """Run every rule in ``rules`` with ``config`` otherwise unchanged (same model, data, budget,
    seed). ``rule_options`` maps a rule name to its options (default: ``config.rule_options``
    for every rule). Every configuration is checked before the first one trains."""
    if not rules:
        raise ConfigError("compare needs at least one rule")
    if config.checkpoint is not None:
        raise ConfigError("compare does not save checkpoints; leave checkpoint unset and use run() for one rule")
    dupes = sorted({r for r in rules if list(rules).count(r) > 1})
    if dupes:
        raise ConfigError(f"rule {dupes[0]!r} is listed more than once")
    per_rule = dict(rule_options or {})
    configs = [
        config.replace(rule=r, rule_options=dict(per_rule.get(r, config.rule_options if rule_options is None else {})))
        for r in rules
    ]
    ds = load_dataset(config)
    for c in configs:
        check(c, ds)
    return [run(c, progress, dataset=ds) for c in configs]


# -- language models ----------------------------------------------------------------------------
def _run_language_model(config: RunConfig, progress: Progress | None, setup: Setup, started: float) -> RunResult:
    """Token-budgeted training of a language model (see "Language models" in the module docstring)."""
    ds, model, learner, device = setup.dataset, setup.model, setup.learner, setup.device
    assert isinstance(ds, TextDataset)
    optimizer, init_record = _optimizer(config, setup)
    context = lm_context(config)
    per_step = config.batch_size * context
    total_steps = config.steps if config.steps is not None else max(1, math.ceil(config.tokens / per_step))
    scheduler = make_scheduler(config, optimizer, total_steps)
    n_evals = min(LM_EVALS, total_steps)
    eval_steps = sorted({max(1, round(total_steps * (k + 1) / n_evals)) for k in range(n_evals)})
    diag_batch = tuple(t.to(device) for t in ds.val_windows(context, config.batch_size))

    _emit(progress, "start", {"rule": config.rule, "total_steps": total_steps, "steps_per_epoch": total_steps,
                              "epochs": 1, "tokens": total_steps * per_step})
    meter = _StepMeter(device, total_steps)
    history: list[dict[str, Any]] = []
    status = "ok"
    first_loss = math.nan
    step = 0
    sums: dict[str, float] = defaultdict(float)
    seen = 0
    model.train()
    for x, y in ds.batches(config.batch_size, context, seed=config.seed, steps=total_steps):
        x, y = x.to(device), y.to(device)
        metrics = meter.step(step, learner, (x, y), optimizer)
        _scheduler_step(scheduler)
        if step == 0:
            first_loss = float(metrics["loss"])
        step += 1
        seen += 1
        for key, value in metrics.items():
            sums[key] += float(value)
        _emit(progress, "step", {"step": step, "total_steps": total_steps, "loss": float(metrics["loss"])})
        if step not in eval_steps:
            continue
        index = len(history) + 1
        train_loss, extra = _period_metrics(sums, seen, learner, index)
        windows = config.eval_windows if step == total_steps else min(config.eval_windows or LM_CURVE_WINDOWS,
                                                                      LM_CURVE_WINDOWS)
        val = ds.val_metrics(model, context, batch_size=config.eval_batch_size, max_windows=windows, device=device)
        head = {
            "epoch": index,
            "step": step,
            "tokens": step * per_step,
            "train_loss": train_loss,
            "test_loss": val["loss"],
            "test_accuracy": val["accuracy"],
            "val_loss": val["loss"],
        }
        _record(config, progress, setup, optimizer, history, head, extra, started, diag_batch)
        sums, seen = defaultdict(float), 0
        if diverged(train_loss, first_loss, ds.vocab_size):
            status = "diverged"
            break
        model.train()

    return _finish(
        config, progress, setup, optimizer, meter, history, status, started,
        checkpoint_meta=lambda: _checkpoint_meta(
            config, [context], ds.vocab_size,
            context=context, codec=ds.codec.to_dict(), step=step, tokens=step * per_step,
        ),
        flops_batch_size=config.batch_size,
        steps=step,
        epochs=len(history),
        init_from=init_record,
        data={
            "name": ds.name,
            "description": ds.description,
            "n_train_tokens": len(ds.train),
            "n_val_tokens": len(ds.val),
            "vocab_size": ds.vocab_size,
            "num_classes": ds.vocab_size,
            "input_shape": [context],
            "context": context,
            "baselines": ds.baselines(),
        },
        final_keys=("train_loss", "test_loss", "test_accuracy", "val_loss"),
        tokens_per_step=per_step,
    )
