"""The SoftHebb architectures of "Hebbian Deep Learning Without Feedback" (Journé et al., 2023).

Plain ``nn.Sequential`` models (architectures only: the authors' learning settings for them live
with the SoftHebb rule). A Hebbian rule treats every weight layer but the last as a Hebbian layer
and the last as the linear classifier; backprop trains the same modules end to end, which is
what the side-by-side benchmarks compare. Each model records ``init_radius``, the norm its
Hebbian weights were drawn at.

``softhebb-mlp`` — the authors' MNIST preset: flatten → [BatchNorm1d(affine=False)] → ``hebb1``
    Linear(d, 2000, no bias) → activation → ``out`` Linear(2000, classes). They use no BatchNorm and a softmax(5·u) activation there; here the
    default activation is the triangle (power 1) as the issue asks, ``activation="softmax"``
    gives theirs, and ``batchnorm=True`` adds the input normalisation the conv blocks use.

``softhebb-conv`` — the three Hebbian blocks of their CIFAR-10 preset, each
    BatchNorm2d(affine=False) → Conv2d(no bias, reflect padding) → Triangle → pooling:
    96 ch 5×5 pad 2, triangle power 0.7, MaxPool(4, 2, 1);
    384 ch 3×3 pad 1, power 1.4, MaxPool(4, 2, 1);
    1536 ch 3×3 pad 1, power 1.0, AvgPool(2, 2);
    then flatten → Dropout(0.5) → ``out`` Linear(features, classes).
    Adaptation to 28×28 single-channel images: the first convolution takes 1 input channel
    instead of 3, and the last pooling uses ``ceil_mode=True``. The spatial sizes run
    28 → 14 → 7 → 4 (CIFAR-10: 32 → 16 → 8 → 4); with the authors' floor pooling the 7×7 map
    would shrink to 3×3 and drop its last row and column, while ceil mode keeps every position
    and gives the same 1536·4·4 = 24576 classifier inputs as on CIFAR-10. Kernels, paddings,
    strides and the first two pools are unchanged. ``channels`` sets the three widths (tests
    use small ones).

Hebbian weights start as in the authors' code, ``W ~ N(0, (init_radius / sqrt(fan_in))²)`` with
``init_radius = 25``: every unit's norm starts near 25, far from the rule's fixed point of 1, so
the norm-dependent learning rate starts large. Construction draws from the global torch RNG.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Annotated, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from beyondbp.errors import ConfigError
from beyondbp.models.mlp import check_classes, check_shape
from beyondbp.options import Options, opt, parse

__all__ = ["SoftHebbConv", "SoftHebbMLP", "Triangle", "hebbian_init_"]


class Triangle(nn.Module):
    """``relu(x − mean_c(x)) ** power``: subtract the mean across channels (dimension 1), keep the
    positive part, raise it to ``power``. SoftHebb's activation between layers."""

    def __init__(self, power: float = 1.0) -> None:
        super().__init__()
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
            raise ConfigError(f"Triangle power must be a positive number, got {power!r}.")
        self.power = float(power)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(x - x.mean(dim=1, keepdim=True))
        return out if self.power == 1.0 else out.pow(self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}"


class SoftmaxActivation(nn.Module):
    """``softmax(t_invert · x)`` across dimension 1 (the authors' MNIST activation, τ⁻¹ = 5)."""

    def __init__(self, t_invert: float = 5.0) -> None:
        super().__init__()
        self.t_invert = float(t_invert)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.t_invert * x, dim=1)

    def extra_repr(self) -> str:
        return f"t_invert={self.t_invert}"


def hebbian_init_(layer: nn.Module, radius: float = 25.0) -> nn.Module:
    """Redraw ``layer.weight`` from ``N(0, (radius / sqrt(fan_in))²)`` (the authors' init)."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.normal_(0.0, radius / math.sqrt(fan_in))
    return layer


class SoftHebbMLP(nn.Sequential):
    """One soft winner-take-all layer of ``width`` units and a linear classifier.

    Layers: ``flatten, [bn0,] hebb1, act1, out``. Shapes: ``(N, *input_shape) -> (N, num_classes)``.
    """

    class Options(Options):
        width: int = opt(2000, "units of the soft winner-take-all layer", ge=1)
        activation: Literal["triangle", "softmax"] = opt("triangle", "activation after the Hebbian layer: triangle, or the authors' softmax(5·u)")
        power: float = opt(1.0, "exponent of the triangle activation", gt=0)
        batchnorm: bool = opt(False, "BatchNorm1d (no affine) on the input, as the conv blocks have")
        init_radius: float = opt(25.0, "norm each Hebbian unit's weights are drawn at", gt=0)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        width: int = 2000,
        activation: str = "triangle",
        power: float = 1.0,
        batchnorm: bool = False,
        init_radius: float = 25.0,
    ) -> None:
        input_shape = check_shape(input_shape, "softhebb-mlp")
        num_classes = check_classes(num_classes, "softhebb-mlp")
        o = parse(
            self.Options,
            dict(width=width, activation=activation, power=power, batchnorm=batchnorm, init_radius=init_radius),
            "model 'softhebb-mlp'",
        )
        power, init_radius = o.power, o.init_radius

        d = math.prod(input_shape)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        if batchnorm:
            layers["bn0"] = nn.BatchNorm1d(d, affine=False)
        layers["hebb1"] = hebbian_init_(nn.Linear(d, width, bias=False), init_radius)
        layers["act1"] = Triangle(power) if activation == "triangle" else SoftmaxActivation(5.0)
        layers["out"] = nn.Linear(width, num_classes)
        super().__init__(layers)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.init_radius = init_radius


#: Per block: (kernel, padding, triangle power, pool).
_CONV_BLOCKS = (
    (5, 2, 0.7, "max"),
    (3, 1, 1.4, "max"),
    (3, 1, 1.0, "avg"),
)


class SoftHebbConv(nn.Sequential):
    """The three Hebbian conv blocks of the authors' CIFAR-10 network and a linear classifier.

    Layers: ``bn1, conv1, act1, pool1, bn2, conv2, act2, pool2, bn3, conv3, act3, pool3, flatten,
    drop, out``. ``input_shape`` is ``(C, H, W)`` with ``H, W >= 8``. Shapes:
    ``(N, C, H, W) -> (N, num_classes)``.
    """

    class Options(Options):
        channels: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=3, max_length=3)] = opt(
            (96, 384, 1536), "channels of the three Hebbian conv blocks", accepts="three integers >= 1"
        )
        dropout: float = opt(0.5, "dropout before the classifier", ge=0, lt=1)
        init_radius: float = opt(25.0, "norm each Hebbian unit's weights are drawn at", gt=0)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (96, 384, 1536),
        dropout: float = 0.5,
        init_radius: float = 25.0,
    ) -> None:
        input_shape = check_shape(input_shape, "softhebb-conv")
        num_classes = check_classes(num_classes, "softhebb-conv")
        if len(input_shape) != 3:
            raise ConfigError(
                f"softhebb-conv needs image inputs of shape (channels, height, width), got {input_shape}."
            )
        o = parse(self.Options, dict(channels=channels, dropout=dropout, init_radius=init_radius), "model 'softhebb-conv'")
        init_radius = o.init_radius
        c_in, h, w = input_shape
        if min(h, w) < 8:
            raise ConfigError(f"softhebb-conv needs images of at least 8x8 pixels, got {h}x{w}.")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (c_out, (k, pad, power, pool)) in enumerate(zip(channels, _CONV_BLOCKS), start=1):
            layers[f"bn{i}"] = nn.BatchNorm2d(c_in, affine=False)
            conv = nn.Conv2d(c_in, int(c_out), k, padding=pad, padding_mode="reflect", bias=False)
            layers[f"conv{i}"] = hebbian_init_(conv, init_radius)
            layers[f"act{i}"] = Triangle(power)
            if pool == "max":
                layers[f"pool{i}"] = nn.MaxPool2d(kernel_size=4, stride=2, padding=1)
                h, w = (h + 2 - 4) // 2 + 1, (w + 2 - 4) // 2 + 1
            else:
                layers[f"pool{i}"] = nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True)
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            c_in = int(c_out)
        layers["flatten"] = nn.Flatten()
        layers["drop"] = nn.Dropout(float(dropout))
        layers["out"] = nn.Linear(c_in * h * w, num_classes)
        super().__init__(layers)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.channels = tuple(int(c) for c in channels)
        self.init_radius = init_radius
