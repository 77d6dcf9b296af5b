"""Feedback alignment and its weight-transport-free relatives: FA, uSF, brSF, frSF, Kolen-Pollack.

All five keep the forward pass and the weight update of backpropagation and change only the
matrix that carries the error backwards through each Linear / ConvNd layer. With pre-activation
``a_l = W_l h_{l-1}``, ``h_l = f(a_l)`` and output error ``e = dL/da_L``:

    backprop:   δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ f'(a_l)          ΔW_l = −η δ_l h_{l-1}ᵀ
    these:      δ_l = (B_{l+1}ᵀ δ_{l+1}) ⊙ f'(a_l)          ΔW_l = −η δ_l h_{l-1}ᵀ

where ``B`` has ``W``'s shape and "stands in" for it (for a conv layer, ``B`` is a kernel of the
same shape used by the transposed convolution). Everything between weight layers — activations,
pooling, BatchNorm, dropout, residual additions — is differentiated by ordinary autograd.

``fa`` — Feedback alignment. ``B`` is drawn once at attach and never changes.
    Paper: "Random synaptic feedback weights support error backpropagation for deep learning"
    (Lillicrap, Cownden, Tweed, Akerman 2016). Default ``init="kaiming_uniform"``: ``B`` is
    drawn from the same law as PyTorch's default layer init, U(±1/sqrt(fan_in)), so
    ``‖B‖ ≈ ‖W‖`` at attach for a model that keeps PyTorch's init — what BioTorch gets by
    re-initialising ``W`` and ``B`` with the same Xavier law. Xavier ``B`` alone
    (``init="xavier_uniform"``, BioTorch's law) is up to ~2.3×
    larger than a PyTorch-initialised ``W`` per layer, so the backward error grows by that factor
    at every layer it crosses and LeNet blew up with SGD; frSF and brSF keep ``xavier_uniform``
    (it never blew up for them and gave the lower error), uSF keeps ``scale="xavier"``. The
    measurements are in ``bench/README.md`` ("FA, KP, frSF, uSF: the feedback init").
    FA's accuracy on LeNet also depends on the *forward* weights' init, which the rule leaves
    alone: BioTorch re-initialises ``W`` (and ``B``) with Xavier, and of the inits tried only
    that one reproduced its LeNet Fashion-MNIST figure (``bench/README.md``, "FA's gap to
    BioTorch").

``usf`` — Uniform sign-concordant feedback: ``B = s · sign(W)``, rebuilt at every forward pass.
    Default ``scale="xavier"``: ``s = sqrt(2 / (fan_in + fan_out))``, the std of Xavier init as
    in BioTorch; ``scale="fan_in"`` gives ``1/sqrt(fan_in)`` as in Xiao et al.'s code; a number
    is used as is.
``brsf`` — Batchwise random-magnitude sign-concordant feedback: ``B = |M| ⊙ sign(W)`` with
    ``M`` redrawn from the init distribution at every minibatch (forward pass); for the
    uniform inits ``|M|`` has 16-bit resolution (65,536 equally spaced levels in (0, bound)).
``frsf`` — Fixed random-magnitude sign-concordant feedback: as brsf, but ``M`` drawn once.
    Papers: "How Important is Weight Symmetry in Backpropagation?" (Liao, Leibo, Poggio 2016);
    "Biologically-plausible learning algorithms can scale to large datasets" (Xiao, Chen, Liao,
    Poggio 2018).

``kp`` — Kolen-Pollack: ``B`` starts random and learns too. It receives exactly the gradient
    ``W`` receives (in ``W``'s shape, i.e. the transpose of ``ΔB`` written in ``Wᵀ``'s shape) and
    the same weight decay, through the *user's optimizer*: ``B`` is registered as the parameter
    ``<layer>.bbp_feedback``, so create the optimizer after ``attach``. With plain SGD,
    learning rate η and weight decay λ, ``W − B`` is multiplied by ``(1 − ηλ)`` at every step, so
    the two matrices converge; without weight decay they never do (the learner refuses to
    step with an optimizer that lacks ``B`` or gives it different hyperparameters than ``W``).
    A layer frozen at attach (``weight.requires_grad=False``, e.g. a reservoir's) keeps ``B``
    frozen too (``requires_grad=False``): it neither learns nor is needed in the optimizer.
    Papers: "Backpropagation without weight transport" (Kolen, Pollack 1994); "Deep learning
    without weight transport" (Akrout, Wilson, Humphreys, Lillicrap, Tweedy 2019).
    Default ``init="kaiming_uniform"``: ``B`` is drawn from the same law as PyTorch's default
    layer init, U(±1/sqrt(fan_in)), so ``‖B‖ ≈ ‖W‖`` at attach for a model that keeps PyTorch's
    init — what BioTorch gets by re-initialising ``W`` and ``B`` with the same Xavier law. With
    ``"xavier_uniform"`` ``B`` is larger than ``W`` and, since it
    learns through the optimizer, feeds back larger errors at every step: LeNet diverged with
    SGD (``bench/README.md``, "FA, KP, frSF, uSF: the feedback init").

Recurrent models (``wrnn``, ``irnn``; :mod:`beyondbp.models.rnn`). The recurrent layer (the
wave RNN's circular Conv1d, the iRNN's Linear) is called once per time step, so its feedback
matrix carries the error backwards *through time*: with ``h_t = ReLU(W h_{t−1} + V x_t + b)``,

    BPTT:   δ_{t−1} = (Wᵀ δ_t + readout error at t−1) ⊙ f'(a_{t−1})
    these:  δ_{t−1} = (Bᵀ δ_t + readout error at t−1) ⊙ f'(a_{t−1})     (the readout's error via its own B)

with one ``B`` per layer shared by every step (usf/frsf/brsf: built from ``sign(W)`` at the
forward pass, so the same at every step of a sequence); the updates are the ordinary sums over
steps, ``ΔW = −η Σ_t δ_t h_{t−1}ᵀ`` and ``ΔV = −η Σ_t δ_t x_tᵀ``, exact given those δ. Memory
is BPTT's (every step's input is kept). ``nn.LSTM`` (the ``lstm`` model) is refused: its gates
are not Linear / ConvNd modules.

Every rule here registers its tensors on the layer with the prefix ``bbp_`` (buffers, or a
parameter for KP), so ``model.to(device)`` and ``model.state_dict()`` carry them; ``detach``
removes them. Randomness comes from ``seed`` (default 0), one generator per layer.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Options, add_rule_tensor, opt, param_in_optimizer, rule_attr, rule_tensor
from .common import (
    SEED_HELP,
    FeedbackPathLearner,
    FeedbackPathRule,
    InitName,
    init_bound,
    init_like,
    layer_generator,
)


class FA(FeedbackPathRule):
    name = "fa"
    summary = "feedback alignment: a fixed random matrix B replaces Wᵀ in the backward pass"
    paper = "Random synaptic feedback weights support error backpropagation for deep learning (Lillicrap et al. 2016)"

    class Options(Options):
        seed: int = opt(0, SEED_HELP, ge=0, lt=2**32)
        init: InitName = opt("kaiming_uniform", "distribution of the fixed feedback matrix B (PyTorch's Linear init by default)")

    def setup_layer(self, module: nn.Module, index: int) -> None:
        gen = layer_generator(self.seed, index)
        add_rule_tensor(module, "feedback", init_like(module.weight.detach(), self.init, gen))

    def feedback(self, module: nn.Module) -> tuple[Tensor, float]:
        return rule_tensor(module, "feedback"), 1.0


class USF(FeedbackPathRule):
    rebuilds_feedback = True
    name = "usf"
    summary = "uniform sign-concordant feedback: B = s·sign(W), rebuilt every forward pass"
    paper = "How Important is Weight Symmetry in Backpropagation? (Liao, Leibo, Poggio 2016)"

    class Options(Options):
        scale: Literal["xavier", "fan_in"] | Annotated[float, Field(gt=0)] = opt(
            "xavier",
            "magnitude s of B = s·sign(W): Xavier's or fan-in's std of W's shape, or a number",
            accepts="'xavier', 'fan_in' or a positive number",
        )

    def _scale(self, weight: Tensor) -> float:
        if not isinstance(self.scale, str):
            return float(self.scale)
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        if self.scale == "xavier":
            return math.sqrt(2.0 / (fan_in + fan_out))
        return 1.0 / math.sqrt(fan_in)

    def feedback(self, module: nn.Module, out: Tensor | None = None) -> tuple[Tensor, float]:
        w = module.weight.detach()
        return (torch.sign(w) if out is None else torch.sign(w, out=out)), self._scale(w)


class FRSF(FeedbackPathRule):
    rebuilds_feedback = True
    name = "frsf"
    summary = "fixed random-magnitude sign-concordant feedback: B = |M|⊙sign(W), M drawn once"
    paper = "Biologically-plausible learning algorithms can scale to large datasets (Xiao et al. 2018)"

    class Options(Options):
        seed: int = opt(0, SEED_HELP, ge=0, lt=2**32)
        init: InitName = opt("xavier_uniform", "distribution of the fixed magnitudes |M| (drawn once)")

    def setup_layer(self, module: nn.Module, index: int) -> None:
        gen = layer_generator(self.seed, index)
        mag = init_like(module.weight.detach(), self.init, gen).abs_()
        add_rule_tensor(module, "magnitude", mag)

    def feedback(self, module: nn.Module, out: Tensor | None = None) -> tuple[Tensor, float]:
        w = module.weight.detach()
        if out is None:
            return _signed(rule_tensor(module, "magnitude"), w), 1.0
        return _signed(rule_tensor(module, "magnitude"), w, out=out), 1.0


class BRSF(FeedbackPathRule):
    rebuilds_feedback = True
    name = "brsf"
    summary = "batchwise random-magnitude sign-concordant feedback: |M| redrawn every minibatch"
    paper = "Biologically-plausible learning algorithms can scale to large datasets (Xiao et al. 2018)"

    class Options(Options):
        seed: int = opt(0, SEED_HELP, ge=0, lt=2**32)
        init: InitName = opt("xavier_uniform", "distribution of the magnitudes |M| redrawn every minibatch")

    def _configure(self) -> None:
        self._generators: dict[int, torch.Generator] = {}
        self._bits: dict[int, Tensor] = {}  # per-layer scratch for the random bits (CPU)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        self._generators[id(module)] = layer_generator(self.seed, index)

    def generators(self) -> list[torch.Generator]:
        return list(self._generators.values())

    def feedback(self, module: nn.Module, out: Tensor | None = None) -> tuple[Tensor, float]:
        w = module.weight.detach()
        gen = self._generators[id(module)]
        bound = init_bound(w, self.init)
        if out is None:
            out = torch.empty_like(w, memory_format=torch.contiguous_format)
        if self.init.endswith("uniform"):
            # 16 random bits per weight, drawn 64 at a time: |M| = bound·(k + ½)/65536 with k
            # uniform on 0…65535. Same distribution as U(0, bound) up to 2⁻¹⁶ resolution, at
            # half the cost of torch.rand (the draw dominated brSF's step time otherwise).
            n = w.numel()
            bits = self._bits.get(id(module))
            if bits is None or bits.numel() != (n + 3) // 4:
                bits = self._bits[id(module)] = torch.empty((n + 3) // 4, dtype=torch.int64)
            bits.random_(-(2**63), None, generator=gen)
            k = bits.view(torch.uint16)[:n].view(w.shape)
            if w.dtype in (torch.float32, torch.float64):
                out.copy_(k).add_(0.5)
                return _signed(out, w, out=out), bound / 65536.0
            out.copy_(k.to(torch.float32).add_(0.5).mul_(1.0 / 65536.0))
            return _signed(out, w, out=out), bound
        mag = torch.randn(w.shape, generator=gen, dtype=w.dtype).abs_()
        return _signed(mag.to(w.device), w, out=out), bound


def _signed(magnitude: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """``|M| ⊙ sign(W)`` with ``sign(0) = 0``: ``copysign`` alone gives an exact zero weight a
    positive sign, which made the feedback of a mostly-zero kernel (the wave RNN's shift) dense
    and positive, and the error overflow within 50 steps back through time."""
    out = torch.copysign(magnitude, w) if out is None else torch.copysign(magnitude, w, out=out)
    return out.masked_fill_(w == 0, 0.0)


class KP(FeedbackPathRule):
    name = "kp"
    summary = "Kolen-Pollack: B learns with W's gradient and weight decay, so W − B → 0"
    paper = "Deep learning without weight transport (Akrout et al. 2019); Kolen & Pollack 1994"

    class Options(Options):
        seed: int = opt(0, SEED_HELP, ge=0, lt=2**32)
        init: InitName = opt("kaiming_uniform", "distribution of B's initial values (B then learns)")

    def setup_layer(self, module: nn.Module, index: int) -> None:
        gen = layer_generator(self.seed, index)
        fb = init_like(module.weight.detach(), self.init, gen)
        add_rule_tensor(module, "feedback", fb, trainable=True)

    def feedback(self, module: nn.Module) -> tuple[Tensor, float]:
        return rule_tensor(module, "feedback"), 1.0

    def check_optimizer(self, learner: FeedbackPathLearner, optimizer: torch.optim.Optimizer) -> None:
        for name, module in learner.layers.items():
            fb = rule_tensor(module, "feedback")
            if not fb.requires_grad:  # the layer was frozen at attach: B stays with it
                continue
            if not param_in_optimizer(fb, optimizer):
                raise ConfigError(
                    f"Kolen-Pollack trains the feedback matrix '{name}.{rule_attr('feedback')}' with your "
                    "optimizer, but the optimizer does not hold it; create the optimizer after "
                    "rule.attach(model) from model.parameters()"
                )
            gw = _group_of(module.weight, optimizer)
            gb = _group_of(fb, optimizer)
            if gw is not None and gw is not gb:
                keys = ("lr", "weight_decay", "momentum")
                if any(gw.get(k) != gb.get(k) for k in keys):
                    raise ConfigError(
                        f"Kolen-Pollack needs '{name}.weight' and '{name}.{rule_attr('feedback')}' to share "
                        "learning rate, momentum and weight decay; put them in the same parameter group"
                    )


def _group_of(param: Tensor, optimizer: torch.optim.Optimizer) -> dict | None:
    for group in optimizer.param_groups:
        if any(param is q for q in group["params"]):
            return group
    return None
