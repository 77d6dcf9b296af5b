"""Event-driven simulation of a liquid with plasticity (:class:`beyondbp.models.lsm.Liquid` with a
plasticity rule attached, ``kernel = "event"``): the per-ms loop and the spike rows it hands the
rule.

The same numbers as the loop it replaced (and, for spikes, traces and weights, as the dense
reference that updates every synapse every step, ``kernel = "dense"``; tests/test_lsm_kernels.py),
with fewer torch calls per step (at batch 1 the step is dominated by the fixed cost of each call,
not by the arithmetic):

* the refractory count is the step of the last spike (``ref ≤ 0`` exactly when
  ``t − last ≥ refractory + 1``; one ``masked_fill_`` a step instead of a subtraction and a
  ``where``);
* the kernel is updated (``k ← k0`` at a spike, ``× e^{−1/τ_u}``) right after the spikes are
  propagated, so that the array itself is the kernel after the step the rule needs (no copy);
* the input drive is drawn in chunks (the same numbers from the same generator, as in
  :mod:`beyondbp.models.lsm_fixed`);
* the incoming rows of a spiking liquid neuron are one padded row (its synapses from inputs, then
  from liquid neurons, each part as wide as before), so the rule updates them with one set of
  calls; the rule sums the two parts separately, as before.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from beyondbp.models.lsm_fixed import CHUNK_ELEMENTS, consts, draws, step_numbers

__all__ = ["SimState", "SpikeRows", "simulate_plastic", "plastic_tables", "spike_rows"]


class SimState:
    """What a plasticity rule sees of one simulation (one batch of samples).

    With per-sample weights the liquid keeps ``w``, ``k`` and ``drive`` as views of padded arrays
    (one extra dummy synapse / neuron column, see :meth:`Liquid.event_tables`), and in every step
    with spikes, while the rule ``wants_events``, hands it the spiking (sample, neuron) pairs as
    padded rows of synapses (:class:`SpikeRows`), so that it touches only
    the synapses whose pre- or postsynaptic neuron spiked; the rule adds its changes of the drive
    to ``pending`` (added after the membrane update, as a dense update would) and sets ``fused``.
    A state built from plain tensors (``full`` stays None) is updated densely."""

    def __init__(self, liquid: Any, w: Tensor, k: Tensor, drive: Tensor) -> None:
        self.liquid = liquid
        self.w = w  # (B, nnz) per-sample weights (or (nnz,) shared: no plasticity)
        self.k = k  # (B, n_in + n) synaptic kernel of every presynaptic neuron
        self.drive = drive  # (B, n) synaptic drive of every liquid neuron
        self.step = 0
        self.full: tuple[Tensor, Tensor, Tensor] | None = None  # padded (weights, k, drive), see above
        # event-driven kernels only, valid in the step being simulated: the spikes (B, n_in + n + 1)
        # float, the kernel after the step (same shape) and the drive changes to add after it
        self.spikes: Tensor | None = None
        self.k_next: Tensor | None = None
        self.pending: Tensor | None = None
        self.fused = False  # this step's plasticity already ran on the spike rows

    @property
    def batch(self) -> int:
        return self.k.shape[0]

    def apply_dw(self, dw: Tensor) -> None:
        """Add ``dw`` (B, nnz) to the per-sample weights, clip them to their bounds and keep the
        synaptic drive consistent with the new weights."""
        liq = self.liquid
        lo, hi = liq.clip_bounds()
        new = torch.minimum(torch.maximum(self.w + dw, lo), hi)
        self.drive.index_add_(1, liq.post, (new - self.w) * self.k[:, liq.pre])
        self.w.copy_(new)


class SpikeRows:
    """One step's spikes as padded rows of synapses (event-driven simulation with per-sample
    weights). Flat indices address the padded arrays: weights ``(B, nnz + 1)`` (``wf``) and
    neuron arrays ``(B, n_in + n + 1)`` (``xf``: the postsynaptic neuron of every slot for the
    outgoing rows, the presynaptic one for the incoming rows); padding slots point at the dummy
    synapse / neuron, whose weight, trace, kernel and spike stay 0.

    ``out``: per presynaptic population with spikes (inputs, liquid), ``(b, j, wf, xf, w_old, flat,
    liquid)``: the spiking (sample, column) pairs, their outgoing synapses, those synapses' weights
    before this step's plasticity, the pairs' flat column and whether they are liquid neurons.
    ``inc``: ``[(b, i, wf, xf, target)]`` (empty when the rule does not need them), the incoming
    synapses of the spiking liquid neurons, one row each: from inputs, then from liquid neurons
    (``tables["inc_split"]`` slots, then the rest). ``tables``: the event tables
    (:func:`beyondbp.models.lsm_kernels.plastic_tables`). Built by
    :func:`beyondbp.models.lsm_kernels.spike_rows`."""

    def __init__(self, out: list[tuple[Tensor, ...]], inc: list[tuple[Any, ...]]) -> None:
        self.out, self.inc = out, inc
        self.tables: dict[str, Any] = {}


def plastic_tables(liq: Any) -> dict[str, Any]:
    """The event tables of ``liq`` (:meth:`Liquid.event_tables`) with what the plastic kernels
    derive from them, built once (cached with them): int64 tables as float64 views (the rows are
    gathered as bit patterns: several times faster), the incoming rows of each liquid neuron as
    one row (``inc``, ``inc_x``; ``inc_split``: the width of the inputs' part, the liquid's part
    as ``inc_liq``), and per presynaptic column of the neuron arrays its clip
    bounds (``col_lo``, ``col_hi``, (n_cols, 1)), whether it is inhibitory (``col_inh``) and its
    sign in the astrocyte's drive (``col_sign``: +1 liquid, −1 input, 0 the dummy column)."""
    tab = liq.event_tables()
    if "inc" not in tab:
        n_in, n, wmax, dev = liq.n_in, liq.n, liq.w_max, liq.pre.device
        n_cols = n_in + n + 1
        # copies, not views: a pickled liquid (feature workers) cannot hold one storage as two dtypes
        f64 = {k: tab[k].view(torch.float64).clone() for k in ("out_in", "out_in_x", "out_liq", "out_liq_x")}
        w_in = tab["inc_in"].shape[1]
        inc = torch.cat([tab["inc_in"], tab["inc_liq"]], 1)
        inc_x = torch.cat([tab["inc_in_x"], tab["inc_liq_x"]], 1)
        col_inh = torch.zeros(n_cols, dtype=torch.bool, device=dev)
        col_inh[n_in:n_in + n] = ~liq.is_exc
        col_lo = torch.zeros(n_cols, 1, device=dev)
        col_hi = torch.zeros(n_cols, 1, device=dev)
        col_lo[:n_in], col_hi[:n_in] = -wmax, wmax
        col_lo[n_in:n_in + n, 0] = torch.where(liq.is_exc, 0.0, -wmax)
        col_hi[n_in:n_in + n, 0] = torch.where(liq.is_exc, wmax, 0.0)
        sign = torch.zeros(n_cols, device=dev)
        sign[:n_in], sign[n_in:n_in + n] = -1.0, 1.0
        tab.update({f"{k}_f": v for k, v in f64.items()})
        tab.update(inc=inc.view(torch.float64), inc_x=inc_x.view(torch.float64), inc_split=w_in, col_inh=col_inh,
                   col_lo=col_lo, col_hi=col_hi, col_sign=sign)
    return tab


def _rows(table: Tensor, idx: Tensor, offset: Tensor | None) -> Tensor:
    """Rows ``idx`` of a float64-viewed int64 table, as int64, plus ``offset`` (a column) if any."""
    rows = table.index_select(0, idx).view(torch.int64)
    return rows if offset is None else rows.add_(offset)


def spike_rows(liq: Any, tab: dict[str, Any], s: Tensor, full: tuple[Tensor, Tensor, Tensor], k0: Tensor,
               inc_rows: bool) -> Any:
    """Event-driven spike propagation with per-sample weights: every spiking (sample, neuron) pair
    adds ``w · (k0 − k_j)`` to its outgoing synapses' targets (as the dense ``w · delta[:, pre]``,
    in the same order); returns the rows for the plasticity rule (:class:`SpikeRows`; with the
    incoming rows of the spiking liquid neurons when ``inc_rows``), or None if nothing spiked.

    ``out``: per presynaptic population with spikes (inputs, liquid), ``(b, j, wf, xf, w_old, flat,
    liquid)``: the spiking (sample, column) pairs, their outgoing synapses (flat indices into the
    padded weights) and targets (flat indices into the neuron arrays), those synapses' weights
    before this step's plasticity, the pairs' flat column index and whether they are liquid
    neurons. ``inc``: ``[(b, i, wf, xf, target)]``, the incoming rows of the spiking liquid neurons
    (presynaptic flat columns in ``xf``; ``target``: the flat column of the neuron)."""
    w_full, k_full, drive_full = full
    n_in, B = liq.n_in, s.shape[0]
    n_cols, n_syn = k_full.shape[1], w_full.shape[1]
    wv, kcol, dv = w_full.view(-1), k_full.view(-1, 1), drive_full.view(-1)
    one = B == 1  # one sample: every row offset is 0, left out
    b_in, j_in = s[:, :n_in].nonzero(as_tuple=True)
    b_liq, i_liq = s[:, n_in:].nonzero(as_tuple=True)
    if b_in.numel() == 0 and b_liq.numel() == 0:
        return None
    out = []
    for b, j, ids, cols, liquid in ((b_in, j_in, tab["out_in_f"], tab["out_in_x_f"], False),
                                    (b_liq, i_liq, tab["out_liq_f"], tab["out_liq_x_f"], True)):
        if b.numel() == 0 or ids.shape[1] == 0:
            continue
        jx = j + n_in if liquid else j
        flat = jx if one else b * n_cols + jx
        wf = _rows(ids, j, None if one else (b * n_syn).unsqueeze(1))
        xf = _rows(cols, j, None if one else (b * n_cols).unsqueeze(1))
        xf1 = xf.view(-1)
        w_old = wv.index_select(0, wf.view(-1)).view(wf.shape)
        dv.scatter_add_(0, xf1, (w_old * torch.sub(k0, kcol.index_select(0, flat))).view(-1))
        out.append((b, jx, wf, xf, w_old, flat, liquid))
    inc = []
    if inc_rows and b_liq.numel() and tab["inc"].shape[1]:
        target = i_liq + n_in if one else b_liq * n_cols + (i_liq + n_in)
        inc.append((b_liq, i_liq, _rows(tab["inc"], i_liq, None if one else (b_liq * n_syn).unsqueeze(1)),
                    _rows(tab["inc_x"], i_liq, None if one else (b_liq * n_cols).unsqueeze(1)), target))
    rows = SpikeRows(out, inc)
    rows.tables = tab
    return rows


def _draws(p: Tensor, steps: int, gen: torch.Generator | None, current: float) -> tuple[Tensor, ...]:
    """The input drive of ``steps`` steps, one (B, n_in) tensor a step (see lsm_fixed)."""
    return draws(p, steps, gen, current).unbind(0)


def simulate_plastic(liq: Any, p: Tensor, T: int, record: bool, plast: Any, gen: torch.Generator | None,
                     k_init: float) -> tuple[Any, dict[str, Tensor]]:
    """``liq``'s event-driven simulation of ``p`` (B, n_in) for ``T`` steps with the plasticity
    ``plast`` (its ``begin``, ``wants_events``, ``events``, ``update``; not ``end``); returns the
    :class:`SimState` and what :meth:`Liquid.simulate` returns."""
    B, n_in, n = p.shape[0], liq.n_in, liq.n
    n_tot, dev = n_in + n, p.device
    n_cols = n_tot + 1  # + the dummy neuron of padded rows
    w_full = torch.zeros(B, liq.nnz + 1, device=dev)  # + the dummy synapse of padded rows
    w_full[:, :liq.nnz] = liq.weight.detach()
    w = w_full[:, :liq.nnz]
    decay = math.exp(-1.0 / liq.tau_u)
    k0, thr, tau_v, refr = 1.0 / liq.tau_u, liq.threshold, liq.tau_v, int(liq.refractory)
    k_full = torch.zeros(B, n_cols, device=dev)
    k = k_full[:, :n_tot]
    k.fill_(k_init)
    drive_full = torch.zeros(B, n_cols, device=dev)  # neuron columns, as k (inputs unused)
    drive = drive_full[:, n_in:n_tot]
    drive.copy_(liq._full_drive(w, k))
    v = torch.zeros(B, n_tot, device=dev)
    v_in, v_liq = v[:, :n_in], v[:, n_in:]
    neg_last = torch.full((B, n_tot), T + refr, dtype=torch.long, device=dev)  # minus the last spike's step
    counts = torch.zeros(B, n_tot, device=dev)
    raster = torch.zeros(B, T, n, dtype=torch.bool, device=dev) if record else None
    s = torch.empty(B, n_tot, dtype=torch.bool, device=dev)
    quiet, dv = torch.empty_like(s), torch.empty_like(v)
    s_liq = s[:, n_in:]
    state = SimState(liq, w, k, drive)
    state.full = (w_full, k_full, drive_full)
    state.k_next = k_full  # updated in place before the rule's events: the kernel after the step
    state.pending = torch.zeros(B, n_cols, device=dev)
    pending_liq = state.pending[:, n_in:n_tot]
    state.spikes = torch.zeros(B, n_cols, device=dev)
    spikes = state.spikes[:, :n_tot]
    plast.begin(state)
    wants = getattr(plast, "wants_events", None)  # a plasticity without it updates densely
    tab = plastic_tables(liq)
    chunk = max(1, min(T, CHUNK_ELEMENTS // max(1, B * n_in)))
    c = consts(dev, thr=thr, zero=0.0, tau_v=tau_v, decay=decay, k0=k0)  # 0-d: see lsm_fixed
    _, quiet_from, neg_step = step_numbers(T, refr, dev)
    current: tuple[Tensor, ...] = ()
    for t in range(T):
        if t % chunk == 0:
            current = _draws(p, min(chunk, T - t), gen, liq.input_current)
        torch.ge(v, c["thr"], out=s)
        torch.ge(neg_last, quiet_from[t], out=quiet)
        s.logical_and_(quiet)
        v.masked_fill_(s, c["zero"])
        counts.add_(s)
        if raster is not None:
            raster[:, t] = s_liq
        neg_last.masked_fill_(s, neg_step[t])
        spikes.copy_(s)
        state.step, state.fused = t, False
        fused = wants is not None and bool(wants(state))
        rows = spike_rows(liq, tab, s, state.full, c["k0"], fused)
        if rows is not None:
            k.masked_fill_(s, c["k0"])
        k.mul_(c["decay"])
        if rows is not None and fused:  # the plasticity on the rows just built, its drive changes kept apart
            state.pending.zero_()
            plast.events(state, rows)
            state.fused = True
        torch.div(v, c["tau_v"], out=dv)
        v_in.add_(current[t % chunk])
        v_liq.add_(drive)
        v.sub_(dv)
        drive.mul_(c["decay"])
        if state.fused:
            drive.add_(pending_liq)
        plast.update(state, s)
    out = {"counts": counts[:, n_in:], "input_counts": counts[:, :n_in]}
    if raster is not None:
        out["raster"] = raster
    return state, out
