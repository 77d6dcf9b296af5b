"""Where a study's runs execute: a local process pool or Ray, behind one small interface.

An executor has ``submit(config, lease) -> handle``, ``wait(handles, timeout) -> done``,
``outcome(handle)`` (raises when the worker died), ``cancel(handles)``, ``lost()`` (a worker
died: start again) and ``close(cancel)``; :func:`beyondbp.study.runner.run_study` drives it.
Every worker trains a run with :func:`execute`.

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

GPUs: with ``[execution] device = "cuda"`` the local executor gives each worker process its
own GPU (:func:`worker_devices`: worker *i* trains on ``cuda:(i mod visible GPUs)``, so with
``[execution] workers_per_gpu = k`` up to ``k`` workers share a GPU); ``--workers`` beyond
visible GPUs × ``workers_per_gpu`` is refused in one sentence. ``device = "cuda:N"`` puts every
worker on GPU ``N`` (at most ``workers_per_gpu`` of them). The device is an execution setting: a
worker rewrites its run's ``device`` and the run's id does not change. Ray asks for
``num_gpus = 1 / workers_per_gpu`` per task (:func:`ray_options`) and gives each task its GPU
(as ``cuda``); a GPU index is refused there.

No process outlives the driver: each local worker ends itself (SIGKILL) the moment the driver
ends, whatever ended it (SIGKILL included), and, on Linux, when its parent (the forkserver)
ends (:func:`beyondbp.interrupts.die_with`); the forkserver and multiprocessing's resource
tracker then exit because nothing holds their pipes open any more. Ray ends the tasks of a
driver that died. An interrupted driver closes the pool with ``cancel=True``: the local
workers are stopped at once, the Ray tasks cancelled.

Any picklable function can be spread over the same workers: ``pool.map(fn, *iterables)``
returns ``[fn(*args) for args in zip(*iterables)]`` in order (like the built-in ``map``), each
call in a worker; :func:`worker_pool` opens a pool for that and closes it on the way out, at
once (workers stopped, Ray tasks cancelled) when interrupted. The population of
:func:`beyondbp.evolution.es.evolve` is evaluated this way.

A local worker can read the store: every quarter of the lease (and at once after being
stopped itself) it checks that its driver still holds its run (:class:`_LeaseWatch`), and stops
training it otherwise (:func:`execute` returns ``{"abandoned": step}``).
"""

from __future__ import annotations

import concurrent.futures as cf
import ipaddress
import os
import platform
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..interrupts import available_cores, check_main_guarded, die_with, stop_pool, worker_context
from .store import lease_token

__all__ = ["EXECUTORS", "PRELOAD", "available_cores", "check_workers", "execute", "ray_options", "visible_gpus",
           "worker_devices", "worker_pool"]

EXECUTORS = ("local", "ray")

#: Modules the forkserver imports once, so that pool workers start warm (this one holds the
#: pool's worker functions, :func:`_worker_init` and :func:`execute`).
PRELOAD = ["beyondbp.study.executors", "beyondbp.training", "torch._dynamo", "torch.utils.flop_counter"]


def visible_gpus() -> int:
    """CUDA GPUs torch sees in this process (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_devices(device: str, workers: int, visible: int, per_gpu: int = 1) -> list[str] | None:
    """The device of each of ``workers`` local workers for the spec's ``[execution] device``:
    None unless it is a CUDA device (every worker uses the spec's device as it is); for
    ``"cuda"``, worker *i* gets ``cuda:(i mod visible)``, so the workers spread over the
    ``visible`` GPUs, at most ``per_gpu`` on each; for ``"cuda:N"``, all get ``cuda:N``, at most
    ``per_gpu`` of them. More workers than that are refused (:class:`ConfigError`, one sentence)."""
    if not device.startswith("cuda"):
        return None
    index = device.partition(":")[2]
    gpus = 1 if index else visible
    capacity = gpus * per_gpu
    if workers > capacity:
        where = f"GPU {device}" if index else f"{visible} visible GPU{'s' if visible != 1 else ''}"
        raise ConfigError(
            f"invalid number of workers {workers}: with [execution] device = {device!r} it must be at most {capacity} "
            f"({where} × workers_per_gpu {per_gpu}); lower --workers or raise [execution] workers_per_gpu to share a GPU"
        )
    if index:
        return [device] * workers
    return [f"cuda:{i % visible}" for i in range(workers)]


def ray_options(threads: int, device: str, per_gpu: int = 1) -> dict[str, Any]:
    """The ``ray.remote`` options of a run's task: ``num_cpus = threads``, and with a CUDA device
    ``num_gpus = 1 / per_gpu`` (Ray then makes that GPU the task's only visible one)."""
    options: dict[str, Any] = {"num_cpus": threads, "max_retries": 0}
    if device.startswith("cuda"):
        options["num_gpus"] = 1.0 / per_gpu
    return options


#: This worker's device (set by :func:`_worker_init` when the driver assigns GPUs), or None.
_DEVICE: str | None = None


def _worker_init(threads: int, driver: int | None = None, devices: list[str] | None = None,
                 counter: Any = None) -> None:
    """A local worker's start: die with the driver, set torch's threads and, with ``devices``,
    take the next one (``counter``, shared by the pool's workers, says which) as this worker's."""
    global _DEVICE
    if driver is not None:  # a worker never outlives its driver
        die_with(driver)
    import torch

    torch.set_num_threads(threads)
    if devices:
        with counter.get_lock():
            slot = counter.value
            counter.value += 1
        _DEVICE = devices[slot % len(devices)]


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
    if _DEVICE is not None and str(config.get("device") or "cpu").startswith("cuda"):
        config = dict(config, device=_DEVICE)  # an execution setting: the run's id is the same
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
class _Local:
    """A process pool; ``submit(config) -> handle``, ``wait(handles, timeout) -> done``,
    ``outcome(handle)`` (raises when the worker died)."""

    def __init__(self, workers: int, threads: int, devices: list[str] | None = None,
                 preload: list[str] | None = None) -> None:
        self.workers, self.threads, self.devices = workers, threads, devices
        self.preload = PRELOAD if preload is None else list(preload)
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
        # the forkserver imports torch and beyondbp once (and torch._dynamo, which the first
        # optimizer imports: seconds); each worker is a cheap fork of it
        ctx = worker_context(self.preload)
        counter = ctx.Value("i", 0) if self.devices else None  # which worker takes which device
        return cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                      initargs=(self.threads, os.getpid(), self.devices, counter))

    def submit(self, config: dict[str, Any], lease: dict[str, Any] | None = None) -> Any:
        return self.pool.submit(execute, config, lease)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
        """``[fn(*args) for args in zip(*iterables)]``, each call in a worker (``fn``, its
        arguments and results picklable); the first exception of a call is raised here."""
        futures = [self.pool.submit(fn, *args) for args in zip(*iterables)]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:  # on an error: the calls not started yet are dropped
                future.cancel()

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
            # (pending work dropped, workers ended, and the results pipe's write end closed so that
            # a worker ended halfway through sending a result cannot leave the pool hanging at exit)
            stop_pool(self.pool)
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
    def __init__(self, ray: Any, threads: int, address: str | None, workers: int, device: str = "cpu",
                 per_gpu: int = 1) -> None:
        import logging

        handlers = _python_signal_handlers()
        self.ray = ray
        self.workers, self.threads = workers, threads
        self.started = False
        self._remote: dict[Any, Any] = {}
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
        self.task = ray.remote(**ray_options(threads, device, per_gpu))(execute)

    def submit(self, config: dict[str, Any], lease: dict[str, Any] | None = None) -> Any:
        return self.task.remote(config)  # a task on another node cannot read the store

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
        """``[fn(*args) for args in zip(*iterables)]``, each call a Ray task (``num_cpus =
        threads``); interrupted or failed, the tasks still running are cancelled."""
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(num_cpus=self.threads, max_retries=0)(fn)
        refs = [self._remote[fn].remote(*args) for args in zip(*iterables)]
        try:
            return list(self.ray.get(refs))
        except BaseException:
            self.cancel(refs)
            raise

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


def check_workers(executor: str, workers: int, address: str | None = None, *, starting: bool = True) -> None:
    """Refuse (:class:`ConfigError`, one sentence) an unknown executor, a number of workers
    that is not a whole number of at least 1 or, on this machine, more than its cores, an
    address without the ray executor, the ray executor without Ray installed, and local workers
    started from the unguarded top level of a main script (:func:`~beyondbp.interrupts.check_main_guarded`;
    not checked with ``starting=False``: a caller that starts no worker, such as a dry run)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; it must be one of {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"invalid number of workers {workers!r}: it must be a whole number of at least 1")
    if address is None and workers > available_cores():
        raise ConfigError(f"invalid number of workers {workers}: it must be at most {available_cores()}, the CPU cores "
                          "this process may use")
    if address is not None and executor != "ray":
        raise ConfigError("an address applies to the ray executor only; choose the ray executor or leave the address out")
    if executor == "ray":
        _import_ray()
    elif starting:
        check_main_guarded()


@contextmanager
def worker_pool(executor: str = "local", workers: int = 1, threads: int = 1, address: str | None = None,
                preload: list[str] | None = None) -> Iterator[_Local | _Ray]:
    """A pool of ``workers`` whose ``map(fn, *iterables)`` runs each call in a worker: local
    processes (``preload``: the modules the forkserver imports once; default the study's) or
    Ray tasks (on ``address``, or a local Ray instance started here and shut down at the end).
    Closed on the way out; interrupted (Ctrl-C, SIGTERM) or failed, at once: the local workers
    stopped, the Ray tasks cancelled. Refused in one sentence: see :func:`check_workers`, and
    Ray not installed."""
    check_workers(executor, workers, address)
    ray = _import_ray() if executor == "ray" else None
    pool = _Local(workers, threads, preload=preload) if ray is None else _Ray(ray, threads, address, workers)
    try:
        yield pool
    except BaseException:
        pool.close(cancel=True)
        raise
    pool.close()


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

