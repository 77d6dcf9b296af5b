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

from ..rules.base import alignment_diagnostics as diagnostics
from ..rules.base import angle_degrees, cosine, gradient_alignment, weight_alignment

__all__ = ["angle_degrees", "cosine", "diagnostics", "gradient_alignment", "weight_alignment"]
