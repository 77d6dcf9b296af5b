"""Backpropagation, the baseline every other rule is measured against.

Equations: with ``a_l = W_l h_{l-1}``, ``h_l = f(a_l)`` and ``e = dL/da_L``, the error travels
back through the transposed forward weights, ``δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ f'(a_l)``, and every
weight moves along ``ΔW_l = −η δ_l h_{l-1}ᵀ`` (or whatever the optimizer makes of that
gradient). It is plain ``loss.backward(); optimizer.step()``: attaching it changes nothing in
the model, and it trains every module type. Paper: "Learning representations by
back-propagating errors" (Rumelhart, Hinton, Williams 1986). No options.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from .base import Learner, LossFn, Rule


class Backprop(Rule):
    name = "backprop"
    family: ClassVar[str] = "baseline"
    summary = "backpropagation: exact gradients through the transposed forward weights"
    paper = "Learning representations by back-propagating errors (Rumelhart, Hinton, Williams 1986)"
    refuses_unknown = False
    plain_backward = True  # it is the user's own loss.backward(); optimizer.step()
    exact_gradients = True  # its update is the gradient the other rules are compared with

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return Learner(self, model, loss_fn)
