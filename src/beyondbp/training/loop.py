"""The run loop: one (rule, model, data, budget, seed) trained and measured, whatever the rule.

>>> from beyondbp.training import RunConfig, run
>>> config = RunConfig(rule="dfa", model="mlp", data="mnist1d", epochs=5, seed=0)
>>> result = run(config)                                        # doctest: +SKIP
>>> result.final["test_accuracy"], result.flops_per_step, result.time_per_step  # doctest: +SKIP

What :func:`run` does, in order:

1. seeds Python's ``random``, NumPy and torch with ``config.seed``;
2. loads the data set (``data.load``), keeping the first ``n_train`` / ``n_test`` samples if
   asked, and builds the model (``models.build``) right after seeding, so the same seed gives
   the same initial weights (a scheduled set may then set them: ``dataset.initialise(model)``);
3. attaches the rule (``rules.get(rule, **rule_options).attach(model)``). A rule with a
   ``seed`` option (the random feedback matrices of FA, DFA, ...) gets the run's seed unless
   ``rule_options`` sets one, so a seed sweep varies the feedback too; with
   ``sparsity="set"`` the learner is wrapped by :class:`beyondbp.sparsity.SET` (``epsilon``,
   ``zeta``, the run's seed), which composes with any rule;
4. builds the optimizer over ``learner.optimizer_parameters()`` and the learning-rate
   schedule (``"step"``: multiply by ``gamma`` at each milestone, given as a fraction of the
   budget; ``"cosine"``: cosine decay to 0 over the budget; both advance once per optimizer
   step, so they mean the same thing under an epoch or a step budget); with ``state`` set
   and a resume state for this run on disk, everything is then restored from it (see
   "Resuming" below);
5. trains with ``learner.step((x, y), optimizer)`` (with ``lr_control`` on, the optimizer seen
   through :class:`~beyondbp.training.lr_control.LRController`, and at the steps where a scheduled set
   freezes parameters through the learning gate, :mod:`beyondbp.training.gate`), one batch at a time from the run's task
   (:mod:`beyondbp.training.tasks`: shuffled batches of a classification set, whose order comes
   from ``seed``; random windows of a token stream), calls ``learner.on_epoch_start(period)``
   before every period (an epoch; a language model's evaluation interval; also when a resumed
   run continues inside one), and at the end of every period merges ``learner.on_epoch_end(period)``,
   evaluates (test loss and accuracy with ``learner.predict``; validation loss for a language
   model; with ``evals_per_epoch = M > 1`` also ``M - 1`` times inside each epoch, evenly spaced in
   its steps, under ``learner.measuring()`` so that it changes nothing, all ``M`` listed in the
   epoch's history entry as ``evals``) and, if ``diagnostics``, records ``learner.diagnostics(batch)`` on the first
   ``batch_size`` test samples, with the model in eval mode (dropout off, BatchNorm
   statistics frozen, so the rule's update and backprop's gradient come from the same
   forward pass) and the RNG state saved and restored, so diagnostics never change the
   training;
6. stops early, marking the run ``"diverged"``, when a period's training loss is not finite or
   exceeds ``DIVERGENCE_FACTOR`` (100) times ``max(first step's loss, log(num_classes))``:
   ``log(num_classes)`` is the cross-entropy of a uniform guess, so a mean loss a hundred times
   that means logits wrong by hundreds of nats — a blow-up, not slow learning. The first step's
   loss (measured before any update) keeps a model that starts above chance from being flagged
   by its own start.

There is one loop for every kind of data: what differs (batches, periods, evaluation, the
result's data record) lives in the task object (:func:`beyondbp.training.tasks.make_task`).

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
back to whatever untimed steps exist, or ``None``. ``eval_flops`` is the measured cost of all
evaluations together: the first evaluation of each kind (the test set; a language model's
intermediate and final window counts) runs under the FLOP counter, and every evaluation adds
its kind's count. Counting never changes what is computed.

Resuming. With ``state=PATH`` and ``checkpoint_every=k`` the loop writes the run's whole state
(:mod:`beyondbp.training.state`) atomically every ``k`` optimizer steps, after that step's
evaluation if one falls there. When :func:`run` starts and ``PATH`` holds the state of the
same run (same :attr:`~beyondbp.training.RunConfig.run_id`) it continues from there, and ends with
the same weights, history and final metrics, bit for bit, as a run that was never stopped
(timings aside); a state of another run is refused. The result's ``resumed_from_step`` says
where it restarted. When the run ends (done or diverged) the state file is deleted; a run
that raises keeps it.

The library never prints: pass ``progress=callback`` to receive ``(event, info)`` calls —
``"start"`` (rule, total_steps, steps_per_epoch, resumed_from_step), ``"step"`` (step,
total_steps, loss), ``"epoch"`` (the history entry) and ``"end"`` (result); a liquid run
(model ``lsm``) that continues a stopped feature generation sends ``"liquid_resumed"`` first
(:func:`beyondbp.training.liquid.feature_stage`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from .. import checkpoint as ckpt
from .. import data as data_mod
from .. import files
from .. import models as models_mod
from .. import rules as rules_mod
from ..compute import StepTimer, run_counted, synchronize
from ..errors import ConfigError
from ..rules.base import is_rule_tensor
from ..sparsity import SparseLearner
from . import liquid as liquid_mod
from . import state as state_mod
from .components import DIVERGENCE_FACTOR, diverged, make_optimizer, make_scheduler, seed_everything
from .config import RunConfig, RunResult, effective_data_options, effective_rule_options, lm_context
from .gate import make_gate
from .lr_control import LRController, make_lr_control
from .tasks import Task, evaluate, make_task
from .warmstart import init_from_other_rule, start_optimizer

__all__ = [
    "DIVERGENCE_FACTOR",
    "Progress",
    "Setup",
    "check",
    "diverged",
    "evaluate",
    "load_dataset",
    "make_optimizer",
    "make_scheduler",
    "prepare",
    "run",
    "seed_everything",
]

Progress = Callable[[str, dict[str, Any]], None]


def load_dataset(config: RunConfig) -> data_mod.Dataset:
    """The run's data set (its seed the run's when it follows the run's), cut to ``n_train`` /
    ``n_test`` samples when asked. A batch larger than the training split (or the ``n_train``
    subset) is the whole split: a tiny data set trains at the default batch size."""
    ds = data_mod.load(config.data, config.data_dir, **effective_data_options(config))
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
    lr_control: LRController | None = None  # set by run() when ``lr_control`` is on


def _device(config: RunConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} was asked for but torch sees no CUDA GPU; use 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but it is not available; use 'cpu'")
    return device


def prepare(config: RunConfig, dataset: data_mod.Dataset | None = None, *, generate: bool = True,
            progress: Progress | None = None) -> Setup:
    """Seed, load data (or use ``dataset``, already cut to size), build the model, attach the rule.

    A model with a spiking liquid (``lsm``) goes through :func:`beyondbp.training.liquid.feature_stage`
    first: ``Setup.dataset`` holds the liquid's (cached) features and the rule is attached to the
    model's readout; ``generate=False`` only checks the settings (nothing is simulated); ``progress``
    receives its ``"liquid_resumed"`` event."""
    device = _device(config)
    seed_everything(config.seed)
    ds = dataset if dataset is not None else load_dataset(config)
    input_shape = (lm_context(config),) if data_mod.is_text(config.data) else ds.input_shape
    model = models_mod.build(config.model, input_shape, ds.num_classes, **config.model_options)
    model.to(device)
    if liquid_mod.has_liquid(model):
        stage = liquid_mod.feature_stage(config, ds, model, device, generate=generate, progress=progress)
        ds, target, rule = stage.dataset, stage.target, stage.rule
    else:
        target, rule = model, rules_mod.get(config.rule, **effective_rule_options(config))
        if data_mod.is_scheduled(config.data):
            ds.initialise(model)  # a scheduled set may prescribe the initial weights (hierarchy's aligned init)
    learner = rule.attach(target, loss_fn=getattr(ds, "loss_fn", None))  # a set may bring its own loss
    if config.sparsity == "set":
        from ..sparsity import SET

        learner = SET(epsilon=config.epsilon, zeta=config.zeta, seed=config.seed).wrap(learner)
    return Setup(config=config, dataset=ds, model=model, learner=learner, device=device)


def check(config: RunConfig, dataset: data_mod.Dataset | None = None) -> None:
    """Everything :func:`run` would refuse, found without training: names, options, files,
    the model/rule fit, the ``init_from`` checkpoint's shapes, and a ``state`` file that
    belongs to another run."""
    setup = prepare(config, dataset, generate=False)
    try:
        make_gate(setup.dataset, setup.model, f"data set {config.data!r}", config)
        if data_mod.is_scheduled(config.data):
            make_task(config, setup.dataset, setup.device)  # a schedule that does not fit the budget
        if config.init_from is not None:
            payload = ckpt.read(config.init_from)
            if init_from_other_rule(payload, config) is not None:
                ckpt.load(payload, setup.model, weights_only=True)
            else:
                ckpt.load(payload, setup.model, setup.learner)
        if config.checkpoint is not None:
            files.check_writable(config.checkpoint, "checkpoint path")
            files.check_folder_exists(config.checkpoint, "checkpoint path")
        if config.state is not None:
            state_mod.read(config.state, config.run_id)
            files.check_writable(config.state, "state path")
    finally:
        setup.learner.detach()


def _emit(progress: Progress | None, event: str, info: dict[str, Any]) -> None:
    if progress is not None:
        progress(event, info)


def _scheduler_step(scheduler: Any) -> None:
    """``scheduler.step()`` without torch's "lr_scheduler.step() before optimizer.step()"
    warning: rules that own their update (SoftHebb's Hebbian phase) may skip the optimizer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


class _StepMeter:
    """Runs a run's training steps and measures them: step ``flop_step`` (the second, or the only
    one) under the FLOP counter, step 0 (warm-up) timed apart, every other one by a
    :class:`~beyondbp.compute.StepTimer`. Every clock reading follows a synchronisation of the
    run's device (:func:`~beyondbp.compute.synchronize`: ``torch.cuda.synchronize`` on a GPU, a
    no-op on the CPU), so a GPU step is timed to the end of its kernels, not their launch."""

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
            synchronize(self.device)  # on a GPU, the clock starts when the queued work is done
            t0 = time.perf_counter()
            if _sparse(learner):  # also counts what sparse kernels would run
                metrics, counted = learner.counted_step(batch, optimizer)
                self.flops, self.effective_flops = counted["flops_per_step"], counted["effective_flops_per_step"]
            else:
                metrics, self.flops = run_counted(learner.step, batch, optimizer)
                self.effective_flops = self.flops
            synchronize(self.device)
            self.untimed.append(time.perf_counter() - t0)
        elif step == 0:
            synchronize(self.device)
            t0 = time.perf_counter()
            metrics = learner.step(batch, optimizer)
            synchronize(self.device)
            self.untimed.append(time.perf_counter() - t0)
        else:
            with self.timer:
                metrics = learner.step(batch, optimizer)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "effective_flops": self.effective_flops, "untimed": list(self.untimed),
                "times": list(self.timer.times)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.flops, self.effective_flops = int(state["flops"]), int(state["effective_flops"])
        self.untimed = [float(t) for t in state["untimed"]]
        self.timer.times = [float(t) for t in state["times"]]

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


def _evaluate(task: Task, at: "_Progress", index: int, train_loss: float) -> dict[str, Any]:
    """The task's evaluation after step ``at.step`` (a history entry's head), its FLOPs added to
    ``at.eval_flops``: the first evaluation of each kind is counted, the others cost the same."""
    kind = task.eval_kind(at.step)
    if kind in at.eval_costs:
        head = task.evaluate(at.step, index, train_loss)
    else:
        head, at.eval_costs[kind] = run_counted(task.evaluate, at.step, index, train_loss)
    at.eval_flops += at.eval_costs[kind]
    return head


def _within(head: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of a history entry's ``evals``: the step, the training loss so far in the epoch
    and the evaluation's test loss and accuracy."""
    return {k: head[k] for k in ("step", "train_loss", "test_loss", "test_accuracy")}


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
    setup: Setup,
    optimizer: torch.optim.Optimizer,
    meter: _StepMeter,
    at: _Progress,
    status: str,
    started: float,
    task: Task,
    *,
    init_from: dict[str, Any] | None = None,
    resumed_from: int | None = None,
) -> RunResult:
    """The end of a run: save the checkpoint if asked (never after divergence: a blown-up
    model must not replace a good checkpoint), assemble the :class:`RunResult` and detach the
    learner. ``final`` takes the task's ``final_keys`` and the diagnostics from the last
    history entry."""
    model, learner = setup.model, setup.learner
    diverged_run = status == "diverged"
    saved_to = None
    if config.checkpoint is not None and not diverged_run:
        meta = _checkpoint_meta(
            config, task.input_shape(), task.num_classes, **task.checkpoint_position(at.step, at.periods)
        )
        ckpt.save(config.checkpoint, model, learner, optimizer, meta=meta)
        saved_to = config.checkpoint

    time_per_step = meter.time_per_step()
    history = at.history
    last = history[-1]
    final = {key: last[key] for key in task.final_keys}
    final["diagnostics"] = dict(last["diagnostics"])
    # the model proper: a rule's own ``bbp_`` tensors (feedback matrices, ...) are not counted
    n_params = int(sum(p.numel() for n, p in model.named_parameters() if not is_rule_tensor(n)))
    sparse = _sparse(learner)
    result = RunResult(
        config=config.model_dump(),
        rule=config.rule,
        rule_options=effective_rule_options(config),
        history=history,
        final=final,
        flops_per_step=int(meter.flops),
        flops_batch_size=at.flops_batch,
        time_per_step=time_per_step,
        timed_steps=len(meter.timer),
        n_params=n_params,
        steps=at.step,
        epochs=at.periods,
        total_time=time.perf_counter() - started,
        train_time=meter.timer.total + sum(meter.untimed),
        status=status,
        data=task.data_info(),
        environment=_environment(setup.device),
        checkpoint=saved_to,
        diverged=diverged_run,
        diverged_at_step=at.step if diverged_run else None,
        init_from=dict(init_from or {}),
        effective_flops_per_step=int(meter.effective_flops),
        n_active_params=int(learner.n_active_params()) if sparse else n_params,
        sparsity=learner.summary() if sparse else {},
        run_id=config.run_id,
        eval_flops=int(at.eval_flops),
        resumed_from_step=resumed_from,
        **task.result_extras(at.step, int(meter.flops), time_per_step),
    )
    learner.detach()
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
    from .._version import __version__

    return {
        "beyondbp": __version__,
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def _sparse(learner: rules_mod.Learner) -> bool:
    """Whether the learner simulates SET sparsity (its FLOPs and parameters count apart)."""
    return isinstance(learner, SparseLearner)


@dataclass
class _Progress:
    """Where the loop stands: everything a resumed run needs besides the model, the optimizer,
    the rule and the data position."""

    step: int = 0
    periods: int = 0
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    first_loss: float = math.nan
    flops_batch: int = 0
    eval_costs: dict[str, int] = field(default_factory=dict)
    eval_flops: int = 0
    elapsed: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list)  # this epoch's evaluations so far (evals_per_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "periods": self.periods, "sums": dict(self.sums), "seen": self.seen,
            "history": self.history, "first_loss": self.first_loss, "flops_batch": self.flops_batch,
            "eval_costs": dict(self.eval_costs), "eval_flops": self.eval_flops, "elapsed": self.elapsed,
            "evals": list(self.evals),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self.sums = defaultdict(float, state["sums"])
        self.eval_costs = dict(state["eval_costs"])


def run(
    config: RunConfig | Mapping[str, Any],
    progress: Progress | None = None,
    *,
    dataset: data_mod.Dataset | None = None,
) -> RunResult:
    """Train and measure one run (see the module docstring).

    Args:
        config: the run's settings (a :class:`RunConfig`, or a mapping of its fields).
        progress: called as ``progress(event, info)`` with ``"start"``, ``"step"``,
            ``"epoch"`` and ``"end"`` events (the command line draws its bars from them).
        dataset: used instead of loading ``config.data``; it must already be cut to
            ``n_train``/``n_test``.

    Returns:
        The :class:`RunResult`: history, final metrics, FLOPs and time per step, status
        (``"ok"`` or ``"diverged"``), the run id.

    Raises:
        ConfigError: settings that cannot run (one sentence), before anything trains.
    """
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
    """The one loop, for every task (see the module docstring)."""
    clock = time.perf_counter()
    saved = state_mod.read(config.state, config.run_id) if config.state is not None else None
    if config.checkpoint is not None:  # written at the end: refused now, like the state's folder
        files.check_folder_exists(config.checkpoint, "checkpoint path")
    setup = prepare(config, dataset, progress=progress)
    model, learner, device = setup.model, setup.learner, setup.device
    optimizer, init_record = start_optimizer(config, model, learner)
    task = make_task(config, setup.dataset, device)
    task.learner = learner
    gate = make_gate(setup.dataset, model, f"data set {config.data!r}", config)
    scheduler = make_scheduler(config, optimizer, task.total_steps)
    control = setup.lr_control = make_lr_control(config, learner, task.num_classes)
    meter = _StepMeter(device, task.total_steps)
    at = _Progress()
    if saved is not None:
        try:
            _restore(saved, setup, optimizer, scheduler, task, meter, at)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"the state file {config.state!r} is damaged and cannot be restored "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); delete it to start the run afresh") from None
    resumed_from = at.step if saved is not None else None
    started = clock - at.elapsed

    _emit(progress, "start", {"rule": config.rule, **task.start_info(), "resumed_from_step": resumed_from})
    if saved is not None:
        state_mod.restore_rng(saved["rng"])  # last: nothing above may draw from the restored RNG
        del saved
    status = "ok"
    model.train()
    learner.on_epoch_start(at.periods)  # this loop reports its epochs (also when resumed inside one)
    while at.step < task.total_steps:
        batch = task.next_batch()
        stepper = optimizer if control is None else control.around(optimizer, batch)
        frozen = task.frozen(at.step) if gate is not None else ()
        if frozen:  # the data's learning gate: these parameters do not learn at this step
            stepper = gate.around(stepper, frozen)
        metrics = meter.step(at.step, learner, batch, stepper)
        if frozen:
            stepper.check(config.rule)
        if control is not None:
            metrics = {**metrics, **control.after(batch)}
        if at.step == meter.flop_step:
            at.flops_batch = task.flops_batch_size(batch)
        _scheduler_step(scheduler)
        if at.step == 0:
            at.first_loss = float(metrics["loss"])
        at.step += 1
        weight = task.weight(batch)
        at.seen += weight
        for key, value in metrics.items():
            at.sums[key] += float(value) * weight
        _emit(progress, "step", {"step": at.step, "total_steps": task.total_steps, "loss": float(metrics["loss"])})
        if task.period_ends(at.step):
            at.periods += 1
            train_loss, extra = _period_metrics(at.sums, at.seen, learner, at.periods)
            head = _evaluate(task, at, at.periods, train_loss)
            if config.evals_per_epoch > 1:  # the epoch's evaluations, this one last
                head["evals"], at.evals = [*at.evals, _within(head)], []
            _record(config, progress, setup, optimizer, at.history, head, extra, started, task.diag_batch)
            at.sums, at.seen = defaultdict(float), 0
            if diverged(train_loss, at.first_loss, task.num_classes):
                status = "diverged"
                break
            model.train()
            if at.step < task.total_steps:
                learner.on_epoch_start(at.periods)
        elif task.evaluates_within():  # inside the epoch: measured without side effects (Learner.measuring)
            with learner.measuring():
                head = _evaluate(task, at, at.periods + 1, at.sums.get("loss", math.nan) / max(at.seen, 1))
            at.evals.append(_within(head))
        if config.checkpoint_every and at.step % config.checkpoint_every == 0 and at.step < task.total_steps:
            at.elapsed = time.perf_counter() - started
            _save_state(config, setup, optimizer, scheduler, task, meter, at)

    result = _finish(
        config, setup, optimizer, meter, at, status, started, task,
        init_from=init_record, resumed_from=resumed_from,
    )
    if config.state is not None:
        state_mod.remove(config.state)
    _emit(progress, "end", {"result": result})
    return result


def _save_state(
    config: RunConfig, setup: Setup, optimizer: torch.optim.Optimizer, scheduler: Any, task: Task,
    meter: "_StepMeter", at: _Progress,
) -> None:
    """Write the run's whole state to ``config.state`` (see :mod:`beyondbp.training.state`)."""
    learner = setup.learner
    state_mod.write(config.state, {
        "run_id": config.run_id,
        "config": config.model_dump(),
        "model": {k: v.detach().cpu() for k, v in setup.model.state_dict().items()},
        "rule_state": {k: v.detach().cpu() for k, v in learner.rule_state().items()},
        "generators": [g.get_state() for g in learner.generators()],
        "learner": {"set_history": learner.history} if _sparse(learner) else {},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": state_mod.capture_rng(setup.device),
        "data": task.state_dict(),
        "lr_control": setup.lr_control.state_dict() if setup.lr_control is not None else {},
        "loop": at.state_dict(),
        "meter": meter.state_dict(),
    })


def _restore(
    saved: Mapping[str, Any], setup: Setup, optimizer: torch.optim.Optimizer, scheduler: Any, task: Task,
    meter: "_StepMeter", at: _Progress,
) -> None:
    """Load a resume state into the freshly prepared run (the global RNG is restored later)."""
    model, learner = setup.model, setup.learner
    model.load_state_dict(saved["model"], strict=True)
    if saved["rule_state"]:
        learner.load_rule_state({k: v.to(setup.device) for k, v in saved["rule_state"].items()})
    generators = learner.generators()
    if len(generators) != len(saved["generators"]):
        raise ConfigError("the state file's rule generators do not match this run's rule; delete it to start afresh")
    for g, s in zip(generators, saved["generators"]):
        g.set_state(s)
    if _sparse(learner):
        learner.history = list(saved["learner"].get("set_history", []))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    task.load_state_dict(saved["data"])
    if setup.lr_control is not None:
        setup.lr_control.load_state_dict(saved["lr_control"])
    meter.load_state_dict(saved["meter"])
    at.load_state_dict(saved["loop"])
