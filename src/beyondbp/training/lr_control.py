"""Learning-rate controllers around the optimizer step, for any rule and any optimizer.

A run with ``lr_control="homeostatic"`` uses the homeostatic learning rate of "Need is All You
Need: Homeostatic Neural Networks Adapt to Concept Shift" (Man, Damasio, Neven; the authors'
``lrh.py``); ``lr_control="random"`` is their random-nudge control (``lrr.py``).

The rule, in our words. The network keeps a controlled learning rate η, starting at the run's
``lr`` (η₀). Every ``interval`` training samples (default 10) it takes a decision from the
sample at that position of the stream:

* homeostatic: it guesses the sample's class with its current weights; a guess in the upper
  half of the classes (index ≥ C/2: the "excitatory" classes 5..9 of a 10-class problem) makes
  the candidate rate η + δ, a guess in the lower ("inhibitory") half η − δ, with
  δ = ``step``·η₀ (default 0.1, so δ = η₀/10). It then simulates this step's update twice —
  once with η, once with the candidate — and counts, for each, the correct answers on the last
  ``memory`` training samples it saw (default 20). If the candidate scores strictly better, η
  moves by δ — but in the direction of the sample's *true* class half (upper: +δ, lower: −δ),
  which can be the other direction when the guess was wrong. No decision is taken before
  ``memory`` samples have been seen;
* random: at each decision point after the first, with probability ½ (a draw from the
  controller's own generator, seeded with the run's seed), η moves by δ in the direction of the
  sample's true class half. Nothing is simulated.

η never goes below ``floor`` (default 1e-8): a move that would leave it lower leaves it at
``floor`` (the authors clip at 1e-8 when it turns negative).

How it composes. The controller wraps the run's optimizer for one batch
(:meth:`LRController.around`): when the rule calls ``optimizer.step()``, the decision due in this
batch is taken first, then every parameter group steps with its scheduled rate times η/η₀ (so
η multiplies any learning-rate schedule), and the groups' rates are put back. The simulation
takes one trial step of the real optimizer (its momentum buffers, Adam moments, weight decay)
with the rates per unit of η, reads the update direction off the weights, and evaluates
``weights + η'·direction`` for both candidates: exact for SGD, Adam and AdamW, whose update is
linear in the learning rate given their state. Weights, optimizer state, ``.grad``, buffers,
module modes, the global RNG and the rule's generators are restored exactly afterwards
(:meth:`beyondbp.rules.Learner.measuring`), so a decision changes nothing but η.

Batching. The authors train at batch size 10 and decide at the first sample of every batch of
10, from that single sample's gradient, scoring on the 20 samples before it. Here the simulated
update is the whole batch's (what the optimizer will really apply), the memory holds the last
``memory`` samples seen before the batch, and a batch with several decision positions (batch
size > ``interval``) takes one decision, at its first one. At batch size 10 and ``interval`` 10
the decision points coincide with the authors'; what differs: the update simulated is the
batch's rather than its first sample's, the memory carries across epochs (theirs restarts each
epoch, skipping the first three batches), and remembered labels are kept as seen (theirs are
re-read after a concept shift). Scoring uses the model in eval mode (``learner.predict``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

__all__ = ["LRController", "MODES", "homeostatic_move", "make_lr_control"]

MODES = ("homeostatic", "random")


def homeostatic_move(eta: float, keep_correct: int, move_correct: int, true_upper: bool, delta: float,
                     floor: float) -> float:
    """The homeostatic decision: η after one decision, given the correct counts of keeping η
    (``keep_correct``) and of the candidate rate (``move_correct``) on the remembered samples,
    and whether the sample's true class is in the upper half: ±``delta`` if the candidate
    scored strictly better, else η; never below ``floor``."""
    if move_correct > keep_correct:
        return max(eta + (delta if true_upper else -delta), floor)
    return eta


class LRController:
    """The controlled learning rate of one run (see the module docstring).

    Args:
        mode: ``"homeostatic"`` or ``"random"``.
        learner: the attached learner (its ``predict`` and ``measuring`` are used).
        lr: η₀, the run's learning rate.
        num_classes: C; the upper half is class index ≥ C/2.
        interval: samples between decision points.
        memory: remembered samples each candidate is scored on (homeostatic).
        step: a move's size as a fraction of η₀.
        floor: the smallest η.
        seed: seed of the random control's generator.
    """

    def __init__(self, mode: str, learner: Any, *, lr: float, num_classes: int, interval: int = 10,
                 memory: int = 20, step: float = 0.1, floor: float = 1e-8, seed: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown lr_control {mode!r}; it must be one of {', '.join(MODES)}")
        self.mode, self.learner = mode, learner
        self.eta0 = self.eta = float(lr)
        self.delta, self.floor = float(step) * float(lr), float(floor)
        self.interval, self.memory, self.num_classes = int(interval), int(memory), int(num_classes)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.seen = 0  # training samples seen before the current batch
        self.memory_x: Tensor | None = None
        self.memory_y: Tensor | None = None
        self.decisions = 0
        self.moves = 0
        self._due: int | None = None  # the index in the current batch of its decision sample
        self._batch: tuple[Tensor, Tensor] | None = None

    # -- per batch -------------------------------------------------------------------------------
    def around(self, optimizer: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]) -> "_Controlled":
        """``optimizer`` for ``batch``: its ``step`` takes this batch's decision first (once),
        then steps at the controlled rate."""
        first = (-self.seen) % self.interval
        n = int(batch[0].shape[0])
        due = first if first < n else None
        if due is not None and self.mode == "random" and self.seen + due == 0:
            due = None  # the authors' random control skips the stream's first sample
        if due is not None and self.mode == "homeostatic" and (self.memory_y is None or len(self.memory_y) < self.memory):
            due = None
        self._due, self._batch = due, batch
        return _Controlled(self, optimizer)

    def after(self, batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        """Remember ``batch`` and count its samples; the metrics to merge into the step's."""
        x, y = batch
        if self.mode == "homeostatic":
            keep = self.memory
            xs = x.detach() if self.memory_x is None else torch.cat([self.memory_x, x.detach()])
            ys = y.detach() if self.memory_y is None else torch.cat([self.memory_y, y.detach()])
            self.memory_x, self.memory_y = xs[-keep:].clone(), ys[-keep:].clone()
        self.seen += int(x.shape[0])
        self._due = self._batch = None
        return {"lr_controlled": self.eta}

    # -- the decision ----------------------------------------------------------------------------
    def _upper(self, label: int) -> bool:
        return 2 * int(label) >= self.num_classes

    def decide(self, optimizer: torch.optim.Optimizer) -> None:
        """Take the decision due in the current batch (if any); changes only η."""
        if self._due is None or self._batch is None:
            return
        x, y = self._batch
        j, self._due = self._due, None
        true_upper = self._upper(int(y[j]))
        self.decisions += 1
        before = self.eta
        if self.mode == "random":
            if float(torch.rand((), generator=self.generator)) > 0.5:
                self.eta = max(self.eta + (self.delta if true_upper else -self.delta), self.floor)
        else:
            sign = 1.0 if self._upper(self._guess(x[j : j + 1])) else -1.0
            candidate = max(self.eta + sign * self.delta, self.floor)
            keep_correct, move_correct = self._scores(optimizer, (self.eta, candidate))
            self.eta = homeostatic_move(self.eta, keep_correct, move_correct, true_upper, self.delta, self.floor)
        self.moves += int(self.eta != before)

    def _guess(self, x: Tensor) -> int:
        """The class the current weights give ``x`` (one sample)."""
        with self.learner.measuring():
            return int(self.learner.predict(x).reshape(x.shape[0], -1).argmax(dim=1)[0])

    def _scores(self, optimizer: torch.optim.Optimizer, etas: tuple[float, ...]) -> list[int]:
        """Correct answers on the remembered samples after this step at each rate in ``etas``,
        simulated (see the module docstring); everything but the counts is restored."""
        groups = optimizer.param_groups
        params = [p for g in groups for p in g["params"]]
        scheduled = [g["lr"] for g in groups]
        state = {p: {k: (v.clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in s.items()}
                 for p, s in optimizer.state.items()}
        mx, my = self.memory_x, self.memory_y
        if mx is None or my is None:
            return [0 for _ in etas]
        counts = []
        with self.learner.measuring(), torch.no_grad():
            saved = [p.detach().clone() for p in params]
            try:
                for g, lr in zip(groups, scheduled):
                    g["lr"] = lr / self.eta0  # the step per unit of the controlled rate
                optimizer.step()
                unit = [p.detach() - s for p, s in zip(params, saved)]
                for eta in etas:
                    for p, s, u in zip(params, saved, unit):
                        p.copy_(s + eta * u)
                    guess = self.learner.predict(mx).reshape(len(my), -1).argmax(dim=1)
                    counts.append(int((guess == my).sum()))
            finally:
                for p, s in zip(params, saved):
                    p.copy_(s)
                optimizer.state.clear()
                optimizer.state.update(state)
                for g, lr in zip(groups, scheduled):
                    g["lr"] = lr
        return counts

    # -- resuming --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"eta": self.eta, "seen": self.seen, "memory_x": self.memory_x, "memory_y": self.memory_y,
                "generator": self.generator.get_state(), "decisions": self.decisions, "moves": self.moves}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eta, self.seen = float(state["eta"]), int(state["seen"])
        self.memory_x, self.memory_y = state["memory_x"], state["memory_y"]
        self.generator.set_state(state["generator"])
        self.decisions, self.moves = int(state["decisions"]), int(state["moves"])


class _Controlled:
    """The run's optimizer seen through the controller for one batch: ``step`` decides, then
    steps every group at its scheduled rate times η/η₀; everything else is the optimizer's."""

    def __init__(self, controller: LRController, optimizer: torch.optim.Optimizer) -> None:
        self._controller, self._optimizer = controller, optimizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)

    def step(self, closure: Any = None) -> Any:
        control, optimizer = self._controller, self._optimizer
        control.decide(optimizer)
        scheduled = [g["lr"] for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, scheduled):
            g["lr"] = lr * control.eta / control.eta0
        try:
            return optimizer.step(closure)
        finally:
            for g, lr in zip(optimizer.param_groups, scheduled):
                g["lr"] = lr


def make_lr_control(config: Any, learner: Any, num_classes: int) -> LRController | None:
    """The run's controller from its settings (``None`` when ``lr_control`` is ``"none"``)."""
    if config.lr_control == "none":
        return None
    return LRController(
        config.lr_control, learner, lr=config.lr, num_classes=num_classes, interval=config.lr_control_interval,
        memory=config.lr_control_memory, step=config.lr_control_step, floor=config.lr_control_floor, seed=config.seed,
    )
