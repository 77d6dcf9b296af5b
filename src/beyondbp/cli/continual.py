"""``beyondbp continual``: continual learning over a sequence of tasks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .. import files
from .._lazy import lazy
from ..errors import ConfigError
from .common import (
    _NO_RESUME,
    EXIT_DIVERGED,
    DebugOpt,
    OutOverwriteOpt,
    ThreadsOpt,
    _check_out,
    _console,
    _on_interrupt,
    app,
    parse_assignment,
    parse_assignments,
    set_once,
    split_rule_options,
)
from .progress import _Ticker
from .settings import torch_threads

# imported on first use, so that --help and usage errors answer without importing torch
jsonable = lazy("beyondbp.jsonable")
options_mod = lazy("beyondbp.options")
rules_mod = lazy("beyondbp.rules")

# -- continual learning -------------------------------------------------------------------------
CONTINUAL_FILES = ("results.json", "table.md", "matrix.png")


def _continual_list(text: str, flag: str, known: list[str]) -> list[str]:
    return options_mod.parse_names(text, {"--methods": "method", "--rules": "rule"}[flag], known)


def _continual_method_options(items: list[str] | None, methods: list[str]) -> dict[str, dict[str, Any]]:
    """``--method-opt METHOD:key=value`` goes to that method; ``key=value`` to every listed method
    that declares the option ``key`` (at least one must), as compare's ``--rule-opt`` does."""
    from ..continual.methods import describe_options

    declared = {m: {row["name"] for row in describe_options(m)} for m in methods}
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items or []:
        key, value = parse_assignment(item, "--method-opt")
        method, sep, name = key.partition(":")
        if sep:
            if method not in out:
                raise ConfigError(f"--method-opt {item!r} names method {method!r}, which is not among --methods")
            set_once(out[method], name, value, "--method-opt", f"method {method!r}")
            continue
        takers = [m for m in methods if key in declared[m]]
        if not takers:
            raise ConfigError(f"no method among {', '.join(methods)} has an option {key!r} (from --method-opt {item!r})")
        for m in takers:
            set_once(out[m], key, value, "--method-opt", f"method {m!r}")
    return out


def _continual_write(out: Path, results: list[dict[str, Any]], title: str, overwrite: bool) -> list[Path]:
    """results.json, table.md and matrix.png into ``out``, all or nothing (temp dir renamed)."""
    from ..reporting.continual import markdown_table, plot_matrices

    _check_out(out, overwrite)
    contents = {
        "results.json": json.dumps(jsonable.plain(results), indent=1),  # NaN (unmeasured entries) -> null
        "table.md": markdown_table(results, title),
        "matrix.png": lambda path: plot_matrices(results, path, title),
    }
    return files.write_directory(out, contents, overwrite=overwrite)


def _continual_counts(epochs_per_task: int, batch_size: int, train_size: int | None, test_size: int | None) -> None:
    """continual's count flags, bounded as a run's counts are (before any data is loaded)."""
    from ..training.config import check_count

    check_count(epochs_per_task, "--epochs-per-task")
    check_count(batch_size, "--batch-size")
    for value, flag in ((train_size, "--train-size"), (test_size, "--test-size")):
        if value is not None:
            check_count(value, flag, "a whole number of at least 1 (default: all samples)")


@app.command()
def continual(
    tasks: Annotated[str, typer.Option("--tasks", help="FAMILY[:N]: permuted-fashion-mnist:10, permuted-mnist1d:10, split-fashion-mnist:task or "
        "split-fashion-mnist:class.")] = "permuted-fashion-mnist:10",
    methods: Annotated[str, typer.Option("--methods", "--method", help="Comma-separated methods: finetune, ewc, gpm, hlop, "
        "multitask.")] = "finetune,hlop",
    rules: Annotated[str, typer.Option("--rules", "--rule", help="Comma-separated rules; every method runs under every rule.")] = "backprop",
    model: Annotated[str, typer.Option("--model", help="Model name (mlp: 800-800 without biases unless --model-opt says otherwise).")] = "mlp",
    model_opt: Annotated[Optional[list[str]], typer.Option("--model-opt", help="Model option KEY=VALUE (repeatable).")] = None,
    rule_opt: Annotated[Optional[list[str]], typer.Option("--rule-opt", help="Rule option KEY=VALUE or RULE:KEY=VALUE (repeatable).")] = None,
    method_opt: Annotated[Optional[list[str]], typer.Option("--method-opt", help="Method option METHOD:KEY=VALUE, e.g. ewc:lam=10, or KEY=VALUE for "
        "every listed method that has it (repeatable; values as JSON; an unknown KEY is answered with the method's options).")] = None,
    epochs_per_task: Annotated[int, typer.Option("--epochs-per-task", help="Epochs over each task's training set (the default 1 "
        "suits the Fashion-MNIST families; permuted-mnist1d needs more, e.g. 15).")] = 1,
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
    and FWT, and write the accuracy matrices (results.json, table.md, matrix.png).

    The data set comes with --tasks (Fashion-MNIST or MNIST-1D; there is no --data). The defaults
    (1 epoch per task, batch 64, lr 0.1, an 800-800 MLP) are sized for the Fashion-MNIST families,
    whose tasks hold 60,000 (permuted) or 12,000 (split) training images: 938 or 188 steps per
    task. A permuted-mnist1d task holds 4,000 samples, 63 steps per epoch, where one epoch leaves
    the MLP far from trained (finetune on 2 tasks: ACC 25 %, chance 10 %): give it more epochs,
    e.g. --epochs-per-task 15, about the steps of one Fashion-MNIST epoch (ACC 48 %, task 0 at
    53 % just after training instead of 28 %)."""
    from ..continual import METHODS, build_sequence, make_method, parse_tasks, run_method
    from ..continual.methods import build_model, check_budget, default_model_options
    from ..reporting.continual import grouped_notes

    family, n_tasks, setting = parse_tasks(tasks)
    method_names = _continual_list(methods, "--methods", list(METHODS))
    rule_names = _continual_list(rules, "--rules", rules_mod.names())
    model_options = parse_assignments(model_opt, "--model-opt")
    rule_options = split_rule_options(rule_opt, rule_names)
    method_options = _continual_method_options(method_opt, method_names)
    n_threads = torch_threads(threads)
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
    for note, pairs in grouped_notes(results):
        console.print(f"note ({', '.join(pairs)}): {note}", markup=False, highlight=False)
    console.print(f"written: {', '.join(str(p) for p in written)}")
    _exit_if_continual_diverged(results)


def _exit_if_continual_diverged(results: list[dict[str, Any]]) -> None:
    """Exit status 3, as ``train`` and ``compare``, when a method/rule pair diverged."""
    bad = [f"{r['method']}/{r['rule']}" for r in results if r.get("diverged")]
    if bad:
        print(f"error: diverged: {', '.join(bad)} (exit status {EXIT_DIVERGED})", file=sys.stderr)
        raise SystemExit(EXIT_DIVERGED)
