"""Side-by-side comparison of runs: a table of ratios to backprop, learning curves, JSON.

>>> from beyondbp.reporting import runs
>>> rows = runs.comparison_table(results)            # results: RunResult objects or their dicts
>>> print(runs.render_markdown(rows))                 # doctest: +SKIP
>>> runs.plot_curves(results, "curves.png")           # doctest: +SKIP
>>> runs.write_json(results, "results.json")          # doctest: +SKIP

Ratios are ``rule / baseline``: the baseline is the ``backprop`` row when there is one, else
the first row (each row's ``baseline`` field says which). ``flops_ratio < 1`` means the rule
executes fewer FLOPs per training step than the baseline; ``time_ratio`` likewise for median
wall-clock per step (measured in separate runs: a noisy machine makes it noisy too).

With diagnostics, ``cos_all`` is the final epoch's ``cos/all`` (cosine between the rule's
update and the backprop gradient over all trained weight matrices taken together),
``cos_mean`` the mean of the per-layer cosines, and ``angle_mean`` the mean angle in degrees
between each weight matrix W and its feedback matrix B (only rules with one per layer; for PFA
the product B·R, its ``path_angle/<layer>``).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..files import atomic_write_bytes
from ..jsonable import finite_number as _num
from ..jsonable import plain
from .ticks import tidy_axes

__all__ = ["architecture", "comparison_table", "curves_figure", "plot_curves", "read_json", "render_markdown", "write_json"]

RATIO_OF = {
    "accuracy_ratio": "test_accuracy",
    "loss_ratio": "final_train_loss",
    "flops_ratio": "flops_per_step",
    "time_ratio": "time_per_step",
}


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "to_dict"):
        return result.to_dict()
    raise TypeError(f"expected a RunResult or its dict, got {type(result).__name__}")




def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def architecture(result: Any) -> str:
    """The network of a run in a few words, e.g. ``mlp 40-256-256-10 (78,090 parameters)``:
    layer widths for models with ``widths``, else the options it was given."""
    from ..models import options as model_options

    d = _as_dict(result)
    config = d.get("config") or {}
    model = str(config.get("model", "?"))
    given = dict(config.get("model_options") or {})
    try:
        opts = {**model_options(model), **given}
    except Exception:  # noqa: BLE001 - an unknown model (old JSON): just its name and options
        opts = given
    data = d.get("data") or {}
    shape, classes = data.get("input_shape"), data.get("num_classes")
    if "widths" in opts and shape and classes:
        inputs = 1
        for n in shape:
            inputs *= int(n)
        text = f"{model} " + "-".join(str(int(w)) for w in [inputs, *opts["widths"], classes])
        extra = {k: v for k, v in given.items() if k != "widths"}
    else:
        text, extra = model, given
    if extra:
        text += " " + ", ".join(f"{k}={v}" for k, v in extra.items())
    n = d.get("n_params")
    return f"{text} ({n:,} parameters)" if isinstance(n, int) else text


def _sd(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    if len(kept) < 2:
        return None
    m = sum(kept) / len(kept)
    return (sum((v - m) ** 2 for v in kept) / (len(kept) - 1)) ** 0.5


#: The row keys averaged over a rule's seeds (each gets a ``<key>_sd`` too).
AVERAGED = ("test_accuracy", "final_train_loss", "test_loss", "flops_per_step", "time_per_step", "cos_all", "cos_mean",
            "angle_mean")


def _over_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One rule's runs (several seeds) as one row: means, sample standard deviations
    (``<key>_sd``), ``n_runs`` and ``seeds``; diverged when any run diverged (the earliest step)."""
    row = dict(rows[0])
    for key in AVERAGED:
        row[key] = _mean(r[key] for r in rows)
        row[key + "_sd"] = _sd(r[key] for r in rows)
    bad = [r for r in rows if r["diverged"]]
    row["diverged"] = bool(bad)
    row["diverged_at_step"] = min((r["diverged_at_step"] for r in bad if r["diverged_at_step"] is not None), default=None)
    row["status"] = "diverged" if bad else next((r["status"] for r in rows if r["status"] != "ok"), "ok")
    row["diverged_runs"] = len(bad)
    row["has_diagnostics"] = any(r["has_diagnostics"] for r in rows)
    row["n_runs"] = len(rows)
    row["seeds"] = [r["seed"] for r in rows]
    return row


def comparison_table(results: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per run: rule, final metrics, measured cost, ratios to the baseline, diagnostics.
    When a rule has several runs (``compare`` with several seeds), one row per rule instead:
    the mean over its runs, ``<key>_sd`` the sample standard deviation of each averaged value,
    ``n_runs`` and ``seeds``; ratios are those of the means."""
    dicts = [_as_dict(r) for r in results]
    if not dicts:
        return []
    rows = []
    for d in dicts:
        final = d.get("final") or {}
        diag = final.get("diagnostics") or {}
        cos_layers = [_num(v) for k, v in diag.items() if k.startswith("cos/") and k != "cos/all"]
        angles = [_num(v) for k, v in diag.items() if k.startswith(("angle/", "path_angle/"))]
        rows.append({
            "rule": d.get("rule") or (d.get("config") or {}).get("rule", "?"),
            "status": d.get("status", "ok"),
            "diverged": bool(d.get("diverged")) or d.get("status") == "diverged",
            "diverged_at_step": d.get("diverged_at_step"),
            "test_accuracy": _num(final.get("test_accuracy")),
            "final_train_loss": _num(final.get("train_loss")),
            "test_loss": _num(final.get("test_loss")),
            "flops_per_step": _num(d.get("flops_per_step")),
            "time_per_step": _num(d.get("time_per_step")),
            "cos_all": _num(diag.get("cos/all")),
            "cos_mean": _mean(cos_layers),
            "angle_mean": _mean(angles),
            "has_diagnostics": bool(diag),
            "seed": (d.get("config") or {}).get("seed"),
        })
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["rule"], []).append(row)
    if any(len(g) > 1 for g in groups.values()):
        rows = [_over_seeds(g) for g in groups.values()]
    names = [r["rule"] for r in rows]
    base = rows[names.index("backprop")] if "backprop" in names else rows[0]
    for row in rows:
        row["baseline"] = base["rule"]
        for ratio, key in RATIO_OF.items():
            row[ratio] = _ratio(row[key], base[key])
    return rows


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "loss":
        return f"{value:.4f}"
    if kind == "flops":
        for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{value:.0f} FLOP"
    if kind == "time":
        return f"{value * 1e3:.3f} ms"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "cos":
        return f"{value:.3f}"
    if kind == "deg":
        return f"{value:.1f}°"
    return str(value)


def _fmt_spread(mean: float | None, sd: float, kind: str) -> str:
    """``mean ± sd`` in the unit of ``kind``."""
    if mean is None:
        return "—"
    if kind == "pct":
        return f"{100 * mean:.1f} ± {100 * sd:.1f}%"
    if kind == "time":
        return f"{mean * 1e3:.3f} ± {sd * 1e3:.3f} ms"
    if kind == "flops":
        return f"{_fmt(mean, kind)} ± {_fmt(sd, kind)}"
    if kind == "deg":
        return f"{mean:.1f} ± {sd:.1f}°"
    return f"{_fmt(mean, kind)} ± {_fmt(sd, kind)}"


#: (column title, row key, format) in display order.
COLUMNS: list[tuple[str, str, str]] = [
    ("rule", "rule", "str"),
    ("test acc", "test_accuracy", "pct"),
    ("acc ×", "accuracy_ratio", "ratio"),
    ("train loss", "final_train_loss", "loss"),
    ("loss ×", "loss_ratio", "ratio"),
    ("test loss", "test_loss", "loss"),
    ("FLOPs/step", "flops_per_step", "flops"),
    ("FLOPs ×", "flops_ratio", "ratio"),
    ("time/step", "time_per_step", "time"),
    ("time ×", "time_ratio", "ratio"),
]
DIAGNOSTIC_COLUMNS: list[tuple[str, str, str]] = [
    ("cos/all", "cos_all", "cos"),
    ("cos mean", "cos_mean", "cos"),
    ("W/B angle", "angle_mean", "deg"),
]


def table_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Column titles and formatted cells (what both the Markdown and the CLI tables show)."""
    columns = list(COLUMNS)
    if any(r.get("has_diagnostics") for r in rows):
        columns += DIAGNOSTIC_COLUMNS
    titles = [c[0] for c in columns]
    cells = []
    for r in rows:
        line = []
        for _, key, kind in columns:
            text = str(r.get(key, "")) if kind == "str" else _fmt(r.get(key), kind)
            sd = r.get(key + "_sd")
            if sd is not None and kind != "str" and not (kind == "flops" and sd == 0):
                text = _fmt_spread(r.get(key), sd, kind)
            if key == "rule":
                text += status_suffix(r)
            line.append(text)
        cells.append(line)
    return titles, cells


def status_suffix(row: Any) -> str:
    """``" (diverged at step N)"`` for a run that blew up, ``" (<status>)"`` for another
    status other than ok, else ``""`` (used by every table and the plot legend). ``row`` is a
    table row, a result dict or a :class:`~beyondbp.training.RunResult`."""

    def get(key: str, default: Any = None) -> Any:
        return row.get(key, default) if isinstance(row, Mapping) else getattr(row, key, default)

    status = get("status", "ok")
    if get("diverged") or status == "diverged":
        step = get("diverged_at_step")
        return " (diverged)" if step is None else f" (diverged at step {step})"
    return "" if status == "ok" else f" ({status})"


def baseline_note(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    base = rows[0].get("baseline", "?")
    if base == "backprop":
        return "Ratios (×) are each rule's value divided by backprop's."
    return f"No backprop row: ratios (×) are each rule's value divided by the first row's ({base})."


def render_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table of :func:`comparison_table` rows, with a baseline note."""
    titles, cells = table_cells(rows)
    out = ["| " + " | ".join(titles) + " |", "|" + "|".join("---" for _ in titles) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in cells]
    note = baseline_note(rows)
    if note:
        out += ["", note]
    return "\n".join(out) + "\n"


def _per_epoch(runs: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[Any], list[float], list[float]]:
    """Epochs, and the mean and sample sd (0 for one run) of ``key`` over ``runs`` at each epoch
    (the runs that reached it)."""
    by_epoch: dict[Any, list[float]] = {}
    for r in runs:
        for h in r.get("history") or []:
            v = _num(h.get(key))
            by_epoch.setdefault(h.get("epoch"), [])
            if v is not None:
                by_epoch[h.get("epoch")].append(scale * v)
    epochs = list(by_epoch)
    means = [_mean(by_epoch[e]) for e in epochs]
    sds = [_sd(by_epoch[e]) or 0.0 for e in epochs]
    return epochs, [float("nan") if m is None else m for m in means], sds


def plot_curves(results: Sequence[Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """PNG of test accuracy, training loss and test loss per epoch, one line per rule (several
    runs of a rule, e.g. seeds: their mean, with a band of ± one standard deviation); written
    atomically (the figure: :func:`curves_figure`)."""
    fig = curves_figure(results, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, lambda fh: fh.write(buf.getvalue()))


def curves_figure(results: Sequence[Any], title: str | None = None) -> Any:
    """The matplotlib ``Figure`` :func:`plot_curves` writes: three panels (test accuracy,
    training loss, test loss). Uses matplotlib's Agg canvas directly, so it never changes the
    caller's pyplot backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(15, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    ax_acc, ax_loss, ax_test = fig.subplots(1, 3)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in (_as_dict(x) for x in results):
        groups.setdefault(str(r.get("rule", "?")), []).append(r)
    plotted: list[float] = []
    for rule, runs in groups.items():
        diverged = [r for r in runs if r.get("diverged") or r.get("status") == "diverged"]
        label = rule + (status_suffix(diverged[0] if diverged else runs[0]) if len(runs) == 1 else
                        (f" (diverged: {len(diverged)} of {len(runs)})" if diverged else ""))
        for ax, key, scale in ((ax_acc, "test_accuracy", 100.0), (ax_loss, "train_loss", 1.0), (ax_test, "test_loss", 1.0)):
            epochs, means, sds = _per_epoch(runs, key, scale)
            line, = ax.plot(epochs, means, marker=".", label=label)
            if len(runs) > 1:
                ax.fill_between(epochs, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                                color=line.get_color(), alpha=0.2, linewidth=0)
            if key == "train_loss":
                plotted += [m for m in means if m == m]
    ax_acc.set_ylabel("test accuracy (%)")
    ax_loss.set_ylabel("training loss (each rule's own objective)")
    ax_test.set_ylabel("test loss (cross-entropy)")
    if plotted and min(plotted) > 0:
        # local rules (FF, SoftHebb) minimise objectives on other scales than cross-entropy
        ax_loss.set_yscale("log")
    for ax in (ax_acc, ax_loss, ax_test):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    tidy_axes(fig)  # plain tick labels: no offset, no "×10^0"
    fig.tight_layout()
    return fig


def results_json(results: Sequence[Any]) -> str:
    """The JSON text :func:`write_json` writes: ``{"runs": [...], "table": [...]}``; non-finite
    numbers are written as ``null``."""
    dicts = [_as_dict(r) for r in results]
    payload = plain({"runs": dicts, "table": comparison_table(dicts)})
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def write_json(results: Sequence[Any], path: str | os.PathLike) -> Path:
    """Write every run (config, history, measurements) and the comparison table, atomically."""
    text = results_json(results).encode()
    return atomic_write_bytes(path, lambda fh: fh.write(text))


def read_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs stored by :func:`write_json` (as dicts; ``RunResult.from_dict`` rebuilds them)."""
    with open(path, encoding="utf-8") as fh:
        return list(json.load(fh)["runs"])
