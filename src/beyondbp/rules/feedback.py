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
    re-initialising ``W`` and ``B`` with the same Xavier law. Until 2026-11-29 the default was
    BioTorch's ``init="xavier_uniform"`` for ``B`` alone (still available); on models with
    PyTorch's init that makes ``B`` up to ~2.3× larger than ``W`` per layer (LeNet's Linear
    layers), and the backward error grows by that factor at every layer it crosses. Measured
    (LeNet, Fashion-MNIST first 10k images / 2k test images, SGD momentum 0.9, weight decay
    1e-3, batch 64, LR /10 at 50 % and 75 %, seeds 0/1/2, test error %; "div." = training loss
    blew up past the run loop's divergence threshold): 5 epochs at lr 1e-2: ``xavier_uniform``
    div. ×3 (losses 9e6, 2e5, 6e7), ``kaiming_uniform`` 27.5 / 33.1 / 34.8 (backprop 18.9 /
    16.4 / 18.3); 2 epochs at lr 5e-2: ``xavier_uniform`` div. ×3, ``kaiming_uniform`` 29.1 /
    30.7 / 43.0. The full-data protocol, 3 epochs, lr 1e-2 (``python
    bench/fashion_mnist_lenet.py --epochs 3 --threads 1 --seed S --rules fa,kp``), seeds 0/1:
    ``kaiming_uniform`` 21.5 / 23.2 vs ``xavier_uniform`` 26.8 / 24.3. The price on small MLPs
    with SGD (lr 5e-2, momentum 0.9, 10 epochs, seeds 0/1), where neither init blew up: digits
    6.4 / 5.8 vs 4.2 / 4.4; mnist1d (seed 0) 47.5 vs 46.9; the README's MNIST-1D job (Adam):
    56.7 % vs 57.6 % test accuracy. frSF and brSF keep ``xavier_uniform``: neither blew up on
    LeNet with either init, and at lr 1e-2 Xavier gave the lower error (frSF 26.0 / 25.0 / 26.7 vs 32.7 / 28.7 / 34.7); uSF
    keeps ``scale="xavier"`` for the same reason (no blow-up; lr 1e-2: 28.4 / 23.1 / 28.4 vs
    ``"fan_in"`` 25.8 / 23.4 / 26.7).
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
    Papers: "Backpropagation without weight transport" (Kolen, Pollack 1994); "Deep learning
    without weight transport" (Akrout, Wilson, Humphreys, Lillicrap, Tweedy 2019).
    Default ``init="kaiming_uniform"``: ``B`` is drawn from the same law as PyTorch's default
    layer init, U(±1/sqrt(fan_in)), so ``‖B‖ ≈ ‖W‖`` at attach for a model that keeps PyTorch's
    init — what BioTorch gets by re-initialising ``W`` and ``B`` with the same Xavier law. Until
    2026-11-29 the default was ``"xavier_uniform"`` (still available), which on models with
    PyTorch's init makes ``B`` up to ~2.3× larger than ``W`` per layer (LeNet's Linear layers),
    and, since ``B`` learns through the optimizer, larger ``B`` also feeds back larger errors at
    every step. Measured (LeNet, Fashion-MNIST first 10k images / 2k test images, 2 epochs,
    SGD momentum 0.9, weight decay 1e-3, batch 64, LR /10 at 50 % and 75 %, seeds 0/1/2, test
    error %): ``xavier_uniform`` diverged to NaN in 5 of 6 runs (lr 1e-2: NaN, NaN, 49.5;
    lr 5e-2: NaN ×3); ``kaiming_uniform`` 28.1 / 28.5 / 30.5 at lr 1e-2 and 21.5 / 23.8 / 21.6
    at lr 5e-2, next to backprop's 27.3 / 24.8 / 28.3 and 22.2 / 19.0 / 18.3. The full-data
    protocol (3 epochs, lr 1e-2, ``bench/fashion_mnist_lenet.py``), seeds 0/1, where Xavier did
    not blow up: 12.9 / 12.7 vs ``xavier_uniform`` 13.6 / 12.6. On small MLPs with SGD (lr 5e-2,
    momentum 0.9, 10 epochs) neither blew up: digits 3.1 / 3.3 vs 2.5 / 3.9 (seeds 0/1),
    mnist1d 37.8 vs 35.6 (seed 0).

Every rule here registers its tensors on the layer with the prefix ``bbp_`` (buffers, or a
parameter for KP), so ``model.to(device)`` and ``model.state_dict()`` carry them; ``detach``
removes them. Randomness comes from ``seed`` (default 0), one generator per layer.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ._autograd import FeedbackConv, FeedbackLinear
from .base import WEIGHT_LAYERS, Learner, LossFn, Rule, param_in_optimizer

INITS = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")


def layer_generator(seed: int, index: int, salt: str = "feedback") -> torch.Generator:
    """A generator for layer ``index`` whose stream is unrelated to ``torch.manual_seed(seed)``.

    Hashing (salt, seed, index) matters: seeding with the bare seed would make a feedback matrix
    drawn with seed 0 a rescaled copy of a forward weight initialised after
    ``torch.manual_seed(0)`` — perfectly aligned feedback by accident.
    """
    digest = hashlib.sha256(f"beyondbp:{salt}:{int(seed)}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def init_like(weight: Tensor, init: str, generator: torch.Generator) -> Tensor:
    """A fresh tensor of ``weight``'s shape drawn from ``init`` (on the CPU, then moved)."""
    out = torch.empty(weight.shape, dtype=weight.dtype)
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(out, generator=generator)
    elif init == "xavier_normal":
        nn.init.xavier_normal_(out, generator=generator)
    elif init == "kaiming_uniform":
        nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=generator)
    elif init == "kaiming_normal":
        nn.init.kaiming_normal_(out, generator=generator)
    else:  # pragma: no cover - validated earlier
        raise ConfigError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    return out.to(weight.device)


def init_bound(weight: Tensor, init: str) -> float:
    """Half-width of the uniform distribution (or std of the normal one) of ``init``."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return {
        "xavier_uniform": math.sqrt(6.0 / (fan_in + fan_out)),
        "xavier_normal": math.sqrt(2.0 / (fan_in + fan_out)),
        "kaiming_uniform": 1.0 / math.sqrt(fan_in),
        "kaiming_normal": math.sqrt(2.0 / fan_in),
    }[init]


def check_init(init: str) -> str:
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    return init


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def conv_padding(module: nn.Module, x: Tensor) -> tuple[Tensor, list[int]]:
    """Apply non-zero / asymmetric padding outside the conv; return the int padding to use."""
    n = module.weight.dim() - 2
    if module.padding_mode != "zeros":
        return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), [0] * n
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return x, [0] * n
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        left = [t // 2 for t in total]
        if all(t % 2 == 0 for t in total):
            return x, left
        pads: list[int] = []
        for t, l in zip(reversed(total), reversed(left)):
            pads += [l, t - l]
        return F.pad(x, pads), [0] * n
    return x, list(module.padding)


class _Scratch:
    """Storage reused across steps for a feedback matrix rebuilt at every forward (sign rules).

    Building a fresh W-sized tensor at every step let the allocator return that memory to the
    OS and fault it in again at the next step (measured on the 784-1024x3-10 MLP: ~2000 minor
    page faults per uSF step, most of uSF's time over FA's). The buffer is rewritten in place
    only when no autograd graph still needs its contents: the node that used it releases it at
    the end of its backward, and a graph dropped without backward releases it when freed; in
    every other case (two forwards before one backward, ...) a fresh tensor is used instead.
    One case is refused loudly rather than computed wrongly: ``backward(retain_graph=True)``,
    then a new forward, then a second backward through the first graph raises autograd's
    "modified by an inplace operation" error.
    """

    __slots__ = ("tensor", "holder")

    def __init__(self) -> None:
        self.tensor: Tensor | None = None
        self.holder: Any = None  # weak reference to the autograd node using ``tensor``

    def take(self, like: Tensor) -> Tensor:
        t = self.tensor
        busy = self.holder is not None and self.holder() is not None
        if busy or t is None or t.shape != like.shape or t.dtype != like.dtype or t.device != like.device:
            t = torch.empty(like.shape, dtype=like.dtype, device=like.device)
            self.tensor = t
        self.holder = None
        return t

    def hold(self, out: Tensor) -> None:
        node = out.grad_fn
        if node is not None:
            self.holder = weakref.ref(node)
            node.bbp_scratch = self

    def release(self, node: Any) -> None:
        if self.holder is not None and self.holder() is node:
            self.holder = None


class FeedbackPathLearner(Learner):
    """Wraps every supported layer's forward so its backward uses ``rule.feedback(...)``."""

    def __init__(self, rule: "FeedbackPathRule", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.layers: dict[str, nn.Module] = {
            name: m for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)
        }
        self._installed: list[tuple[nn.Module, list[str]]] = []
        for index, (name, module) in enumerate(self.layers.items()):
            before = set(module._parameters) | set(module._buffers)
            rule.setup_layer(module, index)
            added = [k for k in list(module._parameters) + list(module._buffers) if k not in before]
            self._installed.append((module, added))
            module.forward = self._make_forward(module)
            module.__deepcopy__ = self._refuse_copy

    def _refuse_copy(self, memo: Any) -> Any:
        # The wrapped forward is a closure over the *original* layer: a deep copy would run
        # the original's weights in its forward (silently wrong), so it is refused instead.
        raise ConfigError(
            f"a model with rule '{self.rule.name}' attached cannot be deep-copied (its layers' "
            "forward passes belong to the learner); copy the model before attaching, or call "
            "learner.detach() first"
        )

    def _make_forward(self, module: nn.Module):
        rule: FeedbackPathRule = self.rule  # type: ignore[assignment]
        cls_forward = type(module).forward
        is_linear = isinstance(module, nn.Linear)

        scratch = _Scratch() if rule.rebuilds_feedback else None

        def forward(x: Tensor) -> Tensor:
            if not (self._active and torch.is_grad_enabled()):
                return cls_forward(module, x)
            if scratch is None:
                feedback, scale = rule.feedback(module)
            else:
                feedback, scale = rule.feedback(module, out=scratch.take(module.weight))
            if is_linear:
                out = FeedbackLinear.apply(x, module.weight, module.bias, feedback, scale)
            else:
                x, padding = conv_padding(module, x)
                out = FeedbackConv.apply(
                    x, module.weight, module.bias, feedback, scale,
                    list(module.stride), padding, list(module.dilation), module.groups,
                )
            if scratch is not None:
                scratch.hold(out)
            return out

        return forward

    def trained_layers(self) -> dict[str, nn.Module]:
        return dict(self.layers)

    def feedback_matrix(self, layer_name: str) -> Tensor | None:
        module = self.layers[layer_name]
        with torch.no_grad():
            feedback, scale = self.rule.feedback(module)  # type: ignore[attr-defined]
            return (feedback * scale).detach().clone()

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.rule.check_optimizer(self, optimizer)  # type: ignore[attr-defined]

    def _restore(self) -> None:
        for module, added in self._installed:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("__deepcopy__", None)
            for key in added:
                module._parameters.pop(key, None)
                module._buffers.pop(key, None)


class FeedbackPathRule(Rule):
    """Base of the rules that only change the matrix carrying errors backwards."""

    family: ClassVar[str] = "feedback"
    #: True for rules that rebuild the feedback at every forward: their ``feedback(module,
    #: out=...)`` writes it into a buffer the learner reuses across steps.
    rebuilds_feedback: ClassVar[bool] = False

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return FeedbackPathLearner(self, model, loss_fn)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        """Register the rule's tensors on ``module`` (names start with ``bbp_``)."""

    def feedback(self, module: nn.Module) -> tuple[Tensor, float]:
        """The feedback matrix (``W``'s shape) and a scalar it is multiplied by."""
        raise NotImplementedError

    def check_optimizer(self, learner: FeedbackPathLearner, optimizer: torch.optim.Optimizer) -> None:
        pass


class FA(FeedbackPathRule):
    name = "fa"
    summary = "feedback alignment: a fixed random matrix B replaces Wᵀ in the backward pass"
    paper = "Random synaptic feedback weights support error backpropagation for deep learning (Lillicrap et al. 2016)"

    def __init__(self, *, seed: int = 0, init: str = "kaiming_uniform") -> None:
        self.seed = check_seed(seed)
        self.init = check_init(init)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        gen = layer_generator(self.seed, index)
        module.register_buffer("bbp_feedback", init_like(module.weight.detach(), self.init, gen))

    def feedback(self, module: nn.Module) -> tuple[Tensor, float]:
        return module.bbp_feedback, 1.0


class USF(FeedbackPathRule):
    rebuilds_feedback = True
    name = "usf"
    summary = "uniform sign-concordant feedback: B = s·sign(W), rebuilt every forward pass"
    paper = "How Important is Weight Symmetry in Backpropagation? (Liao, Leibo, Poggio 2016)"

    def __init__(self, *, scale: str | float = "xavier") -> None:
        if isinstance(scale, str):
            if scale not in ("xavier", "fan_in"):
                raise ConfigError(f"usf scale must be 'xavier', 'fan_in' or a positive number, got {scale!r}")
        elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"usf scale must be 'xavier', 'fan_in' or a positive number, got {scale!r}")
        self.scale = scale

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

    def __init__(self, *, seed: int = 0, init: str = "xavier_uniform") -> None:
        self.seed = check_seed(seed)
        self.init = check_init(init)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        gen = layer_generator(self.seed, index)
        mag = init_like(module.weight.detach(), self.init, gen).abs_()
        module.register_buffer("bbp_magnitude", mag)

    def feedback(self, module: nn.Module, out: Tensor | None = None) -> tuple[Tensor, float]:
        w = module.weight.detach()
        if out is None:
            return torch.copysign(module.bbp_magnitude, w), 1.0
        return torch.copysign(module.bbp_magnitude, w, out=out), 1.0


class BRSF(FeedbackPathRule):
    rebuilds_feedback = True
    name = "brsf"
    summary = "batchwise random-magnitude sign-concordant feedback: |M| redrawn every minibatch"
    paper = "Biologically-plausible learning algorithms can scale to large datasets (Xiao et al. 2018)"

    def __init__(self, *, seed: int = 0, init: str = "xavier_uniform") -> None:
        self.seed = check_seed(seed)
        self.init = check_init(init)
        self._generators: dict[int, torch.Generator] = {}
        self._bits: dict[int, Tensor] = {}  # per-layer scratch for the random bits (CPU)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        self._generators[id(module)] = layer_generator(self.seed, index)

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
                return torch.copysign(out, w, out=out), bound / 65536.0
            out.copy_(k.to(torch.float32).add_(0.5).mul_(1.0 / 65536.0))
            return torch.copysign(out, w, out=out), bound
        mag = torch.randn(w.shape, generator=gen, dtype=w.dtype).abs_()
        return torch.copysign(mag.to(w.device), w, out=out), bound


class KP(FeedbackPathRule):
    name = "kp"
    summary = "Kolen-Pollack: B learns with W's gradient and weight decay, so W − B → 0"
    paper = "Deep learning without weight transport (Akrout et al. 2019); Kolen & Pollack 1994"

    def __init__(self, *, seed: int = 0, init: str = "kaiming_uniform") -> None:
        self.seed = check_seed(seed)
        self.init = check_init(init)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        gen = layer_generator(self.seed, index)
        fb = init_like(module.weight.detach(), self.init, gen)
        module.register_parameter("bbp_feedback", nn.Parameter(fb))

    def feedback(self, module: nn.Module) -> tuple[Tensor, float]:
        return module.bbp_feedback, 1.0

    def check_optimizer(self, learner: FeedbackPathLearner, optimizer: torch.optim.Optimizer) -> None:
        for name, module in learner.layers.items():
            fb = module.bbp_feedback
            if not param_in_optimizer(fb, optimizer):
                raise ConfigError(
                    f"Kolen-Pollack trains the feedback matrix '{name}.bbp_feedback' with your "
                    "optimizer, but the optimizer does not hold it; create the optimizer after "
                    "rule.attach(model) from model.parameters()"
                )
            gw = _group_of(module.weight, optimizer)
            gb = _group_of(fb, optimizer)
            if gw is not None and gw is not gb:
                keys = ("lr", "weight_decay", "momentum")
                if any(gw.get(k) != gb.get(k) for k in keys):
                    raise ConfigError(
                        f"Kolen-Pollack needs '{name}.weight' and '{name}.bbp_feedback' to share "
                        "learning rate, momentum and weight decay; put them in the same parameter group"
                    )


def _group_of(param: Tensor, optimizer: torch.optim.Optimizer) -> dict | None:
    for group in optimizer.param_groups:
        if any(param is q for q in group["params"]):
            return group
    return None
