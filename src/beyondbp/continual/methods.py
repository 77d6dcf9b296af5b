"""Continual-learning methods and the loop that trains a task sequence with any rule.

Every method trains through the rule's own ``learner.step(batch, optimizer)``; the optimizer it
is given is the user's SGD wrapped so that, after the rule's backward pass has filled ``.grad``
and before the parameters move, the method may change the gradients (GPM and HLOP project them,
EWC adds its penalty's gradient) and HLOP's lateral neurons take their Hebbian steps.

``finetune``  Plain sequential training, nothing protects old tasks ("naive fine-tuning").
``ewc``       Elastic weight consolidation ("Overcoming catastrophic forgetting in neural
              networks", Kirkpatrick et al., PNAS 2017). After task ``t`` the diagonal Fisher
              ``F_t = E[(∂ log p(y|x)/∂θ)²]`` is estimated from ``fisher_samples = 200`` training
              samples of task ``t``, one sample at a time, with the *true labels* (the "empirical"
              Fisher) and true backprop gradients of the (masked) loss, whatever rule trains the
              network; later tasks add ``λ Σ_t F_t (θ − θ*_t)`` to every parameter's gradient
              (the gradient of ``λ/2 Σ_t Σ_i F_{t,i}(θ_i − θ*_{t,i})²``), ``λ = lam = 100``.
              Difference from the paper: with plain SGD at learning rate η this explicit step
              overshoots (and diverges) wherever ``η λ ΣF > 2``, so each parameter's penalty
              gradient is divided by ``max(1, η λ Σ_t F_t)`` — one step never moves a parameter
              past the anchors' Fisher-weighted mean. Where ``η λ ΣF ≤ 1`` it is the plain
              penalty.
``gpm``       Gradient Projection Memory (Saha, Garg, Roy 2021); see
              :mod:`beyondbp.continual.projection` (300 samples, thresholds 0.95 / 0.99).
``hlop``      Hebbian Learning based Orthogonal Projection (Xiao et al., ICLR 2024); see
              :mod:`beyondbp.continual.projection`. Defaults from the authors' permuted-MNIST
              script (``spiking_train_pmnist.py``): lateral neurons per layer ``[80, 200, 100]``
              for the first / hidden / last weight layer at task 0, then ``70`` more per layer
              per task, 20 fewer from task 3, 6 and 9 on (70, 70, 50, 50, 50, 30, 30, 30, 10);
              Hebbian learning rate 0.001 for the first layer and 0.01 for the others, 5 Hebbian
              iterations per batch, momentum 0.9, clamp ±10, and the step-size guard
              ``lr ≤ 1/mean‖x‖²`` of :mod:`~beyondbp.continual.projection` (``guard=False`` turns
              it off: the official rule). These sizes belong to their
              784-800-800-10 network; for a layer whose input width ``n`` differs from theirs (784
              for the first layer, 800 for the others) every count is scaled by ``n / theirs``
              and rounded, and no layer gets more neurons than its input width. Options:
              ``sizes`` (one count per Linear/Conv2d layer for task 0, used as given),
              ``increment`` (neurons added per layer at every later task, as given),
              ``lr_first``, ``lr``, ``iterations``, ``momentum``, ``clamp``, ``guard``.
``multitask`` Joint training on the union of all tasks' training sets (shuffled together) for
              ``epochs_per_task`` epochs, i.e. the same number of steps as the sequence: the
              upper bound. Only the last row of its accuracy matrix exists.

Task-incremental sequences (``split-fashion-mnist:task``): the training loss adds to every
sample's logits the mask of its label's task (:class:`MaskedCrossEntropy` over
:func:`class_masks`; the tasks' classes are disjoint, so a label names its task), and every
evaluation masks with the evaluated task's classes.

Seeding (``seed_everything(seed)`` before the model is built), the optimizer
(``build_optimizer("sgd", ...)``), the shuffled batches (:class:`~beyondbp.training.batches.ShuffledBatches`,
one generator per task seeded with ``seed · 1000003 + t``; ``seed · 1000003`` for joint training)
and the evaluation (:func:`~beyondbp.training.batches.evaluate_tensors`) come from the run layer
(:mod:`beyondbp.training`); this module adds the methods' hooks and the accuracy matrix.

Rules: finetune and multitask take any rule; ewc, gpm and hlop take the rules whose weight
update is δ·xᵀ-shaped (``projection.COMPOSABLE_RULES``), others are refused with one sentence.

Defaults of :func:`run_method` follow the official HLOP permuted-MNIST script: SGD, learning
rate 0.1, batch 64, 1 epoch per task, a new optimizer for every task; model ``mlp`` with widths
``(800, 800)`` and no biases unless the caller sets ``model_options``. Where the official network
is a spiking MLP (LIF neurons, 20 time steps), ``--model mlp`` is a ReLU MLP; ``snn-mlp`` runs
the same methods on the library's spiking MLP.

Divergence, as the run loop defines it (:func:`beyondbp.training.components.diverged`): after every epoch
of every task, an epoch-mean training loss that is not finite or exceeds 100 × max(first
step's loss, log(classes)) stops the method's training; the result says ``"diverged": True``
with ``diverged_at_task`` (None for ``multitask``) and ``diverged_at_step`` (optimizer steps),
and the rows of the accuracy matrix from that task on are left unmeasured (NaN). ``beyondbp
continual`` then exits with status 3 once every other method/rule pair has run.

The result's ``notes`` lists sentences the reader should know: task 0 barely learnt
(:func:`~beyondbp.continual.metrics.first_task_note`: no method acts on task 0, so the recipe is
the cause) and GPM's bases spanning ≥ 90 % of a layer's inputs before the last task (:meth:`GPM.notes`).
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Callable

import torch
from pydantic import Field
from torch import Tensor, nn

from beyondbp import models as models_mod
from beyondbp import options as options_mod
from beyondbp import rules as rules_mod
from beyondbp.continual.metrics import first_task_note, summary
from beyondbp.continual.projection import (
    GradientProjector,
    HebbianSubspace,
    InputRecorder,
    check_composable,
    gpm_extend,
    input_dim,
    projectable_layers,
)
from beyondbp.continual.tasks import MaskedCrossEntropy, TaskSequence, _class_mask, class_masks
from beyondbp.errors import ConfigError, DataError
from beyondbp.options import opt
from beyondbp.rules.base import is_rule_tensor
from beyondbp.training.batches import ShuffledBatches, evaluate_tensors
from beyondbp.training.components import build_optimizer, seed_everything
from beyondbp.training.components import diverged as _diverged
from beyondbp.training.config import check_count

__all__ = ["METHODS", "MaskedCrossEntropy", "Method", "build_model", "check_budget", "class_masks",
           "default_model_options", "describe_options", "make_method", "run_method", "task_accuracy"]


class _Optimizer:
    """The caller's optimizer with a hook run after backward, before the parameters move."""

    def __init__(self, inner: torch.optim.Optimizer, before_step: Callable[[], None]) -> None:
        self.inner = inner
        self.before_step = before_step

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    @property
    def state(self) -> Any:
        return self.inner.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> Any:
        self.before_step()
        return self.inner.step(closure)


class Method:
    """Base: naive fine-tuning (every hook does nothing).

    A method's options are declared in its ``Options`` class (:mod:`beyondbp.options`); its
    constructor validates them with :meth:`parse_options`, so a bad value or an unknown name is
    refused with one sentence naming the method (``"continual method 'ewc' option lam must be a
    number >= 0, got -1"``)."""

    name = "finetune"
    sequential = True
    Options: type[options_mod.Options] = options_mod.NoOptions

    def __init__(self, **options: Any) -> None:
        self.parse_options(options)

    @classmethod
    def parse_options(cls, values: dict[str, Any]) -> options_mod.Options:
        """``values`` checked against :attr:`Options` (:class:`ConfigError`, one sentence)."""
        return options_mod.parse(cls.Options, values, f"continual method '{cls.name}'")

    def check_rule(self, rule_name: str) -> None:
        """Refuse a rule the method cannot compose with."""

    def setup(self, model: nn.Module, learner: Any, seq: TaskSequence, seed: int) -> None:
        self.model, self.learner, self.seq, self.seed = model, learner, seq, seed

    def begin_task(self, t: int) -> None:
        pass

    def before_step(self) -> None:
        """After the rule's backward, before ``optimizer.step()``."""

    def end_task(self, t: int, x: Tensor, y: Tensor) -> None:
        pass

    def recording(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def notes(self, n_tasks: int) -> list[str]:
        """Sentences about this run the reader should know (e.g. GPM's bases filling a layer)."""
        return []


class Finetune(Method):
    name = "finetune"


class Multitask(Method):
    name = "multitask"
    sequential = False


class EWC(Method):
    name = "ewc"

    class Options(options_mod.Options):
        lam: float = opt(100.0, "strength λ of the penalty λ/2 Σ_t Σ_i F_t,i (θ_i − θ*_t,i)²", ge=0)
        fisher_samples: int = opt(200, "training samples of a task that estimate its diagonal Fisher", ge=1)

    def __init__(self, lam: float = 100.0, fisher_samples: int = 200) -> None:
        self.parse_options({"lam": lam, "fisher_samples": fisher_samples})
        self.lam = float(lam)
        self.fisher_samples = fisher_samples
        self.anchors: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    def check_rule(self, rule_name: str) -> None:
        check_composable(rule_name, self.name)

    def _params(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad and not is_rule_tensor(n)}

    @torch.no_grad()
    def before_step(self) -> None:
        if not self.anchors or self.lam == 0:
            return
        lr = float(getattr(self, "lr", 0.0))
        for name, p in self._params().items():
            pen = torch.zeros_like(p)
            coef = torch.zeros_like(p)
            for fisher, star in self.anchors:
                pen += fisher[name] * (p - star[name])
                coef += fisher[name]
            pen.mul_(self.lam)
            if lr > 0:  # never step a parameter past its anchors: lr·λ·ΣF capped at 1
                pen.div_(torch.clamp(coef.mul_(self.lam * lr), min=1.0))
            if p.grad is None:
                p.grad = pen
            else:
                p.grad.add_(pen)

    def end_task(self, t: int, x: Tensor, y: Tensor) -> None:
        g = torch.Generator().manual_seed(self.seed * 1000 + t)
        idx = torch.randperm(x.shape[0], generator=g)[: self.fisher_samples]
        params = self._params()
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        for i in idx.tolist():
            grads = self.learner.backprop_gradients((x[i : i + 1], y[i : i + 1]))
            for n in fisher:
                if grads.get(n) is not None:
                    fisher[n] += grads[n].detach() ** 2
        for n in fisher:
            fisher[n] /= len(idx)
        self.anchors.append((fisher, {n: p.detach().clone() for n, p in params.items()}))


class _Projection(Method):
    """Shared by GPM and HLOP: the layers, their input recorder and the gradient projector."""

    def check_rule(self, rule_name: str) -> None:
        check_composable(rule_name, self.name)

    def setup(self, model: nn.Module, learner: Any, seq: TaskSequence, seed: int) -> None:
        super().setup(model, learner, seq, seed)
        self.layers = projectable_layers(model)
        self.recorder = InputRecorder(self.layers)
        self.projector = GradientProjector(self.layers)

    def close(self) -> None:
        self.recorder.remove()


class GPM(_Projection):
    name = "gpm"

    class Options(options_mod.Options):
        samples: int = opt(300, "training samples of a task whose layer inputs extend the bases", ge=1)
        threshold_first: float = opt(0.95, "energy of the first layer's inputs a basis keeps", gt=0, le=1)
        threshold: float = opt(0.99, "energy of the other layers' inputs a basis keeps", gt=0, le=1)

    def __init__(self, samples: int = 300, threshold_first: float = 0.95, threshold: float = 0.99) -> None:
        self.parse_options({"samples": samples, "threshold_first": threshold_first, "threshold": threshold})
        self.samples, self.threshold_first, self.threshold = samples, float(threshold_first), float(threshold)

    def setup(self, model: nn.Module, learner: Any, seq: TaskSequence, seed: int) -> None:
        super().setup(model, learner, seq, seed)
        self.U = {name: torch.zeros(input_dim(m), 0) for name, m in self.layers.items()}
        self.history: list[dict[str, int]] = []  # basis sizes after each task

    def before_step(self) -> None:
        self.projector.project()

    @torch.no_grad()
    def end_task(self, t: int, x: Tensor, y: Tensor) -> None:
        g = torch.Generator().manual_seed(self.seed * 1000 + t)
        idx = torch.randperm(x.shape[0], generator=g)[: self.samples]
        was = self.model.training
        self.model.eval()
        self.recorder.clear()
        self.recorder.recording = True
        try:
            self.model(x[idx])
        finally:
            self.recorder.recording = False
            self.model.train(was)
        for k, name in enumerate(self.layers):
            th = self.threshold_first if k == 0 else self.threshold
            self.U[name] = gpm_extend(self.U[name], self.recorder.rows[name].T, th)
            self.projector.set_basis(name, self.U[name].T.contiguous())
        self.recorder.clear()
        self.history.append(self.sizes())

    def sizes(self) -> dict[str, int]:
        return {n: int(u.shape[1]) for n, u in self.U.items()}

    def notes(self, n_tasks: int) -> list[str]:
        """The first task after which, with tasks still to come, a layer's bases span ≥ 90 % of
        its input directions: later tasks may change that layer only in the few left."""
        for t, sizes in enumerate(self.history[: n_tasks - 1]):
            full = [f"{k} of {name}'s {self.U[name].shape[0]}" for name, k in sizes.items()
                    if k >= FULL_BASIS * self.U[name].shape[0]]
            if full:
                return [f"after task {t} the GPM bases span {', '.join(full)} input directions: the later "
                        f"tasks can change those layers only in the few left and learn little (the paper's "
                        f"thresholds on narrow layers); lower threshold / threshold_first or widen the layers"]
        return []


#: GPM's note: a layer's bases span at least this fraction of its input directions
FULL_BASIS = 0.9

#: The official permuted-MNIST schedule (first, hidden, last layer) and their layer widths.
HLOP_FIRST = (80, 200, 100)
HLOP_INCREMENT = 70
HLOP_REFERENCE_WIDTH = (784, 800, 800)


def hlop_increment(t: int) -> int:
    """Neurons added per layer (before scaling) at the start of task ``t ≥ 1``: 70, reduced by 20
    at tasks 3, 6, 9, ... (never below 0)."""
    return max(0, HLOP_INCREMENT - 20 * (t // 3))


class HLOP(_Projection):
    name = "hlop"

    class Options(options_mod.Options):
        lr_first: float = opt(0.001, "Hebbian learning rate of the first layer's lateral neurons", gt=0)
        lr: float = opt(0.01, "Hebbian learning rate of the other layers' lateral neurons", gt=0)
        iterations: int = opt(5, "Hebbian iterations per batch", ge=1)
        momentum: float = opt(0.9, "momentum of the Hebbian steps", ge=0, lt=1)
        clamp: float = opt(10.0, "clamp of the lateral neurons' responses (±clamp)", gt=0)
        sizes: list[Annotated[int, Field(ge=1)]] | None = opt(
            None, "lateral neurons per Linear/Conv2d layer at task 0, as given (None: the official schedule, scaled)",
            accepts="a list of integers >= 1 (one per Linear/Conv2d layer) or null (None)")
        increment: int | None = opt(
            None, "lateral neurons added per layer at every later task, as given (None: the official schedule)", ge=0)
        guard: bool = opt(True, "the step-size guard lr <= 1/mean‖x‖² (False: the official rule)")

    def __init__(self, lr_first: float = 0.001, lr: float = 0.01, iterations: int = 5, momentum: float = 0.9,
                 clamp: float = 10.0, sizes: list[int] | None = None, increment: int | None = None,
                 guard: bool = True) -> None:
        self.parse_options({"lr_first": lr_first, "lr": lr, "iterations": iterations, "momentum": momentum,
                            "clamp": clamp, "sizes": sizes, "increment": increment, "guard": guard})
        self.lr_first, self.lr, self.iterations = float(lr_first), float(lr), iterations
        self.momentum, self.clamp = float(momentum), float(clamp)
        self.sizes_option, self.increment = (list(sizes) if sizes else None), increment
        self.guard = bool(guard)

    def setup(self, model: nn.Module, learner: Any, seq: TaskSequence, seed: int) -> None:
        super().setup(model, learner, seq, seed)
        n_layers = len(self.layers)
        if self.sizes_option is not None and len(self.sizes_option) != n_layers:
            raise ConfigError(f"hlop: sizes has {len(self.sizes_option)} entries but the model has {n_layers} "
                              f"Linear/Conv2d layers ({', '.join(self.layers)})")
        self.subspaces: dict[str, HebbianSubspace] = {}
        self.role: dict[str, int] = {}
        for k, (name, m) in enumerate(self.layers.items()):
            role = 0 if k == 0 else (2 if k == n_layers - 1 else 1)
            self.role[name] = role
            self.subspaces[name] = HebbianSubspace(
                input_dim(m), self.lr_first if k == 0 else self.lr, self.iterations, self.momentum, self.clamp,
                seed=seed * 7919 + k, guard=self.guard)

    def _count(self, name: str, t: int) -> int:
        """Neurons to add to layer ``name`` at the start of task ``t``: ``sizes`` / ``increment``
        as given when set, otherwise the official schedule scaled to the layer's input width."""
        if t == 0 and self.sizes_option is not None:
            return self.sizes_option[list(self.layers).index(name)]
        if t > 0 and self.increment is not None:
            return self.increment
        base = HLOP_FIRST[self.role[name]] if t == 0 else hlop_increment(t)
        return int(round(base * self.subspaces[name].n / HLOP_REFERENCE_WIDTH[self.role[name]]))

    def begin_task(self, t: int) -> None:
        for name, sub in self.subspaces.items():
            sub.add(self._count(name, t))  # freezes the previous tasks' neurons
            self.projector.set_basis(name, sub.basis())

    def recording(self) -> bool:
        return True

    def before_step(self) -> None:
        self.projector.project()
        for name, rows in self.recorder.rows.items():
            self.subspaces[name].update(rows)
        self.recorder.clear()

    def end_task(self, t: int, x: Tensor, y: Tensor) -> None:
        for sub in self.subspaces.values():
            sub.freeze()

    def sizes(self) -> dict[str, int]:
        return {n: s.size for n, s in self.subspaces.items()}


METHODS: dict[str, type[Method]] = {"finetune": Finetune, "ewc": EWC, "gpm": GPM, "hlop": HLOP, "multitask": Multitask}


def _method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown continual-learning method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def make_method(name: str, **options: Any) -> Method:
    """The method called ``name`` with ``options`` (its ``Options`` declaration: an unknown
    name or a bad value is refused with one sentence listing what the method takes)."""
    cls = _method_class(name)
    cls.parse_options(options)
    return cls(**options)


def describe_options(name: str) -> list[dict[str, str]]:
    """Name, what it accepts, default and help of every option of method ``name``
    (:func:`beyondbp.options.describe`; empty for a method without options)."""
    return options_mod.describe(_method_class(name).Options)


def task_accuracy(learner: Any, x: Tensor, y: Tensor, mask: Tensor | None, chunk: int = 1000) -> float:
    """Accuracy (%) of ``learner.predict`` on ``(x, y)``, logits masked when ``mask`` is given
    (:func:`beyondbp.training.batches.evaluate_tensors` in chunks of ``chunk``)."""
    counts = evaluate_tensors(learner.predict, x, y, batch_size=chunk, logit_offset=mask)
    return 100.0 * counts["correct"] / max(1, x.shape[0])


def default_model_options(model: str, given: dict[str, Any] | None) -> dict[str, Any]:
    opts = dict(given or {})
    if model == "mlp":
        opts.setdefault("widths", (800, 800))
        opts.setdefault("bias", False)
    return opts


def build_model(seq: TaskSequence, model: str, opts: dict[str, Any]) -> nn.Module:
    """Build ``model`` for ``seq`` and check, on two test inputs, that it maps them to
    ``(batch, num_classes)`` logits (a DataError otherwise); draws from the global RNG."""
    net = models_mod.build(model, seq.input_shape, seq.num_classes, **opts)
    with torch.no_grad():
        try:
            out = net(seq.tasks[0].x_test[:2])
        except RuntimeError as exc:
            raise DataError(f"model '{model}' does not accept {seq.family} inputs of shape "
                            f"{tuple(seq.input_shape)} ({str(exc).splitlines()[0]})") from None
    if out.dim() != 2 or out.shape[1] != seq.num_classes:
        raise DataError(f"model '{model}' gives outputs of shape {tuple(out.shape)}, not (batch, {seq.num_classes})")
    return net


class _DivergenceWatch:
    """Divergence as the run loop defines it (:func:`beyondbp.training.components.diverged`): an epoch's
    mean training loss that is not finite or exceeds 100 × max(first step's loss,
    log(classes)), checked at the end of every epoch of every task."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.first: float | None = None
        self.total, self.count, self.steps = 0.0, 0, 0
        self.at: tuple[int | None, int] | None = None  # (task, step) where divergence was found

    def add(self, loss: float, n: int) -> None:
        loss = float(loss)
        if self.first is None:
            self.first = loss
        self.total += loss * n
        self.count += n
        self.steps += 1

    def epoch_end(self, task: int | None) -> bool:
        mean = self.total / max(self.count, 1)
        self.total, self.count = 0.0, 0
        if self.at is None and _diverged(mean, self.first if self.first is not None else math.nan, self.num_classes):
            self.at = (task, self.steps)
        return self.at is not None


def check_budget(seq: TaskSequence, epochs_per_task: Any, batch_size: Any) -> None:
    """Refuse (:class:`ConfigError`, one sentence) epochs and batch sizes that are not counts
    bounded as a run's are (:func:`beyondbp.training.config.check_count`). A batch size larger
    than a task's training split is the whole split, as in ``train``."""
    check_count(epochs_per_task, "epochs_per_task")
    check_count(batch_size, "batch_size")


class _Training(options_mod.Options):
    """What :func:`run_method` declares of its own (epochs and batch sizes are counts bounded as a
    run's are: :func:`check_budget`)."""

    lr: float = opt(0.1, "SGD learning rate of every task", gt=0, accepts="a finite number greater than 0")


def run_method(
    seq: TaskSequence,
    method: str | Method,
    *,
    rule: str = "backprop",
    rule_options: dict[str, Any] | None = None,
    model: str = "mlp",
    model_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    epochs_per_task: int = 1,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    progress: Callable[[int, list[float]], None] | None = None,
    inspect: Callable[[int, nn.Module], None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``seq`` with one method under one rule; return the accuracy matrix and metrics.

    ``progress(t, row)`` receives each row of the accuracy matrix as it is measured;
    ``inspect(t, model)`` is called with the model after each task (sequential methods), before
    it is evaluated — for tests and analyses; it must leave the model as it found it.
    ``on_step(info)`` is called after every training step with ``task`` (its index, or None
    for joint training), ``tasks``, ``step`` (done in this task, or in joint training) and
    ``steps`` (its total). The result's ``batch_size`` is the batch its steps used: the requested
    one (``batch_size_requested``), or a whole training split where that is smaller (joint
    training: all tasks' together); ``task_batch_sizes`` and ``task_steps`` give each task's batch
    and optimizer steps (sequential methods), and where tasks of unequal size used different ones,
    ``batch_size`` / ``steps_per_task`` are None rather than one task's figure."""
    meth = method if isinstance(method, Method) else make_method(method, **(method_options or {}))
    if len(seq) < 2:
        raise ConfigError(f"a task sequence needs at least 2 tasks, got {len(seq)}")
    check_budget(seq, epochs_per_task, batch_size)
    options_mod.parse(_Training, {"lr": lr}, "continual learning")
    rule_obj = rules_mod.get(rule, **(rule_options or {}))
    meth.check_rule(rule_obj.name)
    meth.lr = float(lr)
    by_class = class_masks(seq)
    seed_everything(seed)
    opts = default_model_options(model, model_options)
    net = build_model(seq, model, opts)
    learner = rule_obj.attach(net, loss_fn=MaskedCrossEntropy(by_class))
    n = len(seq)
    masks = [_class_mask(t.classes, seq.num_classes) if seq.masked else None for t in seq.tasks]
    start = time.perf_counter()
    try:
        meth.setup(net, learner, seq, seed)
        b = [task_accuracy(learner, t.x_test, t.y_test, masks[j]) for j, t in enumerate(seq.tasks)]
        R = [[math.nan] * n for _ in range(n)]
        params = learner.optimizer_parameters()
        watch = _DivergenceWatch(seq.num_classes)
        steps = 0
        if meth.sequential:
            for t, task in enumerate(seq.tasks):
                meth.begin_task(t)
                opt = _Optimizer(build_optimizer("sgd", params, lr=float(lr)), meth.before_step)
                batches = ShuffledBatches(task.x_train.shape[0], batch_size,
                                          torch.Generator().manual_seed(seed * 1_000_003 + t))
                steps = epochs_per_task * len(batches)
                step = 0
                for _ in range(epochs_per_task):
                    for idx in batches.epoch():
                        step += 1
                        rec = getattr(meth, "recorder", None)
                        if rec is not None:
                            rec.clear()
                            rec.recording = meth.recording()
                        try:
                            metrics = learner.step((task.x_train[idx], task.y_train[idx]), opt)
                        finally:
                            if rec is not None:
                                rec.recording = False
                        watch.add(metrics["loss"], len(idx))
                        if on_step is not None:
                            on_step({"task": t, "tasks": n, "step": step, "steps": steps})
                    if watch.epoch_end(t):
                        break
                if watch.at is not None:
                    break  # diverged: no later task trains, no later row is measured
                meth.end_task(t, task.x_train, task.y_train)
                if inspect is not None:
                    inspect(t, net)
                R[t] = [task_accuracy(learner, s.x_test, s.y_test, masks[j]) for j, s in enumerate(seq.tasks)]
                if progress is not None:
                    progress(t, R[t])
        else:
            xs = torch.cat([t.x_train for t in seq.tasks])
            ys = torch.cat([t.y_train for t in seq.tasks])
            inner = build_optimizer("sgd", params, lr=float(lr))
            batches = ShuffledBatches(xs.shape[0], batch_size, torch.Generator().manual_seed(seed * 1_000_003))
            steps, step = epochs_per_task * len(batches), 0
            for _ in range(epochs_per_task):
                for idx in batches.epoch():
                    metrics = learner.step((xs[idx], ys[idx]), inner)
                    watch.add(metrics["loss"], len(idx))
                    step += 1
                    if on_step is not None:
                        on_step({"task": None, "tasks": n, "step": step, "steps": steps})
                if watch.epoch_end(None):  # joint training: no task of its own
                    break
            if watch.at is None:
                R[n - 1] = [task_accuracy(learner, s.x_test, s.y_test, masks[j]) for j, s in enumerate(seq.tasks)]
                if progress is not None:
                    progress(n - 1, R[n - 1])
    finally:
        meth.close()
        learner.detach()
    seconds = time.perf_counter() - start
    sizes = [t.x_train.shape[0] for t in seq.tasks] if meth.sequential else [sum(t.x_train.shape[0] for t in seq.tasks)]
    used, task_steps = [min(batch_size, k) for k in sizes], [epochs_per_task * -(-k // batch_size) for k in sizes]
    metrics = summary(R, b)
    if not meth.sequential:
        metrics["bwt"] = metrics["fwt"] = None
    result = {
        "method": meth.name,
        "rule": rule_obj.name,
        "model": model,
        "model_options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "tasks": seq.family,
        "setting": seq.setting,
        "num_tasks": n,
        "matrix": R,
        "random_init": b,
        **metrics,
        "seconds": seconds,
        "seed": seed,
        "epochs_per_task": epochs_per_task,
        "batch_size": used[0] if len(set(used)) == 1 else None,
        "batch_size_requested": batch_size,
        "task_batch_sizes": used if meth.sequential else None,
        "lr": lr,
        "diverged": watch.at is not None,
        "steps_per_task": task_steps[0] if meth.sequential and len(set(task_steps)) == 1 else None,
        "task_steps": task_steps if meth.sequential else None,
    }
    if watch.at is not None:
        result["diverged_at_task"], result["diverged_at_step"] = watch.at
    if hasattr(meth, "sizes"):
        result["subspace_sizes"] = meth.sizes()
    t0 = seq.tasks[0]
    chance = 100.0 / (len(t0.classes) if seq.masked and t0.classes else seq.num_classes)
    first = first_task_note(R, chance, task_steps[0] if meth.sequential else None)
    result["notes"] = ([first] if first else []) + meth.notes(n)
    return result
