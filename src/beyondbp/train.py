"""The run layer's former home, kept so that ``from beyondbp.train import RunConfig, run,
RunResult`` (and the other names below) keeps working.

The code lives in the :mod:`beyondbp.run` package: settings, identity and results in
:mod:`beyondbp.run.config`, the one loop in :mod:`beyondbp.run.loop` (its docstring says what a
run does, how it is measured and how it resumes), the tasks in :mod:`beyondbp.run.tasks` and the
resume state in :mod:`beyondbp.run.state`.
"""

from __future__ import annotations

from .run.config import (
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
from .run.loop import (
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
from .study.compare import compare  # the one-axis study over rules

__all__ = [
    "ALLOWED",
    "DIVERGENCE_FACTOR",
    "EXECUTION_FIELDS",
    "LM_CURVE_WINDOWS",
    "LM_DEFAULT_CONTEXT",
    "LM_DEFAULT_TOKENS",
    "LM_EVALS",
    "MAX_COUNT",
    "Progress",
    "RunConfig",
    "RunResult",
    "Setup",
    "check",
    "compare",
    "diverged",
    "effective_rule_options",
    "evaluate",
    "lm_context",
    "load_dataset",
    "make_optimizer",
    "make_scheduler",
    "prepare",
    "run",
    "seed_everything",
]
