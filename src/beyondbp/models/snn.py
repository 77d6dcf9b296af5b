"""Spiking networks: ``snn-mlp`` (snnTorch tutorial 5) and ``snn-cnn`` (snnTorch tutorial 6).

Both are ``nn.Sequential`` chains of an encoder, standard ``nn.Linear`` / ``nn.Conv2d`` /
``nn.MaxPool2d`` / ``nn.Flatten`` layers, spiking neuron layers from :mod:`beyondbp.spiking`
and a readout. A static batch ``(B, *input_shape)`` is encoded to ``T`` time steps, which flow
time-major and flattened into the batch (``[T·B, ...]``): each Linear / Conv runs once over all
steps with its weights shared over time, each neuron layer loops over ``t``, and the readout
returns logits ``(B, num_classes)``. Training by ``backprop`` is backprop through time with the
surrogate gradient; the feedback-path rules wrap the Linear / Conv layers as on any model.

``snn-mlp``  ``encoder → flatten → fc1: Linear(in, 1000) → lif1 → out: Linear(1000, C) →
             out_neurons → readout``; ``widths`` sets the hidden layers (default one of 1000, as
             the tutorial's 784-1000-10 network).
``snn-cnn``  ``encoder → conv1: Conv2d(C, 12, 5) → pool1: MaxPool2d(2) → lif1 → conv2: Conv2d(12,
             64, 5) → pool2: MaxPool2d(2) → lif2 → flatten → out: Linear(64·h·w, C) → out_neurons
             → readout`` (12C5-MP2-64C5-MP2-FC10; 1024 features reach ``out`` for 28×28 images).
             Needs ``(channels, height, width)`` images of at least 16×16 pixels.

``out_neurons`` is a spiking layer (``readout="count"``: logits = spike counts) or a non-spiking
leaky integrator (``readout="membrane"``: logits = mean membrane over time); see
:mod:`beyondbp.spiking.encoding`. With the ``direct`` encoder (the default, as in the tutorials)
the first spiking layer takes the constant current itself, so ``fc1`` / ``conv1`` (and ``pool1``)
run once per sample rather than ``T`` times. Defaults as the tutorials: ``T=25``, ``beta=0.95``,
threshold 1, subtract reset, arctan surrogate (α = 2). The tutorials accompany "Training Spiking
Neural Networks Using Lessons From Deep Learning" (Eshraghian, Ward, Neftci, Wang, Lenz, Dwivedi,
Bennamoun, Jeong, Lu; Proceedings of the IEEE 2023).

Options: ``T`` (>= 1), ``beta`` (in (0, 1]), ``threshold`` (> 0), ``reset`` (``"subtract"`` /
``"zero"``), ``detach_reset``, ``surrogate`` (see :mod:`beyondbp.spiking.surrogate`), ``alpha``
(``None``: the surrogate's default), ``encoder`` (``"direct"`` / ``"rate"`` / ``"latency"``),
``readout`` (``"count"`` / ``"membrane"``), ``neuron`` (``"lif"`` / ``"alif"`` for the hidden
layers), and ``widths`` (snn-mlp) or ``channels`` (snn-cnn).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from beyondbp.errors import ConfigError
from beyondbp.models.mlp import check_classes, check_shape
from beyondbp.options import Options, opt, parse
from beyondbp.spiking import ALIF, LIF, LeakyIntegrator, MeanOverTime, SpikeCount, SpikingNeuron, make_encoder
from beyondbp.spiking.neurons import Alpha, Beta, DetachReset, Reset, SurrogateName, Threshold, TimeSteps

__all__ = ["SNNConv", "SNNMLP", "SpikingOptions"]


class ChannelsLastConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs its convolution in the channels-last memory format.

    The parameter keeps its ordinary (contiguous) layout; only the convolution call sees a
    channels-last copy of the weight, so oneDNN computes the output, and its gradients, in NHWC
    and returns the output channels-last. Same values: each output element is the same sum of
    products (tests/test_spiking.py checks the spikes and gradients of snn-cnn against plain
    ``nn.Conv2d``). Why: on CPU, ``snn-cnn``'s second conv and its max pooling run over all
    ``T·B`` rows at once, and both are faster channels-last (the pooling then vectorises over the
    64 channels instead of walking 8×8 planes with int64 indices).
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        cl = torch.channels_last
        # (with one input channel oneDNN may still answer NCHW: the output is made channels-last)
        return super()._conv_forward(input, weight.contiguous(memory_format=cl), bias).contiguous(memory_format=cl)

class SpikingOptions(Options):
    """The options both spiking models share. The neuron options (``T``'s bound, ``beta``,
    ``threshold``, ``reset``, ``detach_reset``, ``surrogate``, ``alpha``) are the neuron layers'
    own declarations (:mod:`beyondbp.spiking.neurons`), so each bound is written once."""

    T: TimeSteps = opt(25, "time steps per sample")
    beta: Beta
    threshold: Threshold
    reset: Reset
    detach_reset: DetachReset
    surrogate: SurrogateName
    alpha: Alpha
    encoder: Literal["direct", "rate", "latency"] = opt("direct", "how a static sample becomes T steps")
    readout: Literal["count", "membrane"] = opt("count", "logits: output spike counts, or mean membrane of a non-spiking output layer")
    neuron: Literal["lif", "alif"] = opt("lif", "hidden neurons: LIF, or LSNN-style adaptive threshold (ALIF)")


_SPIKING_KEYS = tuple(SpikingOptions.model_fields)


class _Spiking(nn.Sequential):
    """Shared construction: neuron factories and the readout."""

    def _setup(self, opts: dict[str, Any]) -> None:
        self.time_steps = int(opts["T"])
        self.spiking_options = {k: opts[k] for k in _SPIKING_KEYS}

    def _neurons(self, constant_input: bool = False, hidden: bool = True) -> nn.Module:
        o = self.spiking_options
        cls = ALIF if (hidden and o["neuron"] == "alif") else LIF
        return cls(
            o["T"], beta=o["beta"], threshold=o["threshold"], reset=o["reset"], detach_reset=o["detach_reset"],
            surrogate=o["surrogate"], alpha=o["alpha"], constant_input=constant_input,
        )

    def structure(self) -> dict[str, Any]:
        """The time-step layout (the structure protocol of :func:`beyondbp.rules.common.model_structure`):
        the ``encoder``, the neuron layers in order (the output layer's last) and the ``readout``."""
        names = [name for name, module in self.named_children() if isinstance(module, (SpikingNeuron, LeakyIntegrator))]
        return {"encoder": "encoder", "neurons": names, "readout": "readout"}

    def _output(self, constant_input: bool) -> list[tuple[str, nn.Module]]:
        o = self.spiking_options
        if o["readout"] == "count":
            return [("out_neurons", self._neurons(constant_input, hidden=False)), ("readout", SpikeCount(o["T"]))]
        return [
            ("out_neurons", LeakyIntegrator(o["T"], beta=o["beta"], constant_input=constant_input)),
            ("readout", MeanOverTime(o["T"])),
        ]


def _spiking_values(**kwargs: Any) -> dict[str, Any]:
    return {k: kwargs[k] for k in _SPIKING_KEYS}


class SNNMLP(_Spiking):
    """``snn-mlp``: Linear → LIF layers, then a Linear output layer with spiking (count readout)
    or integrating (membrane readout) neurons. Shapes: ``(B, *input_shape) -> (B, num_classes)``."""

    class Options(SpikingOptions):
        widths: list[Annotated[int, Field(ge=1)]] = opt(
            (1000,), "hidden layer widths, in order (each Linear followed by spiking neurons)",
            accepts="a list of integers >= 1, such as [1000]",
        )

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (1000,), T: int = 25,
        beta: float = 0.95, threshold: float = 1.0, reset: str = "subtract", detach_reset: bool = False,
        surrogate: str = "arctan", alpha: float | None = None, encoder: str = "direct", readout: str = "count",
        neuron: str = "lif",
    ) -> None:
        opts = dict(widths=widths, **_spiking_values(
            T=T, beta=beta, threshold=threshold, reset=reset, detach_reset=detach_reset, surrogate=surrogate,
            alpha=alpha, encoder=encoder, readout=readout, neuron=neuron,
        ))
        parse(self.Options, opts, "model 'snn-mlp'")
        input_shape = check_shape(input_shape, "snn-mlp")
        num_classes = check_classes(num_classes, "snn-mlp")
        super().__init__()
        self._setup(opts)
        constant = encoder == "direct"  # the first neurons take the constant current
        layers: list[tuple[str, nn.Module]] = [("encoder", make_encoder(encoder, T)), ("flatten", nn.Flatten())]
        fan_in = math.prod(input_shape)
        for i, width in enumerate(widths, start=1):
            layers += [(f"fc{i}", nn.Linear(fan_in, int(width))), (f"lif{i}", self._neurons(constant))]
            constant = False
            fan_in = int(width)
        layers.append(("out", nn.Linear(fan_in, num_classes)))
        layers += self._output(constant)
        for name, module in layers:
            self.add_module(name, module)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.widths = tuple(int(w) for w in widths)


class SNNConv(_Spiking):
    """``snn-cnn``: 12C5-MP2-64C5-MP2-FC10 with spiking neurons after each pooling (snnTorch
    tutorial 6). Shapes: ``(B, C, H, W) -> (B, num_classes)``; ``input_shape`` is ``(C, H, W)``."""

    class Options(SpikingOptions):
        channels: list[Annotated[int, Field(ge=1)]] = opt(
            (12, 64), "output channels of the two 5x5 conv layers",
            accepts="a list of two integers >= 1, such as [12, 64]", min_length=2, max_length=2,
        )

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (12, 64), T: int = 25,
        beta: float = 0.95, threshold: float = 1.0, reset: str = "subtract", detach_reset: bool = False,
        surrogate: str = "arctan", alpha: float | None = None, encoder: str = "direct", readout: str = "count",
        neuron: str = "lif",
    ) -> None:
        opts = dict(channels=channels, **_spiking_values(
            T=T, beta=beta, threshold=threshold, reset=reset, detach_reset=detach_reset, surrogate=surrogate,
            alpha=alpha, encoder=encoder, readout=readout, neuron=neuron,
        ))
        parse(self.Options, opts, "model 'snn-cnn'")
        input_shape = check_shape(input_shape, "snn-cnn")
        num_classes = check_classes(num_classes, "snn-cnn")
        if len(input_shape) != 3:
            raise ConfigError(
                f"snn-cnn needs image inputs of shape (channels, height, width), got input_shape={input_shape}; "
                "use snn-mlp for other inputs."
            )
        c_in, height, width = input_shape
        side = lambda s: ((s - 4) // 2 - 4) // 2  # noqa: E731 - two (5x5 conv, 2x2 pool) stages
        if side(height) < 1 or side(width) < 1:
            raise ConfigError(
                f"snn-cnn needs images of at least 16x16 pixels (two 5x5 conv + 2x2 pool stages), got {height}x{width}; "
                "use snn-mlp for smaller images."
            )
        super().__init__()
        self._setup(opts)
        c1, c2 = (int(c) for c in channels)
        layers: list[tuple[str, nn.Module]] = [
            ("encoder", make_encoder(encoder, T)),
            ("conv1", ChannelsLastConv2d(c_in, c1, kernel_size=5)),
            ("pool1", nn.MaxPool2d(2)),
            ("lif1", self._neurons(constant_input=encoder == "direct")),
            ("conv2", ChannelsLastConv2d(c1, c2, kernel_size=5)),
            ("pool2", nn.MaxPool2d(2)),
            ("lif2", self._neurons()),
            ("flatten", nn.Flatten()),
            ("out", nn.Linear(c2 * side(height) * side(width), num_classes)),
            *self._output(False),
        ]
        for name, module in layers:
            self.add_module(name, module)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.channels = (c1, c2)
