"""``elm-online``: online training of the ELM neuron through eligibility traces of its leaky
memory, memory constant in the number of steps ``T``.

Model paper: "The Expressive Leaky Memory Neuron: an Efficient and Expressive Phenomenological
Neuron Model Can Solve Long-Horizon Tasks" (Spieler, Rahaman, Martius, Schölkopf, Levina; ICLR 2024).

Models: ``elm`` and ``branch-elm`` only (:mod:`beyondbp.models.elm`); any other model is refused
in one sentence. The idea is OTTT's for LIF neurons ("Online Training Through Time for Spiking
Neural Networks", Xiao et al., NeurIPS 2022): a leaky state ``m_t = κ ⊙ m_{t−1} + (input)_t``
makes ``∂m_t/∂θ`` a leaky sum of the per-step derivatives, which a trace carries forward, so no
step needs to be kept for a backward pass at the end.

The model (per sample; ``κ = κ_m``, ``c = λ(1−κ_m)`` or ``1−κ_λ``, ``f(a) = 1.7159·tanh(2a/3)``)::

    ŝ_t = κ_s ⊙ ŝ_{t−1} + x_t ,  b_t = Σ_branch w_s ⊙ ŝ_t          (synapses; exact: b is linear in w_s)
    u_t = κ ⊙ m_{t−1} ,  z_t = W_in b_t + W_mem u_t + b_in ,  h_t = ReLU(z_t)
    a_t = W_out h_t + b_out ,  m_t = u_t + c ⊙ f(a_t) ,  y_t = W_y m_t + b_y

What it computes. Let ``g_t = ∂ℓ_t/∂m_t`` be the error of the loss at step ``t`` on that step's
memory (through the readout only). The traces, per sample, updated at every step::

    E_t   = κ ⊙ E_{t−1}   + (c ⊙ f'(a_t)) h_tᵀ        (d_m × hidden)   for W_out
    e_t   = κ ⊙ e_{t−1}   + c ⊙ f'(a_t)               (d_m)            for b_out
    Ŝ_t   = κ ⊙ Ŝ_{t−1}   + 1 ŝ_tᵀ                     (d_m × synapses) for W_in and w_s
    Û_t   = κ ⊙ Û_{t−1}   + 1 u_tᵀ                     (d_m × d_m)      for W_mem
    ĉ_t   = κ ⊙ ĉ_{t−1}   + 1                          (d_m)            for b_in

(``κ ⊙`` scales row ``i`` by ``κ_i``), and at a step with a loss, with ``q_t = g_t ⊙ c ⊙ f'(a_t)``::

    ∇W_out[i, j] += g_{t,i} E_t[i, j]           ∇b_out[i] += g_{t,i} e_t[i]
    ∇θ           += Σ_{i,j} q_{t,i} W_out[i, j] ReLU'(z_{t,j}) · ∂Z_t[i, j]/∂θ ,
                    Z_t[i, :] = W_in (Σ_branch w_s ⊙ Ŝ_t[i, :]) + W_mem Û_t[i, :] + ĉ_{t,i} b_in
                    for θ ∈ {W_in, W_mem, b_in, w_s}
    ∇W_y, ∇b_y   += the readout's exact gradient of ℓ_t

summed over the batch. Memory: the traces, ``B·d_m·(hidden + synapses + d_m)`` numbers, and one
step's values: constant in ``T`` (``tests/test_elm.py`` counts the bytes saved for backward).

What it drops relative to BPTT (whose gradient it approximates):

1. The memory's recurrence through the MLP: BPTT's ``∂m_t/∂m_{t−1} = diag(κ) + diag(c f'(a_t))
   W_out diag(ReLU'(z_t)) W_mem diag(κ)`` is replaced by its leak ``diag(κ)``. With this alone
   the gradients of ``W_out``, ``b_out``, ``W_y``, ``b_y`` above are exact (``E``, ``e`` are
   ``∂m_t/∂W_out``, ``∂m_t/∂b_out`` of the leak-only system).
2. For the layers below (``W_in``, ``W_mem``, ``b_in``, ``w_s``), the exact trace would need
   ``d_m × hidden × inputs`` numbers per sample; instead the derivatives of past steps
   (``f'(a_τ)``, ``ReLU'(z_τ)``, ``τ < t``) are replaced by those of the current step, so that the
   trace is over their *inputs* only, with the decay ``κ_i`` of the memory unit they feed (what
   OTTT does with its presynaptic traces). Exact for ``T = 1`` and wherever the MLP is linear
   over the steps that matter.
3. With ``loss="every"``: a loss at every step, ``ℓ_t = loss(y_t, y)/T`` (OTTT's instantaneous
   loss), instead of the model's objective on the last step.

The loss. ``loss="model"`` (default): the model's own objective — the last step's output
against the target for ``outputs="last"`` (one loss step, at ``t = T``), every step's output
against its target, averaged, for ``outputs="all"`` (the copy task). ``loss="every"`` (models
with ``outputs="last"``): ``ℓ_t`` at every step as in 3. The cost per loss step is
``B·d_m·hidden·(synapses + d_m)`` multiply-adds (forming ``Z_t``), once per sequence with the
default on a last-step task; with a loss at every step that dominates.

:func:`gradient_cosines` measures the cosine of its update to BPTT's gradient, per parameter and
overall (``bench/README.md`` has the table against ``T``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, UnsupportedModuleError
from .base import Batch, Learner, LossFn, Options, Rule, check_batch, cosine, opt

__all__ = ["ELMOnline", "gradient_cosines", "saved_bytes"]

SCALE, SLOPE = 1.7159, 2.0 / 3.0  # f(a) = SCALE·tanh(SLOPE·a), as beyondbp.models.elm


def _is_elm(model: nn.Module) -> bool:
    return getattr(type(model), "variant", None) in ("elm", "branch-elm") and hasattr(model, "synapses")


class ELMOnlineLearner(Learner):
    def __init__(self, rule: "ELMOnline", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.online = rule

    def _run(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One pass over the sequence; the update accumulates into ``.grad``."""
        model, every = self.model, self.online.loss == "every"
        if every and model.outputs == "all":
            raise ConfigError("rule 'elm-online' with loss='every' needs a model with outputs='last'; use loss='model'")
        X = model.sequence(x).transpose(0, 1)
        T, B = X.shape[0], X.shape[1]
        syn = model.synapses
        per_step = model.outputs == "all"
        with torch.no_grad():
            kappa, c = (v.detach() for v in model.decays())
            k_s = torch.exp(-model.dt / syn.tau)
            if syn.index is not None:
                k_s = k_s.repeat_interleave(syn.per_branch)
            W_in, b_in = model.w_in.weight.detach(), model.w_in.bias.detach()
            W_mem, W_out, b_out = model.w_mem.weight.detach(), model.w_out.weight.detach(), model.w_out.bias.detach()
            d, n_syn = kappa.shape[0], k_s.shape[0]
            z = X.new_zeros
            s_hat, m = z(B, n_syn), z(B, d)
            S_hat, U_hat, E, e = z(B, d, n_syn), z(B, d, d), z(B, d, W_out.shape[1]), z(B, d)
            c_hat = z(d)
            k2 = kappa.unsqueeze(1)
        objective = 0.0
        last_loss = 0.0
        for t in range(T):
            with torch.no_grad():
                x_t = X[t] if syn.index is None else X[t][:, syn.index]
                s_hat = torch.addcmul(x_t, s_hat, k_s)
                b = self._branch(syn, s_hat * self._weights(syn))
                u = m * kappa
                h = torch.relu(F.linear(b, W_in, b_in) + F.linear(u, W_mem))
                tn = torch.tanh(SLOPE * F.linear(h, W_out, b_out))
                fprime = SCALE * SLOPE * (1 - tn * tn)
                m = u + c * SCALE * tn
                cf = c * fprime
                E.mul_(k2).add_(cf.unsqueeze(2) * h.unsqueeze(1))
                e.mul_(kappa).add_(cf)
                S_hat.mul_(k2).add_(s_hat.unsqueeze(1))
                U_hat.mul_(k2).add_(u.unsqueeze(1))
                c_hat.mul_(kappa).add_(1.0)
            if not (every or per_step or t == T - 1):
                continue
            target = y[:, t] if per_step else y
            mt = m.detach().requires_grad_()
            loss = self.loss_fn(model.readout(mt), target)
            scaled = loss / T if (every or per_step) else loss
            scaled.backward()
            objective += float(scaled.detach())
            if t == T - 1:
                last_loss = float(loss.detach())
            g = mt.grad
            q = g * cf
            r = (q.unsqueeze(2) * W_out.unsqueeze(0)) * (h > 0).unsqueeze(1)
            x_trace = self._branch(syn, S_hat * self._weights(syn, grad=True))
            Z = F.linear(x_trace, model.w_in.weight) + F.linear(U_hat, model.w_mem.weight) + c_hat.unsqueeze(1) * model.w_in.bias
            surrogate = (r * Z).sum() + (g.unsqueeze(2) * E * model.w_out.weight).sum() + (g * e * model.w_out.bias).sum()
            surrogate.backward()
            del mt, loss, scaled, g, q, r, x_trace, Z, surrogate
        reported = objective if per_step else last_loss
        return {"loss": reported, "online_objective": objective}

    @staticmethod
    def _weights(syn: nn.Module, grad: bool = False) -> Tensor:
        w = syn.w_s() if grad else syn.w_s().detach()
        return w if syn.index is None else w * syn.valid

    @staticmethod
    def _branch(syn: nn.Module, v: Tensor) -> Tensor:
        return v if syn.index is None else v.unflatten(-1, (syn.branches, syn.per_branch)).sum(-1)

    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        self._check_live()
        x, y = check_batch(batch)
        self.check_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            metrics = self._run(x, y)
        optimizer.step()
        self.after_step()
        return metrics

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        return self._gradients(batch, use_rule=True, backward=self._run)

    def trained_layers(self) -> dict[str, nn.Module]:
        return {n: getattr(self.model, n) for n in ("w_in", "w_mem", "w_out", "readout")}


class ELMOnline(Rule):
    name = "elm-online"
    family: ClassVar[str] = "online"
    summary = "online ELM training: eligibility traces through the leaky memory (κ_m), memory constant in T (elm, branch-elm)"
    paper = ("The Expressive Leaky Memory Neuron: an Efficient and Expressive Phenomenological Neuron Model Can Solve "
             "Long-Horizon Tasks (Spieler et al. 2024); traced as in Online Training Through Time (Xiao et al. 2022)")
    plain_backward = False  # owns its step (one time step at a time)

    class Options(Options):
        loss: Literal["model", "every"] = opt(
            "model", "the model's own objective (last step, or every step with outputs='all'), or a loss at every step / T"
        )

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        if not _is_elm(model):
            raise UnsupportedModuleError(
                f"rule 'elm-online' trains only the ELM models (elm, branch-elm), whose leaky memory it traces, "
                f"not a {type(model).__name__}; train it with backprop or another rule"
            )
        super().check_model(model, passthrough)

    @staticmethod
    def example_model(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """A small ELM reading a one-channel image row by row (for the contract suite)."""
        from ..models import build

        return build("elm", tuple(input_shape), num_classes, memory=32, tau_m_max=50.0)

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return ELMOnlineLearner(self, model, loss_fn)


def saved_bytes(fn: Any) -> int:
    """Peak bytes of the tensors held for a backward pass while ``fn()`` runs (counted through
    ``torch.autograd.graph.saved_tensors_hooks``; a tensor counts from when it is saved until its
    graph is freed). What a rule keeps through time shows here; the traces are not counted."""
    live = {"now": 0, "peak": 0}

    class _Held:
        __slots__ = ("n", "t", "__weakref__")

        def __init__(self, t: Tensor) -> None:
            self.t, self.n = t, t.numel() * t.element_size()
            live["now"] += self.n
            live["peak"] = max(live["peak"], live["now"])

        def __del__(self) -> None:
            live["now"] -= self.n

    with torch.autograd.graph.saved_tensors_hooks(_Held, lambda held: held.t):
        fn()
    return live["peak"]


def gradient_cosines(model: nn.Module, batch: Batch, loss: str = "model") -> dict[str, float]:
    """Cosine between ``elm-online``'s update and BPTT's gradient of the model's objective, per
    parameter (``cos/<name>``) and over all parameters (``cos/all``), on ``batch``; the model is
    left as it was (attached and detached inside)."""
    learner = ELMOnline(loss=loss).attach(model)
    try:
        est, bp = learner.estimate(batch), learner.backprop_gradients(batch)
    finally:
        learner.detach()
    out = {f"cos/{n}": cosine(est[n], bp[n]) for n in bp if n in est}
    names = [n for n in bp if n in est]
    out["cos/all"] = cosine(torch.cat([est[n].flatten() for n in names]), torch.cat([bp[n].flatten() for n in names]))
    return out
