"""Running a study: the spec's runs that are not finished, on a local process pool or on Ray.

:func:`run_study` adds the spec's runs that the store lacks as ``pending`` (so adding a value
to an axis runs only the new runs), hands back runs whose owner died, then keeps up to
``workers`` runs in flight: each is claimed atomically with a lease (:meth:`Store.claim`),
trained by a worker (:func:`execute`, which returns ``RunResult.to_dict()`` or the error text)
and recorded by this process — the driver is the only one that writes the store. A ``done``
or ``diverged`` run is never run again; a ``failed`` one only with ``retry_failed``. While runs
are in flight the driver renews their leases (a heartbeat every quarter of the lease), so
another ``study run`` on the same store takes only other runs, and takes over these only when
this driver dies (same host: at once, by process check; another host: when the lease expires).

Executors:

``local``
    a ``concurrent.futures`` process pool of ``workers`` processes, started with the
    ``forkserver`` method (``spawn`` where there is none; never ``fork``, which is unsafe once
    torch has started threads). Each run uses one torch thread, as ``beyondbp train`` does,
    unless the spec's ``[execution] threads`` says otherwise (extra threads per run, on top of
    the runs in parallel, oversubscribe the cores and made a 4-run spec take 22 s instead of 9).
``ray``
    each run a Ray task (``num_cpus = threads``, default 1) on ``ray.init(address=address)``;
    no address starts a local Ray instance, which is shut down at the end. Ray is imported only
    here; without it the executor is refused with one sentence. On a cluster, beyondbp must be
    installed on every node. Token authentication (Ray 2.59 and 2.60 turn it on for a ``ray start
    --head`` wherever ``~/.ray/auth_token`` exists, which any local ``ray.init()`` writes): for an
    address on this machine's loopback (``127.0.0.1:6379``, ``localhost:6379``) the driver sends
    the token found in ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` when
    ``RAY_AUTH_MODE`` is unset, as ``ray.init(address="auto")`` does; to another machine it sends
    one only with ``RAY_AUTH_MODE=token``. A cluster that refuses the driver's token, or its lack
    of one, is reported in one sentence saying what to set.

Both give identical results for the same spec (each run is seeded by its config alone).
``workers`` is at most the CPU cores this process may use, except on a Ray cluster given by
address (each worker started here is a process running at least one torch thread; more of them
than cores only slow every run down).

A worker that dies (killed, out of memory) hands its runs back to ``pending``; a run whose
attempts reach :data:`MAX_ATTEMPTS` that way is recorded ``failed``. Interrupting the driver
(Ctrl-C, or SIGTERM under :class:`beyondbp.interrupts.Stopping`, as the command line runs it)
hands its in-flight runs back too, stops the local workers and cancels the Ray tasks.

No process outlives the driver: each local worker ends itself (SIGKILL) the moment the driver
ends, whatever ended it (SIGKILL included), and, on Linux, when its parent (the forkserver)
ends (:func:`beyondbp.interrupts.die_with`); the forkserver and multiprocessing's resource
tracker then exit because nothing holds their pipes open any more. Ray ends the tasks of a
driver that died.

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
"""

from __future__ import annotations

import concurrent.futures as cf
import ipaddress
import json
import multiprocessing
import os
import platform
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..interrupts import die_with
from ..training.config import check_count
from .spec import Spec, check_device, default_store_path
from .store import FINISHED, STATUSES, Owner, Store, lease_token

__all__ = ["EXECUTORS", "MAX_ATTEMPTS", "available_cores", "dry_run", "execute", "run_study", "state_dir", "worker_threads"]

EXECUTORS = ("local", "ray")
#: Attempts after which a run whose worker keeps dying is recorded ``failed``.
MAX_ATTEMPTS = 3
#: Default lease of a claimed run, seconds (renewed every quarter of it); read when
#: :func:`run_study` is called, so tests may set it shorter.
LEASE_SECONDS = 60.0

Progress = Callable[[str, dict[str, Any]], None]

#: Modules the forkserver imports once, so that pool workers start warm.
PRELOAD = ["beyondbp.study.runner", "beyondbp.training", "torch._dynamo", "torch.utils.flop_counter"]


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


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


def _worker_init(threads: int, driver: int | None = None) -> None:
    if driver is not None:  # a worker never outlives its driver
        die_with(driver)
    import torch

    torch.set_num_threads(threads)


class _LeaseLost(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(f"the lease was lost at step {step}")
        self.step = step


class _LeaseWatch:
    """A run's progress callback in a local worker: at a step, once ``every`` seconds have
    passed since the last look (at once after this process was stopped that long), read the
    store; when the run is no longer running under ``token`` (the driver lost its lease and
    another process took the run), stop the run (raise :class:`_LeaseLost`). A store that
    cannot be read is no evidence: the run goes on."""

    def __init__(self, store: str, run_id: str, token: str, every: float) -> None:
        self.store, self.run_id, self.token, self.every = store, run_id, token, every
        self.last = time.monotonic()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event != "step" or time.monotonic() - self.last < self.every:
            return
        try:
            holder = lease_token(self.store, self.run_id)
        except Exception:  # busy, being replaced, ...: look again later
            holder = self.token
        self.last = time.monotonic()
        if holder != self.token:
            raise _LeaseLost(int(info.get("step", 0)))


def execute(config: dict[str, Any], lease: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one run in a worker: ``{"result": RunResult.to_dict()}`` or ``{"error": text}``,
    plus ``wall_time`` (seconds in the run), ``host`` and ``versions`` of this worker. With
    ``lease`` (``store``, ``run_id``, ``token``, ``every``: a worker that can read the store),
    the run stops early when its driver no longer holds it: ``{"abandoned": step}``."""
    import torch

    from .._version import __version__
    from ..training import run

    out: dict[str, Any] = {
        "host": socket.gethostname(),
        "versions": {"beyondbp": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "result": None,
        "error": None,
    }
    t0 = time.perf_counter()
    try:
        out["result"] = run(config, _LeaseWatch(**lease) if lease else None).to_dict()
    except _LeaseLost as lost:  # another process runs it now: stop, record nothing
        out["abandoned"] = lost.step
    except Exception as exc:  # the study goes on; the error is recorded
        summary = " ".join(f"{type(exc).__name__}: {exc}".split())
        out["error"] = summary + "\n" + traceback.format_exc()
    out["wall_time"] = time.perf_counter() - t0
    return out


# -- executors ---------------------------------------------------------------------------------
def _start_forkserver_without_sigint() -> None:
    """Start the forkserver with SIGINT ignored, so that it and the workers it forks inherit
    that: Ctrl-C reaches the whole process group, and only the driver must handle it (it hands
    the runs in flight back and stops the workers), not a server busy importing torch, which
    would die printing a ``KeyboardInterrupt`` traceback. (Python keeps an inherited SIG_IGN
    for SIGINT instead of installing its own handler.)"""
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


class _Local:
    """A process pool; ``submit(config) -> handle``, ``wait(handles, timeout) -> done``,
    ``outcome(handle)`` (raises when the worker died)."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self.pool = self._pool()
        self._start_workers()

    def _start_workers(self) -> None:
        """Start every worker before any run is claimed, holding Ctrl-C (and SIGTERM) until
        they are up: a worker interrupted halfway through its start would die printing a
        traceback. The signal is delivered again as soon as the workers are running."""
        caught: list[int] = []
        main = threading.current_thread() is threading.main_thread()
        previous: dict[int, Any] = {}
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) not in (signal.SIG_IGN, signal.SIG_DFL):  # only handled ones
                    previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        try:
            cf.wait([self.pool.submit(time.sleep, 0.05) for _ in range(self.workers)])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if caught:
            self.close(cancel=True)
            signal.raise_signal(caught[0])  # its own handler raises (KeyboardInterrupt for SIGINT)
            raise KeyboardInterrupt

    def _pool(self) -> cf.ProcessPoolExecutor:
        methods = multiprocessing.get_all_start_methods()
        if "forkserver" in methods:
            ctx = multiprocessing.get_context("forkserver")
            # the server imports torch and beyondbp once (and torch._dynamo, which the first
            # optimizer imports: seconds); each worker is a cheap fork of it
            ctx.set_forkserver_preload(PRELOAD)
            _start_forkserver_without_sigint()
        else:
            ctx = multiprocessing.get_context("spawn")
        return cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                      initargs=(self.threads, os.getpid()))

    def submit(self, config: dict[str, Any], lease: dict[str, Any] | None = None) -> Any:
        return self.pool.submit(execute, config, lease)

    def cancel(self, handles: list[Any]) -> None:
        """Nothing to do: a worker stops a run its driver lost by itself (it reads the store),
        and :meth:`close` stops the workers of an interrupted driver."""

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def outcome(self, handle: Any) -> dict[str, Any]:
        return handle.result()

    def lost(self) -> None:
        """A worker died: the pool is broken; start a new one."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._pool()
        self._start_workers()

    def close(self, cancel: bool = False) -> None:
        if cancel:  # interrupted: the runs were handed back, so stop their workers now
            workers = list(getattr(self.pool, "_processes", {}).values())  # no public handle on them
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in workers:
                if process.is_alive():
                    process.terminate()
            return
        self.pool.shutdown(wait=True)


def _python_signal_handlers() -> dict[int, Any]:
    """The Python handlers of SIGINT and SIGTERM now (main thread only; else none)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    return {sig: h for sig, h in handlers.items() if callable(h)}


def _reinstall(handlers: dict[int, Any]) -> None:
    """Put the Python handlers back at the C level: ``ray.init`` installs its own SIGTERM
    handler (it logs a stack and aborts), which would skip handing the runs back."""
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


class _Ray:
    def __init__(self, ray: Any, threads: int, address: str | None, workers: int) -> None:
        import logging

        handlers = _python_signal_handlers()
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "log_to_driver": False, "logging_level": logging.WARNING}
            if address is None:
                kwargs.update(include_dashboard=False, num_cpus=max(workers * threads, available_cores()))
            if address is not None and _is_loopback(address):
                _use_local_token()
            try:
                ray.init(**kwargs)
            except Exception as exc:  # an unreachable address, a cluster of another version, ...
                if address is not None and _auth_failed(ray, exc):
                    raise ConfigError(_auth_advice(address)) from None
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                raise ConfigError(f"could not start or reach {where}: {' '.join(str(exc).split())}") from None
            self.started = True
        _reinstall(handlers)
        self.task = ray.remote(num_cpus=threads, max_retries=0)(execute)

    def submit(self, config: dict[str, Any], lease: dict[str, Any] | None = None) -> Any:
        return self.task.remote(config)  # a task on another node cannot read the store

    def cancel(self, handles: list[Any]) -> None:
        """Stop these tasks (a run handed back or taken over by another driver)."""
        for ref in handles:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished, or the cluster is gone
                pass

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return list(done)

    def outcome(self, handle: Any) -> dict[str, Any]:
        return self.ray.get(handle)

    def lost(self) -> None:
        pass

    def close(self, cancel: bool = False) -> None:
        if self.started:
            self.ray.shutdown()


# -- Ray token authentication ----------------------------------------------------------------
_TOKEN_PLACES = "in RAY_AUTH_TOKEN, in ~/.ray/auth_token or in the file RAY_AUTH_TOKEN_PATH names"


def _is_loopback(address: str) -> bool:
    """Whether a Ray address (``host:port`` or ``ray://host:port``) names this machine's loopback."""
    host = urlsplit(address if "://" in address else f"//{address}").hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_source() -> str | None:
    """Where Ray finds this process's authentication token (its own order), or None."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if named:
        return f"the file RAY_AUTH_TOKEN_PATH names ({named})" if Path(named).expanduser().is_file() else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _use_local_token() -> None:
    """For a cluster on this machine, send the token ``ray start`` left here, as
    ``ray.init(address="auto")`` does for the cluster it finds itself: token mode is turned on
    when ``RAY_AUTH_MODE`` is unset and a token is available (sending one to a cluster without
    authentication does no harm). Ray never does this for an explicit address, and neither do we
    for one on another machine: the token is not sent there unasked."""
    if "RAY_AUTH_MODE" in os.environ or _token_source() is None:
        return
    try:  # Ray's own helper also refreshes its cached configuration
        from ray._private.authentication.authentication_token_setup import (  # noqa: PLC0415
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication, or one that moved the helper
        os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _auth_failed(ray: Any, exc: BaseException) -> bool:
    """Whether ``ray.init`` failed because the cluster refused this process's token (or its lack
    of one): Ray raises ``AuthenticationError`` itself, or names it in a ``ConnectionError``'s cause."""
    error_type = getattr(getattr(ray, "exceptions", None), "AuthenticationError", None)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if error_type is not None and isinstance(current, error_type):
            return True
        if "AuthenticationError" in str(current) or "InvalidAuthToken" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _auth_advice(address: str) -> str:
    """One sentence: why the cluster refused this process, and what to set."""
    where = f"the Ray cluster at {address!r}"
    head = "the cluster's token (`ray get-auth-token` on its head node)"
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        return (f"{where} requires an authentication token, which this process did not send: run with "
                f"RAY_AUTH_MODE=token and {head} {_TOKEN_PLACES}")
    source = _token_source()
    if source is None:
        return f"{where} requires an authentication token and RAY_AUTH_MODE=token found none: put {head} {_TOKEN_PLACES}"
    return f"{where} rejected the authentication token from {source}: use {head} instead"


def _import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415 - optional extra, imported only for this executor
    except ImportError:
        raise ConfigError("the ray executor needs Ray, which is not installed; install beyondbp[ray] (pip install 'beyondbp[ray]')") from None
    return ray


# -- the driver --------------------------------------------------------------------------------
def _check_arguments(spec: Spec, executor: str, workers: int, address: str | None) -> None:
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; it must be one of {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"invalid number of workers {workers!r}: it must be a whole number of at least 1")
    if address is None and workers > available_cores():
        # each worker is a process (local, or a task of the Ray started here) running at least one
        # torch thread: more of them than cores only slows every run down
        raise ConfigError(
            f"invalid number of workers {workers}: it must be at most {available_cores()}, the CPU cores this "
            "process may use"
        )
    check_count(workers, "number of workers")
    if address is not None and executor != "ray":
        raise ConfigError("an address applies to the ray executor only; add --executor ray or leave --address out")
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


def _worker_config(config: dict[str, Any], run_id: str, threads: int, states: Path | None,
                   checkpoint_every: int | None, models: Path | None = None) -> dict[str, Any]:
    """What a worker trains: the stored config with this execution's settings."""
    values = dict(config, threads=threads)
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
    ``address``) and a ``<store>.states`` (with ``keep_models``, ``<store>.models``) that is not a
    folder. A damaged store is refused when it is opened (see :mod:`beyondbp.study.store`)."""
    started = time.perf_counter()
    lease_seconds = float(LEASE_SECONDS if lease_seconds is None else lease_seconds)
    _check_arguments(spec, executor, workers, address)
    ray = _import_ray() if executor == "ray" else None
    if executor == "local" or address is None:  # runs on this machine (a cluster may have the device)
        check_device(spec)
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
        summary["added"] = len(store.add_runs(runs))
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
            return summary
        pool = _Local(workers, threads) if ray is None else _Ray(ray, threads, address, workers)
        beat_every = lease_seconds / 4
        last_beat = time.monotonic()
        by_id = {r.id: r for r in runs}
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
                if claimed is None:
                    break
                config = _worker_config(claimed["config"], claimed["id"], threads, states, checkpoint_every, models)
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
    """What :func:`run_study` would do, without creating or changing the store: ``store`` (its
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
    _check_arguments(spec, executor, workers, address)
    from ..training import load_dataset
    from ..training.tasks import make_task

    import torch

    target = Path(store_path) if store_path is not None else default_store_path(spec.path)
    exists = target.exists() or target.is_symlink()
    statuses: dict[str, str] = {}
    if exists:
        with _store_for(spec, store_path) as store:
            statuses = store.statuses()
    threads = worker_threads(spec, executor, workers)
    measured: dict[str, tuple[float, float, float] | None] = {}
    warmup = 0.0
    datasets: dict[str, Any] = {}
    entries = []
    for planned in spec.runs():
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
    if not target.exists() and not target.is_symlink():  # never run: nothing to read, nothing created
        rows, path, stale = {}, str(target), 0
    else:
        with _store_for(spec, store_path) as store:
            rows = {r["id"]: r for r in store.rows()}
            path = str(store.path)
            stale = sum(1 for r in rows.values() if r["status"] == "running" and store.dead_reason(r))
    runs = spec.runs()
    counts = {s: 0 for s in STATUSES}
    spent = 0.0
    done_times: list[float] = []
    failed = []
    missing = 0
    unknown = 0
    for run in runs:
        row = rows.get(run.id)
        if row is None:
            missing += 1
            counts["pending"] += 1
            continue
        if row["status"] not in STATUSES:  # damage: counted apart (`study check` names them)
            unknown += 1
            continue
        counts[row["status"]] += 1
        if row["status"] in ("done", "diverged", "failed") and row["wall_time"] is not None:
            spent += float(row["wall_time"])
        if row["status"] == "done" and row["wall_time"] is not None:
            done_times.append(float(row["wall_time"]))
        if row["status"] == "failed":
            failed.append({"id": run.id, "label": run.label, "axes": run.axes,
                           "error": (row["error"] or "").splitlines()[0] if row["error"] else ""})
    mean = sum(done_times) / len(done_times) if done_times else None
    left = None if mean is None else mean * (counts["pending"] + counts["running"]) / workers
    spec_ids = {r.id for r in runs}
    return {
        "study": spec.name,
        "store": path,
        "store_exists": bool(rows) or Path(path).exists(),
        "total": len(runs),
        "counts": counts,
        "missing": missing,
        "other": sum(1 for i in rows if i not in spec_ids),
        "stale": stale,
        "time_spent": spent,
        "mean_wall_time": mean,
        "time_left": left,
        "workers": workers,
        "failed": failed,
        "unknown_status": unknown,
    }


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
        by_id = {r["id"]: r for r in store.records()}
        left_out = store.skipped
    if skipped is not None:
        ids = {run.id for run in spec.runs()}
        skipped.extend(item for item in left_out if item[0] in ids)
    return [{**by_id[run.id], "label": run.label, "axes": dict(run.axes)} for run in spec.runs() if run.id in by_id]


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
    for run in spec.runs():
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
