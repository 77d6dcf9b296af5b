"""Surrogate spike functions: a Heaviside step forward, a smooth stand-in for its derivative backward.

A spiking neuron emits ``S = H(x)`` with ``x = U − θ`` (membrane minus threshold) and
``H(x) = 1 if x > 0 else 0`` — strictly greater, as snnTorch (SpikingJelly fires at ``x ≥ 0``;
the two differ only on the measure-zero set ``U = θ``). ``H`` has derivative zero almost
everywhere, so backprop through time would carry no error; a *surrogate gradient* replaces
``H'(x)`` by ``σ'(x)`` in the backward pass only ("Surrogate Gradient Learning in Spiking
Neural Networks", Neftci, Mostafa, Zenke 2019). Each surrogate below is one small
``torch.autograd.Function`` (``Cls.apply(x, alpha)``) whose backward multiplies the incoming
gradient by ``Cls.derivative(x, alpha)``. ``Cls.primitive(x, alpha)`` is a smooth function whose
ordinary derivative is that surrogate (the tests differentiate it with autograd and compare).

==================  =======  ===========================================================  ==========================
name                α        σ'(x)                                                        primitive σ(x)
==================  =======  ===========================================================  ==========================
``arctan``          2        α / (2 (1 + (π α x / 2)²))                                   atan(π α x / 2) / π + ½
``fast_sigmoid``    25       1 / (α |x| + 1)²                                             x / (α |x| + 1)
``sigmoid``         4        α s(α x) (1 − s(α x)),  s the logistic function              s(α x)
``triangle``        1        α max(0, 1 − α |x|)  (peak α, support |x| < 1/α, area 1)    piecewise quadratic
``straight_through``  —      1                                                            x
==================  =======  ===========================================================  ==========================

Conventions. ``arctan`` with α = 2 is the default of both snnTorch (``surrogate.atan(alpha=2.0)``)
and SpikingJelly (``surrogate.ATan(alpha=2.0)``): both use exactly α / 2 / (1 + (π α x / 2)²),
peak α/2 = 1 at x = 0. ``fast_sigmoid`` is snnTorch's ``fast_sigmoid(slope=25)`` (Zenke & Ganguli's
SuperSpike pseudo-derivative, "SuperSpike: Supervised learning in multilayer spiking neural
networks", 2018). ``sigmoid`` with α = 4 is SpikingJelly's ``surrogate.Sigmoid`` default
(snnTorch's ``sigmoid`` uses a slope of 25 instead). ``triangle`` is SpikingJelly's
``PiecewiseQuadratic`` (its primitive is piecewise quadratic) and, with α = 1, Bellec et al.'s
LSNN pseudo-derivative without its 0.3 dampening factor. ``straight_through`` passes the gradient
unchanged (Bengio, Léonard, Courville 2013, "Estimating or propagating gradients through
stochastic neurons").
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor
from torch.autograd import Function

from ..errors import ConfigError

__all__ = [
    "ArcTan", "FastSigmoid", "Sigmoid", "StraightThrough", "SURROGATES", "SurrogateSpike", "Triangle",
    "default_alpha", "get", "heaviside", "names", "spike",
]


def heaviside(x: Tensor) -> Tensor:
    """``1`` where ``x > 0``, else ``0``, in ``x``'s dtype."""
    return (x > 0).to(x.dtype)


class SurrogateSpike(Function):
    """Base of the surrogate spike functions: forward is :func:`heaviside`; a subclass sets
    ``name`` and ``default_alpha`` and defines ``derivative``, ``primitive`` and ``backward``."""

    name: ClassVar[str] = ""
    default_alpha: ClassVar[float] = 1.0

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = float(alpha)
        return heaviside(x)

    @staticmethod
    def derivative(x: Tensor, alpha: float) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def primitive(x: Tensor, alpha: float) -> Tensor:
        raise NotImplementedError


class ArcTan(SurrogateSpike):
    name = "arctan"
    default_alpha = 2.0

    @staticmethod
    def derivative(x: Tensor, alpha: float) -> Tensor:
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)

    @staticmethod
    def primitive(x: Tensor, alpha: float) -> Tensor:
        return torch.atan(math.pi / 2 * alpha * x) / math.pi + 0.5

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ArcTan.derivative(x, ctx.alpha), None


class FastSigmoid(SurrogateSpike):
    name = "fast_sigmoid"
    default_alpha = 25.0

    @staticmethod
    def derivative(x: Tensor, alpha: float) -> Tensor:
        return 1 / (alpha * x.abs() + 1) ** 2

    @staticmethod
    def primitive(x: Tensor, alpha: float) -> Tensor:
        return x / (alpha * x.abs() + 1)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * FastSigmoid.derivative(x, ctx.alpha), None


class Sigmoid(SurrogateSpike):
    name = "sigmoid"
    default_alpha = 4.0

    @staticmethod
    def derivative(x: Tensor, alpha: float) -> Tensor:
        s = torch.sigmoid(alpha * x)
        return alpha * s * (1 - s)

    @staticmethod
    def primitive(x: Tensor, alpha: float) -> Tensor:
        return torch.sigmoid(alpha * x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * Sigmoid.derivative(x, ctx.alpha), None


class Triangle(SurrogateSpike):
    name = "triangle"
    default_alpha = 1.0

    @staticmethod
    def derivative(x: Tensor, alpha: float) -> Tensor:
        return alpha * torch.clamp(1 - alpha * x.abs(), min=0)

    @staticmethod
    def primitive(x: Tensor, alpha: float) -> Tensor:
        # α x − α² x |x| / 2 inside |x| < 1/α (value ±½ at the edges), constant ±½ outside
        inside = alpha * x - alpha**2 * x * x.abs() / 2
        return torch.where(x.abs() < 1 / alpha, inside, 0.5 * torch.sign(x)) + 0.5

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * Triangle.derivative(x, ctx.alpha), None


class StraightThrough(SurrogateSpike):
    name = "straight_through"
    default_alpha = 1.0  # unused

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        return heaviside(x)  # nothing to save: the backward is the identity

    @staticmethod
    def derivative(x: Tensor, alpha: float) -> Tensor:
        return torch.ones_like(x)

    @staticmethod
    def primitive(x: Tensor, alpha: float) -> Tensor:
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


#: Surrogate name -> its autograd Function.
SURROGATES: dict[str, type[SurrogateSpike]] = {
    cls.name: cls for cls in (ArcTan, FastSigmoid, Sigmoid, Triangle, StraightThrough)
}


def names() -> list[str]:
    """The surrogate names :func:`get` accepts, in the table's order."""
    return list(SURROGATES)


def get(name: str) -> type[SurrogateSpike]:
    """The surrogate Function called ``name``; a ConfigError listing the names otherwise."""
    if not isinstance(name, str) or name not in SURROGATES:
        raise ConfigError(f"Unknown surrogate {name!r}; allowed surrogates are: {', '.join(SURROGATES)}.")
    return SURROGATES[name]


def default_alpha(name: str) -> float:
    """The field's default α of surrogate ``name`` (the table above)."""
    return get(name).default_alpha


def spike(x: Tensor, surrogate: str = "arctan", alpha: float | None = None) -> Tensor:
    """``H(x)`` forward, surrogate ``σ'(x)`` backward (``alpha=None``: the surrogate's default)."""
    cls = get(surrogate)
    return cls.apply(x, cls.default_alpha if alpha is None else float(alpha))
