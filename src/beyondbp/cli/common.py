"""What every command shares: the app, exit codes, the console, parsing of KEY=VALUE and list
flags, checks of output paths, progress display and the option types of the run settings.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console

from .. import files
from .._lazy import lazy
from ..errors import ConfigError
from .settings import setting_type

# imported on first use, so that --help and usage errors answer without importing torch
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
_NO_SUCH_OPTION = _click_exceptions("NoSuchOption")


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
        set_once(out, key, value, flag)
    return out


def set_once(table: dict[str, Any], key: str, value: Any, flag: str, owner: str | None = None) -> None:
    """``table[key] = value``, refused (:class:`ConfigError`) when ``key`` is already set: an option
    given twice (to ``owner``, e.g. ``"rule 'fa'"``, when named) used to have its last value win silently."""
    if key in table:
        where = f" for {owner}" if owner else ""
        raise ConfigError(f"{flag} {key} is given twice{where} ({json.dumps(table[key])} and {json.dumps(value)}); "
                          "give each option once")
    table[key] = value


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
            set_once(per_rule[rule], key, value, "--rule-opt", f"rule {rule!r}")
            continue
        takers = [r for r in rules if key in rules_mod.rule_class(r).option_names()]
        if not takers:
            raise ConfigError(f"no rule among {', '.join(rules)} has an option {key!r} (from --rule-opt {item!r})")
        for r in takers:
            set_once(per_rule[r], key, value, "--rule-opt", f"rule {r!r}")
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


def write_outputs(out: Path, results: list[Any], title: str, overwrite: bool = False) -> list[Path]:
    """Write results.json, table.md and curves.png into the directory ``out``, all or nothing:
    into a temporary sibling first, renamed to ``out`` at the end. An existing non-empty ``out``
    is replaced only with ``overwrite``."""
    out = Path(out)
    _check_out(out, overwrite)
    table = f"# {title}\n\n" + report.render_markdown(report.comparison_table(results))
    spiking = [r for r in results if getattr(r, "spikes", None)]
    if spiking:  # spiking models: firing rate and silent neurons per layer, one line per rule
        table = table.rstrip("\n") + "\n\n" + "".join(f"- {r.rule}: {_spikes_line(r)}\n" for r in spiking)
    contents = {
        "results.json": lambda path: report.write_json(results, path),
        "table.md": table,
        "curves.png": lambda path: report.plot_curves(results, path, title=title),
    }
    return files.write_directory(out, contents, overwrite=overwrite)


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
    files.check_folder_exists(path, "--checkpoint")
    if Path(path).exists() and not overwrite:
        raise ConfigError(f"checkpoint {str(path)!r} already exists; pass --overwrite to replace it")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _timed(n: int) -> str:
    """How a time per step was measured: the median of ``n`` timed steps, or (too short a run to
    time any step apart from the warm-up and FLOP-counted ones) from those untimed steps."""
    return f"median of {_count(n, 'timed step')}" if n else "from untimed steps: too few steps to time"


def _diverged_line(result: Any) -> str:
    step = result.diverged_at_step
    where = f"at step {step}" if step is not None else "during training"
    line = f"{result.rule}: run diverged {where} (training loss non-finite or over 100x max(first loss, log classes))"
    if (result.config or {}).get("checkpoint"):
        line += "; no checkpoint was written"
    return line


# -- shared options (the run settings' flags are generated from their declarations: cli/settings.py) --
ThreadsOpt = setting_type("threads")
DataDirOpt = setting_type("data_dir")
ModelOpt = Annotated[str, typer.Option("--model", help="Model name (`beyondbp models` lists them and their options).")]
DataOpt = Annotated[str, typer.Option("--data", help="Data set name (`beyondbp data` lists them and their options).")]
RuleOptOpt = Annotated[Optional[list[str]], typer.Option("--rule-opt", help="Rule option KEY=VALUE (JSON values), repeatable.")]
ModelOptOpt = Annotated[Optional[list[str]], typer.Option("--model-opt", help="Model option KEY=VALUE, e.g. widths=[512,512]; repeatable.")]
DataOptOpt = Annotated[Optional[list[str]], typer.Option("--data-opt", help="Data option KEY=VALUE, repeatable.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
NLayerOpt = Annotated[Optional[int], typer.Option("--n-layer", help="gpt: number of Transformer blocks (default 4).")]
NHeadOpt = Annotated[Optional[int], typer.Option("--n-head", help="gpt: attention heads (default 4).")]
DModelOpt = Annotated[Optional[int], typer.Option("--d-model", help="gpt: model width (default 128).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty --out directory (and an existing --checkpoint file).")]
OutOverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty --out directory; everything in it is deleted.")]


def _exit_if_diverged(results: list[Any]) -> None:
    bad = list(dict.fromkeys(r.rule for r in results if r.diverged))
    if bad:
        print(f"error: diverged: {', '.join(bad)} (exit status {EXIT_DIVERGED})", file=sys.stderr)
        raise SystemExit(EXIT_DIVERGED)


def _spikes_line(result: Any) -> str:
    """Per spiking layer: mean firing rate (spikes per neuron per step) and silent neurons."""
    parts = [
        f"{name} rate {stats['rate']:.3f}, silent {100 * stats['silent']:.1f}%" + _liquid_part(stats)
        for name, stats in result.spikes.items()
    ]
    return "spikes on the test set (per neuron per step; silent: never fired): " + " · ".join(parts)


def _liquid_part(stats: dict[str, Any]) -> str:
    """A liquid's measurements (model lsm): branching factor and rates per population."""
    if "branching_factor" not in stats:
        return ""

    def num(key: str, fmt: str) -> str:
        value = stats.get(key)
        return "n/a" if value is None or value != value else format(value, fmt)

    return (f", branching factor {num('branching_factor', '.3f')}, excitatory {num('rate_exc_hz', '.1f')} Hz, "
            f"inhibitory {num('rate_inh_hz', '.1f')} Hz, input {num('rate_input_hz', '.1f')} Hz")


def _sparsity_line(result: Any) -> str:
    sp = result.sparsity
    return (
        f"SET sparsity (ε={sp['epsilon']:g}, ζ={sp['zeta']:g}): density {100 * sp['density']:.2f}% of sparse-layer "
        f"weights · active parameters {result.n_active_params:,} of {result.n_params:,} · FLOPs/step executed "
        f"{result.flops_per_step:,} (dense kernels, masks) · effective {result.effective_flops_per_step:,} "
        "(products of sparse weights scaled by density)"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


# -- entry point --------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_message(exc: BaseException) -> str:
    """The one line for a usage error. An unknown option names itself and the command's
    ``--help``, and suggests an option only when one is spelt nearly the same (``--epoch`` ->
    ``--epochs``; click's own list of "possible options" named unrelated ones)."""
    if not isinstance(exc, _NO_SUCH_OPTION):
        return _one_line(exc.format_message())  # type: ignore[attr-defined]
    name = str(exc.option_name)  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "beyondbp"
    known = [o for p in (ctx.command.get_params(ctx) if ctx is not None else [])
             for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())) if o.startswith("-")]
    guess = _close_option(name, known)
    hint = f" (did you mean {guess}?)" if guess else ""
    return _one_line(f"{where} has no option {name}{hint}; see '{where} --help' for the options it takes")


def _close_option(name: str, known: list[str]) -> str | None:
    """The known option spelt nearly like ``name`` (underscores read as dashes), or the longest
    one that ``name`` starts with (``--output`` -> ``--out``), if any."""
    def bare(option: str) -> str:
        return option.lstrip("-").replace("_", "-").lower()

    by_bare = {bare(o): o for o in known if o.startswith("--") == name.startswith("--")}
    if bare(name) in by_bare:
        return by_bare[bare(name)]
    close = difflib.get_close_matches(bare(name), list(by_bare), n=1, cutoff=0.8)
    if close:
        return by_bare[close[0]]
    longer = [b for b in by_bare if len(b) >= 3 and bare(name).startswith(b)]
    return by_bare[max(longer, key=len)] if longer else None  # --output -> --out


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
