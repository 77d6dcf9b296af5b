"""Looking at a study without running it: what a run would do and how long it would take
(:func:`dry_run`), where it stands (:func:`study_status`), its records in the spec's order
(:func:`study_records`) and the problems in its store (:func:`check_study`). None of them
creates or changes the store; ``study plan``, ``status``, ``report`` and ``check`` call them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .runner import _baseline, _check_arguments, worker_threads
from .search import SearchPlan, plan_search
from .spec import Spec, default_store_path
from .status_plan import status_of, store_details
from .store import FINISHED, STATUSES, Store

__all__ = ["MAX_PROBES", "PROBE_STEPS", "check_study", "dry_run", "study_records", "study_status"]


# -- dry run -----------------------------------------------------------------------------------
#: Optimizer steps of each probe run of :func:`dry_run`, and the most distinct runs it probes.
PROBE_STEPS = 20
MAX_PROBES = 4
#: Settings that do not change the cost of a step: runs differing only in these share a probe.
_COST_FREE = ("seed", "lr", "epochs", "steps", "tokens", "momentum", "weight_decay", "lr_schedule", "milestones", "gamma")


def _probe_key(config: Any) -> str:
    values = {k: v for k, v in config.model_dump().items() if k not in _COST_FREE}
    return json.dumps(values, sort_keys=True, default=str)


def _probe(config: Any, threads: int) -> tuple[float, float, float] | None:
    """(seconds per training step, seconds besides the steps — setup and one evaluation —, wall
    seconds) of a few steps of ``config``, or None when it cannot be probed (the run itself
    would fail: the study records that)."""
    from ..training import run
    from ..training.liquid import is_liquid_model

    if is_liquid_model(config.model):
        return None  # a probe would simulate the whole liquid (and write its features): no estimate
    try:
        short = config.replace(steps=PROBE_STEPS, epochs=None, tokens=None, threads=threads, diagnostics=False,
                               state=None, checkpoint=None, checkpoint_every=None)
        result = run(short)
    except Exception:  # noqa: BLE001 - a probe that fails says only that no estimate is possible
        return None
    if result.time_per_step is None:
        return None
    total = float(result.total_time)
    return float(result.time_per_step), max(0.0, total - PROBE_STEPS * float(result.time_per_step)), total


def dry_run(spec: Spec, store_path: str | os.PathLike | None = None, executor: str = "local", workers: int = 1,
            address: str | None = None, retry_failed: bool = False, probe: bool = True) -> dict[str, Any]:
    """What :func:`~beyondbp.study.runner.run_study` would do, without creating or changing the store: ``store`` (its
    path) and ``store_exists``; ``runs``, one entry per spec run (``id``, ``label``, ``axes``,
    ``status``: the store's, or ``"new"``; ``will_run``; ``steps``: its optimizer steps;
    ``seconds``: its estimated time or None); ``to_run`` (how many will run); ``estimate``
    (estimated wall-clock seconds for them with ``workers`` at once, or None) and ``probes``
    (how many short probe runs measured it).

    The estimate: for up to :data:`MAX_PROBES` distinct kinds of run to run (runs differing
    only in seed, learning rate, budget or optimizer settings are one kind), a probe of
    :data:`PROBE_STEPS` optimizer steps on this machine, with the threads the runs would use,
    gives the time per step and the cost besides the steps (data, model, FLOP counting, one
    evaluation); a run then takes its steps × the time per step + that cost for each of its
    epochs (evaluation points); kinds not probed take the mean of the probed ones. The estimate
    is the runs' sum divided by ``workers``, plus ``warmup``: what the first run in a fresh
    process pays once (imports, first kernels), measured by one warm-up probe. It holds for the
    machine's load at the time of the probe. Probes run in this process and write nothing."""
    _check_arguments(spec, executor, workers, address, starting=False)
    import torch

    from ..training import load_dataset
    from ..training.tasks import make_task

    target = Path(store_path) if store_path is not None else default_store_path(spec.path)
    exists = target.exists() or target.is_symlink()
    statuses: dict[str, str] = {}
    planned = spec.runs()
    if exists:
        with _store_for(spec, store_path) as store:
            statuses = store.statuses()
            planned = _runs(spec, store)
    elif spec.search is not None:
        planned = _runs(spec, None)
    threads = worker_threads(spec, executor, workers)
    measured: dict[str, tuple[float, float, float] | None] = {}
    warmup = 0.0
    datasets: dict[str, Any] = {}
    entries = []
    for planned in planned:
        status = statuses.get(planned.id, "new")
        will_run = status in ("new", "pending", "running") or (status == "failed" and retry_failed)
        entry: dict[str, Any] = {"id": planned.id, "label": planned.label, "axes": planned.axes, "status": status,
                                 "will_run": will_run, "steps": None, "seconds": None}
        entries.append(entry)
        if not (will_run and probe):
            continue
        config = planned.config
        try:
            data_key = json.dumps([config.data, config.data_dir, config.data_options, config.n_train, config.n_test],
                                  sort_keys=True, default=str)
            if data_key not in datasets:
                datasets[data_key] = load_dataset(config)
            task = make_task(config, datasets[data_key], torch.device("cpu"))
            entry["steps"] = int(task.total_steps)
            entry["_evals"] = int(task.start_info().get("epochs") or 1)
        except Exception:  # noqa: BLE001 - the run would fail; no estimate for it
            continue
        key = _probe_key(config)
        if key not in measured and len(measured) < MAX_PROBES:
            first = None if measured else _probe(config, threads)  # the first run in a process pays one-time costs
            measured[key] = _probe(config, threads)
            if first is not None and measured[key] is not None:
                warmup = max(0.0, first[2] - measured[key][2])
        entry["_key"] = key
    known = [m for m in measured.values() if m is not None]
    for entry in entries:
        key, evals = entry.pop("_key", None), entry.pop("_evals", 1)
        if key is None or entry["steps"] is None:
            continue
        cost = measured.get(key)
        if cost is None and key not in measured and known:  # a kind not probed: the probed kinds' mean
            cost = (sum(k[0] for k in known) / len(known), sum(k[1] for k in known) / len(known), 0.0)
        if cost is not None:
            entry["seconds"] = entry["steps"] * cost[0] + evals * cost[1]
    to_run = [e for e in entries if e["will_run"]]
    seconds = [e["seconds"] for e in to_run]
    estimate = None
    if not to_run:
        estimate = 0.0
    elif all(x is not None for x in seconds):
        estimate = sum(seconds) / workers + warmup
    return {"study": spec.name, "store": str(target), "store_exists": exists, "runs": entries, "to_run": len(to_run),
            "estimate": estimate, "warmup": warmup, "probes": len(known), "workers": workers, "threads": threads}


# -- status and integrity ----------------------------------------------------------------------
def search_plan(spec: Spec, store: Store | None) -> SearchPlan:
    """The spec's runs and cells with what its ``[search]`` adds given the store's finished runs
    (:func:`~beyondbp.study.search.plan_search`; no store: none finished)."""
    return plan_search(spec, store.search_records() if store is not None else [], _baseline(spec))


def _runs(spec: Spec, store: Store | None) -> list[Any]:
    """The study's runs: the spec's, and with ``[search]`` the ones its search adds."""
    return search_plan(spec, store).runs if spec.search is not None else spec.runs()


def _store_for(spec: Spec, store_path: str | os.PathLike | None) -> Store:
    path = Path(store_path) if store_path is not None else default_store_path(spec.path)
    return Store(path, study=spec.name)  # read-only; a missing store is an error, not created


def study_status(spec: Spec, store_path: str | os.PathLike | None = None, workers: int = 1) -> dict[str, Any]:
    """Where a study stands: ``counts`` of the spec's runs by status (runs not yet in the store
    count as ``pending`` and are also counted in ``missing``), ``other`` (store runs no longer
    in the spec), ``stale`` (runs marked running whose owner is dead: the next ``study run``
    runs them again), ``time_spent`` (workers' seconds in finished runs), ``mean_wall_time`` (of
    done runs), ``time_left`` (that mean × (pending + running) / ``workers``; None before any
    run is done), ``failed`` (id, label, axes and first error line of each failed run) and
    ``unknown_status`` (spec runs whose stored status is none of :data:`STATUSES`: damage,
    counted nowhere else). ``store_exists`` is False for a study never run: every run is then
    pending and missing, and the store is not created."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"invalid number of workers {workers!r}: it must be a whole number of at least 1")
    target = Path(store_path) if store_path is not None else default_store_path(spec.path)
    plan = None
    details: dict[str, Any] = {}
    if not target.exists() and not target.is_symlink():  # never run: nothing to read, nothing created
        rows, path, stale = {}, str(target), 0
        if spec.search is not None:
            plan = search_plan(spec, None)
    else:
        with _store_for(spec, store_path) as store:
            rows = store.progress()
            details, stale = store_details(store)
            path = str(store.path)
            if spec.search is not None:
                plan = search_plan(spec, store)
    runs = plan.runs if plan is not None else spec.runs()
    entries = ((run.id, *rows.get(run.id, (None, None))) for run in runs)
    return status_of(spec.name, path, bool(rows) or Path(path).exists(), entries,
                     lambda i: (runs[i].label, runs[i].axes), details, len(rows), stale, workers,
                     plan.summary() if plan is not None else None)


def study_records(spec: Spec, store_path: str | os.PathLike | None = None,
                  skipped: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """The store's records (:meth:`Store.records`) of the spec's current runs, in the spec's
    order; runs the store holds that are no longer in the spec are left out, runs of the spec
    not yet in the store are absent. A missing store is an error, not created. Spec runs whose
    row :meth:`Store.records` skipped (unknown status, malformed result) are absent too and, when
    ``skipped`` is a list, appended to it as ``(run id, why)``.

    A record's ``label`` and ``axes`` are the spec's current ones, not those stored when the run
    was added: run ids are identity, labels are presentation, so renaming a rule label in the
    spec (``fa`` -> ``fa-random``, same settings) renames its finished runs everywhere."""
    with _store_for(spec, store_path) as store:
        everything = store.records()
        left_out = store.skipped
    by_id = {r["id"]: r for r in everything}
    runs = plan_search(spec, everything, _baseline(spec)).runs if spec.search is not None else spec.runs()
    if skipped is not None:
        ids = {run.id for run in runs}
        skipped.extend(item for item in left_out if item[0] in ids)
    return [{**by_id[run.id], "label": run.label, "axes": dict(run.axes)} for run in runs if run.id in by_id]


def check_study(spec: Spec, store_path: str | os.PathLike | None = None) -> list[str]:
    """Problems in a study's store, one sentence each (empty when sound): spec runs missing,
    unknown statuses, finished runs without their result (or failed ones without their error),
    running runs whose owner is dead, runs whose stored config does not hash to their id,
    attempts that do not add up (a run recorded finished more than once, a count that differs
    from the attempts logged), and SQLite's own integrity check."""
    from ..training import RunConfig

    path = Path(store_path) if store_path is not None else default_store_path(spec.path)
    with Store(path, study=spec.name, verify=False) as store:
        problems = store.damage(full=True)
        if any(not p.startswith("SQLite") for p in problems):
            return problems  # tables or columns missing: the rows cannot be checked
        try:
            rows = store.rows()
            attempts = store.attempts()
            dead = {r["id"]: store.dead_reason(r) for r in rows if r["status"] == "running"}
        except ConfigError as exc:  # pages too damaged to read
            return [*problems, str(exc)]
    by_id = {r["id"]: r for r in rows}
    if spec.search is not None:
        with Store(path, study=spec.name) as store:
            spec_runs = _runs(spec, store)
    else:
        spec_runs = spec.runs()
    for run in spec_runs:
        if run.id not in by_id:
            problems.append(f"run {run.id} ({_axes_text(run.axes)}) of the spec is missing from the store; `study run` adds it")
    logged: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        logged.setdefault(a["run_id"], []).append(a)
    for a in attempts:
        if a["run_id"] not in by_id:
            problems.append(f"attempt {a['attempt']} is logged for run {a['run_id']}, which is not in the store")
    for row in rows:
        rid, status = row["id"], row["status"]
        where = f"run {rid}"
        if status not in STATUSES:
            problems.append(f"{where} has status {status!r}, which is not one of {', '.join(STATUSES)}")
        for column in ("axes", "result", "final", "versions"):
            try:
                value = json.loads(row[column]) if row[column] is not None else None
            except ValueError:
                problems.append(f"{where}: its {column} is not JSON")
                continue
            if column in ("axes", "result") and value is not None and not isinstance(value, dict):
                problems.append(f"{where}: its {column} is not a JSON object")
        try:
            config = json.loads(row["config"])
            real_id = RunConfig(**config).run_id
            if real_id != rid:
                problems.append(f"{where}: its stored config hashes to run id {real_id}, not {rid}")
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}: its stored config is not a valid run config ({' '.join(str(exc).split())})")
        if status in ("done", "diverged"):
            try:
                result = json.loads(row["result"]) if row["result"] else None
            except ValueError:
                result = None
            if not isinstance(result, dict):
                problems.append(f"{where} is {status} but has no readable result")
            elif (result.get("status") == "diverged") != (status == "diverged"):
                problems.append(f"{where} is {status} but its result's status is {result.get('status')!r}")
            if status == "diverged" and row["diverged_at_step"] is None:
                problems.append(f"{where} is diverged but the step is not recorded")
        if status == "failed" and not row["error"]:
            problems.append(f"{where} failed but its error text is missing")
        if status == "running" and dead.get(rid):
            problems.append(f"{where} is marked running but {dead[rid]}; the next `study run` runs it again")
        own = logged.get(rid, [])
        if len(own) != row["attempts"]:
            problems.append(f"{where} counts {row['attempts']} attempts but {len(own)} are logged")
        if [a["attempt"] for a in own] != list(range(1, len(own) + 1)):
            problems.append(f"{where}: its logged attempts are not numbered 1 to {len(own)}")
        finishes = [a for a in own if a["outcome"] in ("done", "diverged", "failed")]
        open_ = [a for a in own if a["outcome"] is None]
        if sum(1 for a in finishes if a["outcome"] in FINISHED) > 1:
            problems.append(f"{where} was recorded finished {sum(1 for a in finishes if a['outcome'] in FINISHED)} times")
        if status in ("done", "diverged", "failed") and (not own or own[-1]["outcome"] != status):
            problems.append(f"{where} is {status} but its last attempt's outcome is {own[-1]['outcome'] if own else 'missing'!r}")
        if status == "running" and len(open_) != 1:
            problems.append(f"{where} is running but {len(open_)} of its attempts are open")
        if status != "running" and open_:
            problems.append(f"{where} is {status} but {len(open_)} of its attempts are still open")
    return problems


def _axes_text(axes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in axes.items()) or "no axes"
