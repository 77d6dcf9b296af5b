"""Product feedback alignment (PFA).

Paper: "Deep Learning without Weight Symmetry" (Li Ji-An and Marcus K. Benna, 2024). The
mechanism follows the authors' code (method ``tfa`` in jil095/product_feedback_alignment).

Equations. A Linear layer computes ``a = W x`` with ``W`` of shape ``N_out × N_in``. Its backward
path does not use ``W``: the error ``δ = dL/da`` (``N_out``) is sent to an extra population of
``N_mid = k·N_out`` units through a **fixed random** matrix ``B`` (``N_out × N_mid``), and from that
population to the layer's input through a **learned** matrix ``R`` (``N_mid × N_in``)::

    δ_r = Bᵀ δ                          (row-vector form: δ_r = δ B)
    dL/dx := Rᵀ δ_r = (B R)ᵀ δ          (the product B·R stands in for W)
    ΔW = −η δ xᵀ                        (W learns exactly as in backprop)
    ΔR = −η (δ_r xᵀ + λ R)              (local outer product, same form as W's; λ = weight decay)

No weight is ever copied or transported. Because ``δ_r xᵀ = Bᵀ (δ xᵀ)``, ``R``'s update is ``Bᵀ``
times ``W``'s gradient, so ``B R`` moves by ``B Bᵀ`` times ``W``'s step. ``B`` is drawn
Xavier-uniform with gain ``sqrt((1 + 1/k)/2)``, which makes its entries' variance ``1/N_mid`` and
``E[B Bᵀ] = I``: ``B R`` follows ``W``'s steps, and with weight decay on both (the authors'
``tfawd`` configs: SGD, weight decay 5e-3 on CIFAR-10, 5e-4 on ImageNet) the initial mismatch
``B R₀ − W₀`` decays away, so ``B·R`` comes to track ``W`` (paper metrics: *path alignment*, the
angle between ``B·R`` and ``W``, and *path norm ratio*, ``‖B·R‖/‖W‖``). Without weight decay the
mismatch does not decay; **we recommend weight decay, as the authors rely on it.**

``R`` is a parameter registered on the layer as ``<layer>.bbp_R`` and is trained by the user's
optimizer (with the optimizer's weight decay) — create the optimizer after ``attach``. ``B`` is
the buffer ``<layer>.bbp_B`` (``N_out × N_mid``), never learned.

Variants (option ``variant``), as compared in the paper's code:

* ``"random"`` (default): ``B`` fixed random as above, expansion ``k`` (option ``expansion``,
  default 10, the authors' CIFAR-10 and ImageNet setting).
* ``"identity"`` (the code's ``id``): ``k = 1`` and ``B = I``. Then ``δ_r = δ`` and ``R`` receives
  exactly ``W``'s gradient: this variant *is* Kolen-Pollack (rule ``kp``) with ``R`` as the
  feedback matrix, and costs what KP costs.
* ``"orthogonal"`` (the code's ``ortho``): ``k = 1`` and ``B`` a fixed random orthogonal
  ``N_out × N_out`` matrix (``B Bᵀ = I`` exactly).

``identity`` and ``orthogonal`` require ``expansion`` 1 (the default for them).

Conv layers (Conv1d/2d/3d, ``groups=1``). The population is ``k·C_out`` channels. ``B`` acts as a
1×1 convolution from the ``C_out`` error channels to the population at every output position
(stored as a ``C_out × k·C_out`` matrix), and ``R`` is a kernel of shape ``(k·C_out, C_in, *kernel)``
used, like ``W`` would be, by the transposed convolution that carries the error to the input
(same stride, padding, dilation). Because ``B`` is pointwise, the two steps equal one transposed
convolution with the kernel ``(B·R)[o] = Σ_m B[o, m] R[m]`` (W's shape), which is what the
diagnostics compare with ``W``; ``R``'s gradient is ``Bᵀ`` applied to ``W``'s kernel gradient.
Grouped convolutions are refused (``B`` would mix channels across groups).

Cost, and the order we compute in. Per Linear layer with ``n`` rows in the batch (for a conv:
``n`` = batch × output positions, ``N_in`` = ``C_in`` × kernel size) the backward needs
``dL/dx`` and ``R``'s gradient; each can be computed two ways (multiply-adds):

* through the population: ``δ_r = δ B`` (``n·N_out·N_mid``), then ``δ_r R`` (``n·N_mid·N_in``) and
  ``δ_rᵀ x`` (``n·N_mid·N_in``);
* through the product: ``M = B R`` (``N_out·N_mid·N_in``), then ``δ M`` (``n·N_out·N_in``); and
  ``Bᵀ (δᵀx)`` (``N_mid·N_out·N_in``, reusing W's gradient).

``route="auto"`` picks, per layer and per step, the cheapest combination for the shapes at hand
(batch-independent product forms win for convolutions and small layers; the population route
wins for wide Linear layers with small batches); ``"population"`` / ``"product"`` force one.
Either way ``R``'s gradient costs at least ``N_mid·N_in·min(n, N_out)`` multiply-adds —
``k·min(n, N_out)/(3n)`` times a backprop step of the layer (``3·n·N_out·N_in``) — so with
``k = 10`` a wide hidden Linear layer costs several times backprop; see ``bench/step_time.py``.

Initial ``R`` (option ``init``). The authors initialise ``W`` and ``R`` both Xavier-uniform. beyondbp
models keep PyTorch's default layer initialisation (Kaiming-uniform with ``a=√5``, variance
``1/(3·fan_in)``), so ``R`` defaults to that same distribution on its own shape: its fan-in is
``W``'s, and with ``Var(B) = 1/N_mid`` the product ``B·R`` starts with exactly ``W``'s variance for
every variant and expansion (path norm ratio ≈ 1). ``init="xavier_uniform"`` gives the authors'
``R``; next to a PyTorch-initialised ``W`` that makes ``B·R`` up to √3 times larger than ``W`` for
``k = 1``. On LeNet / Fashion-MNIST the Kaiming default never failed, while Xavier ``R`` with
``k = 1`` stayed at chance (figures in ``bench/README.md``, "PFA: initial R").

Defaults: ``variant="random"``, ``expansion=10`` (1 for the other variants),
``init="kaiming_uniform"`` for ``R`` (see above), ``seed=0``, ``route="auto"``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn
from torch.autograd import Function

from ..errors import ConfigError, UnsupportedModuleError
from ._autograd import FeedbackConv, FeedbackLinear
from .base import (
    Batch,
    Options,
    add_rule_tensor,
    gradient_alignment,
    opt,
    param_in_optimizer,
    rule_attr,
    rule_tensor,
    weight_alignment,
)
from .common import (
    SEED_HELP,
    FeedbackPathLearner,
    FeedbackPathRule,
    InitName,
    conv_padding,
    init_like,
    layer_generator,
)


def choose_route(
    n: int, n_out: int, n_mid: int, n_in: int, need_x: bool, need_r: bool, need_w: bool, route: str = "auto"
) -> tuple[str, str]:
    """How to compute ``dL/dx`` and ``R``'s gradient: each ``"pop"`` or ``"prod"`` (see module doc).

    Returns the cheapest pair in multiply-adds for ``route="auto"``; ties go to the population.
    """
    if route == "population":
        return "pop", "pop"
    if route == "product":
        return "prod", "prod"
    best: tuple[int, tuple[str, str]] | None = None
    for rx in ("pop", "prod") if need_x else ("pop",):
        for rr in ("pop", "prod") if need_r else ("pop",):
            cost = 0
            uses_pop = (need_x and rx == "pop") or (need_r and rr == "pop")
            if uses_pop:
                cost += n * n_out * n_mid
            if need_x:
                cost += n * n_mid * n_in if rx == "pop" else n_out * n_mid * n_in + n * n_out * n_in
            if need_r:
                if rr == "pop":
                    cost += n * n_mid * n_in
                else:
                    cost += n_mid * n_out * n_in + (0 if need_w else n * n_out * n_in)
            if best is None or cost < best[0]:
                best = (cost, (rx, rr))
    assert best is not None
    return best[1]


class ProductLinear(Function):
    """``y = x Wᵀ + b``; backward sends ``δ`` to the input through ``B`` then ``R``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, R: Tensor, B: Tensor, route: str):
        ctx.save_for_backward(x, R, B)
        ctx.route = route
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, R, B = ctx.saved_tensors
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        dtype = grad_out.dtype
        R, B = R.to(dtype), B.to(dtype)
        n_out, n_mid, n_in = B.shape[0], B.shape[1], R.shape[1]
        g2 = grad_out.reshape(-1, n_out)
        x2 = x.reshape(-1, n_in).to(dtype)
        rx, rr = choose_route(g2.shape[0], n_out, n_mid, n_in, need_x, need_r, need_w, ctx.route)
        grad_x = grad_w = grad_b = grad_r = None
        gw = g2.t().matmul(x2) if (need_w or (need_r and rr == "prod")) else None
        pop = g2.matmul(B) if ((need_x and rx == "pop") or (need_r and rr == "pop")) else None
        if need_x:
            gx = pop.matmul(R) if rx == "pop" else g2.matmul(B.matmul(R))
            grad_x = gx.reshape(*grad_out.shape[:-1], n_in)
        if need_r:
            grad_r = pop.t().matmul(x2) if rr == "pop" else B.t().matmul(gw)
        if need_w:
            grad_w = gw
        if need_b:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, grad_r, None, None


class ProductConv(Function):
    """ConvNd (groups = 1, int zero padding); backward through the ``k·C_out``-channel population."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        R: Tensor,
        B: Tensor,
        route: str,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
    ):
        ctx.save_for_backward(x, weight, R, B)
        ctx.conf = (stride, padding, dilation)
        ctx.route = route
        out_pad = [0] * (weight.dim() - 2)
        return torch.convolution(x, weight, bias, stride, padding, dilation, False, out_pad, 1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, R, B = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        dtype = grad_out.dtype
        R, B = R.to(dtype), B.to(dtype)
        n_out, n_mid = B.shape
        n_in = R[0].numel()
        n = grad_out.numel() // n_out
        rx, rr = choose_route(n, n_out, n_mid, n_in, need_x, need_r, need_w, ctx.route)
        out_pad = [0] * (weight.dim() - 2)

        def conv_bwd(g: Tensor, kernel: Tensor, mask: list[bool]) -> tuple[Tensor | None, Tensor | None]:
            gx, gk, _ = torch.ops.aten.convolution_backward(
                g, x.to(dtype), kernel, None, stride, padding, dilation, False, out_pad, 1, mask + [False]
            )
            return gx, gk

        grad_x = grad_w = grad_b = grad_r = gw = None
        want_gw = need_w or (need_r and rr == "prod")
        if need_x and rx == "prod":
            M = B.matmul(R.flatten(1)).view_as(weight)
            grad_x, gw = conv_bwd(grad_out, M, [True, want_gw])
        elif want_gw:
            _, gw = conv_bwd(grad_out, weight.to(dtype), [False, True])
        pop_x, pop_r = need_x and rx == "pop", need_r and rr == "pop"
        if pop_x or pop_r:
            pop = grad_out.movedim(1, -1).matmul(B).movedim(-1, 1).contiguous()
            gx, gr = conv_bwd(pop, R, [pop_x, pop_r])
            if pop_x:
                grad_x = gx
            if pop_r:
                grad_r = gr
        if need_r and rr == "prod":
            grad_r = B.t().matmul(gw.flatten(1)).view_as(R)
        if need_w:
            grad_w = gw
        if need_b:
            grad_b = grad_out.sum(dim=[d for d in range(grad_out.dim()) if d != 1])
        return grad_x, grad_w, grad_b, grad_r, None, None, None, None, None


class PFALearner(FeedbackPathLearner):
    """Feedback-path learner whose layers route their backward error through ``B`` and ``R``."""

    def _make_forward(self, module: nn.Module):
        rule: PFA = self.rule  # type: ignore[assignment]
        cls_forward = type(module).forward
        is_linear = isinstance(module, nn.Linear)
        identity = rule.variant == "identity"

        def forward(x: Tensor) -> Tensor:
            if not (self._active and torch.is_grad_enabled()):
                return cls_forward(module, x)
            R, B = rule_tensor(module, "R"), rule_tensor(module, "B")
            if is_linear:
                if identity:  # B = I: exactly Kolen-Pollack with R as the feedback matrix
                    return FeedbackLinear.apply(x, module.weight, module.bias, R, 1.0)
                return ProductLinear.apply(x, module.weight, module.bias, R, B, rule.route)
            x, padding = conv_padding(module, x)
            stride, dilation = list(module.stride), list(module.dilation)
            if identity:
                return FeedbackConv.apply(x, module.weight, module.bias, R, 1.0, stride, padding, dilation, 1)
            return ProductConv.apply(x, module.weight, module.bias, R, B, rule.route, stride, padding, dilation)

        return forward

    def feedback_matrix(self, layer_name: str) -> Tensor | None:
        """``B·R`` in ``W``'s shape: the matrix standing in for ``W`` in the backward pass."""
        module = self.layers[layer_name]
        with torch.no_grad():
            R, B = rule_tensor(module, "R"), rule_tensor(module, "B")
            return B.matmul(R.flatten(1)).view_as(module.weight).detach().clone()

    def _diagnostics(self, batch: Batch) -> dict[str, float]:
        """Gradient alignment plus, per layer, ``path_angle/<layer>`` (degrees between ``B·R``
        and ``W``) and ``path_norm_ratio/<layer>`` (``‖B·R‖/‖W‖``), the paper's path metrics."""
        out = gradient_alignment(self, batch)
        for key, value in weight_alignment(self).items():
            out[f"path_{key}"] = value
        return out


class PFA(FeedbackPathRule):
    name = "pfa"
    summary = "product feedback alignment: the error returns through fixed random B then learned R; B·R tracks W"
    paper = "Deep Learning without Weight Symmetry (Li Ji-An, Benna 2024)"
    plain_backward = True  # only the backward pass changes: a user's own loss.backward() loop trains as learner.step

    class Options(Options):
        seed: int = opt(0, SEED_HELP, ge=0, lt=2**32)
        variant: Literal["random", "identity", "orthogonal"] = opt("random", "the fixed matrix B: random (expanded), identity, or random orthogonal")
        expansion: int | None = opt(None, "N_mid = expansion · N_out units on the feedback path; None: 10 for random, else 1", ge=1)
        init: InitName = opt("kaiming_uniform", "distribution of R's initial values (R then learns)")
        route: Literal["auto", "population", "product"] = opt(
            "auto", "how the error returns: through the N_mid population (Bᵀ then Rᵀ) or the product B·R; auto: the cheaper"
        )

        @model_validator(mode="after")
        def _square_b(self) -> "PFA.Options":
            if self.variant != "random" and self.expansion not in (None, 1):
                raise ValueError(f"variant '{self.variant}' uses a square B, so expansion must be 1, got {self.expansion}")
            return self

    def _configure(self) -> None:
        if self.expansion is None:
            self.expansion = 10 if self.variant == "random" else 1

    def _make_learner(self, model: nn.Module, loss_fn) -> PFALearner:
        return PFALearner(self, model, loss_fn)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        if getattr(module, "groups", 1) != 1:
            raise UnsupportedModuleError(
                f"rule 'pfa' cannot train a grouped convolution (groups={module.groups}); its fixed "
                "matrix B would mix error channels across groups; use groups=1"
            )
        w = module.weight.detach()
        n_out = w.shape[0]
        n_mid = self.expansion * n_out
        r_gen = layer_generator(self.seed, index, salt="pfa-R")
        R = init_like(torch.empty((n_mid, *w.shape[1:]), dtype=w.dtype), self.init, r_gen)
        add_rule_tensor(module, "R", R.to(w.device), trainable=True)
        add_rule_tensor(module, "B", self._draw_B(n_out, n_mid, index).to(device=w.device, dtype=w.dtype))

    def _draw_B(self, n_out: int, n_mid: int, index: int) -> Tensor:
        gen = layer_generator(self.seed, index, salt="pfa-B")
        if self.variant == "identity":
            return torch.eye(n_out)
        if self.variant == "orthogonal":
            return nn.init.orthogonal_(torch.empty(n_out, n_out), generator=gen)
        k = self.expansion
        gain = math.sqrt((1.0 + 1.0 / k) / 2.0)
        bound = gain * math.sqrt(6.0 / (n_out + n_mid))  # Xavier-uniform: entries' variance 1/n_mid
        return (torch.rand(n_out, n_mid, generator=gen) * 2 - 1) * bound

    def feedback(self, module: nn.Module) -> tuple[Tensor, float]:
        R, B = rule_tensor(module, "R"), rule_tensor(module, "B")
        return B.matmul(R.flatten(1)).view_as(module.weight), 1.0

    def check_optimizer(self, learner: FeedbackPathLearner, optimizer: torch.optim.Optimizer) -> None:
        for name, module in learner.layers.items():
            R = rule_tensor(module, "R")
            if R.requires_grad and not param_in_optimizer(R, optimizer):  # a layer frozen at attach keeps R frozen
                raise ConfigError(
                    f"PFA trains the feedback matrix '{name}.{rule_attr('R')}' with your optimizer, but the "
                    "optimizer does not hold it; create the optimizer after rule.attach(model) from "
                    "model.parameters()"
                )
