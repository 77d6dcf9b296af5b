"""Online training through time (OTTT) for spiking networks: memory constant in the number of steps.

Paper: "Online Training Through Time for Spiking Neural Networks" (Mingqing Xiao, Qingyan Meng,
Zongpeng Zhang, Di He, Zhouchen Lin; NeurIPS 2022; arXiv:2210.04195). Reference code:
github.com/pkuxmq/OTTT-SNN.

Idea. Backprop through time (BPTT) keeps every step's activations until the backward pass at the
end of the sequence, so its memory grows linearly with the number of steps ``T``. OTTT computes a
learning signal at every step from that step alone and carries the past forward in one
*presynaptic trace* per layer, so nothing of earlier steps is kept: memory is constant in ``T``.

What is computed, per sample and layer. A layer ``l`` with weights ``W_l`` receives at step ``t``
the input ``s_t^{l−1}`` (the previous layer's spikes; for the first layer, the encoded input) and
its neurons integrate the current ``I_t^l = W_l s_t^{l−1} + b_l`` with decay ``β_l``:
``U_t^l = β_l U_{t−1}^l + I_t^l − θ S_{t−1}^l``, ``S_t^l = H(U_t^l − θ)``.

* Presynaptic trace:  ``â_t^{l−1} = λ_l â_{t−1}^{l−1} + s_t^{l−1}``  (``â_{−1} = 0``), with
  ``λ_l = β_l``, the decay of the neurons the layer feeds. Ignoring the reset,
  ``U_t^l = Σ_{τ≤t} β_l^{t−τ} (W_l s_τ^{l−1} + b_l)``, so ``∂U_t^l / ∂W_l = â_t^{l−1}``: the trace
  carries the dependence of the membrane on all earlier inputs.
* Instantaneous loss at every step, on the output layer's output ``o_t`` at that step (the per-step
  logits the readout reduces: the output spikes ``S_t^out`` for ``readout="count"``, the output
  membrane ``U_t^out`` for ``readout="membrane"``), with the paper's combination of cross-entropy
  and mean squared error to the one-hot target:

      L_t = ((1 − λ_loss) · ℓ(o_t, y) + λ_loss · MSE(o_t, onehot(y))) / T,    λ_loss = 0.05

  where ``ℓ`` is the learner's loss function (default cross-entropy, as the paper) and MSE is the
  mean over samples and classes (``nn.MSELoss``). The total objective is ``Σ_t L_t``.
* The error at step ``t`` is backpropagated through the layers *at step t only*: the neuron
  state (membrane, last spikes, ALIF adaptation) is detached between steps, so with
  ``σ'`` the surrogate derivative,
  ``δ_t^L = ∂L_t/∂I_t^L`` and ``δ_t^l = σ'(U_t^l − θ) ⊙ (W_{l+1}ᵀ δ_t^{l+1})`` (through the pooling
  between a conv and its neurons, at step ``t``'s values). No graph is unrolled over time and the
  reset is a constant in the backward pass (the official code's ``detach_reset=True``).
* Weight gradient: ``∇W_l = Σ_t δ_t^l (â_t^{l−1})ᵀ``, the trace in place of the input of the
  step (for a conv, the weight gradient of the convolution with the trace as input); the bias
  gets ``Σ_t δ_t^l`` (the official code's choice: its bias is not traced).

This is the paper's OTTT_A (``update="accumulate"``, the default and the setting of the paper's
experiments): the per-step gradients are accumulated in ``.grad`` and the optimizer steps once per
batch. ``update="online"`` is OTTT_O: one optimizer step after every time step (``T`` optimizer
steps per batch; ``estimate`` then still returns the gradients summed at fixed weights).

The first layer. With ``input_trace=True`` (default) the first layer's input is traced like any
other (the paper's equations, ``s^0`` the encoded input); the official code leaves its first
conv unwrapped, i.e. uses the raw input of the step instead: ``input_trace=False``. For a direct
(constant) input ``x`` the two differ by the factor ``Σ_{τ≤t} λ^τ`` at step ``t``.

Defaults of the official code (``train_cifar.py``): ``loss_lambda = 0.05``, accumulate over the
``T`` steps (``-online_update`` off), the trace decay equal to the membrane decay (their LIF,
``τ = 2``, ``decay_input=False``: ``β = 1 − 1/τ = 0.5``), a detached reset, the sigmoid
surrogate (α = 4), SGD with momentum 0.9, lr 0.1, cosine schedule; the model settings (``τ``,
surrogate) and the optimizer belong to the model's options and the user's optimizer here
(``--model-opt beta=0.5 --model-opt surrogate=sigmoid``).

How it is computed. The rule owns its step: it runs the model's modules one step at a time —
encoder (once; a sequence output ``[T·B, ...]`` is sliced per step, a ``(B, ...)`` output is
the input of every step), then per step the Linear / ConvNd layers through a small autograd
function whose forward is the layer's and whose backward gives the input gradient ``Wᵀδ`` and the
weight gradient from the trace, the neuron layers through their ``step(current, state)``
method, flatten and pooling as they are — computes ``L_t``, calls backward on it, and drops the
step's graph before the next step. What survives a step: the neuron states and the traces
(one step's size each) and the detached output ``o_t`` (``B × C``, for the readout's logits), so
the saved activations do not grow with ``T`` (tests/test_ottt.py counts them; the table
against BPTT is in ``bench/README.md``). A Linear / ConvNd whose input is the same at every step
(direct encoding) computes its forward once per batch, and its weight gradient once too: its
trace at step ``t`` is ``c_t x`` (``c_t = λ c_{t−1} + 1``), so the steps' errors, scaled by
``c_t``, are summed and multiplied by ``x`` at the end of the batch (the same sum, one matmul
instead of ``T``); not with ``update="online"``, where the weights change between steps. ``predict`` runs the model's own forward: the forward values
are the model's; only the gradients differ from BPTT. The reported ``loss`` is the learner's
loss function on the readout's logits (comparable with the other rules); ``ottt_loss`` is
``Σ_t L_t``.

Models. Models that declare their time-step layout through ``structure()`` (``encoder``,
``neurons``, ``readout``; see :func:`beyondbp.rules.common.model_structure`): beyondbp's
``snn-mlp`` and ``snn-cnn``. The model must be an ``nn.Sequential`` of the encoder, Linear /
ConvNd layers, neuron layers, ``nn.Flatten`` / ``nn.Identity`` / pooling and the readout, in
that order with the readout last, every Linear / ConvNd followed by neurons before the next
one. Other models (non-spiking ones, unknown layers) are refused with one sentence.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function

from ..errors import ConfigError, UnsupportedModuleError
from .base import WEIGHT_LAYERS, Batch, Learner, LossFn, Options, Rule, check_batch, opt
from .common import conv_padding, model_structure

#: Parameter-free modules OTTT runs per step as they are.
STATELESS: tuple[type[nn.Module], ...] = (
    nn.Flatten,
    nn.Identity,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)


class _TraceLayer(Function):
    """Forward: the layer on the step's input (or its cached output). Backward: the input gradient
    of the layer, and the weight gradient with the presynaptic trace in place of the input."""

    @staticmethod
    def forward(
        ctx, x: Tensor, trace: Tensor, weight: Tensor, bias: Tensor | None, conv: Any, cached: Tensor | None,
        sink: "_Sink | None" = None, scale: float = 1.0,
    ):
        ctx.save_for_backward(trace, weight)
        ctx.conv = conv
        ctx.sink, ctx.scale = sink, scale
        ctx.bias_sizes = [bias.shape[0]] if bias is not None else None
        if cached is not None:
            return cached.clone()
        if conv is None:
            return F.linear(x, weight, bias)
        stride, padding, dilation, groups = conv
        return torch.convolution(x, weight, bias, stride, padding, dilation, False, [0] * (weight.dim() - 2), groups)

    @staticmethod
    def backward(ctx, grad: Tensor):
        trace, weight = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_b = None
        if ctx.sink is not None:  # steady input: the weight gradient is formed once, at the end
            ctx.sink.add(grad, ctx.scale)
        if ctx.conv is None:
            if need_x:
                grad_x = grad.matmul(weight)
            if need_w:
                grad_w = grad.t().matmul(trace)
            if need_b and ctx.bias_sizes is not None:
                grad_b = grad.sum(0)
        else:
            stride, padding, dilation, groups = ctx.conv
            mask = [need_x, need_w, need_b and ctx.bias_sizes is not None]
            # the input gradient of a convolution does not depend on the input's values: the trace
            # stands in for the input, which gives the trace-based weight gradient in the same call
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, trace, weight, ctx.bias_sizes, stride, padding, dilation, False, [0] * (weight.dim() - 2), groups, mask,
            )
        return grad_x, None, grad_w, grad_b, None, None, None, None


class _Sink:
    """For a layer whose input ``x`` is the same at every step (direct encoding): its trace at step
    ``t`` is ``c_t x`` (``c_t = λ c_{t−1} + 1``, or 1 without ``input_trace``), so
    ``Σ_t δ_tᵀ (c_t x) = (Σ_t c_t δ_t)ᵀ x``: the scaled errors are summed over the steps (one
    output-sized tensor) and the weight gradient is one matmul / conv-weight-gradient per batch,
    as in BPTT, instead of one per step."""

    def __init__(self, x: Tensor, module: nn.Module, conv: Any) -> None:
        self.x, self.module, self.conv = x, module, conv
        self.total: Tensor | None = None
        self.scale = 1.0  # c_t of the current step

    def add(self, grad: Tensor, scale: float) -> None:
        g = grad * scale
        self.total = g if self.total is None else self.total + g

    def flush(self) -> None:
        """Add the weight gradient to ``weight.grad`` (as autograd would have)."""
        if self.total is None:
            return
        weight = self.module.weight
        if self.conv is None:
            g = self.total.reshape(-1, self.total.shape[-1]).t().matmul(self.x.reshape(-1, self.x.shape[-1]))
        else:
            stride, padding, dilation, groups = self.conv
            _, g, _ = torch.ops.aten.convolution_backward(
                self.total, self.x, weight, None, stride, padding, dilation, False, [0] * (weight.dim() - 2), groups,
                [False, True, False],
            )
        self.total = None
        _Deliver.apply(weight, g).backward()  # through autograd, so hooks on the weight see it


class _Deliver(Function):
    """Hands a ready gradient to a parameter through autograd (``.grad`` accumulation and any
    hooks registered on the parameter, e.g. sparsity masks, as for any other gradient)."""

    @staticmethod
    def forward(ctx, weight: Tensor, grad: Tensor) -> Tensor:
        ctx.grad = grad
        return weight.new_zeros(())

    @staticmethod
    def backward(ctx, _: Tensor):
        grad, ctx.grad = ctx.grad, None
        return grad, None


def _detached(state: Any) -> Any:
    """A neuron state (a tuple or named tuple of tensors / ``None``) cut from the graph."""
    values = [v.detach() if isinstance(v, Tensor) else v for v in state]
    return type(state)(*values) if hasattr(state, "_fields") else tuple(values)


def _no_neurons(rule_name: str, layer: str) -> None:
    raise UnsupportedModuleError(
        f"rule '{rule_name}' needs every Linear / ConvNd layer to feed a neuron layer before the next one, "
        f"but layer '{layer}' does not (its trace decays as the membrane of the neurons it feeds)"
    )


class _Plan:
    """The model's modules in execution order, each with its role, checked once at attach."""

    def __init__(self, rule_name: str, model: nn.Module) -> None:
        layout = model_structure(model)
        neurons, encoder, readout = layout.get("neurons"), layout.get("encoder"), layout.get("readout")
        if not (neurons and encoder and readout):
            raise UnsupportedModuleError(
                f"rule '{rule_name}' trains spiking models that declare their time-step layout (a structure() "
                f"naming 'encoder', 'neurons' and 'readout', as snn-mlp and snn-cnn do), and this "
                f"{type(model).__name__} declares none; train it with backprop or another rule"
            )
        if not isinstance(model, nn.Sequential):
            raise UnsupportedModuleError(
                f"rule '{rule_name}' runs a spiking model step by step as an nn.Sequential chain, got a "
                f"{type(model).__name__}; build the model as an nn.Sequential or train it with backprop (BPTT)"
            )
        children = list(model.named_children())
        names = [n for n, _ in children]
        if names[0] != encoder or names[-1] != readout:
            raise UnsupportedModuleError(
                f"rule '{rule_name}' needs the encoder first and the readout last in the chain, got "
                f"'{names[0]}' first and '{names[-1]}' last; train this model with backprop (BPTT)"
            )
        self.encoder: nn.Module = children[0][1]
        self.readout: nn.Module = children[-1][1]
        self.steps: list[tuple[str, nn.Module, str]] = []
        pending: str | None = None  # a weight layer still waiting for the neurons it feeds
        self.decay: dict[str, float] = {}
        time_steps = set()
        for name, module in children[1:-1]:
            if name in neurons:
                step, beta, steps = getattr(module, "step", None), getattr(module, "beta", None), getattr(module, "time_steps", None)
                if not (callable(step) and isinstance(beta, float) and isinstance(steps, int)):
                    raise UnsupportedModuleError(
                        f"rule '{rule_name}' cannot run neuron layer '{name}' of type {type(module).__name__} step by "
                        "step: a neuron layer needs a step(current, state) method, a float beta and an integer time_steps"
                    )
                time_steps.add(steps)
                if pending is not None:
                    self.decay[pending] = beta
                    pending = None
                self.steps.append((name, module, "neuron"))
            elif isinstance(module, WEIGHT_LAYERS):
                if pending is not None:
                    _no_neurons(rule_name, pending)
                pending = name
                self.steps.append((name, module, "weight"))
            elif isinstance(module, STATELESS):
                self.steps.append((name, module, "stateless"))
            else:
                raise UnsupportedModuleError(
                    f"rule '{rule_name}' cannot run module '{name}' of type {type(module).__name__} step by step; "
                    "it runs Linear / ConvNd layers, the declared neuron layers, Flatten, Identity and pooling"
                )
        if pending is not None:
            _no_neurons(rule_name, pending)
        if not self.steps or self.steps[-1][2] != "neuron" or self.steps[-1][0] != neurons[-1]:
            raise UnsupportedModuleError(
                f"rule '{rule_name}' needs the output layer's neurons ('{neurons[-1]}') right before the readout"
            )
        if len(time_steps) != 1:
            raise UnsupportedModuleError(f"rule '{rule_name}' needs every neuron layer to run the same number of time steps")
        self.time_steps = time_steps.pop()
        self.layers = {name: module for name, module, kind in self.steps if kind == "weight"}


class OTTTLearner(Learner):
    def __init__(self, rule: "OTTT", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.ottt = rule
        self.plan = _Plan(rule.name, model)

    # -- the step-by-step pass ---------------------------------------------------------------------
    def _run(self, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """Run the model step by step, backpropagating each step's loss at once (gradients summed
        into ``.grad``; with ``optimizer`` and ``update="online"``, one step of it per time step)."""
        plan, T, batch = self.plan, self.plan.time_steps, x.shape[0]
        online = optimizer is not None and self.ottt.update == "online"
        with torch.no_grad():
            encoded = plan.encoder(x)
        if encoded.shape[0] == batch:
            constant = True
        elif encoded.shape[0] == T * batch:
            constant = False
        else:
            raise ConfigError(
                f"OTTT expects the encoder to return {batch} rows (one input for every step) or T*B = {T * batch} "
                f"rows, got {encoded.shape[0]}"
            )
        target: Tensor | None = None
        states: dict[str, Any] = {}
        traces: dict[str, Tensor] = {}
        cached: dict[str, Tensor] = {}
        sinks: dict[str, _Sink] = {}
        first = next(iter(plan.layers), None)
        outputs = []
        objective = 0.0
        for t in range(T):
            h = encoded if constant else encoded[t * batch : (t + 1) * batch]
            steady = constant  # h is the same at every step and carries no gradient
            for name, module, kind in plan.steps:
                if kind == "weight":
                    h, steady = self._layer(name, module, h, steady, traces, cached, sinks, online, first), False
                elif kind == "neuron":
                    h, state = module.step(h, states.get(name))
                    states[name] = _detached(state)
                    del state
                else:
                    h = module(h)
            loss = (1 - self.ottt.loss_lambda) * self.loss_fn(h, y)
            if self.ottt.loss_lambda > 0:
                if target is None:
                    target = F.one_hot(y, num_classes=h.shape[-1]).to(h.dtype)
                loss = loss + self.ottt.loss_lambda * F.mse_loss(h, target)
            loss = loss / T
            if loss.requires_grad:
                loss.backward()
            objective += float(loss.detach())
            outputs.append(h.detach())
            if online:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            del h, loss
        for sink in sinks.values():
            sink.flush()
        with torch.no_grad():
            logits = plan.readout(torch.cat(outputs))
            readout_loss = float(self.loss_fn(logits, y))
        return {"loss": readout_loss, "ottt_loss": objective}

    def _layer(
        self, name: str, module: nn.Module, h: Tensor, steady: bool, traces: dict[str, Tensor],
        cached: dict[str, Tensor], sinks: dict[str, "_Sink"], online: bool, first: str | None,
    ) -> Tensor:
        value = h.detach()
        conv = None
        if not isinstance(module, nn.Linear):  # ConvNd: non-zero padding modes are applied outside
            value, padding = conv_padding(module, value)
            h = conv_padding(module, h)[0] if h.requires_grad else value
            conv = (list(module.stride), padding, list(module.dilation), module.groups)
        raw = name == first and not self.ottt.input_trace
        if steady and not online and module.weight.requires_grad:
            # the same input at every step: cached forward, the weight gradient formed once (_Sink)
            cache = cached.get(name)
            if cache is None:
                with torch.no_grad():
                    cache = cached[name] = _TraceLayer.apply(value, value, module.weight, module.bias, conv, None)
                sinks[name] = _Sink(value, module, conv)  # its scale c_0 = 1
            elif not raw:
                sinks[name].scale = sinks[name].scale * self.plan.decay[name] + 1.0
            sink = sinks[name]
            # the weight enters detached (it gets its gradient from the sink, once)
            return _TraceLayer.apply(h, value, module.weight.detach(), module.bias, conv, cache, sink, sink.scale)
        if raw:
            trace = value
        else:
            previous = traces.get(name)
            trace = value if previous is None else previous * self.plan.decay[name] + value
            traces[name] = trace
        return _TraceLayer.apply(h, trace, module.weight, module.bias, conv, None)

    # -- the protocol ------------------------------------------------------------------------------
    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        self._check_live()
        if not self._active:
            return super().step(batch, optimizer)
        x, y = check_batch(batch)
        self.check_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            metrics = self._run(x, y, optimizer)
        if self.ottt.update == "accumulate":
            optimizer.step()
        self.after_step()
        return metrics

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        if not self._active:
            return super()._estimate(batch)
        return self._gradients(batch, use_rule=True, backward=self._run)

    def trained_layers(self) -> dict[str, nn.Module]:
        return dict(self.plan.layers)


class OTTT(Rule):
    name = "ottt"
    family: ClassVar[str] = "online"
    summary = "online training through time: per-step loss and gradient, presynaptic traces, memory constant in T (spiking models)"
    paper = "Online Training Through Time for Spiking Neural Networks (Xiao, Meng, Zhang, He, Lin 2022)"
    plain_backward = False  # owns its step (one time step at a time)
    handles_time_steps: ClassVar[bool] = True

    class Options(Options):
        loss_lambda: float = opt(0.05, "weight of the MSE term in the per-step loss ((1-λ)·loss + λ·MSE to one-hot) / T", ge=0, le=1)
        update: Literal["accumulate", "online"] = opt(
            "accumulate", "OTTT_A: sum the per-step gradients, one optimizer step per batch; OTTT_O: one per time step"
        )
        input_trace: bool = opt(True, "trace the first layer's input too (the paper); False: its raw input (the official code)")

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        super().check_model(model, passthrough)
        _Plan(self.name, model)

    @staticmethod
    def example_model(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """A model OTTT trains (for the contract suite, whose MLP and LeNet are not spiking): the
        library's ``snn-mlp`` with T = 4 and one hidden layer of 128, weights from the global RNG."""
        from ..models import build

        return build("snn-mlp", tuple(input_shape), num_classes, T=4, widths=(128,))

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return OTTTLearner(self, model, loss_fn)
