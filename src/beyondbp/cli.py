"""The ``beyondbp`` command line: ``rules``, ``models``, ``data``, ``train``, ``compare``, ``sample``, ``study``, ``analyze``, ``adapt``, ``continual``.

    beyondbp rules
    beyondbp train --rule dfa --model lenet --data fashion-mnist --epochs 5 --seed 0
    beyondbp compare --rules backprop,fa,dfa,usf --model mlp --data mnist1d --epochs 20
    beyondbp train --model gpt --data shakespeare-char --rule dfa --tokens 2e6 --n-layer 4 --d-model 128
    beyondbp sample --checkpoint gpt.pt --prompt "ROMEO:" --tokens 300 --temperature 0.8 --seed 0
    beyondbp study fit points.csv --params N --tokens D --loss loss --exclude-top 5 --bootstrap 200
    beyondbp study run spec.toml --workers 2          # or --executor ray [--address ADDR]
    beyondbp study status spec.toml [--json]
    beyondbp study check spec.toml
    beyondbp study report spec.toml [--out DIR]        # fits, verdicts: report.html / .md / .json
    beyondbp analyze spec.toml [--out DIR]             # representations: CKA, RSA, shape metrics, identification
    beyondbp adapt --train-source --checkpoint src.pt [--epochs 3]   # test-time adaptation (Fashion-MNIST-C):
    beyondbp adapt --checkpoint src.pt --methods all --corruptions all --severity 5 --out DIR [--episodic]
    beyondbp adapt --gallery gallery.png
    beyondbp continual --methods finetune,gpm,hlop,multitask --rule fa --tasks permuted-fashion-mnist:10 --out DIR

Every setting is checked before anything trains, including that ``--out`` and
``--checkpoint`` can be written. Any error the library raises on purpose, and any usage error,
prints exactly one line ``error: <message>`` on stderr and exits with status 2 (``--debug``
shows the traceback instead). Outputs are written only after every run has finished: into a
temporary sibling directory that is renamed into place, so ``--out`` holds either the old or
the new results, never a mix. An existing non-empty ``--out`` (also compare's default
``results/compare-<data>-<model>``) or an existing ``--checkpoint`` file is refused unless
``--overwrite`` is given. Progress bars go to stderr, tables to stdout; when stderr is not a
terminal, ``train``, ``compare``, ``study run``, ``continual`` and ``sample`` print instead a
plain ``progress [...]`` line every $BEYONDBP_PROGRESS_INTERVAL seconds (default 30).

Exit status: 0 success; 1 an unexpected error (a bug: please report it with ``--debug``);
2 bad input; 3 a run diverged (its training loss became non-finite or blew up): its results
are still written, marked ``diverged`` with the step, but no checkpoint is saved; ``compare``
finishes the other rules first; 130 interrupted (Ctrl-C), 143 stopped by SIGTERM, both with
one line saying how to go on (:mod:`beyondbp.interrupts`). ``study check`` exits 5 when the store has
problems (one line each); ``study run`` exits 4 when some runs failed (the study still ran the
others). A bad spec is refused before the run store is opened or created; ``study run``,
``status`` and ``report`` refuse a damaged store (exit 2, naming the file and how to recover).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import files
from ._lazy import lazy
from . import interrupts
from .errors import BeyondBPError, ConfigError, DataError

# imported on first use, so that --help and usage errors answer without importing torch
data_mod = lazy("beyondbp.data")
jsonable = lazy("beyondbp.jsonable")
models_mod = lazy("beyondbp.models")
options_mod = lazy("beyondbp.options")
report = lazy("beyondbp.reporting.runs")
rules_mod = lazy("beyondbp.rules")

app = typer.Typer(
    name="beyondbp",
    help="Train PyTorch models with credit-assignment rules beyond backpropagation, and compare them with backprop.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

OUTPUT_FILES = ("results.json", "table.md", "curves.png")

#: Exit status of ``train`` / ``compare`` when a run diverged (see the module docstring).
EXIT_DIVERGED = 3


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """``name`` from click and, where typer vendors its own copy of click, from that too."""
    found = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as vendored  # typer >= 0.2x ships click inside
    except ImportError:  # pragma: no cover - older typer uses click itself
        vendored = None
    if vendored is not None and hasattr(vendored, name):
        found.append(getattr(vendored, name))
    return tuple(found)


_USAGE_ERRORS = _click_exceptions("UsageError")
_CLICK_ERRORS = _click_exceptions("ClickException")
_ABORTS = _click_exceptions("Abort")


# -- helpers ------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "160") or 160)
    # markup off: text such as "[diverged]" is data, not a style tag to swallow
    return Console(file=stream, width=width, highlight=False, markup=False)


def parse_assignment(text: str, flag: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` with ``value`` parsed as JSON when it parses."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not all(part.replace("_", "a").replace("-", "a").isalnum() for part in key.split(":")):
        raise ConfigError(f"malformed {flag} {text!r}: expected KEY=VALUE, for example {flag} seed=1")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, value = parse_assignment(item, flag)
        if ":" in key:
            raise ConfigError(f"malformed {flag} {item!r}: a RULE: prefix is only allowed in --rule-opt of compare")
        out[key] = value
    return out


def split_rule_options(items: list[str] | None, rules: list[str]) -> dict[str, dict[str, Any]]:
    """``--rule-opt`` for compare: ``key=value`` goes to every listed rule that has the option
    ``key`` (at least one must); ``rule:key=value`` goes to that rule only."""
    per_rule: dict[str, dict[str, Any]] = {r: {} for r in rules}
    for item in items or []:
        key, value = parse_assignment(item, "--rule-opt")
        if ":" in key:
            rule, _, key = key.partition(":")
            if rule not in per_rule:
                raise ConfigError(f"--rule-opt {item!r} names rule {rule!r}, which is not among --rules {','.join(rules)}")
            if not key:
                raise ConfigError(f"malformed --rule-opt {item!r}: expected RULE:KEY=VALUE")
            per_rule[rule][key] = value
            continue
        takers = [r for r in rules if key in rules_mod.rule_class(r).option_names()]
        if not takers:
            raise ConfigError(f"no rule among {', '.join(rules)} has an option {key!r} (from --rule-opt {item!r})")
        for r in takers:
            per_rule[r][key] = value
    return per_rule


def parse_rules(text: str) -> list[str]:
    names = [r.strip() for r in text.split(",")]
    if not text.strip() or any(not r for r in names):
        raise ConfigError(f"malformed --rules {text!r}: expected comma-separated rule names, e.g. backprop,fa,dfa")
    for r in names:
        rules_mod.rule_class(r)
    seen = set()
    for r in names:
        if r in seen:
            raise ConfigError(f"rule {r!r} is listed twice in --rules")
        seen.add(r)
    return names


def parse_seeds(text: str | None, seed: int | None) -> list[int] | None:
    """``--seeds 0,1,2`` -> [0, 1, 2] (None when not given); refused together with ``--seed``."""
    if text is None:
        return None
    if seed is not None:
        raise ConfigError("give either --seed or --seeds, not both")
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"invalid --seeds {text!r}: give comma-separated whole numbers of at least 0, e.g. 0,1,2")
        values.append(int(part))
    return values


def parse_milestones(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"malformed --milestones {text!r}: expected comma-separated fractions, e.g. 0.5,0.75") from None


def _threads(value: int) -> int | None:
    """``--threads``: 0 means "keep torch's setting" (``RunConfig(threads=None)``)."""
    if value < 0:
        raise ConfigError(f"invalid --threads {value}: it must be a whole number of at least 0 (0 keeps torch's setting)")
    return None if value == 0 else value


def _config_values(**given: Any) -> dict[str, Any]:
    """Only the settings the user gave, so RunConfig's defaults apply to the rest (``threads``
    is always given: ``None`` there means "keep torch's setting")."""
    return {k: v for k, v in given.items() if v is not None or k == "threads"}


def write_outputs(out: Path, results: list[Any], title: str, overwrite: bool = False) -> list[Path]:
    """Write results.json, table.md and curves.png into the directory ``out``, all or nothing:
    into a temporary sibling first, renamed to ``out`` at the end. An existing non-empty ``out``
    is replaced only with ``overwrite``."""
    out = Path(out)
    _check_out(out, overwrite)
    tmp = files.temporary_directory(out)
    try:
        report.write_json(results, tmp / "results.json")
        rows = report.comparison_table(results)
        table = f"# {title}\n\n" + report.render_markdown(rows)
        spiking = [r for r in results if getattr(r, "spikes", None)]
        if spiking:  # spiking models: firing rate and silent neurons per layer, one line per rule
            table = table.rstrip("\n") + "\n\n" + "".join(f"- {r.rule}: {_spikes_line(r)}\n" for r in spiking)
        files.atomic_write_bytes(tmp / "table.md", lambda fh: fh.write(table.encode("utf-8")))
        report.plot_curves(results, tmp / "curves.png", title=title)
        files.publish_directory(tmp, out, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / name for name in OUTPUT_FILES]


def _check_path_text(path: Path | None, flag: str) -> None:
    """An empty path (``Path("")`` is the current directory) is a mistake, not a directory."""
    if path is not None and str(path).strip() in ("", "."):
        raise ConfigError(f"{flag} is empty (or '.'); give a path")


def _check_out(out: Path | None, overwrite: bool) -> None:
    """Refuse, before anything trains, an ``--out`` that is a file, a symbolic link, the current
    directory or one containing it, a non-empty directory (without ``--overwrite``) or a place
    that cannot be written."""
    if out is None:
        return
    _check_path_text(out, "--out")
    out = Path(out)
    if out.is_symlink():
        raise ConfigError(f"--out {str(out)!r} is a symbolic link; give the directory itself")
    cwd = Path.cwd().resolve()
    if out.exists() and (out.resolve() == cwd or out.resolve() in cwd.parents):
        raise ConfigError(f"--out {str(out)!r} is the current directory or contains it; give a directory for the results")
    files.check_writable(out, "--out", directory=True)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output directory {str(out)!r} exists and is not empty; pass --overwrite to replace it")


def _check_checkpoint(path: Path | None, overwrite: bool) -> None:
    if path is None:
        return
    _check_path_text(path, "--checkpoint")
    files.check_writable(path, "--checkpoint")
    if Path(path).exists() and not overwrite:
        raise ConfigError(f"checkpoint {str(path)!r} already exists; pass --overwrite to replace it")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _timed(n: int) -> str:
    """How a time per step was measured: the median of ``n`` timed steps, or (too short a run to
    time any step apart from the warm-up and FLOP-counted ones) from those untimed steps."""
    return f"median of {_count(n, 'timed step')}" if n else "from untimed steps: too few steps to time"


def _check_switched_flags(sparsity: str | None, epsilon: Any, zeta: Any, lr_schedule: str | None, milestones: Any,
                          gamma: Any) -> None:
    """Flags that only mean something when another flag turns them on are refused without it."""
    groups = (
        (sparsity is not None, {"--epsilon": epsilon, "--zeta": zeta}, "SET sparsity", "--sparsity set"),
        (lr_schedule == "step", {"--milestones": milestones, "--gamma": gamma}, "the step schedule", "--lr-schedule step"),
    )
    for on, flags, what, switch in groups:
        given = [flag for flag, value in flags.items() if value is not None]
        if given and not on:
            raise ConfigError(f"{' and '.join(given)} configure {what}; add {switch} or leave them out")


def _diverged_line(result: Any) -> str:
    step = result.diverged_at_step
    where = f"at step {step}" if step is not None else "during training"
    line = f"{result.rule}: run diverged {where} (training loss non-finite or over 100x max(first loss, log classes))"
    if (result.config or {}).get("checkpoint"):
        line += "; no checkpoint was written"
    return line


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


class _Ticker:
    """Progress of work counted in units (continual's training steps, sample's tokens): a rich
    bar on a terminal, else :class:`_Heartbeat` lines; nothing with ``quiet``."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console, disable=quiet or not console.is_terminal, transient=True)
        self.heartbeat = None if quiet or console.is_terminal else _Heartbeat(console)
        self.task: Any = None
        self.current: tuple[str, int] | None = None
        self.since = time.monotonic()

    def __enter__(self) -> "_Ticker":
        self.progress.__enter__()
        if self.heartbeat is not None:
            self.heartbeat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.progress.__exit__(*exc)

    def __call__(self, description: str, done: int, total: int) -> None:
        if self.current != (description, total):
            self.current, self.since = (description, total), time.monotonic()
        if self.task is None:
            self.task = self.progress.add_task(description, total=total)
        self.progress.update(self.task, description=description, completed=done, total=total)
        if self.heartbeat is not None:
            self.heartbeat.text = (f"{description}: {done:,} of {total:,} ({100 * done / max(total, 1):.0f}%)"
                                   + _left(done, total, self.since))


class _Bars:
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

    def __enter__(self) -> "_Bars":
        self.progress.__enter__()
        if self.heartbeat is not None:
            self.heartbeat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.progress.__exit__(*exc)

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
        if event == "start":
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
                f"({r.steps} steps) in {r.total_time:.1f} s{status}"
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


# -- shared options -----------------------------------------------------------------------------
ModelOpt = Annotated[str, typer.Option("--model", help="Model name (`beyondbp models` lists them and their options).")]
DataOpt = Annotated[str, typer.Option("--data", help="Data set name (`beyondbp data` lists them and their options).")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="Directory of the data files (for sets read from disk).")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Training budget in epochs (default 10).")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Training budget in optimizer steps (instead of --epochs).")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Training batch size (default 64).")]
EvalBatchOpt = Annotated[Optional[int], typer.Option("--eval-batch-size", help="Evaluation batch size (default 1000).")]
OptimOpt = Annotated[Optional[str], typer.Option("--optimizer", help="sgd, adam or adamw (default adam).")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default 1e-3).")]
MomentumOpt = Annotated[Optional[float], typer.Option("--momentum", help="SGD momentum (default 0.9).")]
WdOpt = Annotated[Optional[float], typer.Option("--weight-decay", help="Weight decay (default 0).")]
SchedOpt = Annotated[Optional[str], typer.Option("--lr-schedule", help="none, step or cosine (default none).")]
MilestonesOpt = Annotated[Optional[str], typer.Option("--milestones", help="Step schedule milestones as fractions of the budget (default 0.5,0.75).")]
GammaOpt = Annotated[Optional[float], typer.Option("--gamma", help="Step schedule factor (default 0.1).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed for data order, initial weights and feedback matrices (default 0).")]
NTrainOpt = Annotated[Optional[int], typer.Option("--n-train", help="Use only the first N training samples.")]
NTestOpt = Annotated[Optional[int], typer.Option("--n-test", help="Use only the first N test samples.")]
DiagOpt = Annotated[bool, typer.Option("--diagnostics", help="Record gradient cosine vs backprop and W/B angles every epoch.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch CPU threads during a run (default 1: reproducible, and fastest for small models on a busy machine); 0 keeps torch's own choice.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu (default), cuda, cuda:N or mps.")]
RuleOptOpt = Annotated[Optional[list[str]], typer.Option("--rule-opt", help="Rule option KEY=VALUE (JSON values), repeatable.")]
ModelOptOpt = Annotated[Optional[list[str]], typer.Option("--model-opt", help="Model option KEY=VALUE, e.g. widths=[512,512]; repeatable.")]
DataOptOpt = Annotated[Optional[list[str]], typer.Option("--data-opt", help="Data option KEY=VALUE, repeatable.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
SparsityOpt = Annotated[Optional[str], typer.Option("--sparsity", help="'set': SET sparse Linear layers (composes with any rule); default dense.")]
EpsilonOpt = Annotated[Optional[float], typer.Option("--epsilon", help="SET density parameter ε (default 20).")]
TokensOpt = Annotated[Optional[float], typer.Option("--tokens", help="Language models: training budget in tokens, e.g. 2e6 (default 1e6).")]
ContextOpt = Annotated[Optional[int], typer.Option("--context", help="Language models: tokens per training window (default 128).")]
NLayerOpt = Annotated[Optional[int], typer.Option("--n-layer", help="gpt: number of Transformer blocks (default 4).")]
NHeadOpt = Annotated[Optional[int], typer.Option("--n-head", help="gpt: attention heads (default 4).")]
DModelOpt = Annotated[Optional[int], typer.Option("--d-model", help="gpt: model width (default 128).")]
EvalWindowsOpt = Annotated[Optional[int], typer.Option("--eval-windows", help="Language models: validation windows for the final loss (default: the whole split).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty --out directory (and an existing --checkpoint file).")]
OutOverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty --out directory; everything in it is deleted.")]
ZetaOpt = Annotated[Optional[float], typer.Option("--zeta", help="SET fraction of connections rewired after each epoch (default 0.3; 0 = static sparse).")]


# -- commands -----------------------------------------------------------------------------------
@app.command("rules")
def rules_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table (as in the README).")] = False,
    options: Annotated[Optional[str], typer.Option("--options", help="List the options of rule NAME: what each accepts, its default and help.")] = None,
    debug: DebugOpt = False,
) -> None:
    """List the registered rules: name, family, description, paper (or one rule's options)."""
    if options is not None:
        _print_rule_options(options, markdown)
        return
    rows = rules_mod.describe()
    if markdown:
        typer.echo(rules_markdown(rows))
        return
    table = Table(title="beyondbp rules")
    for col in ("name", "family", "description", "paper"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["family"], r["summary"], r["paper"])
    _console().print(table)


def _print_rule_options(name: str, markdown: bool) -> None:
    cls = rules_mod.rule_class(name)
    rows = cls.describe_options()
    if markdown:
        lines = ["| option | accepts | default | help |", "|---|---|---|---|"]
        lines += [
            "| " + " | ".join(c.replace("|", "\\|") for c in (f"`{r['name']}`", r["accepts"], f"`{r['default']}`", r["help"])) + " |"
            for r in rows
        ]
        typer.echo("\n".join(lines) if rows else f"rule '{name}' takes no options")
        return
    if not rows:
        typer.echo(f"rule '{name}' takes no options")
        return
    table = Table(title=f"options of rule {name} (--rule-opt KEY=VALUE, values as JSON)")
    for col in ("option", "accepts", "default", "help"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["accepts"], r["default"], r["help"])
    _console().print(table)


def _print_catalogue(kind: str, registry: Any, name: str | None, markdown: bool) -> None:
    """``beyondbp models`` / ``beyondbp data``: every entry of ``registry`` (a name, a line, its
    options), or with ``name`` its options as ``rules --options`` lists a rule's."""
    flag = {"model": "--model-opt", "data set": "--data-opt"}[kind]
    if name is None:
        rows = registry.describe()
        cols, cells = (kind.split()[0], "description", "options"), [(r["name"], r["summary"], r["options"] or "-") for r in rows]
        title = f"beyondbp {'models' if kind == 'model' else 'data'} (options: --options NAME)"
    else:
        rows = registry.describe_options(name)
        if not rows:
            typer.echo(f"{kind} '{name}' takes no options")
            return
        cols, cells = ("option", "accepts", "default", "help"), [(r["name"], r["accepts"], r["default"], r["help"]) for r in rows]
        title = f"options of {kind} {name} ({flag} KEY=VALUE, values as JSON)"
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        typer.echo("\n".join(lines))
        return
    table = Table(title=title)
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in cells:
        table.add_row(*row)
    _console().print(table)


@app.command("models")
def models_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    options: Annotated[Optional[str], typer.Option("--options", help="List the options of model NAME: what each accepts, its default and help.")] = None,
    debug: DebugOpt = False,
) -> None:
    """List the models (--model NAME): name, description, options (or one model's options)."""
    _print_catalogue("model", models_mod, options, markdown)


@app.command("data")
def data_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    options: Annotated[Optional[str], typer.Option("--options", help="List the options of data set NAME: what each accepts, its default and help.")] = None,
    debug: DebugOpt = False,
) -> None:
    """List the data sets (--data NAME): name, description, options (or one set's options)."""
    _print_catalogue("data set", data_mod, options, markdown)


def rules_markdown(rows: list[dict[str, str]] | None = None) -> str:
    """The README's table of rules, generated from ``rules.describe()``."""
    rows = rules_mod.describe() if rows is None else rows
    lines = ["| rule | family | description | paper |", "|---|---|---|---|"]
    for r in rows:
        cells = [f"`{r['name']}`", r["family"], r["summary"], r["paper"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


@app.command()
def train(
    model: ModelOpt,
    data: DataOpt,
    rule: Annotated[str, typer.Option("--rule", help="Rule name (see `beyondbp rules`).")] = "backprop",
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    eval_batch_size: EvalBatchOpt = None,
    optimizer: OptimOpt = None,
    lr: LrOpt = None,
    momentum: MomentumOpt = None,
    weight_decay: WdOpt = None,
    lr_schedule: SchedOpt = None,
    milestones: MilestonesOpt = None,
    gamma: GammaOpt = None,
    seed: SeedOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
    diagnostics: DiagOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = 1,
    sparsity: SparsityOpt = None,
    epsilon: EpsilonOpt = None,
    zeta: ZetaOpt = None,
    tokens: TokensOpt = None,
    context: ContextOpt = None,
    n_layer: NLayerOpt = None,
    n_head: NHeadOpt = None,
    d_model: DModelOpt = None,
    eval_windows: EvalWindowsOpt = None,
    rule_opt: RuleOptOpt = None,
    model_opt: ModelOptOpt = None,
    data_opt: DataOptOpt = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Save the trained model here.")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this checkpoint.")] = None,
    state: Annotated[Optional[Path], typer.Option("--state", help="Resume-state file: a killed run given the same settings and --state continues from it.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Write the resume state (--state) every N optimizer steps.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write results.json, table.md, curves.png here.")] = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train one model with one rule and report accuracy, FLOPs and time per step.

    Exit status 3 when the run diverged (results are still written, marked diverged)."""
    from . import training as train_mod

    _check_switched_flags(sparsity, epsilon, zeta, lr_schedule, milestones, gamma)
    _check_path_text(init_from, "--init-from")
    _check_path_text(state, "--state")
    config = train_mod.RunConfig(**_config_values(
        rule=rule, rule_options=parse_assignments(rule_opt, "--rule-opt"),
        model=model, model_options=gpt_options(model, model_opt, n_layer, n_head, d_model),
        tokens=parse_tokens(tokens), context=context, eval_windows=eval_windows,
        data=data, data_dir=data_dir, data_options=parse_assignments(data_opt, "--data-opt"),
        epochs=epochs, steps=steps, batch_size=batch_size, eval_batch_size=eval_batch_size,
        optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, milestones=parse_milestones(milestones), gamma=gamma, seed=seed,
        n_train=n_train, n_test=n_test, diagnostics=diagnostics, device=device, threads=_threads(threads),
        sparsity=sparsity, epsilon=epsilon, zeta=zeta,
        checkpoint=None if checkpoint is None else str(checkpoint),
        init_from=None if init_from is None else str(init_from),
        state=None if state is None else str(state), checkpoint_every=checkpoint_every,
    ))
    _check_out(out, overwrite)
    _check_checkpoint(checkpoint, overwrite)
    _on_interrupt(lambda: _train_resume_hint(config))
    ds = train_mod.load_dataset(config)
    train_mod.check(config, ds)
    with _Bars(_console(stderr=True)) as bars:
        result = train_mod.run(config, bars, dataset=ds)

    title = f"{config.rule} on {config.data} / {config.model}"
    written = write_outputs(out, [result], title, overwrite) if out else []
    console = _console()
    if result.resumed_from_step is not None:
        console.print(f"resumed from step {result.resumed_from_step} ({config.state})")
    if result.init_from.get("loaded") == "weights only":
        console.print(
            f"--init-from {config.init_from}: weights only — the checkpoint was trained by rule "
            f"'{result.init_from['checkpoint_rule']}', so rule '{config.rule}' starts with its own state "
            "and no optimizer state"
        )
    if result.tokens is not None:
        _print_language_model_run(console, result, written)
        _exit_if_diverged([result])
        return
    table = Table(title=f"{config.rule} · {config.model} · {config.data} · seed {config.seed}")
    diag_keys = ["cos/all"] if config.diagnostics else []
    for col in ["epoch", "step", "train loss", "test loss", "test acc", *diag_keys]:
        table.add_column(col, justify="right")
    for h in result.history:
        cells = [str(h["epoch"]), str(h["step"]), f"{h['train_loss']:.4f}", f"{h['test_loss']:.4f}",
                 f"{100 * h['test_accuracy']:.1f}%"]
        cells += [f"{h['diagnostics'].get(k, float('nan')):.3f}" for k in diag_keys]
        table.add_row(*cells)
    console.print(table)
    tps = "n/a" if result.time_per_step is None else f"{1e3 * result.time_per_step:.3f} ms"
    console.print(
        f"parameters {result.n_params:,} · FLOPs/step {result.flops_per_step:,} (batch {result.flops_batch_size}) · "
        f"time/step {tps} ({_timed(result.timed_steps)}) · total {result.total_time:.1f} s"
    )
    if result.sparsity:
        console.print(_sparsity_line(result))
    if result.spikes:
        console.print(_spikes_line(result), soft_wrap=True)
    if result.diverged:
        console.print(_diverged_line(result))
    if result.checkpoint:
        console.print(f"checkpoint: {result.checkpoint}")
    for path in written:
        console.print(f"wrote {path}")
    _exit_if_diverged([result])


def _train_resume_hint(config: Any) -> str:
    """What an interrupted ``train`` says: whether and how the run continues."""
    again = _same_command()
    if config.state is None:
        return "nothing was saved; a run given --state FILE --checkpoint-every N can be continued after an interruption"
    if config.checkpoint_every is None:
        return f"no resume state was written (--state keeps one only with --checkpoint-every N); `{again}` starts the run over"
    if Path(config.state).is_file():
        return f"`{again}` continues the run from its last saved state ({config.state})"
    return f"no state was saved yet (the first comes at step {config.checkpoint_every}); `{again}` starts the run over"


def _exit_if_diverged(results: list[Any]) -> None:
    bad = list(dict.fromkeys(r.rule for r in results if r.diverged))
    if bad:
        print(f"error: diverged: {', '.join(bad)} (exit status {EXIT_DIVERGED})", file=sys.stderr)
        raise SystemExit(EXIT_DIVERGED)


@app.command()
def compare(
    model: ModelOpt,
    data: DataOpt,
    rules: Annotated[str, typer.Option("--rules", help="Comma-separated rule names, e.g. backprop,fa,dfa.")] = "backprop,fa,dfa",
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    eval_batch_size: EvalBatchOpt = None,
    optimizer: OptimOpt = None,
    lr: LrOpt = None,
    momentum: MomentumOpt = None,
    weight_decay: WdOpt = None,
    lr_schedule: SchedOpt = None,
    milestones: MilestonesOpt = None,
    gamma: GammaOpt = None,
    seed: SeedOpt = None,
    n_train: NTrainOpt = None,
    n_test: NTestOpt = None,
    diagnostics: DiagOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = 1,
    sparsity: SparsityOpt = None,
    epsilon: EpsilonOpt = None,
    zeta: ZetaOpt = None,
    tokens: TokensOpt = None,
    context: ContextOpt = None,
    n_layer: NLayerOpt = None,
    n_head: NHeadOpt = None,
    d_model: DModelOpt = None,
    eval_windows: EvalWindowsOpt = None,
    rule_opt: Annotated[
        Optional[list[str]],
        typer.Option("--rule-opt", help="KEY=VALUE for every listed rule that has option KEY, or RULE:KEY=VALUE; repeatable."),
    ] = None,
    model_opt: ModelOptOpt = None,
    data_opt: DataOptOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default results/compare-<data>-<model>).")] = None,
    overwrite: OutOverwriteOpt = False,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2, instead of --seed: every rule runs with each, and the table shows mean ± sd.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Train each rule on the same model, data, budget and seed; print and save a comparison.

    A diverged rule is marked in every output and the others still run; the exit status is
    then 3."""
    from . import training as train_mod
    from .study.compare import compare as compare_rules

    seed_list = parse_seeds(seeds, seed)
    names = parse_rules(rules)
    _check_switched_flags(sparsity, epsilon, zeta, lr_schedule, milestones, gamma)
    per_rule = split_rule_options(rule_opt, names)
    base = _config_values(
        model=model, model_options=gpt_options(model, model_opt, n_layer, n_head, d_model),
        tokens=parse_tokens(tokens), context=context, eval_windows=eval_windows,
        data=data, data_dir=data_dir, data_options=parse_assignments(data_opt, "--data-opt"),
        epochs=epochs, steps=steps, batch_size=batch_size, eval_batch_size=eval_batch_size,
        optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, milestones=parse_milestones(milestones), gamma=gamma, seed=seed,
        n_train=n_train, n_test=n_test, diagnostics=diagnostics, device=device, threads=_threads(threads),
        sparsity=sparsity, epsilon=epsilon, zeta=zeta,
    )
    c0 = train_mod.RunConfig(**base, rule=names[0], rule_options=per_rule[names[0]])
    for r in names[1:]:  # every rule's options are checked before anything is loaded or trained
        c0.replace(rule=r, rule_options=per_rule[r])
    out = out if out is not None else Path("results") / f"compare-{c0.data}-{c0.model}"
    _check_out(out, overwrite)
    _on_interrupt(_NO_RESUME)
    with _Bars(_console(stderr=True)) as bars:  # the library compares; the CLI only renders
        results = compare_rules(c0, names, rule_options=per_rule, progress=bars, seeds=seed_list)

    budget = f"{c0.epochs} epochs" if c0.steps is None else f"{c0.steps} steps"
    if c0.tokens is not None:
        budget = f"{c0.tokens:g} tokens, context {train_mod.lm_context(c0)}"
    seed_text = f"seed {c0.seed}" if seed_list is None else f"mean ± sd over seeds {','.join(map(str, seed_list))}"
    title = (f"{report.architecture(results[0])} on {c0.data}, {budget}, {c0.optimizer} lr {c0.lr:g}, "
             f"batch {c0.batch_size}, {seed_text}")
    written = write_outputs(out, results, title, overwrite)
    rows = report.comparison_table(results)
    titles, cells = report.table_cells(rows)
    table = Table(title=title)
    for i, t in enumerate(titles):
        table.add_column(t, justify="left" if i == 0 else "right")
    for line in cells:
        table.add_row(*line)
    console = _console()
    console.print(table)
    console.print(report.baseline_note(rows))
    console.print(
        "FLOPs are counted by torch.utils.flop_counter on one training step at batch size "
        f"{results[0].flops_batch_size}; time/step is the median wall-clock of the other steps."
    )
    for r in results:
        if r.sparsity:
            console.print(f"{r.rule}: {_sparsity_line(r)}")
        if r.spikes:
            console.print(f"{r.rule}: {_spikes_line(r)}", soft_wrap=True)
    if results[0].tokens is not None:
        console.print(language_model_table(results))
        console.print(_baselines_line(results[0]))
    for r in results:
        if r.diverged:
            console.print(_diverged_line(r))
    for path in written:
        console.print(f"wrote {path}")
    _exit_if_diverged(results)


# -- language models ----------------------------------------------------------------------------
def parse_tokens(value: float | None) -> int | None:
    """``--tokens 2e6`` -> 2000000 (a whole number of at least 1)."""
    if value is None:
        return None
    if not value >= 1 or value != int(value):
        raise ConfigError(f"invalid --tokens {value:g}: it must be a whole number of at least 1, e.g. 2e6")
    return int(value)


def gpt_options(model: str, model_opt: list[str] | None, n_layer: int | None, n_head: int | None,
                d_model: int | None) -> dict[str, Any]:
    """``--model-opt`` assignments plus the GPT size flags (only valid with ``--model gpt``)."""
    opts = parse_assignments(model_opt, "--model-opt")
    sizes = {k: v for k, v in (("n_layer", n_layer), ("n_head", n_head), ("d_model", d_model)) if v is not None}
    if sizes and model != "gpt":
        flags = ", ".join("--" + k.replace("_", "-") for k in sizes)
        raise ConfigError(f"{flags} set the size of model gpt, not of {model!r}; use --model-opt for other models")
    return {**opts, **sizes}


def _baselines_line(result: Any) -> str:
    b = result.data.get("baselines", {})
    return (
        f"baselines on the same validation split (nats/token): uniform {b.get('uniform', float('nan')):.4f} · "
        f"unigram {b.get('unigram', float('nan')):.4f} · bigram {b.get('bigram', float('nan')):.4f}"
    )


def language_model_table(results: list[Any]) -> Table:
    """Validation loss, FLOPs and time per token of language-model runs, with ratios to backprop."""
    base = next((r for r in results if r.rule == "backprop"), results[0])
    table = Table(title=f"per token, ratios to {base.rule}")
    for col in ("rule", "val loss (nats/token)", f"Δ vs {base.rule}", "FLOPs/token", "FLOPs ×", "time/token", "time ×"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for r in results:
        tpt, btpt = r.time_per_token, base.time_per_token
        table.add_row(
            r.rule + report.status_suffix(r),
            f"{r.final['val_loss']:.4f}",
            f"{r.final['val_loss'] - base.final['val_loss']:+.4f}",
            f"{r.flops_per_token / 1e6:.3f} M",
            f"{r.flops_per_token / base.flops_per_token:.2f}×" if base.flops_per_token else "—",
            "—" if tpt is None else f"{1e6 * tpt:.2f} µs",
            f"{tpt / btpt:.2f}×" if tpt and btpt else "—",
        )
    return table


def _print_language_model_run(console: Console, result: Any, written: list[Path]) -> None:
    c = result.config
    table = Table(title=f"{result.rule} · {c['model']} · {c['data']} · seed {c['seed']}")
    diag = bool(c.get("diagnostics"))
    for col in ["eval", "step", "tokens", "train loss", "val loss (nats/token)", "val acc", *(["cos/all"] if diag else [])]:
        table.add_column(col, justify="right")
    for h in result.history:
        cells = [str(h["epoch"]), str(h["step"]), f"{h['tokens']:,}", f"{h['train_loss']:.4f}",
                 f"{h['val_loss']:.4f}", f"{100 * h['test_accuracy']:.1f}%"]
        if diag:
            cells.append(f"{h['diagnostics'].get('cos/all', float('nan')):.3f}")
        table.add_row(*cells)
    console.print(table)
    console.print(_baselines_line(result))
    tpt = "n/a" if result.time_per_token is None else f"{1e6 * result.time_per_token:.2f} µs"
    console.print(
        f"parameters {result.n_params:,} · context {result.data['context']} · FLOPs/token {result.flops_per_token:,.0f} · "
        f"time/token {tpt} ({_timed(result.timed_steps)}) · total {result.total_time:.1f} s"
    )
    console.print("validation loss before the last row is measured on 64 evenly spaced windows; the last row on --eval-windows")
    if result.diverged:
        console.print(_diverged_line(result))
    if result.checkpoint:
        console.print(f"checkpoint: {result.checkpoint}")
    for path in written:
        console.print(f"wrote {path}")


@app.command()
def sample(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by `beyondbp train --model gpt ... --checkpoint PATH`.")],
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue (characters of the training corpus).")] = "",
    tokens: Annotated[int, typer.Option("--tokens", help="Number of tokens to generate.")] = 300,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature; 0 picks the most likely token.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample among the k most likely tokens only.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling generator.")] = 0,
    debug: DebugOpt = False,
) -> None:
    """Generate text from a language-model checkpoint and print it."""
    from .generate import check_options, load_language_model, sample_text

    check_options(tokens, temperature, top_k, seed)  # also: the tokens fit in memory
    model, codec = load_language_model(checkpoint)
    with _Ticker(_console(stderr=True)) as tick:
        text = sample_text(model, codec, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed,
                           progress=lambda done, total: tick("sampling tokens", done, total))
    typer.echo(text)


def _spikes_line(result: Any) -> str:
    """Per spiking layer: mean firing rate (spikes per neuron per step) and silent neurons."""
    parts = [
        f"{name} rate {stats['rate']:.3f}, silent {100 * stats['silent']:.1f}%"
        for name, stats in result.spikes.items()
    ]
    return "spikes on the test set (per neuron per step; silent: never fired): " + " · ".join(parts)


def _sparsity_line(result: Any) -> str:
    sp = result.sparsity
    return (
        f"SET sparsity (ε={sp['epsilon']:g}, ζ={sp['zeta']:g}): density {100 * sp['density']:.2f}% of sparse-layer "
        f"weights · active parameters {result.n_active_params:,} of {result.n_params:,} · FLOPs/step executed "
        f"{result.flops_per_step:,} (dense kernels, masks) · effective {result.effective_flops_per_step:,} "
        "(products of sparse weights scaled by density)"
    )


# -- study fit ----------------------------------------------------------------------------------
study_app = typer.Typer(
    name="study",
    help="Scaling studies: run a spec's grid into a run store, see its status, check it; fit scaling laws.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(study_app, name="study")


def _check_utf8(path: Path) -> None:
    """Refuse (one sentence, with the line) a file that is not UTF-8 text."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"CSV file {str(path)!r}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8"
        ) from None


def _read_csv_columns(path: Path, columns: dict[str, str]) -> dict[str, list[float]]:
    """The named columns of a CSV file with a header row, as floats; ``columns`` maps each
    column name to the flag that named it (for the messages)."""
    import csv

    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist or is not a file")
    _check_utf8(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for name, flag in columns.items():
            if name not in header:
                raise ConfigError(
                    f"{flag} {name!r} is not a column of {str(path)!r}; its columns are: {', '.join(header) or '(none)'}"
                )
        out: dict[str, list[float]] = {name: [] for name in columns}
        for row_number, row in enumerate(reader, start=2):
            for name, flag in columns.items():
                text = (row.get(name) or "").strip()
                try:
                    value = float(text)
                except ValueError:
                    raise DataError(
                        f"column {name!r} ({flag}) of {str(path)!r} holds {text!r} on line {row_number}, which is not a number"
                    ) from None
                if not (value > 0 and value != float("inf")):
                    raise DataError(
                        f"column {name!r} ({flag}) of {str(path)!r} holds {text!r} on line {row_number}; "
                        "values must be finite positive numbers"
                    )
                out[name].append(value)
    return out


def _fit_table(title: str, fit: Any, intervals: Any, names: list[str]) -> Table:
    level = f"{100 * intervals.level:g} % interval" if intervals is not None else "interval"
    table = Table(title=title)
    table.add_column("parameter")
    table.add_column("estimate", justify="right")
    table.add_column(f"{level} (low)", justify="right")
    table.add_column(f"{level} (high)", justify="right")
    labels = {"alpha": "α", "beta": "β"}
    for name in names:
        low = "-" if intervals is None else f"{intervals.low[name]:.4g}"
        high = "-" if intervals is None else f"{intervals.high[name]:.4g}"
        outside = intervals is not None and intervals.outside(name)  # a percentile interval need not hold it
        table.add_row(labels.get(name, name), f"{getattr(fit, name):.4g}" + ("†" if outside else ""), low, high)
    if intervals is not None and any(intervals.outside(name) for name in names):
        table.caption = "† the fit to all points lies outside its own bootstrap interval (biased or poorly pinned down)"
    return table


def _refuse_degenerate(fit: Any) -> None:
    """A fit whose data do not pin down the law is refused, as the study report refuses it."""
    from .analysis import scaling

    why = scaling.degenerate(fit)
    if why is not None:
        raise DataError(f"the fit is degenerate: {why}")


@study_app.command("fit")
def study_fit(
    file: Annotated[Path, typer.Argument(help="CSV file with a header row, one point per line.")],
    params: Annotated[Optional[str], typer.Option("--params", help="Column of model sizes N (parameters).")] = None,
    tokens: Annotated[Optional[str], typer.Option("--tokens", help="Column of training tokens D (default: FLOPs / (6 N) when --flops is given).")] = None,
    loss: Annotated[str, typer.Option("--loss", help="Column of losses.")] = "loss",
    flops: Annotated[Optional[str], typer.Option("--flops", help="Column of training FLOPs C; alone (no --params), fits the frontier L(C) = E + A C^-α.")] = None,
    exclude_top: Annotated[int, typer.Option("--exclude-top", help="Drop the K highest-loss points before fitting.")] = 0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the intervals (0: none).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap's generator.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fit and intervals as JSON.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Fit L(N, D) = E + A/N^α + B/D^β (Chinchilla's approach 3) to a CSV file's points, or the
    compute frontier L(C) = E + A·C^(-α) when only --flops and --loss are given."""
    from .analysis import scaling

    if exclude_top < 0:
        raise ConfigError(f"invalid --exclude-top {exclude_top}: it must be a whole number of at least 0")
    if bootstrap < 0 or bootstrap > scaling.MAX_RESAMPLES:
        raise ConfigError(f"invalid --bootstrap {bootstrap}: it must be a whole number from 0 (no intervals) to {scaling.MAX_RESAMPLES}")
    notes: list[str] = []
    if params is None:
        if tokens is not None:
            raise ConfigError("--tokens needs --params: the law L(N, D) takes both model size and tokens")
        if flops is None:
            raise ConfigError("give --params with --tokens (or --flops) to fit L(N, D), or --flops alone to fit the frontier L(C)")
        cols = _read_csv_columns(file, {flops: "--flops", loss: "--loss"})
        c_all, l_all = cols[flops], cols[loss]
        c_front, l_front = scaling.efficient_frontier(c_all, l_all)
        notes.append(f"frontier: the {len(c_front)} points of {len(c_all)} whose loss is the lowest at or below their compute")
        fit = scaling.fit_frontier(c_front, l_front, exclude_top=exclude_top)
        _refuse_degenerate(fit)
        intervals = None
        if bootstrap:
            intervals = scaling.bootstrap_frontier(
                c_front, l_front, n_resamples=bootstrap, seed=seed, exclude_top=exclude_top, fit=fit
            )
        names, title = ["E", "A", "alpha"], "L(C) = E + A · C^(-α)"
    else:
        wanted = {params: "--params", loss: "--loss"}
        if tokens is not None:
            wanted[tokens] = "--tokens"
        elif flops is not None:
            wanted[flops] = "--flops"
        else:
            raise ConfigError("--params needs --tokens, or --flops to derive tokens as FLOPs / (6 × params)")
        cols = _read_csv_columns(file, wanted)
        n_vals = cols[params]
        if tokens is not None:
            d_vals = cols[tokens]
        else:
            d_vals = [c / (6.0 * n) for c, n in zip(cols[flops], n_vals)]
            notes.append(f"tokens derived as D = FLOPs / (6 N) from columns {flops!r} and {params!r}")
        fit = scaling.fit_loss_law(n_vals, d_vals, cols[loss], exclude_top=exclude_top)
        _refuse_degenerate(fit)
        intervals = None
        if bootstrap:
            intervals = scaling.bootstrap(
                n_vals, d_vals, cols[loss], n_resamples=bootstrap, seed=seed, exclude_top=exclude_top, fit=fit
            )
        names, title = ["E", "A", "B", "alpha", "beta"], "L(N, D) = E + A / N^α + B / D^β"
    if as_json:
        payload = intervals.to_dict() if intervals is not None else {"fit": fit.to_dict(), "intervals": None}
        payload["notes"] = notes
        typer.echo(json.dumps(jsonable.plain(payload), indent=2))
        return
    console = _console()
    for note in notes:
        console.print(note)
    console.print(_fit_table(title, fit, intervals, names))
    detail = (
        f"{fit.n_points} points ({fit.excluded} highest-loss excluded) · {fit.n_starts} starts · "
        f"Huber δ = {fit.delta:g} · objective {fit.objective:.6g}"
    )
    if intervals is not None:
        detail += f" · {intervals.n_resamples} bootstrap resamples (seed {seed})"
    console.print(detail)


# -- study run / status / check ------------------------------------------------------------------
EXIT_RUNS_FAILED = 4
#: Exit status of ``study check`` when the store has problems (damage, missing runs, stale leases).
EXIT_CHECK_FAILED = 5

SpecArg = Annotated[Path, typer.Argument(help="The study's spec file (TOML).")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Run store (default: the spec's path with .db).")]


def _load_spec(path: Path) -> Any:
    """The spec, fully validated (before any store is opened or created)."""
    from .study.spec import load_spec

    if not path.is_file():
        raise ConfigError(f"spec {str(path)!r} does not exist or is not a file")
    return load_spec(path)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _counts_text(counts: dict[str, int]) -> str:
    return (f"done {counts.get('done', 0)} · running {counts.get('running', 0)} · failed {counts.get('failed', 0)} · "
            f"diverged {counts.get('diverged', 0)} · pending {counts.get('pending', 0)}")


class _StudyBar:
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

    def __enter__(self) -> "_StudyBar":
        self.progress.__enter__()
        if self.heartbeat is not None:
            self.heartbeat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.progress.__exit__(*exc)

    def _update(self, counts: dict[str, int]) -> None:
        finished = counts["done"] + counts["failed"] + counts["diverged"]
        left = counts["pending"] + counts["running"]
        eta = "-"
        if self.times:
            eta = _duration(sum(self.times) / len(self.times) * left / self.workers)
        info = (f"done {counts['done']} · running {counts['running']} · failed {counts['failed']} · "
                f"diverged {counts['diverged']}")
        self.progress.update(self.task, completed=finished, info=info, eta=eta)
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
    from .study.runner import dry_run

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
    workers: Annotated[int, typer.Option("--workers", help="Runs at once (local: processes; each run uses 1 torch thread unless [execution] threads says otherwise).")] = 1,
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: start a local Ray).")] = None,
    store: StoreOpt = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed runs again.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar and no summary line.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs, an estimated time (from a short probe) and the store; run nothing, create nothing.")] = False,
    debug: DebugOpt = False,
) -> int:
    """Run the study's runs that are not finished yet (done and diverged runs are never re-run).

    Exit status 4 when some runs failed (their errors: `study status`)."""
    from .study.runner import run_study

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
            f"study {parsed.name}: ran {summary['ran']} of {summary['total']} runs ({summary['added']} added to the store) in "
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
    """Counts of the study's runs by status, time spent, and time left (estimated)."""
    from .study.runner import study_status as status_of

    parsed = _load_spec(spec)
    _check_path_text(store, "--store")
    status = status_of(parsed, store, workers=workers)
    _warn_unknown_status(status["unknown_status"], spec)
    if as_json:
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
    if status["missing"]:
        console.print(f"{_count(status['missing'], 'run')} of the spec not yet in the store (counted as pending)")
    if status["stale"]:
        them = "it" if status["stale"] == 1 else "them"
        console.print(f"{_count(status['stale'], 'run')} marked running by a process that is gone; the next `study run` runs {them} again")
    if status["other"]:
        console.print(f"{_count(status['other'], 'run')} in the store no longer in the spec (not counted)")
    for f in status["failed"]:
        axes = ", ".join(f"{k}={v}" for k, v in f["axes"].items())
        console.print(f"failed: {f['id']} ({axes}): {f['error']}")


@study_app.command("check")
def study_check(spec: SpecArg, store: StoreOpt = None, debug: DebugOpt = False) -> int:
    """Check the study's store: SQLite's integrity check, every table and column present, every
    run present, statuses valid, configs and results readable JSON, results recorded, no stale
    leases of dead owners, ids matching configs, attempts adding up. Exit 5 with one line per
    problem, 0 when sound (2: bad input, such as a missing store)."""
    from .study.runner import check_study

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
    extrapolate: Annotated[float, typer.Option("--extrapolate", help="How far past the largest compute studied the extrapolated verdict looks (×).")] = 10.0,
    representations: Annotated[Optional[str], typer.Option("--representations", help="A `beyondbp analyze` output folder to include (default: <spec>-representations beside the spec, when it exists).")] = None,
    overwrite: OutOverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fit and judge the study: best LR per size and budget, frontier and L(N, D) fits with
    bootstrap intervals, one verdict per rule against the baseline, written as report.html
    (self-contained), report.md (with its figures) and report.json."""
    from .reporting.study import write_report
    from .study.runner import study_records

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
    from .reporting.similarity import read_outputs

    if representations is not None:
        _check_path_text(representations, "--representations")
        found = read_outputs(representations)
        if found is None:
            raise ConfigError(f"--representations {str(representations)!r} holds no `beyondbp analyze` output")
    else:  # `beyondbp analyze SPEC`'s default folder, when it exists
        found = read_outputs(parsed.path.with_name(parsed.path.stem + "-representations"))
    written = write_report(parsed, records, folder, overwrite=overwrite,
                           analyze_options={"baseline": baseline, "n_bootstrap": bootstrap, "extrapolate": extrapolate},
                           representations=found)
    console = _console()
    missing = len(parsed.runs()) - len(records) - len(skipped)
    done = sum(1 for r in records if r["status"] == "done")
    console.print(f"study {parsed.name}: {_count(done, 'done run')} of {len(parsed.runs())} reported"
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


# -- analyze ------------------------------------------------------------------------------------
def _group_by_axes(text: str) -> list[str]:
    """``--group-by rule,lr`` -> ["rule", "lr"]; an empty list or item is refused."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise ConfigError(f"malformed --group-by {text!r}: give comma-separated axes, e.g. rule or rule,lr")
    return items


@app.command()
def analyze(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Trained networks: a study spec (.toml) run with keep_models = true, a folder of checkpoints, or checkpoint files.", show_default=False)] = None,
    store: StoreOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Output folder (default: <first source>-representations beside it).")] = None,
    stimuli: Annotated[int, typer.Option("--stimuli", help="Probe stimuli drawn from the test split.")] = 1000,
    measures: Annotated[Optional[str], typer.Option("--measures", help="Comma-separated measures (default: all; see --list-measures).")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Noisy passes per stimulus for the stochastic metric.")] = 10,
    noise: Annotated[str, typer.Option("--noise", help="Noise of the stochastic responses: input (Gaussian on the input) or dropout (the model's own).")] = "input",
    noise_level: Annotated[float, typer.Option("--noise-level", help="Input noise, in standard deviations of the probe set.")] = 0.1,
    snr_batches: Annotated[int, typer.Option("--snr-batches", help="Training minibatches for the gradient SNR (0: skip it).")] = 8,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples (over seeds) for identification intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the probe draw, the noise and the bootstrap.")] = 0,
    list_measures: Annotated[bool, typer.Option("--list-measures", help="List the measures and exit.")] = False,
    group_by: Annotated[Optional[str], typer.Option("--group-by", help="What identification tells apart: comma-separated axes (rule, a study axis or a run setting such as lr); default: rule. Networks differing elsewhere are pooled.")] = None,
    overwrite: OutOverwriteOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Compare trained networks' hidden representations (CKA, RSA, shape metrics, stochastic
    shape metric, encoding models), test whether each measure identifies the rule that trained a
    network, and measure gradient SNR: writes representations.md / .json and heatmap and MDS
    PNGs."""
    from .reporting.similarity import check_output, write_outputs
    from .analysis.representations import MEASURES
    from .study.similarity import analyze_networks
    from .study.similarity import find_networks

    console = _console()
    if list_measures:
        for name, m in MEASURES.items():
            console.print(f"{name:22s} {m.description}", soft_wrap=True)
        return
    if not sources:
        raise ConfigError("name at least one source of trained networks: a study spec (.toml) run with "
                          "keep_models = true, a folder of checkpoints, or checkpoint files")
    _check_path_text(store, "--store")
    _check_path_text(out, "--out")
    if isinstance(bootstrap, bool) or bootstrap < 1 or bootstrap > 100_000:
        raise ConfigError(f"invalid --bootstrap {bootstrap}: it must be a whole number from 1 to 100000")
    names = None if measures is None else [m.strip() for m in measures.split(",") if m.strip()]
    if names is not None:
        unknown = [m for m in names if m not in MEASURES]
        if unknown or not names:
            raise ConfigError(f"unknown measure {unknown[0]!r} in --measures; measures are: {', '.join(MEASURES)}"
                              if unknown else "--measures is empty; name at least one measure")
    first = Path(sources[0])
    folder = Path(out) if out is not None else first.with_name((first.stem if first.suffix else first.name) + "-representations")
    check_output(folder, overwrite)
    _on_interrupt(_NO_RESUME)
    axes = None if group_by is None else _group_by_axes(group_by)
    networks = find_networks(sources, store, group_by=axes)
    title = f"Representations of {len(networks)} networks ({', '.join(sorted({n.label for n in networks}))})"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(stderr=True), disable=quiet, transient=True) as bar:
        task = bar.add_task("networks", total=len(networks))
        state = {"measures": None}

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "network":
                bar.update(task, completed=info["index"], description=f"network {info['label']} seed {info['seed']}")
            elif event == "measure":
                if state["measures"] is None:
                    bar.update(task, completed=len(networks))
                    state["measures"] = bar.add_task("measures", total=None)
                bar.update(state["measures"], advance=1, description=f"{info['measure']} {info['layer']}")

        result = analyze_networks(networks, stimuli=stimuli, repeats=repeats, noise=noise, noise_level=noise_level,
                                  measures=names, snr_batches=snr_batches, bootstrap=bootstrap, seed=seed,
                                  title=title, progress=progress, group_by=axes)
    written = write_outputs(result, folder, overwrite=overwrite)
    table = Table(title="identification accuracy (nearest neighbour / reference), chance in brackets")
    for col in ("measure", *result["layers"]):
        table.add_column(col)
    for m, per_layer in result["identification"].items():
        cells = []
        for layer in result["layers"]:
            r = per_layer[layer]
            cells.append(f"{r['nn']['accuracy']:.2f} ({r['nn']['chance']:.2f}) / "
                         f"{r['reference']['accuracy']:.2f} ({r['reference']['chance']:.2f})")
        table.add_row(m, *cells)
    console.print(table)
    md = next((p for p in written if Path(p).name == "representations.md"), None)
    console.print(f"written: {md if md is not None else folder}")


# -- adapt --------------------------------------------------------------------------------------
def _adapt_mode(train_source: bool, gallery: Optional[Path], checkpoint: Optional[Path], out: Optional[Path]) -> str:
    """Which of adapt's three jobs the flags ask for, refusing mixtures (one sentence)."""
    if train_source and gallery is not None:
        raise ConfigError("--train-source and --gallery are separate jobs; give one of them")
    if train_source:
        if checkpoint is None:
            raise ConfigError("--train-source needs --checkpoint PATH, the file to write the source model to")
        if out is not None:
            raise ConfigError("--train-source writes only --checkpoint; --out belongs to an adaptation run")
        return "train"
    if gallery is not None:
        if out is not None or checkpoint is not None:
            raise ConfigError("--gallery writes only the gallery PNG; leave out --out and --checkpoint")
        return "gallery"
    if checkpoint is None or out is None:
        raise ConfigError("an adaptation run needs --checkpoint (a source model from --train-source) and --out DIR")
    return "adapt"


def _adapt_write_png(path: Path, overwrite: bool, draw: Any) -> None:
    _check_path_text(path, "--gallery")
    files.check_writable(path, "--gallery")
    if path.exists() and not overwrite:
        raise ConfigError(f"file {str(path)!r} already exists; pass --overwrite to replace it")
    files.atomic_write_bytes(path, draw)


def _adapt_counts(batch_size: int, n_test: int | None, n_train: int | None, epochs: int) -> None:
    """adapt's count flags, bounded as a run's counts are."""
    from .training.config import check_count

    check_count(batch_size, "--batch-size")
    check_count(epochs, "--epochs")
    for value, flag in ((n_test, "--n-test"), (n_train, "--n-train")):
        if value is not None:
            check_count(value, flag)


def _adapt_sizes(n: int | None, available: int, batch_size: int | None, flag: str = "--n-test",
                 split: str = "test") -> None:
    """``--n-test`` / ``--n-train`` within the data set, and a test batch no larger than its test
    split (a batch larger than ``--n-test`` is all of those images)."""
    if n is not None and n > available:
        raise ConfigError(f"invalid {flag} {n}: it must be at most {available}, the {split} images of fashion-mnist")
    if batch_size is not None and batch_size > available:
        raise ConfigError(f"invalid --batch-size {batch_size}: it must be at most {available}, the test images of "
                          "fashion-mnist")


@app.command("adapt")
def adapt_command(
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Source model: written by --train-source, only read by an adaptation run.")] = None,
    train_source: Annotated[bool, typer.Option("--train-source", help="Train the BatchNorm CNN source model on clean Fashion-MNIST and write it to --checkpoint.")] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="--train-source: epochs over the 60k clean training images.")] = 3,
    channels: Annotated[str, typer.Option("--channels", help="--train-source: channels of the three conv blocks.")] = "32,64,64",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: source, norm, tent, nhl (or all).")] = "all",
    corruptions: Annotated[str, typer.Option("--corruptions", help="Comma-separated corruption names, or all.")] = "all",
    severity: Annotated[str, typer.Option("--severity", help="Severities 1..5: one, a comma-separated list, or all.")] = "5",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Test batch size (TENT's recipe: 128).")] = 128,
    episodic: Annotated[bool, typer.Option("--episodic", help="Reset to the source model before every batch.")] = False,
    n_test: Annotated[Optional[int], typer.Option("--n-test", help="Use only the first N test images (default: all 10000).")] = None,
    n_train: Annotated[Optional[int], typer.Option("--n-train", help="--train-source: use only the first N training images (default: all 60000).")] = None,
    gallery: Annotated[Optional[Path], typer.Option("--gallery", help="Write a corruption x severity grid of one test image to this PNG, then stop.")] = None,
    data_dir: DataDirOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the corruptions (and of --train-source's weights and order).")] = 0,
    threads: ThreadsOpt = 1,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write results.json, table.md and errors.png here.")] = None,
    overwrite: OverwriteOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Test-time adaptation on Fashion-MNIST-C: train a source model (--train-source), draw the
    corruption gallery (--gallery), or measure source / norm / TENT / NHL error per corruption
    and severity (--checkpoint + --out)."""
    import datetime
    import torch

    from . import adapt as adapt_mod
    from .reporting import adapt as adapt_report

    mode = _adapt_mode(train_source, gallery, checkpoint, out)
    method_names = adapt_mod.parse_methods(methods)
    corruption_names = adapt_mod.parse_corruptions(corruptions)
    severities = adapt_mod.parse_severities(severity)
    if isinstance(batch_size, bool) or batch_size < 2:
        raise ConfigError(f"invalid --batch-size {batch_size}: it must be at least 2 (BatchNorm statistics of one sample are degenerate)")
    if n_test is not None and n_test < 2:
        raise ConfigError(f"invalid --n-test {n_test}: it must be at least 2")
    if n_train is not None and n_train < 2:
        raise ConfigError(f"invalid --n-train {n_train}: it must be at least 2")
    if epochs < 1:
        raise ConfigError(f"invalid --epochs {epochs}: it must be at least 1")
    _adapt_counts(batch_size, n_test, n_train, epochs)
    try:
        channel_list = [int(c) for c in channels.split(",")]
    except ValueError:
        channel_list = []
    if len(channel_list) != 3 or min(channel_list) < 1:
        raise ConfigError(f"invalid --channels {channels!r}: give three positive whole numbers, e.g. 32,64,64")
    n_threads = _threads(threads)
    if mode == "train":
        _check_checkpoint(checkpoint, overwrite)
    elif mode == "adapt":
        _check_path_text(checkpoint, "--checkpoint")
        _check_out(out, overwrite)
    _on_interrupt(_NO_RESUME)
    console = _console()
    previous_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        ds = data_mod.load("fashion-mnist", data_dir=data_dir, normalize=False)
        if mode == "gallery":
            image = ds.x_test[0]
            _adapt_write_png(gallery, overwrite, lambda fh: adapt_report.gallery(
                image, fh, seed=seed, title=f"Fashion-MNIST-C, test image 0, seed {seed}"))
            console.print(f"wrote {gallery}")
            return
        if mode == "train":
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=_console(stderr=True), disable=quiet, transient=True) as bar:
                task = bar.add_task("training the source model", total=None)
                _adapt_sizes(n_train, len(ds.x_train), None, "--n-train", "training")
                xt, yt = (ds.x_train, ds.y_train) if n_train is None else (ds.x_train[:n_train], ds.y_train[:n_train])
                model = adapt_mod.train_source(
                    xt, yt, channels=channel_list, epochs=epochs, seed=seed,
                    progress=lambda step, steps, loss: bar.update(task, completed=step, total=steps))
            from .adapt.source import error_rate
            clean = error_rate(model, ds.x_test, ds.y_test)
            adapt_mod.save_source(checkpoint, model, meta={"epochs": epochs, "seed": seed, "clean_test_error": clean,
                                                           "data": "fashion-mnist", "n_train": len(xt)})
            console.print(f"source model: clean test error {100 * clean:.2f}% · checkpoint: {checkpoint}")
            return
        model, meta = adapt_mod.load_source(checkpoint)
        x, y = ds.x_test, ds.y_test
        _adapt_sizes(n_test, len(x), batch_size)
        if n_test is not None:
            x, y = x[:n_test], y[:n_test]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=_console(stderr=True), disable=quiet, transient=True) as bar:
            task = bar.add_task("adapting", total=None)
            result = adapt_mod.benchmark(
                model, x, y, method_names, corruption_names, severities, batch_size=batch_size, episodic=episodic,
                seed=seed, progress=lambda what, done, total: bar.update(task, description=what, completed=done, total=total))
    finally:
        torch.set_num_threads(previous_threads)
    result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["command"] = "beyondbp " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["adapt"] else "beyondbp adapt"
    result["source"] = {"checkpoint": str(checkpoint), **meta}
    title = (f"Fashion-MNIST-C: test-time adaptation ({'episodic' if episodic else 'online'}, "
             f"batch {batch_size}, {len(x)} images)")
    table_md = f"# {title}\n\n{result['date']} · `{result['command']}`\n\n" + adapt_report.markdown_table(result)
    out = Path(out)
    tmp = files.temporary_directory(out)
    try:
        text = json.dumps(jsonable.plain(result), indent=2) + "\n"
        files.atomic_write_bytes(tmp / "results.json", lambda fh: fh.write(text.encode("utf-8")))
        files.atomic_write_bytes(tmp / "table.md", lambda fh: fh.write(table_md.encode("utf-8")))
        files.atomic_write_bytes(tmp / "errors.png", lambda fh: adapt_report.plot_errors(result, fh, title=title))
        files.publish_directory(tmp, out, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for s in severities:
        table = Table(title=f"severity {s}: mean top-1 error over {len(corruption_names)} corruptions")
        for col in ("method", "mean error", "ms / batch"):
            table.add_column(col, justify="right")
        for m in method_names:
            table.add_row(m, f"{100 * result['mean'][m][s]:.2f}%", f"{1000 * result['seconds_per_batch'][m]:.1f}")
        console.print(table)
    console.print(f"wrote {out / 'results.json'} · {out / 'table.md'} · {out / 'errors.png'}")


# -- entry point --------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: What an interrupted command without resume says (compare, continual, adapt, analyze).
_NO_RESUME = "nothing was written (results are written only at the end); run the command again to start over"

#: The line an interrupted command prints (see :func:`_on_interrupt`) and the command's words.
_INTERRUPT: dict[str, Any] = {"hint": None, "args": []}


def _on_interrupt(hint: Any) -> None:
    """What this command prints after ``interrupted: `` when Ctrl-C or SIGTERM stops it (how
    to resume, what was kept): text, or a function that returns it then."""
    _INTERRUPT["hint"] = hint


def _same_command() -> str:
    """The command being run, as a shell line."""
    return shlex.join(["beyondbp", *_INTERRUPT["args"]])


def _exit_interrupted(stopping: interrupts.Stopping) -> None:
    """One line on stderr, then exit 128 + the signal (130 Ctrl-C, 143 SIGTERM)."""
    hint = _INTERRUPT["hint"]
    try:
        hint = hint() if callable(hint) else hint
    except Exception:  # the hint must never hide the interruption
        hint = None
    print(f"interrupted: {hint}" if hint else "interrupted", file=sys.stderr)
    sys.exit(stopping.status)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turn errors into one line and exit status 2; Ctrl-C
    and SIGTERM into one line and exit status 130 / 143."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args == ["study"]:  # a bare command group shows its help, not a usage error
        args = [*args, "--help"]
    debug = "--debug" in args
    _INTERRUPT.update(hint=None, args=args)
    with interrupts.Stopping() as stopping:
        _main(args, debug, stopping)


def _main(args: list[str], debug: bool, stopping: interrupts.Stopping) -> None:
    try:
        rv = app(args=args, prog_name="beyondbp", standalone_mode=False)
    except _USAGE_ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(2)
    except _CLICK_ERRORS as exc:
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code or 2)
    except _ABORTS:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except BeyondBPError as exc:
        if debug:
            raise
        for problem in getattr(exc, "problems", None) or [str(exc)]:  # ConfigErrors: one line each
            print(f"error: {_one_line(problem)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _exit_interrupted(stopping)
    except Exception as exc:
        if debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    if stopping.signum is not None or rv == 130:  # typer returns 130 for a KeyboardInterrupt
        _exit_interrupted(stopping)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()


# -- continual learning -------------------------------------------------------------------------
CONTINUAL_FILES = ("results.json", "table.md", "matrix.png")


def _continual_list(text: str, flag: str, known: list[str]) -> list[str]:
    return options_mod.parse_names(text, {"--methods": "method", "--rules": "rule"}[flag], known)


def _continual_method_options(items: list[str] | None, methods: list[str]) -> dict[str, dict[str, Any]]:
    """``--method-opt METHOD:key=value`` (or ``key=value`` for every listed method)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items or []:
        key, value = parse_assignment(item, "--method-opt")
        method, sep, name = key.partition(":")
        targets = [method] if sep else list(methods)
        if sep and method not in out:
            raise ConfigError(f"--method-opt {item!r} names method {method!r}, which is not among --methods")
        for m in targets:
            out[m][name if sep else key] = value
    return out


def _continual_write(out: Path, results: list[dict[str, Any]], title: str, overwrite: bool) -> list[Path]:
    """results.json, table.md and matrix.png into ``out``, all or nothing (temp dir renamed)."""
    from .reporting.continual import markdown_table, plot_matrices

    _check_out(out, overwrite)
    tmp = files.temporary_directory(out)
    try:
        text = json.dumps(jsonable.plain(results), indent=1)  # NaN (unmeasured entries) -> null
        files.atomic_write_bytes(tmp / "results.json", lambda fh: fh.write(text.encode("utf-8")))
        table = markdown_table(results, title)
        files.atomic_write_bytes(tmp / "table.md", lambda fh: fh.write(table.encode("utf-8")))
        plot_matrices(results, tmp / "matrix.png", title)
        files.publish_directory(tmp, out, replace=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / name for name in CONTINUAL_FILES]


def _continual_counts(epochs_per_task: int, batch_size: int, train_size: int | None, test_size: int | None) -> None:
    """continual's count flags, bounded as a run's counts are (before any data is loaded)."""
    from .training.config import check_count

    check_count(epochs_per_task, "--epochs-per-task")
    check_count(batch_size, "--batch-size")
    for value, flag in ((train_size, "--train-size"), (test_size, "--test-size")):
        if value is not None:
            check_count(value, flag, "a whole number of at least 1 (default: all samples)")


@app.command()
def continual(
    tasks: Annotated[str, typer.Option("--tasks", help="FAMILY[:N]: permuted-fashion-mnist:10, permuted-mnist1d:10, split-fashion-mnist:task or split-fashion-mnist:class.")] = "permuted-fashion-mnist:10",
    methods: Annotated[str, typer.Option("--methods", "--method", help="Comma-separated methods: finetune, ewc, gpm, hlop, multitask.")] = "finetune,hlop",
    rules: Annotated[str, typer.Option("--rules", "--rule", help="Comma-separated rules; every method runs under every rule.")] = "backprop",
    model: Annotated[str, typer.Option("--model", help="Model name (mlp: 800-800 without biases unless --model-opt says otherwise).")] = "mlp",
    model_opt: Annotated[Optional[list[str]], typer.Option("--model-opt", help="Model option KEY=VALUE (repeatable).")] = None,
    rule_opt: Annotated[Optional[list[str]], typer.Option("--rule-opt", help="Rule option KEY=VALUE or RULE:KEY=VALUE (repeatable).")] = None,
    method_opt: Annotated[Optional[list[str]], typer.Option("--method-opt", help="Method option METHOD:KEY=VALUE, e.g. ewc:lam=10 (repeatable).")] = None,
    epochs_per_task: Annotated[int, typer.Option("--epochs-per-task", help="Epochs over each task's training set.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Minibatch size.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="SGD learning rate.")] = 0.1,
    train_size: Annotated[Optional[int], typer.Option("--train-size", help="Training samples per task (seeded subset; default all).")] = None,
    test_size: Annotated[Optional[int], typer.Option("--test-size", help="Test samples per task (seeded subset; default all).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Directory of the data set's files.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the model init, permutations, shuffles and methods.")] = 0,
    threads: ThreadsOpt = 1,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default results/continual-<family>).")] = None,
    overwrite: OutOverwriteOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-task progress lines.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Continual learning: train a task sequence with each method under each rule; print ACC, BWT
    and FWT, and write the accuracy matrices (results.json, table.md, matrix.png)."""
    from .continual import METHODS, build_sequence, make_method, parse_tasks, run_method
    from .continual.methods import build_model, check_budget, default_model_options

    family, n_tasks, setting = parse_tasks(tasks)
    method_names = _continual_list(methods, "--methods", list(METHODS))
    rule_names = _continual_list(rules, "--rules", rules_mod.names())
    model_options = parse_assignments(model_opt, "--model-opt")
    rule_options = split_rule_options(rule_opt, rule_names)
    method_options = _continual_method_options(method_opt, method_names)
    n_threads = _threads(threads)
    if seed < 0:
        raise ConfigError(f"invalid --seed {seed}: it must be a whole number of at least 0")
    _continual_counts(epochs_per_task, batch_size, train_size, test_size)
    # every method/rule pair is checked before anything trains
    for m in method_names:
        for r in rule_names:
            rule_obj = rules_mod.get(r, **rule_options[r])
            make_method(m, **method_options[m]).check_rule(rule_obj.name)
    target = out if out is not None else Path("results") / f"continual-{family}-{setting}"
    _check_out(target, overwrite)
    _on_interrupt(_NO_RESUME)
    if n_threads is not None:
        import torch

        torch.set_num_threads(n_threads)
    seq = build_sequence(tasks, seed=seed, train_size=train_size, test_size=test_size, data_dir=data_dir,
                         joint="multitask" in method_names)  # refused here when it cannot fit in memory
    check_budget(seq, epochs_per_task, batch_size)
    build_model(seq, model, default_model_options(model, model_options))
    console = _console()
    err = _console(stderr=True)
    console.print(seq.describe())
    results: list[dict[str, Any]] = []
    with _Ticker(err, quiet) as tick:
        for r in rule_names:
            for m in method_names:
                def progress(t: int, row: list[float], m: str = m, r: str = r) -> None:
                    if not quiet:
                        tick.progress.console.print(f"{m}/{r}: after task {t}: " + " ".join(f"{v:.1f}" for v in row))

                def on_step(info: dict[str, Any], m: str = m, r: str = r) -> None:
                    where = "all tasks" if info["task"] is None else f"task {info['task'] + 1} of {info['tasks']}"
                    tick(f"{m}/{r} {where}, steps", info["step"], info["steps"])

                results.append(run_method(
                    seq, make_method(m, **method_options[m]), rule=r, rule_options=rule_options[r], model=model,
                    model_options=model_options, epochs_per_task=epochs_per_task, batch_size=batch_size, lr=lr,
                    seed=seed, progress=progress, on_step=on_step,
                ))
                results[-1]["method_options"] = method_options[m]
                results[-1]["rule_options"] = rule_options[r]
    title = f"Continual learning: {seq.describe()}, model {model}, seed {seed}"
    written = _continual_write(target, results, title, overwrite)
    table = Table(title=f"{family} ({setting}-incremental), {n_tasks} tasks")
    for col in ("method", "rule", "ACC %", "BWT pts", "FWT pts", "seconds"):
        table.add_column(col, justify="left" if col in ("method", "rule") else "right")

    def cell(v: float | None) -> str:
        return "—" if v is None or v != v else f"{v:.2f}"  # None or NaN: not measured

    for res in results:
        method_cell = res["method"]
        if res.get("diverged"):
            task = res["diverged_at_task"]
            method_cell += f" [diverged at {f'task {task}, ' if task is not None else ''}step {res['diverged_at_step']}]"
        table.add_row(method_cell, res["rule"], cell(res["acc"]), cell(res["bwt"]), cell(res["fwt"]),
                      f"{res['seconds']:.0f}")
    console.print(table)
    console.print(f"written: {', '.join(str(p) for p in written)}")
    _exit_if_continual_diverged(results)


def _exit_if_continual_diverged(results: list[dict[str, Any]]) -> None:
    """Exit status 3, as ``train`` and ``compare``, when a method/rule pair diverged."""
    bad = [f"{r['method']}/{r['rule']}" for r in results if r.get("diverged")]
    if bad:
        print(f"error: diverged: {', '.join(bad)} (exit status {EXIT_DIVERGED})", file=sys.stderr)
        raise SystemExit(EXIT_DIVERGED)
