"""Renderings of the adaptation benchmark (:func:`beyondbp.adapt.benchmark.benchmark`): its
Markdown table, the error-by-severity plot, and the corruption gallery of one image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..adapt.corruptions import CORRUPTIONS, corrupt
from .ticks import tidy_axes

__all__ = ["gallery", "markdown_table", "plot_errors"]


def markdown_table(result: dict[str, Any]) -> str:
    """One table per severity: rows = methods, columns = corruptions, the mean and ms per batch."""
    lines: list[str] = []
    short = {c: c.replace("_noise", "").replace("_blur", "").replace("_transform", "") for c in result["corruptions"]}
    for s in result["severities"]:
        lines.append(f"Severity {s}: top-1 error (%) on {result['samples']} test images, batch {result['batch_size']}"
                     f"{', episodic' if result['episodic'] else ', online'}")
        lines.append("")
        head = ["method", *[short[c] for c in result["corruptions"]], "mean", "ms/batch"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for m in result["methods"]:
            cells = [m]
            ms = []
            for c in result["corruptions"]:
                r = next(r for r in result["rows"] if r["method"] == m and r["corruption"] == c and r["severity"] == s)
                cells.append(f"{100 * r['error']:.1f}")
                ms.append(r["seconds_per_batch"])
            cells.append(f"**{100 * result['mean'][m][s]:.1f}**")
            cells.append(f"{1000 * sum(ms) / len(ms):.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_errors(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Grouped bars: error per corruption for each method, at the highest severity; and the
    mean error against severity when there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = len(result["severities"]) > 1
    fig, axes = plt.subplots(1, 2 if several else 1, figsize=(14 if several else 10, 4.2), squeeze=False)
    ax = axes[0, 0]
    s = max(result["severities"])
    cols = [*result["corruptions"], "mean"]
    width = 0.8 / len(result["methods"])
    for k, m in enumerate(result["methods"]):
        vals = [100 * next(r["error"] for r in result["rows"] if r["method"] == m and r["corruption"] == c
                           and r["severity"] == s) for c in result["corruptions"]] + [100 * result["mean"][m][s]]
        ax.bar([i + (k - (len(result["methods"]) - 1) / 2) * width for i in range(len(cols))], vals, width, label=m)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([c.replace("_", "\n") for c in cols], fontsize=7)
    ax.set_ylabel("top-1 error (%)")
    ax.set_title(f"severity {s}")
    ax.legend(fontsize=8)
    if several:
        ax2 = axes[0, 1]
        for m in result["methods"]:
            ax2.plot(result["severities"], [100 * result["mean"][m][v] for v in result["severities"]], marker="o", label=m)
        ax2.set_xlabel("severity")
        ax2.set_ylabel("mean error over corruptions (%)")
        ax2.set_xticks(result["severities"])
        ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    tidy_axes(fig)  # plain tick labels: no offset, no "×10^0"
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def gallery(image: torch.Tensor, path: str | Path, seed: int = 0, title: str = "") -> None:
    """A corruption × severity grid of one image (``(28, 28)`` or ``(1, 28, 28)`` in [0, 1]),
    the clean image in the first column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = image.reshape(1, 1, *image.shape[-2:])
    names = list(CORRUPTIONS)
    fig, axes = plt.subplots(len(names), 6, figsize=(6 * 1.1, len(names) * 1.1))
    for i, name in enumerate(names):
        axes[i, 0].imshow(img[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(name.replace("_", "\n"), fontsize=6, rotation=0, ha="right", va="center")
        for s in range(1, 6):
            axes[i, s].imshow(corrupt(img, name, s, seed=seed)[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for s, label in enumerate(["clean", *[f"severity {v}" for v in range(1, 6)]]):
        axes[0, s].set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    tidy_axes(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
