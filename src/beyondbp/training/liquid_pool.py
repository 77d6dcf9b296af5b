"""A liquid run's feature generation (phase 2 of :mod:`beyondbp.training.liquid`) over several
worker processes: the run's execution setting ``feature_workers``.

Every feature batch of a split is simulated on its own, from ``W_INI``, with input spikes drawn
from a generator seeded from (run seed, split, batch index) (:func:`batch_counts`), so the batches
can run anywhere in any order: the features are **bit-identical** whatever the number of workers
(each worker runs one torch thread, as a run does by default; a run given ``threads`` > 1 and one
worker uses that many threads, which torch does not promise to give the same bits). The number of
workers is an execution setting: it changes neither the run's id nor the feature cache's key.

How many (:func:`feature_workers`): ``feature_workers`` when given, else ``min(2, cores)`` —
but one for a small run (under :data:`PARALLEL_WORK` image·ms in all, where starting the workers
would cost more than they save), and never more than there are feature batches. A study's runs
get ``feature_workers = 1`` unless its ``[execution]`` table says otherwise (the study already
runs its runs in parallel; :func:`beyondbp.study.runner`'s worker config). A process that may not
have children (a daemonic one, e.g. a ``multiprocessing.Pool`` worker) generates the features
itself, whatever ``feature_workers`` says, without error; a study's local workers (a
``concurrent.futures`` pool) and Ray tasks may have children, so ``[execution] feature_workers``
works there.

The workers are forked from a forkserver (``spawn`` where there is none;
:func:`beyondbp.interrupts.worker_context`) that imports beyondbp once; each one receives the model
(with ``W_INI``) and the liquid rule once, attaches the rule's transient plasticity and then
simulates the batches it is handed. No worker outlives the run: each dies with the process that
started it, whatever ended that one, SIGKILL included (:func:`beyondbp.interrupts.die_with`), and
a run stopped by Ctrl-C or SIGTERM, or failing, stops them at once (:func:`beyondbp.interrupts.stop_pool`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import io
import os
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .. import rules as rules_mod
from ..interrupts import available_cores, can_have_children, die_with, stop_pool, worker_context

__all__ = ["PARALLEL_WORK", "PRELOAD", "FeaturePool", "batch_counts", "derive", "feature_workers"]

#: Image·ms of feature generation (train + test) below which the run's default is one process.
PARALLEL_WORK = 250_000
#: Modules the forkserver imports once (this one holds the workers' functions).
PRELOAD = ["beyondbp.training.liquid_pool", "beyondbp.models.lsm", "beyondbp.rules.nalsm"]


def derive(*parts: Any) -> int:
    """A seed from ``parts`` (stable across processes)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def batch_counts(liquid: nn.Module, p: Tensor, duration: int, seed: int, split: str, c: int) -> Tensor:
    """Spike counts (B, n) of feature batch ``c`` of ``split`` (firing probabilities ``p``),
    with the liquid's attached plasticity, from its stored weights."""
    liquid.input_seed = derive(seed, split, c)
    return liquid.simulate(p, duration=duration, write_back=False)["counts"].cpu()


def feature_workers(requested: int | None, batches: int, work: int) -> int:
    """The processes to generate ``batches`` feature batches (``work`` image·ms in all) with, for
    the run's ``feature_workers`` setting ``requested`` (None: the default; see the module
    docstring). 1 means: in this process."""
    if not can_have_children():
        return 1
    if requested is None:
        requested = 1 if work < PARALLEL_WORK else min(2, available_cores())
    return max(1, min(int(requested), batches))


# -- in a worker ---------------------------------------------------------------------------------
_MODEL: nn.Module | None = None


def _init(driver: int, payload: bytes) -> None:
    """A worker's start: die with the driver, one torch thread, the model and its plasticity."""
    global _MODEL
    die_with(driver)
    torch.set_num_threads(1)
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    model = state["model"]
    if state["rule"] is not None:
        name, options = state["rule"]
        rules_mod.get(name, **options).attach(model)  # transient plasticity from W_INI
    _MODEL = model


def _run(p: Any, duration: int, seed: int, split: str, c: int) -> Any:
    assert _MODEL is not None, "the worker was not initialised"
    counts = batch_counts(_MODEL.liquid, torch.from_numpy(p), duration, seed, split, c)
    return counts.numpy()


# -- in the run ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """While processes start: this program's main module hidden from them. A forkserver or spawned
    child runs the parent's main script again (as ``__mp_main__``) unless told otherwise; a script
    that calls :func:`beyondbp.training.run` without an ``if __name__ == "__main__"`` guard would
    then start the run again in every worker. The workers need beyondbp's modules only."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main
class FeaturePool:
    """``workers`` processes simulating feature batches of ``model``'s liquid (its weights as
    they are now), with rule ``rule`` (``(name, options)``, attached in transient mode) or a
    fixed liquid (None). Use as a context manager; :meth:`counts` does the work."""

    def __init__(self, model: nn.Module, rule: tuple[str, dict[str, Any]] | None, workers: int) -> None:
        buffer = io.BytesIO()
        plasticity = getattr(model.liquid, "plasticity", None)
        model.liquid.plasticity = None  # the workers attach their own
        try:
            torch.save({"model": model, "rule": rule}, buffer)
        finally:
            model.liquid.plasticity = plasticity
        with _main_hidden():
            ctx = worker_context(PRELOAD)
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                                           initargs=(os.getpid(), buffer.getvalue()))

    def __enter__(self) -> "FeaturePool":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is None:
            self.pool.shutdown(wait=True)
        else:  # interrupted or failed: stop the workers now
            stop_pool(self.pool)

    def counts(self, splits: dict[str, Tensor], duration: int, batch: int, seed: int,
               done: dict[str, dict[int, Tensor]] | None = None,
               on_batch: Callable[[str, int, Tensor], Any] | None = None) -> dict[str, list[Tensor]]:
        """Per split, the spike counts of each of its feature batches, in order (as
        :func:`batch_counts` in this process would give them). ``done``: batches already known
        (split → index → counts), not simulated again; ``on_batch(split, c, counts)`` is called
        here, in this process, as each other batch completes."""
        done = done or {}
        out: dict[str, dict[int, Tensor]] = {split: dict(done.get(split, {})) for split in splits}
        with _main_hidden():  # the workers start at the first submissions
            futures = {
                self.pool.submit(_run, p[start:start + batch].contiguous().numpy(), duration, seed, split, c): (split, c)
                for split, p in splits.items()
                for c, start in enumerate(range(0, len(p), batch)) if c not in out[split]
            }
        for future in cf.as_completed(futures):
            split, c = futures[future]
            out[split][c] = torch.from_numpy(future.result())
            if on_batch is not None:
                on_batch(split, c, out[split][c])
        return {split: [found[c] for c in sorted(found)] for split, found in out.items()}
