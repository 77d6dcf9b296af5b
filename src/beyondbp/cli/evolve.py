"""``beyondbp evolve``: plasticity found by evolution (Miconi, ICML 2023) on the two-stimulus
task family, DMS and DNMS withheld; the non-plastic control with ``--control``.

    beyondbp evolve --population 64 --generations 200 --seed 0 --control --workers 2 --out DIR
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .. import files
from .._lazy import lazy
from ..errors import ConfigError
from .common import _NO_RESUME, DebugOpt, OutOverwriteOpt, _check_out, _console, _count, _on_interrupt, app
from .progress import _Ticker

jsonable = lazy("beyondbp.jsonable")

#: Trials of a lifetime before its plasticity starts (PlasticRNNConfig.plastic_from).
_BEFORE_PLASTICITY = 31


def _tasks(text: str) -> tuple[str, ...]:
    """``--train-tasks``: ``all`` (the 12 training tasks) or comma-separated names."""
    from ..evolution.tasks import TRAINING_TASKS

    if text.strip() == "all":
        return TRAINING_TASKS
    names = tuple(t.strip() for t in text.split(","))
    if len(set(names)) != len(names):
        raise ConfigError(f"--train-tasks names a task twice in {text!r}; give each once, or all")
    return names


def _at_least(value: int, least: int, flag: str, what: str = "") -> None:
    if value < least:
        raise ConfigError(f"invalid {flag} {value}: it must be a whole number of at least {least}{what}")


def _finite(value: float, flag: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"invalid {flag} {value}: it must be a finite number")


@app.command()
def evolve(
    population: Annotated[int, typer.Option("--population", help="Members per generation (even: antithetic pairs).")] = 64,
    generations: Annotated[int, typer.Option("--generations", help="Generations of the evolution strategy.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initial parameters, the noise, tasks and stimuli.")] = 0,
    control: Annotated[bool, typer.Option("--control", help="Also evolve the non-plastic control (plasticity "
        "coefficients 0, plasticity off) with the same budget.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Workers evaluating each generation's population "
        "(processes, or Ray tasks); the result does not depend on it.")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local (processes on this machine) or ray "
        "(needs beyondbp[ray]).")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: a local Ray "
        "started and stopped here).")] = None,
    trials: Annotated[int, typer.Option("--trials", help="Trials per lifetime (the paper: 400).")] = 150,
    scored: Annotated[int, typer.Option("--scored", help="Last trials of a lifetime that are scored (the paper: 100).")] = 50,
    test_every: Annotated[int, typer.Option("--test-every", help="Generations between tests of the evolved "
        "parameters on the withheld task (0: only at the end).")] = 20,
    test_lifetimes: Annotated[int, typer.Option("--test-lifetimes", help="Fresh lifetimes per test.")] = 32,
    train_tasks: Annotated[str, typer.Option("--train-tasks", help="Comma-separated training tasks, or all "
        "(every task but dms and dnms).")] = "all",
    test_task: Annotated[str, typer.Option("--test-task", help="The withheld task tested.")] = "dms",
    sigma: Annotated[float, typer.Option("--sigma", help="Standard deviation of the mutations.")] = 0.03,
    lr: Annotated[float, typer.Option("--lr", help="Adam's learning rate on the ES gradient.")] = 0.01,
    init_alpha: Annotated[float, typer.Option("--init-alpha", help="Plasticity coefficients at birth (the paper: "
        "0.5, for lifetimes of 400 trials).")] = 0.5,
    task_schedule: Annotated[str, typer.Option("--task-schedule", help="halves (the authors': the two halves of "
        "the task list in alternate pairs of generations) or uniform (all training tasks every generation).")] = "halves",
    lr_cut_generation: Annotated[Optional[int], typer.Option("--lr-cut-generation", help="The generation at which "
        "Adam's rate is divided by --lr-cut-factor (the authors' NUMGENCUTLR; default: never).")] = None,
    lr_cut_factor: Annotated[float, typer.Option("--lr-cut-factor", help="What the rate is divided by at "
        "--lr-cut-generation (the authors': 5).")] = 5.0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default results/evolve-seed<SEED>).")] = None,
    overwrite: OutOverwriteOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or per-test lines.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Evolve the plastic network's innate weights and plasticity coefficients (and, with
    --control, the non-plastic control's weights) on the training tasks, test on the withheld
    task; write history.json (per generation loss and success, the tests, CPU seconds) and
    success.png (success rate per generation, per arm)."""
    from ..evolution.es import PRELOAD, ESConfig
    from ..evolution.plastic_rnn import PlasticRNNConfig
    from ..study.executors import check_workers, worker_pool

    _at_least(generations, 1, "--generations")
    _at_least(trials, _BEFORE_PLASTICITY + 1, "--trials", f" (more than the {_BEFORE_PLASTICITY} trials before plasticity starts)")
    if not 1 <= scored <= trials:
        raise ConfigError(f"invalid --scored {scored}: it must be between 1 and --trials ({trials})")
    _at_least(test_every, 0, "--test-every")
    _at_least(test_lifetimes, 1, "--test-lifetimes")
    _at_least(seed, 0, "--seed")
    for value, flag in ((sigma, "--sigma"), (lr, "--lr"), (init_alpha, "--init-alpha"), (lr_cut_factor, "--lr-cut-factor")):
        _finite(value, flag)
    if lr_cut_generation is not None and lr_cut_generation >= generations:
        raise ConfigError(f"invalid --lr-cut-generation {lr_cut_generation}: it must be below --generations "
                          f"({generations}), or left out for no cut")
    es = ESConfig(population=population, generations=generations, sigma=sigma, lr=lr, train_tasks=_tasks(train_tasks),
                  test_task=test_task, test_every=test_every, test_lifetimes=test_lifetimes, seed=seed,
                  task_schedule=task_schedule, lr_cut_generation=lr_cut_generation, lr_cut_factor=lr_cut_factor)
    networks = {arm: PlasticRNNConfig(trials=trials, scored_trials=scored, plastic=arm == "plastic",
                                           init_alpha=init_alpha)
                for arm in (["plastic", "control"] if control else ["plastic"])}
    check_workers(executor, workers, address)
    target = out if out is not None else Path("results") / f"evolve-seed{seed}"
    _check_out(target, overwrite)
    _on_interrupt(_NO_RESUME)
    import torch

    torch.set_num_threads(1)  # one thread per process, as each worker
    spread = executor != "local" or workers > 1
    pool_cm = (worker_pool(executor, workers, threads=1, address=address, preload=PRELOAD) if spread
               else contextlib.nullcontext())
    histories: dict[str, dict[str, Any]] = {}
    with _Ticker(_console(stderr=True), quiet) as tick, pool_cm as pool:
        for arm, network in networks.items():
            histories[arm] = _run_arm(arm, es, network, pool, tick, quiet)
    settings = {"population": population, "generations": generations, "seed": seed, "trials": trials, "scored": scored,
                "test_every": test_every, "test_lifetimes": test_lifetimes, "train_tasks": list(es.train_tasks),
                "test_task": test_task, "sigma": sigma, "lr": lr, "weight_decay": es.weight_decay,
                "task_schedule": task_schedule, "init_alpha": init_alpha,
                "lr_cut_generation": lr_cut_generation, "lr_cut_factor": lr_cut_factor}
    document = {"settings": settings, "network": networks["plastic"].to_dict(),
                "execution": {"executor": executor, "workers": workers, "address": address}, "arms": histories}
    written = _write(target, document, overwrite)
    _show(histories, test_task, written)


def _run_arm(arm: str, es: Any, network: Any, pool: Any, tick: Any, quiet: bool) -> dict[str, Any]:
    from ..evolution.es import evolve as run_evolution
    from ..evolution.es import to_dict

    def progress(g: int, info: dict[str, Any]) -> None:
        tick(f"{arm}: generations", g + 1, es.generations)
        if info["test"] is not None and not quiet:
            tick.progress.console.print(f"{arm} generation {g}: training loss {info['loss']:.3f}, success "
                                        f"{info['success']:.3f} | {es.test_task} test {info['test']:.3f}")

    return to_dict(run_evolution(es, network, progress, pool=pool))


def _write(target: Path, document: dict[str, Any], overwrite: bool) -> list[Path]:
    from ..reporting.evolution import plot_success

    s = document["settings"]
    title = (f"Evolved plasticity: population {s['population']}, {_count(s['generations'], 'generation')}, "
             f"{s['trials']} trials, seed {s['seed']}")
    contents: dict[str, Any] = {
        "history.json": json.dumps(jsonable.plain(document), indent=1),
        "success.png": lambda path: plot_success(document["arms"], path, title, s["test_task"]),
    }
    return files.write_directory(target, contents, overwrite=overwrite)


def _show(histories: dict[str, dict[str, Any]], test_task: str, written: list[Path]) -> None:
    console = _console()
    table = Table(title=f"success on the withheld task {test_task}")
    for col in ("arm", "last trials", "first trials", "training tasks", "CPU s"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm, h in histories.items():
        table.add_row(arm, f"{h['final_test_success']:.3f}", f"{h['final_test_early_success']:.3f}",
                      f"{h['success'][-1]:.3f}", f"{h['cpu_seconds']:.1f}")
    console.print(table)
    console.print(f"written: {', '.join(str(p) for p in written)}")
