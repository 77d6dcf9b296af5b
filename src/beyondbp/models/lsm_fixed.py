"""Event-driven simulation of a fixed-weight liquid (:class:`beyondbp.models.lsm.Liquid` with
no plasticity, ``kernel = "event"``).

The same step as the reference (the CSR product of the synapse matrix with the kernel changes of
every presynaptic neuron, ``kernel = "dense"``), with the same numbers, bit for bit:

* the drive change of a step (of one sample on the CPU, unless ``CSR_BATCH`` is 1; batches and
  other devices use the reference's CSR product) touches only the outgoing synapses of the neurons that spiked (at
  NALSM1000 rates ~15 % of the synapses): their rows of the padded tables
  (:meth:`Liquid.event_tables`) are gathered and summed per postsynaptic neuron with
  ``scatter_add_``, which on the CPU adds them in ascending presynaptic order, as the CSR row
  sum does, into a zeroed buffer that is then added to the drive (the reference adds its
  product's result);
* one sample's kernel change ``k0 − k_j`` is read from a table over the steps since ``j`` last
  spiked (:func:`kernel_table`: the reference's own float32 products, ``k0 · decay · decay ···``,
  computed once), so the kernels are not updated every step; the refractory count is the step of
  the last spike (``ref ≤ 0`` exactly when ``t − last ≥ refractory + 1``);
* the Bernoulli input drive of up to ``CHUNK_ELEMENTS`` numbers is drawn in one call (the CPU
  generator gives the same numbers in the same order as one draw per step; tests/test_lsm_kernels.py
  checks it on the CPU only: on other devices the draws were not compared with the reference's);
* every per-step update runs in place on preallocated arrays, with the reference's operations
  in the reference's order (``(v + I) − v/τ_v`` and so on): equal spikes, equal membranes.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["simulate_fixed", "kernel_table", "consts", "step_numbers", "draws"]

#: At most this many input draws (steps × samples × inputs) are held at once.
CHUNK_ELEMENTS = 1 << 21
#: From this batch size on the drive change is the CSR product (the reference's; cheaper than
#: gathering the spiking neurons' rows when many samples spike at once).
CSR_BATCH = 2


@functools.lru_cache(maxsize=8)
def kernel_table(k0: float, k_init: float, decay: float, T: int, offset: int) -> Tensor:
    """``k0 − k`` for every kernel value ``k`` a presynaptic neuron can have in a ``T``-step
    simulation, (offset + T,) float32 on the CPU (``offset ≥ T``; cached: do not modify it):
    entry ``a < T`` is ``a`` steps after a spike (``k`` set to ``k0``, then multiplied by
    ``decay`` once a step, in float32, as the simulation does), entry ``offset + t`` is step
    ``t`` of a neuron that has not spiked yet (``k_init`` times ``decay`` ``t`` times)."""
    k = torch.tensor([k0, k_init], dtype=torch.float32)
    table = torch.zeros(2, offset, dtype=torch.float32)
    for a in range(T):
        table[:, a] = k
        k.mul_(decay)
    return torch.sub(k0, torch.cat([table[0], table[1, :T]]))


def simulate_fixed(liq: Any, p: Tensor, T: int, record: bool, gen: torch.Generator | None,
                   k_init: float) -> dict[str, Tensor]:
    """``liq``'s fixed-weight simulation of firing probabilities ``p`` (B, n_in) for ``T`` steps
    (see :meth:`Liquid.simulate` for what it returns); ``k_init``: every kernel's start value."""
    B, n_in, n = p.shape[0], liq.n_in, liq.n
    n_tot, dev = n_in + n, p.device
    w = liq.weight.detach()
    decay = math.exp(-1.0 / liq.tau_u)
    k0, thr, tau_v, refr = 1.0 / liq.tau_u, liq.threshold, liq.tau_v, int(liq.refractory)
    k = torch.full((B, n_tot), k_init, device=dev)
    drive = liq._full_drive(w, k)  # (B, n), as the reference starts
    v = torch.zeros(B, n_tot, device=dev)
    v_in, v_liq = v[:, :n_in], v[:, n_in:]
    # minus the step of every neuron's last spike (never: T + refr, ≥ refr + 1): the reference's
    # refractory count ``ref`` (refr at a spike, minus one a step) is ≤ 0 iff t − last ≥ refr + 1
    neg_last = torch.full((B, n_tot), T + refr, dtype=torch.long, device=dev)
    raster = torch.zeros(B, T, n, dtype=torch.bool, device=dev) if record else None
    dv = torch.empty(B, n_tot, device=dev)
    s = torch.empty(B, n_tot, dtype=torch.bool, device=dev)
    quiet = torch.empty(B, n_tot, dtype=torch.bool, device=dev)
    s_liq = s[:, n_in:]
    chunk = max(1, min(T, CHUNK_ELEMENTS // max(1, B * n_in)))
    if B > 1 or B >= CSR_BATCH or dev.type != "cpu":  # several samples: the CSR product over all of them is cheaper
        return _csr_loop(liq, p, T, gen, w, k, drive, v, neg_last, raster, chunk, (k0, decay, thr, tau_v, refr))
    tab = liq.event_tables()
    w_pad = torch.cat([w, w.new_zeros(1)])
    # the tables' synapse rows turned into weight rows once (the padding's weight is 0); the int64
    # column rows are gathered as float64 bit patterns (the same bytes; several times faster)
    groups = []
    dk = torch.empty(n_tot, device=dev)  # this step's k0 - k of every neuron
    for ids, cols, base in ((tab["out_in"], tab["out_in_x"], 0), (tab["out_liq"], tab["out_liq_x"], n_in)):
        if ids.shape[1]:
            groups.append((w_pad.index_select(0, ids.reshape(-1)).view(ids.shape), cols.view(torch.float64),
                           dk[base:base + ids.shape[0]], s[0, base:base + ids.shape[0]], base))
    table = kernel_table(k0, k_init, decay, T, T + refr)
    buf = torch.zeros(n_tot + 1, device=dev)  # + the dummy column of the padding
    buf_liq = buf[n_in:n_tot]
    age, nl0 = torch.empty(n_tot, dtype=torch.long, device=dev), neg_last[0]
    # the loop's constants as 0-d tensors (a Python number costs a conversion in every call; the
    # CPU kernels take a float32 tensor's number as they take the Python number: the same results)
    c = consts(dev, thr=thr, zero=0.0, tau_v=tau_v, decay=decay)
    step, quiet_from, neg_step = step_numbers(T, refr, dev)
    spiked: list[Tensor] = []
    current: tuple[Tensor, ...] = ()
    for t in range(T):
        if t % chunk == 0:  # the input drive of the next steps, drawn at once
            current = draws(p, min(chunk, T - t), gen, liq.input_current).unbind(0)
        torch.ge(v, c["thr"], out=s)
        torch.ge(neg_last, quiet_from[t], out=quiet)
        s.logical_and_(quiet)
        v.masked_fill_(s, c["zero"])
        if raster is not None:
            raster[:, t] = s_liq
        torch.index_select(table, 0, torch.add(nl0, step[t], out=age), out=dk)
        neg_last.masked_fill_(s, neg_step[t])
        any_spike = False
        for w_rows, cols, dk_part, sp, base in groups:
            j = sp.nonzero(as_tuple=True)[0]
            if j.numel() == 0:
                continue
            spiked.append(j + base if base else j)
            contrib = w_rows.index_select(0, j).mul_(dk_part.index_select(0, j).unsqueeze(1))
            buf.scatter_add_(0, cols.index_select(0, j).view(torch.int64).view(-1), contrib.view(-1))
            any_spike = True
        if any_spike:
            drive.add_(buf_liq)
            buf.zero_()
        torch.div(v, c["tau_v"], out=dv)
        v_in.add_(current[t % chunk])
        v_liq.add_(drive)
        v.sub_(dv)
        drive.mul_(c["decay"])
    counts = torch.bincount(torch.cat(spiked), minlength=n_tot).float().unsqueeze(0) if spiked else v.new_zeros(1, n_tot)
    out = {"counts": counts[:, n_in:], "input_counts": counts[:, :n_in]}
    if raster is not None:
        out["raster"] = raster
    return out


def consts(device: Any, **values: float) -> dict[str, Tensor]:
    """Numbers as 0-d float32 tensors."""
    return {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in values.items()}


def step_numbers(T: int, refr: int, device: Any) -> tuple[tuple[Tensor, ...], ...]:
    """Per step ``t``, as 0-d int64 tensors: ``t``, ``refr + 1 − t`` (a neuron is quiet when minus
    its last spike's step is at least this) and ``−t``."""
    step = torch.arange(T, device=device)
    return step.unbind(0), (refr + 1 - step).unbind(0), step.neg().unbind(0)


def draws(p: Tensor, steps: int, gen: torch.Generator | None, current: float) -> Tensor:
    """The input drive of ``steps`` steps, (steps, B, n_in): ``current · [p > U(0, 1)]``."""
    u = torch.rand(steps, *p.shape, device=p.device, generator=gen)
    return torch.gt(p.unsqueeze(0), u, out=torch.empty(u.shape, dtype=torch.bool, device=p.device)).float().mul_(current)


def _csr_loop(liq: Any, p: Tensor, T: int, gen: torch.Generator | None, w: Tensor, k: Tensor, drive: Tensor,
              v: Tensor, neg_last: Tensor, raster: Tensor | None, chunk: int, numbers: tuple[float, ...]
              ) -> dict[str, Tensor]:
    """The batched step: the reference's CSR product over every synapse, in place."""
    k0, decay, thr, tau_v, refr = numbers
    refr = int(refr)
    B, n_tot = v.shape
    n_in = liq.n_in
    csr = liq._csr(w)
    v_in, v_liq = v[:, :n_in], v[:, n_in:]
    counts = torch.zeros(B, n_tot, device=v.device)
    dv = torch.empty_like(v)
    delta = torch.empty_like(v)
    s = torch.empty(B, n_tot, dtype=torch.bool, device=v.device)
    quiet = torch.empty_like(s)
    s_liq = s[:, n_in:]
    current: tuple[Tensor, ...] = ()
    for t in range(T):
        if t % chunk == 0:
            current = draws(p, min(chunk, T - t), gen, liq.input_current).unbind(0)
        torch.ge(v, thr, out=s)
        torch.ge(neg_last, refr + 1 - t, out=quiet)
        s.logical_and_(quiet)
        v.masked_fill_(s, 0.0)
        counts.add_(s)
        if raster is not None:
            raster[:, t] = s_liq
        if bool(s.any()):
            torch.sub(k0, k, out=delta).masked_fill_(~s, 0.0)
            drive.add_(torch.sparse.mm(csr, delta.t()).t())
            neg_last.masked_fill_(s, -t)
            k.masked_fill_(s, k0)
        torch.div(v, tau_v, out=dv)
        v_in.add_(current[t % chunk])
        v_liq.add_(drive)
        v.sub_(dv)
        k.mul_(decay)
        drive.mul_(decay)
    out = {"counts": counts[:, n_in:], "input_counts": counts[:, :n_in]}
    if raster is not None:
        out["raster"] = raster
    return out
