"""Matrix completion with a deficit: the data set of Kleinman, Achille & Soatto's critical-period
experiment ("Critical Learning Periods Emerge Even in Deep Linear Networks", ICLR 2024), and the
:class:`ScheduledDataset` protocol of data that changes with the training step.

The target. A ``size × size`` matrix of rank ``rank``: ``W = U Vᵀ / √rank`` with ``U, V`` of
standard normal entries (``size × rank``), rescaled to Frobenius norm ``size`` (so its mean
squared entry is 1). Observed entries: ``entries`` distinct positions drawn uniformly without
replacement; the deficit observes ``deficit_entries`` of them — the first ones drawn, so the
deficit's entries are a subset of the full set (``nested=True``, as the authors do; with
``nested=False`` the deficit's positions are drawn apart). All of it comes from a generator
seeded with ``seed`` (``None``: the run's seed, so a seed sweep varies the matrix, the masks and
the initial weights together, as the authors' seed does); the global RNG is not touched.

One training step is one full batch: the input is the identity matrix (``size`` samples, one
per row), so a ``deep-linear`` model's output is its end-to-end map, and the target is ``W`` with
``NaN`` at every entry not observed at that step — ``deficit_entries`` positions for the first
``deficit_steps`` steps, ``entries`` positions afterwards. The loss
(:func:`masked_half_mse`) is ``½ · mean over the observed entries of (output − W)²`` (the
authors' ``get_train_loss``); the test loss is the mean squared error over *all* entries (their
``get_test_loss``, no ½). The schedule is ``deficit_steps + recovery_steps`` steps: a run with
no budget (or ``epochs = 1``) trains exactly that. Evaluations every ``eval_every`` steps, at
the switch and at the end.

Differences from the authors' script (``main-num-examples.py``): their deficit lasts
``T + 1`` steps and the recovery ``30000 − 1`` (the switch test is ``T > T_critical``); here the
deficit lasts exactly ``deficit_steps`` steps. Their matrix is drawn by NumPy and their masks by
torch's global RNG, so the same seed gives other numbers here; compare means over seeds.

:class:`ScheduledDataset` is what the run layer (:class:`beyondbp.training.tasks.ScheduledTask`)
asks of any such set: ``batch(step)``, ``evaluate(predict)``, ``loss_fn``, ``schedule_steps``,
``boundaries`` (steps that close a period besides every ``eval_every``), ``input_shape``,
``num_classes``, ``name``, ``description``, ``meta``; optionally ``frozen(step)`` with ``gated``
(parameters that must not learn at a step), ``initialise(model)``, ``measure(model)`` with
``final_keys``, and ``check_steps(total)`` (see ``hierarchy``, :mod:`beyondbp.data.hierarchy`).
"""

from __future__ import annotations

import math
import os
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from pydantic import model_validator
from torch import Tensor

from beyondbp.options import Options, opt, parse

__all__ = ["MatrixCompletion", "MatrixCompletionOptions", "ScheduledDataset", "load_matrix_completion",
           "masked_half_mse"]

_MAX_STEPS = 2**40


def masked_half_mse(output: Tensor, target: Tensor) -> Tensor:
    """``½ · mean((output − target)²)`` over the entries where ``target`` is not NaN (the
    observed ones); the other entries give no loss and no gradient."""
    observed = ~torch.isnan(target)
    diff = torch.where(observed, output - torch.nan_to_num(target), torch.zeros((), dtype=output.dtype,
                                                                              device=output.device))
    return 0.5 * diff.pow(2).sum() / observed.sum().clamp(min=1)


class ScheduledDataset:
    """Data whose training batch is a function of the step (see the module docstring)."""

    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    schedule_steps: int
    eval_every: int
    boundaries: tuple[int, ...] = ()
    meta: Mapping[str, Any]
    loss_fn: Callable[[Tensor, Tensor], Tensor]

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def evaluate(self, predict: Callable[[Tensor], Tensor], device: torch.device) -> dict[str, float]:
        raise NotImplementedError

    def step_info(self, step: int) -> dict[str, Any]:
        """Extra history fields for an evaluation after ``step`` steps."""
        return {}

    #: Parameter-name prefixes that :meth:`frozen` may ever name (checked against the model).
    gated: tuple[str, ...] = ()
    #: History fields (from :meth:`measure`) that the result's ``final`` also carries.
    final_keys: tuple[str, ...] = ()

    def frozen(self, step: int) -> tuple[str, ...]:
        """Parameter-name prefixes that must not learn at step ``step`` (0-based): the run
        layer's learning gate (:mod:`beyondbp.training.gate`) drops their update, whatever the rule."""
        return ()

    def initialise(self, model: Any) -> None:
        """Set the freshly built model's initial weights, if the set prescribes them (before the
        rule is attached); by default the model keeps its own initialisation."""

    def measure(self, model: Any) -> dict[str, float]:
        """Extra history fields read from the model at an evaluation (it must not write it; the
        run layer calls it under ``no_grad`` with the RNG and the rule's state restored after)."""
        return {}

    def check_steps(self, total_steps: int) -> None:
        """Raise :class:`~beyondbp.errors.ConfigError` when the set's schedule does not fit a run
        of ``total_steps`` steps (e.g. a deficit past the budget)."""

    def info(self) -> dict[str, Any]:
        """The result's ``data`` record."""
        return {"name": self.name, "description": self.description, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, **dict(self.meta)}


class MatrixCompletionOptions(Options):
    """Options of ``matrix-completion`` (see :mod:`beyondbp.data.matrix`)."""

    size: int = opt(100, "rows and columns of the target matrix", ge=2, le=4096)
    rank: int = opt(5, "rank of the target matrix", ge=1)
    entries: int = opt(1500, "observed entries after the deficit", ge=1)
    deficit_entries: int = opt(1000, "observed entries during the deficit", ge=1)
    deficit_steps: int = opt(0, "full-batch steps of the deficit (T; 0: no deficit)", ge=0, le=_MAX_STEPS)
    recovery_steps: int = opt(30000, "full-batch steps after the deficit", ge=1, le=_MAX_STEPS)
    nested: bool = opt(True, "the deficit's entries are a subset of the full set (the authors' choice)")
    eval_every: int = opt(1000, "steps between evaluations (also one at the switch and one at the end)", ge=1,
                          le=_MAX_STEPS)
    seed: int | None = opt(None, "seed of the matrix and the masks (None: the run's seed)", ge=0, lt=2**63,
                           accepts="a whole number >= 0, or null (the run's seed)")

    @model_validator(mode="after")
    def _fits(self) -> "MatrixCompletionOptions":
        cells = self.size * self.size
        if self.rank > self.size:
            raise ValueError(f"rank {self.rank} exceeds the matrix size {self.size}; it must be at most size")
        if self.entries > cells:
            raise ValueError(f"entries {self.entries} exceeds the {cells} entries of a {self.size}×{self.size} "
                             f"matrix; it must be at most size²")
        if self.deficit_entries > (self.entries if self.nested else cells):
            bound = f"entries ({self.entries}) when nested" if self.nested else f"size² ({cells})"
            raise ValueError(f"deficit_entries {self.deficit_entries} exceeds {bound}; the deficit observes "
                             "at most that many")
        return self


class MatrixCompletion(ScheduledDataset):
    """A rank-``rank`` target, its observed-entry masks and the step schedule (module docstring).

    Attributes: ``target`` (``size × size``), ``mask`` and ``deficit_mask`` (boolean, same shape),
    ``options`` (the parsed :class:`MatrixCompletionOptions`, ``seed`` filled in)."""

    def __init__(self, options: MatrixCompletionOptions) -> None:
        o = self.options = options
        n = o.size
        g = torch.Generator().manual_seed(int(o.seed))
        u = torch.randn(n, o.rank, generator=g, dtype=torch.float64)
        v = torch.randn(n, o.rank, generator=g, dtype=torch.float64)
        w = u @ v.T / math.sqrt(o.rank)
        self.target = (w * (n / torch.linalg.matrix_norm(w))).to(torch.float32)
        order = torch.randperm(n * n, generator=g)
        full = order[: o.entries]
        deficit = full[: o.deficit_entries] if o.nested else torch.randperm(n * n, generator=g)[: o.deficit_entries]
        self.mask = torch.zeros(n * n, dtype=torch.bool)
        self.mask[full] = True
        self.mask = self.mask.view(n, n)
        self.deficit_mask = torch.zeros(n * n, dtype=torch.bool)
        self.deficit_mask[deficit] = True
        self.deficit_mask = self.deficit_mask.view(n, n)
        nan = torch.tensor(float("nan"))
        self._targets = {False: torch.where(self.mask, self.target, nan),
                         True: torch.where(self.deficit_mask, self.target, nan)}
        self._inputs = torch.eye(n)
        self._on: dict[str, tuple[Tensor, dict[bool, Tensor]]] = {}
        self.name = "matrix-completion"
        self.input_shape = (n,)
        self.num_classes = n
        self.schedule_steps = o.deficit_steps + o.recovery_steps
        self.eval_every = o.eval_every
        self.boundaries = (o.deficit_steps,) if o.deficit_steps else ()
        self.loss_fn = masked_half_mse
        self.description = (
            f"matrix completion: a rank-{o.rank} {n}×{n} target (seed {o.seed}), {o.deficit_entries} observed entries "
            f"for {o.deficit_steps} steps then {o.entries} for {o.recovery_steps} steps "
            f"({'nested' if o.nested else 'independent'} masks), identity inputs, full batch"
        )
        self.meta = MappingProxyType({k: getattr(o, k) for k in type(o).model_fields})

    def in_deficit(self, step: int) -> bool:
        """Whether the batch of step ``step`` (0-based) is a deficit batch."""
        return step < self.options.deficit_steps

    def _tensors(self, device: torch.device) -> tuple[Tensor, dict[bool, Tensor]]:
        key = str(device)
        if key not in self._on:
            self._on[key] = (self._inputs.to(device), {k: t.to(device) for k, t in self._targets.items()})
        return self._on[key]

    def batch(self, step: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """The full batch of step ``step`` (0-based): identity inputs and the target with NaN at
        the entries not observed at that step."""
        x, targets = self._tensors(torch.device(device))
        return x, targets[self.in_deficit(step)]

    @torch.no_grad()
    def evaluate(self, predict: Callable[[Tensor], Tensor], device: torch.device | str = "cpu") -> dict[str, float]:
        """``test_loss``: mean squared error over all entries; ``unobserved_loss``: over the entries
        never observed after the deficit."""
        x, _ = self._tensors(torch.device(device))
        err = (predict(x).float().cpu() - self.target).pow(2)
        return {"test_loss": float(err.mean()), "unobserved_loss": float(err[~self.mask].mean())}

    def step_info(self, step: int) -> dict[str, Any]:
        """``observed``: the observed entries of the last step's batch (step ``step − 1``)."""
        o = self.options
        return {"observed": o.deficit_entries if self.in_deficit(max(step - 1, 0)) else o.entries}

    def __repr__(self) -> str:
        return f"MatrixCompletion({', '.join(f'{k}={v!r}' for k, v in self.meta.items())})"


def load_matrix_completion(*, data_dir: str | os.PathLike | None = None, **opts: Any) -> MatrixCompletion:
    """The ``matrix-completion`` set (:class:`MatrixCompletionOptions`); generated, ``data_dir``
    ignored. A run fills ``seed=None`` with its own seed
    (:func:`beyondbp.training.config.effective_data_options`); loaded directly, ``None`` means 0."""
    del data_dir
    o = parse(MatrixCompletionOptions, opts, "data set 'matrix-completion'")
    if o.seed is None:
        o = o.model_copy(update={"seed": 0})
    return MatrixCompletion(o)

