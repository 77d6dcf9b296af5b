"""Convolutional networks: LeNet-5 for 28x28 / 32x32 images, and the MNIST-1D reference CNN.

Both are ``nn.Sequential`` subclasses built only from standard layers (``nn.Conv2d``,
``nn.Conv1d``, ``nn.Linear``, pooling, activations, ``nn.Flatten``), so rules can find and wrap
their trainable layers from outside.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from beyondbp.errors import ConfigError
from beyondbp.models.mlp import Activation, check_classes, check_shape, make_activation
from beyondbp.options import Options, opt, parse

__all__ = ["AsChannels", "CNN1D", "LeNet"]


class LeNet(nn.Sequential):
    """LeNet-5 in the form BioTorch uses for MNIST / Fashion-MNIST.

    ``conv1: Conv2d(C, 6, 5, padding=p) -> act -> MaxPool2d(2) -> conv2: Conv2d(6, 16, 5) -> act
    -> MaxPool2d(2) -> flatten -> fc1: Linear(16*h*w, 120) -> act -> fc2: Linear(120, 84) -> act
    -> out: Linear(84, num_classes)``.

    The natural input is ``(C, 32, 32)`` (no padding; 16x5x5 = 400 features reach ``fc1``).
    With ``padding=None`` (automatic), inputs smaller than 32 pixels on a side get ``padding=2``
    on the first convolution, so 28x28 images follow the classic 32x32 geometry exactly (again
    400 features). Other sizes work too: the flattened size is computed from ``input_shape``.
    Inputs too small for two 5x5-convolution + 2x2-pooling stages (with padding 2: under 12
    pixels a side, e.g. the 8x8 ``digits``) raise :class:`~beyondbp.errors.ConfigError`.
    ``activation`` defaults to ReLU (BioTorch); ``"tanh"`` gives the 1998 flavour.

    Shapes: ``(N, C, H, W) -> (N, num_classes)``; ``input_shape`` is ``(C, H, W)``.
    """

    class Options(Options):
        activation: Activation = opt("relu", "activation after every conv and hidden Linear layer")
        padding: int | None = opt(None, "zero padding of the first conv; None: 2 below 32 pixels, else 0", ge=0)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        activation: str = "relu",
        padding: int | None = None,
    ) -> None:
        parse(self.Options, dict(activation=activation, padding=padding), "model 'lenet'")
        input_shape = check_shape(input_shape, "lenet")
        num_classes = check_classes(num_classes, "lenet")
        if len(input_shape) != 3:
            raise ConfigError(
                f"lenet needs image inputs of shape (channels, height, width), got input_shape={input_shape}."
            )
        channels, height, width = input_shape
        if padding is None:
            padding = 2 if min(height, width) < 32 else 0

        def out_side(side: int) -> int:
            side = (side + 2 * padding - 4) // 2  # conv1 (5x5) + pool
            return (side - 4) // 2  # conv2 (5x5) + pool

        out_h, out_w = out_side(height), out_side(width)
        if out_h < 1 or out_w < 1:
            raise ConfigError(
                f"lenet needs images of at least {16 - 2 * padding}x{16 - 2 * padding} pixels with padding={padding} "
                f"(28x28 or 32x32 is the intended size), got {height}x{width}; use the mlp model for smaller images."
            )
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(channels, 6, kernel_size=5, padding=padding),
                act1=make_activation(activation),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(6, 16, kernel_size=5),
                act2=make_activation(activation),
                pool2=nn.MaxPool2d(2),
                flatten=nn.Flatten(),
                fc1=nn.Linear(16 * out_h * out_w, 120),
                act3=make_activation(activation),
                fc2=nn.Linear(120, 84),
                act4=make_activation(activation),
                out=nn.Linear(84, num_classes),
            )
        )
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.padding = padding


class AsChannels(nn.Module):
    """Reshape a flat ``(N, L)`` batch to ``(N, channels, L // channels)``; pass 3-D input through.

    A layer rather than code in ``forward`` so that rules walking a model's children in order
    (layer-local rules) still see every step of the computation.
    """

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x.view(x.shape[0], self.channels, -1)
        return x

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class CNN1D(nn.Sequential):
    """The MNIST-1D reference convolutional network.

    ``to_channels -> conv1: Conv1d(C, ch, 5, stride 2, padding 1) -> ReLU -> conv2: Conv1d(ch, ch, 3,
    stride 2, padding 1) -> ReLU -> conv3: Conv1d(ch, ch, 3, stride 2, padding 1) -> ReLU -> flatten
    -> out: Linear(ch * L3, num_classes)`` with ``ch = channels`` (25) and ``L3`` the length after
    the three strided convolutions (40 -> 19 -> 10 -> 5, so 125 features for MNIST-1D).

    ``input_shape`` is ``(L,)`` (one channel; a ``(N, L)`` batch is viewed as ``(N, 1, L)``) or
    ``(C, L)``. Shapes: ``(N, L)`` or ``(N, C, L)`` -> ``(N, num_classes)``.
    """

    class Options(Options):
        channels: int = opt(25, "channels of both conv layers", ge=1)
        activation: Activation = opt("relu", "activation after every conv and hidden Linear layer")

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: int = 25,
        activation: str = "relu",
    ) -> None:
        parse(self.Options, dict(channels=channels, activation=activation), "model 'cnn1d'")
        input_shape = check_shape(input_shape, "cnn1d")
        num_classes = check_classes(num_classes, "cnn1d")
        if len(input_shape) == 1:
            in_channels, length = 1, input_shape[0]
        elif len(input_shape) == 2:
            in_channels, length = input_shape
        else:
            raise ConfigError(
                f"cnn1d needs 1-D inputs of shape (length,) or (channels, length), got input_shape={input_shape}; "
                "use lenet or mlp for images."
            )

        if length < 3:
            raise ConfigError(f"cnn1d needs inputs of length at least 3, got length {length}.")
        out_len = (length + 2 - 5) // 2 + 1  # conv1: kernel 5, stride 2, padding 1
        for _ in range(2):
            out_len = (out_len + 2 - 3) // 2 + 1  # conv2, conv3: kernel 3, stride 2, padding 1
        super().__init__(
            OrderedDict(
                to_channels=AsChannels(in_channels),
                conv1=nn.Conv1d(in_channels, channels, kernel_size=5, stride=2, padding=1),
                act1=make_activation(activation),
                conv2=nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1),
                act2=make_activation(activation),
                conv3=nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1),
                act3=make_activation(activation),
                flatten=nn.Flatten(),
                out=nn.Linear(channels * out_len, num_classes),
            )
        )
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.channels = channels
