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

Pathways (``pathways=k``, default 1): the model of the paper's second experiment (their
``multipath/``, after Saxe et al.'s multi-pathway networks): ``k`` parallel stacks of ``depth``
bias-free layers, each from the input to the output, whose outputs add. With ``k = 1`` the
model is the plain stack above (layers ``fc1 … fc<depth>``, the same weights from the same seed);
with ``k ≥ 2`` the stacks are ``paths.a``, ``paths.b``, … (parameters ``paths.b.fc1.weight``, …),
each initialised as above in turn. :meth:`DeepLinear.pathway_maps` gives each pathway's
end-to-end map; :meth:`DeepLinear.align` sets every pathway to the authors' task-aligned
initialisation (used by the ``hierarchy`` data set, :mod:`beyondbp.data.hierarchy`).

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

__all__ = ["DeepLinear", "PATHWAY_NAMES"]

#: The names of the pathways, in order (``paths.a``, ``paths.b``, …).
PATHWAY_NAMES = "abcdefghijklmnopqrstuvwxyz"


class _Pathways(nn.Module):
    """Parallel bias-free stacks (``a``, ``b``, …) on the same input; their outputs add."""

    def __init__(self, stacks: "OrderedDict[str, nn.Sequential]") -> None:
        super().__init__()
        for name, stack in stacks.items():
            self.add_module(name, stack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for stack in self.children():
            y = stack(x)
            out = y if out is None else out + y
        return out


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
        pathways: int = opt(1, "parallel stacks whose outputs add (1: a single stack)", ge=1, le=len(PATHWAY_NAMES),
                            identity_default=True)

    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 3, width: int | None = None,
                 init: str = "gaussian", init_scale: float = 0.001, pathways: int = 1) -> None:
        input_shape = check_shape(input_shape, "deep-linear")
        num_classes = check_classes(num_classes, "deep-linear")
        parse(self.Options, dict(depth=depth, width=width, init=init, init_scale=init_scale, pathways=pathways),
              "model 'deep-linear'")
        fan_in = math.prod(input_shape)
        width = fan_in if width is None else int(width)
        sizes = [fan_in] + [width] * (depth - 1) + [num_classes]

        def stack() -> "OrderedDict[str, nn.Module]":
            return OrderedDict((f"fc{i}", nn.Linear(a, b, bias=False))
                               for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1))

        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        if pathways == 1:
            layers.update(stack())
        else:
            layers["paths"] = _Pathways(OrderedDict((PATHWAY_NAMES[k], nn.Sequential(stack())) for k in range(pathways)))
        super().__init__(layers)
        self.input_shape, self.num_classes = input_shape, num_classes
        self.depth, self.width, self.init, self.init_scale = int(depth), width, init, float(init_scale)
        self.pathways = int(pathways)
        self._initialise()

    def linear_layers(self) -> list[nn.Linear]:
        """Every Linear layer, pathway after pathway."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    def pathway_layers(self) -> dict[str, list[nn.Linear]]:
        """Each pathway's layers, first to last, by the pathway's name (``""`` for ``pathways=1``)."""
        if self.pathways == 1:
            return {"": self.linear_layers()}
        return {name: [m for m in stack if isinstance(m, nn.Linear)] for name, stack in self.paths.named_children()}

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
    def pathway_maps(self) -> dict[str, torch.Tensor]:
        """Each pathway's end-to-end map ``W_depth ⋯ W_1`` (``num_classes × input size``), by name."""
        maps = {}
        for name, layers in self.pathway_layers().items():
            out = None
            for layer in layers:
                out = layer.weight if out is None else layer.weight @ out
            maps[name] = out.clone()
        return maps

    @torch.no_grad()
    def end_to_end(self) -> torch.Tensor:
        """The model's end-to-end map: the sum of its pathways' (``num_classes × input size``)."""
        return sum(self.pathway_maps().values())

    @torch.no_grad()
    def align(self, u: torch.Tensor, v: torch.Tensor, strengths: torch.Tensor, generator: torch.Generator) -> None:
        """Set every pathway to the same task-aligned, balanced weights (the authors'
        ``diagonal_init``): with ``r`` modes, ``u`` (``num_classes × r``) and ``v`` (``input × r``)
        orthonormal columns, ``strengths`` ``width`` values ``s`` (the first ``r`` are the modes'),
        ``D = diag(s^(1/depth))`` and one orthogonal ``R`` (``width × width``, drawn from
        ``generator``) shared by every layer and pathway: ``W_1 = R D[:, :r] vᵀ``, hidden
        ``W_l = R D Rᵀ``, ``W_depth = u D[:r, :] Rᵀ``, so each pathway's end-to-end map is
        ``u diag(s[:r]) vᵀ`` (depth 1: that map itself)."""
        r = u.shape[1]
        if self.depth == 1:
            for layers in self.pathway_layers().values():
                layers[0].weight.copy_(u @ torch.diag(strengths[:r]) @ v.T)
            return
        if self.width < r or strengths.numel() != self.width:
            raise ValueError(f"align needs width >= {r} modes and {self.width} strengths, got width {self.width} "
                             f"and {strengths.numel()} strengths")
        rot = torch.empty(self.width, self.width, dtype=torch.float64)
        nn.init.orthogonal_(rot, generator=generator)
        d = torch.diag(strengths.to(torch.float64) ** (1.0 / self.depth))
        u, v = u.to(torch.float64), v.to(torch.float64)
        first, hidden, last = rot @ d[:, :r] @ v.T, rot @ d @ rot.T, u @ d[:r, :] @ rot.T
        for layers in self.pathway_layers().values():
            for i, layer in enumerate(layers):
                w = first if i == 0 else last if i == len(layers) - 1 else hidden
                layer.weight.copy_(w.to(layer.weight.dtype))
