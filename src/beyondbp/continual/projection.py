"""Gradient projection for continual learning: HLOP's Hebbian subspaces and GPM's SVD bases.

Both methods protect what earlier tasks learnt by keeping every later weight update orthogonal to
the subspace the earlier tasks' *layer inputs* span. For a layer ``y = W x`` a weight update of
the form ``ΔW = −η Σ_b δ_b x_bᵀ`` changes the layer's response to an old input ``x_old`` by
``ΔW x_old``, which vanishes when every ``x_b`` is replaced by ``x_b − P x_b`` with ``P`` the
projector onto the old inputs' span. Since

    Σ_b δ_b (x_b − P x_b)ᵀ = (Σ_b δ_b x_bᵀ)(I − P)     (P symmetric),

the projection can be applied to the finished weight gradient ``G`` as ``G ← G − (G Mᵀ) M`` with
``P = MᵀM`` for an ``M`` with orthonormal rows. That is what :class:`GradientProjector` does, on
``.grad``, after whichever rule filled it and before ``optimizer.step()``. So it composes with
every rule whose weight update is ``δ·xᵀ``-shaped: backprop, feedback alignment and
sign-symmetry (fa, usf, brsf, frsf), Kolen-Pollack (kp), direct and product feedback (dfa, pfa)
and DRTP — the rule decides δ, the projection only restricts which input directions may change.
Rules whose update is not of that shape (ff, softhebb, il, ottt) are refused.

* Linear layers: ``x`` is the layer's input row. A layer with a bias is treated as a weight on a
  constant input 1: ``x̃ = [x, 1]`` and the projection acts on ``[W | b]`` (the official HLOP and
  GPM networks have no biases; this keeps biases from undoing the protection).
* Conv2d: ``x`` is an unfolded input patch (``in_channels·kh·kw`` values, plus the constant 1
  with a bias), and ``G`` is the kernel reshaped to ``(out_channels, in_channels·kh·kw)``.
* Spiking models: their Linear / Conv layers run once over all ``T`` time steps flattened into
  the batch, so each step's presynaptic input is one row of ``x``; the weights are shared over
  time and ``G = Σ_{t,b} δ_{t,b} x_{t,b}ᵀ``, so the same projection holds exactly. (The official
  HLOP code instead feeds the Hebbian update the weighted firing rate over time.)

:class:`HebbianSubspace` — HLOP's lateral neurons ("Hebbian Learning based Orthogonal Projection
for Continual Learning of Spiking Neural Networks", Xiao, Meng, Zhang, He, Lin; ICLR 2024). A
layer's ``k`` lateral neurons respond ``y = H x`` (``H``: ``k × n``) and learn by Oja's subspace
rule ``ΔH = yᵀ(x − Hᵀy)/B`` on a batch of ``B`` input rows: ``H``'s rows converge to an
orthonormal basis of the inputs' top-``k`` principal subspace. As in the authors'
``hlop_module.py``: each update is clamped to [−10, 10] elementwise, smoothed by momentum
``m ← 0.9 m + 0.1 ΔH`` and applied as ``H ← H + lr·m``, repeated ``iterations = 5`` times per
batch; new neurons start as random orthonormal rows; when a task ends its neurons are frozen
(their rows never change again) and the next task adds new ones, which learn on the new task's
inputs while the reconstruction ``Hᵀy`` uses all neurons (so the new ones learn the residual).
The projection during task ``t`` uses only the frozen neurons of tasks ``< t``. (The official
code also has a spiking quantisation option for the lateral neurons; that is not implemented.)

Differences from the official code — two places where the official recipe relies on the lateral
neurons having converged to orthonormal rows within a task:

* The projection uses ``x − Mᵀ(M x)`` with ``M`` an orthonormal basis of the frozen rows' span
  (their SVD, computed once when they freeze), where the official code uses the raw rows ``H``.
  ``I − HᵀH`` is a projector only when ``H`` has orthonormal rows; when a task is too short for
  Oja's rule to converge, ``H``'s singular values drift from 1 (measured: up to 7 after 9 tasks
  of 5,000 samples under FA) and ``I − HᵀH`` gets negative eigenvalues, which turns the weight
  update into gradient *ascent* along those directions — the run diverged at task 8. With ``M``
  the span is protected exactly, however far the neurons got.
* New neurons start as random orthonormal rows orthogonal to the frozen span (the official code
  draws them orthonormal among themselves only), so they start in the residual they must learn.

Difference from the official code — a step-size guard (``guard=True``, the default): the
Hebbian learning rate of a batch is ``min(lr, 1 / mean_b ‖x_b‖²)``. Since the largest eigenvalue
of the inputs' second-moment matrix is at most its trace ``E‖x‖²``, this keeps ``lr·λ_max ≤ 1``,
where Oja's rule is stable. The official rates (0.001 first layer, 0.01 others) were set for
standardised pixels and spiking firing rates in [0, 1]; fed real-valued ReLU activity of a
784-800-800 MLP (mean ‖x‖² ≈ 300 at the hidden layers), the 0.01 rule diverged under feedback
alignment (Gram matrix of the neurons off the identity by 10⁴ after one task, and the projection
then destroyed task 0: 55.7 % → 15.5 %). Where the official rate is already stable the guard
changes nothing (the first layer on standardised Fashion-MNIST: 0.001 · ≈ 725 < 1).

:func:`gpm_extend` — "Gradient Projection Memory for Continual Learning" (Saha, Garg, Roy; ICLR
2021). After a task, the inputs of each layer on a sample of that task's training data form the
representation matrix ``R`` (``n × S``). With the stored basis ``U`` (orthonormal columns), the
residual ``R̂ = R − U Uᵀ R`` is decomposed by SVD and the fewest new directions ``k`` are added for
which ``(‖UᵀR‖² + Σ_{i≤k} σ̂_i²) / ‖R‖² ≥ threshold`` (for the first task ``U`` is empty). Their
permuted-MNIST settings: 300 samples per task, thresholds 0.95 for the first layer and 0.99 for
the others — the defaults here.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beyondbp.errors import ConfigError, UnsupportedModuleError

__all__ = [
    "COMPOSABLE_RULES",
    "GradientProjector",
    "HebbianSubspace",
    "InputRecorder",
    "check_composable",
    "gpm_extend",
    "layer_inputs",
    "projectable_layers",
    "orthonormal_row_basis",
    "random_orthonormal_rows",
]

#: Rules whose weight update is δ·xᵀ-shaped, so a right projection of ``.grad`` composes with them.
COMPOSABLE_RULES = ("backprop", "fa", "usf", "brsf", "frsf", "kp", "dfa", "pfa", "drtp")


def check_composable(rule_name: str, method: str) -> None:
    """Refuse a rule whose weight update is not δ·xᵀ-shaped."""
    if rule_name not in COMPOSABLE_RULES:
        raise ConfigError(
            f"method '{method}' projects δ·xᵀ-shaped weight gradients, which rule '{rule_name}' does not "
            f"produce; use one of: {', '.join(COMPOSABLE_RULES)}"
        )


def projectable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's Linear and Conv2d layers by path (other weight layers are refused by name)."""
    out: dict[str, nn.Module] = {}
    for path, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            out[path] = m
        elif isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
            raise UnsupportedModuleError(
                f"gradient projection supports Linear and Conv2d layers; module '{path}' is a {type(m).__name__}"
            )
    if not out:
        raise UnsupportedModuleError("the model has no Linear or Conv2d layer to protect by projection")
    return out


def input_dim(module: nn.Module) -> int:
    """Length of one input row of ``module`` as the projection sees it (with the bias's 1)."""
    if isinstance(module, nn.Linear):
        n = module.in_features
    else:
        kh, kw = module.kernel_size
        n = module.in_channels // module.groups * kh * kw
    return n + (1 if module.bias is not None else 0)


def layer_inputs(module: nn.Module, x: Tensor) -> Tensor:
    """The rows ``x̃`` (``(rows, input_dim)``) whose outer products with δ make ``module``'s
    weight gradient: Linear inputs flattened to rows, Conv2d inputs unfolded into patches, a
    constant 1 appended when the layer has a bias."""
    x = x.detach()
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
    else:
        if module.groups != 1:
            raise UnsupportedModuleError("gradient projection does not support grouped convolutions")
        if isinstance(module.padding, str):
            raise UnsupportedModuleError("gradient projection needs numeric Conv2d padding, not 'same'/'valid'")
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding,
                        stride=module.stride)  # (B, n, L)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if module.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows


class InputRecorder:
    """Forward pre-hooks that keep the last input rows of each layer while ``recording``."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers = layers
        self.rows: dict[str, Tensor] = {}
        self.recording = False
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in layers.items()]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if self.recording and args:
                rows = layer_inputs(module, args[0])
                prev = self.rows.get(name)
                # a layer called twice in one step (weight sharing) contributes all its rows
                self.rows[name] = rows if prev is None else torch.cat([prev, rows])
        return hook

    def clear(self) -> None:
        self.rows = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def orthonormal_row_basis(H: Tensor, rtol: float = 1e-6) -> Tensor:
    """Orthonormal rows spanning the rows of ``H`` (right singular vectors with σ > rtol·σ_max)."""
    if H.shape[0] == 0:
        return H.clone()
    _, s, vh = torch.linalg.svd(H.double(), full_matrices=False)
    keep = s > rtol * float(s.max())
    return vh[keep].to(H.dtype).contiguous()


def random_orthonormal_rows(k: int, n: int, generator: torch.Generator, dtype=torch.float32,
                            against: Tensor | None = None) -> Tensor:
    """``k`` random orthonormal rows of length ``n`` (QR of a Gaussian matrix, seeded)."""
    a = torch.randn(n, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.T.to(dtype).contiguous()


class HebbianSubspace:
    """One layer's HLOP lateral neurons (see the module docstring for the rule)."""

    def __init__(self, n: int, lr: float, iterations: int = 5, momentum: float = 0.9, clamp: float = 10.0,
                 seed: int = 0, guard: bool = True) -> None:
        self.n = n
        self.guard = bool(guard)
        self.last_lr = float(lr)
        self.lr = float(lr)
        self.iterations = int(iterations)
        self.momentum = float(momentum)
        self.clamp = float(clamp)
        self.H = torch.zeros(0, n)
        self.velocity = torch.zeros(0, n)
        self.frozen = 0  # rows [0, frozen) never change again
        self._basis: Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def size(self) -> int:
        return self.H.shape[0]

    def add(self, k: int) -> int:
        """Freeze every existing neuron and add ``min(k, n − size)`` new ones; return how many."""
        self.freeze()
        k = max(0, min(int(k), self.n - self.size))
        if k:
            new = random_orthonormal_rows(k, self.n, self.generator, self.H.dtype)
            if self.size:  # start orthogonal to the frozen neurons' span
                Q = self.basis().double()
                new = new.double() - (new.double() @ Q.T) @ Q
                q, r = torch.linalg.qr(new.T)
                new = (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).T.to(self.H.dtype)
            self.H = torch.cat([self.H, new])
            self.velocity = torch.cat([self.velocity, torch.zeros(k, self.n)])
        return k

    def freeze(self) -> None:
        """Freeze every neuron; the projection basis becomes an orthonormal basis of their span."""
        if self.frozen != self.size or self._basis is None:
            self.frozen = self.size
            self._basis = orthonormal_row_basis(self.H[: self.frozen])

    def update(self, x: Tensor) -> None:
        """``iterations`` Hebbian steps of the active (unfrozen) neurons on the rows ``x``."""
        if self.size == self.frozen or x.shape[0] == 0:
            return
        x = x.to(self.H.dtype)
        f = self.frozen
        lr = self.lr
        if self.guard:  # lr·λ_max ≤ lr·E‖x‖² ≤ 1 (see the module docstring)
            lr = min(lr, 1.0 / max(float((x * x).sum(1).mean()), 1e-12))
        self.last_lr = lr
        for _ in range(self.iterations):
            y = x @ self.H.T                       # (B, k) responses of all neurons
            resid = x - y @ self.H                 # x − Hᵀy
            delta = (y[:, f:].T @ resid) / x.shape[0]
            delta.clamp_(-self.clamp, self.clamp)
            v = self.velocity[f:]
            v.mul_(self.momentum).add_(delta, alpha=1.0 - self.momentum)
            self.H[f:] += lr * v

    def basis(self) -> Tensor:
        """Orthonormal rows spanning the frozen neurons' weights: the projection during the
        current task is ``x − Mᵀ(M x)`` with this ``M``."""
        if self._basis is None:
            self._basis = orthonormal_row_basis(self.H[: self.frozen])
        return self._basis


def gpm_extend(U: Tensor, R: Tensor, threshold: float) -> Tensor:
    """GPM's basis update: ``U`` ``(n, k)`` orthonormal columns, ``R`` ``(n, S)`` new inputs as
    columns; returns ``[U, new]`` with the fewest new directions meeting ``threshold``."""
    R = R.double()
    total = float((R * R).sum())
    if total == 0.0:
        return U
    if U.shape[1]:
        Ud = U.double()
        captured = float(((Ud.T @ R) ** 2).sum())
        resid = R - Ud @ (Ud.T @ R)
    else:
        captured, resid = 0.0, R
    if captured / total >= threshold:
        return U
    u, s, _ = torch.linalg.svd(resid, full_matrices=False)
    energy = captured + torch.cumsum(s**2, 0)
    k = int((energy / total < threshold).sum()) + 1
    k = min(k, R.shape[0] - U.shape[1], u.shape[1])
    if k <= 0:
        return U
    new = u[:, :k]
    if U.shape[1]:  # re-orthogonalise against the stored basis (numerical safety)
        new = new - U.double() @ (U.double().T @ new)
        new, _ = torch.linalg.qr(new)
    return torch.cat([U, new.to(U.dtype)], dim=1)


class GradientProjector:
    """Projects each layer's weight gradient (and bias, as the constant-input column) onto the
    orthogonal complement of that layer's stored basis: ``G ← G − (G Mᵀ) M``."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers = layers
        self.bases: dict[str, Tensor] = {}  # name -> M (k, n) with orthonormal rows (HLOP: ≈)

    def set_basis(self, name: str, M: Tensor) -> None:
        self.bases[name] = M

    @staticmethod
    def gradient_matrix(module: nn.Module) -> Tensor | None:
        """The layer's gradient as ``(out, input_dim)``: ``[dW | db]`` (a new tensor)."""
        if module.weight.grad is None:
            return None
        g = module.weight.grad.reshape(module.weight.shape[0], -1)
        if module.bias is not None:
            gb = module.bias.grad if module.bias.grad is not None else torch.zeros_like(module.bias)
            g = torch.cat([g, gb.reshape(-1, 1)], dim=1)
        return g

    @torch.no_grad()
    def project(self) -> None:
        for name, module in self.layers.items():
            M = self.bases.get(name)
            if M is None or M.shape[0] == 0:
                continue
            g = self.gradient_matrix(module)
            if g is None:
                continue
            M = M.to(g.dtype)
            g = g - (g @ M.T) @ M
            nw = module.weight[0].numel()
            module.weight.grad.copy_(g[:, :nw].reshape(module.weight.shape))
            if module.bias is not None and module.bias.grad is not None:
                module.bias.grad.copy_(g[:, nw])

    def __iter__(self) -> Iterator[str]:
        return iter(self.bases)
