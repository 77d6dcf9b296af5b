"""FLOP and wall-clock accounting for training steps.

FLOPs are *measured*, not estimated from a formula: :func:`count_flops` runs a callable under
``torch.utils.flop_counter.FlopCounterMode`` and returns the floating-point operations of every
matmul / convolution / attention kernel that actually executed, forward and backward (PyTorch
counts one multiply-add as 2 FLOPs). A rule that skips a backward matmul (DFA skips ``Wᵀδ``)
therefore shows a smaller count than backprop on the same model; a rule that adds work (a
random projection of the error) shows a larger one. Element-wise operations are not counted.

Wall-clock is measured with ``time.perf_counter`` around each step (synchronising CUDA first
when tensors live on a GPU). Timings are noisy on a shared machine: compare rules with
:func:`measure_steps`, which interleaves their steps in one process so that load changes hit
all of them alike, and report ratios, never absolute seconds alone.

>>> from beyondbp.compute import count_flops
>>> count_flops(lambda: torch.ones(4, 8) @ torch.ones(8, 2))     # doctest: +SKIP
128
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError

__all__ = [
    "StepMeasurement",
    "extra_flop_formulas",
    "flop_counter",
    "StepTimer",
    "count_flops",
    "measure_step",
    "measure_steps",
    "run_counted",
    "synchronize",
]


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP is attributed to "Global"."""

    parents = {"Global"}

    def __enter__(self) -> "_GlobalOnly":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _rnn_layer_flops(input_shape: Any, w_ih_shape: Any, w_hh_shape: Any) -> int:
    """Matmul FLOPs of one fused recurrent layer's forward pass: at each of the ``T·N``
    (step, sample) pairs, the gates' ``W_ih x`` and ``W_hh h`` (``w_ih`` is ``(G·H, D)``,
    ``w_hh`` ``(G·H, H)``, ``G`` = 4 for an LSTM)."""
    gates_hidden, d = w_ih_shape
    positions = 1
    for n in input_shape[:-1]:
        positions *= n
    return 2 * positions * gates_hidden * (d + w_hh_shape[1])


def _mkldnn_rnn_layer_flops(input: Any, w_ih: Any, w_hh: Any, *args: Any, **kwargs: Any) -> int:
    return _rnn_layer_flops(input, w_ih, w_hh)


def _mkldnn_rnn_layer_backward_flops(input: Any, w_ih: Any, w_hh: Any, *args: Any, **kwargs: Any) -> int:
    # the gradients of the input, of the hidden state, of W_ih and of W_hh: twice the forward
    return 2 * _rnn_layer_flops(input, w_ih, w_hh)


def extra_flop_formulas() -> dict[Any, Any]:
    """Kernels the stock counter does not know: ``nn.LSTM`` on the CPU runs as one fused
    ``mkldnn_rnn_layer`` per layer (forward and backward), which it would count as 0 FLOPs."""
    aten = torch.ops.aten
    formulas: dict[Any, Any] = {}
    if hasattr(aten, "mkldnn_rnn_layer"):
        formulas[aten.mkldnn_rnn_layer] = _mkldnn_rnn_layer_flops
    if hasattr(aten, "mkldnn_rnn_layer_backward"):
        formulas[aten.mkldnn_rnn_layer_backward] = _mkldnn_rnn_layer_backward_flops
    return formulas


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that counts the global total only.

    The stock counter also tracks which module each operation belongs to, by installing
    autograd hooks on module inputs and outputs; those hooks make ``torch.autograd.grad`` fail
    on leaf tensors ("A leaf node was passed to _will_engine_execute_node"), which rules that
    relax activities by gradient descent (inference learning) rely on. The total is the same.
    It also counts the CPU's fused LSTM layer (``nn.LSTM``), which the stock counter misses.
    """
    counter = FlopCounterMode(display=False, custom_mapping=extra_flop_formulas())
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _GlobalOnly()
    return counter


def run_counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Call ``fn(*args, **kwargs)`` under a FLOP counter; return ``(its result, FLOPs)``."""
    counter = flop_counter()
    with counter:
        result = fn(*args, **kwargs)
    return result, int(counter.get_total_flops())


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs executed by ``fn(*args, **kwargs)`` (forward and backward kernels alike)."""
    return run_counted(fn, *args, **kwargs)[1]


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work (no-op on the CPU), so a timer reads the real end of a step."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Collects wall-clock durations of steps.

    >>> timer = StepTimer()
    >>> with timer:
    ...     pass
    >>> len(timer.times)
    1

    ``device`` (e.g. ``"cuda"``) makes the timer synchronise before reading the clock.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.times: list[float] = []
        self._start: float | None = None

    def __enter__(self) -> "StepTimer":
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        synchronize(self.device)
        assert self._start is not None
        self.times.append(time.perf_counter() - self._start)
        self._start = None

    def record(self, seconds: float) -> None:
        self.times.append(float(seconds))

    def __len__(self) -> int:
        return len(self.times)

    @property
    def total(self) -> float:
        return float(sum(self.times))

    def median(self, skip: int = 0) -> float | None:
        """Median of the recorded durations after the first ``skip``; ``None`` when none remain."""
        kept = self.times[skip:]
        return float(statistics.median(kept)) if kept else None


@dataclass
class StepMeasurement:
    """FLOPs and wall-clock of one learner's training step on a fixed batch."""

    flops: int
    times: list[float] = field(default_factory=list)

    @property
    def median_time(self) -> float:
        return float(statistics.median(self.times))

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "median_time": self.median_time, "times": list(self.times)}


OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _device_of(learner: Any) -> torch.device | None:
    for p in learner.model.parameters():
        return p.device
    return None


def measure_step(
    learner: Any,
    batch: tuple[torch.Tensor, torch.Tensor],
    optimizer_factory: OptimizerFactory,
    repeats: int = 20,
    warmup: int = 2,
) -> StepMeasurement:
    """FLOPs and per-step wall-clock of ``learner.step(batch, optimizer)``.

    The optimizer is ``optimizer_factory(learner.optimizer_parameters())``. ``warmup`` untimed
    steps run first, then one step under the FLOP counter (untimed), then ``repeats`` timed
    steps. **The model is trained by these steps**: pass a copy if you need it unchanged.
    To compare rules, prefer :func:`measure_steps`, which interleaves them.
    """
    return measure_steps({"_": learner}, batch, optimizer_factory, repeats=repeats, warmup=warmup)["_"]


def measure_steps(
    learners: Mapping[str, Any],
    batch: tuple[torch.Tensor, torch.Tensor],
    optimizer_factory: OptimizerFactory,
    repeats: int = 20,
    warmup: int = 2,
) -> dict[str, StepMeasurement]:
    """:func:`measure_step` for several learners (e.g. ``{"backprop": ..., "dfa": ...}``, each on
    its own copy of the model), with their timed steps interleaved round-robin so that a change
    in machine load affects every learner alike. Returns one :class:`StepMeasurement` each.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a positive integer, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be a non-negative integer, got {warmup!r}")
    if not learners:
        raise ConfigError("measure_steps needs at least one learner")
    optimizers = {k: optimizer_factory(lrn.optimizer_parameters()) for k, lrn in learners.items()}
    for _ in range(warmup):
        for k, lrn in learners.items():
            lrn.step(batch, optimizers[k])
    flops = {k: count_flops(lrn.step, batch, optimizers[k]) for k, lrn in learners.items()}
    timers = {k: StepTimer(_device_of(lrn)) for k, lrn in learners.items()}
    for _ in range(repeats):
        for k, lrn in learners.items():
            with timers[k]:
                lrn.step(batch, optimizers[k])
    return {k: StepMeasurement(flops=flops[k], times=list(timers[k].times)) for k in learners}
