"""Inference learning (IL): predictive-coding-style learning with local weight updates.

Paper: "A Theoretical Framework for Inference Learning" (Nick Alonso, Beren Millidge, Jeffrey
Krichmar, Emre Neftci; NeurIPS 2022, arXiv 2206.00164). The proposed variant below follows the
authors' released code (github.com/nalonso2/ILTheory, ``proxPC.py`` — "IL-prox" in its
``train_MLP.py``); we could read the paper's abstract but not its method section.

The model. IL trains ``nn.Sequential`` chains of ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``
layers (nested Sequentials are flattened). Parameter-free modules before the first weight layer
form a fixed prefix; every weight layer together with the parameter-free modules after it
(activation, pooling, flatten) is one *block* ``φ_l``. The last block produces the output
``ŷ = φ_L(h_{L-1})``. Dropout with ``p > 0`` is refused (the inference dynamics need a
deterministic forward pass), as are normalisation layers and anything else owning parameters.
Each weight layer must appear once: a layer object used at two positions (or a weight tied
between two layers) is refused by path, since IL's per-layer local update (and the prox
variant's per-layer normalisation) is defined for a weight at one position only; a
parameter-free module may be reused and runs at every position.

Energy. With the input clamped, ``h_0 = prefix(x)``, and hidden activities ``h_1 … h_{L-1}`` as
free variables (one set per sample), the energy of a batch is

    F(h) = Σ_{l=1}^{L-1} ½ ‖h_l − φ_l(h_{l-1})‖²  +  β · N · loss(φ_L(h_{L-1}), y)

where ``loss`` is the attach ``loss_fn`` (cross-entropy by default; it must average over the
batch, hence the factor ``N``). The second term is the clamped target: its gradient at the
output is ``−β ∂loss_i/∂ŷ_i = β (onehot(y_i) − softmax(ŷ_i))`` — the output moves a fraction β
of the way to the target, as in the authors' code (``targ = (1-β)·softmax + β·y``). For a
Linear block ``φ_l(h) = f(W_l h + b_l)`` the prediction errors are ``ε_l = h_l − φ_l(h_{l-1})``.

Inference. The hidden activities start at the feedforward values (so ``ε_l = 0`` except at the
output) and take ``iterations`` (T, default 20) steps of gradient descent on F with step size
``step_size`` (γ, default 0.1): ``h_l ← h_l − γ ∂F/∂h_l`` where, for Linear blocks,
``∂F/∂h_l = ε_l − W_{l+1}ᵀ (ε_{l+1} ⊙ f'(a_{l+1}))`` — each layer sees only its own error and
the error of the layer above. ``∂F/∂h`` is computed by autograd on F with every ``h_l`` a leaf,
so F's graph is a set of per-layer pieces and no gradient crosses more than one layer. For a
small enough γ, F falls monotonically (tested).

Weight update (standard IL, ``variant="standard"``). At the relaxed activities ``h*`` every
weight gets the local gradient of F, for a Linear block

    ∂F/∂W_l = −(ε_l ⊙ f'(a_l)) h_{l-1}ᵀ        (summed over the batch; output: β N ∂loss/∂W_L)

and the learner stores ``W.grad = ∂F/∂W_l / (β N)`` (likewise for biases and conv kernels), so
the caller's optimizer performs the step (``SGD(lr=η)``: ``ΔW_l = −η ∂F/∂W_l/(βN)``). With a
very small nudge ``β`` the equilibrium errors are ``ε_l ≈ −β ∂loss/∂h_l`` and this update equals
backprop's gradient to first order in β (tested: cosine > 0.99). Default ``nudge=1.0`` (the
target clamped fully, as in the paper's standard IL).

The proposed variant (``variant="prox"``, the authors' "IL-prox"). The paper shows IL
approximates *implicit* SGD, ``θ_{t+1} = argmin_θ loss(θ) + ‖θ − θ_t‖²/(2η)``. For a linear layer
with squared loss, implicit SGD has a closed form: the output moves to
``(ŷ + η n y)/(1 + η n)`` with ``n = ‖h‖² (+1 for a bias)``, and the weights move a full
normalised step ``ΔW = e hᵀ / n`` towards that. The variant makes IL follow that form:

1. the output nudge is not a constant but ``β = η n_L / (1 + η n_L)``, recomputed at every
   inference iteration, where ``n_L = mean_i ‖h_{L-1,i}‖² + [bias] + eps`` is the squared norm
   of the output layer's presynaptic activity (averaged over the batch) and η the learning rate;
2. every layer's local gradient is divided by its own ``n_l = mean_i ‖h_{l-1,i}‖² + [bias] +
   eps`` (for conv inputs the squared norm is taken over channels, averaged over batch and
   positions, as in the authors' conv code): ``W.grad = ∂F/∂W_l / (η N n_l)``, so that plain
   ``SGD(lr=η)`` moves ``ΔW_l = −∂F/∂W_l / (N n_l)`` — the learning rate enters only through
   the output target. For the output layer this is ``ΔW_L = −η/(1 + η n_L) · ∂loss/∂W_L``, the
   implicit-SGD shrinkage that keeps large learning rates stable.

η is the ``eta`` option, or (``eta=None``, default) the learning rate of the optimizer's
parameter group holding the first weight layer, read at every step; ``estimate`` before any
step uses ``eta`` or 1.0. ``eps`` (default 0) is the authors' extra regulariser in ``n_l``
(0 in their learning-rate stability runs, 0.25 on MNIST). What we are unsure of: the paper's
own equations (we followed its code), and that code uses pre-activation states
``h_l = W_l f(h_{l-1})`` while we keep the issue's post-activation form ``h_l = f(W_l h_{l-1})``
(the same network, different variables: our hidden errors carry the factor ``f'``). With Adam
(the authors' "IL-prox Adam") set ``eta`` explicitly — it then only sets the output target.
Because β changes between iterations, F is not one fixed function during prox inference and
its monotone fall is guaranteed only for the standard variant.

Prediction is the plain feedforward pass ``model(x)``; ``estimate(batch)`` returns exactly the
``.grad`` values ``step`` would hand the optimizer (the inference runs, no parameter changes).
``step`` reports ``loss`` (the feedforward loss before the update), ``energy_start``,
``energy_end`` and ``nudge`` (β at the last iteration).

Options: ``variant`` ("standard" | "prox"), ``iterations`` (T, 20; the authors used 25),
``step_size`` (γ, 0.1; theirs 0.015–0.02 at batch size 1), ``nudge`` (β of the standard
variant, 1.0; ignored by prox), ``eta`` and ``eps`` (prox only, see above). Cost: each step runs
T + 2 forward and T + 1 backward passes of the blocks (about 12x backprop's step at T = 20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError, UnsupportedModuleError
from .base import Batch, Learner, LossFn, Options, Rule, check_batch, opt, param_in_optimizer
from .common import Block, run_modules, split_sequential

__all__ = ["IL", "ILLearner", "Relaxation"]

WEIGHT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class Relaxation:
    """The outcome of IL's inference phase on one batch."""

    inputs: Tensor  # h_0 = prefix(x)
    states: list[Tensor]  # relaxed hidden activities h_1 … h_{L-1}
    energies: list[float]  # F before the first and after every inference iteration
    betas: list[float]  # the output nudge used at every iteration (constant for "standard")
    loss: float  # loss of the feedforward prediction before inference


def il_chain(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[Block]]:
    """The prefix and blocks IL trains; refuses dropout with ``p > 0`` by module path and type."""
    prefix, blocks = split_sequential(model, "il", WEIGHT_TYPES)
    for name, module in [*prefix, *[m for b in blocks for m in b.after]]:
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            raise UnsupportedModuleError(
                f"rule 'il' cannot train through module '{name}' of type {type(module).__name__} "
                f"with p={module.p}: its inference dynamics need a deterministic forward pass; use p=0"
            )
    return prefix, blocks


class ILLearner(Learner):
    def __init__(self, rule: "IL", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.il: IL = rule
        self.prefix, self.blocks = il_chain(model)
        self._last_lr: float | None = None

    # -- inference -----------------------------------------------------------------------------
    def _norm_sq(self, h: Tensor, block: Block) -> Tensor:
        """Mean squared norm of a block's presynaptic activity (+1 with a bias, + eps)."""
        sq = h.detach().pow(2)
        per = sq.sum(dim=1) if sq.dim() > 1 else sq
        extra = (1.0 if getattr(block.layer, "bias", None) is not None else 0.0) + self.il.eps
        return per.mean() + extra

    def _beta(self, top_input: Tensor, eta: float) -> float:
        if self.il.variant == "standard":
            return self.il.nudge
        n = float(self._norm_sq(top_input, self.blocks[-1]))
        return eta * n / (1.0 + eta * n)

    def _energy(
        self, h0: Tensor, states: list[Tensor], y: Tensor, beta: float, first: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """F and the loss term; ``first`` is the first block's prediction if already computed
        (the input is clamped, so it does not change during inference)."""
        inputs = [h0, *states]
        F_ = h0.new_zeros(())
        for l, block in enumerate(self.blocks[:-1]):
            pred = first if (l == 0 and first is not None) else block(inputs[l])
            F_ = F_ + 0.5 * (states[l] - pred).pow(2).sum()
        out = self.blocks[-1](inputs[-1])
        loss = self.loss_fn(out, y)
        return F_ + beta * out.shape[0] * loss, loss

    def relax(self, batch: Batch, eta: float | None = None) -> Relaxation:
        """Clamp ``x`` and ``y``, start from the feedforward activities and run T steps of
        gradient descent on F. Parameters are untouched."""
        x, y = check_batch(batch)
        eta = self._eta(eta)
        with torch.no_grad():
            h0 = run_modules(self.prefix, x)
            states, h = [], h0
            for block in self.blocks[:-1]:
                h = block(h)
                states.append(h)
            first = states[0] if states else None
        energies: list[float] = []
        betas: list[float] = []
        first_loss = float("nan")
        gamma = self.il.step_size
        for t in range(self.il.iterations + 1):
            leaves = [s.detach().requires_grad_(True) for s in states]
            beta = self._beta(leaves[-1] if leaves else h0, eta)
            with torch.enable_grad():
                # The blocks see non-leaf views of the leaves: module hooks that register autograd
                # hooks on module inputs (torch's FlopCounterMode / ModuleTracker, used by SET's
                # FLOP count) fail under autograd.grad when an input is a leaf tensor.
                views = [s.view_as(s) for s in leaves]
                energy, loss = self._energy(h0, views, y, beta, first)
                if t == 0:
                    first_loss = float(loss.detach())
                energies.append(float(energy.detach()))
                if t == self.il.iterations or not leaves:
                    betas.append(beta)
                    break
                betas.append(beta)
                grads = torch.autograd.grad(energy, leaves)
            with torch.no_grad():
                states = [s - gamma * g for s, g in zip(leaves, grads)]
        return Relaxation(h0, [s.detach() for s in states], energies, betas, first_loss)

    def _eta(self, eta: float | None) -> float:
        if eta is not None:
            return float(eta)
        if self.il.eta is not None:
            return self.il.eta
        return self._last_lr if self._last_lr is not None else 1.0

    def local_gradients(self, batch: Batch, eta: float | None = None) -> tuple[dict[str, Tensor], Relaxation]:
        """The ``.grad`` values IL hands the optimizer for ``batch`` (see the module docstring)."""
        _, y = check_batch(batch)
        eta = self._eta(eta)
        relax = self.relax(batch, eta)
        inputs = [relax.inputs, *relax.states]
        beta = relax.betas[-1]
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        names = list(params)
        with torch.enable_grad():
            energy, _ = self._energy(relax.inputs, relax.states, y, beta)
            grads = torch.autograd.grad(energy, [params[n] for n in names], allow_unused=True)
        by_id = {id(p): g for p, g in zip(params.values(), grads)}
        N = inputs[0].shape[0]
        out: dict[str, Tensor] = {}
        for l, block in enumerate(self.blocks):
            if self.il.variant == "standard":
                scale = 1.0 / (beta * N)
            else:
                scale = 1.0 / (eta * N * float(self._norm_sq(inputs[l], block)))
            for pname, p in block.layer.named_parameters():
                g = by_id.get(id(p))
                if g is not None:
                    out[f"{block.name}.{pname}"] = (g * scale).detach()
        return out, relax

    # -- the protocol --------------------------------------------------------------------------
    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        self._check_live()
        if not self._active:
            return super().step(batch, optimizer)
        self.check_optimizer(optimizer)
        if self.il.eta is None:
            self._last_lr = self._optimizer_lr(optimizer)
        grads, relax = self.local_gradients(batch)
        optimizer.zero_grad(set_to_none=True)
        params = dict(self.model.named_parameters())
        for name, g in grads.items():
            params[name].grad = g
        optimizer.step()
        self.after_step()
        return {
            "loss": relax.loss,
            "energy_start": relax.energies[0],
            "energy_end": relax.energies[-1],
            "nudge": relax.betas[-1],
        }

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        if not self._active:
            return super()._estimate(batch)
        return self.local_gradients(batch)[0]

    def _optimizer_lr(self, optimizer: torch.optim.Optimizer) -> float:
        first = self.blocks[0].layer.weight
        for group in optimizer.param_groups:
            if any(first is q for q in group["params"]):
                return float(group["lr"])
        return float(optimizer.param_groups[0]["lr"])

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        for block in self.blocks:
            for pname, p in block.layer.named_parameters():
                if p.requires_grad and not param_in_optimizer(p, optimizer):
                    raise ConfigError(
                        f"the optimizer does not hold parameter '{block.name}.{pname}' that IL trains; "
                        "build it from learner.optimizer_parameters()"
                    )

    def trained_layers(self) -> dict[str, nn.Module]:
        return {b.name: b.layer for b in self.blocks}

    def rule_state(self) -> dict[str, Tensor]:
        return {} if self._last_lr is None else {"last_lr": torch.tensor(self._last_lr, dtype=torch.float64)}

    def load_rule_state(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            if key != "last_lr":
                raise ConfigError(f"unknown IL state entry {key!r}; expected 'last_lr'")
            self._last_lr = float(value)


class IL(Rule):
    name = "il"
    family: ClassVar[str] = "local"
    summary = "inference learning: relax hidden activities on a predictive-coding energy, then local updates"
    paper = "A Theoretical Framework for Inference Learning (Alonso, Millidge, Krichmar, Neftci 2022)"
    plain_backward = False  # owns its step (relaxation of the hidden activities, then local updates)
    supported: ClassVar[tuple[type[nn.Module], ...]] = WEIGHT_TYPES

    class Options(Options):
        variant: Literal["standard", "prox"] = opt("standard", "standard IL, or the authors' IL-prox (normalised, implicit-SGD-like steps)")
        iterations: int = opt(20, "inference iterations T on the energy before the weight update", ge=0)
        step_size: float = opt(0.1, "step size γ of the inference iterations", gt=0)
        nudge: float = opt(1.0, "output nudge β of the standard variant (ignored by prox)", gt=0)
        eta: float | None = opt(None, "prox: η of the output target and normalised step; None: the optimizer's learning rate", gt=0)
        eps: float = opt(0.0, "prox: extra regulariser added to the squared input norms", ge=0)

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        il_chain(model)

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return ILLearner(self, model, loss_fn)
