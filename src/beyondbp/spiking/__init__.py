"""Spiking networks: surrogate spike functions, LIF / ALIF neurons, encoders, readouts, statistics.

Everything here is a plain ``nn.Module`` or ``torch.autograd.Function`` and imports only torch
and :mod:`beyondbp.errors` (tests/test_architecture.py keeps it a leaf); beyondbp's spiking models (``snn-mlp``, ``snn-cnn`` in
:mod:`beyondbp.models.snn`) are built from these pieces and standard ``nn.Linear`` /
``nn.Conv2d`` layers, so every rule that wraps those layers trains them.

* :mod:`~beyondbp.spiking.surrogate` — Heaviside forward, surrogate derivative backward
  (``arctan``, ``fast_sigmoid``, ``sigmoid``, ``triangle``, ``straight_through``).
* :mod:`~beyondbp.spiking.neurons` — :class:`LIF`, :class:`ALIF`, :class:`LeakyIntegrator`; the
  time-major ``[T·B, ...]`` layout; explicit state.
* :mod:`~beyondbp.spiking.encoding` — ``direct``, ``rate``, ``latency`` encoders; ``count`` and
  ``membrane`` readouts.
* :func:`spike_statistics` — per-layer mean firing rate and fraction of silent neurons.
"""

from . import surrogate
from .encoding import (
    ENCODERS,
    READOUTS,
    DirectEncoder,
    LatencyEncoder,
    MeanOverTime,
    RateEncoder,
    SpikeCount,
    intensity,
    make_encoder,
)
from .neurons import ALIF, LIF, LeakyIntegrator, LIFState, SpikingNeuron, Trace, beta_from_tau
from .stats import spike_statistics, spiking_layers
from .surrogate import SURROGATES, spike

__all__ = [
    "ALIF", "DirectEncoder", "ENCODERS", "LIF", "LIFState", "LatencyEncoder", "LeakyIntegrator", "MeanOverTime",
    "READOUTS", "RateEncoder", "SURROGATES", "SpikeCount", "SpikingNeuron", "Trace", "beta_from_tau", "intensity",
    "make_encoder", "spike", "spike_statistics", "spiking_layers", "surrogate",
]
