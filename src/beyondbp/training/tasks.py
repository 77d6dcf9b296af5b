"""What the one run loop trains on and how it evaluates: a task object per kind of data.

The loop (:mod:`beyondbp.training.loop`) knows nothing about data sets. It asks the task for

* ``total_steps`` and the ``"start"`` event's fields (:meth:`start_info`);
* the next training batch (:meth:`next_batch`, already on the device) and its weight in the
  period's mean training loss (:meth:`weight`: samples for classification, 1 for a language
  model's fixed-size batches);
* whether a period (an epoch, or a language model's evaluation interval) ends after a step
  (:meth:`period_ends`), and the evaluation that closes it (:meth:`evaluate`; its kind,
  :meth:`eval_kind`, tells the loop which evaluations cost the same FLOPs); whether an
  evaluation falls inside the period after a step (:meth:`evaluates_within`: with
  ``evals_per_epoch = M`` an epoch of ``S`` steps is also evaluated after its steps
  ``i·S // M``, ``i = 1 … M-1``);
* the result's ``data`` record, extra fields and ``final`` keys, and a checkpoint's position;
* its data-order position as a state dict, for resuming (:meth:`state_dict`,
  :meth:`load_state_dict`).

:func:`make_task` picks the task from the run's data set name: language-model sets
(:data:`beyondbp.data.TEXT_SETS`) get :class:`LanguageModelTask`, sets whose batch is a function
of the step (:data:`beyondbp.data.SCHEDULED_SETS`, e.g. ``matrix-completion``)
:class:`ScheduledTask`, the rest :class:`ClassificationTask`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .. import data as data_mod
from ..errors import ConfigError
from ..spiking import spike_statistics
from .batches import ShuffledBatches, evaluate_batches, evaluate_tensors
from .config import LM_CURVE_WINDOWS, LM_EVALS, RunConfig, lm_context

__all__ = ["ClassificationTask", "LanguageModelTask", "ScheduledTask", "Task", "evaluate", "make_task"]

Batch = tuple[Tensor, Tensor]


def evaluate(learner: Any, loader: Any, device: torch.device) -> dict[str, float]:
    """Mean loss and accuracy of ``learner.predict`` over ``loader`` (per target element)."""
    metrics = evaluate_batches(learner.predict, loader, loss_fn=learner.loss_fn, device=device)
    return {"test_loss": metrics["loss"], "test_accuracy": metrics["accuracy"]}


class Task:
    """The interface the run loop drives (see the module docstring)."""

    total_steps: int
    num_classes: int
    final_keys: tuple[str, ...] = ("train_loss", "test_loss", "test_accuracy")
    #: Tokens per optimizer step (language models), else ``None``.
    tokens_per_step: int | None = None
    diag_batch: Batch

    def start_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def next_batch(self) -> Batch:
        raise NotImplementedError

    def weight(self, batch: Batch) -> int:
        raise NotImplementedError

    def period_ends(self, step: int) -> bool:
        raise NotImplementedError

    def eval_kind(self, step: int) -> str:
        raise NotImplementedError

    def evaluates_within(self) -> bool:
        """Whether an evaluation falls after the step just taken, inside a period (``evals_per_epoch``)."""
        return False

    def evaluate(self, step: int, index: int, train_loss: float) -> dict[str, Any]:
        """The history entry's head: ``epoch`` (``index``), ``step``, ``train_loss`` and the
        evaluation's metrics."""
        raise NotImplementedError

    def flops_batch_size(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    def data_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def input_shape(self) -> list[int]:
        raise NotImplementedError

    def checkpoint_position(self, step: int, periods: int) -> dict[str, Any]:
        raise NotImplementedError

    def result_extras(self, steps: int, flops_per_step: int, time_per_step: float | None) -> dict[str, Any]:
        return {}

    def frozen(self, step: int) -> tuple[str, ...]:
        """Parameter-name prefixes that must not learn at step ``step`` (:mod:`beyondbp.training.gate`)."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class ClassificationTask(Task):
    """Epochs of shuffled batches of an in-memory :class:`~beyondbp.data.Dataset`
    (:class:`~beyondbp.training.batches.ShuffledBatches`, seeded with the run's seed, on the
    stream a shuffling ``DataLoader`` draws); an evaluation of test loss and accuracy after
    every epoch (and at the end of a step budget)."""

    def __init__(self, config: RunConfig, dataset: data_mod.Dataset, device: torch.device) -> None:
        self.config, self.dataset, self.device = config, dataset, device
        self.batches = ShuffledBatches(dataset.num_train, config.batch_size, config.seed, loader_stream=True)
        self.test_loader = dataset.test_loader(config.eval_batch_size)
        self.steps_per_epoch = len(self.batches)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"data set {config.data!r} has no training samples")
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        self.num_classes = dataset.num_classes
        self.diag_batch = (dataset.x_test[: config.batch_size].to(device), dataset.y_test[: config.batch_size].to(device))
        self.learner: Any = None  # set by the loop (evaluation predicts through the learner)
        self._epoch: list[Tensor] | None = None  # the current epoch's batches (None between epochs)
        self._index = 0  # batches taken from it
        self._epoch_start: Tensor | None = None  # the shuffling generator's state when it began
        self._epochs_begun = 0  # epochs started (a concept shift relabels by stream position)
        every = config.evals_per_epoch  # evaluations inside an epoch: after these of its steps (the last at its end)
        if every > self.steps_per_epoch:
            raise ConfigError(f"evals_per_epoch={every} exceeds the {self.steps_per_epoch} steps of an epoch; "
                              f"give at most {self.steps_per_epoch}")
        self.eval_points = frozenset(i * self.steps_per_epoch // every for i in range(1, every))

    def start_info(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "epochs": math.ceil(self.total_steps / self.steps_per_epoch),
        }

    def _begin_epoch(self) -> None:
        self._epoch_start = self.batches.generator.get_state()
        self._epoch = self.batches.epoch()
        self._index = 0
        self._epochs_begun += 1

    def next_batch(self) -> Batch:
        if self._epoch is None:
            self._begin_epoch()
        idx = self._epoch[self._index]
        start = self._index * self.config.batch_size  # every batch before the last is full
        self._index += 1
        y = self.dataset.y_train[idx]
        shift = self.dataset.concept_shift
        if shift is not None:  # each sample's labels as they read at its place in the stream
            y = shift.relabel(y, shift.swaps_before(self._epochs_begun - 1, start + torch.arange(len(idx)),
                                                    self.dataset.num_train))
        return self.dataset.x_train[idx].to(self.device), y.to(self.device)

    def weight(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    def period_ends(self, step: int) -> bool:
        if self._index >= self.steps_per_epoch or step >= self.total_steps:
            self._epoch = None
            return True
        return False

    def eval_kind(self, step: int) -> str:
        return "test"

    def evaluates_within(self) -> bool:
        return self._epoch is not None and self._index in self.eval_points

    def evaluate(self, step: int, index: int, train_loss: float) -> dict[str, Any]:
        ds = self.dataset
        y_test = ds.y_test
        if ds.concept_shift is not None:  # the labels in force at this point of the stream
            if self._epoch is None:
                swaps = ds.concept_shift.swaps_per_epoch * self._epochs_begun
            else:
                position = min(self._index * self.config.batch_size, ds.num_train)
                swaps = int(ds.concept_shift.swaps_before(self._epochs_begun - 1, torch.tensor([position]), ds.num_train)[0])
            y_test = ds.concept_shift.relabel(y_test, swaps)
        metrics = evaluate_tensors(self.learner.predict, ds.x_test, y_test, batch_size=self.config.eval_batch_size,
                                   loss_fn=self.learner.loss_fn, device=self.device)
        return {"epoch": index, "step": step, "train_loss": train_loss,
                "test_loss": metrics["loss"], "test_accuracy": metrics["accuracy"]}

    def data_info(self) -> dict[str, Any]:
        ds = self.dataset
        return {
            "name": ds.name,
            "description": ds.description,
            "n_train": ds.num_train,
            "n_test": ds.num_test,
            "input_shape": list(ds.input_shape),
            "num_classes": ds.num_classes,
            **({"liquid": dict(ds.meta["liquid"])} if "liquid" in ds.meta else {}),
        }

    def input_shape(self) -> list[int]:
        # a liquid's features stand in for the images the model takes (training/liquid.py)
        return list(self.dataset.meta.get("model_input_shape", self.dataset.input_shape))

    def checkpoint_position(self, step: int, periods: int) -> dict[str, Any]:
        return {"epoch": periods, "step": step}

    def result_extras(self, steps: int, flops_per_step: int, time_per_step: float | None) -> dict[str, Any]:
        """``spikes``: per spiking layer, mean firing rate and fraction of silent neurons on the
        test set (``{}``, at no cost, for a model without spiking layers); for a liquid (model
        ``lsm``), ``{"liquid": ...}``, its measurements (:mod:`beyondbp.training.liquid`)."""
        if "liquid" in self.dataset.meta:
            return {"spikes": {"liquid": dict(self.dataset.meta["liquid"]["measurements"])}}
        return {"spikes": spike_statistics(self.learner.model, self.test_loader)}

    # -- resuming: the epoch's shuffling state and how far into the epoch ------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "in_epoch": self._epoch is not None,
            "epoch_start": self._epoch_start,
            "index": self._index,
            "generator": self.batches.generator.get_state(),
            "epochs_begun": self._epochs_begun,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state["in_epoch"]:
            self.batches.generator.set_state(state["generator"])
            self._epochs_begun = int(state.get("epochs_begun", 0))
            return
        # redraw the epoch's order from its start and skip the batches already trained on
        self.batches.generator.set_state(state["epoch_start"])
        self._begin_epoch()
        self._index = int(state["index"])
        self._epochs_begun = int(state.get("epochs_begun", 1))


class LanguageModelTask(Task):
    """Random training windows of a :class:`~beyondbp.data.TextDataset` drawn by a generator
    seeded with the run's seed; evaluations at ``LM_EVALS`` evenly spaced steps."""

    final_keys = ("train_loss", "test_loss", "test_accuracy", "val_loss")

    def __init__(self, config: RunConfig, dataset: data_mod.TextDataset, device: torch.device) -> None:
        self.config, self.dataset, self.device = config, dataset, device
        self.context = lm_context(config)
        self.tokens_per_step = config.batch_size * self.context
        self.total_steps = (
            config.steps if config.steps is not None else max(1, math.ceil(config.tokens / self.tokens_per_step))
        )
        n_evals = min(LM_EVALS, self.total_steps)
        self.eval_steps = sorted({max(1, round(self.total_steps * (k + 1) / n_evals)) for k in range(n_evals)})
        self.num_classes = dataset.vocab_size
        self.diag_batch = tuple(t.to(device) for t in dataset.val_windows(self.context, config.batch_size))
        self.generator = torch.Generator().manual_seed(config.seed)
        self.learner: Any = None

    def start_info(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps, "steps_per_epoch": self.total_steps, "epochs": 1,
            "tokens": self.total_steps * self.tokens_per_step,
        }

    def next_batch(self) -> Batch:
        x, y = self.dataset.batch(self.config.batch_size, self.context, self.generator)
        return x.to(self.device), y.to(self.device)

    def weight(self, batch: Batch) -> int:
        return 1

    def flops_batch_size(self, batch: Batch) -> int:
        return self.config.batch_size

    def period_ends(self, step: int) -> bool:
        return step in self.eval_steps

    def _windows(self, step: int) -> int | None:
        config = self.config
        if step == self.total_steps:
            return config.eval_windows
        return min(config.eval_windows or LM_CURVE_WINDOWS, LM_CURVE_WINDOWS)

    def eval_kind(self, step: int) -> str:
        windows = self._windows(step)
        return f"windows={'all' if windows is None else windows}"

    def evaluate(self, step: int, index: int, train_loss: float) -> dict[str, Any]:
        val = self.dataset.val_metrics(
            self.learner.model, self.context, batch_size=self.config.eval_batch_size,
            max_windows=self._windows(step), device=self.device,
        )
        return {
            "epoch": index,
            "step": step,
            "tokens": step * self.tokens_per_step,
            "train_loss": train_loss,
            "test_loss": val["loss"],
            "test_accuracy": val["accuracy"],
            "val_loss": val["loss"],
        }

    def data_info(self) -> dict[str, Any]:
        ds = self.dataset
        return {
            "name": ds.name,
            "description": ds.description,
            "n_train_tokens": len(ds.train),
            "n_val_tokens": len(ds.val),
            "vocab_size": ds.vocab_size,
            "num_classes": ds.vocab_size,
            "input_shape": [self.context],
            "context": self.context,
            "baselines": ds.baselines(),
        }

    def input_shape(self) -> list[int]:
        return [self.context]

    def checkpoint_position(self, step: int, periods: int) -> dict[str, Any]:
        return {
            "context": self.context, "codec": self.dataset.codec.to_dict(), "step": step,
            "tokens": step * self.tokens_per_step,
        }

    def result_extras(self, steps: int, flops_per_step: int, time_per_step: float | None) -> dict[str, Any]:
        per = self.tokens_per_step
        return {
            "tokens": steps * per,
            "flops_per_token": flops_per_step / per,
            "time_per_token": None if time_per_step is None else time_per_step / per,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class ScheduledTask(Task):
    """A :class:`~beyondbp.data.ScheduledDataset`: the batch of step ``k`` is ``dataset.batch(k)``
    (the data decides what changes with the step; the loop only asks), one full batch per step,
    for ``steps`` or the set's schedule (``epochs = 1``); the learner trains on the set's own loss
    (``dataset.loss_fn``, attached by :func:`~beyondbp.training.loop.prepare`). A period ends every
    ``eval_every`` steps, at each of the set's ``boundaries`` (a switch of observed entries) and
    at the end; its evaluation is ``dataset.evaluate`` (``test_loss``; ``test_accuracy`` is NaN)
    plus ``dataset.step_info`` and ``dataset.measure(model)`` (read under ``learner.measuring()``;
    its ``dataset.final_keys`` also go to the result's ``final``). ``dataset.frozen(step)`` names
    the parameters the loop's learning gate freezes at a step; ``dataset.check_steps`` refuses a
    budget the schedule does not fit. The resume state is the step reached."""

    def __init__(self, config: RunConfig, dataset: data_mod.ScheduledDataset, device: torch.device) -> None:
        self.config, self.dataset, self.device = config, dataset, device
        self.total_steps = config.steps if config.steps is not None else dataset.schedule_steps
        self.num_classes = dataset.num_classes
        self.learner: Any = None
        self._step = 0
        self._ends = set(dataset.boundaries)
        self.final_keys = Task.final_keys + tuple(dataset.final_keys)
        dataset.check_steps(self.total_steps)
        self.diag_batch = dataset.batch(self.total_steps, device)

    def start_info(self) -> dict[str, Any]:
        every = self.dataset.eval_every
        return {"total_steps": self.total_steps, "steps_per_epoch": min(every, self.total_steps),
                "epochs": math.ceil(self.total_steps / every)}

    def next_batch(self) -> Batch:
        batch = self.dataset.batch(self._step, self.device)
        self._step += 1
        return batch

    def weight(self, batch: Batch) -> int:
        return 1

    def period_ends(self, step: int) -> bool:
        return step % self.dataset.eval_every == 0 or step in self._ends or step >= self.total_steps

    def eval_kind(self, step: int) -> str:
        return "test"

    def evaluate(self, step: int, index: int, train_loss: float) -> dict[str, Any]:
        metrics = self.dataset.evaluate(self.learner.predict, self.device)
        with self.learner.measuring(), torch.no_grad():  # reads the model; changes nothing
            measures = self.dataset.measure(self.learner.model)
        return {"epoch": index, "step": step, "train_loss": train_loss, "test_accuracy": math.nan,
                **metrics, **self.dataset.step_info(step), **measures}

    def frozen(self, step: int) -> tuple[str, ...]:
        return tuple(self.dataset.frozen(step))

    def data_info(self) -> dict[str, Any]:
        return self.dataset.info()

    def input_shape(self) -> list[int]:
        return list(self.dataset.input_shape)

    def checkpoint_position(self, step: int, periods: int) -> dict[str, Any]:
        return {"epoch": periods, "step": step}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step = int(state["step"])


def make_task(config: RunConfig, dataset: Any, device: torch.device) -> Task:
    """The task of a run: by the data set's kind (language-model sets, scheduled sets, or
    classification)."""
    if data_mod.is_text(config.data):
        return LanguageModelTask(config, dataset, device)
    if data_mod.is_scheduled(config.data):
        return ScheduledTask(config, dataset, device)
    return ClassificationTask(config, dataset, device)
