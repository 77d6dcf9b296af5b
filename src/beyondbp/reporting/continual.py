"""Renderings of continual-learning results (:func:`beyondbp.continual.run_method`): the Markdown
table of ACC, BWT and FWT with each accuracy matrix, and the matrices as heatmaps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .ticks import tidy_axes

__all__ = ["grouped_notes", "markdown_table", "plot_matrices"]


def _fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}" if v < 0 else f"{v:.2f}"


def _method_label(r: dict[str, Any]) -> str:
    """The method's name, marked when its training diverged (its later rows are unmeasured)."""
    if r.get("diverged"):
        task = r.get("diverged_at_task")
        where = f"task {task}, step" if task is not None else "step"
        return f"{r['method']} (diverged at {where} {r.get('diverged_at_step')})"
    return str(r["method"])


def grouped_notes(results: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Each distinct note of the results' ``notes`` once, with the ``method/rule`` pairs it is
    about (in order of appearance: every sequential method under a rule shares task 0's note)."""
    out: dict[str, list[str]] = {}
    for r in results:
        for note in r.get("notes", []):
            out.setdefault(note, []).append(f"{r['method']}/{r['rule']}")
    return list(out.items())


def markdown_table(results: Sequence[dict[str, Any]], title: str) -> str:
    """One row per result: method, rule, ACC, BWT, FWT, seconds; then each accuracy matrix, then
    the results' ``notes`` (if any)."""
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
    notes = [f"* {', '.join(pairs)}: {note}" for note, pairs in grouped_notes(results)]
    if notes:
        lines += ["", "## Notes", "", *notes]
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
    tidy_axes(fig)  # plain tick labels: no offset, no "×10^0"
    fig.savefig(path, dpi=110)
    plt.close(fig)
