"""Stopping cleanly on a signal, and worker processes that die with the process they serve.

:class:`Stopping` makes SIGTERM (what ``kill``, ``timeout``, ``docker stop`` and job schedulers
send) stop the program the way Ctrl-C (SIGINT) does: the signal raises an exception in the main
thread — ``KeyboardInterrupt`` for SIGINT, :class:`Terminated` (a ``KeyboardInterrupt``) for
SIGTERM — so every cleanup path written for Ctrl-C runs for both: a study hands its runs in
flight back to its store and stops its workers, temporary output files are removed. It records
which signal arrived (:attr:`Stopping.signum`); the command line exits with ``128 + signum``
(130 for SIGINT, 143 for SIGTERM). A second signal while the first one's cleanup runs is
ignored, so that the cleanup finishes (the workers of a study die with their driver anyway, see
:func:`die_with`). A signal that is ignored when :class:`Stopping` starts (a shell without job
control starts background jobs with SIGINT ignored) stays ignored.

:func:`die_with` is called in a worker process: it ends the worker with SIGKILL as soon as a
given process (the driver) ends, whatever ended it, SIGKILL included. :func:`worker_context` is
the start method of such workers (``forkserver``, whose server and workers ignore SIGINT; ``spawn`` where
there is none; never ``fork``, which is unsafe once torch has started threads),
:func:`stop_pool` stops a process pool's workers at once, :func:`can_have_children` says whether
this process may start any (a daemonic process, e.g. a ``multiprocessing.Pool`` worker, may not),
and :func:`available_cores` counts the cores this process may use. :func:`check_main_guarded`
refuses to start workers from the unguarded top level of a main script (each worker would run
the script again as it starts). A study's local executor
(:mod:`beyondbp.study.executors`) and a liquid run's feature workers
(:mod:`beyondbp.training.liquid_pool`) both start their workers with :func:`worker_context`.
"""

from __future__ import annotations

import ast
import contextlib
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Stopping", "Terminated", "available_cores", "can_have_children", "check_main_guarded", "die_with",
           "deferred", "exit_status", "stop_pool", "worker_context"]

#: The signals :class:`Stopping` turns into an exception.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM under :class:`Stopping`; handled like Ctrl-C."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


#: Depth of :func:`deferred` blocks in the main thread, and the signal that arrived inside one.
_DEFERRED: dict[str, Any] = {"depth": 0, "pending": None}


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a signal :class:`Stopping` turns into an exception does not interrupt: the
    exception is raised when the block ends (in the main thread; elsewhere nothing changes).
    For writing a file: an exception raised inside a library's write callback (``torch.save``
    calls the file's ``write`` from C++) comes out as another error, and the run would end as
    a crash instead of as interrupted. If the block itself raises, that exception propagates."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _DEFERRED["depth"] += 1
    try:
        yield
    finally:
        _DEFERRED["depth"] -= 1
        pending = _DEFERRED["pending"] if _DEFERRED["depth"] == 0 else None
        if pending is not None:
            _DEFERRED["pending"] = None
    if pending is not None:
        _raise_for(pending)


def exit_status(signum: int | None) -> int:
    """The exit status of a program stopped by signal ``signum``: 128 + its number (130 for
    SIGINT, 143 for SIGTERM); 130 when unknown (a ``KeyboardInterrupt`` raised by code)."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


class Stopping:
    """Context manager: while active (main thread only; elsewhere it does nothing), SIGINT and
    SIGTERM raise ``KeyboardInterrupt`` / :class:`Terminated` once, later ones are ignored;
    the previous handlers are put back on exit. ``signum`` is the first signal received."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Stopping":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            if current is signal.SIG_IGN:  # the parent asked for it to be ignored: keep that
                continue
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # already stopping: let the cleanup finish
            return
        self.signum = signum
        if _DEFERRED["depth"]:  # a file is being written: raised when it is done (see deferred)
            _DEFERRED["pending"] = signum
            return
        _raise_for(signum)

    @property
    def status(self) -> int:
        """The exit status for the signal received (:func:`exit_status`)."""
        return exit_status(self.signum)


def _parent_death_signal(signum: int) -> None:
    """Linux: have the kernel send ``signum`` to this process when its parent (the thread that
    forked it) ends. Silently nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        pass


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_with(pid: int, poll_seconds: float = 0.5) -> None:
    """End this process with SIGKILL as soon as process ``pid`` ends (call it in a worker,
    with the driver's pid). A daemon thread waits on a pidfd of ``pid`` (Linux; elsewhere it
    checks every ``poll_seconds`` whether ``pid`` or this process's parent is gone). On Linux
    this process also gets SIGKILL when its parent (a forkserver) ends. If ``pid`` has already
    ended, this process ends at once."""
    _parent_death_signal(signal.SIGKILL)
    parent = os.getppid()
    fd = None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        _kill_self()
    except (AttributeError, OSError):  # no pidfd (not Linux, or Linux < 5.3): poll
        fd = None

    def watch() -> None:
        if fd is not None:
            while True:
                ready, _, _ = select.select([fd], [], [])
                if ready:
                    break
        else:
            while True:
                time.sleep(poll_seconds)
                if os.getppid() != parent:
                    break
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        _kill_self()

    threading.Thread(target=watch, name="beyondbp-die-with", daemon=True).start()


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def can_have_children() -> bool:
    """Whether this process may start worker processes (a daemonic one, e.g. a worker of a
    ``multiprocessing.Pool``, may not: multiprocessing refuses it)."""
    return not multiprocessing.current_process().daemon


def _start_forkserver_without_sigint() -> None:
    """Start the forkserver so that it and the workers it forks ignore SIGINT: Ctrl-C reaches the
    whole process group, and only the driver must handle it (it hands the runs in flight back and
    stops the workers), not a server busy importing torch, which would die printing a
    ``KeyboardInterrupt`` traceback. The server is spawned with SIGINT blocked in this thread (a
    child inherits the signal mask, as multiprocessing's resource tracker is spawned) and its
    first preload module, :mod:`beyondbp._sigint_ignored`, ignores SIGINT and unblocks it. A
    Ctrl-C that reaches this process meanwhile stays pending and is handled as soon as the server
    is spawned (SIGINT used to be ignored here for that moment: a Ctrl-C then was lost, and the
    command ran on)."""
    from multiprocessing import forkserver, resource_tracker

    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - no POSIX signal masks
        forkserver.ensure_running()
        return
    resource_tracker.ensure_running()  # it blocks and then unblocks SIGINT itself: before ours
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a pending SIGINT is handled now


def _is_main_guard(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round), or an ``and`` of it."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_is_main_guard(value) for value in test.values)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _unguarded_main_line() -> tuple[str, int] | None:
    """``(file, line)`` of the main script's top-level statement running now, when it is not
    under ``if __name__ == "__main__":`` and a worker started now would run the script again
    (the main module has a file); None otherwise, or when the script cannot be read."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__file__", None) is None:
        return None  # interactive, ``python -c``: the workers have nothing to run again
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if name == "__main__" or name.endswith(".__main__"):
        return None  # ``python -m package``: multiprocessing never runs a package's __main__ again
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None:
        return None
    filename, line = frame.f_code.co_filename, frame.f_lineno
    try:
        with open(filename, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_guard(node.test) and node.body:
            if node.body[0].lineno <= line <= (node.body[-1].end_lineno or node.body[-1].lineno):
                return None
    return filename, line


def _guard_message(where: str) -> str:
    return (f"beyondbp's worker processes run this program's main script again as they start, so the code that "
            f"starts them must sit under `if __name__ == \"__main__\":`, which {where} does not")


def check_main_guarded() -> None:
    """Refuse (:class:`~beyondbp.errors.ConfigError`, one sentence) to start local worker
    processes from the top level of a main script outside an ``if __name__ == "__main__":``
    block: with the ``forkserver`` (or ``spawn``) start method every worker runs the main script
    again as it starts, so an unguarded ``run_study(...)`` (or ``evolve(..., workers=2)``) would
    start the study again inside each worker, which then dies with multiprocessing's traceback.
    Called in the driver before anything is written, and in a worker that is running the main
    script again (what reaches it when the driver's check could not read the script)."""
    from .errors import ConfigError

    if getattr(multiprocessing.current_process(), "_inheriting", False):  # a worker, running the script again
        main = sys.modules.get("__main__")
        raise ConfigError(_guard_message(f"the top level of {getattr(main, '__file__', None) or 'the main script'}"))
    found = _unguarded_main_line()
    if found is not None:
        raise ConfigError(_guard_message(f"line {found[1]} of {found[0]}"))


#: The forkserver's first preload module: it makes the server ignore SIGINT.
_SIGINT_IGNORED = "beyondbp._sigint_ignored"


def worker_context(preload: list[str]) -> Any:
    """The multiprocessing context worker pools use: ``forkserver`` (its server imports the
    modules ``preload`` names once, when this call starts it, so that each worker is a cheap
    fork of it; it and its workers ignore SIGINT, see :func:`_start_forkserver_without_sigint`),
    ``spawn`` where there is no forkserver. Give each worker :func:`die_with` in its initializer."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([_SIGINT_IGNORED, *(name for name in preload if name != _SIGINT_IGNORED)])
        _start_forkserver_without_sigint()
        return ctx
    return multiprocessing.get_context("spawn")


def stop_pool(pool: Any, grace: float = 5.0) -> None:
    """Stop a ``concurrent.futures.ProcessPoolExecutor`` now: drop its pending work, end its
    workers (SIGTERM; SIGKILL after ``grace`` seconds) and then close this process's write end of
    the pool's results pipe. A worker ended while it was sending a result leaves half a message
    in that pipe; the pool's manager thread, which the interpreter joins at exit, would wait for
    the rest forever while this process still holds a write end: closed, its read ends at
    end-of-file. What the workers were doing is lost."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on them
    results = getattr(pool, "_result_queue", None)  # shutdown() drops the reference
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.terminate()
    for process in workers:
        process.join(grace)
        if process.is_alive():
            process.kill()
            process.join()
    writer = getattr(results, "_writer", None)
    if writer is not None:
        writer.close()
