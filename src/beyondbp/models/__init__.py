"""Plain ``nn.Module`` models, built by name.

>>> from beyondbp import models
>>> models.names()  # doctest: +NORMALIZE_WHITESPACE
['branch-elm', 'cnn1d', 'deep-linear', 'elm', 'gpt', 'irnn', 'lenet', 'lsm', 'lstm', 'mlp', 'snn-cnn', 'snn-mlp',
 'softhebb-conv', 'softhebb-mlp', 'wrnn']
>>> net = models.build("mlp", (1, 28, 28), 10, widths=(128,))

Models hold nothing rule-specific: rules attach from outside by wrapping the standard
``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layers. Every model is an ``nn.Sequential`` with
named layers and records ``input_shape`` and ``num_classes``. Construction uses PyTorch's
default initialisation and draws from the global torch RNG: seed it before ``build`` for
reproducible weights.

=========  =====================================================================
name       options (defaults)
=========  =====================================================================
mlp        ``widths=(256, 256)``, ``activation="relu"``, ``bias=True``, ``dropout=0.0``, ``init="default"`` (or ``"he-normal"``), ``bias_std=0.0``
lenet      ``activation="relu"``, ``padding=None`` (automatic: 2 below 32 pixels)
cnn1d      ``channels=25``, ``activation="relu"``
gpt        causal decoder-only Transformer; ``input_shape=(context,)``, ``num_classes`` = vocabulary;
           ``n_layer=4``, ``n_head=4``, ``d_model=128``, ``d_ff=None`` (4·d_model), ``dropout=0.0``,
           ``norm="pre"``, ``tie_weights=False``, ``bias=True``, ``attention="explicit"``,
           ``emb_std=1.0`` — see :mod:`beyondbp.models.gpt` (not an ``nn.Sequential``)
=========  =====================================================================

Deep linear network (see :mod:`beyondbp.models.linear`): ``deep-linear``, ``depth=3`` bias-free
Linear layers of ``width=None`` (the input size) with no activation, initialised as Kleinman et
al. do (``init="gaussian"``, end-to-end Frobenius norm ≈ ``init_scale=0.001`` · √width); the model
of the ``matrix-completion`` critical-period experiment.

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

Expressive Leaky Memory neuron (see :mod:`beyondbp.models.elm`): ``elm`` and ``branch-elm``, for
sequences ``(T, channels)``; ``memory=100``, ``hidden=None`` (2·memory), ``lam=5.0``,
``tau_s=5.0``, ``tau_m_min=1.0``, ``tau_m_max=1000.0``, ``w_s=0.5``, ``dt=1.0``,
``outputs="last"``; ``branch-elm`` adds ``branches=16``, ``synapses_per_branch=None``. Trained
by ``backprop`` (BPTT), the feedback-path rules, or ``elm-online`` (memory constant in T).

Recurrent models (see :mod:`beyondbp.models.rnn`): ``wrnn`` (the wave RNN: ``channels=27`` rings
of ``ring=100`` ReLU neurons, a circular 3-tap convolution recurrence initialised as a shift,
``solo_init=True``, ``freeze_recurrence`` / ``freeze_encoder``), ``irnn`` (identity-initialised
ReLU RNN, ``hidden=100``) and ``lstm``; all take ``(T, d)`` sequences and ``outputs="last"`` or
``"all"``; ``irnn`` and ``lstm`` take ``params=K`` to match another model's parameter count.

Activations: ``relu``, ``tanh``, ``sigmoid``, ``gelu``, ``leaky_relu``, ``elu``.

Models know no rule. What a rule needs beyond module types it reads through one protocol that
any model may implement — ``structure()``, returning module names for ``"embedding"``,
``"blocks"``, ``"block_inner"`` (per block), ``"hidden"`` and ``"head"`` (documented in
:func:`beyondbp.rules.common.model_structure`; ``gpt`` implements it). Settings a rule has for a
particular architecture (SoftHebb's per-layer temperatures for the paper's presets) live with
the rule.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from beyondbp.errors import ConfigError
from beyondbp.models.conv import CNN1D, LeNet
from beyondbp.models.elm import ELM, BranchELM
from beyondbp.models.gpt import GPT
from beyondbp.models.linear import DeepLinear
from beyondbp.models.lsm import LSM
from beyondbp.models.mlp import ACTIVATIONS, MLP
from beyondbp.models.rnn import IRNN, LSTMModel, WaveRNN
from beyondbp.models.snn import SNNMLP, SNNConv
from beyondbp.models.softhebb import SoftHebbConv, SoftHebbMLP
from beyondbp.options import describe as _describe_declaration
from beyondbp.options import parse
from beyondbp.resources import physical_memory, show_bytes

__all__ = ["ACTIVATIONS", "BranchELM", "CNN1D", "DeepLinear", "ELM", "GPT", "IRNN", "LSM", "LSTMModel", "LeNet", "MLP",
           "WaveRNN", "SNNConv", "SNNMLP", "build", "check_memory", "check_size", "describe", "describe_options", "names",
           "options", "options_class", "tensor_bytes"]

_MODELS: dict[str, type[nn.Module]] = {
    "branch-elm": BranchELM,
    "cnn1d": CNN1D,
    "deep-linear": DeepLinear,
    "elm": ELM,
    "gpt": GPT,
    "irnn": IRNN,
    "lenet": LeNet,
    "lsm": LSM,
    "lstm": LSTMModel,
    "mlp": MLP,
    "snn-cnn": SNNConv,
    "snn-mlp": SNNMLP,
    "softhebb-conv": SoftHebbConv,
    "softhebb-mlp": SoftHebbMLP,
    "wrnn": WaveRNN,
}

#: One line per model, for ``beyondbp models``.
_SUMMARIES = {
    "branch-elm": "Branch-ELM: the ELM with inputs summed on dendritic branches before the trace (Spieler et al. 2024)",
    "cnn1d": "the MNIST-1D authors' 1-D convnet (three Conv1d layers, linear head)",
    "deep-linear": "deep linear network: bias-free Linear layers, no activation, small init (critical periods)",
    "elm": "Expressive Leaky Memory neuron: synaptic traces, MLP memory proposal, leaky memory, readout (Spieler et al. 2024)",
    "gpt": "causal decoder-only Transformer for the text sets (see Language models)",
    "irnn": "identity-initialised ReLU RNN (Le et al. 2015), the wave RNN's baseline",
    "lenet": "LeNet-5 for 28x28 images (BioTorch's form)",
    "lstm": "one-layer LSTM (torch's kernel) and a linear readout",
    "mlp": "multilayer perceptron: Flatten, hidden Linear layers with an activation, Linear head",
    "lsm": "liquid state machine: a 3-D grid of LIF neurons (E/I), distance-dependent synapses, linear readout (NALSM)",
    "snn-cnn": "spiking convnet 12C5-MP2-64C5-MP2-FC10 with LIF neurons (snnTorch tutorial 6)",
    "snn-mlp": "spiking MLP with LIF neurons, 784-1000-10 by default (snnTorch tutorial 5)",
    "softhebb-conv": "SoftHebb's three Hebbian conv blocks and a linear classifier",
    "softhebb-mlp": "SoftHebb's soft winner-take-all layer and a linear classifier (MNIST preset)",
    "wrnn": "wave RNN: rings of ReLU neurons, circular 3-tap conv recurrence initialised as a shift (travelling waves)",
}


def names() -> list[str]:
    """The names :func:`build` accepts, sorted, spelled as on the command line (``snn-mlp``);
    ``_`` for ``-`` and any case are accepted too."""
    return sorted(_MODELS)


def _lookup(name: Any) -> tuple[str, type[nn.Module]]:
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in _MODELS:
        raise ConfigError(f"Unknown model {name!r}; valid names are: {', '.join(names())}.")
    return key, _MODELS[key]


def describe() -> list[dict[str, str]]:
    """Name, one-line summary and option names of every model, sorted by name."""
    return [{"name": n, "summary": _SUMMARIES[n], "options": ", ".join(_MODELS[n].Options.model_fields)} for n in names()]


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
    return _describe_declaration(cls.Options)


def build(name: str, input_shape: Sequence[int], num_classes: int, **opts: Any) -> nn.Module:
    """Build the model called ``name`` for samples of ``input_shape`` and ``num_classes`` outputs.

    Raises :class:`~beyondbp.errors.ConfigError` for an unknown name, an unknown option, a bad
    option value, or an input shape the model cannot take.
    """
    key, cls = _lookup(name)
    needed = check_size(key, input_shape, num_classes, **opts)
    try:
        return cls(input_shape, num_classes, **opts)
    except (RuntimeError, MemoryError) as exc:
        if isinstance(exc, MemoryError) or "alloc" in str(exc).lower():
            raise ConfigError(
                f"model {key!r} with these options needs {_gib(needed)} for its weights and buffers, "
                "and this machine could not allocate it; choose smaller sizes."
            ) from None
        raise


def check_size(name: str, input_shape: Sequence[int], num_classes: int, **opts: Any) -> int:
    """Check ``opts`` as :func:`build` does and return the bytes of the model's parameters and
    buffers (:func:`tensor_bytes`); :class:`ConfigError` when they exceed this machine's
    physical memory (:func:`check_memory`). :func:`build` calls it first."""
    needed = tensor_bytes(name, input_shape, num_classes, **opts)
    check_memory(name, needed)
    return needed


def tensor_bytes(name: str, input_shape: Sequence[int], num_classes: int, **opts: Any) -> int:
    """Bytes of the parameters and buffers of the model :func:`build` would build, counted on the
    meta device (nothing allocated, the global RNG untouched); options checked first."""
    key, cls = _lookup(name)
    parse(cls.Options, opts, f"model {key!r}")  # unknown names, types and bounds, one sentence
    return _tensor_bytes(cls, input_shape, num_classes, opts)


def check_memory(name: str, needed: int) -> None:
    """:class:`ConfigError` when a model ``name`` of ``needed`` bytes (:func:`tensor_bytes`) would
    not fit this machine's physical memory. A study spec calls it for every model of its grid
    (:func:`beyondbp.study.spec.load_spec`)."""
    key, _ = _lookup(name)
    available = _physical_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"model {key!r} with these options would need {_gib(needed)} for its weights and buffers alone, "
            f"more than this machine's {_gib(available)} of memory; choose smaller sizes."
        )


def _tensor_bytes(cls: type[nn.Module], input_shape: Sequence[int], num_classes: int, opts: dict[str, Any]) -> int:
    """Bytes of a model's parameters and buffers, found by building it on the meta device
    (no memory allocated, the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = cls(input_shape, num_classes, **opts)
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _physical_memory() -> int | None:
    return physical_memory()


def _gib(n: int) -> str:
    return show_bytes(n)
