"""Encoders (static sample -> ``T`` time steps) and readouts (``T`` time steps -> logits).

Encoders take a batch ``x`` of shape ``(B, *input_shape)`` and return the time-major flattened
sequence ``[T·B, *input_shape]`` the spiking layers expect (see :mod:`beyondbp.spiking.neurons`):

``direct``  The sample itself is the input current of every step ("direct encoding"; snnTorch's
            tutorial 5 feeds the image this way). With ``repeat=True`` it returns ``x`` repeated
            ``T`` times; beyondbp's models use ``repeat=False``, which returns ``x`` unchanged, and
            build their first spiking layer with ``constant_input=True``, so the layers in
            between (the first Linear / Conv) run once instead of ``T`` times — the same
            forward values and the same gradients, since the weight gradient of a layer
            applied to a constant input is the sum over steps either way.
``rate``    Bernoulli spikes: pixel ``i`` spikes at each step independently with probability
            ``p_i`` (snnTorch's ``spikegen.rate``). Draws from the global torch RNG, so a run is
            reproducible under ``torch.manual_seed``; it draws in eval mode too (predictions
            of a rate-coded model are random unless the RNG is seeded).
``latency`` One spike per pixel, earlier for brighter pixels (time-to-first-spike):
            ``t_i = round((1 − p_i) (T − 1))``, and no spike for ``p_i = 0``. Deterministic.

Intensities ``p``. beyondbp's image data sets are standardised by default (Fashion-MNIST:
``(raw − 0.2860) / 0.3530``, so pixels lie in about ``[−0.81, 2.02]``), which is not a
probability. ``rate`` and ``latency`` therefore rescale *each sample* to ``[0, 1]`` by its own
minimum and maximum, ``p = (x − min x) / (max x − min x)`` (a constant sample gives ``p = 0``).
Any increasing affine map of the pixels — in particular the data set's standardisation — gives
the same ``p``, so ``--data-opt normalize=false`` and the default give identical spike trains
for images whose darkest pixel is 0 and brightest 1 in raw units; for other images the
per-sample rescaling stretches the contrast.

Readouts map the output layer's ``[T·B, C]`` sequence to logits ``(B, C)``, so the library's
run loop, cross-entropy loss and every rule work unchanged:

``count``     spike count ``Σ_t S_t`` of a *spiking* output layer (cross-entropy on counts,
              snnTorch's ``ce_count_loss``); prediction = most spikes.
``membrane``  mean membrane ``(1/T) Σ_t U_t`` of a *non-spiking* leaky-integrator output layer
              (:class:`~beyondbp.spiking.neurons.LeakyIntegrator`; cross-entropy on it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "DirectEncoder", "ENCODERS", "LatencyEncoder", "MeanOverTime", "READOUTS", "RateEncoder", "SpikeCount",
    "intensity", "make_encoder",
]


def _check_steps(time_steps: object, owner: str) -> int:
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ConfigError(f"{owner}: time_steps (T) must be an integer >= 1, got {time_steps!r}.")
    return int(time_steps)


def intensity(x: Tensor) -> Tensor:
    """Each sample of ``x`` (``(B, ...)``) rescaled by its own min and max to ``[0, 1]``."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    p = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(flat))
    return p.view_as(x)


class DirectEncoder(nn.Module):
    """The sample as a constant input current (see the module docstring)."""

    def __init__(self, time_steps: int, repeat: bool = True) -> None:
        super().__init__()
        self.time_steps = _check_steps(time_steps, "DirectEncoder")
        self.repeat = bool(repeat)

    def forward(self, x: Tensor) -> Tensor:
        if not self.repeat:
            return x
        return x.unsqueeze(0).expand(self.time_steps, *x.shape).reshape(-1, *x.shape[1:])

    def extra_repr(self) -> str:
        return f"T={self.time_steps}, repeat={self.repeat}"


class RateEncoder(nn.Module):
    """Bernoulli spikes with the per-sample intensity as probability (global torch RNG)."""

    def __init__(self, time_steps: int) -> None:
        super().__init__()
        self.time_steps = _check_steps(time_steps, "RateEncoder")

    def forward(self, x: Tensor) -> Tensor:
        p = intensity(x.detach())
        spikes = torch.bernoulli(p.unsqueeze(0).expand(self.time_steps, *p.shape))
        return spikes.reshape(-1, *x.shape[1:])

    def extra_repr(self) -> str:
        return f"T={self.time_steps}"


class LatencyEncoder(nn.Module):
    """One spike per pixel at step ``round((1 − p)(T − 1))``; none where ``p = 0``."""

    def __init__(self, time_steps: int) -> None:
        super().__init__()
        self.time_steps = _check_steps(time_steps, "LatencyEncoder")

    def spike_times(self, x: Tensor) -> Tensor:
        """Each pixel's spike step (``T`` — past the window — for the pixels that never spike)."""
        p = intensity(x.detach())
        times = torch.round((1 - p) * (self.time_steps - 1)).long()
        return torch.where(p > 0, times, torch.full_like(times, self.time_steps))

    def forward(self, x: Tensor) -> Tensor:
        times = self.spike_times(x)
        steps = torch.arange(self.time_steps, device=x.device).view(-1, *([1] * x.dim()))
        spikes = (steps == times.unsqueeze(0)).to(x.dtype)
        return spikes.reshape(-1, *x.shape[1:])

    def extra_repr(self) -> str:
        return f"T={self.time_steps}"


#: Encoder name -> class.
ENCODERS: dict[str, type[nn.Module]] = {"direct": DirectEncoder, "rate": RateEncoder, "latency": LatencyEncoder}


def make_encoder(name: str, time_steps: int) -> nn.Module:
    """Encoder ``name`` for ``time_steps`` steps (``direct`` with ``repeat=False``, as beyondbp's
    models use it: the first spiking layer then takes the constant input itself)."""
    if not isinstance(name, str) or name not in ENCODERS:
        raise ConfigError(f"Unknown encoder {name!r}; allowed encoders are: {', '.join(ENCODERS)}.")
    if name == "direct":
        return DirectEncoder(time_steps, repeat=False)
    return ENCODERS[name](time_steps)


class _OverTime(nn.Module):
    def __init__(self, time_steps: int) -> None:
        super().__init__()
        self.time_steps = _check_steps(time_steps, type(self).__name__)

    def _sequence(self, x: Tensor) -> Tensor:
        if x.shape[0] % self.time_steps != 0:
            raise ConfigError(
                f"{type(self).__name__} with time_steps={self.time_steps} expects time-major input of shape "
                f"[T*B, ...], got {tuple(x.shape)}."
            )
        return x.reshape(self.time_steps, -1, *x.shape[1:])

    def extra_repr(self) -> str:
        return f"T={self.time_steps}"


class SpikeCount(_OverTime):
    """``[T·B, C] -> (B, C)``: spikes summed over time."""

    def forward(self, x: Tensor) -> Tensor:
        return self._sequence(x).sum(0)


class MeanOverTime(_OverTime):
    """``[T·B, C] -> (B, C)``: mean over time (of a membrane trace)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._sequence(x).mean(0)


#: Readout name -> the module reducing the output layer's sequence.
READOUTS: dict[str, type[nn.Module]] = {"count": SpikeCount, "membrane": MeanOverTime}
