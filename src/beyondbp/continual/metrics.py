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
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["acc", "bwt", "fwt", "summary"]


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
