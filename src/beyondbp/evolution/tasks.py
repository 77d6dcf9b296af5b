"""The two-stimulus task family of Miconi's "Learning to acquire novel cognitive tasks with
evolution, plasticity and meta-meta-learning" (ICML 2023).

Each trial shows two binary stimuli ``s1`` then ``s2``; the network must answer one bit that is a
fixed Boolean function of them. The family is every such function except the two constant
ones: 14 tasks. The delayed match-to-sample task (``dms``: answer 1 when ``s1 == s2``) and its
negation (``dnms``) are withheld from evolution; ``dms`` is the test task.

Truth tables below are listed for ``(s1, s2) = (0,0), (0,1), (1,0), (1,1)``. They are the
logical functions the task names denote. The authors' released code (``code.py`` @ 54c57bd)
differs on two names: there ``anti10`` computes the same target as ``10`` and ``nor`` computes
``clip(1 − s1 + s2)`` (which is ``anti10``), so true NOR never appears in its training set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["TASKS", "TRAINING_TASKS", "WITHHELD", "check_tasks", "stimulus_inputs", "task_index", "targets"]

#: Task name → its answer for (s1, s2) = (0,0), (0,1), (1,0), (1,1).
TASKS: dict[str, tuple[int, int, int, int]] = {
    "and": (0, 0, 0, 1),
    "nand": (1, 1, 1, 0),
    "01": (0, 1, 0, 0),            # (not s1) and s2
    "anti01": (1, 0, 1, 1),
    "10": (0, 0, 1, 0),            # s1 and (not s2)
    "anti10": (1, 1, 0, 1),
    "watchstim1": (0, 0, 1, 1),    # s1
    "watchstim2": (0, 1, 0, 1),    # s2
    "dms": (1, 0, 0, 1),           # s1 == s2
    "antiwatchstim2": (1, 0, 1, 0),
    "antiwatchstim1": (1, 1, 0, 0),
    "or": (0, 1, 1, 1),
    "nor": (1, 0, 0, 0),
    "dnms": (0, 1, 1, 0),          # s1 != s2
}
#: Withheld from evolution: the test task and its logical negation.
WITHHELD = ("dms", "dnms")
TRAINING_TASKS = tuple(t for t in TASKS if t not in WITHHELD)
_TABLE = torch.tensor(list(TASKS.values()), dtype=torch.long)
_NAMES = list(TASKS)


def check_tasks(tasks: Iterable[str], what: str = "tasks") -> list[str]:
    """The names as a list, or a :class:`ConfigError` naming the first unknown one."""
    names = list(tasks)
    if not names:
        raise ConfigError(f"{what} is empty; give at least one of: {', '.join(TASKS)}.")
    for name in names:
        if name not in TASKS:
            raise ConfigError(f"unknown task {name!r} in {what}; known tasks are: {', '.join(TASKS)}.")
    return names


def task_index(tasks: Sequence[str]) -> Tensor:
    """Each name's row in the truth table (long tensor)."""
    return torch.tensor([_NAMES.index(t) for t in check_tasks(tasks)], dtype=torch.long)


def targets(task_rows: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    """The answer bit (long) for each member's task (``task_rows`` ``(B,)``) and stimuli
    ``s1``, ``s2`` of any shape ``(B, ...)`` (0/1 long tensors)."""
    rows = task_rows.reshape(-1, *([1] * (s1.dim() - 1))).expand_as(s1)
    return _TABLE.to(s1.device)[rows, 2 * s1 + s2]


def stimulus_inputs(s1: Tensor, s2: Tensor, steps: int = 20, size: float = 3.0) -> Tensor:
    """The clamped rates of the two stimulus units over the stimulus period, ``(B, 2, steps)``.

    Unit 0 shows ``size · (2 s1 − 1)`` during the first half of the period and ``size · (2 s2 − 1)``
    during the second, each half ending with 2 silent steps; unit 1 shows the opposite value.
    """
    half = steps // 2
    out = torch.zeros(s1.shape[0], 2, steps)
    out[:, 0, : half - 2] = (size * (2.0 * s1.float() - 1.0))[:, None]
    out[:, 0, half: steps - 2] = (size * (2.0 * s2.float() - 1.0))[:, None]
    out[:, 1] = -out[:, 0]
    return out
