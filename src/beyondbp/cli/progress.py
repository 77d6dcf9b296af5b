"""Progress on stderr: rich bars on a terminal, plain lines at a steady interval otherwise
(nohup, a scheduler, CI; ``BEYONDBP_PROGRESS_INTERVAL`` seconds, default 30).
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._lazy import lazy
from ..errors import ConfigError
from .common import _count, _duration

# imported on first use, so that --help and usage errors answer without importing torch
report = lazy("beyondbp.reporting.runs")

#: Environment variable: seconds between the plain progress lines printed when stderr is not a
#: terminal (default :data:`PROGRESS_INTERVAL`).
PROGRESS_INTERVAL_ENV = "BEYONDBP_PROGRESS_INTERVAL"
PROGRESS_INTERVAL = 30.0


def _progress_interval() -> float:
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not text:
        return PROGRESS_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"invalid {PROGRESS_INTERVAL_ENV} {text!r}: it must be a number of seconds greater than 0 "
                          f"(default {PROGRESS_INTERVAL:g})")
    return value


def _left(done: int, total: int, since: float) -> str:
    """`` · about <time> left`` from the pace since ``since`` (nothing before the first unit)."""
    if done <= 0 or total <= done:
        return ""
    return f" · about {_duration((time.monotonic() - since) * (total - done) / done)} left"


class _Heartbeat:
    """Where stderr is not a terminal (nohup, a scheduler, CI) rich's bars draw nothing: this
    prints the latest progress as one plain line, ``progress [<elapsed>] <text>``, every
    $BEYONDBP_PROGRESS_INTERVAL seconds (default 30) from a background thread, so that a log
    shows the work is alive and how far it is."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.interval = _progress_interval()
        self.text = ""
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="beyondbp-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if self.text:
                self.console.print(f"progress [{_duration(time.monotonic() - self.started)}] {self.text}", soft_wrap=True)


class _Display:
    """A rich progress display (``self.progress``) and, where stderr is not a terminal, its
    plain :class:`_Heartbeat` lines (``self.heartbeat``, or None), started and stopped together."""

    progress: Any
    heartbeat: Any

    def __enter__(self) -> Any:
        self.progress.__enter__()
        if self.heartbeat is not None:
            self.heartbeat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.progress.__exit__(*exc)


class _Ticker(_Display):
    """Progress of work counted in units (continual's training steps, sample's tokens): a rich
    bar on a terminal, else :class:`_Heartbeat` lines; nothing with ``quiet``."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console, disable=quiet or not console.is_terminal, transient=True)
        self.heartbeat = None if quiet or console.is_terminal else _Heartbeat(console)
        self.task: Any = None
        self.current: tuple[str, int] | None = None
        self.since = time.monotonic()

    def __call__(self, description: str, done: int, total: int) -> None:
        if self.current != (description, total):
            self.current, self.since = (description, total), time.monotonic()
        if self.task is None:
            self.task = self.progress.add_task(description, total=total)
        self.progress.update(self.task, description=description, completed=done, total=total)
        if self.heartbeat is not None:
            self.heartbeat.text = (f"{description}: {done:,} of {total:,} ({100 * done / max(total, 1):.0f}%)"
                                   + _left(done, total, self.since))


def _resumed_line(info: dict[str, Any]) -> str:
    """The line saying a liquid's feature generation continues the progress of a stopped one."""
    phase1 = (f"{info['init_images_done']:,} of {info['init_images']:,} initialisation images, "
              if info["init_images"] else "")
    return (f"liquid features: continuing a stopped generation ({phase1}{info['batches_done']:,} of "
            f"{info['batches']:,} feature batches done, kept in {info['folder']})")


class _Bars(_Display):
    """Drives a rich progress bar (stderr) from the run loop's progress events; where stderr is
    not a terminal, :class:`_Heartbeat` lines instead."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.heartbeat = None if console.is_terminal else _Heartbeat(console)
        self.state: dict[str, Any] = {}
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self.task: Any = None

    def _beat(self, event: str, info: dict[str, Any]) -> None:
        """The heartbeat's line: rule, step of total, loss, the last evaluation, time left."""
        st = self.state
        if event == "start":
            st.clear()
            base = info.get("resumed_from_step") or 0
            st.update(rule=info["rule"], total=info["total_steps"], step=base, base=base, since=time.monotonic())
        elif event == "step":
            st.update(step=info["step"], loss=f" · loss {info['loss']:.4f}")
        elif event == "epoch" and "tokens" in info:
            st["note"] = f" · {info['tokens']:,} tokens, val {info['val_loss']:.4f} nats/token"
        elif event == "epoch":
            acc = info.get("test_accuracy")
            st["note"] = f" · epoch {info['epoch']}" + (f", test acc {100 * acc:.1f}%" if acc == acc else "")
        if "rule" in st:
            step, total = st["step"], st["total"]
            self.heartbeat.text = (f"{st['rule']}: step {step:,} of {total:,} ({100 * step / max(total, 1):.0f}%)"
                                   f"{st.get('loss', '')}{st.get('note', '')}" + _left(step - st["base"], total - st["base"], st["since"]))

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.heartbeat is not None:
            self._beat(event, info)
        if event == "liquid_resumed":  # a liquid's feature generation continues a stopped one
            self.console.print(_resumed_line(info))
        elif event == "start":
            self.task = self.progress.add_task(f"{info['rule']:>9}", total=info["total_steps"], info="")
        elif event == "step":
            self.progress.update(self.task, completed=info["step"], info=f"loss {info['loss']:.4f}")
        elif event == "epoch" and "tokens" in info:
            self.progress.update(self.task, info=f"{info['tokens']:,} tokens  val {info['val_loss']:.4f} nats/token")
        elif event == "epoch":
            acc = info.get("test_accuracy")
            text = f"epoch {info['epoch']}  test acc {100 * acc:.1f}%" if acc == acc else f"epoch {info['epoch']}"
            self.progress.update(self.task, info=text)
        elif event == "end" and info["result"].tokens is not None:
            r = info["result"]
            status = report.status_suffix(r)
            self.progress.console.print(
                f"{r.rule}: validation loss {r.final['val_loss']:.4f} nats/token after {r.tokens:,} tokens "
                f"({_count(r.steps, 'step')}) in {r.total_time:.1f} s{status}"
            )
        elif event == "end":
            r = info["result"]
            acc = r.final.get("test_accuracy")
            acc_text = f"{100 * acc:.1f}%" if isinstance(acc, float) and acc == acc else "n/a"
            status = report.status_suffix(r)
            self.progress.console.print(
                f"{r.rule}: test accuracy {acc_text} after {_count(r.epochs, 'epoch')} ({_count(r.steps, 'step')}) "
                f"in {r.total_time:.1f} s{status}"
            )
