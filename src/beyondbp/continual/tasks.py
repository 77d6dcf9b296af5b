"""Task sequences for continual learning, built from the library's data sets.

A :class:`TaskSequence` is a list of :class:`Task` (train / test tensors of one task, the classes
it uses) plus the ``setting``:

``permuted-fashion-mnist:N`` / ``permuted-mnist1d:N``
    Domain-incremental: every task is the whole data set with its input features reordered by a
    fixed permutation. Permutation ``k`` is ``numpy.random.default_rng([seed, k]).permutation(D)``
    over the flattened features (``D = 784`` for Fashion-MNIST, ``40`` for MNIST-1D). **Every task
    is permuted, task 0 included** (none is the identity); with the same seed the permutations are
    the same on every machine. All ten classes in every task, one shared 10-way output.
``split-fashion-mnist``
    Five tasks of two classes: (0, 1), (2, 3), (4, 5), (6, 7), (8, 9). Two settings:
    ``split-fashion-mnist:task`` (task-incremental: the task id is known, logits of the classes
    outside the current task are masked to −∞ in training and in evaluation — the same function as
    one 2-way head per task over a shared trunk) and ``split-fashion-mnist:class``
    (class-incremental: one shared 10-way head, no mask, no task id at test time).

Every method of :mod:`beyondbp.continual.methods` runs in every setting; the projection methods
(GPM, HLOP) are designed for the domain- and task-incremental settings and are not expected to
help much in the class-incremental one, where the shared head's bias toward the last classes
dominates forgetting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from beyondbp import data as data_mod
from beyondbp.errors import ConfigError
from beyondbp.resources import check_fits
from beyondbp.training.config import check_count

__all__ = ["FAMILIES", "MaskedCrossEntropy", "Task", "TaskSequence", "build_sequence", "class_masks", "parse_tasks",
           "sequence_bytes"]

#: family name -> (data set, setting, fixed number of tasks or None)
FAMILIES: dict[str, tuple[str, str, int | None]] = {
    "permuted-fashion-mnist": ("fashion-mnist", "domain", None),
    "permuted-mnist1d": ("mnist1d", "domain", None),
    "split-fashion-mnist": ("fashion-mnist", "task", 5),
}


@dataclass
class Task:
    """One task: its data and the classes it uses (``classes`` is None when all are used)."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[int, ...] | None = None


@dataclass
class TaskSequence:
    """An ordered list of tasks over one input shape and one label space."""

    family: str
    setting: str  # "domain", "task" or "class"
    tasks: list[Task]
    input_shape: tuple[int, ...]
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)
    #: training samples of the smallest task before any ``train_size`` subset (0: unknown; a
    #: larger batch size is accepted: it is the whole split)
    full_train: int = 0

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def masked(self) -> bool:
        """Whether logits outside the current task's classes are masked (task-incremental)."""
        return self.setting == "task"

    def describe(self) -> str:
        t = self.tasks[0]
        return (
            f"{self.family} ({self.setting}-incremental): {len(self.tasks)} tasks, "
            f"{t.x_train.shape[0]} train / {t.x_test.shape[0]} test samples per task"
        )


def parse_tasks(text: str) -> tuple[str, int, str]:
    """``"permuted-fashion-mnist:10"`` -> (family, N, setting); ``"split-fashion-mnist:class"``
    -> (family, 5, "class")."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("--tasks is empty; give FAMILY[:N], e.g. permuted-fashion-mnist:10")
    family, _, arg = text.strip().partition(":")
    if family not in FAMILIES:
        raise ConfigError(f"unknown task family {family!r}; known families: {', '.join(FAMILIES)}")
    _, setting, fixed = FAMILIES[family]
    if fixed is not None:  # split: the argument is the setting
        arg = arg or "task"
        if arg not in ("task", "class"):
            raise ConfigError(
                f"{family} takes ':task' (task-incremental) or ':class' (class-incremental), got {arg!r}"
            )
        return family, fixed, arg
    try:
        n = int(arg) if arg else 10
    except ValueError:
        raise ConfigError(f"the number of tasks in {text!r} must be an integer, got {arg!r}") from None
    if n < 2:
        raise ConfigError(f"a task sequence needs at least 2 tasks, got {n}")
    check_count(n, "number of tasks", "a whole number of at least 2", low=2)
    return family, n, setting


#: Bytes of one entry of the accuracy matrix once measured (a Python float and its list slot).
MATRIX_ENTRY_BYTES = 32


def sequence_bytes(n_tasks: int, n_train: int, n_test: int, sample_bytes: int, joint: bool = False) -> int:
    """Memory a sequence of ``n_tasks`` tasks holds, about: every task's permuted train and test
    inputs (``sample_bytes`` each), the ``n_tasks × n_tasks`` accuracy matrix and, with
    ``joint`` (the multitask baseline), the concatenation of all training sets with its labels
    and owners (int64 each)."""
    need = n_tasks * (n_train + n_test) * sample_bytes + MATRIX_ENTRY_BYTES * n_tasks * n_tasks
    if joint:
        need += n_tasks * n_train * (sample_bytes + 16)
    return need


def _take(x: Tensor, y: Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` samples of a seeded shuffle (all of them, in order, when ``n`` is None)."""
    if n is None or n >= x.shape[0]:
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:n]
    return x[idx], y[idx]


def build_sequence(
    tasks: str,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    data_dir: str | None = None,
    joint: bool = False,
) -> TaskSequence:
    """The task sequence named by ``tasks`` (see the module docstring).

    ``seed`` fixes the permutations; ``train_size`` / ``test_size`` keep a seeded subset of that
    many samples per task (None: all of them; more than the data set has is refused). The data
    set is loaded once. Before any task is built, the memory the sequence will hold
    (:func:`sequence_bytes`; ``joint``: the multitask baseline will run on it) is compared with
    the machine's, and a sequence that cannot fit is refused (:class:`ConfigError`).
    """
    family, n, setting = parse_tasks(tasks)
    dataset_name = FAMILIES[family][0]
    for value, what in ((train_size, "train_size"), (test_size, "test_size")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{what} must be a positive integer or None, got {value!r}")
        if value is not None:
            check_count(value, what, "a whole number of at least 1, or nothing for all samples")
    ds = data_mod.load(dataset_name, data_dir=data_dir) if data_dir else data_mod.load(dataset_name)
    shape = tuple(ds.input_shape)
    dim = math.prod(shape)
    sizes = {}
    for what, value, available in (("train_size", train_size, ds.num_train), ("test_size", test_size, ds.num_test)):
        if value is not None and value > available:
            raise ConfigError(f"{what}={value} exceeds the {available} {what[:-5]} samples of {dataset_name!r}; "
                              f"ask for at most {available}")
        sizes[what] = available if value is None else value
    if family.startswith("permuted-"):
        per_task = (sizes["train_size"], sizes["test_size"])
    else:  # two of ten classes per task
        per_task = tuple(min(v, -(-a // 5)) for v, a in ((sizes["train_size"], ds.num_train),
                                                        (sizes["test_size"], ds.num_test)))
    need = sequence_bytes(n, *per_task, dim * ds.x_train.element_size(), joint=joint)
    check_fits(need, f"the sequence {tasks.strip()!r} ({n:,} tasks of {per_task[0]:,} train / {per_task[1]:,} test samples)",
               "use fewer tasks or smaller --train-size / --test-size")
    out: list[Task] = []
    if family.startswith("permuted-"):
        xtr, ytr = _take(ds.x_train, ds.y_train, train_size, seed)
        xte, yte = _take(ds.x_test, ds.y_test, test_size, seed + 1)
        flat_tr, flat_te = xtr.reshape(xtr.shape[0], dim), xte.reshape(xte.shape[0], dim)
        for k in range(n):
            perm = torch.from_numpy(np.random.default_rng([seed, k]).permutation(dim))
            out.append(Task(
                name=f"perm{k}",
                x_train=flat_tr[:, perm].reshape(xtr.shape).contiguous(),
                y_train=ytr,
                x_test=flat_te[:, perm].reshape(xte.shape).contiguous(),
                y_test=yte,
            ))
        meta = {"permutation": "numpy.random.default_rng([seed, k]).permutation(D), every task permuted"}
        full_train = ds.num_train
    else:
        full_train = ds.num_train
        for k in range(n):
            classes = (2 * k, 2 * k + 1)
            sel_tr = (ds.y_train == classes[0]) | (ds.y_train == classes[1])
            full_train = min(full_train, int(sel_tr.sum()))
            sel_te = (ds.y_test == classes[0]) | (ds.y_test == classes[1])
            xtr, ytr = _take(ds.x_train[sel_tr], ds.y_train[sel_tr], train_size, seed + 2 * k)
            xte, yte = _take(ds.x_test[sel_te], ds.y_test[sel_te], test_size, seed + 2 * k + 1)
            out.append(Task(name=f"classes{classes[0]}{classes[1]}", x_train=xtr, y_train=ytr, x_test=xte,
                            y_test=yte, classes=classes))
        meta = {"splits": [list(t.classes or ()) for t in out]}
    meta.update(seed=seed, data=ds.description, train_size=train_size, test_size=test_size)
    return TaskSequence(family=family, setting=setting, tasks=out, input_shape=shape,
                        num_classes=ds.num_classes, meta=meta, full_train=full_train)


def _class_mask(classes: tuple[int, ...] | None, num_classes: int) -> Tensor | None:
    if classes is None:
        return None
    m = torch.full((num_classes,), float("-inf"))
    m[list(classes)] = 0.0
    return m


def class_masks(seq: TaskSequence) -> Tensor | None:
    """Task-incremental sequences: row ``c`` is the logit mask of the task that class ``c``
    belongs to (0 on that task's classes, −∞ elsewhere; all 0 for a class of no task), so that a
    training label names its own mask. ``None`` for the other settings (nothing is masked).
    Refuses (:class:`ConfigError`) tasks whose classes overlap: a label would name two masks."""
    if not seq.masked:
        return None
    table = torch.zeros(seq.num_classes, seq.num_classes)
    owner: dict[int, int] = {}
    for k, task in enumerate(seq.tasks):
        for c in task.classes or ():
            if c in owner:
                raise ConfigError(f"task-incremental tasks must not share classes: class {c} is in task {owner[c]} "
                                  f"and task {k}")
            owner[c] = k
            table[c] = _class_mask(task.classes, seq.num_classes)
    return table


class MaskedCrossEntropy:
    """Cross-entropy on logits plus, per sample, the mask of its label's task (``by_class[y]``,
    :func:`class_masks`); plain cross-entropy when ``by_class`` is ``None``. Fixed when built: the
    mask travels with the batch's labels, nothing is set between steps."""

    def __init__(self, by_class: Tensor | None) -> None:
        self.by_class = by_class

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        if self.by_class is not None:
            out = out + self.by_class[y]
        return F.cross_entropy(out, y)
