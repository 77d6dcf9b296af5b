"""Node-perturbation plasticity with eligibility traces, as pure functions.

From "Learning to acquire novel cognitive tasks with evolution, plasticity and
meta-meta-learning" (Miconi, ICML 2023), after Miconi (eLife 2017). A recurrent network whose
units receive small random kicks ``p`` to their potentials keeps, for every synapse ``j → i``,
an eligibility trace of how the kicks of unit ``i`` went together with the rate ``r_j`` it was
receiving:

    E ← d · (E + p ⊗ r_prev)          every time step, d = 1 − dt / τ_E

Once per trial, after the response, a scalar loss ``L`` (the trial's squared error) is compared
with a running baseline ``b`` of the losses of trials of the same type, and the plastic weights
move against the eligibility in proportion to the surprise, scaled by the baseline:

    ΔP = −clip(η · E · b · (L − b), ±Δmax)      then  b ← μ b + (1 − μ) L

The evolved network uses them (:mod:`beyondbp.evolution.plastic_rnn`); this module imports
nothing from the package (torch only). Every tensor carries a leading population dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["decayed_traces", "plastic_update", "trace_step", "update_baseline"]


def trace_step(traces: Tensor, perturbation: Tensor, pre: Tensor, decay: float) -> Tensor:
    """One step of the eligibility traces: ``d · (E + p ⊗ r_prev)``.

    ``traces`` is ``(B, N, N)`` (row = post-synaptic unit), ``perturbation`` ``(B, N)`` or ``(N,)``
    (shared by the population), ``pre`` ``(B, N)`` the rates of the previous step.
    """
    p = perturbation.expand(pre.shape[0], -1) if perturbation.dim() == 1 else perturbation
    return decay * (traces + p[:, :, None] * pre[:, None, :])


def decayed_traces(traces: Tensor, perturbations: Tensor, pres: Tensor, decay: float) -> Tensor:
    """Many :func:`trace_step` at once: the traces after ``K`` steps whose shared kicks are
    ``perturbations`` ``(K, N)`` and whose previous rates are ``pres`` ``(B, K, N)``.

    ``E_K = d^K E_0 + Σ_k d^{K−k} p_k ⊗ r_{k−1}`` (k = 1 … K), one batched product instead of K
    outer products.
    """
    steps = perturbations.shape[0]
    if steps == 0:
        return traces
    weights = decay ** torch.arange(steps, 0, -1, dtype=pres.dtype, device=pres.device)
    kicks = perturbations * weights[:, None]  # (K, N)
    return (decay ** steps) * traces + torch.einsum("kn,bkm->bnm", kicks, pres)


def plastic_update(traces: Tensor, loss: Tensor, baseline: Tensor, eta: float, max_change: float) -> Tensor:
    """The once-per-trial change of the plastic weights: ``−clip(η E b (L − b), ±max_change)``.

    ``traces`` ``(B, N, N)``, ``loss`` and ``baseline`` ``(B,)`` (the baseline of this trial's type).
    """
    modulation = baseline * (loss - baseline)
    return -(eta * traces * modulation[:, None, None]).clamp(-max_change, max_change)


def update_baseline(baselines: Tensor, kinds: Tensor, loss: Tensor, momentum: float) -> Tensor:
    """The running loss per trial type: ``b[k] ← μ b[k] + (1 − μ) L`` for each member's type ``k``
    (``baselines`` ``(B, types)``, ``kinds`` ``(B,)`` long); returns a new tensor."""
    out = baselines.clone()
    rows = torch.arange(baselines.shape[0], device=baselines.device)
    out[rows, kinds] = momentum * baselines[rows, kinds] + (1.0 - momentum) * loss
    return out
