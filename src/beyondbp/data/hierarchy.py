"""The hierarchical task with a pathway deficit: the second experiment of Kleinman, Achille &
Soatto ("Critical Learning Periods Emerge Even in Deep Linear Networks", ICLR 2024; their
``multipath/``, Figs. 2–3), a :class:`~beyondbp.data.ScheduledDataset`.

The task (Saxe, McClelland & Ganguli's hierarchy, as the authors build it): 8 items, one-hot
inputs (``x = I₈``), 15 binary features per item — one shared by all items, one per half (2),
one per quarter (4), one per item (8) — in that column order. The target ``Y`` (8 × 15) has
singular values ``√15, √7, √3, √3, 1, 1, 1, 1`` (the Gram matrix of the items is
``J₈ + blocks(J₄) + blocks(J₂) + I``). The task's modes are the SVD of ``Σ_yx = Yᵀ/8``:
``Yᵀ/8 = U S Vᵀ`` (``U`` 15 × 8, ``V`` 8 × 8).

Training: one full batch per step (all 8 items) on ``½ · Σ (output − Y)²`` (the authors'
``MSELoss(reduction="sum") · 0.5``), ``train_steps`` steps (their ``T = 1000``). The deficit
(``deficit_length`` > 0): during steps ``[deficit_start, deficit_start + deficit_length)``
(0-based) the parameters named by ``gated`` (default ``paths.b``: pathway b of a ``deep-linear``
model with ``pathways=2``) do not learn: the run layer's learning gate
(:mod:`beyondbp.training.gate`) drops their update whatever the rule — for plain SGD exactly the
authors' ``output_b.detach()``, which leaves pathway a's gradient unchanged and pathway b's zero.
Their runs: depth 4, width 100, SGD lr 0.01, length 150, onsets 0, 400, 750.

Initialisation (``init="aligned"``, the authors' ``diagonal_init``): every pathway starts at the
same task-aligned, balanced weights (:meth:`beyondbp.models.linear.DeepLinear.align`) with mode
strengths ``s`` = the ``width`` values ``init_scale · (1 + init_noise · z)``, ``z ~ N(0, 1)``,
sorted in decreasing order (the first 8 are the modes'), so each pathway's end-to-end map is
``U diag(s[:8]) Vᵀ`` — both pathways equal. ``init="model"`` keeps the model's own
initialisation. Drawn from a generator seeded with ``seed`` (``None``: the run's seed); the global
RNG is not touched.

Measures (every evaluation, read from the model, :meth:`Hierarchy.measure`): for each pathway
``p`` (``a``, ``b``, …; a one-stack model is ``a``), the mode strengths ``K_p_α`` = the diagonal
of ``Uᵀ Ω_p V`` (``Ω_p`` its end-to-end map, α = 0 … 7: the authors' ``K_{pα}``), their sum
``mass_p`` and ``norm_p = ‖Ω_p‖_F``; ``share_b`` = ``mass_b / Σ_p mass_p``, pathway b's share of
the task's modes (NaN without a pathway b), also in the result's ``final``. Evaluations every
``eval_every`` steps, at the deficit's start and end, and at the end; ``test_loss`` is the
training objective on the whole task (there is nothing held out).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable, Literal

import torch
from pydantic import model_validator
from torch import Tensor

from beyondbp.errors import ConfigError
from beyondbp.options import Options, opt, parse

from .matrix import ScheduledDataset

__all__ = ["Hierarchy", "HierarchyOptions", "half_sse", "hierarchy_target", "load_hierarchy"]

_MAX_STEPS = 2**40
ITEMS, FEATURES = 8, 15


def half_sse(output: Tensor, target: Tensor) -> Tensor:
    """``½ · Σ (output − target)²`` (the authors' summed squared error)."""
    return 0.5 * (output - target).pow(2).sum()


def hierarchy_target() -> Tensor:
    """``Y`` (8 items × 15 features): the root, the two halves, the four quarters, the eight items."""
    item = torch.arange(ITEMS)
    columns = [torch.ones(ITEMS)]
    for size in (4, 2, 1):
        columns += [(item // size == k).float() for k in range(ITEMS // size)]
    return torch.stack(columns, dim=1)


class HierarchyOptions(Options):
    """Options of ``hierarchy`` (see :mod:`beyondbp.data.hierarchy`)."""

    train_steps: int = opt(1000, "full-batch steps of the schedule", ge=1, le=_MAX_STEPS)
    deficit_start: int = opt(0, "first step (0-based) at which the gated parameters do not learn", ge=0,
                             le=_MAX_STEPS)
    deficit_length: int = opt(150, "steps the gated parameters do not learn (0: no deficit)", ge=0, le=_MAX_STEPS)
    gated: str = opt("paths.b", "parameter-name prefix that does not learn during the deficit (pathway b)",
                     min_length=1)
    init: Literal["aligned", "model"] = opt("aligned", "the authors' task-aligned small init, or the model's own")
    init_scale: float = opt(0.01, "mode strength of each pathway at initialisation (the authors' eps)", gt=0, le=10)
    init_noise: float = opt(0.1, "relative spread of the initial mode strengths", ge=0, le=10)
    eval_every: int = opt(50, "steps between evaluations (also at the deficit's start and end, and the end)", ge=1,
                          le=_MAX_STEPS)
    seed: int | None = opt(None, "seed of the initialisation (None: the run's seed)", ge=0, lt=2**63,
                           accepts="a whole number >= 0, or null (the run's seed)")

    @model_validator(mode="after")
    def _fits(self) -> "HierarchyOptions":
        end = self.deficit_start + self.deficit_length
        if self.deficit_length and end > self.train_steps:
            raise ValueError(f"the deficit [{self.deficit_start}, {end}) ends after the schedule's {self.train_steps} "
                             "train_steps; deficit_start + deficit_length must be at most train_steps")
        return self


class Hierarchy(ScheduledDataset):
    """The hierarchical task, its modes and the deficit window (module docstring).

    Attributes: ``target`` (8 × 15), ``u`` (15 × 8), ``s`` (8), ``v`` (8 × 8): the SVD of
    ``Yᵀ/8``; ``options`` (seed filled in)."""

    final_keys = ("share_b",)

    def __init__(self, options: HierarchyOptions) -> None:
        o = self.options = options
        self.target = hierarchy_target()
        u, s, vh = torch.linalg.svd(self.target.T.double() / ITEMS, full_matrices=False)
        self.u, self.s, self.v = u.float(), s.float(), vh.T.float()
        self._inputs = torch.eye(ITEMS)
        self._on: dict[str, tuple[Tensor, Tensor]] = {}
        self.name = "hierarchy"
        self.input_shape = (ITEMS,)
        self.num_classes = FEATURES
        self.schedule_steps = o.train_steps
        self.eval_every = o.eval_every
        self.deficit_end = o.deficit_start + o.deficit_length
        self.boundaries = (o.deficit_start, self.deficit_end) if o.deficit_length else ()
        self.gated = (o.gated,) if o.deficit_length else ()
        self.loss_fn = half_sse
        deficit = (f"'{o.gated}' frozen during steps [{o.deficit_start}, {self.deficit_end})" if o.deficit_length
                   else "no deficit")
        self.description = (f"hierarchical task: 8 items x 15 features (Saxe et al.), {o.train_steps} full-batch "
                            f"steps, {deficit}, init {o.init} (seed {o.seed})")
        self.meta = MappingProxyType({k: getattr(o, k) for k in type(o).model_fields})

    def in_deficit(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is inside the deficit window."""
        return self.options.deficit_start <= step < self.deficit_end

    def frozen(self, step: int) -> tuple[str, ...]:
        return self.gated if self.in_deficit(step) else ()

    def check_steps(self, total_steps: int) -> None:
        if self.gated and self.deficit_end > total_steps:
            raise ConfigError(f"data set 'hierarchy': the deficit [{self.options.deficit_start}, {self.deficit_end}) "
                              f"ends after the run's {total_steps} steps; give at least {self.deficit_end} steps or "
                              "an earlier or shorter deficit")

    def initialise(self, model: Any) -> None:
        o = self.options
        if o.init == "model":
            return
        if not callable(getattr(model, "align", None)):
            raise ConfigError(f"data set 'hierarchy' with init 'aligned' needs model 'deep-linear' (it sets the "
                              f"task-aligned weights), not {type(model).__name__}; use init='model' for other models")
        width = model.width if model.depth > 1 else ITEMS
        if width < ITEMS:
            raise ConfigError(f"data set 'hierarchy' with init 'aligned' needs a deep-linear width of at least "
                              f"{ITEMS} (the task's modes), got {width}")
        g = torch.Generator().manual_seed(int(o.seed))
        noise = torch.randn(width, generator=g, dtype=torch.float64)
        strengths = torch.sort(o.init_scale * (1.0 + o.init_noise * noise), descending=True).values
        model.align(self.u, self.v, strengths, g)

    def _tensors(self, device: torch.device) -> tuple[Tensor, Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = (self._inputs.to(device), self.target.to(device))
        return self._on[key]

    def batch(self, step: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """All 8 items and their features (the same at every step)."""
        return self._tensors(torch.device(device))

    @torch.no_grad()
    def evaluate(self, predict: Callable[[Tensor], Tensor], device: torch.device | str = "cpu") -> dict[str, float]:
        """``test_loss``: ``½ · Σ (output − Y)²`` over the whole task."""
        x, _ = self._tensors(torch.device(device))
        return {"test_loss": float(half_sse(predict(x).float().cpu(), self.target))}

    @torch.no_grad()
    def measure(self, model: Any) -> dict[str, float]:
        """Per-pathway mode strengths, masses, norms and ``share_b`` (module docstring)."""
        maps = model.pathway_maps() if callable(getattr(model, "pathway_maps", None)) else {}
        out: dict[str, float] = {}
        masses = {}
        for name, omega in maps.items():
            p = name or "a"
            k = torch.diagonal(self.u.T @ omega.detach().float().cpu() @ self.v)
            out.update({f"K_{p}_{a}": float(k[a]) for a in range(k.numel())})
            masses[p] = float(k.sum())
            out[f"mass_{p}"] = masses[p]
            out[f"norm_{p}"] = float(torch.linalg.matrix_norm(omega.float()))
        total = sum(masses.values())
        out["share_b"] = masses["b"] / total if "b" in masses and total != 0 else math.nan
        return out

    def step_info(self, step: int) -> dict[str, Any]:
        """``deficit``: 1 when the last step (``step − 1``) was inside the window, else 0."""
        return {"deficit": int(self.in_deficit(step - 1))}

    def __repr__(self) -> str:
        return f"Hierarchy({', '.join(f'{k}={v!r}' for k, v in self.meta.items())})"


def load_hierarchy(*, data_dir: Any = None, **opts: Any) -> Hierarchy:
    """The ``hierarchy`` set (:class:`HierarchyOptions`); generated, ``data_dir`` ignored. A run
    fills ``seed=None`` with its own seed; loaded directly, ``None`` means 0."""
    del data_dir
    o = parse(HierarchyOptions, opts, "data set 'hierarchy'")
    if o.seed is None:
        o = o.model_copy(update={"seed": 0})
    return Hierarchy(o)
