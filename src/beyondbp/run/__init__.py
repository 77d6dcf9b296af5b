"""The run layer: one run's settings (:mod:`~beyondbp.run.config`), the one loop that trains and
measures it (:mod:`~beyondbp.run.loop`, driven by a task from :mod:`~beyondbp.run.tasks`), and
its resume state (:mod:`~beyondbp.run.state`).

>>> from beyondbp.run import RunConfig, run
>>> config = RunConfig(rule="dfa", model="mlp", data="mnist1d", epochs=5, seed=0)
>>> config.run_id                                               # doctest: +SKIP
>>> result = run(config)                                        # doctest: +SKIP

See :mod:`beyondbp.run.loop` for what a run does, :mod:`beyondbp.run.config` for the identity
of a run (which settings define its result, and its id), and :mod:`beyondbp.run.state` for
resuming a killed run. :mod:`beyondbp.train` re-exports these names for older code.

Import from this package with ``from beyondbp.run import ...`` (or
``importlib.import_module("beyondbp.run")``): the attribute ``beyondbp.run`` of the top-level
package is the function :func:`run` (``bbp.run(config)``), so ``import beyondbp.run as m``
binds that function, not this package.
"""

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
    effective_rule_options,
    lm_context,
)
from .loop import (
    DIVERGENCE_FACTOR,
    Progress,
    Setup,
    check,
    diverged,
    evaluate,
    load_dataset,
    make_optimizer,
    make_scheduler,
    prepare,
    run,
    seed_everything,
)
from .tasks import ClassificationTask, LanguageModelTask, Task, make_task

__all__ = [
    "ALLOWED",
    "DIVERGENCE_FACTOR",
    "EXECUTION_FIELDS",
    "LM_CURVE_WINDOWS",
    "LM_DEFAULT_CONTEXT",
    "LM_DEFAULT_TOKENS",
    "LM_EVALS",
    "MAX_COUNT",
    "ClassificationTask",
    "LanguageModelTask",
    "Progress",
    "RunConfig",
    "RunResult",
    "Setup",
    "Task",
    "check",
    "diverged",
    "effective_rule_options",
    "evaluate",
    "lm_context",
    "load_dataset",
    "make_optimizer",
    "make_scheduler",
    "make_task",
    "prepare",
    "run",
    "seed_everything",
]
