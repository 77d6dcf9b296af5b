"""The figure of ``beyondbp evolve``: success rate per generation, one line per arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_success"]


def plot_success(arms: dict[str, dict[str, Any]], path: str | Path, title: str, test_task: str = "dms") -> None:
    """Per arm (``plastic``, ``control``): the population's mean success on its training tasks
    per generation (line) and the tests of θ on ``test_task`` (markers, dashed), chance at 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, (arm, history) in enumerate(arms.items()):
        color = f"C{i}"
        ax.plot(range(len(history["success"])), history["success"], color=color, lw=1.2, label=f"{arm}: training tasks")
        tests = sorted((int(g), v) for g, v in history["tests"].items())
        tests.append((len(history["success"]), history["final_test_success"]))
        ax.plot([g for g, _ in tests], [v for _, v in tests], color=color, ls="--", marker="o", ms=3,
                label=f"{arm}: {test_task} (withheld)")
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("success rate (scored trials)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
