"""Measurements of a spiking liquid (:mod:`beyondbp.models.lsm`): branching factor, firing rates
per population, silent fraction. Pure: they change no weight, buffer or RNG state.

Branching factor, as the authors compute it (combra-lab/NALSM ``compute_branching_factor.py`` and
``get_branching_factor.py``): spikes in the first and last ``edge`` ms (25) are dropped; for every
spike of liquid neuron ``i`` at a time ``t`` in ``[edge + window, T − edge − window)`` the ratio

    (spikes of i's liquid postsynaptic targets in [t + 1, t + 1 + window))
    / max(1, spikes of i's liquid presynaptic sources in [t − window, t))

with ``window = 4`` ms; ratios are averaged per neuron over its spikes, then over neurons with at
least one such spike (per sample), then over samples.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["branching_factor", "liquid_measurements", "raster_measurements"]


def _window_sums(raster: Tensor, start: int, window: int) -> Tensor:
    """``out[t] = Σ_{t' ∈ [t + start, t + start + window)} raster[t']`` (zero outside)."""
    T = raster.shape[0]
    c = torch.cat([torch.zeros_like(raster[:1]), torch.cumsum(raster, 0)])
    t = torch.arange(T, device=raster.device)
    lo = (t + start).clamp(0, T)
    hi = (t + start + window).clamp(0, T)
    return c[hi] - c[lo]


def branching_factor(raster: Tensor, pre: Tensor, post: Tensor, *, window: int = 4, edge: int = 25) -> float:
    """The authors' branching factor of liquid spike rasters ``(B, T, n)`` (or ``(T, n)``) over
    the liquid synapses ``pre[s] → post[s]`` (liquid indices 0..n−1); NaN without any counted spike."""
    if raster.dim() == 2:
        raster = raster.unsqueeze(0)
    B, T, n = raster.shape
    adj = torch.zeros(n, n, dtype=torch.float64, device=raster.device)  # adj[i, j] = 1 if j → i
    adj[post, pre] = 1.0
    per_sample = []
    for b in range(B):
        r = raster[b].double().clone()
        r[:edge] = 0
        r[max(edge, T - edge):] = 0
        pre_cnt = _window_sums(r, -window, window) @ adj.t()  # [t, i]: Σ_{j→i} spikes in [t−w, t)
        post_cnt = _window_sums(r, 1, window) @ adj  # [t, i]: Σ_{i→k} spikes in [t+1, t+1+w)
        valid = torch.zeros(T, dtype=torch.bool, device=r.device)
        valid[edge + window: max(edge + window, T - edge - window)] = True
        spk = (r > 0) & valid[:, None]
        ratio = post_cnt / pre_cnt.clamp_min(1.0)
        num = (ratio * spk).sum(0)
        cnt = spk.sum(0)
        if bool((cnt > 0).any()):
            per_sample.append(float((num[cnt > 0] / cnt[cnt > 0]).mean()))
    vals = [v for v in per_sample if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def liquid_measurements(model: Any, x: Tensor, *, seed: int = 0, plasticity: bool = True) -> dict[str, float]:
    """Branching factor, firing rates (Hz) of the excitatory, inhibitory and input populations and
    the fraction of silent liquid neurons, for samples ``x`` presented to ``model`` (an ``lsm``),
    with the attached plasticity (transient per sample; nothing written back) unless
    ``plasticity=False``. Input spikes are drawn from ``seed`` inside a forked RNG: the global RNG,
    the weights and the buffers are left exactly as they were."""
    liquid = model.liquid
    saved = liquid.weight.detach().clone()
    plast = liquid.plasticity if plasticity else None
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            out = liquid.simulate(model.encode(x), record=True, plasticity=plast, write_back=False)
    finally:
        with torch.no_grad():
            liquid.weight.copy_(saved)
    return raster_measurements(liquid, out)


def raster_measurements(liquid: Any, out: dict[str, Tensor]) -> dict[str, float]:
    """:func:`liquid_measurements` of a finished simulation: ``out`` is what
    ``liquid.simulate(..., record=True)`` returned (``raster``, ``counts``, ``input_counts``)."""
    T = out["raster"].shape[1]
    counts = out["counts"]
    rec = liquid.kind != 2
    bf = branching_factor(out["raster"], liquid.pre[rec] - liquid.n_in, liquid.post[rec])
    hz = 1000.0 / T
    return {
        "branching_factor": bf,
        "rate_exc_hz": float(counts[:, liquid.is_exc].mean()) * hz,
        "rate_inh_hz": float(counts[:, ~liquid.is_exc].mean()) * hz if bool((~liquid.is_exc).any()) else float("nan"),
        "rate_input_hz": float(out["input_counts"].mean()) * hz,
        "silent_fraction": float((counts == 0).float().mean()),
    }
