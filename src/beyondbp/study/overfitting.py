"""Runs whose held-out loss rises late in training (overfitting), found in their evaluation history.

A run record's ``result.history`` holds one entry per evaluation (``step``, ``tokens`` for
language models, and the held-out loss: ``val_loss`` for language models, else ``test_loss``,
the loss the study's analysis uses). A run **rises late** when, on that curve:

* there are at least :data:`MIN_EVALUATIONS` evaluations with a finite loss;
* its minimum (the first evaluation that reaches it) lies in the first
  :data:`EARLY_FRACTION` of the evaluations (index ≤ ``EARLY_FRACTION × (n − 1)``), so the
  curve has had at least the last quarter of training to rise;
* the final loss exceeds that minimum by more than :data:`RISE` of it (relative).

Such a run's final loss — the one its study fits — is worse than the same run earlier on; a
frontier of such runs says how much a rule overfits as much as how it scales. Only done runs
are checked; nothing is changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..jsonable import plain
from .selection import record_label, record_lr, record_seed

__all__ = ["EARLY_FRACTION", "MIN_EVALUATIONS", "RISE", "LateRise", "late_rise", "rising_runs"]

#: The final loss must exceed the curve's minimum by more than this fraction of it.
RISE = 0.05
#: The minimum must lie within this fraction of the evaluations (from the first).
EARLY_FRACTION = 0.75
#: Fewer evaluations than this are not judged.
MIN_EVALUATIONS = 3


@dataclass(frozen=True)
class LateRise:
    """A run whose ``loss_name`` curve rises late: its ``minimum`` at evaluation ``at``
    (``at_x``: its step or tokens, named ``x_name``) of ``n_evaluations``, and its ``final`` value
    (``lr``: its learning rate, from its axes or its config)."""

    id: Any
    label: str
    axes: Mapping[str, Any]
    seed: Any
    loss_name: str
    minimum: float
    final: float
    at: int
    at_x: float | None
    x_name: str
    n_evaluations: int
    lr: float | None = None

    @property
    def rise(self) -> float:
        """The final loss over the minimum, minus one (0.12: 12 % above)."""
        return self.final / self.minimum - 1.0

    def to_dict(self) -> dict[str, Any]:
        return plain({"id": self.id, "label": self.label, "axes": dict(self.axes), "seed": self.seed,
                      "loss_name": self.loss_name, "minimum": self.minimum, "final": self.final, "rise": self.rise,
                      "at": self.at, "at_x": self.at_x, "x_name": self.x_name, "n_evaluations": self.n_evaluations,
                      "lr": self.lr})


def late_rise(values: Sequence[float]) -> int | None:
    """The index of the minimum of a loss curve that rises late (see the module docstring), or
    None when it does not (or cannot be judged)."""
    ys = [float(v) for v in values]
    n = len(ys)
    if n < MIN_EVALUATIONS or not all(math.isfinite(y) for y in ys):
        return None
    low = min(ys)
    at = ys.index(low)
    if low <= 0 or at > EARLY_FRACTION * (n - 1):
        return None
    return at if ys[-1] > (1.0 + RISE) * low else None


def _loss_name(rec: Mapping[str, Any]) -> str:
    result = rec.get("result") or {}
    lm = result.get("tokens") is not None or "val_loss" in (result.get("final") or {})
    return "val_loss" if lm else "test_loss"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def rising_runs(records: Sequence[Mapping[str, Any]]) -> list[LateRise]:
    """Every done run of ``records`` (``Store.records()`` dicts) whose held-out loss rises
    late, in the records' order."""
    out = []
    for rec in records:
        if rec.get("status") != "done":
            continue
        name = _loss_name(rec)
        history = (rec.get("result") or {}).get("history") or []
        points = [(h, _finite(h.get(name))) for h in history if isinstance(h, Mapping)]
        points = [(h, y) for h, y in points if y is not None]
        at = late_rise([y for _, y in points])
        if at is None:
            continue
        entry = points[at][0]
        x_name = "tokens" if entry.get("tokens") is not None else "step"
        out.append(LateRise(
            id=rec.get("id"), label=record_label(rec), axes=rec.get("axes") or {}, seed=record_seed(rec), loss_name=name,
            minimum=points[at][1], final=points[-1][1], at=at, at_x=_finite(entry.get(x_name)), x_name=x_name, n_evaluations=len(points),
            lr=record_lr(rec),
        ))  # fmt: skip
    return out
