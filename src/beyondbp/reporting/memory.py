"""The files of ``beyondbp memory``: the recall-quality table and one figure per memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .ticks import tidy_axes

__all__ = ["markdown_table", "plot_recall"]


def _cell(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_table(rows: Sequence[dict[str, Any]], title: str) -> str:
    """One row per (memory, N, noise): exact match, MSE, right item, right class, load."""
    cols = ("memory", "stored", "noise", "mode", "exact", "mse", "item", "class", "classifier", "per_neuron")
    out = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def plot_recall(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> None:
    """Exact-match rate, and the rate of recalls whose nearest stored item has the right class
    (right item when there are no labels), against N (log scale), one line per noise level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    second = "class" if any(r.get("class") is not None for r in rows) else "item"
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    levels = sorted({r["noise"] for r in rows})
    for level in levels:
        sel = sorted((r for r in rows if r["noise"] == level), key=lambda r: r["stored"])
        ns = [r["stored"] for r in sel]
        label = f"{level:.0%} {sel[0]['mode']}" if level else "clean"
        axes[0].plot(ns, [r["exact"] for r in sel], marker="o", label=label)
        axes[1].plot(ns, [r[second] for r in sel], marker="o", label=label)
    for ax, name in zip(axes, ("exact match", "right class (nearest stored item)" if second == "class" else "right item")):
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("items stored N")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    tidy_axes(fig)  # plain tick labels: no offset, no "×10^0"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
