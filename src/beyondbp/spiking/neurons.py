"""Spiking neurons over time: LIF, adaptive-threshold LIF (ALIF) and a non-spiking leaky integrator.

Layout. Inside a beyondbp spiking model a sequence of ``T`` time steps travels *time-major and
flattened into the batch*: a tensor of shape ``[T·B, ...]`` whose rows ``t·B … (t+1)·B − 1`` are
time step ``t``. Every stateless layer (``nn.Linear``, ``nn.Conv2d``, pooling, ``nn.Flatten``)
then runs once over all steps, unchanged and with its weights shared over time, and only the
neurons below, which know ``T`` (``time_steps``), view their input as ``[T, B, ...]`` and loop over
``t``. A neuron built with ``constant_input=True`` takes a ``[B, ...]`` input instead and uses it
as the input current of every step (what direct encoding of a static image gives; the layers
before it then run once instead of ``T`` times).

State is explicit: each call starts from zero state (``U₀ = 0``, no spike before the first
step), and nothing is kept on the module between calls — no global registry to reset.
:meth:`LIF.step` advances one step from a state the caller holds, for code that runs its own
time loop.

LIF (leaky integrate-and-fire), with decay ``β`` (``0 < β ≤ 1``; ``β = 1`` is the non-leaky IF
neuron; a time constant τ corresponds to ``β = 1 − 1/τ``, SpikingJelly's LIF with
``decay_input=False``), threshold ``θ`` (default 1.0), input current ``I_t``:

    subtract reset (default):  U_t = β U_{t−1} + I_t − θ S_{t−1}
    zero reset:                U_t = β (1 − S_{t−1}) U_{t−1} + I_t
    spike:                     S_t = H(U_t − θ)          (surrogate derivative backward)

The reset acts one step after the spike, on the membrane as it was *before* reset — snnTorch's
``Leaky`` neuron (its default ``reset_delay=True``), so ``U_t`` is the pre-reset membrane.
(SpikingJelly resets within the step, ``V_t = H_t − θ S_t``, and then decays the reset
membrane; with β near 1 the two differ by ``(1 − β) θ`` per spike.) With ``detach_reset=True``
the ``S_{t−1}`` in the reset term is treated as a constant in the backward pass: the forward
pass is unchanged and only gradients differ. snnTorch always detaches its reset; SpikingJelly
does not by default (``detach_reset=False``), and neither do we.

ALIF (adaptive threshold, the LSNN neuron of "Long short-term memory and learning-to-learn in
networks of spiking neurons", Bellec, Salaj, Subramoney, Legenstein, Maass, NeurIPS 2018): the
threshold rises by ``γ`` times a low-pass filter ``b`` of the neuron's own spikes,

    b_t = ρ b_{t−1} + (1 − ρ) S_{t−1}          (b₀ = 0)
    θ_t = θ₀ + γ b_t
    subtract reset:  U_t = β U_{t−1} + I_t − θ_{t−1} S_{t−1}     (the threshold it crossed)
    zero reset:      U_t = β (1 − S_{t−1}) U_{t−1} + I_t
    spike:           S_t = H(U_t − θ_t)

the paper's ``A_j(t) = b_j⁰ + β a_j(t)``, ``a_j(t+1) = ρ_j a_j(t) + (1 − ρ_j) z_j(t)`` with its
``b⁰ → θ₀``, ``β → γ`` (``adapt_scale``, the paper's 1.8 by default) and ``ρ = exp(−1/τ_a)``
(``adapt_decay``, default 0.9, i.e. τ_a ≈ 9.5 steps: the paper's τ_a of hundreds of ms is far
longer than the 25-step windows used here). The membrane update is the LIF's above (the paper
scales the input by ``1 − α``; here, as in snnTorch, it is not). ``b`` receives the spike with
its surrogate gradient; ``detach_reset`` detaches only the reset term.

Leaky integrator (the non-spiking output layer of membrane readouts): ``U_t = β U_{t−1} + I_t``,
output the membrane trace ``U_1 … U_T``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import options
from ..errors import ConfigError
from ..options import opt
from . import surrogate as surrogate_mod

__all__ = ["ALIF", "LIF", "LIFState", "LeakyIntegrator", "SpikingNeuron", "Trace", "beta_from_tau"]

RESETS = ("subtract", "zero")

# -- the neuron options, declared once ---------------------------------------------------------
# Each alias carries an option's type, bound, default and help. The neuron layers' ``Options``
# below and the spiking models' (:class:`beyondbp.models.snn.SpikingOptions`) are built from
# them, so a bound is written in one place. ``TimeSteps`` is the bound alone: a layer's
# ``time_steps`` has no default, a model's ``T`` defaults to 25.
TimeSteps = Annotated[int, Field(ge=1)]
Beta = Annotated[float, opt(0.95, "membrane decay per step (1: no leak; a time constant tau gives 1 - 1/tau)",
                            gt=0, le=1)]
Threshold = Annotated[float, opt(1.0, "firing threshold", gt=0)]
Reset = Annotated[Literal[RESETS], opt("subtract", "reset after a spike: subtract the threshold, or to zero")]
DetachReset = Annotated[bool, opt(False, "treat the reset as a constant in the backward pass (as snnTorch does)")]
SurrogateName = Annotated[Literal[tuple(surrogate_mod.names())],
                          opt("arctan", "surrogate derivative of the spike in the backward pass")]
Alpha = Annotated[Annotated[float, Field(gt=0)] | None, opt(None, "the surrogate's sharpness (None: its default)")]
ConstantInput = Annotated[bool, opt(False, "take one [B, ...] input as the current of every step (direct encoding)")]


class _TimeConstant(options.Options):
    tau: float = opt(..., "membrane time constant in time steps", ge=1, accepts="a number >= 1 (in time steps)")


def beta_from_tau(tau: float) -> float:
    """The decay ``β = 1 − 1/τ`` of a membrane time constant ``τ ≥ 1`` (in time steps)."""
    tau = options.parse(_TimeConstant, {"tau": tau}, "beta_from_tau").tau
    return 1.0 - 1.0 / float(tau)


class LIFState(NamedTuple):
    """A neuron layer's state after a step: membrane ``U_t``, spikes ``S_t`` and (ALIF only) the
    adaptation ``b_t``; ``None`` fields mean zero."""

    membrane: Tensor
    spikes: Tensor
    adaptation: Tensor | None = None


class Trace(NamedTuple):
    """What :meth:`SpikingNeuron.run` returns: spikes ``[T, B, ...]``, the membrane ``[T, B, ...]``
    (pre-reset; ``None`` unless ``record_membrane=True``) and the state after the last step."""

    spikes: Tensor
    membrane: Tensor | None
    state: LIFState


def _to_sequence(module: nn.Module, x: Tensor) -> Tensor:
    """``[T·B, ...] -> [T, B, ...]`` (a view when contiguous), or a ConfigError when ``T`` does not divide the rows."""
    steps = module.time_steps
    if x.dim() < 1 or x.shape[0] % steps != 0:
        raise ConfigError(
            f"{type(module).__name__} with time_steps={steps} expects time-major input of shape [T*B, ...], "
            f"got {tuple(x.shape)} whose first dimension is not a multiple of {steps}."
        )
    return x.reshape(steps, x.shape[0] // steps, *x.shape[1:])


class SpikingNeuron(nn.Module):
    """Base of the spiking neuron layers (what :func:`beyondbp.spiking.spike_statistics` counts).

    ``forward(x)``: input currents ``[T·B, ...]`` (or ``[B, ...]`` with ``constant_input``) ->
    spikes ``[T·B, ...]``. Subclasses define :meth:`step`.

    The constructor's arguments are declared in :class:`Options` (a subclass with options of its
    own, as :class:`ALIF`, extends it and receives them through ``**more``); a bad value or an
    unknown name is refused with one sentence (:class:`~beyondbp.errors.ConfigError`) naming
    the layer, e.g. "neuron LIF option beta must be a number > 0 and <= 1, got 1.5".
    """

    class Options(options.Options):
        time_steps: TimeSteps = opt(..., "time steps T (the input's rows are T·B, time-major)")
        beta: Beta
        threshold: Threshold
        reset: Reset
        detach_reset: DetachReset
        surrogate: SurrogateName
        alpha: Alpha
        constant_input: ConstantInput

    def __init__(
        self,
        time_steps: int,
        beta: float = 0.95,
        threshold: float = 1.0,
        reset: str = "subtract",
        detach_reset: bool = False,
        surrogate: str = "arctan",
        alpha: float | None = None,
        constant_input: bool = False,
        **more: Any,
    ) -> None:
        super().__init__()
        options.parse(type(self).Options, dict(
            time_steps=time_steps, beta=beta, threshold=threshold, reset=reset, detach_reset=detach_reset,
            surrogate=surrogate, alpha=alpha, constant_input=constant_input, **more,
        ), f"neuron {type(self).__name__}")
        fn = surrogate_mod.get(surrogate)
        self.time_steps = int(time_steps)
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.reset = reset
        self.detach_reset = bool(detach_reset)
        self.surrogate = surrogate
        self.alpha = float(fn.default_alpha if alpha is None else alpha)
        self.constant_input = bool(constant_input)
        self._spike_fn = fn

    def spike(self, x: Tensor) -> Tensor:
        """``H(x)`` with the layer's surrogate derivative (``x = U − θ``)."""
        return self._spike_fn.apply(x, self.alpha)

    def step(self, current: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """One time step from ``state`` (``None``: zero state): ``(S_t, state_t)``."""
        raise NotImplementedError

    def run(self, current: Tensor, state: LIFState | None = None, record_membrane: bool = False) -> Trace:
        """Run over ``T`` steps: ``current`` is ``[T, B, ...]``, or ``[B, ...]`` used at every one of
        ``time_steps`` steps when the layer has ``constant_input``."""
        steps = self.time_steps if self.constant_input else current.shape[0]
        spikes, membrane = [], []
        for t in range(steps):
            s, state = self.step(current if self.constant_input else current[t], state)
            spikes.append(s)
            if record_membrane:
                membrane.append(state.membrane)
        assert state is not None
        return Trace(torch.stack(spikes), torch.stack(membrane) if record_membrane else None, state)

    def forward(self, x: Tensor) -> Tensor:
        current = x if self.constant_input else _to_sequence(self, x)
        spikes = self.run(current).spikes
        return spikes.reshape(-1, *spikes.shape[2:])

    def _reset_spikes(self, spikes: Tensor) -> Tensor:
        return spikes.detach() if self.detach_reset else spikes

    def extra_repr(self) -> str:
        parts = [f"T={self.time_steps}", f"beta={self.beta:g}", f"threshold={self.threshold:g}",
                 f"reset={self.reset}", f"surrogate={self.surrogate}(alpha={self.alpha:g})"]
        if self.detach_reset:
            parts.append("detach_reset=True")
        if self.constant_input:
            parts.append("constant_input=True")
        return ", ".join(parts)


def _empty_steps(current: Tensor, steps: int, constant: bool) -> Tensor:
    """An uninitialised ``[T, B, ...]`` tensor for a sequence built from ``current`` (``[T, B, ...]``,
    or ``[B, ...]`` repeated when ``constant``), in ``current``'s memory layout: channels-last
    per step when the input comes channels-last from a conv (``snn-cnn``), so neither the LIF
    loop nor the next conv copies it into another layout. Layout only; the values are the same."""
    if not constant:
        return torch.empty_like(current)
    if current.dim() == 4 and not current.is_contiguous() and current.is_contiguous(memory_format=torch.channels_last):
        b, c, h, w = current.shape
        return torch.empty((steps * b, c, h, w), dtype=current.dtype, device=current.device,
                           memory_format=torch.channels_last).view(steps, b, c, h, w)
    return current.new_empty((steps, *current.shape))


class _LIFSequence(Function):
    """The whole LIF sequence as one autograd node (what :meth:`LIF.forward` uses).

    Forward: the loop of the module docstring without autograd, keeping the membranes ``U_t``.
    Backward, from ``g_t = dL/dS_t``, in reverse time with ``δ_t = dL/dU_t`` (``δ_T = 0`` past
    the end) and ``σ'_t = σ'(U_t − θ)``; the bracketed terms vanish with ``detach_reset``:

        subtract:  δ_t = σ'_t (g_t − [θ δ_{t+1}]) + β δ_{t+1}
        zero:      δ_t = σ'_t (g_t − [β U_t δ_{t+1}]) + β (1 − S_t) δ_{t+1}

    and ``dL/dI_t = δ_t`` (summed over ``t`` for a constant input). The same gradients as the
    step-by-step graph of :meth:`SpikingNeuron.run` (tests/test_spiking.py checks both against
    each other and against this recurrence), with one node instead of ~10 per step.
    """

    @staticmethod
    def forward(ctx, current: Tensor, layer: "LIF") -> Tensor:  # type: ignore[override]
        steps = layer.time_steps if layer.constant_input else current.shape[0]
        membranes = _empty_steps(current, steps, layer.constant_input)
        spikes = _empty_steps(current, steps, layer.constant_input)
        beta, theta = layer.beta, layer.threshold
        for t in range(steps):
            i_t = current if layer.constant_input else current[t]
            u = membranes[t]
            if t == 0:
                u.copy_(i_t)
            elif layer.reset == "subtract":
                torch.add(i_t, membranes[t - 1], alpha=beta, out=u).sub_(spikes[t - 1], alpha=theta)
            else:
                torch.mul(membranes[t - 1], 1 - spikes[t - 1], out=u).mul_(beta).add_(i_t)
            torch.gt(u, theta, out=spikes[t])
        ctx.save_for_backward(membranes, spikes)
        ctx.settings = (beta, theta, layer.reset, not layer.detach_reset, layer._spike_fn.derivative, layer.alpha,
                        layer.constant_input)
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        membranes, spikes = ctx.saved_tensors
        beta, theta, reset, keep, derivative, alpha, constant = ctx.settings
        grad_in = torch.empty_like(membranes)
        delta: Tensor | None = None
        for t in range(membranes.shape[0] - 1, -1, -1):
            u = membranes[t]
            slope = derivative(u - theta, alpha)
            d = grad_in[t]  # δ_t is written in place
            if delta is None:
                torch.mul(grad[t], slope, out=d)
            elif reset == "subtract":
                g = grad[t] - theta * delta if keep else grad[t]
                torch.addcmul(beta * delta, slope, g, out=d)
            else:
                g = grad[t] - beta * u * delta if keep else grad[t]
                torch.addcmul(beta * (1 - spikes[t]) * delta, slope, g, out=d)
            delta = d
        if constant:
            return grad_in.sum(0), None
        return grad_in, None


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire neurons (see the module docstring for the equations).

    :meth:`forward` runs the sequence as one autograd node (``_LIFSequence``: same values and
    gradients as :meth:`run`'s step-by-step graph, cheaper); :meth:`run` and :meth:`step` build
    the graph step by step (and can start from a given state or record the membrane)."""

    def forward(self, x: Tensor) -> Tensor:
        current = x if self.constant_input else _to_sequence(self, x)
        spikes = _LIFSequence.apply(current, self)
        return spikes.reshape(-1, *spikes.shape[2:])

    def step(self, current: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        if state is None:
            membrane = current
        else:
            r = self._reset_spikes(state.spikes)
            if self.reset == "subtract":
                membrane = self.beta * state.membrane + current - self.threshold * r
            else:
                membrane = self.beta * (1 - r) * state.membrane + current
        s = self.spike(membrane - self.threshold)
        return s, LIFState(membrane, s)


class ALIF(SpikingNeuron):
    """LIF neurons with an adaptive threshold, LSNN-style (see the module docstring).

    ``adapt_decay`` ρ in ``[0, 1)`` (default 0.9), ``adapt_scale`` γ ≥ 0 (default 1.8, Bellec et
    al.'s β); the other options are :class:`LIF`'s.
    """

    class Options(SpikingNeuron.Options):
        adapt_decay: float = opt(0.9, "decay rho of the spike filter b that raises the threshold", ge=0, lt=1)
        adapt_scale: float = opt(1.8, "gamma: how far one unit of b raises the threshold", ge=0)

    def __init__(self, time_steps: int, *args: Any, adapt_decay: float = 0.9, adapt_scale: float = 1.8, **kwargs: Any) -> None:
        super().__init__(time_steps, *args, adapt_decay=adapt_decay, adapt_scale=adapt_scale, **kwargs)
        self.adapt_decay = float(adapt_decay)
        self.adapt_scale = float(adapt_scale)

    def thresholds(self, adaptation: Tensor | None) -> Tensor | float:
        """``θ₀ + γ b`` (the base threshold when ``b`` is ``None``, i.e. zero)."""
        return self.threshold if adaptation is None else self.threshold + self.adapt_scale * adaptation

    def step(self, current: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        if state is None:
            membrane, adaptation = current, None
        else:
            r = self._reset_spikes(state.spikes)
            previous = state.adaptation
            if self.reset == "subtract":
                membrane = self.beta * state.membrane + current - self.thresholds(previous) * r
            else:
                membrane = self.beta * (1 - r) * state.membrane + current
            decayed = 0.0 if previous is None else self.adapt_decay * previous
            adaptation = decayed + (1 - self.adapt_decay) * state.spikes
        s = self.spike(membrane - self.thresholds(adaptation))
        if adaptation is None:
            adaptation = torch.zeros_like(membrane)
        return s, LIFState(membrane, s, adaptation)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", adapt_decay={self.adapt_decay:g}, adapt_scale={self.adapt_scale:g}"


class LeakyIntegrator(nn.Module):
    """Non-spiking leaky integrator: ``U_t = β U_{t−1} + I_t`` from ``U₀ = 0``; ``forward`` maps
    currents ``[T·B, ...]`` (or ``[B, ...]`` with ``constant_input``) to the membrane trace
    ``[T·B, ...]``. The output layer of membrane readouts."""

    class Options(options.Options):
        time_steps: TimeSteps = opt(..., "time steps T (the input's rows are T·B, time-major)")
        beta: Beta
        constant_input: ConstantInput

    def __init__(self, time_steps: int, beta: float = 0.95, constant_input: bool = False) -> None:
        super().__init__()
        options.parse(self.Options, {"time_steps": time_steps, "beta": beta, "constant_input": constant_input},
                      "neuron LeakyIntegrator")
        self.time_steps = int(time_steps)
        self.beta = float(beta)
        self.constant_input = bool(constant_input)

    def step(self, current: Tensor, state: tuple[Tensor] | None = None) -> tuple[Tensor, tuple[Tensor]]:
        """One time step from ``state`` (``None``: zero; else the 1-tuple ``(U_{t−1},)``):
        ``(U_t, (U_t,))`` — the same call shape as :meth:`LIF.step`, for code running its own loop."""
        membrane = current if state is None else self.beta * state[0] + current
        return membrane, (membrane,)

    def forward(self, x: Tensor) -> Tensor:
        current = x if self.constant_input else _to_sequence(self, x)
        state: tuple[Tensor] | None = None
        trace = []
        for t in range(self.time_steps):
            membrane, state = self.step(current if self.constant_input else current[t], state)
            trace.append(membrane)
        out = torch.stack(trace)
        return out.reshape(-1, *out.shape[2:])

    def extra_repr(self) -> str:
        return f"T={self.time_steps}, beta={self.beta:g}" + (", constant_input=True" if self.constant_input else "")
