"""Which runs a study's analysis fits: each done run as a point (``N``, ``D``, ``C``, the final
loss, its seed, learning rate and other axes) and, per group of runs that differ only in learning
rate and seed, the best learning rate. The rules are in :mod:`beyondbp.study.verdict`'s
docstring ("Which runs", "Per run", "Best learning rate"); :func:`~beyondbp.study.verdict.judge_study`
is their one caller.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..jsonable import finite_number as _num
from ..jsonable import plain
from .judgement import BestLR, LRLoss

__all__ = ["best_lr_table", "other_axes", "record_label", "record_lr", "record_seed", "run_point"]

#: Axes that are not part of a best-LR group.
_NOT_GROUP_AXES = ("rule", "lr", "seed")


def _pos(value: Any) -> float | None:
    v = _num(value)
    return v if v is not None and v > 0 else None


def _key(values: Mapping[str, Any]) -> str:
    return json.dumps(plain(values), sort_keys=True)


def record_label(rec: Mapping[str, Any]) -> str:
    axes = rec.get("axes") or {}
    config = rec.get("config") or {}
    return str(rec.get("label") or axes.get("rule") or config.get("rule") or "?")


def other_axes(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (rec.get("axes") or {}).items() if k not in _NOT_GROUP_AXES}


def record_lr(rec: Mapping[str, Any]) -> float | None:
    axes = rec.get("axes") or {}
    return _num(axes["lr"]) if "lr" in axes else _num((rec.get("config") or {}).get("lr"))


def record_seed(rec: Mapping[str, Any]) -> Any:
    if rec.get("seed") is not None:
        return rec["seed"]
    axes = rec.get("axes") or {}
    if "seed" in axes:
        return axes["seed"]
    return (rec.get("config") or {}).get("seed", 0)


def run_point(rec: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """One done run as a point of the analysis (``index`` −1 until the caller numbers it), or
    ``(None, reason)``."""
    result = rec.get("result") or {}
    config = rec.get("config") or {}
    final = result.get("final") or {}
    n = _pos(result.get("n_active_params")) or _pos(result.get("n_params")) or _pos(rec.get("n_params"))
    steps = _pos(result.get("steps"))
    fps = _pos(result.get("flops_per_step")) or _pos(rec.get("flops_per_step"))
    compute = fps * steps if fps and steps else _pos(rec.get("flops_total"))
    lm = result.get("tokens") is not None or "val_loss" in final
    if lm:
        data = _pos(result.get("tokens"))
        loss_name = "val_loss"
    else:
        batch = _pos(config.get("batch_size"))
        data = steps * batch if steps and batch else None
        loss_name = "test_loss"
    loss = _pos(final.get(loss_name))
    missing = [name for name, v in (("loss", loss), ("compute", compute), ("parameter count", n), ("data seen", data)) if v is None]
    if missing:
        return None, f"no finite positive {', '.join(missing)} in the result"
    eval_flops = _num(result.get("eval_flops"))
    if eval_flops is None:
        eval_flops = _num(rec.get("eval_flops"))
    return {
        "index": -1,
        "id": rec.get("id"),
        "label": record_label(rec),
        "N": n,
        "D": data,
        "C": compute,
        "eval_flops": eval_flops,
        "loss": loss,
        "loss_name": loss_name,
        "seed": record_seed(rec),
        "lr": record_lr(rec),
        "axes": other_axes(rec),
        "steps": steps,
    }, None


# -- best learning rate -------------------------------------------------------------------------
def best_lr_table(points: list[dict[str, Any]], diverged: list[Mapping[str, Any]]) -> tuple[list[BestLR], list[str], set[Any]]:
    """The best-LR table, its warnings, and the indices of the best-LR runs (see
    :mod:`beyondbp.study.verdict`, "Best learning rate")."""
    groups: dict[tuple[str, str], dict[Any, list[dict[str, Any]]]] = {}
    order: list[tuple[str, str]] = []
    for p in points:
        key = (p["label"], _key(p["axes"]))
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key].setdefault(p["lr"], []).append(p)
    blown: Counter = Counter()
    for rec in diverged:
        blown[(record_label(rec), _key(other_axes(rec)), record_lr(rec))] += 1
    rows, warnings, kept = [], [], set()
    for key in order:
        by_lr = groups[key]
        grid = sorted({lr for lr in by_lr if lr is not None} | {lr for (l, a, lr) in blown if (l, a) == key and lr is not None})
        common = _common_seeds(by_lr)

        def ranked_mean(runs: list[dict[str, Any]]) -> float:
            return float(np.mean([p["loss"] for p in runs if common is None or str(p["seed"]) in common]))

        ranked = sorted(by_lr.items(), key=lambda item: (blown[(*key, item[0])] > 0, ranked_mean(item[1])))
        uneven = common is not None and any({str(p["seed"]) for p in rs} != common for rs in by_lr.values())
        best_lr, runs = ranked[0]
        for p in runs:
            kept.add(p["index"])
        mean = float(np.mean([p["loss"] for p in runs]))
        edge = None
        if len(grid) > 1 and best_lr is not None:
            if best_lr == grid[0]:
                edge = "smallest"
            elif best_lr == grid[-1]:
                edge = "largest"
        label, axes = key[0], runs[0]["axes"]
        where = label + (" " + ", ".join(f"{k}={_short(v)}" for k, v in axes.items()) if axes else "")
        if edge:
            warnings.append(
                f"{where}: the best learning rate {best_lr:g} is the {edge} of the grid "
                f"({', '.join(f'{x:g}' for x in grid)}); a learning rate beyond the grid might do better, "
                "so this comparison is not trustworthy"
            )
        rows.append(BestLR(
            label=label,
            axes=axes,
            N=runs[0]["N"],
            D=runs[0]["D"],
            C=float(np.mean([p["C"] for p in runs])),
            best_lr=best_lr,
            mean_loss=mean,
            n_seeds=len(runs),
            lr_grid=tuple(grid),
            mean_loss_by_lr=tuple(
                LRLoss(lr=lr, mean_loss=float(np.mean([p["loss"] for p in rs])), n_seeds=len(rs),
                       n_diverged=blown[(*key, lr)], ranked_loss=ranked_mean(rs))
                for lr, rs in sorted(by_lr.items(), key=lambda it: (it[0] is None, it[0] or 0.0))
            ),
            edge=edge,
            selected=len(grid) > 1,
            ranked_seeds=tuple(sorted(common)) if uneven and common else None,
        ))  # fmt: skip
    return rows, warnings, kept


def _common_seeds(by_lr: Mapping[Any, list[dict[str, Any]]]) -> set[str] | None:
    """The seeds (as text) that every rate of a cell has, which rank its rates: a rate that got
    more seeds than the others (seeds on demand add them at the best rate only; ``[search]
    lr.seeds`` brackets on a few and runs the rest at the best) is compared on the same seeds as
    the others, not on a mean over more. None (rank on every seed) when they share none."""
    seeds = [{str(p["seed"]) for p in runs} for runs in by_lr.values()]
    common = set.intersection(*seeds) if seeds else set()
    return common or None


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
