"""Fully test-time adaptation methods: source, norm, TENT and NHL.

Every method is an :class:`Adapter` built from a trained source model. The adapter works on its
own deep copy of the model, so the source model (and the checkpoint it came from) is never
changed. ``adapter(x)`` takes one unlabelled test batch, adapts on it (online: the state carries
over to the next batch) and returns the logits of its prediction for that batch. With
``episodic=True`` the adapter restores the source state (weights, statistics, optimizer state)
before every batch, so each batch is adapted from the source model alone.

Methods (H(p) = −Σ_c p_c log p_c is the entropy of the softmax prediction p of one sample):

``source``
    No adaptation: the source model in eval mode (BatchNorm uses its running statistics).

``norm``
    Test-time BatchNorm: every BatchNorm layer normalises with the mean and (biased) variance of
    the current test batch instead of the running statistics; no parameter changes. As
    ``norm.py`` of DequanWang/tent by default: running statistics are dropped, the source ones
    are not mixed in. From "Improving robustness against common corruptions by covariate shift
    adaptation" (Schneider et al., NeurIPS 2020) and the TENT paper's "BN" baseline.

``tent``
    "Tent: Fully Test-time Adaptation by Entropy Minimization" (Wang, Shelhamer, Liu, Olshausen,
    Darrell; ICLR 2021), the recipe of DequanWang/tent: the model in train mode with BatchNorm on
    test-batch statistics (as ``norm``); only the BatchNorm affine parameters γ, β are trainable;
    per batch one step of Adam (lr 1e-3, β = (0.9, 0.999), no weight decay) on the mean entropy
    L = (1/N) Σ_n H(p_n). The prediction returned is the one of the forward pass that computed
    L (before the step), as ``forward_and_adapt`` does in the authors' code. ``episodic`` resets
    the model and the Adam state to the source before every batch; with ``steps=1`` episodic
    TENT therefore predicts exactly as ``norm`` (its step only affects later batches, and there
    are none from that state).

``nhl``
    "Neuro-Modulated Hebbian Learning for Fully Test-Time Adaptation" (Tang, Zhang, Xu, Chen,
    Cheng, Leng, Guo, He; CVPR 2023). The authors' code is not public; what is implemented here,
    from the paper's description (its Figure 2: "the first convolution layer of the source model
    is finetuned by Hebbian learning rule and the neuromodulator is further fine-tuned by the
    entropy loss before making a prediction", the classifier locked):

    1. *Soft-Hebbian front layer.* The model's first convolution (``conv1``, initialised from the
       source) is updated on every test batch, without labels, by the library's SoftHebb rule
       (``soft_wta``, ``plasticity`` and ``scaled_update`` of :mod:`beyondbp.plasticity.softhebb`,
       the equations the rule :mod:`beyondbp.rules.softhebb` trains with): with x the layer's input patches and
       u = W x its bias-free response, y = softmax(u / τ) across the channels (the arg-max
       channel keeps +y, the others get −y when ``anti_hebbian``), ΔW_i = Σ y_i x − (Σ y_i u_i)
       W_i summed over the batch and positions, and W_i ← W_i + η_i ΔW_i / max|ΔW| with
       η_i = ``hebb_lr`` · |‖W_i‖ − 1|^``hebb_power``. The layer's bias is left as the source
       had it (the rule's u has none).
    2. *Neuromodulator.* A 1×1 convolution (channels → channels, initialised to the identity,
       bias 0) inserted right after ``conv1`` and before its BatchNorm; per batch, after the
       Hebbian update, one Adam step (lr 1e-3, β = (0.9, 0.999)) on the mean entropy L of the
       predictions, through the frozen network above it. Only the neuromodulator's parameters
       receive this gradient.
    3. *Prediction.* A forward pass with the updated layers; BatchNorm layers normalise with
       test-batch statistics (as ``norm``); everything above the neuromodulator (conv2, conv3,
       BatchNorm affine parameters, the classifier) stays at the source values.

    Ablations (``bench/adapt_nhl_ablation.py``): ``hebbian=False`` skips step 1, ``modulate=False``
    step 2; with both off NHL predicts exactly as ``norm`` (the modulator starts as the identity).

    Where this may differ from the authors: the paper's soft Hebbian rule is derived from a
    free-energy argument and may weight or normalise its update differently from SoftHebb's
    (Journé et al. 2023), which is reused here as the issue asks; the neuromodulator's exact
    form and place (we use a channel-mixing 1×1 convolution right after the Hebbian layer), the
    learning rates (``hebb_lr=1e-3``, ``t_invert=1``: our choice, not tuned on the test data), the
    use of test-batch BatchNorm statistics, and the order of the two updates are our reading,
    not confirmed by code.

Batches. ``norm``, ``tent`` and ``nhl`` estimate BatchNorm statistics from the batch, which a
single sample makes degenerate (its variance over a channel measures nothing about the shift):
they refuse a batch of one sample with a :class:`~beyondbp.errors.DataError`. :func:`stream_error`
never forms one: a final batch of one sample joins the batch before it. A batch holding NaN or
infinite values is refused by every method, before anything changes, with a ``DataError``.
Everything is deterministic on the CPU: same inputs -> same numbers.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from typing import Annotated, Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .. import options
from ..errors import ConfigError, DataError
from ..options import opt, parse_names
from ..plasticity.softhebb import plasticity, scaled_update, soft_wta
from ..training.batches import batch_slices
from ..training.components import build_optimizer

__all__ = ["METHODS", "Adapter", "NHL", "Norm", "Source", "Tent", "describe_options", "entropy", "make", "names",
           "parse_methods", "split_batches", "stream_error"]

#: Adam's (β1, β2), as TENT's recipe and NHL's neuromodulator use them (torch's bounds).
Betas = Annotated[list[Annotated[float, Field(ge=0, lt=1)]], opt(
    (0.9, 0.999), "Adam's (beta1, beta2)", accepts="a list of two numbers >= 0 and < 1, such as [0.9, 0.999]",
    min_length=2, max_length=2)]


def entropy(logits: Tensor) -> Tensor:
    """Per-sample entropy H(softmax(logits)) = −Σ_c p_c log p_c (as TENT's ``softmax_entropy``)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def use_batch_statistics(model: nn.Module) -> None:
    """Make every BatchNorm layer of ``model`` normalise with the current batch's statistics
    (train mode, no running statistics kept), as TENT's ``configure_model`` does."""
    for bn in _batchnorms(model):
        bn.train()
        bn.track_running_stats = False
        bn.running_mean = None
        bn.running_var = None


class Adapter:
    """Base of the methods: a private copy of the source model, reset and batch checks.

    A method's options are declared in its ``Options`` class (:mod:`beyondbp.options`; the
    source model and ``episodic`` are not options); its constructor validates them with
    :meth:`parse_options`, so a bad value or an unknown name is refused with one sentence
    naming the adapter (``"adapter 'tent' option steps must be an integer >= 1, got 0"``)."""

    name: ClassVar[str] = ""
    uses_batch_statistics: ClassVar[bool] = True
    Options: ClassVar[type[options.Options]] = options.NoOptions

    @classmethod
    def parse_options(cls, values: dict[str, Any]) -> options.Options:
        """``values`` checked against :attr:`Options` (:class:`ConfigError`, one sentence)."""
        return options.parse(cls.Options, values, f"adapter '{cls.name}'")

    def __init__(self, source: nn.Module, episodic: bool = False) -> None:
        if self.uses_batch_statistics and not _batchnorms(source):
            raise ConfigError(f"method {self.name!r} needs a model with BatchNorm layers; this one has none")
        self.episodic = bool(episodic)
        self.model = self._configure(copy.deepcopy(source))
        self.optimizer = self._make_optimizer()
        self._initial_model = copy.deepcopy(self.model.state_dict())
        self._initial_optimizer = copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None

    # -- per method --------------------------------------------------------------------------
    def _configure(self, model: nn.Module) -> nn.Module:
        return model

    def _make_optimizer(self) -> torch.optim.Optimizer | None:
        return None

    def _adapt_and_predict(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Restore the state the adapter started from (the source model's, configured)."""
        self.model.load_state_dict(self._initial_model)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self._initial_optimizer)

    def check_batch(self, x: Tensor) -> None:
        if x.dim() == 0 or x.shape[0] == 0:
            raise DataError(f"method {self.name!r} got an empty batch; give at least one sample")
        if not torch.isfinite(x).all():
            raise DataError(f"method {self.name!r} got a batch holding NaN or infinite values; "
                            "test inputs must be finite (nothing was adapted)")
        if self.uses_batch_statistics and x.shape[0] < 2:
            raise DataError(f"method {self.name!r} needs at least 2 samples per batch: BatchNorm statistics of one "
                            "sample are degenerate; use a larger batch or method 'source'")

    def __call__(self, x: Tensor) -> Tensor:
        """Adapt on the batch ``x`` (online; from the source state when episodic) and return the
        logits predicted for it."""
        self.check_batch(x)
        if self.episodic:
            self.reset()
        return self._adapt_and_predict(x)


class Source(Adapter):
    name = "source"
    uses_batch_statistics = False

    def _configure(self, model: nn.Module) -> nn.Module:
        model.eval()
        model.requires_grad_(False)
        return model

    @torch.no_grad()
    def _adapt_and_predict(self, x: Tensor) -> Tensor:
        return self.model(x)


class Norm(Source):
    """The source model with every BatchNorm normalising by the test batch's statistics."""

    name = "norm"
    uses_batch_statistics = True

    def _configure(self, model: nn.Module) -> nn.Module:
        model = super()._configure(model)
        use_batch_statistics(model)
        return model


class Tent(Adapter):
    name = "tent"

    class Options(options.Options):
        lr: float = opt(1e-3, "Adam learning rate of the entropy steps", gt=0)
        betas: Betas
        steps: int = opt(1, "entropy steps per batch (the prediction is the first step's forward pass)", ge=1)

    def __init__(self, source: nn.Module, episodic: bool = False, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), steps: int = 1) -> None:
        self.parse_options({"lr": lr, "betas": betas, "steps": steps})
        self.lr, self.betas, self.steps = float(lr), tuple(betas), steps
        super().__init__(source, episodic)

    def _configure(self, model: nn.Module) -> nn.Module:
        model.train()
        model.requires_grad_(False)
        use_batch_statistics(model)
        for bn in _batchnorms(model):
            if bn.affine:
                bn.weight.requires_grad_(True)
                bn.bias.requires_grad_(True)
        return model

    def parameters(self) -> list[nn.Parameter]:
        """The parameters TENT adapts: every BatchNorm layer's γ and β, in module order."""
        return [p for bn in _batchnorms(self.model) if bn.affine for p in (bn.weight, bn.bias)]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.parameters()
        if not params:
            raise ConfigError("tent needs BatchNorm layers with affine parameters; this model has none")
        return build_optimizer("adam", params, lr=self.lr, betas=self.betas)

    def _adapt_and_predict(self, x: Tensor) -> Tensor:
        for _ in range(self.steps):
            with torch.enable_grad():
                logits = self.model(x)
                loss = entropy(logits).mean(0)
                loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return logits.detach()


class NHL(Adapter):
    name = "nhl"

    class Options(options.Options):
        hebbian_layer: str = opt("conv1", "name of the Conv2d child the soft-Hebbian rule updates")
        hebb_lr: float = opt(1e-3, "Hebbian learning rate η₀", gt=0)
        t_invert: float = opt(1.0, "inverse temperature 1/τ of the soft WTA", gt=0)
        hebb_power: float = opt(0.5, "exponent p of the norm-dependent learning rate η₀·|‖W_i‖ − 1|^p", ge=0)
        anti_hebbian: bool = opt(True, "anti-Hebbian updates for the non-winning channels (SoftHebb)")
        lr: float = opt(1e-3, "Adam learning rate of the neuromodulator", gt=0)
        betas: Betas
        hebbian: bool = opt(True, "the soft-Hebbian step (False: skipped, an ablation)")
        modulate: bool = opt(True, "the neuromodulator's entropy step (False: skipped, an ablation)")

    def __init__(self, source: nn.Module, episodic: bool = False, hebbian_layer: str = "conv1",
                 hebb_lr: float = 1e-3, t_invert: float = 1.0, hebb_power: float = 0.5, anti_hebbian: bool = True,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), hebbian: bool = True,
                 modulate: bool = True) -> None:
        self.parse_options({"hebbian_layer": hebbian_layer, "hebb_lr": hebb_lr, "t_invert": t_invert,
                            "hebb_power": hebb_power, "anti_hebbian": anti_hebbian, "lr": lr, "betas": betas,
                            "hebbian": hebbian, "modulate": modulate})
        if not isinstance(source, nn.Sequential) or not isinstance(getattr(source, hebbian_layer, None), nn.Conv2d):
            raise ConfigError(f"nhl needs an nn.Sequential model whose layer {hebbian_layer!r} is a Conv2d "
                              "(the Hebbian front layer)")
        self.hebbian_layer = hebbian_layer
        self.hebb_lr, self.t_invert, self.hebb_power = float(hebb_lr), float(t_invert), float(hebb_power)
        self.anti_hebbian = bool(anti_hebbian)
        self.lr, self.betas = float(lr), tuple(betas)
        self.hebbian, self.modulate = bool(hebbian), bool(modulate)
        super().__init__(source, episodic)

    def _configure(self, model: nn.Module) -> nn.Module:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for name, child in model.named_children():
            layers[name] = child
            if name == self.hebbian_layer:
                channels = child.out_channels
                mod = nn.Conv2d(channels, channels, 1, bias=True)
                with torch.no_grad():
                    mod.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
                    mod.bias.zero_()
                layers["modulator"] = mod
        net = nn.Sequential(layers)
        net.eval()
        net.requires_grad_(False)
        use_batch_statistics(net)
        net.modulator.requires_grad_(True)
        return net

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer("adam", self.model.modulator.parameters(), lr=self.lr, betas=self.betas)

    def _front(self, x: Tensor) -> Tensor:
        """The Hebbian layer's input: ``x`` through every layer before it."""
        for name, layer in self.model.named_children():
            if name == self.hebbian_layer:
                return x
            x = layer(x)
        raise AssertionError("unreachable: the Hebbian layer is a child of the model")

    @torch.no_grad()
    def hebbian_update(self, x: Tensor) -> Tensor:
        """Apply one soft-Hebbian step to the front layer on batch ``x``; return the change made."""
        layer: nn.Conv2d = getattr(self.model, self.hebbian_layer)
        inp = self._front(x)
        u = F.conv2d(inp, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        y = soft_wta(u, self.t_invert, self.anti_hebbian)
        delta = plasticity(layer, inp, u, y)
        change = scaled_update(delta, layer.weight, self.hebb_lr, self.hebb_power)
        layer.weight.add_(change)
        return change

    def _adapt_and_predict(self, x: Tensor) -> Tensor:
        if self.hebbian:
            self.hebbian_update(x)
        if self.modulate:
            with torch.enable_grad():
                loss = entropy(self.model(x)).mean(0)
                loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            return self.model(x)


METHODS: dict[str, type[Adapter]] = {"source": Source, "norm": Norm, "tent": Tent, "nhl": NHL}


def names() -> list[str]:
    return list(METHODS)


def _method_class(name: str) -> type[Adapter]:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; methods are: {', '.join(METHODS)}")
    return METHODS[name]


def make(name: str, source: nn.Module, episodic: bool = False, **opts: Any) -> Adapter:
    """The adapter called ``name`` for ``source`` (which it copies and never changes); ``opts``
    as its ``Options`` declare (an unknown name or a bad value: one sentence)."""
    cls = _method_class(name)
    cls.parse_options(opts)
    return cls(source, episodic=episodic, **opts)


def describe_options(name: str) -> list[dict[str, str]]:
    """Name, what it accepts, default and help of every option of method ``name``
    (:func:`beyondbp.options.describe`; empty for ``source`` and ``norm``)."""
    return options.describe(_method_class(name).Options)


def parse_methods(text: str) -> list[str]:
    """``"all"`` or a comma-separated list of method names -> the names (validated)."""
    return parse_names(text, "method", METHODS, allow_all=True)


def split_batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of ``batch_size`` covering ``range(n)``; a final slice of one sample
    joins the one before it (batch statistics of one sample are degenerate)."""
    return batch_slices(n, batch_size, join_single=True)


def stream_error(adapter: Adapter, x: Tensor, y: Tensor, batch_size: int = 128,
             on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Stream ``x`` through ``adapter`` in order, in batches of ``batch_size``; return the top-1
    ``error`` (fraction), the number of ``batches`` and ``seconds_per_batch`` (mean wall-clock
    time of one adapter call: adaptation and prediction)."""
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"stream_error needs as many labels as inputs and at least one sample, got {len(x)} and {len(y)}")
    wrong, seconds = 0, 0.0
    slices = split_batches(len(x), batch_size)
    for i, s in enumerate(slices):
        start = time.perf_counter()
        logits = adapter(x[s])
        seconds += time.perf_counter() - start
        wrong += int((logits.argmax(1) != y[s]).sum())
        if on_batch is not None:
            on_batch(i + 1, len(slices))
    return {"error": wrong / len(x), "batches": len(slices), "seconds_per_batch": seconds / len(slices)}
