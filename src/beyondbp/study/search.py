"""A study's search: the runs a spec's ``[search]`` adds to its grid, as a pure function of the
spec and the run store's records (:func:`plan_search`).

Cells. A *cell* is a rule label with one value of every axis but ``lr`` and ``seed`` (model size
and options, budget, ...): the group of runs whose best learning rate
:func:`~beyondbp.study.selection.best_lr_table` selects. Its *seeds* are the spec's (the seed
axis, else ``[base]``'s seed), followed, with ``[search] seeds``, by the next whole numbers up to
``seeds.min``; its *rates* start as the spec's ``lr`` list for its label.

Learning-rate bracketing (``[search] lr``). Replayed for each cell from its first rates, using
only finished runs, so the same records always give the same rates:

1. wait until every (rate, seed) of the cell has finished (done, diverged or failed);
2. a rate's score is the mean final validation loss over the cell's seeds (with ``lr.seeds`` = k:
   its first k seeds; the cell's other seeds then run at the best rate alone, once the bracketing
   has settled, which costs a fraction of bracketing on every seed); a rate at which some
   run diverged (or failed, or has no finite loss) has none. The best rate has the lowest mean
   (ties: the smaller rate);
3. each side of the best rate is *closed* when some rate on that side with a score is worse
   than the best by more than ``margin`` (relative: ``loss > best × (1 + margin)``), or else when
   some rate on that side diverged; otherwise it is *open* (the best is the edge on that side, or
   every rate beyond it is as good within the margin);
4. with an open side: after ``max_rounds`` extension rounds the cell is ``capped at N rounds``;
   else one round adds, for each open side, the edge rate × ``factor`` (or ÷) and goes to 1.
   When every rate diverged the next round adds the smallest ÷ ``factor``;
5. both sides closed: with ``refine = true`` one more round (once) adds the geometric midpoints
   between the best rate and its neighbours (half the log-step) and goes to 1; otherwise the cell
   is ``bracketed``, or ``bounded by divergence`` when a side is closed only by a diverged rate
   (the loss does not rise before the rate diverges).

New rates are rounded to 6 significant digits. A cell waiting for runs is ``searching``.

Warm start (``[search] lr.warm_start = true``). Within a *family* (a label with one value of every
axis but ``lr``, ``seed`` and ``model_options``: the same rule and budget at every model size),
cells are planned size by size, smallest parameter count first (counted on the meta device;
cells whose model cannot be counted keep the spec's order and rates). A cell at the third size
or later waits (``waiting for smaller sizes``) until every smaller cell is bracketed or bounded;
then its first rates are the spec's list for its label shifted (geometrically, keeping their
number and ratios) so that their geometric centre lies on the least-squares line of log(best
rate) against log(parameter count) through the smaller cells, at its own parameter count.
Capped smaller cells leave the spec's list in place.

Seeds on demand (``[search] seeds``). Once every cell's learning rate is settled and every run
has finished, the finished runs are judged (:func:`~beyondbp.study.verdict.judge_study`,
``seeds.baseline`` as the baseline, no L(N, D) fit). For each label whose verdict is
``undecided`` (too few seeds or resamples, or intervals that overlap) or whose loss-difference
interval at the top of the studied range contains 0, every cell of that label and of the
baseline with a best-LR run on the compute-efficient frontier gets one more seed (the next whole
number) at its best rate, up to ``seeds.max`` seeds per cell; then the runs are judged again
when they have finished. The seeds added so far are read back from the store (runs of the cell
with those seeds), so a rerun after an interruption continues where it stopped.

Runs added by the search are ordinary runs: their ids come from their settings, they are
stored, resumed and reported like the spec's; :func:`~beyondbp.study.runner.run_study` runs
until :func:`plan_search` adds nothing new.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..jsonable import plain
from .search_settings import LRSearch, Search
from .selection import other_axes, record_label, run_point
from .spec import PlannedRun, Spec

__all__ = ["CellState", "SearchPlan", "annotate_analysis", "judge_searched", "plan_search"]

#: Cell states (``capped at N rounds`` carries its number).
BRACKETED, BOUNDED, SEARCHING, WAITING, FIXED = (
    "bracketed", "bounded by divergence", "searching", "waiting for smaller sizes", "not searched")


def capped(rounds: int) -> str:
    return f"capped at {rounds} round{'s' if rounds != 1 else ''}"


@dataclass(frozen=True)
class CellState:
    """Where one cell's search stands: ``label``, ``axes`` (every axis but lr and seed),
    ``state``, ``rounds`` (learning-rate rounds made, refinement included), ``lrs`` (the rates
    tried, ascending), ``best_lr`` (None while searching), ``seeds`` (its number of seeds at the
    best rate) and ``added`` (its runs not in the spec's grid)."""

    label: str
    axes: Mapping[str, Any]
    state: str
    rounds: int
    lrs: tuple[float, ...]
    best_lr: float | None
    seeds: int
    added: int

    @property
    def capped(self) -> bool:
        return self.state.startswith("capped")

    def to_dict(self) -> dict[str, Any]:
        return plain({"label": self.label, "axes": dict(self.axes), "state": self.state, "rounds": self.rounds,
                      "lrs": list(self.lrs), "best_lr": self.best_lr, "seeds": self.seeds, "added": self.added})


@dataclass
class SearchPlan:
    """What :func:`plan_search` gives: ``runs`` (the spec's and the search's, spec's first),
    ``cells`` (one :class:`CellState` each), ``added`` (runs not in the spec's grid), ``rounds``
    (the most learning-rate rounds of a cell) and ``seed_rounds`` (the most seeds added to a cell
    beyond ``seeds.min``)."""

    runs: list[PlannedRun]
    cells: list[CellState]
    added: int
    rounds: int
    seed_rounds: int

    def state_counts(self) -> dict[str, int]:
        return dict(Counter(c.state for c in self.cells))

    def summary(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "seed_rounds": self.seed_rounds, "added": self.added,
                "states": self.state_counts(), "cells": [c.to_dict() for c in self.cells]}


def _key(values: Mapping[str, Any]) -> str:
    return json.dumps(plain(values), sort_keys=True)


def _round(x: float) -> float:
    return float(f"{x:.6g}")


class _Cell:
    def __init__(self, key: tuple[str, str], run: PlannedRun) -> None:
        self.key, self.template, self.label = key, run, run.label
        self.axes = other_axes({"axes": run.axes})
        self.lrs: list[float] = []
        self.runs: dict[tuple[float, Any], PlannedRun] = {}
        self.state, self.rounds, self.best, self.tried = FIXED, 0, None, []
        #: (lr, seed) of the runs the cell needs now (its search's; seeds on demand add more)
        self.planned: set[tuple[float, Any]] = set()

    def run(self, lr: float, seed: Any, made: dict[str, PlannedRun]) -> PlannedRun:
        have = self.runs.get((lr, seed))
        if have is not None:
            return have
        t = self.template
        config = t.config.replace(lr=lr, seed=seed)
        axes = dict(t.axes)
        if "lr" in axes:
            axes["lr"] = lr
        if "seed" in axes or seed != t.config.seed:
            axes["seed"] = seed
        run = made.setdefault(config.run_id, PlannedRun(config.run_id, config, axes, t.label))
        self.runs[(lr, seed)] = run
        return run


def _outcome(rec: Mapping[str, Any]) -> float | None:
    """A finished run's loss (None: diverged, failed or no finite loss)."""
    if rec.get("status") != "done":
        return None
    point, _ = run_point(rec)
    return None if point is None else float(point["loss"])


def _replay(cell: _Cell, first: list[float], seeds: list[Any], done: Mapping[str, float | None], cfg: LRSearch,
            made: dict[str, PlannedRun]) -> None:
    """Bracket ``cell``'s learning rate from ``first`` (see the module docstring); sets
    ``cell.tried``, ``state``, ``rounds``, ``best`` and ``planned``. With ``cfg.seeds`` = k the
    bracketing reads the first k seeds only; once it has settled the other seeds run at the best
    rate alone."""
    bracket = seeds[: cfg.seeds] if cfg.seeds else seeds
    _bracket(cell, first, bracket, done, cfg, made)
    cell.planned = {(lr, s) for lr in cell.tried for s in bracket}
    if cell.state != SEARCHING and cell.best is not None:
        for s in seeds[len(bracket):]:
            cell.run(cell.best, s, made)
            cell.planned.add((cell.best, s))


def _bracket(cell: _Cell, first: list[float], seeds: list[Any], done: Mapping[str, float | None], cfg: LRSearch,
             made: dict[str, PlannedRun]) -> None:
    tried = sorted(set(first))
    rounds, refined = 0, False
    cell.tried, cell.best = tried, None
    while True:
        cell.tried, cell.rounds = tried, rounds + refined
        ids = {lr: [cell.run(lr, s, made).id for s in seeds] for lr in tried}
        if any(i not in done for row in ids.values() for i in row):
            cell.state = SEARCHING
            return
        score: dict[float, float | None] = {}
        for lr in tried:
            losses = [done[i] for i in ids[lr]]
            score[lr] = None if any(v is None for v in losses) else sum(losses) / len(losses)
        ok = [lr for lr in tried if score[lr] is not None]
        if not ok:
            sides = {"low": "open"}
            best = None
        else:
            best = min(ok, key=lambda lr: (score[lr], lr))
            sides = {}
            for side, others in (("low", [x for x in tried if x < best]), ("high", [x for x in tried if x > best])):
                if any(score[x] is not None and score[x] > score[best] * (1 + cfg.margin) for x in others):
                    sides[side] = "worse"
                elif any(score[x] is None for x in others):
                    sides[side] = "diverged"
                else:
                    sides[side] = "open"
        cell.best = best
        open_sides = [s for s, v in sides.items() if v == "open"]
        if open_sides:
            if rounds >= cfg.max_rounds:
                cell.state = capped(cfg.max_rounds)
                return
            new = []
            if "low" in open_sides:
                new.append(_round(tried[0] / cfg.factor))
            if "high" in open_sides:
                new.append(_round(tried[-1] * cfg.factor))
            new = [x for x in new if x not in tried]
            if not new:  # the step is below the rounding: nothing more to try
                cell.state = capped(rounds)
                return
            rounds += 1
            tried = sorted(tried + new)
            continue
        if cfg.refine and not refined:
            refined = True
            i = tried.index(best)
            mids = [_round(math.sqrt(best * tried[j])) for j in (i - 1, i + 1) if 0 <= j < len(tried)]
            mids = [x for x in mids if x not in tried]
            if mids:
                tried = sorted(tried + mids)
                continue
        cell.state = BOUNDED if "diverged" in sides.values() else BRACKETED
        return


def _param_count(run: PlannedRun) -> int | None:
    """The parameter count of a run's model, built on the meta device (None: it cannot be)."""
    try:
        import torch

        from .. import models as models_mod
        from .spec import _nominal_shape

        shape, classes = _nominal_shape(run.config)
        with torch.device("meta"):
            model = models_mod.build(run.config.model, shape, classes, **run.config.model_options)
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - no count: the cell keeps the spec's order and rates
        return None


def _trend(points: list[tuple[float, float]], n: float) -> float:
    """The least-squares line of log(best lr) against log(N) through ``points``, at ``n``."""
    xs = [math.log(p[0]) for p in points]
    ys = [math.log(p[1]) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
    return math.exp(my + slope * (math.log(n) - mx))


def _centred(spec_lrs: list[float], centre: float) -> list[float]:
    """``spec_lrs`` shifted geometrically so that their geometric centre is ``centre``."""
    logs = [math.log(x) for x in spec_lrs]
    shift = math.log(centre) - (min(logs) + max(logs)) / 2
    return [_round(math.exp(x + shift)) for x in logs]


def plan_search(spec: Spec, records: Sequence[Mapping[str, Any]], baseline: str | None = None) -> SearchPlan:
    """The runs of ``spec`` with what its ``[search]`` adds given ``records`` (the store's
    :meth:`~beyondbp.study.store.Store.records`, or the slimmer
    :meth:`~beyondbp.study.store.Store.search_records`: the same plan), and every cell's state (module docstring). A
    pure function: the same spec and records give the same plan. Without ``[search]``: the
    spec's runs and one ``not searched`` cell per group."""
    search = spec.search or Search()
    spec_runs = spec.runs()
    made: dict[str, PlannedRun] = {r.id: r for r in spec_runs}
    done = {r["id"]: _outcome(r) for r in records if r.get("status") in ("done", "diverged", "failed")}
    cells: dict[tuple[str, str], _Cell] = {}
    first: dict[tuple[str, str], list[float]] = {}
    seeds: list[Any] = []
    for run in spec_runs:
        key = (run.label, _key(other_axes({"axes": run.axes})))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Cell(key, run)
        lr, seed = run.config.lr, run.config.seed
        cell.runs[(lr, seed)] = run
        first.setdefault(key, [])
        if lr not in first[key]:
            first[key].append(lr)
        if seed not in seeds:
            seeds.append(seed)
    if search.seeds is not None:
        nxt = max(int(s) for s in seeds) + 1
        while len(seeds) < search.seeds.min:
            seeds.append(nxt)
            nxt += 1
    order = list(cells.values())
    if search.lr is not None and search.lr.warm_start:
        counts = {cell.key: _param_count(cell.template) for cell in order}
        _plan_warm(order, first, counts, seeds, done, search.lr, made)
    else:
        for cell in order:
            if search.lr is not None:
                _replay(cell, first[cell.key], seeds, done, search.lr, made)
            else:
                cell.tried = sorted(first[cell.key])
                for lr in cell.tried:
                    for s in seeds:
                        cell.run(lr, s, made)
                        cell.planned.add((lr, s))
    extra = _seed_search(spec, order, seeds, records, done, made, baseline)
    spec_ids = {r.id for r in spec_runs}
    included: set[str] = set()
    additions: list[PlannedRun] = []
    states = []
    for cell in order:
        mine = set()
        for (lr, seed), run in cell.runs.items():
            if (lr, seed) in cell.planned or (lr in cell.tried and seed in extra.get(cell.key, ())):
                mine.add(run.id)
                if run.id not in included:
                    included.add(run.id)
                    if run.id not in spec_ids:
                        additions.append(run)
        n_seeds = len(seeds) + len(extra.get(cell.key, ()))
        states.append(CellState(cell.label, cell.axes, cell.state, cell.rounds, tuple(cell.tried), cell.best, n_seeds,
                                len(mine - spec_ids)))
    # the spec's runs that a warm start replaced (a larger size's first rates, moved) are left out
    runs = [r for r in spec_runs if r.id in included] + additions
    return SearchPlan(runs, states, len(additions), max((c.rounds for c in states), default=0),
                      max((len(v) for v in extra.values()), default=0))


def _plan_warm(order: list[_Cell], first: dict, counts: dict, seeds: list[Any], done: Mapping[str, float | None],
               cfg: LRSearch, made: dict[str, PlannedRun]) -> None:
    families: dict[tuple[str, str], list[_Cell]] = {}
    for cell in order:
        fam = {k: v for k, v in cell.axes.items() if k != "model_options"}
        families.setdefault((cell.label, _key(fam)), []).append(cell)
    for members in families.values():
        sized = sorted((c for c in members if counts.get(c.key)), key=lambda c: counts[c.key])
        for c in members:
            if not counts.get(c.key):
                _replay(c, first[c.key], seeds, done, cfg, made)
        for rank, cell in enumerate(sized):
            before = sized[:rank]
            start = first[cell.key]
            if rank >= 2:
                if any(b.state in (SEARCHING, WAITING) for b in before):
                    cell.state, cell.tried, cell.planned = WAITING, [], set()
                    continue
                settled = [(counts[b.key], b.best) for b in before if b.state in (BRACKETED, BOUNDED) and b.best]
                if len(settled) >= 2:
                    start = _centred(start, _trend(settled, counts[cell.key]))
            _replay(cell, start, seeds, done, cfg, made)


def _seed_search(spec: Spec, order: list[_Cell], seeds: list[Any], records: Sequence[Mapping[str, Any]],
                 done: Mapping[str, float | None], made: dict[str, PlannedRun], baseline: str | None) -> dict:
    """Cell key -> the seeds added beyond ``seeds`` (see the module docstring)."""
    cfg = spec.search.seeds if spec.search is not None else None
    if cfg is None or not seeds:
        return {}
    sequence = list(range(max(int(s) for s in seeds) + 1, max(int(s) for s in seeds) + 1 + cfg.max))
    by_cell: dict[tuple[str, str], dict[Any, list[Mapping[str, Any]]]] = {}
    for rec in records:
        key = (record_label(rec), _key(other_axes(rec)))
        by_cell.setdefault(key, {}).setdefault((rec.get("config") or {}).get("seed"), []).append(rec)
    extra: dict[tuple[str, str], list[Any]] = {}
    for cell in order:
        stored = by_cell.get(cell.key, {})
        got = []
        for s in sequence[: cfg.max - len(seeds)]:
            if s not in stored:
                break
            for rec in stored[s]:
                cell.run(float(rec["config"]["lr"]), s, made)
            got.append(s)
        extra[cell.key] = got
    if any(c.state in (SEARCHING, WAITING) for c in order):
        return extra
    current = [run for cell in order for (lr, s), run in cell.runs.items()
               if (lr, s) in cell.planned or s in extra[cell.key]]
    if any(r.id not in done for r in current):
        return extra
    ids = {r.id for r in current}
    mine = [rec for rec in records if rec["id"] in ids]
    base = baseline or "backprop"
    labels = {c.label for c in order}
    if base not in labels or len(labels) < 2:
        return extra
    analysis = _judged(mine, base)
    wanted: set[str] = set()
    for label, v in analysis.verdicts.items():
        if v.studied is None:
            continue
        spans = float(v.studied.low[-1]) <= 0.0 <= float(v.studied.high[-1])
        if v.cls == "undecided" or spans:
            wanted |= {label, base}
    if not wanted:
        return extra
    best = {(row.label, _key(row.axes)): row.best_lr for row in analysis.best_lr}
    on_front: set[tuple[str, str]] = set()
    for label in wanted:
        fits = analysis.fits.get(label)
        if fits is None:
            continue
        front = {(round(p.C, 6), str(p.seed)) for p in fits.frontier.points}
        for r in analysis.runs:
            if r.label == label and r.best_lr and (round(r.C, 6), str(r.seed)) in front:
                on_front.add((r.label, _key(r.axes)))
    for cell in order:
        if cell.key not in on_front or len(seeds) + len(extra[cell.key]) >= cfg.max:
            continue
        lr = best.get(cell.key)
        if lr is None:
            continue
        s = sequence[len(extra[cell.key])]
        cell.run(float(lr), s, made)
        extra[cell.key] = [*extra[cell.key], s]
    return extra


#: Bootstrap resamples of the judgement that decides on more seeds (as ``study report``'s default).
SEED_BOOTSTRAP = 200
#: The last judgements of :func:`_judged` (the runner and status judge the same runs repeatedly).
_JUDGED: dict[Any, Any] = {}


def _judged(records: list[Mapping[str, Any]], baseline: str) -> Any:
    """``judge_study(records, baseline, loss_law=False)``, remembered for the same finished runs
    (their ids, statuses, labels, axes and losses determine it)."""
    from .verdict import judge_study

    key = (baseline, SEED_BOOTSTRAP, tuple(sorted((str(r["id"]), str(r.get("status")), record_label(r), _key(other_axes(r)),
                                   repr(_outcome(r))) for r in records)))
    if key not in _JUDGED:
        if len(_JUDGED) >= 8:
            _JUDGED.pop(next(iter(_JUDGED)))
        _JUDGED[key] = judge_study(records, baseline=baseline, loss_law=False, n_bootstrap=SEED_BOOTSTRAP)
    return _JUDGED[key]


def annotate_analysis(analysis: Any, plan: SearchPlan) -> Any:
    """``analysis`` (a :class:`~beyondbp.study.judgement.StudyVerdicts`) with the search's cell
    states: each best-LR row's ``search`` state, each verdict's ``capped`` cells (those of its
    two labels capped before their learning rate was bracketed, also named in its sentence),
    and a warning per capped cell."""
    state = {(c.label, _key(c.axes)): c for c in plan.cells if c.state != FIXED}
    rows = tuple(replace(r, search=state[(r.label, _key(r.axes))].state) if (r.label, _key(r.axes)) in state else r
                 for r in analysis.best_lr)
    verdicts = {}
    for label, v in analysis.verdicts.items():
        hit = [c for c in plan.cells if c.capped and c.label in (label, v.baseline)]
        if hit:
            where = "; ".join(_where(c) for c in hit)
            text = (f"depends on {len(hit)} cell{'s' if len(hit) > 1 else ''} whose learning rate search was "
                    f"{hit[0].state} before it was bracketed ({where})")
            v = replace(v, capped=tuple(_where(c) for c in hit), sentence=v.sentence[:-1] + f" (capped: {text}).")
        verdicts[label] = v
    warnings = [f"{_where(c)}: {c.state} before its learning rate was bracketed (rates tried: "
                f"{', '.join(f'{x:g}' for x in c.lrs)}); raise [search] lr.max_rounds to go on"
                for c in plan.cells if c.capped]
    return replace(analysis, best_lr=rows, verdicts=verdicts, warnings=tuple(warnings) + tuple(analysis.warnings))


def _where(cell: CellState) -> str:
    axes = ", ".join(f"{k}={v}" for k, v in cell.axes.items())
    return cell.label + (f" {axes}" if axes else "")


def judge_searched(spec: Spec, records: Sequence[Mapping[str, Any]], **options: Any) -> Any:
    """:func:`~beyondbp.study.verdict.judge_study` of ``records`` (the study's, as
    :func:`~beyondbp.study.inspection.study_records` gives them) with ``options``; with a
    ``[search]``, annotated with its cell states (:func:`annotate_analysis`)."""
    from .verdict import judge_study

    analysis = judge_study(records, **options)
    if spec.search is None:
        return analysis
    seeds = spec.search.seeds
    return annotate_analysis(analysis, plan_search(spec, records, seeds.baseline if seeds is not None else None))
