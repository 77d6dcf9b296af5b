"""Direct random target projection (DRTP).

Paper: "Learning without feedback: Fixed random learning signals allow for feedforward training
of deep neural networks" (Charlotte Frenkel, Martin Lefebvre, David Bol; Frontiers in
Neuroscience 15, 2021; arXiv:1909.01311). Reference code: github.com/ChFrenkel/DirectRandomTargetProjection.

Idea. In classification with a sigmoid or softmax output and one-hot targets ``y*``, the sign
of the output error ``e = ŷ − y*`` is known before the forward pass ends: negative for the
target class, positive for every other class. The target itself therefore carries the error's
sign, and DRTP hands every hidden layer a fixed random projection of the *target* where DFA
hands it a projection of the error. A hidden layer's learning signal then depends only on its
own input, its own activity and the label: it can be updated as soon as its forward computation
is done, with no backward pass and no output error (no weight transport, no update locking).

Equations. For a layered network ``a_k = W_k h_{k−1} + b_k``, ``h_k = f(a_k)`` (``h_0 = x``),
output layer ``L`` and loss ``ℓ(ŷ, y*)``, per sample:

    hidden layer k < L:   δ_k = (B_kᵀ y*) ⊙ f'(a_k)              (B_k fixed, C × n_k)
                          ∂W_k := δ_k h_{k−1}ᵀ,   ∂b_k := δ_k
    output layer L:       δ_L = ∂ℓ/∂a_L  (the ordinary gradient: softmax(ŷ) − y* for cross-entropy)
                          ∂W_L := δ_L h_{L−1}ᵀ,   ∂b_L := δ_L

and the optimizer subtracts these directions (plain SGD: ``ΔW_k = −η δ_k h_{k−1}ᵀ``). The
sign is the one of the authors' code, whose hook returns ``y* B_k`` as the gradient at ``h_k``;
``B_k`` is zero-mean, so the opposite sign would be the same rule with ``−B_k``. No gradient
crosses a layer: nothing a layer computes in its backward reaches the layer before it.

How it is computed. Like DFA's default placement, the signal for hidden layer ``k`` enters at
the input of the next weight layer (every Linear / ConvNd layer whose input requires grad is a
*point*): the forward pass hands that layer a detached copy of its input, and the learner then
runs one autograd call with the loss (for the output layer) and ``dℓ/dh_k := y* B_k`` at every
point. Autograd carries each point's signal back to the layer that produced it, through the
parameter-free modules in between (activation → ``⊙ f'(a_k)``; also pooling, flatten, dropout;
normalisation layers learn from it too) and stops at the previous point. For an MLP this is
exactly the equations above. For a conv layer followed by pooling (LeNet) the point sits after
the pooling, so only the pooled positions receive the signal; the authors' code puts its hook
between the activation and the pooling (a ``C × channels × height × width`` matrix). For
sequence outputs ``(N, T, C)`` with targets ``(N, T)``, the projection is per token.

Targets: class indices (shape of the output without its last dimension) are one-hot encoded;
a float target of the output's shape is projected as given (the regression case of the authors' code).

Projection matrices (defaults as in the authors' code): ``B_k`` has one row per output and one
column per element of the point's per-sample tensor (``n_k`` of them) and is drawn once, at the
first training forward pass, from U(−√(6/n_k), √(6/n_k)) — PyTorch's ``kaiming_uniform_`` on a
``C × n_k`` tensor, which the authors use — times ``scale`` (default 1), from ``seed`` (default
0; one generator per point, unrelated to ``torch.manual_seed``). Matrices never change.

``reduction="mean"`` (default) divides the summed per-sample signal by the number of samples
(tokens), so the hidden layers' directions are on the scale of a mean-reduced loss, like the
output layer's. The authors' code does not divide (``reduction="sum"``): with SGD that is the
hidden layers' learning rate times the batch size; Adam and RMSprop are nearly insensitive to
it. The authors' defaults for the rest of training belong to the user's optimizer, loss and
model (their script: SGD with Nesterov momentum 0.9, lr 1e-4, batch 100, binary cross-entropy on
a sigmoid output, tanh hidden units); beyondbp's default loss, cross-entropy on logits, is
what the output layer learns from here.

Saturating hidden units. The signal ``y* B_k`` does not shrink as the network learns (it is
not an error), so the hidden layers stop changing only where ``f'(a_k)`` vanishes: the authors'
code defaults to tanh hidden (and convolutional) units. With ReLU-like units a unit pushed up for
a class is pushed up for ever and the growth compounds from layer to layer, so the rule refuses
models with non-saturating activations (ReLU, GELU, ELU, SiLU, ...) by path and type; use
``activation="tanh"`` (``--model-opt activation=tanh``). What happened on ReLU models before
they were refused is in ``bench/README.md``.

Train with ``learner.step`` (or the run loop), which knows the targets: while the rule is
attached, a plain ``loss.backward()`` through a training forward raises a ConfigError rather
than silently computing something else. ``estimate`` returns the directions above;
``backprop_gradients`` the ordinary gradients of the same loss.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Sequence, get_args

import torch
from torch import Tensor, nn
from torch.autograd import Function

from ..errors import ConfigError, UnsupportedModuleError
from .base import WEIGHT_LAYERS, Batch, Learner, LossFn, Options, Rule, check_batch, opt
from .common import SEED_HELP, layer_generator

#: Activations whose derivative never vanishes for large inputs: under a target projection
#: (a signal that does not shrink as the network learns) their units grow without bound.
NON_SATURATING: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Softplus,
)


def _saturating_hint(model: nn.Module) -> str:
    """What the user can do about non-saturating units in ``model``: its ``activation`` option
    where its declaration has one offering tanh, else another model or another rule."""
    declared = getattr(getattr(type(model), "Options", None), "model_fields", {})
    field = declared.get("activation") if isinstance(declared, dict) else None
    if field is not None and "tanh" in get_args(field.annotation):
        return "use tanh or sigmoid units (--model-opt activation=tanh)"
    return ("this model's units are fixed (it has no activation option), so use a tanh or sigmoid network (mlp, "
            "lenet and cnn1d take --model-opt activation=tanh) or another rule for it")


class _NeedsTargets(Function):
    """Identity whose backward refuses: outside ``learner.step`` the targets are unknown."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        raise ConfigError(
            "DRTP needs the targets to train the hidden layers, so train with learner.step(batch, "
            "optimizer) instead of calling loss.backward() yourself (or detach the rule first)"
        )


class DRTPLearner(Learner):
    def __init__(self, rule: "DRTP", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.drtp: DRTP = rule
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)}
        self._collecting = False
        self._points: list[tuple[str, Tensor]] = []
        self._matrices: dict[str, Tensor] = {}
        self._handles: list[Any] = []
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_pre_hook(self._make_hook(name)))

    # -- forward hooks -------------------------------------------------------------------------
    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            if not args or not self._active or not torch.is_grad_enabled():
                return None
            x = args[0]
            if not (isinstance(x, Tensor) and x.requires_grad):
                return None
            if self._collecting:
                self._points.append((name, x))
                return (x.detach(), *args[1:])
            return (_NeedsTargets.apply(x), *args[1:])

        return hook

    # -- the rule ------------------------------------------------------------------------------
    def _rule_backward(self, x: Tensor, y: Tensor) -> Tensor:
        """Forward ``x``, then accumulate the DRTP directions in ``.grad``; returns the loss."""
        self._points = []
        self._collecting = True
        try:
            out = self.model(x)
        finally:
            self._collecting = False
            points, self._points = self._points, []
        signals = self.project(self.encode_target(y, out), points) if points else []
        loss = self.loss_fn(out, y)
        tensors: list[Tensor] = [loss] if loss.requires_grad else []
        grads: list[Tensor | None] = [None] * len(tensors)
        for (_, point), signal in zip(points, signals):
            tensors.append(point)
            grads.append(signal)
        if tensors:
            torch.autograd.backward(tensors, grads)
        return loss

    def encode_target(self, y: Tensor, out: Tensor) -> Tensor:
        """The target as a vector per sample: one-hot for class indices, as given for a float
        target of the output's shape."""
        if not isinstance(out, Tensor) or out.dim() < 2:
            raise ConfigError(
                "DRTP needs a model output of shape (batch, ..., outputs) to know the number of "
                f"classes, got {type(out).__name__ if not isinstance(out, Tensor) else tuple(out.shape)}"
            )
        if not y.is_floating_point() and not y.is_complex() and y.shape == out.shape[:-1]:
            n = out.shape[-1]
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n):
                raise ConfigError(f"DRTP targets must be class indices in [0, {n}), got values outside it")
            return torch.nn.functional.one_hot(y.long(), n).to(out.dtype)
        if y.is_floating_point() and y.shape == out.shape:
            return y.detach().to(out.dtype)
        raise ConfigError(
            f"DRTP needs class-index targets of shape {tuple(out.shape[:-1])} or float targets of the "
            f"output's shape {tuple(out.shape)}, got {y.dtype} targets of shape {tuple(y.shape)}"
        )

    def project(self, target: Tensor, points: list[tuple[str, Tensor]]) -> list[Tensor]:
        """``y* B_k`` for every point, shaped like the point (divided by the number of samples
        for ``reduction="mean"``)."""
        lead = target.shape[:-1]
        n_out = target.shape[-1]
        t2 = target.reshape(-1, n_out)
        rows = t2.shape[0]
        out = []
        for name, point in points:
            shape = point.shape
            if tuple(shape[: len(lead)]) != tuple(lead) or len(shape) == len(lead):
                raise ConfigError(
                    f"DRTP cannot project targets of shape {tuple(target.shape)} onto the input of layer "
                    f"'{name}' of shape {tuple(shape)}: their leading (batch) dimensions must agree"
                )
            width = math.prod(shape[len(lead):])
            B = self.matrix(name, n_out, width, point)
            signal = t2.to(B.dtype).matmul(B)
            if self.drtp.reduction == "mean" and rows:
                signal = signal / rows
            out.append(signal.to(point.dtype).reshape(shape))
        return out

    def matrix(self, name: str, n_out: int, width: int, like: Tensor) -> Tensor:
        """The fixed projection for the signal entering at the input of layer ``name``."""
        B = self._matrices.get(name)
        if B is None:
            index = list(self.layers).index(name)
            gen = layer_generator(self.drtp.seed, index, salt="drtp")
            bound = math.sqrt(6.0 / width)
            B = (torch.rand(n_out, width, generator=gen) * 2 - 1) * (bound * self.drtp.scale)
            B = B.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)
            self._matrices[name] = B
        if tuple(B.shape) != (n_out, width):
            raise ConfigError(
                f"DRTP's projection for the input of layer '{name}' has shape {tuple(B.shape)} but "
                f"{n_out}×{width} is needed now; outputs and layer inputs must keep their sizes between steps"
            )
        if B.device != like.device:
            B = B.to(like.device)
            self._matrices[name] = B
        return B

    # -- the protocol --------------------------------------------------------------------------
    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        self._check_live()
        x, y = check_batch(batch)
        self.check_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        loss = self._rule_backward(x, y)
        optimizer.step()
        self.after_step()
        return {"loss": float(loss.detach())}

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        return self._gradients(batch, use_rule=True, backward=self._rule_backward)

    def trained_layers(self) -> dict[str, nn.Module]:
        return dict(self.layers)

    def rule_state(self) -> dict[str, Tensor]:
        return {f"matrix.{name}": B for name, B in self._matrices.items()}

    def load_rule_state(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            name = key[len("matrix."):] if key.startswith("matrix.") else None
            if name not in self.layers:
                raise ConfigError(f"unknown DRTP state entry {key!r}; entries are 'matrix.<layer name>'")
            self._matrices[name] = value.clone()

    def _restore(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._points = []


class DRTP(Rule):
    name = "drtp"
    family: ClassVar[str] = "direct"
    summary = "direct random target projection: each hidden layer learns from a fixed random projection B·y* of the one-hot target"
    paper = ("Learning without feedback: Fixed random learning signals allow for feedforward training of deep neural "
             "networks (Frenkel, Lefebvre, Bol 2021)")
    plain_backward = False  # owns its step (it needs the targets); a plain backward while attached is refused
    handles_time_steps: ClassVar[bool] = False  # one projected error / target per row, one row per sample
    trains_recurrent: ClassVar[bool] = False  # no path through time (refused at attach)

    class Options(Options):
        seed: int = opt(0, SEED_HELP, ge=0, lt=2**32)
        scale: float = opt(1.0, "factor on every projection matrix B_k (entries U(±sqrt(6/n_k)) before it)", gt=0)
        reduction: Literal["mean", "sum"] = opt(
            "mean", "hidden signal summed over the batch and divided by its size (mean), or only summed (the authors' code)"
        )

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        """Refuse, besides unsupported layers, non-saturating activations: the hidden signal is a
        projection of the target, which never shrinks, so a layer stops changing only where its
        units saturate (the authors' networks use tanh); ReLU-like units grow without bound."""
        super().check_model(model, passthrough)
        for path, module in model.named_modules():
            if isinstance(module, NON_SATURATING):
                raise UnsupportedModuleError(
                    f"rule 'drtp' cannot train through module '{path}' of type {type(module).__name__}: "
                    f"its target-projection signal never shrinks, so hidden units must saturate; {_saturating_hint(model)}"
                )

    @staticmethod
    def example_model(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """A model DRTP trains (for the contract suite, whose MLP and LeNet use ReLU): a tanh MLP
        with hidden widths (128, 128), weights from the global RNG."""
        width = math.prod(input_shape)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(width, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, num_classes)
        )

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return DRTPLearner(self, model, loss_fn)
