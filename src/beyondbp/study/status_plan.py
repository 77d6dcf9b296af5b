"""``study status`` without loading the spec: the plan ``study run`` keeps in the store.

Loading a spec validates every run through the model and data registries, which import torch:
in a fresh process that is most of the time of ``beyondbp study status`` on a large study
(bench/README.md, "`study status` from the kept plan"). So whenever ``study run`` plans a study
(:func:`~beyondbp.study.runner.run_study`, at its start and its end) it keeps the plan in the
store (:meth:`Store.save_status_plan`): each planned run's id, label and axes in the spec's order
and, for a spec with ``[search]``, the search's summary. It is kept under a *key*
(:func:`spec_key`): a hash of the spec file's bytes, this beyondbp's version and source files
(their names, sizes and modification times: any change of the code that plans runs changes it)
and this machine's memory (a spec whose model would not fit is refused when loaded). A searched
study's plan also depends on the store (its finished runs): it is kept with the digest of the
runs it was planned from (:meth:`Store.run_states`: which runs the store holds and which have
finished, done, diverged or failed; a finished run's result never changes).

:func:`quick_status` answers ``study status`` from the kept plan when its key is the spec
file's now and, with a search, its digest is the store's now; the counts, times, failed runs
and stale leases are read from the store as always, by the same code as the full path
(:func:`status_of`), so the answer is the one loading the spec would give. Otherwise (the spec
edited since, runs finished since in a searched study, a store written before plans were kept,
anything unreadable) it gives None and the caller loads the spec. This module imports neither
torch nor the spec's registries; ``status`` never writes the store.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .._version import __version__
from ..errors import ConfigError
from .store import STATUSES, Store

__all__ = ["quick_status", "spec_key", "status_of"]

#: Changes whenever what is kept, or how it is keyed, changes.
PLAN_FORMAT = "beyondbp-status-plan 1"
_CODE: list[str] = []


def _code_fingerprint() -> str:
    """Names, sizes and modification times of this beyondbp's source files (once per process)."""
    if not _CODE:
        root = Path(__file__).resolve().parent.parent
        parts = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(folder, name))
                    parts.append(f"{os.path.relpath(os.path.join(folder, name), root)}:{st.st_size}:{st.st_mtime_ns}")
        _CODE.append(hashlib.sha256("\n".join(parts).encode()).hexdigest())
    return _CODE[0]


def spec_key(spec_bytes: bytes) -> str:
    """The key a plan is kept under: a hash of the spec file's bytes, the plan format, this
    beyondbp (version and source files) and this machine's memory."""
    from ..resources import physical_memory

    head = "\n".join((PLAN_FORMAT, __version__, _code_fingerprint(), str(physical_memory()))).encode()
    return hashlib.sha256(head + b"\n" + spec_bytes).hexdigest()


def status_of(study: str, path: str, store_exists: bool, entries: Iterable[tuple[str, str | None, float | None]],
              describe: Callable[[int], tuple[str, Mapping[str, Any]]], details: Mapping[str, Mapping[str, Any]],
              stored: int, stale: int, workers: int, search: dict[str, Any] | None) -> dict[str, Any]:
    """The dict :func:`~beyondbp.study.inspection.study_status` returns, from the study's
    ``entries`` (``(run id, stored status or None when not stored, wall time)`` of each planned
    run, in the plan's order), ``describe`` (position in the plan -> label and axes: asked only
    for failed runs), ``details`` (the stored rows of failed and running runs by id), ``stored``
    (runs in the store), ``stale`` (running runs whose owner is dead) and the search summary."""
    counts = {s: 0 for s in STATUSES}
    spent = 0.0
    done_times: list[float] = []
    failed = []
    missing = unknown = matched = total = 0
    for position, (run_id, status, wall_time) in enumerate(entries):
        total += 1
        if status is None:
            missing += 1
            counts["pending"] += 1
            continue
        matched += 1
        if status not in counts:  # damage: counted apart (`study check` names them)
            unknown += 1
            continue
        counts[status] += 1
        if wall_time is not None and status in ("done", "diverged", "failed"):
            spent += float(wall_time)
            if status == "done":
                done_times.append(float(wall_time))
        if status == "failed":
            label, axes = describe(position)
            error = details[run_id]["error"] if run_id in details else None
            failed.append({"id": run_id, "label": label, "axes": axes, "error": error.splitlines()[0] if error else ""})
    mean = sum(done_times) / len(done_times) if done_times else None
    left = None if mean is None else mean * (counts["pending"] + counts["running"]) / workers
    return {
        "study": study,
        "store": path,
        "store_exists": store_exists,
        "total": total,
        "counts": counts,
        "missing": missing,
        "other": stored - matched,
        "stale": stale,
        "time_spent": spent,
        "mean_wall_time": mean,
        "time_left": left,
        "workers": workers,
        "failed": failed,
        "unknown_status": unknown,
        "search": search,
    }


def store_details(store: Store) -> tuple[dict[str, dict[str, Any]], int]:
    """The stored rows of failed and running runs by id (few: their errors and leases), and how
    many of the running ones have a dead owner."""
    details = {r["id"]: r for r in store.rows(("failed", "running"))}
    stale = sum(1 for r in details.values() if r["status"] == "running" and store.dead_reason(r))
    return details, stale


def quick_status(spec_path: str | os.PathLike, store_path: str | os.PathLike | None = None,
                 workers: int = 1) -> dict[str, Any] | None:
    """``study status`` of the spec at ``spec_path`` from the plan kept in its store (module
    docstring): what :func:`~beyondbp.study.inspection.study_status` of the loaded spec returns,
    or None when the kept plan cannot answer (then load the spec). Never raises for a spec or
    store it cannot read: the full path reports those."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        return None
    try:
        if not Path(spec_path).is_file():  # a FIFO or device is never read here: the full path refuses it
            return None
        key = spec_key(Path(spec_path).read_bytes())
        target = Path(store_path) if store_path is not None else Path(spec_path).with_suffix(".db")
        if target.is_symlink() or not target.is_file():
            return None
        with Store(target) as store:
            store._conn.execute("BEGIN")  # one read: the digest and the progress of the same store
            try:
                plan = store.status_plan()
                if plan is None or plan.get("key") != key or plan.get("study") != store.meta.get("study"):
                    return None
                if plan.get("state") is not None and plan["state"] != store.run_states():
                    return None
                ids = store.planned_ids()
                if len(ids) != plan.get("runs"):
                    return None
                rows = store.progress()
                details, stale = store_details(store)
                entries = [(run_id, *rows.get(run_id, (None, None))) for run_id in ids]
                described = store.planned_runs(i for i, entry in enumerate(entries) if entry[1] == "failed")
                return status_of(plan["study"], str(store.path), True, entries, described.__getitem__, details,
                                 len(rows), stale, workers, plan.get("search"))
            finally:
                store._conn.execute("COMMIT")
    except (ConfigError, OSError, sqlite3.Error, ValueError, KeyError, TypeError):
        return None

