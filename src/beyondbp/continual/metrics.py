"""Continual-learning metrics from the accuracy matrix (:mod:`beyondbp.reporting.continual` renders them).

``R[i, j]`` is the test accuracy (percent) on task ``j`` after training tasks ``0 … i``; ``b[j]``
the accuracy of the untrained (randomly initialised) network on task ``j``. With ``N`` tasks:

* ACC = (1/N) Σ_j R[N−1, j] — the mean of the last row;
* BWT = (1/(N−1)) Σ_{j<N−1} (R[N−1, j] − R[j, j]) — how much training later tasks changed the
  accuracy on earlier ones (negative: forgetting);
* FWT = (1/(N−1)) Σ_{j≥1} (R[j−1, j] − b[j]) — how much training the earlier tasks helped a task
  before it was seen; defined only when ``b`` and the above-diagonal entries were measured.

These are the definitions of "Gradient Episodic Memory for Continual Learning" (Lopez-Paz,
Ranzato 2017), in percentage points. A method that has no sequential history (multitask joint
training) only has a last row: its BWT and FWT are None.

:func:`first_task_note` reads the matrix for a run whose network learnt little on its first task
(``R[0, 0]`` below ``chance + LEARNT_LITTLE · (100 − chance)``: 23.5 % for ten classes). No method
acts on task 0 (GPM and HLOP have nothing stored yet, EWC no anchor), so then the recipe —
steps, learning rate, width, rule — is the cause, not the method, and ACC/BWT compare little.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["LEARNT_LITTLE", "acc", "bwt", "first_task_note", "fwt", "summary"]

#: task 0 counts as barely learnt below chance + LEARNT_LITTLE · (100 − chance) percent
LEARNT_LITTLE = 0.15


def _matrix(R: Any) -> np.ndarray:
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(f"the accuracy matrix must be square, got shape {m.shape}")
    return m


def acc(R: Any) -> float:
    """Mean of the last row."""
    m = _matrix(R)
    return float(m[-1].mean())


def bwt(R: Any) -> float | None:
    """Mean over j < N−1 of R[N−1, j] − R[j, j]; None for one task or unmeasured entries."""
    m = _matrix(R)
    n = m.shape[0]
    if n < 2:
        return None
    vals = [m[n - 1, j] - m[j, j] for j in range(n - 1)]
    return None if any(math.isnan(v) for v in vals) else float(np.mean(vals))


def fwt(R: Any, b: Sequence[float] | None) -> float | None:
    """Mean over j ≥ 1 of R[j−1, j] − b[j]; None when not measurable."""
    m = _matrix(R)
    n = m.shape[0]
    if b is None or n < 2:
        return None
    vals = [m[j - 1, j] - float(b[j]) for j in range(1, n)]
    return None if any(math.isnan(v) for v in vals) else float(np.mean(vals))


def summary(R: Any, b: Sequence[float] | None) -> dict[str, float | None]:
    return {"acc": acc(R), "bwt": bwt(R), "fwt": fwt(R, b)}


def first_task_note(R: Any, chance: float, steps_per_task: int | None = None) -> str | None:
    """One sentence when ``R[0, 0]`` (task 0 just after training it) is below ``chance +
    LEARNT_LITTLE · (100 − chance)``; None otherwise, and when it was not measured."""
    m = _matrix(R)
    first = float(m[0, 0])
    if math.isnan(first) or first >= chance + LEARNT_LITTLE * (100.0 - chance):
        return None
    steps = f" in {steps_per_task} optimizer steps" if steps_per_task else ""
    return (f"task 0 reached only {first:.1f} % just after training{steps} (chance: {chance:.1f} %); no method "
            f"acts on task 0, so the training recipe learnt little and ACC / BWT compare little: train longer "
            f"(more epochs per task), with a larger learning rate or a wider model")
