"""The run store of a study: one SQLite file (WAL mode) that records every run of the grid.

A store belongs to one study (its ``[study] name``); opening it for another study is refused.
It holds three tables (and the two of the kept plan):

``meta``
    ``format`` (``beyondbp-study-store``), ``version`` (of this layout), ``study`` (the name) and
    ``created_at``. The file's SQLite ``application_id`` is set too, so a store is recognised
    before any table is read.
``runs``
    one row per run: ``id`` (``RunConfig.run_id``), ``position`` (the order runs were added,
    which is the spec's order), ``label``, ``axes`` and ``config`` (JSON), ``status``
    (``pending`` / ``running`` / ``done`` / ``failed`` / ``diverged``), ``attempts``, the lease
    (``lease_host``, ``lease_pid``, ``lease_token``, ``lease_expires``, ``heartbeat``),
    ``started_at`` / ``finished_at`` (Unix seconds), and once finished ``result``
    (``RunResult.to_dict()`` as JSON), ``final`` (its final metrics), ``n_params``,
    ``flops_per_step``, ``flops_total`` (``flops_per_step × steps``), ``eval_flops``,
    ``wall_time`` (seconds the worker spent in the run), ``seed``, ``versions`` (beyondbp,
    torch and Python of the worker, JSON), ``host`` (where it ran), ``error`` (text of a failed
    run) and ``diverged_at_step``.
``attempts``
    one row per time a run was claimed: ``run_id``, ``attempt`` (1, 2, ...), the owner's
    ``host``, ``pid`` and ``token``, ``started_at``, ``ended_at`` and ``outcome`` (``done``,
    ``failed``, ``diverged``, ``lost`` — its owner died or its lease expired and it was handed
    back, or the run's row was lost from a damaged store and added again —, ``released`` — its
    owner stopped and handed it back —, or empty while it runs). A run's ``attempts`` column
    counts its rows here; ``study check`` verifies that. A run whose row is missing while its
    attempts are still logged (a damaged store) is added again by :meth:`Store.add_runs`: its
    earlier attempts become ``lost`` and its attempt numbers continue after them, so it is run
    again.

``status_plan`` and ``status_plan_runs`` (optional: created by the first
:meth:`Store.save_status_plan`, absent from stores written before)
    the plan ``study run`` keeps for ``study status`` (:mod:`beyondbp.study.status_plan`): its key,
    a search's summary, and each planned run's id, label and axes in order.

Claims are atomic: :meth:`Store.claim` runs in a ``BEGIN IMMEDIATE`` transaction, so two
processes on one store never take the same run. A claim is a lease owned by ``(host, pid,
token)`` that expires unless its owner renews it (:meth:`Store.heartbeat`). A running run whose
owner is dead — same host and the process is gone (found at once), or (any host) the lease
expired — is handed back to ``pending`` by :meth:`Store.reclaim_dead`, and :meth:`Store.finish` only accepts the
result of the lease's current owner, so a run is never recorded twice.

Only the study's driver process writes the store; workers return their results to it. The time
spent inside the store's methods is added up in :attr:`Store.seconds` (for the benchmark).

Damage. Opening a store (:mod:`beyondbp.study.store_file`: the layout, creating and opening
the file, and the checks that refuse a damaged or foreign one) runs SQLite's quick check and
checks the tables and columns; ``Store(path, verify=False)`` opens it anyway, for
:meth:`Store.damage` (what ``study check`` reports). An SQLite error inside any method (a page
damaged after the check) is a :class:`ConfigError` too. :meth:`Store.records` refuses a row
whose JSON columns do not parse, and skips (listing them in :attr:`Store.skipped`) rows with an
unknown status or a result that is not a JSON object.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from ..errors import ConfigError
from ..files import pid_alive
from .store_file import StoreFile

__all__ = ["STATUSES", "FINISHED", "SLIM_CONFIG", "SLIM_RESULT", "Owner", "Store", "pid_alive"]

#: Every status a run can have.
STATUSES = ("pending", "running", "done", "failed", "diverged")
#: Statuses of runs that are never run again (``failed`` ones are, with ``--retry-failed``).
FINISHED = ("done", "diverged")
#: Outcomes of an attempt (besides empty while it runs).
OUTCOMES = ("done", "failed", "diverged", "lost", "released")
#: The config keys and result keys :meth:`Store.search_records` keeps: what a study's search
#: planner and its verdict read of a run (:func:`~beyondbp.study.selection.run_point`,
#: ``record_label``, ``record_lr``, ``record_seed``).
SLIM_CONFIG = ("rule", "lr", "seed", "batch_size")
SLIM_RESULT = ("n_active_params", "n_params", "steps", "flops_per_step", "tokens", "eval_flops", "final")

T = TypeVar("T")


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: this machine's host name, this process's id and a random token (so a
    later process that happens to get the same pid is not taken for the owner)."""

    host: str
    pid: int
    token: str

    @classmethod
    def new(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(8))


def lease_token(path: str | os.PathLike, run_id: str, timeout: float = 5.0) -> str | None:
    """The lease token under which run ``run_id`` of the store at ``path`` is running now, or
    None when it is not running (anyone's). Opens the file read-only for this one query (a
    worker checks that its driver still holds the run); SQLite errors propagate."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    try:
        row = conn.execute("SELECT status, lease_token FROM runs WHERE id = ?", (run_id,)).fetchall()
    finally:
        conn.close()
    if not row or row[0][0] != "running":
        return None
    return row[0][1]


def _timed(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: "Store", *args: Any, **kwargs: Any) -> T:
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:  # a page damaged after the opening check, a lock held too long
            raise ConfigError(
                f"run store {str(self.path)!r} failed ({' '.join(str(exc).split())}); if it is damaged, "
                "`beyondbp study check` lists its problems"
            ) from None
        finally:
            self.seconds += time.perf_counter() - t0

    return wrapper


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass
class Store(StoreFile):
    """A study's run store at ``path``.

    ``Store(path)`` opens an existing store read-only (what ``status``, ``check`` and reports
    need); ``Store(path, create=True, study=NAME)`` opens it for writing and creates it if it
    does not exist. With ``study`` given, a store of another study is refused. A file that is
    not a beyondbp run store is refused with one sentence (:class:`ConfigError`); so is a
    missing one unless ``create``, and a damaged one (SQLite's quick check or the tables) unless
    ``verify=False`` (what ``study check`` uses, to list the damage with :meth:`damage`).
    """

    path: Path
    create: bool = False
    study: str | None = None
    busy_timeout: float = 60.0
    verify: bool = True
    seconds: float = field(default=0.0, init=False)
    #: ``(run id, why)`` of the rows the last :meth:`records` call skipped.
    skipped: list[tuple[str, str]] = field(default_factory=list, init=False)
    _conn: sqlite3.Connection = field(init=False, repr=False)
    _meta_problem: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        t0 = time.perf_counter()
        self._conn = self._open()
        try:
            self._check_meta()
            if self.create:  # only once the file is known to be ours: these settings write to it
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            self._conn.close()
            raise
        self.seconds += time.perf_counter() - t0

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------
    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (committed, or rolled back on error)."""
        if not self.create:
            raise ConfigError(f"run store {str(self.path)!r} was opened read-only")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # read-only file or directory, locked for too long
            raise ConfigError(f"run store {str(self.path)!r} cannot be written: {exc}") from None
        try:
            out = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return out

    # -- writing --------------------------------------------------------------------------------
    @_timed
    def add_runs(self, runs: Iterable[Any]) -> list[str]:
        """Insert the planned runs (``PlannedRun``) not yet in the store, as ``pending``, after
        the existing ones; return the ids added."""
        runs = list(runs)

        def add(conn: sqlite3.Connection) -> list[str]:
            have = {r[0] for r in conn.execute("SELECT id FROM runs")}
            position = conn.execute("SELECT coalesce(max(position), -1) FROM runs").fetchone()[0]
            # attempts of runs whose row is gone (a damaged store): numbering continues after them
            logged = {r[0]: r[1] for r in conn.execute("SELECT run_id, max(attempt) FROM attempts GROUP BY run_id")}
            added = []
            now = time.time()
            for run in runs:
                if run.id in have:
                    continue
                position += 1
                config = run.config.model_dump()
                earlier = int(logged.get(run.id) or 0)
                conn.execute(
                    "INSERT INTO runs (id, position, label, axes, config, status, attempts, seed) "
                    "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (run.id, position, run.label, _dumps(run.axes), _dumps(config), earlier, config.get("seed")),
                )
                if earlier:  # what they recorded is lost with the row: the run is run again
                    conn.execute("UPDATE attempts SET outcome = 'lost', ended_at = coalesce(ended_at, ?) WHERE run_id = ?",
                                 (now, run.id))
                have.add(run.id)
                added.append(run.id)
            return added

        return self._write(add)

    @_timed
    def claim(self, owner: Owner, lease_seconds: float, ids: Iterable[str] | None = None) -> dict[str, Any] | None:
        """Atomically take the first ``pending`` run (in store order; among ``ids`` when given)
        for ``owner``: mark it ``running`` with a lease of ``lease_seconds``, count the attempt.
        Returns ``{"id", "config", "attempt"}``, or None when no such run is pending."""
        wanted = None if ids is None else set(ids)

        def take(conn: sqlite3.Connection) -> dict[str, Any] | None:
            for row in conn.execute("SELECT id, config, attempts FROM runs WHERE status = 'pending' ORDER BY position"):
                if wanted is not None and row["id"] not in wanted:
                    continue
                try:
                    config = json.loads(row["config"])
                except (TypeError, ValueError):
                    config = None
                if not isinstance(config, dict):
                    raise self._damaged(f"the config of run {row['id']} is not a JSON object")
                now = time.time()
                attempt = row["attempts"] + 1
                conn.execute(
                    "UPDATE runs SET status = 'running', attempts = ?, lease_host = ?, lease_pid = ?, lease_token = ?, "
                    "lease_expires = ?, heartbeat = ?, started_at = ?, finished_at = NULL WHERE id = ?",
                    (attempt, owner.host, owner.pid, owner.token, now + lease_seconds, now, now, row["id"]),
                )
                conn.execute(
                    "INSERT INTO attempts (run_id, attempt, host, pid, token, started_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (row["id"], attempt, owner.host, owner.pid, owner.token, now),
                )
                return {"id": row["id"], "config": config, "attempt": attempt}
            return None

        return self._write(take)

    @_timed
    def heartbeat(self, owner: Owner, lease_seconds: float) -> int:
        """Renew the leases of every run ``owner`` holds; return how many."""
        now = time.time()
        return self._write(lambda conn: conn.execute(
            "UPDATE runs SET lease_expires = ?, heartbeat = ? WHERE status = 'running' AND lease_token = ?",
            (now + lease_seconds, now, owner.token),
        ).rowcount)

    def _dead(self, row: sqlite3.Row, me: Owner | None, now: float) -> str | None:
        """Why the owner of a running row is dead (None: it may be alive)."""
        if row["lease_token"] is None:
            return "it has no owner"
        if me is not None and row["lease_token"] == me.token:
            return None
        if row["lease_host"] == socket.gethostname():
            if me is not None and row["lease_pid"] == me.pid:
                return f"its owner (process {row['lease_pid']}, another token) is gone"
            if not pid_alive(int(row["lease_pid"])):
                return f"its owner, process {row['lease_pid']} on this host, is no longer running"
        # a live owner renews its leases every quarter lease: an expired one means the owner died
        # on another host, hangs, or (this host) its process id now belongs to another process
        if row["lease_expires"] is not None and row["lease_expires"] < now:
            return f"the lease of its owner, process {row['lease_pid']} on {row['lease_host']}, expired"
        return None

    @_timed
    def reclaim_dead(self, me: Owner | None = None) -> list[str]:
        """Hand every ``running`` run whose owner is dead back to ``pending`` (its attempt's
        outcome becomes ``lost``); return their ids."""

        def reclaim(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            lost = []
            for row in conn.execute("SELECT * FROM runs WHERE status = 'running'").fetchall():
                if self._dead(row, me, now) is None:
                    continue
                conn.execute(
                    "UPDATE runs SET status = 'pending', lease_host = NULL, lease_pid = NULL, lease_token = NULL, "
                    "lease_expires = NULL, heartbeat = NULL WHERE id = ?", (row["id"],))
                conn.execute(
                    "UPDATE attempts SET ended_at = ?, outcome = 'lost' WHERE run_id = ? AND attempt = ? AND outcome IS NULL",
                    (now, row["id"], row["attempts"]))
                lost.append(row["id"])
            return lost

        return self._write(reclaim)

    @_timed
    def release(self, owner: Owner, ids: Iterable[str], outcome: str = "released") -> list[str]:
        """Hand runs that ``owner`` holds back to ``pending`` (it stops, or its worker died)."""
        ids = list(ids)

        def release(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            done = []
            for run_id in ids:
                row = conn.execute("SELECT attempts FROM runs WHERE id = ? AND status = 'running' AND lease_token = ?",
                                   (run_id, owner.token)).fetchone()
                if row is None:
                    continue
                conn.execute(
                    "UPDATE runs SET status = 'pending', lease_host = NULL, lease_pid = NULL, lease_token = NULL, "
                    "lease_expires = NULL, heartbeat = NULL WHERE id = ?", (run_id,))
                conn.execute("UPDATE attempts SET ended_at = ?, outcome = ? WHERE run_id = ? AND attempt = ?",
                             (now, outcome, run_id, row["attempts"]))
                done.append(run_id)
            return done

        return self._write(release)

    @_timed
    def finish(self, owner: Owner, run_id: str, outcome: dict[str, Any]) -> str | None:
        """Record what a worker returned for a run ``owner`` holds: ``outcome`` is
        ``{"result": RunResult.to_dict(), "wall_time", "host", "versions"}`` or ``{"error":
        text, ...}``. The status becomes ``done``, ``diverged`` or ``failed``; returned. When
        ``owner`` no longer holds the lease (it was handed to another process), nothing is
        written and None is returned."""

        def finish(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT attempts FROM runs WHERE id = ? AND status = 'running' AND lease_token = ?",
                               (run_id, owner.token)).fetchone()
            if row is None:
                return None
            now = time.time()
            result = outcome.get("result")
            values: dict[str, Any] = {
                "wall_time": outcome.get("wall_time"),
                "host": outcome.get("host"),
                "versions": _dumps(outcome.get("versions") or {}),
                "finished_at": now,
            }
            if result is None:
                status = "failed"
                values["error"] = str(outcome.get("error") or "unknown error")
                values["result"] = None
            else:
                status = "diverged" if result.get("status") == "diverged" else "done"
                flops = result.get("flops_per_step")
                steps = result.get("steps")
                values.update(
                    result=_dumps(result),
                    final=_dumps(result.get("final")),
                    n_params=result.get("n_params"),
                    flops_per_step=flops,
                    flops_total=None if flops is None or steps is None else int(flops) * int(steps),
                    eval_flops=result.get("eval_flops"),
                    diverged_at_step=result.get("diverged_at_step") if status == "diverged" else None,
                    error=None,
                )
            values.update(status=status, lease_host=None, lease_pid=None, lease_token=None, lease_expires=None,
                          heartbeat=None)
            assignments = ", ".join(f"{k} = ?" for k in values)
            conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))
            conn.execute("UPDATE attempts SET ended_at = ?, outcome = ? WHERE run_id = ? AND attempt = ?",
                         (now, status, run_id, row["attempts"]))
            return status

        return self._write(finish)

    @_timed
    def reset_failed(self, ids: Iterable[str] | None = None) -> list[str]:
        """Make ``failed`` runs (among ``ids`` when given) ``pending`` again; return their ids."""
        wanted = None if ids is None else set(ids)

        def reset(conn: sqlite3.Connection) -> list[str]:
            rows = [r[0] for r in conn.execute("SELECT id FROM runs WHERE status = 'failed'")]
            rows = [r for r in rows if wanted is None or r in wanted]
            conn.executemany("UPDATE runs SET status = 'pending', error = NULL WHERE id = ?", [(r,) for r in rows])
            return rows

        return self._write(reset)

    # -- reading --------------------------------------------------------------------------------
    @_timed
    def statuses(self) -> dict[str, str]:
        """Run id -> status, for every run in the store."""
        return {r["id"]: r["status"] for r in self._conn.execute("SELECT id, status FROM runs")}

    @_timed
    def held(self, owner: Owner) -> set[str]:
        """Ids of the runs ``owner`` holds now (running under its lease token): a run missing
        from it that ``owner`` thinks it runs was taken over after its lease expired."""
        return {r["id"] for r in self._conn.execute(
            "SELECT id FROM runs WHERE status = 'running' AND lease_token = ?", (owner.token,))}

    @_timed
    def rows(self, statuses: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every run's raw row (JSON columns still text), in store order; with ``statuses``,
        only the rows in one of them."""
        if statuses is None:
            return [dict(r) for r in self._conn.execute("SELECT * FROM runs ORDER BY position")]
        wanted = list(statuses)
        marks = ", ".join("?" * len(wanted))
        return [dict(r) for r in self._conn.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY position", wanted)]

    @_timed
    def progress(self) -> dict[str, tuple[str, float | None]]:
        """Run id -> (status, wall time), for every run in the store, in one query (what
        ``study status`` counts)."""
        cursor = self._conn.execute("SELECT id, status, wall_time FROM runs")
        cursor.row_factory = None  # plain tuples: no Row object per run
        return {i: (status, wall) for i, status, wall in cursor}

    @_timed
    def attempts(self) -> list[dict[str, Any]]:
        """Every attempt (see the module docstring), by run and attempt number."""
        return [dict(r) for r in self._conn.execute("SELECT * FROM attempts ORDER BY run_id, attempt")]

    def dead_reason(self, row: dict[str, Any]) -> str | None:
        """Why a ``running`` row's owner is dead, seen from a process that owns nothing (None:
        it may still be alive)."""
        return self._dead(row, None, time.time())  # type: ignore[arg-type]

    @_timed
    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer (``"ok"`` when sound)."""
        return "; ".join(r[0] for r in self._conn.execute("PRAGMA integrity_check"))

    @_timed
    def search_records(self) -> list[dict[str, Any]]:
        """:meth:`records`, every run, cut to what a study's search planner
        (:func:`~beyondbp.study.search.plan_search`) and the verdict it asks for read: ``id``,
        ``status``, ``label``, ``axes``, ``config`` with only :data:`SLIM_CONFIG`, ``result`` with
        only :data:`SLIM_RESULT` (None when the run has none), ``error`` and the columns
        ``n_params``, ``flops_per_step``, ``flops_total``, ``eval_flops``, ``seed`` and
        ``diverged_at_step``. SQLite extracts those fields, so a run's whole result (its history,
        its config) is never parsed in Python: ``study status`` of a searched study reads a
        store of 20,000 runs several times faster (bench/status_search_scale.py). Rows are
        skipped (:attr:`skipped`) as :meth:`records` skips them; a store whose JSON SQLite cannot
        read is read with :meth:`records`, which refuses it naming the run."""
        config_paths = ", ".join(f"'$.{k}'" for k in SLIM_CONFIG)
        result_paths = ", ".join(f"'$.{k}'" for k in SLIM_RESULT)
        query = (f"SELECT id, status, label, axes, json_type(config), json_extract(config, {config_paths}), "
                 f"json_type(result), json_extract(result, {result_paths}), error, n_params, flops_per_step, "
                 "flops_total, eval_flops, seed, diverged_at_step FROM runs ORDER BY position")
        try:
            cursor = self._conn.execute(query)
            cursor.row_factory = None
            rows = cursor.fetchall()
        except sqlite3.OperationalError:  # malformed JSON somewhere: records() names the run
            return self.records()
        out = []
        self.skipped = []
        for (rid, status, label, axes_text, config_type, config_values, result_type, result_values, error, n_params,
             fps, flops_total, eval_flops, seed, diverged_at) in rows:
            try:
                axes = _loads(axes_text)
            except (TypeError, ValueError):
                raise self._damaged(f"the axes of run {rid} is not JSON") from None
            if status not in STATUSES:
                self.skipped.append((rid, f"unknown status {status!r}"))
                continue
            axes_type = "object" if isinstance(axes, dict) else None if axes is None else "other"
            wrong = [c for c, kind in (("axes", axes_type), ("config", config_type), ("result", result_type))
                     if kind not in ("object", None, "null")]
            if wrong or axes is None or config_type in (None, "null"):
                self.skipped.append((rid, f"its {wrong[0] if wrong else 'axes or config'} is not a JSON object"))
                continue
            result = None
            if result_type == "object":
                result = dict(zip(SLIM_RESULT, json.loads(result_values)))
            out.append({
                "id": rid, "status": status, "label": label, "axes": axes,
                "config": dict(zip(SLIM_CONFIG, json.loads(config_values))), "result": result, "error": error,
                "n_params": n_params, "flops_per_step": fps, "flops_total": flops_total, "eval_flops": eval_flops,
                "seed": seed, "diverged_at_step": diverged_at,
            })
        return out

    # -- the plan `study status` answers from (beyondbp.study.status_plan) ------------------------
    def _has_table(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    @_timed
    def run_states(self) -> str:
        """A digest of which runs the store holds and which of them have finished, and how
        (``done``, ``diverged``, ``failed``; the others count alike): what a study's search plan
        depends on besides the spec and the finished runs' results, which never change."""
        cursor = self._conn.execute("SELECT id, status FROM runs ORDER BY position, id")
        cursor.row_factory = None
        text = "\n".join(f"{i}:{s if s in ('done', 'diverged', 'failed') else '-'}" for i, s in cursor)
        return hashlib.sha256(text.encode()).hexdigest()

    def planning_records(self) -> tuple[list[dict[str, Any]], str]:
        """:meth:`search_records` and :meth:`run_states`, read in one transaction (so the digest
        is that of the records, whatever another driver writes meanwhile)."""
        try:
            self._conn.execute("BEGIN")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"run store {str(self.path)!r} failed ({' '.join(str(exc).split())})") from None
        try:
            return self.search_records(), self.run_states()
        finally:
            self._conn.execute("COMMIT")

    @_timed
    def save_status_plan(self, key: str, runs: Iterable[Any], search: dict[str, Any] | None = None,
                         state: str | None = None) -> bool:
        """Keep the study's plan for ``study status``: the planned runs' ids, labels and axes in
        their order, and its search summary, under ``key`` (the spec's: see
        :mod:`beyondbp.study.status_plan`) and, for a searched study, ``state`` (:meth:`run_states`
        of the records it was planned from). One transaction replaces the plan kept before
        (nothing is written when it is the same). False when not kept (repeated run ids)."""
        rows = []
        for i, run in enumerate(runs):
            axes = dict(run.axes)
            try:
                text = json.dumps(axes)
            except (TypeError, ValueError):
                return False
            if repr(json.loads(text)) != repr(axes):  # a value JSON would change (a tuple): not kept
                return False
            rows.append((i, run.id, run.label, text))
        if len({r[1] for r in rows}) != len(rows):
            return False
        info = _dumps({"key": key, "state": state, "study": self.meta.get("study"), "runs": len(rows)})
        search_text = None if search is None else json.dumps(search)
        if search_text is not None and repr(json.loads(search_text)) != repr(search):
            return False

        def save(conn: sqlite3.Connection) -> bool:
            conn.execute("CREATE TABLE IF NOT EXISTS status_plan (id INTEGER PRIMARY KEY CHECK (id = 1), "
                         "info TEXT NOT NULL, search TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS status_plan_runs (position INTEGER PRIMARY KEY, id TEXT NOT NULL, "
                         "label TEXT NOT NULL, axes TEXT NOT NULL)")
            have = conn.execute("SELECT info, search FROM status_plan WHERE id = 1").fetchone()
            if have is not None and tuple(have) == (info, search_text):
                return True
            conn.execute("DELETE FROM status_plan")
            conn.execute("DELETE FROM status_plan_runs")
            conn.executemany("INSERT INTO status_plan_runs (position, id, label, axes) VALUES (?, ?, ?, ?)", rows)
            conn.execute("INSERT INTO status_plan (id, info, search) VALUES (1, ?, ?)", (info, search_text))
            return True

        return self._write(save)

    @_timed
    def status_plan(self) -> dict[str, Any] | None:
        """The plan :meth:`save_status_plan` kept — ``key``, ``state``, ``study``, ``runs`` (how
        many) and ``search`` (its summary, or None) —, or None when there is none (a store
        written before it was kept, or by an older beyondbp)."""
        if not (self._has_table("status_plan") and self._has_table("status_plan_runs")):
            return None
        row = self._conn.execute("SELECT info, search FROM status_plan WHERE id = 1").fetchone()
        if row is None:
            return None
        info = json.loads(row[0])
        return {**info, "search": None if row[1] is None else json.loads(row[1])}

    @_timed
    def planned_ids(self) -> list[str]:
        """The ids of the kept plan's runs, in its order."""
        cursor = self._conn.execute("SELECT id FROM status_plan_runs ORDER BY position")
        cursor.row_factory = None
        return [r[0] for r in cursor]

    @_timed
    def planned_runs(self, positions: Iterable[int]) -> dict[int, tuple[str, dict[str, Any]]]:
        """Position -> (label, axes) of the kept plan's runs at ``positions``."""
        out = {}
        for position in positions:
            row = self._conn.execute("SELECT label, axes FROM status_plan_runs WHERE position = ?", (position,)).fetchone()
            out[position] = (row[0], json.loads(row[1]))
        return out

    @_timed
    def records(self, status: str | None = None) -> list[dict[str, Any]]:
        """One dict per run (all, or those with ``status``), in store order::

            {"id", "status", "label", "axes", "config", "result", "error", "attempts", "host",
             "versions", "wall_time", "n_params", "flops_per_step", "flops_total", "eval_flops",
             "seed", "diverged_at_step", "started_at", "finished_at"}

        ``config`` is ``RunConfig.model_dump()``, ``result`` ``RunResult.to_dict()`` (None until
        the run finished, and for failed runs), ``versions`` ``{"beyondbp", "torch", "python"}``,
        times in seconds (``started_at``/``finished_at`` are Unix times).

        A row whose ``axes``, ``config``, ``result`` or ``versions`` is not JSON is damage: it is
        refused (:class:`ConfigError`, naming the run). Rows with an unknown status, or whose
        axes, config or result parse but are not JSON objects, are left out and listed, with the
        reason, in :attr:`skipped` (reset by each call)."""
        if status is not None and status not in STATUSES:
            raise ConfigError(f"unknown run status {status!r}; it must be one of {', '.join(STATUSES)}")
        query = "SELECT * FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY position"
        out = []
        self.skipped = []
        for r in self._conn.execute(query, (status,) if status else ()):
            parsed: dict[str, Any] = {}
            for column in ("axes", "config", "result", "versions"):
                try:
                    parsed[column] = _loads(r[column])
                except (TypeError, ValueError):
                    raise self._damaged(f"the {column} of run {r['id']} is not JSON") from None
            if r["status"] not in STATUSES:
                self.skipped.append((r["id"], f"unknown status {r['status']!r}"))
                continue
            wrong = [c for c in ("axes", "config", "result") if parsed[c] is not None and not isinstance(parsed[c], dict)]
            if wrong or parsed["axes"] is None or parsed["config"] is None:
                self.skipped.append((r["id"], f"its {wrong[0] if wrong else 'axes or config'} is not a JSON object"))
                continue
            out.append({
                "id": r["id"],
                "status": r["status"],
                "label": r["label"],
                "axes": parsed["axes"],
                "config": parsed["config"],
                "result": parsed["result"],
                "error": r["error"],
                "attempts": r["attempts"],
                "host": r["host"],
                "versions": parsed["versions"] if isinstance(parsed["versions"], dict) else {},
                "wall_time": r["wall_time"],
                "n_params": r["n_params"],
                "flops_per_step": r["flops_per_step"],
                "flops_total": r["flops_total"],
                "eval_flops": r["eval_flops"],
                "seed": r["seed"],
                "diverged_at_step": r["diverged_at_step"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
            })
        return out
