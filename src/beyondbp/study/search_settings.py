"""A study spec's ``[search]`` table, read and checked: what :mod:`beyondbp.study.search` does
with the grid's learning rates and seeds (the syntax and meaning are in :mod:`beyondbp.study.spec`'s
docstring, "Search").

Every mistake is a :class:`~beyondbp.study.spec_tables._SpecError` naming its place
(``[search] lr.factor``) and what is allowed; all of them are raised together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .spec_tables import _raise_all, _show, _SpecError

__all__ = ["LRSearch", "MAX_SEARCH_SEEDS", "Search", "SeedSearch", "check_search_size", "parse_search", "search_run_bound"]

#: The most seeds a cell may get from ``[search] seeds``.
MAX_SEARCH_SEEDS = 1000
#: The largest ``[search] lr.factor`` and ``lr.max_rounds`` (beyond them a search is a mistake).
MAX_FACTOR = 1000.0
MAX_ROUNDS = 100


@dataclass(frozen=True)
class LRSearch:
    """``[search] lr``: learning-rate bracketing (see :mod:`beyondbp.study.search`)."""

    factor: float = 3.0
    max_rounds: int = 4
    refine: bool = False
    margin: float = 0.0
    warm_start: bool = False
    seeds: int | None = None


@dataclass(frozen=True)
class SeedSearch:
    """``[search] seeds``: seeds on demand, from ``min`` to ``max`` per cell."""

    min: int = 3
    max: int = 10
    baseline: str = "backprop"


@dataclass(frozen=True)
class Search:
    """A spec's ``[search]``: ``lr`` and ``seeds`` (None: not searched)."""

    lr: LRSearch | None = None
    seeds: SeedSearch | None = None


_LR_KEYS = {
    "factor": "a number greater than 1 (the geometric step beyond an edge, e.g. 3)",
    "max_rounds": f"a whole number from 0 to {MAX_ROUNDS} (rounds of extension per cell)",
    "refine": "true or false (one more round at the geometric midpoints around the best rate)",
    "margin": "a number from 0 to 1 (how much worse, relatively, a rate must be to close a side)",
    "warm_start": "true or false (centre a larger model's first rates on the trend of best rate against size)",
    "seeds": "a whole number of at least 1 (bracket on the first that many seeds; the others run at the best rate only)",
}
_SEED_KEYS = {"min": "a whole number of at least 1", "max": f"a whole number from min to {MAX_SEARCH_SEEDS}",
              "baseline": "the rule label the others are judged against (default 'backprop')"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _lr(table: Any, axes: dict[str, Any], errors: list[_SpecError]) -> LRSearch | None:
    if not isinstance(table, dict):
        errors.append(_SpecError("[search] lr", f"must be a table, e.g. lr = {{factor = 3, max_rounds = 4}}, got {_show(table)}"))
        return None
    if "lr" not in axes:
        errors.append(_SpecError("[search] lr", "the spec has no lr axis to search from; give [axes] lr = [...] "
                                                "(the learning rates each cell starts with)"))
    before = len(errors)
    for key in table:
        if key not in _LR_KEYS:
            errors.append(_SpecError(f"[search] lr.{key}", f"unknown key; [search] lr takes {', '.join(_LR_KEYS)}"))
    got = {**LRSearch().__dict__, **{k: v for k, v in table.items() if k in _LR_KEYS}}
    checks = {
        "factor": _number(got["factor"]) and 1 < float(got["factor"]) <= MAX_FACTOR,
        "max_rounds": _whole(got["max_rounds"]) and 0 <= got["max_rounds"] <= MAX_ROUNDS,
        "refine": isinstance(got["refine"], bool),
        "margin": _number(got["margin"]) and 0 <= float(got["margin"]) <= 1,
        "warm_start": isinstance(got["warm_start"], bool),
        "seeds": got["seeds"] is None or (_whole(got["seeds"]) and got["seeds"] >= 1),
    }
    for key, ok in checks.items():
        if not ok:
            errors.append(_SpecError(f"[search] lr.{key}", f"must be {_LR_KEYS[key]}, got {_show(got[key])}"))
    if len(errors) > before:
        return None
    return LRSearch(float(got["factor"]), int(got["max_rounds"]), got["refine"], float(got["margin"]), got["warm_start"],
                    got["seeds"])


def _seeds(table: Any, axes: dict[str, Any], errors: list[_SpecError]) -> SeedSearch | None:
    if not isinstance(table, dict):
        errors.append(_SpecError("[search] seeds", f"must be a table, e.g. seeds = {{min = 3, max = 10}}, got {_show(table)}"))
        return None
    before = len(errors)
    for key in table:
        if key not in _SEED_KEYS:
            errors.append(_SpecError(f"[search] seeds.{key}", f"unknown key; [search] seeds takes {', '.join(_SEED_KEYS)}"))
    low, high = table.get("min", SeedSearch.min), table.get("max", SeedSearch.max)
    if not _whole(low) or low < 1:
        errors.append(_SpecError("[search] seeds.min", f"must be {_SEED_KEYS['min']}, got {_show(low)}"))
    elif not _whole(high) or not low <= high <= MAX_SEARCH_SEEDS:
        errors.append(_SpecError("[search] seeds.max", f"must be {_SEED_KEYS['max']} (min is {low}), got {_show(high)}"))
    elif isinstance(axes.get("seed"), list) and len(axes["seed"]) > high:
        errors.append(_SpecError("[search] seeds.max", f"{high} is fewer than the {len(axes['seed'])} seeds of [axes] seed; "
                                                       "raise max or drop seeds"))
    baseline = table.get("baseline", SeedSearch.baseline)
    if not isinstance(baseline, str):
        errors.append(_SpecError("[search] seeds.baseline", f"must be {_SEED_KEYS['baseline']}, got {_show(baseline)}"))
    if len(errors) > before:
        return None
    return SeedSearch(int(low), int(high), baseline)


def parse_search(table: Any, axes: dict[str, Any]) -> Search | None:
    """The ``[search]`` table (``table``; empty: None) of a spec whose ``[axes]`` are ``axes``."""
    if not table:
        return None
    if not isinstance(table, dict):
        raise _SpecError("[search]", f"must be a table, got {_show(table)}")
    errors: list[_SpecError] = []
    lr = seeds = None
    for key, value in table.items():
        if key == "lr":
            lr = _lr(value, axes, errors)
        elif key == "seeds":
            seeds = _seeds(value, axes, errors)
        else:
            errors.append(_SpecError(f"[search] {key}", "not a searchable axis; [search] takes lr (learning-rate "
                                                        "bracketing) and seeds (seeds on demand)"))
    _raise_all(errors)
    return Search(lr=lr, seeds=seeds)


def search_run_bound(search: Search, runs: Sequence[Any]) -> tuple[int, int, int, int]:
    """The most runs the study of the grid ``runs`` (its ``PlannedRun`` objects) can have with ``search``,
    whatever the runs give: ``(runs, cells, most rates of a cell, seeds per rate)``. A cell (a
    label with one value of every axis but lr and seed) tries at most its first rates + 2 per
    ``lr.max_rounds`` (one beyond each edge) + 2 with ``lr.refine`` (the midpoints around the
    best), each at the study's seeds (the grid's, with ``seeds.min`` at least), and gets at most
    ``seeds.max`` − that many more seeds, one run each, at its best rate
    (:mod:`beyondbp.study.search`)."""
    lrs: dict[tuple[str, str], set[float]] = {}
    seeds: set[Any] = set()
    for run in runs:
        others = repr(sorted((k, repr(v)) for k, v in run.axes.items() if k not in ("rule", "lr", "seed")))
        lrs.setdefault((run.label, others), set()).add(run.config.lr)
        seeds.add(run.config.seed)
    n_seeds = max(len(seeds), search.seeds.min) if search.seeds is not None else len(seeds)
    more_seeds = max(0, search.seeds.max - n_seeds) if search.seeds is not None else 0
    grow = 2 * search.lr.max_rounds + 2 * search.lr.refine if search.lr is not None else 0
    total = sum((len(rates) + grow) * n_seeds + more_seeds for rates in lrs.values())
    return total, len(lrs), max((len(r) for r in lrs.values()), default=0) + grow, n_seeds


def check_search_size(search: Search, runs: Sequence[Any], max_runs: int) -> None:
    """Refuse (one sentence, ``[search]``) a search whose worst case (:func:`search_run_bound`)
    exceeds ``max_runs``: a study stays within the limit whatever its runs give."""
    total, cells, rates, n_seeds = search_run_bound(search, runs)
    if total <= max_runs:
        return
    more = search.seeds.max - n_seeds if search.seeds is not None and search.seeds.max > n_seeds else 0
    raise _SpecError("[search]", (
        f"the search may grow the study to {total:,} runs ({cells:,} cells × up to {rates} rates × {n_seeds} seeds"
        + (f", + up to {more} more seeds each" if more else "")
        + f"); a study may have at most {max_runs:,}, so lower lr.max_rounds or seeds.max, or split the study"))
