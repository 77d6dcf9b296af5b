"""Running a study: the spec's runs that are not finished, on a local process pool or on Ray.

:func:`run_study` adds the spec's runs that the store lacks as ``pending`` (so adding a value
to an axis runs only the new runs), hands back runs whose owner died, then keeps up to
``workers`` runs in flight: each is claimed atomically with a lease (:meth:`Store.claim`),
trained by a worker (:func:`~beyondbp.study.executors.execute`, which returns ``RunResult.to_dict()`` or the error text)
and recorded by this process — the driver is the only one that writes the store. A ``done``
or ``diverged`` run is never run again; a ``failed`` one only with ``retry_failed``. While runs
are in flight the driver renews their leases (a heartbeat every quarter of the lease), so
another ``study run`` on the same store takes only other runs, and takes over these only when
this driver dies (same host: at once, by process check; another host: when the lease expires).

Search: with a spec's ``[search]`` the runs are those :func:`~beyondbp.study.search.plan_search`
gives for the store's finished runs; whenever no run is left to claim and more runs have
finished since it last looked, the driver plans again and adds (as ``pending``) what the search
adds, until it adds nothing. The summary then has ``search`` (rounds, cells per state, runs added).

The plan (the runs, and a search's summary) is kept in the store whenever the driver plans
(:meth:`Store.save_status_plan`), so that ``study status`` answers from it without loading
the spec (:mod:`beyondbp.study.status_plan`).

Executors (:mod:`beyondbp.study.executors`): ``local``, a process pool of ``workers``
processes, and ``ray``, each run a Ray task on ``ray.init(address=address)`` (a local Ray
instance without an address). Both give identical results for the same spec (each run is seeded
by its config alone). With ``[execution] device = "cuda"`` each local worker trains on its own
GPU and Ray asks for a GPU per run (see :mod:`beyondbp.study.executors`). ``workers`` is at most the CPU cores this process may use, except on a Ray
cluster given by address (each worker started here is a process running at least one torch
thread; more of them than cores only slow every run down).

A worker that dies (killed, out of memory) hands its runs back to ``pending``; a run whose
attempts reach :data:`MAX_ATTEMPTS` that way is recorded ``failed``. Interrupting the driver
(Ctrl-C, or SIGTERM under :class:`beyondbp.interrupts.Stopping`, as the command line runs it)
hands its in-flight runs back too, stops the local workers and cancels the Ray tasks.

No process outlives the driver (see :mod:`beyondbp.study.executors`).

A lost lease: a driver stopped (SIGSTOP, Ctrl-Z) for longer than its lease can no longer renew
it, and another ``study run`` may take its runs over. A local worker checks, every quarter of
the lease (and at once after being stopped itself), that its driver still holds its run, and
stops training it otherwise; the driver checks too at each heartbeat (cancelling the Ray task).
Either way the driver reports it (a ``"lost"`` progress event) and never records a run it no
longer holds, so the run is trained to the end, and recorded, once.

Resume: every run gets the execution settings ``state =
<store dir>/<store stem>.states/<run id>.pt`` and the spec's ``[execution] checkpoint_every``,
so a run whose worker died resumes from its last state on the next ``study run`` (the run
layer deletes a run's state file once the run has finished).

Models: with ``[execution] keep_models = true`` every run also gets ``checkpoint =
<store dir>/<store stem>.models/<run id>.pt``: the run layer writes its final model there
(atomically) when it finishes, for ``beyondbp analyze``.

The library never prints: ``progress(event, info)`` receives ``"start"`` (``total``,
``counts``, ``added``, ``reclaimed``, ``workers``), ``"claimed"`` (``id``, ``label``, ``axes``,
``counts``), ``"finished"`` (``id``, ``status``, ``wall_time``, ``error``, ``counts``),
``"lost"`` (``id``, ``label``, ``axes``, ``step``: where this driver's worker stopped it, or
None, ``counts``: another process took the run over), ``"tick"`` (``counts``, about once a
second) and ``"end"`` (the summary :func:`run_study` returns).

Looking at a study without running it (dry run, status, records, check) is
:mod:`beyondbp.study.inspection`.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..training.config import check_count
from .executors import _import_ray, _Local, _Ray, check_workers, visible_gpus, worker_devices
from .search import SearchPlan, plan_search
from .spec import Spec, check_device, default_store_path
from .status_plan import spec_key
from .store import STATUSES, Owner, Store

__all__ = ["LEASE_SECONDS", "MAX_ATTEMPTS", "model_dir", "run_study", "state_dir", "worker_threads"]

#: Attempts after which a run whose worker keeps dying is recorded ``failed``.
MAX_ATTEMPTS = 3
#: Default lease of a claimed run, seconds (renewed every quarter of it); read when
#: :func:`run_study` is called, so tests may set it shorter.
LEASE_SECONDS = 60.0

Progress = Callable[[str, dict[str, Any]], None]


def worker_threads(spec: Spec, executor: str, workers: int) -> int:
    """Torch threads per run: the spec's ``[execution] threads`` if given, else 1 (as
    ``beyondbp train``'s default), with either executor and any number of workers."""
    given = spec.execution.get("threads")
    if given:
        return int(given)
    return 1


def state_dir(store_path: str | os.PathLike) -> Path:
    """Where runs keep their resume state: ``<store dir>/<store stem>.states``."""
    path = Path(store_path)
    return path.parent / f"{path.stem}.states"


def model_dir(store_path: str | os.PathLike) -> Path:
    """Where runs save their final models with ``keep_models``: ``<store dir>/<store stem>.models``."""
    path = Path(store_path)
    return path.parent / f"{path.stem}.models"


def _check_run_folders(store_path: Path, keep_models: bool) -> None:
    """Refuse, before the store is created, a ``<store>.states`` (or, with ``keep_models``,
    ``<store>.models``) that exists and is not a directory."""
    folders = [("resume-state folder", state_dir(store_path))]
    if keep_models:
        folders.append(("model folder", model_dir(store_path)))
    for what, folder in folders:
        if folder.is_symlink() and not folder.is_dir() or (folder.exists() and not folder.is_dir()):
            raise ConfigError(
                f"the {what} {str(folder)!r} of run store {str(store_path)!r} exists and is not a folder; "
                "move it aside or give another store with --store"
            )



# -- the driver --------------------------------------------------------------------------------
def _check_arguments(spec: Spec, executor: str, workers: int, address: str | None, starting: bool = True) -> None:
    # each worker is a process (local, or a task of the Ray started here) running at least one
    # torch thread: more of them than cores only slows every run down; a dry run starts none
    check_workers(executor, workers, address, starting=starting)
    check_count(workers, "number of workers")
    device = str(spec.execution.get("device") or "cpu")
    if executor == "ray" and device.startswith("cuda:"):
        raise ConfigError(f"{spec.path.name}: [execution] device {device!r}: with the ray executor use 'cuda' "
                          "(Ray gives each run its own GPU)")
    seen: dict[str, Any] = {}
    for run in spec.runs():
        if run.id in seen:
            raise ConfigError(
                f"spec {str(spec.path)!r}: the runs with axes {seen[run.id].axes} and {run.axes} train the same thing (run id {run.id}); "
                "remove the duplicate axis value"
            )
        seen[run.id] = run


def _counts(store: Store, ids: set[str]) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for run_id, status in store.statuses().items():
        if run_id in ids:
            counts[status] = counts.get(status, 0) + 1
    return counts


def feature_dir(store_path: str | os.PathLike) -> Path:
    """Where a study's liquid runs (model ``lsm``) cache their features unless ``[execution]
    feature_cache`` says otherwise: ``<store dir>/<store stem>.features``."""
    path = Path(store_path)
    return path.parent / f"{path.stem}.features"


def _worker_config(config: dict[str, Any], run_id: str, threads: int, states: Path | None,
                   checkpoint_every: int | None, models: Path | None = None,
                   features: Path | None = None) -> dict[str, Any]:
    """What a worker trains: the stored config with this execution's settings."""
    values = dict(config, threads=threads)
    if values.get("feature_workers") is None:  # the study runs its runs in parallel already
        values["feature_workers"] = 1
    if features is not None and not values.get("feature_cache"):
        values["feature_cache"] = str(features)
    if models is not None:
        values["checkpoint"] = str(models / f"{run_id}.pt")
    if states is not None:
        values["state"] = str(states / f"{run_id}.pt")
        if checkpoint_every is not None:
            values["checkpoint_every"] = int(checkpoint_every)
    return values


def run_study(
    spec: Spec,
    store_path: str | os.PathLike | None = None,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress: Progress | None = None,
    retry_failed: bool = False,
    *,
    lease_seconds: float | None = None,
) -> dict[str, Any]:
    """Run the study's unfinished runs (see the module docstring). Returns a summary: ``store``
    (its path), ``total`` (runs in the spec), ``added`` (new in the store), ``reclaimed``
    (handed back from dead owners), ``ran`` (runs recorded by this call), ``counts`` (spec runs
    by status at the end), ``wall_time`` (seconds), ``store_seconds`` (spent in store calls)
    and ``run_seconds`` (the workers' time in the runs recorded), ``lost`` (runs another
    process took over after this one's lease expired). ``lease_seconds`` defaults to
    :data:`LEASE_SECONDS`.

    Refused before the store is created or opened: an ``[execution] device`` this machine lacks
    (:func:`~beyondbp.study.spec.check_device`; not when the runs go to a Ray cluster at
    ``address``), more ``workers`` than its GPUs × ``[execution] workers_per_gpu`` take with a
    CUDA device (:func:`~beyondbp.study.executors.worker_devices`; same exception), a GPU index
    with the ray executor, and a ``<store>.states`` (with ``keep_models``, ``<store>.models``) that is not a
    folder. A damaged store is refused when it is opened (see :mod:`beyondbp.study.store`)."""
    started = time.perf_counter()
    lease_seconds = float(LEASE_SECONDS if lease_seconds is None else lease_seconds)
    _check_arguments(spec, executor, workers, address)
    ray = _import_ray() if executor == "ray" else None
    device = str(spec.execution.get("device") or "cpu")
    per_gpu = int(spec.execution.get("workers_per_gpu") or 1)
    devices = None
    if executor == "local" or address is None:  # runs on this machine (a cluster may have the device)
        check_device(spec)
        devices = worker_devices(device, workers, visible_gpus() if device.startswith("cuda") else 0, per_gpu)
    path = Path(store_path) if store_path is not None else default_store_path(spec.path)
    runs = spec.runs()
    ids = {r.id for r in runs}
    threads = worker_threads(spec, executor, workers)
    emit = progress or (lambda event, info: None)

    _check_run_folders(path, bool(spec.execution.get("keep_models")))
    store = Store(path, create=True, study=spec.name)
    owner = Owner.new()
    inflight: dict[Any, str] = {}
    pool: _Local | _Ray | None = None
    interrupted = False
    taken: set[Any] = set()  # handles of runs another process took over (announced already)
    summary: dict[str, Any] = {"store": str(path), "total": len(runs), "ran": 0, "run_seconds": 0.0, "lost": 0}
    try:
        if spec.search is not None:  # the runs its search adds given the runs already finished
            runs = _plan_kept(spec, store).runs
            ids.update(r.id for r in runs)
            summary["total"] = len(runs)
        summary["added"] = len(store.add_runs(runs))
        if spec.search is None:  # what `study status` answers from (beyondbp.study.status_plan)
            store.save_status_plan(spec_key(spec.text.encode("utf-8")), runs)
        if retry_failed:
            store.reset_failed(ids)
        summary["reclaimed"] = len(store.reclaim_dead(owner))
        states = state_dir(path)
        states.mkdir(parents=True, exist_ok=True)
        checkpoint_every = spec.execution.get("checkpoint_every")
        models = model_dir(path) if spec.execution.get("keep_models") else None
        if models is not None:
            models.mkdir(parents=True, exist_ok=True)
        counts = _counts(store, ids)
        emit("start", {"total": len(runs), "counts": counts, "added": summary["added"],
                       "reclaimed": summary["reclaimed"], "workers": workers})
        if counts["pending"] == 0:
            summary["counts"] = counts
            if spec.search is not None:
                summary["search"] = _plan_kept(spec, store).summary()
            return summary
        pool = (_Local(workers, threads, devices) if ray is None
                else _Ray(ray, threads, address, workers, device=device, per_gpu=per_gpu))
        beat_every = lease_seconds / 4
        last_beat = time.monotonic()
        by_id = {r.id: r for r in runs}
        finished_seen = [-1]

        def grow() -> bool:
            """Add what the search adds given the runs finished now (when more have finished since
            the last look); True when some run was added."""
            if spec.search is None:
                return False
            finished = sum(1 for s in store.statuses().values() if s in ("done", "diverged", "failed"))
            if finished == finished_seen[0]:
                return False
            finished_seen[0] = finished
            # not `ids`: a spec run the search left out at first (a seed beyond lr.seeds) may join later
            new = [r for r in plan_search(spec, store.search_records(), _baseline(spec)).runs if r.id not in by_id]
            if not new:
                return False
            summary["added"] += len(store.add_runs(new))
            runs.extend(new)
            ids.update(r.id for r in new)
            by_id.update((r.id, r) for r in new)
            summary["total"] = len(runs)
            return True

        # a local worker can read the store: it checks that this driver still holds its run
        watch = None if ray is not None else {"store": str(path.resolve()), "token": owner.token, "every": beat_every}

        def lost(run_id: str, step: int | None) -> None:
            summary["lost"] += 1
            if progress is not None:
                run = by_id[run_id]
                emit("lost", {"id": run_id, "label": run.label, "axes": run.axes, "step": step,
                              "counts": _counts(store, ids)})

        while True:
            while len(inflight) < workers:
                claimed = store.claim(owner, lease_seconds, ids)
                if claimed is None:
                    store.reclaim_dead(owner)  # a driver that died meanwhile leaves runs to take
                    claimed = store.claim(owner, lease_seconds, ids)
                if claimed is None and grow():  # the search adds runs once the ones it waits for finished
                    claimed = store.claim(owner, lease_seconds, ids)
                if claimed is None:
                    break
                config = _worker_config(claimed["config"], claimed["id"], threads, states, checkpoint_every, models,
                                        feature_dir(path))
                lease = None if watch is None else dict(watch, run_id=claimed["id"])
                inflight[pool.submit(config, lease)] = claimed["id"]
                run = by_id[claimed["id"]]
                if progress is not None:
                    emit("claimed", {"id": run.id, "label": run.label, "axes": run.axes, "counts": _counts(store, ids)})
            if not inflight:
                break
            for handle in pool.wait(list(inflight), timeout=min(1.0, beat_every)):
                run_id = inflight.pop(handle)
                if handle in taken:  # another process runs it: whatever came back is not ours
                    taken.discard(handle)
                    continue
                try:
                    outcome = pool.outcome(handle)
                except Exception as exc:  # the worker itself died
                    _worker_died(store, owner, pool, inflight, run_id, exc, progress, ids)
                    break
                if "abandoned" in outcome:  # the worker found the run taken over and stopped
                    lost(run_id, outcome["abandoned"])
                    continue
                status = store.finish(owner, run_id, outcome)
                if status is None:  # taken over before the result came: it is not recorded
                    lost(run_id, None)
                    continue
                summary["ran"] += 1
                summary["run_seconds"] += float(outcome.get("wall_time") or 0.0)
                error = outcome.get("error")
                if progress is not None:
                    emit("finished", {"id": run_id, "status": status, "wall_time": outcome.get("wall_time"),
                                      "error": error.splitlines()[0] if error else None, "counts": _counts(store, ids)})
            if time.monotonic() - last_beat >= beat_every:
                store.heartbeat(owner, lease_seconds)
                last_beat = time.monotonic()
                held = store.held(owner)  # a run missing was taken over while this process was stopped
                for handle, run_id in inflight.items():
                    if run_id not in held and handle not in taken:
                        taken.add(handle)
                        pool.cancel([handle])
                        lost(run_id, None)
            if progress is not None:
                emit("tick", {"counts": _counts(store, ids)})
        summary["counts"] = _counts(store, ids)
        if spec.search is not None:
            summary["search"] = _plan_kept(spec, store).summary()
        return summary
    except BaseException:
        interrupted = True
        if inflight:  # interrupted: hand the runs back for the next study run, stop their work
            store.release(owner, list(inflight.values()))
            if pool is not None:
                pool.cancel(list(inflight))
        raise
    finally:
        if pool is not None:
            pool.close(cancel=interrupted)
        summary["wall_time"] = time.perf_counter() - started
        summary["store_seconds"] = store.seconds
        store.close()
        if "counts" in summary:
            emit("end", dict(summary))


def _plan_kept(spec: Spec, store: Store) -> SearchPlan:
    """The search's plan given the store's runs now, kept in the store with the digest of the
    runs it was planned from, for `study status` (:mod:`beyondbp.study.status_plan`)."""
    records, state = store.planning_records()
    plan = plan_search(spec, records, _baseline(spec))
    store.save_status_plan(spec_key(spec.text.encode("utf-8")), plan.runs, plan.summary(), state)
    return plan


def _baseline(spec: Spec) -> str | None:
    return spec.search.seeds.baseline if spec.search is not None and spec.search.seeds is not None else None


def _worker_died(store: Store, owner: Owner, pool: Any, inflight: dict[Any, str], run_id: str, exc: BaseException,
                 emit: Progress | None, ids: set[str]) -> None:
    """A worker process died: every run in flight is handed back (a broken pool loses them all);
    one whose attempts reached MAX_ATTEMPTS is recorded ``failed`` instead."""
    lost = [run_id, *inflight.values()]
    inflight.clear()
    pool.lost()
    attempts = {r["id"]: r["attempts"] for r in store.rows() if r["id"] in lost}
    reason = " ".join(f"{type(exc).__name__}: {exc}".split()) or type(exc).__name__
    for rid in lost:
        if attempts.get(rid, 0) >= MAX_ATTEMPTS:
            error = f"the worker running it died {MAX_ATTEMPTS} times (last: {reason})"
            store.finish(owner, rid, {"error": error, "host": socket.gethostname()})
            if emit is not None:
                emit("finished", {"id": rid, "status": "failed", "wall_time": None, "error": error,
                                  "counts": _counts(store, ids)})
        else:
            store.release(owner, [rid], outcome="lost")
