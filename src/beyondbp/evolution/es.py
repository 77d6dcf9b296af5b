"""Evolution strategies over the plastic network's innate weights and plasticity coefficients.

The outer loop of Miconi's "Learning to acquire novel cognitive tasks with evolution,
plasticity and meta-meta-learning" (ICML 2023). Each generation draws ``population / 2`` noise
directions ``ε`` (standard normal) and lives one lifetime per member at ``θ + σ ε`` and at
``θ − σ ε`` (antithetic pairs share the task and the stimuli); the gradient of the expected loss
is estimated as

    ĝ = 1 / (population · σ) · Σ_i L_i ε_i

and applied with Adam (learning rate 0.01, weight decay 3e-4). ``θ`` is ``(W, α)``; ``α`` is
clipped at 0 before each generation. The non-plastic control (``plastic=False``) evolves ``W``
alone with ``α = 0`` and ``P`` kept at 0, with the same population and generations. Tasks are
sampled from the training set only (DMS and DNMS withheld). Everything is drawn from
generators seeded by ``seed``: the same arguments give the same result.

:func:`evaluate` is a pure function of its arguments, so a population can be split into chunks
and each chunk evaluated in another process (or Ray task) with the same result as in one piece.
:func:`evolve` spreads each generation over the study executors
(:func:`beyondbp.study.executors.worker_pool`: ``executor="local"`` processes or ``"ray"``
tasks), one chunk per worker; the evolution is identical, bit for bit, whichever executor and
number of workers (each member's lifetime is computed by the same batched kernels whatever the
chunk it is in; tests/test_evolved_plasticity.py checks 1 against 2 workers).

Compared with the authors' code (``code.py`` @ 54c57bd), line by line: the loss evolution
minimises (the mean squared error of the two response units to 0.1/0.9 over the response period,
averaged over the last scored trials; no activity penalty, which their code adds only under its
experimental internal modulation), the gradient ``Σ L_i σε_i / (population σ²)`` on the raw
losses (no fitness or rank shaping, no normalisation), σ, Adam's learning rate and weight decay
(Adam's L2 term, on ``W`` and ``α``), the clipping of ``α`` at 0, the antithetic pairs sharing
task and stimuli, and the task schedule (``task_schedule="halves"``: the tasks at even and at odd
positions of the task list in alternate pairs of generations; ``"uniform"`` draws from all 12
every generation, as this module did before) are theirs. The lifetime is theirs too
(:mod:`beyondbp.evolution.plastic_rnn`). What differs: the test of θ on DMS runs as separate
lifetimes every ``test_every`` generations instead of spending every tenth generation
(unmutated, no step) on it, so every generation takes a step; their optional cut of Adam's rate
(``NUMGENCUTLR``: divided by 5 at a given generation, off by default) is ``lr_cut_generation``
and ``lr_cut_factor``, off by default as theirs; every member is mutated (the
authors keep member 0 and its pair unmutated, to log the current θ: that pair contributes
nothing to their gradient); and the budget (the paper: population 500, 1000 generations,
lifetimes of 400 trials with the last 100 scored). In shorter lifetimes the plastic weights
have fewer trials to change before the scored ones: ``PlasticRNNConfig.init_alpha`` (the paper's
0.5) scales the plasticity coefficients at birth; at this budget a larger one did not raise
the DMS success (bench/README.md, "Evolved plasticity, the authors' schedule, a larger budget").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .plastic_rnn import PlasticRNNConfig, initial_parameters, lifetime, trial_stimuli
from .tasks import TASKS, TRAINING_TASKS, WITHHELD, check_tasks, task_index

__all__ = ["ESConfig", "Evolution", "antithetic_noise", "es_gradient", "evaluate", "evaluate_chunked", "evolve", "sample_tasks",
           "schedule_tasks", "test_lifetimes", "to_dict"]

#: What the forkserver of a local pool imports once (its workers then start warm).
PRELOAD = ["beyondbp.study.executors", "beyondbp.evolution.es"]
#: How the training tasks of a generation are chosen (:func:`schedule_tasks`).
TASK_SCHEDULES = ("halves", "uniform")


@dataclass(frozen=True)
class ESConfig:
    """The outer loop's settings; population, sigma and lr default to the paper's."""

    population: int = 500
    generations: int = 1000
    sigma: float = 0.03
    lr: float = 1e-2
    weight_decay: float = 3e-4
    train_tasks: tuple[str, ...] = TRAINING_TASKS
    test_task: str = "dms"
    test_every: int = 10            # generations between tests of θ on the test task (0: never)
    test_lifetimes: int = 16        # lifetimes of θ per test
    seed: int = 0
    task_schedule: str = "halves"   # "halves" (the authors'): alternate halves every 2 generations; "uniform"
    lr_cut_generation: int | None = None  # the generation at which Adam's rate is divided by lr_cut_factor (None: never)
    lr_cut_factor: float = 5.0      # the authors' NUMGENCUTLR cut divides by 5

    def __post_init__(self) -> None:
        if self.population < 2 or self.population % 2:
            raise ConfigError(f"population must be an even number of at least 2 (antithetic pairs), not {self.population}.")
        if not self.sigma > 0:
            raise ConfigError(f"sigma must be positive, not {self.sigma}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, not {self.lr}.")
        if self.generations < 0 or self.test_every < 0 or self.test_lifetimes < 1:
            raise ConfigError("generations and test_every must be at least 0, test_lifetimes at least 1.")
        if self.lr_cut_generation is not None and self.lr_cut_generation < 0:
            raise ConfigError(f"lr_cut_generation must be at least 0 (or None: never), not {self.lr_cut_generation}.")
        if math.isinf(self.lr_cut_factor):
            raise ConfigError(f"lr_cut_factor must be a finite number (it divides the rate), not {self.lr_cut_factor}.")
        if not self.lr_cut_factor >= 1:
            raise ConfigError(f"lr_cut_factor must be at least 1 (it divides the rate), not {self.lr_cut_factor}.")
        if self.task_schedule not in TASK_SCHEDULES:
            raise ConfigError(f"task_schedule must be one of {', '.join(TASK_SCHEDULES)}, not {self.task_schedule!r}.")
        names = check_tasks(self.train_tasks, "train_tasks")
        check_tasks([self.test_task], "test_task")
        leaked = sorted(set(names) & set(WITHHELD))
        if leaked:
            raise ConfigError(f"train_tasks must not contain the withheld tasks {', '.join(WITHHELD)}; found {', '.join(leaked)}.")


def antithetic_noise(shape: tuple[int, ...], population: int, generator: torch.Generator) -> Tensor:
    """Standard-normal directions ``(population, *shape)`` whose second half is the first half negated."""
    if population < 2 or population % 2:
        raise ConfigError(f"population must be an even number of at least 2 (antithetic pairs), not {population}.")
    half = torch.randn(population // 2, *shape, generator=generator)
    return torch.cat([half, -half])


def es_gradient(losses: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """The search-gradient estimate ``Σ_i L_i ε_i / (population · σ)`` of the loss's gradient at θ
    (``losses`` ``(P,)``, ``noise`` ``(P, *shape)`` standard normal)."""
    if not sigma > 0:
        raise ConfigError(f"sigma must be positive, not {sigma}.")
    if losses.shape[0] < 2:
        raise ConfigError(f"population must be at least 2, not {losses.shape[0]}.")
    return torch.tensordot(losses, noise, dims=1) / (losses.shape[0] * sigma)


def schedule_tasks(tasks: tuple[str, ...], generation: int, schedule: str = "halves") -> tuple[str, ...]:
    """The tasks a generation draws from. ``"uniform"``: all of ``tasks``. ``"halves"`` (the
    authors' code): the tasks at even positions of :data:`~beyondbp.evolution.tasks.TASKS` (and,
    01, 10, watchstim1, antiwatchstim1, nor) in generations 0, 1, 4, 5, …, those at odd positions
    (nand, anti01, anti10, watchstim2, antiwatchstim2, or) in generations 2, 3, 6, 7, …; all of
    ``tasks`` when ``tasks`` holds none of that generation's half."""
    if schedule not in TASK_SCHEDULES:
        raise ConfigError(f"task_schedule must be one of {', '.join(TASK_SCHEDULES)}, not {schedule!r}.")
    if schedule == "uniform":
        return tuple(tasks)
    names = list(TASKS)
    half = tuple(t for t in tasks if names.index(t) % 2 == (generation // 2) % 2)
    return half or tuple(tasks)


def sample_tasks(pairs: int, tasks: tuple[str, ...], generator: torch.Generator) -> list[str]:
    """One task per antithetic pair, uniformly from ``tasks``, repeated for the second half."""
    picks = torch.randint(0, len(tasks), (pairs,), generator=generator).tolist()
    chosen = [tasks[i] for i in picks]
    return chosen + chosen


def evaluate(weights: Tensor, alphas: Tensor, tasks: list[str], stimulus_seeds: list[int], noise_seed: int,
             config: PlasticRNNConfig) -> dict[str, Tensor]:
    """One lifetime per member (a pure function, to be mapped over processes or Ray): ``loss``
    and ``success`` over the scored trials and ``early_success`` over the trials before plasticity
    starts (``plastic_from``, at least the first), ``(B,)`` each: their difference is what the
    member learned within its lifetime."""
    if weights.shape[0] != len(tasks) or len(tasks) != len(stimulus_seeds):
        raise ConfigError("weights, tasks and stimulus_seeds must have one entry per member.")
    alphas = alphas if config.plastic else torch.zeros_like(alphas)
    out = lifetime(weights, alphas, task_index(tasks), trial_stimuli(stimulus_seeds, config.trials), noise_seed, config)
    early = out.correct[:, : max(config.plastic_from, 1)].float().mean(1)
    return {"loss": out.loss, "success": out.success, "early_success": early}


def test_lifetimes(weights: Tensor, alphas: Tensor, task: str, lifetimes: int, seed: int,
                   config: PlasticRNNConfig) -> dict[str, Tensor]:
    """:func:`evaluate` on ``lifetimes`` lifetimes of the unperturbed parameters on ``task``."""
    gen = torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, 2 ** 31 - 1, (lifetimes,), generator=gen).tolist()
    noise_seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen))
    w = weights.expand(lifetimes, -1, -1)
    a = alphas.expand(lifetimes, -1, -1)
    return evaluate(w, a, [task] * lifetimes, seeds, noise_seed, config)


@dataclass
class Evolution:
    """An evolution's outcome: the final ``weights`` and ``alphas``, per generation the mean
    training ``loss`` and ``success`` of the population, the tests of θ on the test task
    (``tests``: generation → mean success), the final test's success rates over the scored trials
    and over the trials before plasticity starts (``final_early``), and the CPU seconds.

    A fixed answer rule already gets 75 % of DMS right when it computes a task that agrees with
    DMS on three of the four stimulus pairs (``and``, ``nor``, ``anti01``, ``anti10``): learning
    within a lifetime shows as ``final_test`` above ``final_early``, not in ``final_test`` alone."""

    weights: Tensor
    alphas: Tensor
    loss: list[float] = field(default_factory=list)
    success: list[float] = field(default_factory=list)
    tests: dict[int, float] = field(default_factory=dict)
    final_test: list[float] = field(default_factory=list)
    final_early: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        final = sum(self.final_test) / max(len(self.final_test), 1)
        early = sum(self.final_early) / max(len(self.final_early), 1)
        return {"final_test_success": final, "final_test_early_success": early, "tests": self.tests, "cpu_seconds": self.cpu_seconds,
                "last_train_loss": self.loss[-1] if self.loss else None}


def _timed_evaluate(*args: Any) -> tuple[dict[str, Tensor], float]:
    """:func:`evaluate` and the CPU seconds this process spent on it (what a worker reports)."""
    start = time.process_time()
    out = evaluate(*args)
    return out, time.process_time() - start


def _spread(weights: Tensor, alphas: Tensor, tasks: list[str], stimulus_seeds: list[int], noise_seed: int,
            config: PlasticRNNConfig, chunks: int, mapper: Callable[..., Any]) -> tuple[dict[str, Tensor], float]:
    """:func:`evaluate` on ``chunks`` slices of the population mapped with ``mapper``, joined,
    and the CPU seconds the calls took where they ran."""
    size = -(-weights.shape[0] // max(chunks, 1))
    cuts = [slice(i, i + size) for i in range(0, weights.shape[0], size)]
    parts = list(mapper(_timed_evaluate, [weights[c].clone() for c in cuts], [alphas[c].clone() for c in cuts], [tasks[c] for c in cuts],
                        [stimulus_seeds[c] for c in cuts], [noise_seed] * len(cuts), [config] * len(cuts)))
    joined = {key: torch.cat([part[key] for part, _ in parts]) for key in ("loss", "success", "early_success")}
    return joined, sum(cpu for _, cpu in parts)


def evaluate_chunked(weights: Tensor, alphas: Tensor, tasks: list[str], stimulus_seeds: list[int], noise_seed: int,
                     config: PlasticRNNConfig, chunks: int = 1, mapper: Callable[..., Any] = map) -> dict[str, Tensor]:
    """:func:`evaluate` on ``chunks`` slices of the population mapped with ``mapper`` (the built-in
    ``map``, a pool's ``map`` from :func:`beyondbp.study.executors.worker_pool`, a
    ``concurrent.futures`` executor's ``map``), then joined: the same numbers as one call, since
    every member's lifetime depends only on its own arguments."""
    return _spread(weights, alphas, tasks, stimulus_seeds, noise_seed, config, chunks, mapper)[0]


def evolve(es: ESConfig, network: PlasticRNNConfig | None = None, progress: Any = None, *, workers: int = 1,
           executor: str = "local", address: str | None = None, pool: Any = None) -> Evolution:
    """Run the ES outer loop; ``network.plastic=False`` gives the non-plastic control.

    ``progress(generation, info)`` is called after each generation (the CLI or a bench prints).
    Each generation's population is evaluated in one chunk per worker, each in a worker of the
    study executors (:func:`beyondbp.study.executors.worker_pool`: ``executor`` ``"local"``, a
    pool of ``workers`` processes, or ``"ray"``, tasks on ``address`` or a local Ray), opened
    for this call and closed at its end (at once when interrupted); one local worker evaluates
    in this process. ``pool``: a pool already open (its ``workers`` and ``map``), used instead.
    The result is the same whichever executor and number of workers. ``cpu_seconds`` counts
    this process and, where the population is evaluated, the workers' CPU time spent on it.
    """
    network = network or PlasticRNNConfig()
    if pool is None and (executor != "local" or workers != 1 or address is not None):
        from ..study.executors import worker_pool

        with worker_pool(executor, workers, threads=1, address=address, preload=PRELOAD) as opened:
            return evolve(es, network, progress, pool=opened)
    chunks, mapper = (1, map) if pool is None else (pool.workers, pool.map)
    worker_cpu = 0.0
    start = time.process_time()
    gen = torch.Generator().manual_seed(es.seed)
    w, alpha = initial_parameters(network, gen)
    plastic = network.plastic
    if not plastic:
        alpha = torch.zeros_like(alpha)
    params = [w, alpha] if plastic else [w]
    for p in params:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=es.lr, weight_decay=es.weight_decay)
    result = Evolution(weights=w, alphas=alpha)
    pairs = es.population // 2

    def test(generation: int) -> dict[str, Tensor]:
        return test_lifetimes(w, alpha, es.test_task, es.test_lifetimes, es.seed * 100003 + generation, network)

    for g in range(es.generations):
        if g == es.lr_cut_generation:
            for group in optimizer.param_groups:
                group["lr"] /= es.lr_cut_factor
        if es.test_every and g % es.test_every == 0:
            result.tests[g] = float(test(g)["success"].mean())
        if plastic:
            alpha.clamp_(min=0.0)
        tasks = sample_tasks(pairs, schedule_tasks(es.train_tasks, g, es.task_schedule), gen)
        seeds = torch.randint(0, 2 ** 31 - 1, (pairs,), generator=gen).tolist()
        noise_seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen))
        noise_w = antithetic_noise(tuple(w.shape), es.population, gen)
        noise_a = antithetic_noise(tuple(alpha.shape), es.population, gen) if plastic else None
        members_w = w + es.sigma * noise_w
        members_a = alpha + es.sigma * noise_a if plastic else alpha.expand(es.population, -1, -1)
        out, cpu = _spread(members_w, members_a, tasks, seeds + seeds, noise_seed, network, chunks, mapper)
        worker_cpu += cpu if pool is not None else 0.0  # in this process, counted by its own clock
        losses = out["loss"]
        w.grad = es_gradient(losses, noise_w, es.sigma)
        if plastic:
            alpha.grad = es_gradient(losses, noise_a, es.sigma)
        optimizer.step()
        result.loss.append(float(losses.mean()))
        result.success.append(float(out["success"].mean()))
        if progress is not None:
            progress(g, {"loss": result.loss[-1], "success": result.success[-1], "test": result.tests.get(g)})
    if plastic:
        alpha.clamp_(min=0.0)
    final = test(es.generations)
    result.final_test, result.final_early = final["success"].tolist(), final["early_success"].tolist()
    result.cpu_seconds = time.process_time() - start + worker_cpu
    return result


def to_dict(result: Evolution) -> dict[str, Any]:
    """An evolution's history as plain JSON-ready values (the parameters left out): per
    generation ``loss`` and ``success``, ``tests``, the final test per lifetime and the summary."""
    return {"loss": list(result.loss), "success": list(result.success),
            "tests": {str(g): v for g, v in result.tests.items()}, "final_test": list(result.final_test),
            "final_early": list(result.final_early), **{k: v for k, v in result.summary().items() if k != "tests"}}
