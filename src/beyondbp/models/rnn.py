"""Recurrent models: the wave RNN (``wrnn``), the identity-initialised ReLU RNN (``irnn``) and
an ``lstm`` baseline.

Input ``(N, *input_shape)`` is read as a sequence: ``input_shape = (T, d)`` gives ``T`` steps of
``d`` channels (``(T,)`` gives ``d`` = 1; a longer shape such as an image ``(1, H, W)`` is read
row by row, ``T`` = the product of all but the last dimension). Output: logits (or regression
outputs) ``(N, num_classes)`` read from the last hidden state (``outputs="last"``), or
``(N, T, num_classes)``, one per step (``outputs="all"``, for per-step targets such as ``copy``).

``wrnn`` — "Traveling Waves Encode the Recent Past and Enhance Sequence Learning" (Keller, Muller,
    Sejnowski, Welling; ICLR 2024). The hidden state is ``channels`` rings of ``ring`` neurons:

        h_t = ReLU(u ⋆ h_{t−1} + V x_t + b)

    ``u ⋆`` is a circular 3-tap ``nn.Conv1d(channels, channels, 3, padding_mode="circular")``
    (module ``recurrent``), initialised (``init="shift"``, the authors' "fwd") as a Dirac kernel
    rolled by one tap (all weight on the third tap, bias as PyTorch draws it), so that with no
    input the activity of every ring moves one neuron per step: a travelling wave of speed 1,
    ``h_t[:, c, i] = h_{t−1}[:, c, i + 1]`` (indices mod ``ring``).
    ``init="identity"`` (their "eye") keeps the Dirac kernel, ``"random"`` PyTorch's init. The
    encoder ``V`` (``encoder``, an ``nn.Linear(d, channels·ring)``) with ``solo_init=True`` (the
    authors' ``solo_init``) is zero except a weight of 1 from every input channel to neuron 0 of
    every ring, zero bias: the input enters each ring at one place and travels round it, so the
    ring holds the last ``ring`` inputs in order (neuron ``−k mod ring`` holds ``x_{t−k}``). Otherwise ``V`` ~ N(0, 0.001²) as theirs.
    ``freeze_recurrence`` / ``freeze_encoder`` set ``requires_grad=False`` on those modules'
    parameters: with both, a wave reservoir whose readout alone learns.
``irnn`` — Le, Jaitly & Hinton 2015 as in the same authors' ``rnn_model.py``: ``h_t = ReLU(W h_{t−1}
    + V x_t + b)``, ``W`` (``recurrent``, an ``nn.Linear(hidden, hidden)``) the identity with zero
    bias, ``V`` ~ N(0, 0.001²). ``freeze_recurrence`` / ``freeze_encoder`` as for ``wrnn`` (with both,
    an identity reservoir whose readout alone learns).
``lstm`` — ``torch.nn.LSTM`` (one layer; torch's own fused kernel) and a linear readout.

Matched sizes: ``params=K`` on ``irnn`` and ``lstm`` picks the hidden size whose parameter count
(for this input and output size) is closest to ``K`` and overrides ``hidden``; e.g. with the
adding task's ``wrnn`` (``channels=27``, ``ring=100``, 13,015 parameters) ``irnn`` gets
``hidden=112`` and ``lstm`` ``hidden=55``. :func:`hidden_for_params` is the same search as a function,
and :func:`parameter_count` counts a configuration without building it.

Time loops: each step costs one call of the encoder on ``x_t`` and of the recurrent module, an
addition and a ReLU — the arithmetic of the step and one small Python iteration, ordinary
autograd storing what BPTT needs. (Encoding all ``T`` steps in one call was measured slower on
CPU: its weight gradient is one long, skinny matrix product; ``bench/wave_rnn.py speed``.) Because the recurrent module is called as
a module at every step, the feedback-path rules (``fa``, ``usf``, ``frsf``, ``brsf``, ``kp``; ``pfa`` with ``B·R``)
replace its backward through time by their feedback matrix, and ``dfa`` sees each step's input
to it as a feedback point (see :mod:`beyondbp.rules.feedback_alignment` and
:mod:`beyondbp.rules.dfa`). ``lstm``'s gates live inside ``nn.LSTM``, which those rules refuse.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Sequence

import torch
from torch import Tensor, nn

from beyondbp.errors import ConfigError
from beyondbp.models.mlp import check_classes, check_shape
from beyondbp.options import Options, opt, parse

__all__ = ["IRNN", "LSTMModel", "WaveRNN", "hidden_for_params", "parameter_count", "sequence_shape"]

Outputs = Literal["last", "all"]


def sequence_shape(input_shape: Sequence[int], model: str) -> tuple[int, int]:
    """``(T, d)`` of a sample of ``input_shape`` read as a sequence (see the module docstring)."""
    shape = check_shape(input_shape, model)
    if len(shape) == 1:
        return shape[0], 1
    return math.prod(shape[:-1]), shape[-1]


def _as_sequence(x: Tensor, steps: int, channels: int) -> Tensor:
    return x.reshape(x.shape[0], steps, channels)


def _freeze(model: nn.Module, recurrence: bool, encoder: bool) -> None:
    """``requires_grad=False`` on the parameters of ``model.recurrent`` / ``model.encoder``."""
    for module, frozen in ((model.recurrent, recurrence), (model.encoder, encoder)):
        for p in module.parameters():
            p.requires_grad_(not frozen)


class _Recurrent(nn.Module):
    """Shared parts: the input as ``T`` steps of ``(N, d)``, the readout."""

    steps: int
    channels_in: int
    outputs: str
    #: The modules the forward pass calls once per time step: a rule that needs each weight
    #: layer to run once per forward pass (softhebb) refuses the model at attach by this.
    per_step_modules: ClassVar[tuple[str, ...]] = ("recurrent", "encoder")

    def _steps(self, x: Tensor) -> tuple[Tensor, ...]:
        # unbind: one backward node for all steps (indexing x[:, t] of an x that needs a gradient
        # would zero-fill x's whole size per step in the backward pass)
        return _as_sequence(x, self.steps, self.channels_in).unbind(1)

    def _read(self, hidden: Tensor | list[Tensor]) -> Tensor:
        if self.outputs == "all":
            return self.readout(torch.stack(hidden, dim=1))
        return self.readout(hidden)


class WaveRNN(_Recurrent):
    """The wave RNN (see the module docstring). Modules: ``encoder``, ``recurrent``, ``act``,
    ``readout``. Shapes: ``(N, *input_shape) -> (N, num_classes)`` or ``(N, T, num_classes)``."""

    class Options(Options):
        channels: int = opt(27, "number of rings (channels of the circular convolution)", ge=1)
        ring: int = opt(100, "neurons per ring", ge=3)
        init: Literal["shift", "identity", "random"] = opt("shift", "recurrent kernel: a one-step shift (a wave), identity, or PyTorch's init")
        solo_init: bool = opt(True, "encoder feeds the input to neuron 0 of every ring only (else N(0, 0.001²))")
        freeze_recurrence: bool = opt(False, "do not train the recurrent convolution")
        freeze_encoder: bool = opt(False, "do not train the encoder")
        outputs: Outputs = opt("last", "read out the last hidden state, or every step's (per-step targets)")

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 27, ring: int = 100,
                 init: str = "shift", solo_init: bool = True, freeze_recurrence: bool = False,
                 freeze_encoder: bool = False, outputs: str = "last") -> None:
        super().__init__()
        parse(self.Options, dict(channels=channels, ring=ring, init=init, solo_init=solo_init,
                                 freeze_recurrence=freeze_recurrence, freeze_encoder=freeze_encoder,
                                 outputs=outputs), "model 'wrnn'")
        self.steps, self.channels_in = sequence_shape(input_shape, "wrnn")
        self.input_shape = check_shape(input_shape, "wrnn")
        self.num_classes = check_classes(num_classes, "wrnn")
        self.n_channels, self.ring, self.outputs = channels, ring, outputs
        self.encoder = nn.Linear(self.channels_in, channels * ring)
        self.recurrent = nn.Conv1d(channels, channels, 3, padding=1, padding_mode="circular")
        self.act = nn.ReLU()
        self.readout = nn.Linear(channels * ring, self.num_classes)
        with torch.no_grad():
            if solo_init:
                self.encoder.weight.zero_()
                self.encoder.bias.zero_()
                self.encoder.weight.view(channels, ring, self.channels_in)[:, 0] = 1.0
            else:
                self.encoder.weight.normal_(0.0, 0.001)
            if init != "random":
                kernel = torch.zeros(channels, channels, 3)
                nn.init.dirac_(kernel)
                if init == "shift":
                    kernel = torch.roll(kernel, 1, -1)
                self.recurrent.weight.copy_(kernel)
        _freeze(self, freeze_recurrence, freeze_encoder)

    def forward(self, x: Tensor) -> Tensor:
        shape = (x.shape[0], self.n_channels, self.ring)
        h = torch.zeros(shape, dtype=x.dtype, device=x.device)
        states = []
        for x_t in self._steps(x):
            h = self.act(self.recurrent(h) + self.encoder(x_t).view(shape))
            if self.outputs == "all":
                states.append(h.flatten(1))
        return self._read(states if self.outputs == "all" else h.flatten(1))


class IRNN(_Recurrent):
    """The identity-initialised ReLU RNN (see the module docstring). Modules: ``encoder``,
    ``recurrent``, ``act``, ``readout``."""

    class Options(Options):
        hidden: int = opt(100, "hidden units", ge=1)
        params: int | None = opt(None, "pick hidden so the parameter count is closest to this (overrides hidden)", ge=1)
        init: Literal["identity", "random"] = opt("identity", "recurrent matrix: identity with zero bias, or PyTorch's init")
        freeze_recurrence: bool = opt(False, "do not train the recurrent matrix", identity_default=True)
        freeze_encoder: bool = opt(False, "do not train the encoder", identity_default=True)
        outputs: Outputs = opt("last", "read out the last hidden state, or every step's (per-step targets)")

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 100, params: int | None = None,
                 init: str = "identity", freeze_recurrence: bool = False, freeze_encoder: bool = False,
                 outputs: str = "last") -> None:
        super().__init__()
        parse(self.Options, dict(hidden=hidden, params=params, init=init, freeze_recurrence=freeze_recurrence,
                                 freeze_encoder=freeze_encoder, outputs=outputs), "model 'irnn'")
        self.steps, self.channels_in = sequence_shape(input_shape, "irnn")
        self.input_shape = check_shape(input_shape, "irnn")
        self.num_classes = check_classes(num_classes, "irnn")
        if params is not None:
            hidden = hidden_for_params("irnn", input_shape, num_classes, params)
        self.hidden, self.outputs = hidden, outputs
        self.encoder = nn.Linear(self.channels_in, hidden)
        self.recurrent = nn.Linear(hidden, hidden)
        self.act = nn.ReLU()
        self.readout = nn.Linear(hidden, self.num_classes)
        with torch.no_grad():
            self.encoder.weight.normal_(0.0, 0.001)
            if init == "identity":
                nn.init.eye_(self.recurrent.weight)
                self.recurrent.bias.zero_()
        _freeze(self, freeze_recurrence, freeze_encoder)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.zeros(x.shape[0], self.hidden, dtype=x.dtype, device=x.device)
        states = []
        for x_t in self._steps(x):
            h = self.act(self.recurrent(h) + self.encoder(x_t))
            if self.outputs == "all":
                states.append(h)
        return self._read(states if self.outputs == "all" else h)


class LSTMModel(_Recurrent):
    """One ``nn.LSTM`` layer (module ``lstm``, torch's kernel) and a linear ``readout``."""

    class Options(Options):
        hidden: int = opt(100, "hidden units", ge=1)
        params: int | None = opt(None, "pick hidden so the parameter count is closest to this (overrides hidden)", ge=1)
        outputs: Outputs = opt("last", "read out the last hidden state, or every step's (per-step targets)")

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 100, params: int | None = None,
                 outputs: str = "last") -> None:
        super().__init__()
        parse(self.Options, dict(hidden=hidden, params=params, outputs=outputs), "model 'lstm'")
        self.steps, self.channels_in = sequence_shape(input_shape, "lstm")
        self.input_shape = check_shape(input_shape, "lstm")
        self.num_classes = check_classes(num_classes, "lstm")
        if params is not None:
            hidden = hidden_for_params("lstm", input_shape, num_classes, params)
        self.hidden, self.outputs = hidden, outputs
        self.lstm = nn.LSTM(self.channels_in, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(_as_sequence(x, self.steps, self.channels_in))
        return self.readout(out if self.outputs == "all" else out[:, -1])


def parameter_count(name: str, input_shape: Sequence[int], num_classes: int, hidden: int = 100,
                    channels: int = 27, ring: int = 100) -> int:
    """Parameters of ``wrnn`` (``channels``, ``ring``), ``irnn`` or ``lstm`` (``hidden``), counted
    from the shapes (trainable or frozen alike)."""
    _, d = sequence_shape(input_shape, name)
    k = check_classes(num_classes, name)
    if name == "wrnn":
        units = channels * ring
        return (d + 1) * units + channels * (3 * channels + 1) + (units + 1) * k
    if name == "irnn":
        return (d + 1) * hidden + hidden * (hidden + 1) + (hidden + 1) * k
    if name == "lstm":
        return 4 * hidden * (d + hidden + 2) + (hidden + 1) * k
    raise ConfigError(f"parameter_count knows wrnn, irnn and lstm, not {name!r}.")


def hidden_for_params(name: str, input_shape: Sequence[int], num_classes: int, params: int) -> int:
    """The hidden size of ``irnn`` or ``lstm`` whose :func:`parameter_count` is closest to
    ``params`` (the smaller one on a tie)."""
    if name not in ("irnn", "lstm"):
        raise ConfigError(f"hidden_for_params matches irnn or lstm, not {name!r}.")
    best, best_gap, hidden = 1, None, 1
    while True:
        gap = abs(parameter_count(name, input_shape, num_classes, hidden=hidden) - params)
        if best_gap is not None and gap > best_gap:
            return best
        if best_gap is None or gap < best_gap:
            best, best_gap = hidden, gap
        hidden += 1
