"""The run layer: one run's settings (:mod:`~beyondbp.training.config`), the one loop that trains and
measures it (:mod:`~beyondbp.training.loop`, driven by a task from :mod:`~beyondbp.training.tasks`), and
its resume state (:mod:`~beyondbp.training.state`); the pieces every loop of the library shares
(seeding, optimizers, schedules and divergence in :mod:`~beyondbp.training.components`,
batches and evaluation of in-memory tensors in :mod:`~beyondbp.training.batches`).

>>> from beyondbp.training import RunConfig, run
>>> config = RunConfig(rule="dfa", model="mlp", data="mnist1d", epochs=5, seed=0)
>>> config.run_id                                               # doctest: +SKIP
>>> result = run(config)                                        # doctest: +SKIP

See :mod:`beyondbp.training.loop` for what a run does, :mod:`beyondbp.training.config` for the
identity of a run (which settings define its result, and its id), and
:mod:`beyondbp.training.state` for resuming a killed run. The top-level package exports
:func:`run`, :class:`RunConfig` and :class:`RunResult` from here (``beyondbp.run(config)``), and
:func:`beyondbp.compare` (the one-axis study over rules, :mod:`beyondbp.study.compare`).
"""

from .batches import ShuffledBatches, batch_slices, evaluate_batches, evaluate_tensors, tensor_batches
from .components import (
    DIVERGENCE_FACTOR,
    OPTIMIZERS,
    build_optimizer,
    diverged,
    make_optimizer,
    make_scheduler,
    seed_everything,
    seeded,
)
from .config import (
    ALLOWED,
    EXECUTION_FIELDS,
    LM_CURVE_WINDOWS,
    LM_DEFAULT_CONTEXT,
    LM_DEFAULT_TOKENS,
    LM_EVALS,
    MAX_COUNT,
    RunConfig,
    RunResult,
    effective_data_options,
    effective_rule_options,
    lm_context,
)
from .loop import Progress, Setup, check, evaluate, load_dataset, prepare, run
from .tasks import ClassificationTask, LanguageModelTask, ScheduledTask, Task, make_task

__all__ = [
    "ALLOWED",
    "DIVERGENCE_FACTOR",
    "EXECUTION_FIELDS",
    "LM_CURVE_WINDOWS",
    "LM_DEFAULT_CONTEXT",
    "LM_DEFAULT_TOKENS",
    "LM_EVALS",
    "MAX_COUNT",
    "OPTIMIZERS",
    "ClassificationTask",
    "LanguageModelTask",
    "Progress",
    "RunConfig",
    "RunResult",
    "ScheduledTask",
    "Setup",
    "ShuffledBatches",
    "Task",
    "batch_slices",
    "build_optimizer",
    "check",
    "diverged",
    "effective_rule_options",
    "effective_data_options",
    "evaluate",
    "evaluate_batches",
    "evaluate_tensors",
    "lm_context",
    "load_dataset",
    "make_optimizer",
    "make_scheduler",
    "make_task",
    "prepare",
    "run",
    "seed_everything",
    "seeded",
    "tensor_batches",
]
