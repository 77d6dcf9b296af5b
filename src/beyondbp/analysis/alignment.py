"""How a rule's updates and feedback relate to backpropagation.

* Gradient alignment — for every layer the rule trains, the cosine similarity between the rule's
  update direction (:meth:`Learner.estimate`) and the true backprop gradient of the same loss on
  the same batch (:meth:`Learner.backprop_gradients`), plus the cosine over all those layers'
  weights together (``cos/all``). 1 means the rule's step points exactly along backprop's.
* Weight alignment — for rules with a per-layer feedback matrix standing in for ``W`` (FA,
  sign-symmetry, KP; PFA's product path), the angle in degrees between the flattened feedback
  matrix and ``W`` (0° = symmetric) and the norm ratio ‖B‖/‖W‖, as BioTorch reports them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..rules.base import Batch, Learner


def cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return float(a.dot(b) / (na * nb))


def angle_degrees(a: Tensor, b: Tensor) -> float:
    c = cosine(a, b)
    if math.isnan(c):
        return float("nan")
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def gradient_alignment(learner: Learner, batch: Batch) -> dict[str, float]:
    """``{"cos/<layer>": cosine}`` per trained layer's weight, and ``"cos/all"``."""
    rule_grads = learner.estimate(batch)
    bp_grads = learner.backprop_gradients(batch)
    out: dict[str, float] = {}
    rule_all, bp_all = [], []
    for name in learner.trained_layers():
        key = f"{name}.weight" if name else "weight"
        if key in rule_grads and key in bp_grads:
            out[f"cos/{name}"] = cosine(rule_grads[key], bp_grads[key])
            rule_all.append(rule_grads[key].flatten())
            bp_all.append(bp_grads[key].flatten())
    if rule_all:
        out["cos/all"] = cosine(torch.cat(rule_all), torch.cat(bp_all))
    return out


def weight_alignment(learner: Learner) -> dict[str, float]:
    """``{"angle/<layer>": degrees, "norm_ratio/<layer>": ‖B‖/‖W‖}`` where a feedback matrix exists."""
    out: dict[str, float] = {}
    for name, module in learner.trained_layers().items():
        fb = learner.feedback_matrix(name)
        if fb is None:
            continue
        w = module.weight.detach()
        out[f"angle/{name}"] = angle_degrees(fb, w)
        wn = float(w.norm())
        out[f"norm_ratio/{name}"] = float(fb.norm()) / wn if wn > 0 else float("nan")
    return out


def diagnostics(learner: Learner, batch: Batch) -> dict[str, float]:
    """Gradient alignment on ``batch`` and, where it exists, weight alignment."""
    out = gradient_alignment(learner, batch)
    out.update(weight_alignment(learner))
    return out
