"""Plain ``nn.Module`` models, built by name.

>>> from beyondbp import models
>>> models.names()
['cnn1d', 'gpt', 'lenet', 'mlp']
>>> net = models.build("mlp", (1, 28, 28), 10, widths=(128,))

Models hold nothing rule-specific: rules attach from outside by wrapping the standard
``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layers. Every model is an ``nn.Sequential`` with
named layers and records ``input_shape`` and ``num_classes``. Construction uses PyTorch's
default initialisation and draws from the global torch RNG: seed it before ``build`` for
reproducible weights.

=========  =====================================================================
name       options (defaults)
=========  =====================================================================
mlp        ``widths=(256, 256)``, ``activation="relu"``, ``bias=True``, ``dropout=0.0``
lenet      ``activation="relu"``, ``padding=None`` (automatic: 2 below 32 pixels)
cnn1d      ``channels=25``, ``activation="relu"``
gpt        causal decoder-only Transformer; ``input_shape=(context,)``, ``num_classes`` = vocabulary;
           ``n_layer=4``, ``n_head=4``, ``d_model=128``, ``d_ff=None`` (4·d_model), ``dropout=0.0``,
           ``norm="pre"``, ``tie_weights=False``, ``bias=True``, ``attention="explicit"``,
           ``emb_std=1.0`` — see :mod:`beyondbp.models.gpt` (not an ``nn.Sequential``)
=========  =====================================================================

SoftHebb presets (see :mod:`beyondbp.models.softhebb`): ``softhebb-mlp`` (the authors' MNIST
net; ``width=2000``, ``activation="triangle"``, ``power=1.0``, ``batchnorm=False``,
``init_radius=25.0``) and ``softhebb-conv`` (their three CIFAR-10 conv blocks adapted to 28×28;
``channels=(96, 384, 1536)``, ``dropout=0.5``, ``init_radius=25.0``).

Activations: ``relu``, ``tanh``, ``sigmoid``, ``gelu``, ``leaky_relu``.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from torch import nn

from beyondbp.errors import ConfigError
from beyondbp.models.conv import CNN1D, LeNet
from beyondbp.models.gpt import GPT
from beyondbp.models.mlp import ACTIVATIONS, MLP
from beyondbp.models.softhebb import SoftHebbConv, SoftHebbMLP

__all__ = ["ACTIVATIONS", "CNN1D", "GPT", "LeNet", "MLP", "build", "names", "options"]

_MODELS: dict[str, type[nn.Module]] = {
    "cnn1d": CNN1D,
    "gpt": GPT,
    "lenet": LeNet,
    "mlp": MLP,
    "softhebb_conv": SoftHebbConv,
    "softhebb_mlp": SoftHebbMLP,
}


def names() -> list[str]:
    """The names :func:`build` accepts, sorted."""
    return sorted(_MODELS)


def _lookup(name: Any) -> tuple[str, type[nn.Module]]:
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key not in _MODELS:
        raise ConfigError(f"Unknown model {name!r}; valid names are: {', '.join(names())}.")
    return key, _MODELS[key]


def options(name: str) -> dict[str, Any]:
    """The options :func:`build` accepts for ``name``, with their defaults."""
    _, cls = _lookup(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return {p.name: p.default for p in params if p.name not in ("input_shape", "num_classes")}


def build(name: str, input_shape: Sequence[int], num_classes: int, **opts: Any) -> nn.Module:
    """Build the model called ``name`` for samples of ``input_shape`` and ``num_classes`` outputs.

    Raises :class:`~beyondbp.errors.ConfigError` for an unknown name, an unknown option, a bad
    option value, or an input shape the model cannot take.
    """
    key, cls = _lookup(name)
    allowed = options(key)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for model {key!r}; "
            f"allowed options are: {', '.join(allowed)}."
        )
    return cls(input_shape, num_classes, **opts)
