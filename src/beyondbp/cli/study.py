"""``beyondbp study fit|run|status|check|report`` and ``beyondbp analyze``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import files
from .._lazy import lazy
from ..errors import ConfigError
from .common import DebugOpt, OutOverwriteOpt, _check_path_text, _console, _count, _duration, _on_interrupt, app
from .progress import _Display, _Heartbeat
from .settings import file_flag

# imported on first use, so that --help and usage errors answer without importing torch
jsonable = lazy("beyondbp.jsonable")
report = lazy("beyondbp.reporting.runs")

# -- the study command group ---------------------------------------------------------------------
study_app = typer.Typer(
    name="study",
    help="Scaling studies: run a spec's grid into a run store, see its status, check it; fit scaling laws.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(study_app, name="study")


# -- study run / status / check ------------------------------------------------------------------
EXIT_RUNS_FAILED = 4
#: Exit status of ``study check`` when the store has problems (damage, missing runs, stale leases).
EXIT_CHECK_FAILED = 5

SpecArg = Annotated[Path, typer.Argument(help="The study's spec file (TOML).")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Run store (default: the spec's path with .db).",
                                                   parser=file_flag("--store"))]


def _load_spec(path: Path) -> Any:
    """The spec, fully validated (before any store is opened or created)."""
    from ..study.spec import load_spec

    if not path.is_file():
        raise ConfigError(f"spec {str(path)!r} does not exist or is not a file")
    return load_spec(path)


def _counts_text(counts: dict[str, int]) -> str:
    return (f"done {counts.get('done', 0)} · running {counts.get('running', 0)} · failed {counts.get('failed', 0)} · "
            f"diverged {counts.get('diverged', 0)} · pending {counts.get('pending', 0)}")


class _StudyBar(_Display):
    """A rich progress bar (stderr) over a study's runs: finished of total, runs done /
    running / failed, and the time left estimated from the mean time of the runs finished in
    this session divided among the workers. Where stderr is not a terminal, :class:`_Heartbeat`
    lines instead of the bar; with ``quiet`` neither, nor the line printed for each failed run."""

    def __init__(self, console: Console, workers: int, quiet: bool) -> None:
        self.workers = workers
        self.quiet = quiet
        self.heartbeat = None if quiet or console.is_terminal else _Heartbeat(console)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            disable=quiet or not console.is_terminal,
        )
        self.task: Any = None
        self.times: list[float] = []

    def _update(self, counts: dict[str, int]) -> None:
        finished = counts["done"] + counts["failed"] + counts["diverged"]
        left = counts["pending"] + counts["running"]
        eta = "-"
        if self.times:
            eta = _duration(sum(self.times) / len(self.times) * left / self.workers)
        info = (f"done {counts['done']} · running {counts['running']} · failed {counts['failed']} · "
                f"diverged {counts['diverged']}")
        self.progress.update(self.task, completed=finished, total=finished + left, info=info, eta=eta)  # [search] adds runs
        if self.heartbeat is not None:
            total = finished + left
            self.heartbeat.text = (f"runs {finished} of {total} finished · {info} · time left "
                                   f"{'unknown' if eta == '-' else eta}")

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "start":
            self.task = self.progress.add_task("runs", total=info["total"], info="", eta="-")
        if event == "finished" and info.get("wall_time") is not None:
            self.times.append(float(info["wall_time"]))
        if event == "finished" and info.get("status") == "failed" and not self.quiet:
            self.progress.console.print(f"run {info['id']} failed: {info.get('error')}")
        if event == "lost":  # shown even with --quiet: work was done twice
            where = f"its worker stopped at step {info['step']}" if info.get("step") else "this process dropped its copy"
            self.progress.console.print(
                f"run {info['id']} ({', '.join(f'{k}={v}' for k, v in info['axes'].items()) or 'no axes'}): another "
                f"`study run` took it over after this process's lease expired (was it stopped?); {where}")
        if "counts" in info and self.task is not None:
            self._update(info["counts"])


def _print_dry_run(parsed: Any, store: Optional[Path], executor: str, workers: int, address: Optional[str],
                   retry_failed: bool) -> None:
    """``study run --dry-run``: the runs, what each would take, and the store (nothing written)."""
    from ..study.inspection import dry_run

    plan = dry_run(parsed, store, executor=executor, workers=workers, address=address, retry_failed=retry_failed)
    console = _console()
    table = Table(title=f"study {plan['study']}: {plan['to_run']} of {_count(len(plan['runs']), 'run')} would run (dry run)")
    for name in ("run", "label", "axes", "status", "steps", "estimate"):
        table.add_column(name, justify="right" if name in ("steps", "estimate") else "left", overflow="fold")
    for r in plan["runs"]:
        axes = ", ".join(f"{k}={v}" for k, v in r["axes"].items()) or "-"
        status = r["status"] if r["will_run"] else f"{r['status']} (skipped)"
        estimate = _duration(r["seconds"]) if r["will_run"] else "-"
        table.add_row(r["id"], r["label"], axes, status, "-" if r["steps"] is None else str(r["steps"]), estimate)
    console.print(table)
    console.print(
        f"estimated time {_duration(plan['estimate'])} with {_count(plan['workers'], 'worker')} "
        f"({plan['threads']} torch thread(s) per run; from {_count(plan['probes'], 'probe')} of a few steps on this machine, "
        "at its present load)"
    )
    where = "exists" if plan["store_exists"] else "not created yet: `beyondbp study run` without --dry-run creates it"
    console.print(f"store {plan['store']} ({where})")


_STATUSES = ("pending", "running", "done", "failed", "diverged")  # beyondbp.study.store.STATUSES (not imported: fast help)


def _warn_unknown_status(n: int, spec: Path) -> None:
    """Say that spec runs whose stored status is unknown (a damaged store) were skipped."""
    if n:
        print(f"warning: {_count(n, 'run')} of the spec skipped: {'its' if n == 1 else 'their'} status in the store is "
              f"unknown; `beyondbp study check {spec}` names {'it' if n == 1 else 'them'}", file=sys.stderr)


@study_app.command("run")
def study_run(
    spec: SpecArg,
    executor: Annotated[str, typer.Option("--executor", help="local (a process pool) or ray.")] = "local",
    workers: Annotated[int, typer.Option("--workers", help="Runs at once (local: processes; each run uses 1 torch thread unless [execution] threads "
        "says otherwise).")] = 1,
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: start a local Ray).")] = None,
    store: StoreOpt = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed runs again.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar and no summary line.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs, an estimated time (from a short probe) and the store; run nothing, "
        "create nothing.")] = False,
    debug: DebugOpt = False,
) -> int:
    """Run the study's runs that are not finished yet (done and diverged runs are never re-run).

    Exit status 4 when some runs failed (their errors: `study status`)."""
    from ..study.runner import run_study

    parsed = _load_spec(spec)
    _check_path_text(store, "--store")
    if dry_run:
        _print_dry_run(parsed, store, executor, workers, address, retry_failed)
        return 0
    resume = ["beyondbp", "study", "run", str(spec), *(["--store", str(store)] if store is not None else [])]
    _on_interrupt(f"the runs in flight were handed back to the store; `{shlex.join(resume)}` continues the study")
    with _StudyBar(_console(stderr=True), max(workers, 1), quiet) as bar:
        summary = run_study(parsed, store_path=store, executor=executor, workers=workers, address=address,
                            progress=bar, retry_failed=retry_failed)
    counts = summary["counts"]
    if not quiet:
        _console().print(
            f"study {parsed.name}: ran {summary['ran']} of {_count(summary['total'], 'run')} ({summary['added']} added to the store) in "
            f"{_duration(summary['wall_time'])} · {_counts_text(counts)} · store {summary['store']}"
        )
    _warn_unknown_status(sum(n for s, n in counts.items() if s not in _STATUSES), spec)
    if counts["failed"]:
        print(f"error: {_count(counts['failed'], 'run')} failed; see `beyondbp study status {spec}`", file=sys.stderr)
        return EXIT_RUNS_FAILED
    return 0


@study_app.command("status")
def study_status(
    spec: SpecArg,
    store: StoreOpt = None,
    workers: Annotated[int, typer.Option("--workers", help="Workers assumed for the time left.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Counts of the study's runs by status, time spent, and time left (estimated).

    Answered from the plan `study run` kept in the store while the spec file is unchanged
    (without loading the spec: beyondbp.study.status_plan), else by loading the spec."""
    from ..study.status_plan import quick_status

    status = None if store is not None and str(store).strip() in ("", ".") else quick_status(spec, store, workers)
    if status is None:
        from ..study.inspection import study_status as status_of

        parsed = _load_spec(spec)
        _check_path_text(store, "--store")
        status = status_of(parsed, store, workers=workers)
    _warn_unknown_status(status["unknown_status"], spec)
    if as_json:  # jsonable imports neither numpy nor torch: the kept plan's answer stays cheap
        typer.echo(json.dumps(jsonable.plain(status), indent=2))
        return
    console = _console()
    counts = status["counts"]
    console.print(f"study {status['study']} · {_count(status['total'], 'run')} · store {status['store']}"
                  + ("" if status["store_exists"] else " (not created yet: `beyondbp study run` creates it)"))
    table = Table()
    for name in ("status", "runs"):
        table.add_column(name, justify="left" if name == "status" else "right")
    for name, n in counts.items():
        table.add_row(name, str(n))
    console.print(table)
    console.print(
        f"time spent {_duration(status['time_spent'])} (workers' time in finished runs) · time left "
        f"{_duration(status['time_left'])} (mean of done runs × runs left / {_count(workers, 'worker')})"
    )
    if status.get("search"):
        _print_search(console, status["search"])
    if status["missing"]:
        console.print(f"{_count(status['missing'], 'run')} of the spec not yet in the store (counted as pending)")
    if status["stale"]:
        them = "it" if status["stale"] == 1 else "them"
        console.print(f"{_count(status['stale'], 'run')} marked running by a process that is gone; the next `study run` runs {them} again")
    if status["other"]:
        console.print(f"{_count(status['other'], 'run')} in the store no longer in the spec (not counted)")
    if status["failed"]:  # one print: a thousand failed runs print in a moment
        console.print("\n".join(f"failed: {f['id']} ({', '.join(f'{k}={v}' for k, v in f['axes'].items())}): {f['error']}"
                                for f in status["failed"]))


def _print_search(console: Console, search: dict[str, Any]) -> None:
    """The search's lines of `study status`: rounds, cells per state, runs added, capped cells."""
    seeds = f" · seeds added up to {search['seed_rounds']} per cell" if search["seed_rounds"] else ""
    console.print(f"search: {_count(search['rounds'], 'round')} of learning-rate search{seeds} · "
                  f"{_count(search['added'], 'run')} added by the search")
    console.print("cells: " + " · ".join(f"{state}: {_count(n, 'cell')}" for state, n in search["states"].items()))
    capped = [c for c in search["cells"] if c["state"].startswith("capped")]
    if capped:
        console.print(f"{_count(len(capped), 'cell')} not bracketed: the search stopped at [search] lr.max_rounds "
                      "(raise it and run again to go on); verdicts that depend on them say so")


@study_app.command("check")
def study_check(spec: SpecArg, store: StoreOpt = None, debug: DebugOpt = False) -> int:
    """Check the study's store: SQLite's integrity check, every table and column present, every
    run present, statuses valid, configs and results readable JSON, results recorded, no stale
    leases of dead owners, ids matching configs, attempts adding up. Exit 5 with one line per
    problem, 0 when sound (2: bad input, such as a missing store)."""
    from ..study.inspection import check_study

    parsed = _load_spec(spec)
    _check_path_text(store, "--store")
    problems = check_study(parsed, store)
    for problem in problems:
        typer.echo(problem)
    if problems:
        return EXIT_CHECK_FAILED
    typer.echo(f"store of study {parsed.name} is sound: {_count(len(parsed.runs()), 'spec run')} checked")
    return 0


@study_app.command("report")
def study_report(
    spec: SpecArg,
    store: StoreOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Report folder (default: <spec>-report beside the spec).")] = None,
    baseline: Annotated[str, typer.Option("--baseline", help="Rule label every other label is judged against.")] = "backprop",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples (over seeds) for every interval.")] = 200,
    extrapolate: Annotated[float, typer.Option("--extrapolate", help="How far past the largest compute studied the extrapolated verdict looks "
        "(×).")] = 10.0,
    representations: Annotated[Optional[str], typer.Option("--representations", help="A `beyondbp analyze` output folder to include (default: "
        "<spec>-representations beside the spec, when it exists).")] = None,
    overwrite: OutOverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fit and judge the study: best LR per size and budget, frontier and L(N, D) fits with
    bootstrap intervals, one verdict per rule against the baseline, written as report.html
    (self-contained), report.md (with its figures) and report.json."""
    from ..reporting.study import write_report
    from ..study.inspection import study_records

    parsed = _load_spec(spec)
    _check_path_text(store, "--store")
    _check_path_text(out, "--out")
    if isinstance(bootstrap, bool) or bootstrap < 1 or bootstrap > 100_000:
        raise ConfigError(f"invalid --bootstrap {bootstrap}: it must be a whole number from 1 to 100000")
    if not math.isfinite(extrapolate) or extrapolate < 1:
        raise ConfigError(f"invalid --extrapolate {extrapolate}: it must be a finite number of at least 1")
    folder = Path(out) if out is not None else parsed.path.with_name(parsed.path.stem + "-report")
    files.check_writable(folder, "report folder", directory=True)
    skipped: list[tuple[str, str]] = []
    records = study_records(parsed, store, skipped=skipped)
    for reason in sorted({why for _, why in skipped}):
        n = sum(1 for _, why in skipped if why == reason)
        print(f"warning: {_count(n, 'run')} of the spec left out of the report ({reason}); "
              f"`beyondbp study check {spec}` names {'it' if n == 1 else 'them'}", file=sys.stderr)
    labels = {r["label"] for r in records}
    if records and baseline not in labels:
        raise ConfigError(f"baseline {baseline!r} is not a rule label of this study; its labels are: {', '.join(sorted(labels))}")
    from ..reporting.similarity import read_outputs

    if representations is not None:
        _check_path_text(representations, "--representations")
        found = read_outputs(representations)
        if found is None:
            raise ConfigError(f"--representations {str(representations)!r} holds no `beyondbp analyze` output")
    else:  # `beyondbp analyze SPEC`'s default folder, when it exists
        found = read_outputs(parsed.path.with_name(parsed.path.stem + "-representations"))
    from ..study.search import judge_searched

    analysis = judge_searched(parsed, records, baseline=baseline, n_bootstrap=bootstrap, extrapolate=extrapolate)
    written = write_report(parsed, records, folder, analysis=analysis, overwrite=overwrite, representations=found)
    console = _console()
    total = max(len(parsed.runs()), len(records) + len(skipped))  # with [search]: its runs added so far too
    missing = total - len(records) - len(skipped)
    done = sum(1 for r in records if r["status"] == "done")
    console.print(f"study {parsed.name}: {_count(done, 'done run')} of {total} reported"
                  + (f" ({missing} not run yet)" if missing else ""))
    analysis = json.loads(written["report.json"].read_text())["analysis"]
    verdicts = analysis.get("verdicts", {})
    excluded = analysis.get("excluded") or []
    if excluded:
        print(f"warning: {_count(len(excluded), 'done run')} left out of the fits ({'first: ' if len(excluded) > 1 else ''}"
              f"{excluded[0].get('reason')}); report.md lists {'it' if len(excluded) == 1 else 'them'}", file=sys.stderr)
    for label in sorted(verdicts):
        if verdicts[label].get("sentence"):
            console.print(verdicts[label]["sentence"], soft_wrap=True)
    console.print(f"report: {written['report.html']} · {written['report.md']} · {written['report.json']}")
