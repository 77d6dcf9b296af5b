"""SoftHebb's equations as pure functions: soft winner-take-all activity, the Hebbian
plasticity of one layer, and its norm-dependent scaled update.

From "Hebbian Deep Learning Without Feedback" (Journé, Garcia Rodriguez, Guo, Moraitis; ICLR
2023). For a layer with weights ``W`` (one row ``W_i`` per unit; for a convolution one kernel per
output channel and one competition per output position), input ``x`` and bias-free response
``u = W x``:

    y = soft_wta(u, t_invert)          softmax(t_invert · u) over the units, the losers negated
    ΔW = plasticity(layer, x, u, y)    ΔW_i = Σ y_i x − (Σ y_i u_i) W_i, summed over samples
                                       and positions
    W += scaled_update(ΔW, W, lr, p)   η_i ΔW_i / max|ΔW| with η_i = lr · |‖W_i‖ − 1|^p

The rule :class:`beyondbp.rules.softhebb.SoftHebb` trains networks with them; the soft-Hebbian
front layer of :class:`beyondbp.adapt.methods.NHL` reuses them on a convolution. Both import this
module; it imports nothing from the package (torch only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["adaptive_lr", "plasticity", "scaled_update", "soft_wta", "soft_wta_with_winner", "unit_norms",
           "update_scale"]


def soft_wta(u: Tensor, t_invert: float, anti_hebbian: bool = True) -> Tensor:
    """Post-synaptic activity ``y`` for pre-activations ``u`` of shape ``(N, units, *positions)``.

    ``y = softmax(t_invert · u)`` over the unit dimension (1); with ``anti_hebbian`` every entry
    except the arg-max unit's (per sample and position) is negated.
    """
    return soft_wta_with_winner(u, t_invert, anti_hebbian)[0]


def soft_wta_with_winner(u: Tensor, t_invert: float, anti_hebbian: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`soft_wta` and the winner's index per sample and position (keepdim)."""
    s = torch.softmax(t_invert * u, dim=1)
    winner = u.max(dim=1, keepdim=True).indices  # = argmax (first maximum), faster across dim 1 on CPU
    if not anti_hebbian:
        return s, winner
    return s.neg().scatter_(1, winner, s.gather(1, winner)), winner


def _weight_shape_patches(layer: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``Σ_{n, positions} y_i · patch(x)`` for every unit ``i``, in the layer's weight shape."""
    if isinstance(layer, nn.Linear):
        return y.transpose(0, 1).matmul(x)
    padding = layer.padding
    if layer.padding_mode != "zeros" or isinstance(padding, str):
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        x = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    grad_fn = torch.nn.grad.conv1d_weight if isinstance(layer, nn.Conv1d) else torch.nn.grad.conv2d_weight
    return grad_fn(
        x, layer.weight.shape, y, stride=layer.stride, padding=padding, dilation=layer.dilation, groups=layer.groups
    )


def plasticity(layer: nn.Module, x: Tensor, u: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
    """The raw SoftHebb update ``ΔW_i = Σ y_i x − (Σ y_i u_i) W_i`` (before any scaling).

    ``x`` is the layer's input, ``u`` its bias-free pre-activation, ``y`` the post-synaptic
    activity (:func:`soft_wta`); a Linear layer's leading dimensions are flattened into samples.
    """
    w = layer.weight if weight is None else weight
    if isinstance(layer, nn.Linear):
        x = x.reshape(-1, x.shape[-1])
        u = u.reshape(-1, u.shape[-1])
        y = y.reshape(-1, y.shape[-1])
    yx = _weight_shape_patches(layer, x, y)  # a fresh tensor: updated in place below
    yu = (y * u).sum(dim=[d for d in range(y.dim()) if d != 1])  # units are dimension 1
    return yx.addcmul_(yu.view(-1, *([1] * (w.dim() - 1))), w, value=-1.0)


def unit_norms(weight: Tensor) -> Tensor:
    """The Euclidean norm of every unit's weight vector (row / output-channel kernel)."""
    return torch.linalg.vector_norm(weight.reshape(weight.shape[0], -1), dim=1)


def adaptive_lr(weight: Tensor, lr: float, power: float) -> Tensor:
    """``η_i = lr · (|‖W_i‖ − 1| + 1e-10)^power``, shaped to broadcast over ``weight``."""
    rate = lr * (unit_norms(weight) - 1).abs().add(1e-10).pow(power)
    return rate.view(-1, *([1] * (weight.dim() - 1)))


def update_scale(delta: Tensor, weight: Tensor, lr: float, power: float) -> Tensor:
    """``η_i / max|ΔW|`` per unit, shaped to broadcast over ``weight``."""
    low, high = torch.aminmax(delta)  # max|ΔW| in one pass (much faster than an ∞-norm on CPU)
    return adaptive_lr(weight, lr, power).div_(torch.maximum(high, -low) + 1e-30)


def scaled_update(delta: Tensor, weight: Tensor, lr: float, power: float) -> Tensor:
    """The change applied to ``weight``: ``η_i ΔW_i / max|ΔW|``."""
    return delta * update_scale(delta, weight, lr, power)
