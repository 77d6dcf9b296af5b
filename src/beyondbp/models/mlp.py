"""Multi-layer perceptron, and the activation table every beyondbp model shares.

Shapes: input ``(N, *input_shape)`` (any shape; it is flattened to ``(N, prod(input_shape))``),
output logits ``(N, num_classes)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Annotated, Any, Callable, Literal, Sequence

from pydantic import Field
from torch import nn

from beyondbp.errors import ConfigError
from beyondbp.options import Options, opt, parse

__all__ = ["ACTIVATIONS", "MLP", "make_activation"]

#: Activation name -> module factory.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
}


#: The ``activation`` option every model shares.
Activation = Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu"]


def make_activation(name: Any) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ConfigError(f"Unknown activation {name!r}; allowed activations are: {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


def check_shape(input_shape: Any, model: str) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints, or a ConfigError."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        not shape
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)
    ):
        raise ConfigError(
            f"{model}: input_shape must be a non-empty sequence of positive integers (one sample's shape), "
            f"got {input_shape!r}."
        )
    return tuple(int(d) for d in shape)


def check_classes(num_classes: Any, model: str) -> int:
    """``num_classes`` as a positive int, or a ConfigError."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"{model}: num_classes must be a positive integer, got {num_classes!r}.")
    return int(num_classes)


class MLP(nn.Sequential):
    """Flatten, then ``len(widths)`` hidden ``nn.Linear`` layers with an activation, then a
    ``nn.Linear`` to ``num_classes`` logits.

    Layers are named ``flatten, fc1, act1[, drop1], fc2, act2[, drop2], ..., out`` so that
    ``model.fc1`` / ``model.out`` read naturally. ``widths=()`` gives a linear classifier.
    ``dropout`` (in ``[0, 1)``) adds ``nn.Dropout`` after each hidden activation when > 0.
    Parameters use PyTorch's default initialisation (``init="default"``), or with
    ``init="he-normal"`` weights drawn from N(0, 2 / fan_in) and biases from N(0, ``bias_std``²)
    (``bias_std = 1``: the initialisation of Man, Damasio & Neven's homeostatic-network code);
    seed the global RNG before building for reproducible weights.

    Shapes: ``(N, *input_shape) -> (N, num_classes)``.
    """

    class Options(Options):
        widths: list[Annotated[int, Field(ge=1)]] = opt(
            (256, 256), "hidden layer widths, in order (empty: a linear classifier)",
            accepts="a list of integers >= 1, such as [256, 256]",
        )
        activation: Activation = opt("relu", "activation after every hidden layer")
        bias: bool = opt(True, "biases in every Linear layer")
        dropout: float = opt(0.0, "dropout after every hidden activation (0: none)", ge=0, lt=1)
        init: Literal["default", "he-normal"] = opt(
            "default", "initialisation: PyTorch's default, or he-normal (weights N(0, 2/fan_in), biases N(0, bias_std²))",
            identity_default=True,
        )
        bias_std: float = opt(0.0, "with init = he-normal: the biases' standard deviation (1 in Man et al.)", ge=0,
                              identity_default=True)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (256, 256),
        activation: str = "relu",
        bias: bool = True,
        dropout: float = 0.0,
        init: str = "default",
        bias_std: float = 0.0,
    ) -> None:
        input_shape = check_shape(input_shape, "mlp")
        num_classes = check_classes(num_classes, "mlp")
        parse(self.Options, dict(widths=widths, activation=activation, bias=bias, dropout=dropout, init=init, bias_std=bias_std),
              "model 'mlp'")
        if bias_std and init != "he-normal":
            raise ConfigError(f"model 'mlp': bias_std applies only with init = 'he-normal', got init = {init!r}.")

        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        fan_in = math.prod(input_shape)
        for i, width in enumerate(widths, start=1):
            layers[f"fc{i}"] = nn.Linear(fan_in, int(width), bias=bias)
            layers[f"act{i}"] = make_activation(activation)
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(float(dropout))
            fan_in = int(width)
        layers["out"] = nn.Linear(fan_in, num_classes, bias=bias)
        super().__init__(layers)
        if init == "he-normal":
            he_normal_(self, float(bias_std))
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.widths = tuple(int(w) for w in widths)
        self.activation = activation


def he_normal_(model: nn.Module, bias_std: float) -> None:
    """Every ``nn.Linear`` of ``model`` in place: weights N(0, 2 / fan_in), biases N(0, bias_std²)."""
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.in_features))
            if layer.bias is not None:
                nn.init.normal_(layer.bias, 0.0, bias_std)
