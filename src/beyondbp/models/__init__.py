"""Plain ``nn.Module`` models, built by name.

>>> from beyondbp import models
>>> models.names()
['cnn1d', 'gpt', 'lenet', 'lsm', 'mlp', 'snn_cnn', 'snn_mlp', 'softhebb_conv', 'softhebb_mlp']
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

Spiking networks (see :mod:`beyondbp.models.snn` and :mod:`beyondbp.spiking`): ``snn-mlp``
(snnTorch tutorial 5's 784-1000-10 LIF network; ``widths=(1000,)``) and ``snn-cnn``
(12C5-MP2-64C5-MP2-FC10 with LIF neurons, tutorial 6; ``channels=(12, 64)``), both with ``T=25``,
``beta=0.95``, ``threshold=1.0``, ``reset="subtract"``, ``detach_reset=False``,
``surrogate="arctan"``, ``alpha=None`` (the surrogate's default), ``encoder="direct"``,
``readout="count"``, ``neuron="lif"``. Their Linear / Conv2d layers are standard modules run once
over all ``T`` time steps (flattened into the batch), so the feedback-path rules wrap them as on
any model; the run loop reports their spike rates (``RunResult.spikes``).

SoftHebb presets (see :mod:`beyondbp.models.softhebb`): ``softhebb-mlp`` (the authors' MNIST
net; ``width=2000``, ``activation="triangle"``, ``power=1.0``, ``batchnorm=False``,
``init_radius=25.0``) and ``softhebb-conv`` (their three CIFAR-10 conv blocks adapted to 28×28;
``channels=(96, 384, 1536)``, ``dropout=0.5``, ``init_radius=25.0``).

Liquid state machine (see :mod:`beyondbp.models.lsm`): ``lsm``, the NALSM liquid (3-D grid of
LIF neurons, ``size=1000`` or ``8000``, the authors' connectivity, dynamics and input encoding)
and a zero-initialised linear readout of its spike counts; its plasticity rules are ``stdp`` and
``nalsm`` (:mod:`beyondbp.rules.nalsm`).

Activations: ``relu``, ``tanh``, ``sigmoid``, ``gelu``, ``leaky_relu``.

Models know no rule. What a rule needs beyond module types it reads through one protocol that
any model may implement — ``structure()``, returning module names for ``"embedding"``,
``"blocks"``, ``"block_inner"`` (per block), ``"hidden"`` and ``"head"`` (documented in
:func:`beyondbp.rules.common.model_structure`; ``gpt`` implements it). Settings a rule has for a
particular architecture (SoftHebb's per-layer temperatures for the paper's presets) live with
the rule.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from beyondbp.errors import ConfigError
from beyondbp.options import describe, parse
from beyondbp.models.conv import CNN1D, LeNet
from beyondbp.models.gpt import GPT
from beyondbp.models.lsm import LSM
from beyondbp.models.mlp import ACTIVATIONS, MLP
from beyondbp.models.snn import SNNConv, SNNMLP
from beyondbp.models.softhebb import SoftHebbConv, SoftHebbMLP

__all__ = ["ACTIVATIONS", "CNN1D", "GPT", "LSM", "LeNet", "MLP", "SNNConv", "SNNMLP", "build", "describe_options", "names", "options", "options_class"]

_MODELS: dict[str, type[nn.Module]] = {
    "cnn1d": CNN1D,
    "gpt": GPT,
    "lenet": LeNet,
    "lsm": LSM,
    "mlp": MLP,
    "snn_cnn": SNNConv,
    "snn_mlp": SNNMLP,
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


def options_class(name: str) -> type:
    """The declaration (:class:`beyondbp.options.Options`) of the options of model ``name``."""
    return _lookup(name)[1].Options


def options(name: str) -> dict[str, Any]:
    """The options :func:`build` accepts for ``name``, with their defaults (from the model's
    ``Options`` declaration)."""
    _, cls = _lookup(name)
    return {k: f.default for k, f in cls.Options.model_fields.items()}


def describe_options(name: str) -> list[dict[str, str]]:
    """Name, what it accepts, default and help of every option of model ``name``."""
    key, cls = _lookup(name)
    return describe(cls.Options)


def build(name: str, input_shape: Sequence[int], num_classes: int, **opts: Any) -> nn.Module:
    """Build the model called ``name`` for samples of ``input_shape`` and ``num_classes`` outputs.

    Raises :class:`~beyondbp.errors.ConfigError` for an unknown name, an unknown option, a bad
    option value, or an input shape the model cannot take.
    """
    key, cls = _lookup(name)
    parse(cls.Options, opts, f"model {key!r}")  # unknown names, types and bounds, one sentence
    needed = _tensor_bytes(cls, input_shape, num_classes, opts)
    available = _physical_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"model {key!r} with these options would need {_gib(needed)} for its weights and buffers alone, "
            f"more than this machine's {_gib(available)} of memory; choose smaller sizes."
        )
    try:
        return cls(input_shape, num_classes, **opts)
    except (RuntimeError, MemoryError) as exc:
        if isinstance(exc, MemoryError) or "alloc" in str(exc).lower():
            raise ConfigError(
                f"model {key!r} with these options needs {_gib(needed)} for its weights and buffers, "
                "and this machine could not allocate it; choose smaller sizes."
            ) from None
        raise


def _tensor_bytes(cls: type[nn.Module], input_shape: Sequence[int], num_classes: int, opts: dict[str, Any]) -> int:
    """Bytes of a model's parameters and buffers, found by building it on the meta device
    (no memory allocated, the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = cls(input_shape, num_classes, **opts)
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"
