"""Helpers shared by several rules (a rule module imports only ``base``, this module,
``_autograd`` and ``errors``; no rule imports another rule).

Alignment measurements (what :meth:`Learner.diagnostics` reports by default, re-exported by
:mod:`beyondbp.analysis.alignment`, which documents them):

* ``cosine``, ``angle_degrees`` — between two tensors, flattened (float64).
* ``gradient_alignment`` — per trained layer, the cosine between the rule's update direction
  and backprop's gradient on the same batch, plus ``cos/all`` over all those weights.
* ``weight_alignment`` — the angle and norm ratio between each feedback matrix and ``W``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # annotations only: base imports this module
    from .base import Batch, Learner


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


def alignment_diagnostics(learner: Learner, batch: Batch) -> dict[str, float]:
    """Gradient alignment on ``batch`` and, where it exists, weight alignment."""
    out = gradient_alignment(learner, batch)
    out.update(weight_alignment(learner))
    return out
