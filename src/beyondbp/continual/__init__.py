"""Continual learning: task sequences, methods (fine-tuning, EWC, GPM, HLOP, multitask) and metrics.

>>> from beyondbp import continual
>>> seq = continual.build_sequence("permuted-fashion-mnist:3", train_size=2000)   # doctest: +SKIP
>>> res = continual.run_method(seq, "hlop", rule="fa")                             # doctest: +SKIP
>>> res["acc"], res["bwt"]                                                         # doctest: +SKIP

A leaf package: it uses rules, models and data; nothing in the library imports it (the CLI's
``beyondbp continual`` command does; :mod:`beyondbp.reporting.continual` renders the
results). See :mod:`.tasks`, :mod:`.metrics`, :mod:`.projection` and
:mod:`.methods` for the definitions, defaults and papers.
"""

from beyondbp.continual.methods import METHODS, describe_options, make_method, run_method, task_accuracy
from beyondbp.continual.metrics import acc, bwt, fwt, summary
from beyondbp.continual.projection import COMPOSABLE_RULES, GradientProjector, HebbianSubspace, gpm_extend
from beyondbp.continual.tasks import FAMILIES, Task, TaskSequence, build_sequence, parse_tasks

__all__ = [
    "COMPOSABLE_RULES", "FAMILIES", "METHODS", "GradientProjector", "HebbianSubspace", "Task", "TaskSequence",
    "acc", "build_sequence", "bwt", "describe_options", "fwt", "gpm_extend", "make_method", "parse_tasks", "run_method", "summary",
    "task_accuracy",
]
