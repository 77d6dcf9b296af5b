"""Event-driven simulation of a fixed-weight liquid (:class:`beyondbp.models.lsm.Liquid` with
no plasticity, ``kernel = "event"``).

The same step as the reference (the CSR product of the synapse matrix with the kernel changes of
every presynaptic neuron, ``kernel = "dense"``), with the same numbers, bit for bit:

* the drive change of a step (of one sample on the CPU; batches and other devices use the
  reference's CSR product) touches only the outgoing synapses of the neurons that spiked (at
  NALSM1000 rates ~15 % of the synapses): their rows of the padded tables
  (:meth:`Liquid.event_tables`) are gathered and summed per postsynaptic neuron with
  ``scatter_add_``, which on the CPU adds them in ascending presynaptic order, as the CSR row
  sum does, into a zeroed buffer that is then added to the drive (the reference adds its
  product's result);
* the Bernoulli input drive of up to ``CHUNK_ELEMENTS`` numbers is drawn in one call (the generator gives
  the same numbers in the same order as one draw per step);
* every per-step update runs in place on preallocated arrays, with the reference's operations
  in the reference's order (``(v + I) − v/τ_v`` and so on): equal spikes, equal membranes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["simulate_fixed"]

#: At most this many input draws (steps × samples × inputs) are held at once.
CHUNK_ELEMENTS = 1 << 21
#: From this batch size on the drive change is the CSR product (the reference's; cheaper than
#: gathering the spiking neurons' rows when many samples spike at once).
CSR_BATCH = 2


def simulate_fixed(liq: Any, p: Tensor, T: int, record: bool, gen: torch.Generator | None,
                   k_init: float) -> dict[str, Tensor]:
    """``liq``'s fixed-weight simulation of firing probabilities ``p`` (B, n_in) for ``T`` steps
    (see :meth:`Liquid.simulate` for what it returns); ``k_init``: every kernel's start value."""
    B, n_in, n = p.shape[0], liq.n_in, liq.n
    n_tot, dev = n_in + n, p.device
    n_cols = n_tot + 1  # + the dummy neuron the tables' padding points at
    w = liq.weight.detach()
    # spike rows for one sample on the CPU (where scatter_add_ adds in order); the CSR product else
    csr = liq._csr(w) if B >= CSR_BATCH or dev.type != "cpu" else None
    if csr is None:
        tab = liq.event_tables()
        w_pad = torch.cat([w, w.new_zeros(1)])
        # the tables' synapse rows turned into weight rows once (the padding's weight is 0)
        w_rows = [w_pad.index_select(0, ids.reshape(-1)).view(ids.shape) for ids in (tab["out_in"], tab["out_liq"])]
        x_rows = [tab["out_in_x"], tab["out_liq_x"]]
    decay = math.exp(-1.0 / liq.tau_u)
    k0, thr, tau_v, refr = 1.0 / liq.tau_u, liq.threshold, liq.tau_v, float(liq.refractory)
    k = torch.full((B, n_cols), k_init, device=dev)
    k[:, n_tot] = 0.0
    kv = k.view(-1)
    drive = liq._full_drive(w, k[:, :n_tot])  # (B, n), as the reference starts
    buf = torch.zeros(B, n_cols, device=dev)
    bufv, buf_liq = buf.view(-1), buf[:, n_in:n_tot]
    v = torch.zeros(B, n_tot, device=dev)
    v_in, v_liq = v[:, :n_in], v[:, n_in:]
    ref = torch.zeros(B, n_tot, device=dev)
    counts = torch.zeros(B, n_tot, device=dev)
    raster = torch.zeros(B, T, n, dtype=torch.bool, device=dev) if record else None
    dv = torch.empty(B, n_tot, device=dev)
    s = torch.empty(B, n_tot, dtype=torch.bool, device=dev)
    quiet = torch.empty(B, n_tot, dtype=torch.bool, device=dev)
    s_in, s_liq = s[:, :n_in], s[:, n_in:]
    offsets = torch.arange(B, device=dev) * n_cols
    chunk = max(1, min(T, CHUNK_ELEMENTS // max(1, B * n_in)))
    current = None
    for t in range(T):
        if t % chunk == 0:  # the input drive of the next steps, drawn at once
            steps = min(chunk, T - t)
            u = torch.rand(steps, B, n_in, device=dev, generator=gen)
            current = torch.gt(p.unsqueeze(0), u, out=torch.empty(u.shape, dtype=torch.bool, device=dev)).float()
            current.mul_(liq.input_current)
        torch.ge(v, thr, out=s)
        torch.le(ref, 0.0, out=quiet)
        s.logical_and_(quiet)
        v.masked_fill_(s, 0.0)
        counts.add_(s)
        if raster is not None:
            raster[:, t] = s_liq
        any_spike = False
        if csr is not None:  # several samples: the CSR product over all of them is cheaper
            if bool(s.any()):
                drive.add_(torch.sparse.mm(csr, torch.where(s, k0 - k[:, :n_tot], 0.0).t()).t())
        for part, (sp, base) in enumerate(((s_in, 0), (s_liq, n_in)) if csr is None else ()):
            b, j = sp.nonzero(as_tuple=True)
            if j.numel() == 0 or w_rows[part].shape[1] == 0:
                continue
            if not any_spike:
                buf.zero_()
                any_spike = True
            flat = j + base if B == 1 else offsets.index_select(0, b).add_(j + base)
            contrib = w_rows[part].index_select(0, j).mul_(kv.index_select(0, flat).neg_().add_(k0)[:, None])
            cols = x_rows[part].view(torch.float64).index_select(0, j).view(torch.int64)  # int64 rows as f64: faster
            if B > 1:
                cols = cols.add_(offsets.index_select(0, b)[:, None])
            bufv.scatter_add_(0, cols.view(-1), contrib.view(-1))
        if any_spike:
            drive.add_(buf_liq)
        k[:, :n_tot].masked_fill_(s, k0)
        torch.div(v, tau_v, out=dv)
        v_in.add_(current[t % chunk])
        v_liq.add_(drive)
        v.sub_(dv)
        k.mul_(decay)
        drive.mul_(decay)
        ref.sub_(1.0).masked_fill_(s, refr)
    out = {"counts": counts[:, n_in:], "input_counts": counts[:, :n_in]}
    if raster is not None:
        out["raster"] = raster
    return out
