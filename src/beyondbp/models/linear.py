"""Deep linear network: ``depth`` bias-free ``nn.Linear`` layers and nothing between them.

The model of "Critical Learning Periods Emerge Even in Deep Linear Networks" (Kleinman, Achille,
Soatto; ICLR 2024), whose matrix-completion experiment feeds it the identity matrix so that its
output is the end-to-end product ``W_depth ⋯ W_1`` (transposed): see
:mod:`beyondbp.data.matrix`.

Initialisation (``init="gaussian"``, the authors' choice): every entry of layer ``l`` is drawn
from ``N(0, s²)`` with ``s = init_scale^(1/depth) / sqrt(fan_in_l)``, so the end-to-end map of a
square network of width ``n`` has Frobenius norm ≈ ``init_scale · sqrt(n)`` (the authors'
``0.001·√n`` by default): a small initialisation, which is what makes learning go through the
saddle-to-saddle stages that give the critical period. ``init="orthogonal"``: each layer an
orthogonal matrix times ``(init_scale · sqrt(width))^(1/depth)`` (their other option);
``init="default"`` keeps PyTorch's ``nn.Linear`` initialisation. Weights are drawn from the
global torch RNG (seed it before ``build``).

Shapes: input ``(N, *input_shape)`` (flattened), output ``(N, num_classes)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Literal, Sequence

import torch
from torch import nn

from beyondbp.options import Options, opt, parse

from .mlp import check_classes, check_shape

__all__ = ["DeepLinear"]


class DeepLinear(nn.Sequential):
    """``flatten, fc1, …, fc<depth>``: bias-free Linear layers of width ``width`` (default: the
    input size), the last one to ``num_classes`` outputs; no activation (see the module docstring)."""

    class Options(Options):
        depth: int = opt(3, "number of bias-free Linear layers (1: a single linear map)", ge=1, le=64)
        width: int | None = opt(None, "width of the hidden layers (None: the input size)", ge=1,
                                accepts="an integer >= 1, or null (the input size)")
        init: Literal["gaussian", "orthogonal", "default"] = opt(
            "gaussian", "initialisation: the authors' scaled Gaussian, scaled orthogonal, or PyTorch's default")
        init_scale: float = opt(0.001, "scale of the end-to-end map at initialisation (Frobenius norm / sqrt(width))",
                                gt=0, le=1e3)

    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 3, width: int | None = None,
                 init: str = "gaussian", init_scale: float = 0.001) -> None:
        input_shape = check_shape(input_shape, "deep-linear")
        num_classes = check_classes(num_classes, "deep-linear")
        parse(self.Options, dict(depth=depth, width=width, init=init, init_scale=init_scale), "model 'deep-linear'")
        fan_in = math.prod(input_shape)
        width = fan_in if width is None else int(width)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        sizes = [fan_in] + [width] * (depth - 1) + [num_classes]
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
            layers[f"fc{i}"] = nn.Linear(a, b, bias=False)
        super().__init__(layers)
        self.input_shape, self.num_classes = input_shape, num_classes
        self.depth, self.width, self.init, self.init_scale = int(depth), width, init, float(init_scale)
        self._initialise()

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def _initialise(self) -> None:
        if self.init == "default":
            return
        for layer in self.linear_layers():
            if layer.weight.device.type == "meta":
                continue
            if self.init == "gaussian":
                std = self.init_scale ** (1.0 / self.depth) / math.sqrt(layer.in_features)
                nn.init.normal_(layer.weight, std=std)
            else:
                nn.init.orthogonal_(layer.weight)
                layer.weight.mul_((self.init_scale * math.sqrt(self.width)) ** (1.0 / self.depth))

    @torch.no_grad()
    def end_to_end(self) -> torch.Tensor:
        """The product ``W_depth ⋯ W_1`` (``num_classes × input size``)."""
        out = None
        for layer in self.linear_layers():
            out = layer.weight if out is None else layer.weight @ out
        return out.clone()
