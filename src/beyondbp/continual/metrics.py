"""Continual-learning metrics from the accuracy matrix, and its renderings.

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
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["acc", "bwt", "fwt", "summary", "markdown_table", "plot_matrices"]


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


def _fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}" if v < 0 else f"{v:.2f}"


def _method_label(r: dict[str, Any]) -> str:
    """The method's name, marked when its training diverged (its later rows are unmeasured)."""
    if r.get("diverged"):
        task = r.get("diverged_at_task")
        where = f"task {task}, step" if task is not None else "step"
        return f"{r['method']} (diverged at {where} {r.get('diverged_at_step')})"
    return str(r["method"])


def markdown_table(results: Sequence[dict[str, Any]], title: str) -> str:
    """One row per result: method, rule, ACC, BWT, FWT, seconds; then each accuracy matrix."""
    lines = [f"# {title}", "", "| method | rule | ACC (%) | BWT (pts) | FWT (pts) | seconds |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {_method_label(r)} | {r['rule']} | {_fmt(r['acc'])} | {_fmt(r['bwt'])} | "
                     f"{_fmt(r['fwt'])} | {r['seconds']:.0f} |")
    for r in results:
        R = np.asarray(r["matrix"], dtype=float)
        n = R.shape[0]
        lines += ["", f"## {_method_label(r)} / {r['rule']}: R[i, j] (row: after task i; column: task j)", "",
                  "| after \\ task | " + " | ".join(str(j) for j in range(n)) + " |",
                  "|---" * (n + 1) + "|"]
        for i in range(n):
            lines.append(f"| {i} | " + " | ".join("" if math.isnan(v) else f"{v:.1f}" for v in R[i]) + " |")
    return "\n".join(lines) + "\n"


def plot_matrices(results: Sequence[dict[str, Any]], path: str | Path, title: str) -> None:
    """One heatmap per result (accuracy in percent, 0–100), side by side, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(results)
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k + 0.8, 3.8), squeeze=False)
    im = None
    for ax, r in zip(axes[0], results):
        R = np.asarray(r["matrix"], dtype=float)
        im = ax.imshow(np.ma.masked_invalid(R), vmin=0, vmax=100, cmap="viridis")
        n = R.shape[0]
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    if not math.isnan(R[i, j]):
                        ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if R[i, j] < 60 else "black")
        acc_text = "—" if r["acc"] is None or math.isnan(r["acc"]) else f"{r['acc']:.1f}"
        ax.set_title(f"{r['method']} / {r['rule']}\nACC {acc_text}  BWT {_fmt(r['bwt'])}"
                     + ("  diverged" if r.get("diverged") else ""), fontsize=9)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel("task j")
        if ax is axes[0][0]:
            ax.set_ylabel("after training task i")
    fig.suptitle(title, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy (%)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
