"""The Expressive Leaky Memory neuron: ``elm`` and ``branch-elm``.

Paper: "The Expressive Leaky Memory Neuron: an Efficient and Expressive Phenomenological Neuron
Model Can Solve Long-Horizon Tasks" (Spieler, Rahaman, Martius, Schölkopf, Levina; ICLR 2024).
Equations as the authors' ``expressive_leaky_memory_neuron.py`` (``elm``) and ``_v2.py``
(``branch-elm``); this is our own implementation.

Input ``(B, T, n_in)`` (batch first, as the sequence data sets), output the readout of the last
step ``(B, C)`` (``outputs="last"``, the authors' loss on the last step) or of every step
``(B, T, C)`` (``outputs="all"``). With ``κ = exp(−Δt/τ)`` and ``f(a) = 1.7159·tanh(2a/3)``:

``elm``::

    s_t  = κ_s ⊙ s_{t−1} + w_s ⊙ x_t                  synaptic traces, one per input (τ_s = 5)
    z_t  = W_in s_t + W_mem (κ_m ⊙ m_{t−1}) + b_in     MLP hidden layer (width 2·d_m, ReLU)
    Δm_t = f(W_out ReLU(z_t) + b_out)                  memory proposal
    m_t  = κ_m ⊙ m_{t−1} + λ (1 − κ_m) ⊙ Δm_t          leaky memory, d_m units (λ = 5)
    y_t  = W_y m_t + b_y                               readout

``branch-elm``: inputs are routed to ``branches`` dendritic branches of ``synapses_per_branch``
synapses each (branch k reads the neighbouring inputs ``k·stride … k·stride + spb − 1``,
``stride = ⌈n_in / branches⌉``, as the authors' overlapping windows; default ``spb = stride``:
every input on one synapse), the trace is taken after the branch sum, and the memory update uses
``κ_λ = exp(−Δt·λ/τ_m)``::

    b_t  = κ_b ⊙ b_{t−1} + Σ_{synapses of the branch} w_s ⊙ x_t      (τ_b = ``tau_s``)
    z_t  = W_in b_t + W_mem (κ_m ⊙ m_{t−1}) + b_in
    m_t  = κ_m ⊙ m_{t−1} + (1 − κ_λ) ⊙ Δm_t

``W_in`` and ``W_mem`` are the two column blocks of the authors' first MLP layer (one Linear on
``[s_t, κ_m m_{t−1}]``): the same function and the same parameters, kept as two ``nn.Linear``
so the part that does not depend on the memory runs once over all steps. Defaults as the
authors': ``memory`` d_m = 100, ``hidden`` 2·d_m, λ = 5, τ_s = 5, ``w_s`` = ReLU(0.5) per synapse
(learned), τ_m log-spaced over [``tau_m_min``, ``tau_m_max``] = [1, 1000] (not learned), Δt = 1.
τ_s and τ_m are buffers (fixed, as the authors' defaults).

Speed. The synaptic traces are a linear scan (one fused multiply-add per step, hand-written
backward), ``W_in`` runs once over all ``T·B`` rows, and the memory recurrence is one autograd
function whose forward and backward loops do only the step's arithmetic (two matmuls and a few
fused elementwise ops forward, two matmuls backward; the weight gradients are one matmul each
over all steps). When a rule has replaced the forward of ``w_mem`` or ``w_out`` (the
feedback-path rules), the recurrence runs those modules step by step instead, so the rule's
backward applies to them (same values, slower). ``bench/elm_step.py`` measures it.

Rules. ``backprop`` is BPTT. The feedback-path rules (fa, usf, brsf, frsf, kp, pfa) attach to the four
Linear layers: their feedback matrix replaces ``Wᵀ`` wherever the error crosses that layer,
which for ``w_mem`` is the path from one step's memory to the next (the error flows back
through time through ``B_mem`` instead of ``W_memᵀ``; the leak ``κ_m`` path is exact), and the
synaptic weights learn by autograd from the error that reaches them. ``elm-online``
(:mod:`beyondbp.rules.elm_online`) trains it with memory constant in ``T``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Sequence

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.autograd import Function

from beyondbp.errors import ConfigError
from beyondbp.models.mlp import check_classes, check_shape
from beyondbp.options import Options, opt, parse

__all__ = ["ELM", "BranchELM", "Synapses", "leaky_scan", "memory_scan", "memory_time_constants", "scaled_tanh"]

#: ``f(a) = SCALE·tanh(SLOPE·a)`` (LeCun's scaled tanh, the authors' ``custom_tanh``).
SCALE, SLOPE = 1.7159, 2.0 / 3.0


#: Backward errors carried through time smaller than this are set to 0. An error decays by κ at
#: every step (κ_m = e^{-1} for τ_m = 1), and after ~90 steps reaches the subnormal floats
#: (< 1.2e-38), on which CPU arithmetic is tens of times slower: the backward of T = 100 took 10×
#: its forward. The change to any gradient is below 1e-30 per step carried.
TINY = 1e-30


def scaled_tanh(a: Tensor) -> Tensor:
    return SCALE * torch.tanh(SLOPE * a)


def memory_time_constants(n: int, low: float, high: float) -> Tensor:
    """``n`` memory time constants log-spaced from ``low`` to ``high`` (both included)."""
    return torch.logspace(math.log10(low), math.log10(high), n, dtype=torch.float64).float()


class _LeakyScan(Function):
    """``y_t = k ⊙ y_{t−1} + u_t`` along dim 0 (time-major, ``y_{−1} = 0``), ``k`` constant."""

    @staticmethod
    def forward(ctx, u: Tensor, k: Tensor) -> Tensor:
        ys, y = [], None
        for u_t in u.unbind(0):
            y = u_t.clone() if y is None else torch.addcmul(u_t, y, k)
            ys.append(y)
        ctx.save_for_backward(k)
        return torch.stack(ys)

    @staticmethod
    def backward(ctx, g: Tensor):
        (k,) = ctx.saved_tensors
        gs, gu = [], None
        for g_t in g.unbind(0)[::-1]:
            gu = g_t.clone() if gu is None else torch.addcmul(g_t, gu, k)
            gu.masked_fill_(gu.abs() < TINY, 0.0)
            gs.append(gu)
        return torch.stack(gs[::-1]), None


def leaky_scan(u: Tensor, k: Tensor) -> Tensor:
    """The leaky integral of ``u`` (time-major ``(T, ...)``) with constant per-channel decay ``k``."""
    return _LeakyScan.apply(u.contiguous(), k)


class _MemoryScan(Function):
    """The memory recurrence over all steps, given ``A_t = W_in s_t + b_in`` (time-major):
    ``u_t = κ ⊙ m_{t−1}``, ``h_t = ReLU(A_t + u_t W_memᵀ)``, ``m_t = u_t + c ⊙ f(h_t W_outᵀ + b_out)``.
    Saves ``u``, ``h`` and ``tanh`` per step (what BPTT needs); the backward loop runs two
    matmuls per step and forms the weight gradients once over all steps."""

    @staticmethod
    def forward(ctx, A: Tensor, w_mem: Tensor, w_out: Tensor, b_out: Tensor, kappa: Tensor, c: Tensor) -> Tensor:
        wmT, woT, cs = w_mem.t(), w_out.t(), c * SCALE
        m = A.new_zeros(A.shape[1], kappa.shape[0])
        us, hs, ds, ms = [], [], [], []
        for a_t in A.unbind(0):
            u = m * kappa
            h = torch.addmm(a_t, u, wmT).relu_()
            d = torch.addmm(b_out, h, woT).mul_(SLOPE).tanh_()
            m = torch.addcmul(u, d, cs)
            us.append(u), hs.append(h), ds.append(d), ms.append(m)
        U, Hs, D = torch.stack(us), torch.stack(hs), torch.stack(ds)
        ctx.save_for_backward(w_mem, w_out, kappa, c, U, Hs, D)
        return torch.stack(ms)

    @staticmethod
    def backward(ctx, gM: Tensor):
        w_mem, w_out, kappa, c, U, Hs, D = ctx.saved_tensors
        d, H = U.shape[2], Hs.shape[2]
        k = c * (SCALE * SLOPE)
        gzs, gas = [], []
        carry: Tensor | None = None
        for gm_t, h, dd in zip(gM.unbind(0)[::-1], Hs.unbind(0)[::-1], D.unbind(0)[::-1]):
            gm = gm_t if carry is None else gm_t + carry
            ga = (gm * k).mul_(1.0 - dd * dd)
            gz = ga.mm(w_out).mul_(h > 0)
            carry = gz.mm(w_mem).add_(gm).mul_(kappa)
            carry.masked_fill_(carry.abs() < TINY, 0.0)  # no subnormal floats (see TINY)
            gzs.append(gz), gas.append(ga)
        gZ, gAo = torch.stack(gzs[::-1]), torch.stack(gas[::-1])
        need = ctx.needs_input_grad
        g_wmem = gZ.reshape(-1, H).t().mm(U.reshape(-1, d)) if need[1] else None
        g_wout = gAo.reshape(-1, d).t().mm(Hs.reshape(-1, H)) if need[2] else None
        g_bout = gAo.sum((0, 1)) if need[3] else None
        return gZ, g_wmem, g_wout, g_bout, None, None


def memory_scan(A: Tensor, w_mem: Tensor, w_out: Tensor, b_out: Tensor, kappa: Tensor, c: Tensor) -> Tensor:
    """All memory states ``(T, B, d_m)`` of the recurrence (see :class:`_MemoryScan`)."""
    return _MemoryScan.apply(A.contiguous(), w_mem, w_out, b_out, kappa, c)


class Synapses(nn.Module):
    """The synapses of an ELM: weights ``w_s = ReLU(weight)`` (learned, one per synapse), the trace
    time constants ``tau`` (a buffer: per synapse for ``elm``, per branch for ``branch-elm``) and,
    for ``branch-elm``, the routing of inputs to synapses and branches. Its parameters are
    elementwise and learn by ordinary autograd under any rule (``learns_by_autograd``)."""

    learns_by_autograd: ClassVar[bool] = True

    def __init__(self, n_in: int, tau: float, w_s: float, branches: int | None = None, per_branch: int | None = None) -> None:
        super().__init__()
        self.n_in = n_in
        if branches is None:  # elm: one synapse and one trace per input
            self.branches, self.per_branch = n_in, 1
            self.weight = nn.Parameter(torch.full((n_in,), float(w_s)))
            self.register_buffer("tau", torch.full((n_in,), float(tau)))
            self.index = None
            return
        stride = math.ceil(n_in / branches)
        spb = stride if per_branch is None else per_branch
        self.branches, self.per_branch = branches, spb
        index = torch.arange(branches).unsqueeze(1) * stride + torch.arange(spb).unsqueeze(0)
        self.register_buffer("valid", (index < n_in).flatten().float())
        self.register_buffer("index", index.clamp(max=n_in - 1).flatten())
        self.weight = nn.Parameter(torch.full((branches * spb,), float(w_s)))
        self.register_buffer("tau", torch.full((branches,), float(tau)))

    def w_s(self) -> Tensor:
        return torch.relu(self.weight)

    def routing(self) -> Tensor:
        """``(n_in, branches)``: entry ``(i, k)`` is the summed weight of branch k's synapses on
        input i (branch-elm only)."""
        assert self.index is not None
        branch = torch.arange(self.branches, device=self.weight.device).repeat_interleave(self.per_branch)
        matrix = self.weight.new_zeros(self.n_in, self.branches)
        return matrix.index_put((self.index, branch), self.w_s() * self.valid, accumulate=True)

    def forward(self, x: Tensor, dt: float) -> Tensor:
        """Time-major input ``(T, B, n_in)`` -> the traces fed to the MLP ``(T, B, branches)``."""
        kappa = torch.exp(-dt / self.tau)
        if self.index is None:
            return leaky_scan(x, kappa) * self.w_s()  # = the scan of w_s ⊙ x (w_s constant in time)
        return leaky_scan(x.matmul(self.routing()), kappa)


class ELMOptions(Options):
    memory: int = opt(100, "memory units d_m", ge=1)
    hidden: Annotated[int, Field(ge=1)] | None = opt(None, "width of the MLP's hidden layer (None: 2·memory, the authors')")
    lam: float = opt(5.0, "λ, the scale of the memory update", gt=0)
    tau_s: float = opt(5.0, "time constant of the synaptic (elm) or branch (branch-elm) traces", gt=0)
    tau_m_min: float = opt(1.0, "shortest memory time constant (τ_m log-spaced from min to max)", gt=0)
    tau_m_max: float = opt(1000.0, "longest memory time constant", gt=0)
    w_s: float = opt(0.5, "initial synaptic weight (w_s = ReLU of a learned parameter)", ge=0)
    dt: float = opt(1.0, "time step Δt", gt=0)
    outputs: Literal["last", "all"] = opt("last", "readout of the last step (B, C) or of every step (B, T, C)")

    @model_validator(mode="after")
    def _range(self) -> "ELMOptions":
        if self.tau_m_max < self.tau_m_min:
            raise ValueError(f"tau_m_max ({self.tau_m_max}) must be >= tau_m_min ({self.tau_m_min})")
        return self


class ELM(nn.Module):
    """``elm``: see the module docstring. Shapes ``(B, T, n_in) -> (B, C)`` or ``(B, T, C)``;
    ``input_shape`` is ``(T, n_in)`` (or ``(T,)`` for one channel, or ``(1, H, W)``: an image read
    row by row)."""

    Options = ELMOptions
    variant: ClassVar[str] = "elm"
    #: A recurrence: rules without a path through time (dfa, drtp) refuse it at attach.
    recurrent: ClassVar[bool] = True

    def __init__(self, input_shape: Sequence[int], num_classes: int, memory: int = 100, hidden: int | None = None,
                 lam: float = 5.0, tau_s: float = 5.0, tau_m_min: float = 1.0, tau_m_max: float = 1000.0,
                 w_s: float = 0.5, dt: float = 1.0, outputs: str = "last", **more: Any) -> None:
        opts = dict(memory=memory, hidden=hidden, lam=lam, tau_s=tau_s, tau_m_min=tau_m_min, tau_m_max=tau_m_max,
                    w_s=w_s, dt=dt, outputs=outputs, **more)  # more: a subclass's own options (branch-elm's)
        o = parse(self.Options, opts, f"model {self.variant!r}")
        input_shape = check_shape(input_shape, self.variant)
        num_classes = check_classes(num_classes, self.variant)
        if len(input_shape) > 3 or (len(input_shape) == 3 and input_shape[0] != 1):
            raise ConfigError(
                f"{self.variant} takes sequences of shape (T, channels) or one-channel images (1, H, W), read row by "
                f"row, got input_shape={input_shape}; use a sequence data set (adding, copy, sfmnist, psfmnist, "
                "fmnist-adding)."
            )
        super().__init__()
        n_in = input_shape[-1] if len(input_shape) >= 2 else 1
        d = o.memory
        hidden = o.hidden or 2 * d
        self.synapses = self._synapses(n_in, o)
        self.w_in = nn.Linear(self.synapses.branches, hidden)
        self.w_mem = nn.Linear(d, hidden, bias=False)
        self.w_out = nn.Linear(hidden, d)
        self.readout = nn.Linear(d, num_classes)
        self.register_buffer("tau_m", memory_time_constants(d, o.tau_m_min, o.tau_m_max))
        self.lam, self.dt, self.outputs = float(o.lam), float(o.dt), o.outputs
        self.input_shape, self.num_classes = input_shape, num_classes
        self.memory_units, self.hidden_units = d, hidden

    def _synapses(self, n_in: int, o: Any) -> Synapses:
        return Synapses(n_in, o.tau_s, o.w_s)

    def decays(self) -> tuple[Tensor, Tensor]:
        """``(κ_m, c)``: the memory decay and the factor of the update ``m_t = κ_m m + c Δm``."""
        kappa = torch.exp(-self.dt / self.tau_m)
        return kappa, self.lam * (1 - kappa)

    def sequence(self, x: Tensor) -> Tensor:
        """``x`` as ``(B, T, n_in)``: a one-channel sequence ``(B, T)`` gets its channel axis, a
        one-channel image ``(B, 1, H, W)`` is read row by row (T = H, channels = W)."""
        if x.dim() == 2 and len(self.input_shape) == 1:
            x = x.unsqueeze(-1)
        elif x.dim() == 4 and len(self.input_shape) == 3:
            x = x[:, 0]
        if x.dim() != 3:
            raise ConfigError(f"{self.variant} expects input (batch, T, channels), got shape {tuple(x.shape)}")
        return x

    def drive(self, x: Tensor) -> Tensor:
        """Time-major ``A_t = W_in s_t + b_in`` ``(T, B, hidden)`` for input ``(B, T, n_in)``."""
        return self.w_in(self.synapses(self.sequence(x).transpose(0, 1), self.dt))

    def memory(self, x: Tensor) -> Tensor:
        """All memory states, time-major ``(T, B, d_m)``."""
        A = self.drive(x)
        kappa, c = self.decays()
        if _plain(self.w_mem) and _plain(self.w_out):
            return memory_scan(A, self.w_mem.weight, self.w_out.weight, self.w_out.bias, kappa, c)
        m = A.new_zeros(A.shape[1], kappa.shape[0])
        states, cs = [], c * SCALE
        for t in range(A.shape[0]):  # a rule replaced a layer's forward: run the modules per step
            u = m * kappa  # the scan's operations in its order: the same values bit for bit
            d = torch.tanh(self.w_out(torch.relu(A[t] + self.w_mem(u))) * SLOPE)
            m = torch.addcmul(u, d, cs)
            states.append(m)
        return torch.stack(states)

    def forward(self, x: Tensor) -> Tensor:
        M = self.memory(x)
        if self.outputs == "last":
            return self.readout(M[-1])
        return self.readout(M).transpose(0, 1)


def _plain(module: nn.Module) -> bool:
    """Whether ``module`` computes its class's forward (no rule replaced it, no hooks on it)."""
    return "forward" not in module.__dict__ and not module._forward_hooks and not module._forward_pre_hooks


class BranchELMOptions(ELMOptions):
    branches: int = opt(16, "dendritic branches (at most the number of input channels)", ge=1)
    synapses_per_branch: Annotated[int, Field(ge=1)] | None = opt(
        None, "synapses per branch (None: ⌈n_in / branches⌉, every input on one synapse)"
    )


class BranchELM(ELM):
    """``branch-elm``: see the module docstring."""

    Options = BranchELMOptions
    variant: ClassVar[str] = "branch-elm"

    def __init__(self, input_shape: Sequence[int], num_classes: int, memory: int = 100, hidden: int | None = None,
                 lam: float = 5.0, tau_s: float = 5.0, tau_m_min: float = 1.0, tau_m_max: float = 1000.0,
                 w_s: float = 0.5, dt: float = 1.0, outputs: str = "last", branches: int = 16,
                 synapses_per_branch: int | None = None) -> None:
        super().__init__(input_shape, num_classes, memory=memory, hidden=hidden, lam=lam, tau_s=tau_s, tau_m_min=tau_m_min,
                         tau_m_max=tau_m_max, w_s=w_s, dt=dt, outputs=outputs, branches=branches,
                         synapses_per_branch=synapses_per_branch)

    def _synapses(self, n_in: int, o: Any) -> Synapses:
        if o.branches > n_in:
            raise ConfigError(
                f"branch-elm: branches ({o.branches}) must be at most the number of input channels ({n_in})."
            )
        return Synapses(n_in, o.tau_s, o.w_s, o.branches, o.synapses_per_branch)

    def decays(self) -> tuple[Tensor, Tensor]:
        kappa = torch.exp(-self.dt / self.tau_m)
        return kappa, 1 - torch.exp(-self.dt * self.lam / self.tau_m)
